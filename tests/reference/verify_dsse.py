"""Verify a zooaudit DSSE envelope with securesystemslib (an implementation
zooaudit's authors did not write), given only the ed25519 public key PEM.

usage: verify_dsse.py ENVELOPE PUBKEY_PEM THRESHOLD
prints the keyid securesystemslib computes and the verified statement's type,
exits 0 when securesystemslib accepts the envelope, 1 when it rejects it.
"""
import json
import sys

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

envelope_path, pem_path, threshold = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(pem_path, "rb") as f:
    key = SSlibKey.from_crypto(load_pem_public_key(f.read()))
print("keyid", key.keyid)
with open(envelope_path, "rb") as f:
    envelope = Envelope.from_dict(json.load(f))
try:
    envelope.verify([key], threshold)
except VerificationError as e:
    print("rejected", e)
    sys.exit(1)
statement = json.loads(envelope.payload)
print("type", statement["_type"])
print("predicateType", statement["predicateType"])
print("subjects", len(statement["subject"]))

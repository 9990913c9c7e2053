# A throwaway PKI for the certificate-mode tests, made with Python's
# `cryptography` (the package model-signing itself uses): a P-256 root, a
# P-384 intermediate (pathLen 0) and signing certificates that differ in one
# way each. Usage: python pki.py OUT_DIR
import datetime as dt
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
now = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)
day = dt.timedelta(days=1)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def ku(**bits):
    names = ["digital_signature", "content_commitment", "key_encipherment",
             "data_encipherment", "key_agreement", "key_cert_sign", "crl_sign",
             "encipher_only", "decipher_only"]
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def cert(subject, key, issuer, issuer_key, *, ca, path_len=None, usage=None,
         eku=None, not_before=now - day, not_after=now + 365 * day,
         hash_alg=hashes.SHA256(), extra=None):
    b = (x509.CertificateBuilder().subject_name(name(subject))
         .issuer_name(name(issuer)).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=path_len), critical=True))
    if usage is not None:
        b = b.add_extension(usage, critical=True)
    if eku is not None:
        b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    if extra is not None:
        b = b.add_extension(extra, critical=True)
    return b.sign(issuer_key, hash_alg)


def write(stem, c, key=None):
    (out / f"{stem}.pem").write_bytes(c.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        (out / f"{stem}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))


root_key = ec.generate_private_key(ec.SECP256R1())
root = cert("Zoo Test Root CA", root_key, "Zoo Test Root CA", root_key, ca=True,
            usage=ku(key_cert_sign=True, crl_sign=True), not_before=now - 30 * day,
            not_after=now + 3650 * day)
write("root", root)
int_key = ec.generate_private_key(ec.SECP384R1())
inter = cert("Zoo Test Intermediate CA", int_key, "Zoo Test Root CA", root_key, ca=True,
             path_len=0, usage=ku(key_cert_sign=True, crl_sign=True),
             not_before=now - 20 * day, not_after=now + 1800 * day)
write("int", inter)
# A CA that is not one: signs a certificate without basicConstraints CA:TRUE.
notca_key = ec.generate_private_key(ec.SECP256R1())
write("notca", cert("Zoo Test Not A CA", notca_key, "Zoo Test Root CA", root_key, ca=False,
                    usage=ku(digital_signature=True), not_before=now - 20 * day))
other_key = ec.generate_private_key(ec.SECP256R1())
write("other-root", cert("Zoo Other Root CA", other_key, "Zoo Other Root CA", other_key,
                         ca=True, usage=ku(key_cert_sign=True), not_before=now - 30 * day,
                         not_after=now + 3650 * day))

leaves = {
    # KU digitalSignature + EKU codeSigning, signed with SHA-384 by the P-384 CA.
    "leaf": dict(usage=ku(digital_signature=True), eku=[ExtendedKeyUsageOID.CODE_SIGNING],
                 hash_alg=hashes.SHA384()),
    # EKU codeSigning without a keyUsage: accepted.
    "eku-only": dict(eku=[ExtendedKeyUsageOID.CODE_SIGNING]),
    # Expired long ago, but valid at its own notBefore: accepted (no timestamp).
    "expired": dict(usage=ku(digital_signature=True), not_before=now - 10 * day,
                    not_after=now - 9 * day),
    # keyAgreement only: may not sign.
    "no-signing": dict(usage=ku(key_agreement=True)),
    # notBefore before the intermediate's: the intermediate is not valid then.
    "too-early": dict(usage=ku(digital_signature=True), not_before=now - 25 * day),
    # An unknown critical extension.
    "critical": dict(usage=ku(digital_signature=True),
                     extra=x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")),
}
for stem, opts in leaves.items():
    k = ec.generate_private_key(ec.SECP256R1())
    write(stem, cert(f"Model Signer {stem}", k, "Zoo Test Intermediate CA", int_key, ca=False, **opts), k)
k = ec.generate_private_key(ec.SECP256R1())
write("under-notca", cert("Model Signer under-notca", k, "Zoo Test Not A CA", notca_key, ca=False,
                          usage=ku(digital_signature=True)), k)

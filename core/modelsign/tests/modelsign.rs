//! Model signing against the real `model-signing` package from PyPI
//! (installed by scripts/setup.sh, pinned): its bundles verify here, ours
//! verify there, the root digests agree, and one changed byte is refused.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use zooaudit_modelsign::{
    PrivateKey, PublicKey, SignError, bundle, hash_model, sign_key, verify_key,
};
use zooaudit_testsupport as support;

#[path = "modelsign/certificate.rs"]
mod certificate;
#[path = "modelsign/mutations.rs"]
mod mutations;

use support::model_signing;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A directory model with nested files, a dot-file and git files at its
/// root (left out by both sides), and a single-file model.
fn models(dir: &Path) -> (PathBuf, PathBuf) {
    let m = dir.join("dirmodel");
    std::fs::create_dir_all(m.join("sub/deeper")).unwrap();
    std::fs::create_dir_all(m.join(".git")).unwrap();
    std::fs::write(m.join("a.txt"), b"A").unwrap();
    std::fs::write(m.join("a-b"), b"dash").unwrap();
    std::fs::write(m.join(".hidden"), b"").unwrap();
    std::fs::write(m.join("sub/b.bin"), [0u8, 1]).unwrap();
    std::fs::write(m.join("sub/deeper/w.onnx"), vec![7u8; 100_000]).unwrap();
    std::fs::write(m.join(".git/config"), b"[core]").unwrap();
    std::fs::write(m.join(".gitignore"), b"*.tmp").unwrap();
    let f = dir.join("hello.txt");
    std::fs::write(&f, b"hello\n").unwrap();
    (m, f)
}

/// An EC private key (SEC1 PEM, as `openssl ecparam -genkey` writes) and
/// its public key, made by Python's `cryptography`.
fn python_key(dir: &Path, curve: &str) -> (PathBuf, PathBuf) {
    let (key, public) = (
        dir.join(format!("{curve}.key")),
        dir.join(format!("{curve}.pub")),
    );
    let code = format!(
        "from cryptography.hazmat.primitives.asymmetric import ec\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = ec.generate_private_key(ec.{curve}())\n\
         open({:?}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.TraditionalOpenSSL, s.NoEncryption()))\n\
         open({:?}, 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n",
        s(&key),
        s(&public)
    );
    let o = Command::new(support::python())
        .args(["-c", &code])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    (key, public)
}

/// The root digest the package signed: the bundle's subject.
fn signed_root(bundle: &Path) -> String {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(bundle).unwrap()).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(v["dsseEnvelope"]["payload"].as_str().unwrap())
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    st["subject"][0]["digest"]["sha256"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The package signs (P-256 and P-384, a directory and a single file);
/// zooaudit computes the same root digest and verifies the signature;
/// one changed byte in the model, in the bundle, or a wrong key is refused
/// in one line naming the file.
#[test]
fn bundles_signed_by_model_signing_verify_here_and_tampering_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_model, file_model) = models(tmp.path());
    for curve in ["SECP256R1", "SECP384R1"] {
        let (key, public) = python_key(tmp.path(), curve);
        let public_key = PublicKey::read(&public).unwrap();
        for model in [&dir_model, &file_model] {
            let sig = tmp.path().join(format!(
                "{curve}-{}.sig",
                model.file_name().unwrap().to_string_lossy()
            ));
            let o = model_signing(&[
                "sign",
                "key",
                s(model),
                "--private_key",
                s(&key),
                "--signature",
                s(&sig),
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let ours = hash_model(model, &[]).unwrap();
            assert_eq!(ours.root_hex(), signed_root(&sig), "{}", model.display());
            let v = verify_key(model, &sig, &public_key).unwrap();
            assert_eq!(v.root_sha256, ours.root_hex());
            assert_eq!(v.key_sha256, public_key.pem_sha256());
            assert!(v.ignored.is_empty(), "{:?}", v.ignored);
        }
    }
    let (key, public) = python_key(tmp.path(), "SECP256R1");
    let public_key = PublicKey::read(&public).unwrap();
    let sig = tmp.path().join("dir.sig");
    let o = model_signing(&[
        "sign",
        "key",
        s(&dir_model),
        "--private_key",
        s(&key),
        "--signature",
        s(&sig),
    ]);
    assert!(o.status.success());
    // One byte of a weight file changed.
    let w = dir_model.join("sub/deeper/w.onnx");
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[5000] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    let e = verify_key(&dir_model, &sig, &public_key)
        .unwrap_err()
        .to_string();
    let named = |rel: &str| format!("'{}'", dir_model.join(rel).display());
    assert!(
        e.contains(&format!(
            "dir.sig: signature does not hold: files changed since they were signed: 1 ({})",
            named("sub/deeper/w.onnx")
        )),
        "{e}"
    );
    bytes[5000] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    verify_key(&dir_model, &sig, &public_key).unwrap();
    // A file added, then one removed.
    std::fs::write(dir_model.join("sub/extra"), b"x").unwrap();
    let e = verify_key(&dir_model, &sig, &public_key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "files not covered by the signature: 1 ({})",
            named("sub/extra")
        )),
        "{e}"
    );
    std::fs::remove_file(dir_model.join("sub/extra")).unwrap();
    std::fs::remove_file(dir_model.join("a-b")).unwrap();
    let e = verify_key(&dir_model, &sig, &public_key)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!(
            "signed files missing from the model: 1 ({})",
            named("a-b")
        )),
        "{e}"
    );
    std::fs::write(dir_model.join("a-b"), b"dash").unwrap();
    // One byte of the bundle's payload changed (in its base64).
    let text = std::fs::read_to_string(&sig).unwrap();
    let at = text.find("\"payload\":").unwrap() + 20;
    let flipped = if &text[at..=at] == "A" { "B" } else { "A" };
    let bad = tmp.path().join("bad.sig");
    std::fs::write(&bad, format!("{}{flipped}{}", &text[..at], &text[at + 1..])).unwrap();
    let e = verify_key(&dir_model, &bad, &public_key)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.sig: signature does not hold: the signature does not verify with the given ecdsa-p256 key"), "{e}");
    // Another key.
    let (_, other) = python_key(&tmp.path().join(".."), "SECP256R1");
    let e = verify_key(&dir_model, &sig, &PublicKey::read(&other).unwrap()).unwrap_err();
    assert!(matches!(e, SignError::Invalid { .. }), "{e}");
    let e = e.to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// zooaudit countersigns (P-256 and P-384, a key it made and one Python
/// made); `model_signing verify key` accepts it, and refuses it once one
/// byte of the model changed.
#[test]
fn our_bundles_verify_with_model_signing() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_model, file_model) = models(tmp.path());
    let ours = PrivateKey::generate_p256();
    let ours_pem = tmp.path().join("ours.key");
    std::fs::write(&ours_pem, ours.to_pem()).unwrap();
    let ours_pub = tmp.path().join("ours.pub");
    std::fs::write(&ours_pub, ours.public().to_pem()).unwrap();
    let (py384, py384_pub) = python_key(tmp.path(), "SECP384R1");
    // A private key others can read is refused, as ssh refuses one.
    use std::os::unix::fs::PermissionsExt;
    let perms = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    perms(&ours_pem, 0o644);
    let e = PrivateKey::read(&ours_pem).unwrap_err().to_string();
    assert!(
        e.contains("ours.key: private key permissions 0644 are too open"),
        "{e}"
    );
    perms(&ours_pem, 0o600);
    perms(&py384, 0o600);
    for (key, public) in [(&ours_pem, &ours_pub), (&py384, &py384_pub)] {
        let key = PrivateKey::read(key).unwrap();
        for model in [&dir_model, &file_model] {
            let sig = tmp.path().join("zooaudit.sig");
            std::fs::write(&sig, sign_key(model, &sig, &key).unwrap()).unwrap();
            let o = model_signing(&[
                "verify",
                "key",
                s(model),
                "--signature",
                s(&sig),
                "--public_key",
                s(public),
            ]);
            assert!(
                o.status.success(),
                "{}: {}",
                model.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            verify_key(model, &sig, &key.public()).unwrap();
        }
    }
    // Signed with the signature inside the model: left out on both sides.
    let key = PrivateKey::read(&ours_pem).unwrap();
    let inside = dir_model.join("model.sig");
    std::fs::write(&inside, sign_key(&dir_model, &inside, &key).unwrap()).unwrap();
    let o = model_signing(&[
        "verify",
        "key",
        s(&dir_model),
        "--signature",
        s(&inside),
        "--public_key",
        s(&ours_pub),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    verify_key(&dir_model, &inside, &key.public()).unwrap();
    std::fs::write(dir_model.join("a.txt"), b"B").unwrap();
    let o = model_signing(&[
        "verify",
        "key",
        s(&dir_model),
        "--signature",
        s(&inside),
        "--public_key",
        s(&ours_pub),
    ]);
    assert!(!o.status.success(), "the package accepted a changed model");
    assert!(verify_key(&dir_model, &inside, &key.public()).is_err());
}

/// Malformed bundles are one-line errors, never valid.
#[test]
fn malformed_bundles_are_refused_in_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_model, _) = models(tmp.path());
    let key = PrivateKey::generate_p256();
    let sig = tmp.path().join("m.sig");
    let good = sign_key(&dir_model, &sig, &key).unwrap();
    let v: serde_json::Value = serde_json::from_str(&good).unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = v.clone();
        f(&mut v);
        v.to_string()
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|v| v["mediaType"] = "application/json".into()),
            "mediaType is 'application/json'",
        ),
        (
            with(&|v| v["extra"] = 1.into()),
            "not a Sigstore bundle: unknown field `extra`",
        ),
        (
            with(&|v| v["dsseEnvelope"]["payload"] = "%%%".into()),
            "payload is not base64",
        ),
        (
            with(&|v| v["dsseEnvelope"]["signatures"] = serde_json::json!([])),
            "signatures is empty",
        ),
        (
            with(&|v| {
                v["verificationMaterial"]["x509CertificateChain"] =
                    serde_json::json!({"certificates": []})
            }),
            "exactly one of",
        ),
        (
            with(&|v| {
                let m = &mut v["verificationMaterial"];
                m["x509CertificateChain"] =
                    serde_json::json!({"certificates": [{"rawBytes": "M%"}]});
                m.as_object_mut().unwrap().remove("publicKey");
            }),
            "certificates[0].rawBytes is not base64",
        ),
        (
            with(&|v| {
                let m = &mut v["verificationMaterial"];
                m["x509CertificateChain"] = serde_json::json!({"certificates": []});
                m.as_object_mut().unwrap().remove("publicKey");
            }),
            "certificates is empty",
        ),
        (
            with(&|v| {
                let m = &mut v["verificationMaterial"];
                m.as_object_mut().unwrap().remove("publicKey");
                m["certificate"] = serde_json::json!({"rawBytes": "AAAA"});
            }),
            "a keyless",
        ),
        (good[..good.len() / 2].to_string(), "not a Sigstore bundle"),
    ];
    for (text, needle) in cases {
        std::fs::write(&sig, &text).unwrap();
        let e = verify_key(&dir_model, &sig, &key.public())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("{}: ", sig.display())) && e.contains(needle),
            "{needle}: {e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

/// Statements a signer could sign that are not what model signing means:
/// each refused in one line even with a valid signature over it.
#[test]
fn signed_statements_that_are_not_model_signatures_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir_model, _) = models(tmp.path());
    let key = PrivateKey::generate_p256();
    let digest = hash_model(&dir_model, &[]).unwrap();
    let good: serde_json::Value =
        serde_json::from_slice(&bundle::statement_json(&digest, &[])).unwrap();
    let sig = tmp.path().join("s.sig");
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|v| v["predicateType"] = "https://slsa.dev/provenance/v1".into()),
            "predicateType is 'https://slsa.dev/provenance/v1'",
        ),
        (
            Box::new(|v| v["_type"] = "https://in-toto.io/Statement/v0.1".into()),
            "_type is not",
        ),
        (
            Box::new(|v| {
                let s = v["subject"][0].clone();
                v["subject"].as_array_mut().unwrap().push(s);
            }),
            "2 subjects, expected 1",
        ),
        (
            Box::new(|v| v["subject"] = serde_json::json!([])),
            "0 subjects, expected 1",
        ),
        (
            Box::new(|v| {
                v["predicate"]["resources"]
                    .as_array_mut()
                    .unwrap()
                    .reverse()
            }),
            "the resources do not hash to the subject's digest",
        ),
        (
            Box::new(|v| v["predicate"]["resources"][0]["name"] = "../outside".into()),
            "is not a plain relative path",
        ),
        (
            Box::new(|v| {
                let r = v["predicate"]["resources"][0].clone();
                v["predicate"]["resources"].as_array_mut().unwrap().push(r);
            }),
            "appears twice",
        ),
        (
            Box::new(|v| v["predicate"]["resources"][0]["algorithm"] = "blake2b".into()),
            "algorithm 'blake2b'",
        ),
        (
            Box::new(|v| v["predicate"]["serialization"]["method"] = "shards".into()),
            "serialization method 'shards'",
        ),
        (
            Box::new(|v| v["predicate"]["resources"][0]["digest"] = "zz".into()),
            "is not 64 hexadecimal digits",
        ),
    ];
    for (edit, needle) in cases {
        let mut v = good.clone();
        edit(&mut v);
        std::fs::write(&sig, bundle::key_bundle(v.to_string().as_bytes(), &key)).unwrap();
        let e = verify_key(&dir_model, &sig, &key.public()).unwrap_err();
        assert!(matches!(e, SignError::Invalid { .. }), "{needle}: {e}");
        let e = e.to_string();
        assert!(e.contains(needle), "{needle}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
    }
}

//! Certificate mode against the real package: a throwaway PKI made in the
//! test (tests/modelsign/pki.py), bundles signed by `model_signing sign
//! certificate`, and zooaudit's verdict on each equal to `model_signing
//! verify certificate`'s.

use std::path::{Path, PathBuf};
use std::process::Command;

use zooaudit_modelsign::{Mode, SignError, Trust, hash_model, verify};
use zooaudit_testsupport as support;

use super::{model_signing, models, s};

pub(crate) fn pki(dir: &Path) -> PathBuf {
    let out = dir.join("pki");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modelsign/pki.py");
    let o = Command::new(support::python())
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

/// `model_signing sign certificate` with the signing certificate `leaf`
/// and the chain file `chain`.
pub(crate) fn sign(model: &Path, pki: &Path, leaf: &str, chain: &str, sig: &Path) {
    let o = model_signing(&[
        "sign",
        "certificate",
        s(model),
        "--private_key",
        s(&pki.join(format!("{leaf}.key"))),
        "--signing_certificate",
        s(&pki.join(format!("{leaf}.pem"))),
        "--certificate_chain",
        s(&pki.join(format!("{chain}.pem"))),
        "--signature",
        s(sig),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Whether `model_signing verify certificate` accepts.
fn theirs(model: &Path, sig: &Path, trusted: &[PathBuf]) -> bool {
    let mut args = vec![
        "verify".to_string(),
        "certificate".into(),
        s(model).into(),
        "--signature".into(),
        s(sig).into(),
    ];
    for t in trusted {
        args.push("--certificate_chain".into());
        args.push(s(t).into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = model_signing(&args);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    text.contains("Verification succeeded")
}

fn ours(
    model: &Path,
    sig: &Path,
    trusted: &[PathBuf],
) -> Result<zooaudit_modelsign::Verified, SignError> {
    verify(model, sig, &Trust::chain_files(trusted).unwrap())
}

/// Each signing certificate that differs in one way: zooaudit and the
/// package agree on every one, and every refusal is one line naming the
/// signature file.
#[test]
fn certificate_bundles_get_the_verdict_model_signing_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = models(tmp.path());
    let pki = pki(tmp.path());
    let root = vec![pki.join("root.pem")];
    let cases = [
        ("leaf", "int", true, ""),
        ("eku-only", "int", true, ""),
        ("expired", "int", true, ""),
        ("no-signing", "int", false, "neither digitalSignature"),
        (
            "too-early",
            "int",
            false,
            "is not valid at the signing certificate's notBefore",
        ),
        (
            "critical",
            "int",
            false,
            "unknown critical extension 1.3.6.1.4.1.99999.1",
        ),
        ("under-notca", "notca", false, "is not a CA"),
    ];
    for (leaf, chain, accept, why) in cases {
        let sig = tmp.path().join(format!("{leaf}.sig"));
        sign(&model, &pki, leaf, chain, &sig);
        assert_eq!(
            theirs(&model, &sig, &root),
            accept,
            "model_signing on {leaf}"
        );
        match ours(&model, &sig, &root) {
            Ok(v) => {
                assert!(accept, "{leaf} verified here, refused by model_signing");
                assert_eq!(v.mode, Mode::Certificate);
                assert_eq!(v.signer, format!("CN=Model Signer {leaf}"));
                assert_eq!(v.root_subject.as_deref(), Some("CN=Zoo Test Root CA"));
                assert_eq!(v.root_sha256, hash_model(&model, &[]).unwrap().root_hex());
            }
            Err(e) => {
                let m = e.to_string();
                assert!(!accept, "{leaf} refused here: {m}");
                assert!(m.starts_with(s(&sig)) && m.contains(why), "{leaf}: {m}");
                assert!(!m.contains('\n'), "{m}");
            }
        }
    }

    // The trust decides: another root, or only the intermediate (no
    // partial chains), refuses the good bundle on both sides.
    let sig = tmp.path().join("leaf.sig");
    for trusted in [vec![pki.join("other-root.pem")], vec![pki.join("int.pem")]] {
        assert!(!theirs(&model, &sig, &trusted));
        let e = ours(&model, &sig, &trusted).unwrap_err().to_string();
        assert!(
            e.contains("no issuer of") || e.contains("trusted self-signed root"),
            "{e}"
        );
    }
    // A bundle carrying only the signing certificate verifies when the
    // verifier trusts the intermediate and the root, not the root alone.
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let certs = v["verificationMaterial"]["x509CertificateChain"]["certificates"]
        .as_array_mut()
        .unwrap();
    assert_eq!(certs.len(), 2);
    certs.truncate(1);
    let lone = tmp.path().join("lone.sig");
    std::fs::write(&lone, serde_json::to_vec(&v).unwrap()).unwrap();
    let both = vec![pki.join("root.pem"), pki.join("int.pem")];
    assert!(theirs(&model, &lone, &both) && !theirs(&model, &lone, &root));
    ours(&model, &lone, &both).unwrap();
    ours(&model, &lone, &root).unwrap_err();

    // One changed byte in the model, and the wrong kind of trust.
    std::fs::write(model.join("a.txt"), b"B").unwrap();
    let e = ours(&model, &sig, &root).unwrap_err().to_string();
    assert!(e.contains("a.txt"), "{e}");
    std::fs::write(model.join("a.txt"), b"A").unwrap();
    let key = Trust::Key(zooaudit_modelsign::PrivateKey::generate_p256().public());
    let e = verify(&model, &sig, &key).unwrap_err().to_string();
    assert!(e.contains("certificate-mode bundle"), "{e}");
}

//! OpenSSF model signing on the command line, against the real
//! `model-signing` package: a publisher's signature named in a manifest is
//! verified before the audit opens the model and recorded in the report and
//! the attestation; a clean candidate is countersigned in a bundle the
//! package accepts; `verify-model`, `sign-model` and `keygen --p256`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use base64::Engine;

use super::{fails_with, run_audit, s, stderr, support, variant, zooaudit};

use support::model_signing;

fn ok(o: &Output) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(o));
    assert!(o.status.success(), "{text}");
    text
}

/// A P-256 pair from `zooaudit keygen --p256`: (private, public).
fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let base = dir.join(name);
    ok(&zooaudit(&["keygen", "--p256", "--out", s(&base)]));
    (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    )
}

/// The example audit with its candidate manifest replaced by `candidate`.
fn audit_with(dir: &Path, candidate: &Path) -> PathBuf {
    let example = support::example_manifest("audit.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let text = text
        .replace("../../../shared/zoo", s(&support::shared_zoo()))
        .replace("../../triggers", s(&support::repo_root().join("triggers")))
        .replace("[\"sface.toml\"]", &format!("[{:?}]", s(candidate)))
        .replace(
            "[\"faceplugin.toml\"]",
            &format!("[{:?}]", s(&support::example_manifest("faceplugin.toml"))),
        );
    let path = dir.join("audit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The DSSE payload of an attestation, as JSON.
fn payload(dsse: &Path) -> serde_json::Value {
    let env: serde_json::Value = serde_json::from_slice(&std::fs::read(dsse).unwrap()).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(env["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The publisher signs SFace with the package; the manifest names the
/// bundle and key; the audit verifies it first, records it, names the
/// candidate by its model-signing root in the attestation, and
/// countersigns it. A changed byte in the bundle or the model refuses the
/// model before it is opened, naming the manifest, the bundle and the file.
#[test]
fn a_publisher_signature_is_verified_before_the_audit_and_the_clean_candidate_is_countersigned() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sface = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    let (publisher, publisher_pub) = keygen(dir, "publisher");
    let bundle = dir.join("sface.sig");
    ok(&model_signing(&[
        "sign",
        "key",
        s(&sface),
        "--private_key",
        s(&publisher),
        "--signature",
        s(&bundle),
    ]));
    let signature = format!(
        "\n[signature]\nbundle = {:?}\nkey = {:?}\n",
        s(&bundle),
        s(&publisher_pub)
    );
    let manifest = variant(dir, "sface.toml", |t| t + &signature);
    let audit = audit_with(dir, &manifest);
    let (auditor, auditor_pub) = keygen(dir, "auditor");
    let attest_key = dir.join("attest");
    ok(&zooaudit(&["keygen", "--out", s(&attest_key)]));
    let out = dir.join("out");
    let o = run_audit(
        &audit,
        &out,
        &[
            "--sign-key",
            s(&dir.join("attest.key")),
            "--sign-model",
            s(&auditor),
        ],
    );
    let text = ok(&o);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    let m = &report["models"][0];
    let sha = m["sha256"].as_str().unwrap();
    let root = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        hex::decode(sha).unwrap(),
    ));
    assert_eq!(m["model_signing_root"], root);
    let sig = &m["signature"];
    assert_eq!(sig["mode"], "key", "{sig}");
    assert_eq!(sig["covers"], "file");
    assert_eq!(sig["root_sha256"], root);
    let hint = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(&publisher_pub).unwrap(),
    ));
    assert_eq!(sig["signer"], format!("key sha256:{hint}"));
    assert_eq!(report["models"][1]["signature"], serde_json::Value::Null);
    // The attestation names the candidate by file sha256 and by root.
    let st = payload(&out.join("attestation.dsse.json"));
    let digests: Vec<&str> = st["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["digest"]["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(digests, [sha, root.as_str()], "{}", st["subject"]);
    // The countersignature verifies with the standard tool and here.
    let counter = out.join("sface-2021dec-int8.model.sig");
    assert!(text.contains("countersigned:"), "{text}");
    ok(&model_signing(&[
        "verify",
        "key",
        s(&sface),
        "--signature",
        s(&counter),
        "--public_key",
        s(&auditor_pub),
    ]));
    let v = ok(&zooaudit(&[
        "verify-model",
        s(&sface),
        "--signature",
        s(&counter),
        "--key",
        s(&auditor_pub),
    ]));
    assert!(v.contains(&root) && v.contains("VALID"), "{v}");

    // `zooaudit verify` joins the two: the attestation's subject is the
    // model the publisher signed.
    let v = ok(&zooaudit(&[
        "verify",
        s(&out.join("attestation.dsse.json")),
        "--key",
        s(&dir.join("attest.pub")),
        "--model",
        s(&sface),
        "--model-signature",
        s(&bundle),
        "--model-key",
        s(&publisher_pub),
    ]));
    assert!(
        v.contains(&format!("model signature: key sha256:{hint} signed"))
            && v.contains("subject sface-2021dec-int8#model-signing")
            && v.contains("VALID"),
        "{v}"
    );

    // One changed byte in the bundle: refused before the model is opened.
    let good = std::fs::read(&bundle).unwrap();
    let mut bad: serde_json::Value = serde_json::from_slice(&good).unwrap();
    let sig_b64 = bad["dsseEnvelope"]["signatures"][0]["sig"]
        .as_str()
        .unwrap()
        .to_string();
    let mut raw = base64::engine::general_purpose::STANDARD
        .decode(&sig_b64)
        .unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    bad["dsseEnvelope"]["signatures"][0]["sig"] = base64::engine::general_purpose::STANDARD
        .encode(&raw)
        .into();
    std::fs::write(&bundle, serde_json::to_vec(&bad).unwrap()).unwrap();
    let out2 = dir.join("out2");
    let line = fails_with(
        &["audit", s(&audit), "--out", s(&out2)],
        &[s(&manifest), "signature", s(&bundle), "does not verify"],
    );
    assert!(!out2.join("report.json").exists(), "{line}");
    fails_with(&["fetch", s(&manifest)], &[s(&manifest), s(&bundle)]);
    std::fs::write(&bundle, &good).unwrap();

    // One changed byte in the model (a copy without a sha256 pin, so the
    // signature is what catches it): refused naming the model file.
    let copy = dir.join("sface-copy.onnx");
    std::fs::copy(&sface, &copy).unwrap();
    let copy_sig = dir.join("copy.sig");
    ok(&model_signing(&[
        "sign",
        "key",
        s(&copy),
        "--private_key",
        s(&publisher),
        "--signature",
        s(&copy_sig),
    ]));
    let mut bytes = std::fs::read(&copy).unwrap();
    let n = bytes.len() - 10;
    bytes[n] ^= 0x40;
    std::fs::write(&copy, &bytes).unwrap();
    let unpinned = variant(dir, "sface.toml", |t| {
        let t: String = t
            .lines()
            .filter(|l| !l.starts_with("sha256"))
            .map(|l| format!("{l}\n"))
            .collect();
        let t = super::with_source(&t, s(&copy));
        t + &format!(
            "\n[signature]\nbundle = {:?}\nkey = {:?}\n",
            s(&copy_sig),
            s(&publisher_pub)
        )
    });
    fails_with(
        &["fetch", "--allow-unpinned", s(&unpinned)],
        &[s(&unpinned), "changed since they were signed", s(&copy)],
    );
}

/// `sign-model` over a directory with nested files is accepted by
/// `model_signing verify key`; `verify-model` takes it (exit 0) and refuses
/// it after a change (exit 1); certificate mode with a throwaway PKI; the
/// P-256 private key is written 0600; a directory-signed model named by
/// `[signature] directory` is verified by `fetch`, and one whose signer
/// left the model file out is refused.
#[test]
fn sign_model_and_verify_model_speak_the_standard_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (key, public) = keygen(dir, "zoo");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    fails_with(
        &["keygen", "--p256", "--out", s(&dir.join("zoo"))],
        &["zoo.key", "exists"],
    );

    let model = dir.join("repo");
    std::fs::create_dir_all(model.join("weights")).unwrap();
    let sface = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    std::fs::copy(&sface, model.join("weights/model.onnx")).unwrap();
    std::fs::write(model.join("config.json"), b"{\"dim\": 128}").unwrap();
    let o = ok(&zooaudit(&["sign-model", s(&model), "--key", s(&key)]));
    let bundle = dir.join("repo.sig");
    assert!(o.contains(s(&bundle)), "{o}");
    ok(&model_signing(&[
        "verify",
        "key",
        s(&model),
        "--signature",
        s(&bundle),
        "--public_key",
        s(&public),
    ]));
    let verify = |sig: &Path, trust: &[&str]| {
        let mut args = vec!["verify-model", s(&model), "--signature", s(sig)];
        args.extend_from_slice(trust);
        zooaudit(&args)
    };
    let o = verify(&bundle, &["--key", s(&public)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // A signature file that is not there is an error (2), not INVALID (1).
    let o = verify(&dir.join("missing.sig"), &["--key", s(&public)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("missing.sig: cannot read"),
        "{}",
        stderr(&o)
    );

    // The manifest names the signed directory; fetch verifies it.
    let manifest = variant(dir, "sface.toml", |t| {
        let t = super::with_source(&t, s(&model.join("weights/model.onnx")));
        t + &format!(
            "\n[signature]\nbundle = {:?}\nkey = {:?}\ndirectory = {:?}\n",
            s(&bundle),
            s(&public),
            s(&model)
        )
    });
    let text = ok(&zooaudit(&["fetch", s(&manifest)]));
    assert!(
        text.contains("publisher signature verified (key mode, directory)"),
        "{text}"
    );

    // A file added to the directory: invalid (exit 1), named.
    std::fs::write(model.join("extra.bin"), b"x").unwrap();
    let o = verify(&bundle, &["--key", s(&public)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("INVALID") && out.contains("extra.bin"),
        "{out}"
    );
    std::fs::remove_file(model.join("extra.bin")).unwrap();

    // A signer who left the model file out of a directory signature.
    let partial = dir.join("partial.sig");
    ok(&model_signing(&[
        "sign",
        "key",
        s(&model),
        "--private_key",
        s(&key),
        "--signature",
        s(&partial),
        "--ignore-paths",
        s(&model.join("weights")),
    ]));
    let manifest2 = variant(dir, "sface.toml", |t| {
        let t = super::with_source(&t, s(&model.join("weights/model.onnx")));
        t + &format!(
            "\n[signature]\nbundle = {:?}\nkey = {:?}\ndirectory = {:?}\n",
            s(&partial),
            s(&public),
            s(&model)
        )
    });
    fails_with(
        &["fetch", s(&manifest2)],
        &["does not cover the model file weights/model.onnx"],
    );

    // Certificate mode, with the PKI the library's tests use.
    let pki = dir.join("pki");
    let script = support::repo_root().join("core/modelsign/tests/modelsign/pki.py");
    ok(&Command::new(support::python())
        .arg(&script)
        .arg(&pki)
        .output()
        .unwrap());
    let cert_sig = dir.join("cert.sig");
    ok(&model_signing(&[
        "sign",
        "certificate",
        s(&model),
        "--private_key",
        s(&pki.join("leaf.key")),
        "--signing_certificate",
        s(&pki.join("leaf.pem")),
        "--certificate_chain",
        s(&pki.join("int.pem")),
        "--signature",
        s(&cert_sig),
    ]));
    let o = verify(
        &cert_sig,
        &["--certificate-chain", s(&pki.join("root.pem"))],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    assert!(
        out.contains("CN=Model Signer leaf") && out.contains("CN=Zoo Test Root CA"),
        "{out}"
    );
    let o = verify(
        &cert_sig,
        &["--certificate-chain", s(&pki.join("other-root.pem"))],
    );
    assert_eq!(o.status.code(), Some(1));
    let o = verify(&cert_sig, &["--key", s(&public)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("certificate-mode bundle"));
}

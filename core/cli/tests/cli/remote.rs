//! Models behind an inference API, audited through the `http` adapter: SFace
//! served by zooaudit's own guard (a plain JSON API) and by a real Open
//! Inference Protocol server (MLServer, tests/servers/oip) gets exactly the
//! verdict and results of the same audit of the local file.

use std::path::{Path, PathBuf};

use super::{Guard, s, stderr, support, variant, zooaudit};

/// The example audit with `candidate` (a manifest in `dir`) against
/// faceplugin, with absolute paths to the triggers and faces; `small`: on
/// 178 of the 592 faces (the labeled ones and three unlabeled sources),
/// enough to compare two runs (too few to calibrate a verdict other than
/// *inconclusive*), with fewer images sent over HTTP.
fn audit_of(dir: &Path, candidate: &str, file: &str, small: bool) -> PathBuf {
    let text = std::fs::read_to_string(support::example_manifest("audit.toml")).unwrap();
    let shared = support::shared_zoo();
    let triggers = support::repo_root().join("triggers");
    let unlabeled = shared.join("faces/aligned112/unlabeled");
    let sources: Vec<String> = ["tabler", "vladmandic-face-api", "mitdeeplearning"]
        .iter()
        .map(|d| format!("{:?}", unlabeled.join(d).to_str().unwrap()))
        .collect();
    let text = if small {
        text.replace(
            "unlabeled = [\"../../../shared/zoo/faces/aligned112/unlabeled\"]",
            &format!("unlabeled = [{}]", sources.join(", ")),
        )
    } else {
        text
    };
    let text = text
        .replace("../../../shared/zoo", shared.to_str().unwrap())
        .replace("../../triggers", triggers.to_str().unwrap())
        .replace(
            "candidates = [\"sface.toml\"]",
            &format!("candidates = [\"{candidate}\"]"),
        );
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// SFace's manifest with the source `source` through the http adapter.
fn remote_manifest(dir: &Path, file: &str, source: &str, input: &str, options: &str) {
    let text = std::fs::read_to_string(dir.join("sface.toml")).unwrap();
    let start = text.find("[model]").unwrap();
    let end = text.find("[output]").unwrap();
    let model = format!(
        "[model]\nname = \"sface-2021dec-int8\"\nsource = \"{source}\"\nadapter = \"http\"\n[model.options]\n{options}\n\n[input]\n{input}\n\n"
    );
    let text = format!("{}{model}{}", &text[..start], &text[end..]);
    std::fs::write(dir.join(file), text).unwrap();
}

fn audit(audit: &Path, out: &Path) -> serde_json::Value {
    let o = zooaudit(&[
        "audit",
        s(audit),
        "--out",
        s(out),
        "--cache-dir",
        s(&support::embedding_cache()),
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1 | 3)), "{}", stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

/// `a` and `b` agree: the same keys, strings and integers (every count),
/// and floats within `tol` (a remote runtime's threads may round the last
/// bits of an embedding differently: thresholds move by ~1e-7).
fn assert_close(a: &serde_json::Value, b: &serde_json::Value, tol: f64, at: &str) {
    use serde_json::Value as V;
    match (a, b) {
        (V::Object(x), V::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{at}"
            );
            for (k, v) in x {
                assert_close(v, &y[k], tol, &format!("{at}.{k}"));
            }
        }
        (V::Array(x), V::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_close(v, w, tol, &format!("{at}[{i}]"));
            }
        }
        (V::Number(x), V::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= tol, "{at}: {x} vs {y}");
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// The verdicts are equal; the detection results (every count exactly) and
/// the pairs' held-out fidelity agree.
fn assert_same_audit(remote: &serde_json::Value, local: &serde_json::Value) {
    assert_eq!(remote["verdicts"], local["verdicts"]);
    assert_close(&remote["results"], &local["results"], 1e-5, "results");
    for (r, l) in remote["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .zip(local["pairs"].as_array().unwrap())
    {
        assert_close(&r["fidelity"], &l["fidelity"], 1e-5, "fidelity");
    }
}

/// RGB NHWC raw pixels: what an image API is sent.
const IMAGE_INPUT: &str = "size = [112, 112]\nlayout = \"NHWC\"\nchannels = \"RGB\"\nmean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]";

#[test]
fn sface_behind_the_guard_api_gets_the_local_audit() {
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), "sface.toml", |t| t);
    variant(tmp.path(), "faceplugin.toml", |t| t);
    let local_audit = audit_of(tmp.path(), "sface.toml", "local.toml", true);
    let local = audit(&local_audit, &tmp.path().join("local"));

    // The guard serves SFace (its probe) at /v1/embed/batch.
    let bundle = tmp.path().join("pair.json");
    let o = zooaudit(&[
        "pair",
        "fit",
        s(&local_audit),
        "--out",
        s(&bundle),
        "--serve",
        "probe",
        "--cache-dir",
        s(&support::embedding_cache()),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let guard = Guard::start(&bundle, &[]);
    let source = format!(
        "{}/v1/embed/batch",
        guard.url.replacen("http://", "api+http://", 1)
    );
    remote_manifest(
        tmp.path(),
        "remote.toml",
        &source,
        IMAGE_INPUT,
        "input_shape = [112, 112, 3]\nembedding_dim = 128\nrequest = '{\"images\": \"$inputs\"}'\nembedding_path = \"/results/*/embedding\"\nmax_batch = 16\nconcurrency = 2",
    );
    let remote_audit = audit_of(tmp.path(), "remote.toml", "remote-audit.toml", true);
    let out = tmp.path().join("remote");
    let remote = audit(&remote_audit, &out);
    let sface = &remote["models"][0];
    assert_eq!(sface["endpoint"], source.as_str());
    assert_eq!(sface["pinned"], false);
    assert_eq!(sface["sha256"], "");
    assert_same_audit(&remote, &local);
    let warned = remote["warnings"].as_array().unwrap();
    assert!(
        warned
            .iter()
            .any(|w| w.as_str().unwrap().contains("cannot be pinned by sha256")),
        "{warned:?}"
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("cannot be pinned by sha256"), "{summary}");
    let _ = guard.stop();
}

#[test]
fn sface_behind_mlserver_gets_the_local_audit() {
    let server = support::mlserver::MlServer::start(&["sface"]);
    let tmp = tempfile::tempdir().unwrap();
    variant(tmp.path(), "sface.toml", |t| t);
    variant(tmp.path(), "faceplugin.toml", |t| t);
    let local = audit(
        &audit_of(tmp.path(), "sface.toml", "local.toml", false),
        &tmp.path().join("local"),
    );
    let source = server.source("sface");
    // `init` on the endpoint: the metadata gives the input, the faces the
    // documented preprocessing; no sha256 pin is written.
    let written = tmp.path().join("init.toml");
    let labeled = support::shared_zoo().join("faces/aligned112/labeled");
    let o = zooaudit(&[
        "init",
        &source,
        "--faces",
        s(&labeled),
        "--out",
        s(&written),
        "--channels",
        "BGR",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", stderr(&o));
    assert!(
        stdout.contains("BGR 0..255") && stdout.contains("no sha256 pin"),
        "{stdout}"
    );
    let m: toml::Table = std::fs::read_to_string(&written).unwrap().parse().unwrap();
    assert_eq!(m["model"]["adapter"].as_str(), Some("http"));
    assert!(m["model"].get("sha256").is_none(), "{m:?}");
    assert_eq!(m["input"]["layout"].as_str(), Some("NCHW"));
    assert_eq!(
        m["input"]["mean"],
        toml::Value::try_from([0.0, 0.0, 0.0]).unwrap()
    );
    let input = "name = \"data\"\nsize = [112, 112]\nlayout = \"NCHW\"\nchannels = \"BGR\"\nmean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]";
    remote_manifest(
        tmp.path(),
        "remote.toml",
        &source,
        input,
        "model_version = \"1\"\nmax_batch = 32\nconcurrency = 2",
    );
    let out = tmp.path().join("remote");
    let remote = audit(
        &audit_of(tmp.path(), "remote.toml", "remote-audit.toml", false),
        &out,
    );
    assert_eq!(
        remote["verdicts"][0]["verdict"], local["verdicts"][0]["verdict"],
        "the full audit decides"
    );
    assert_eq!(remote["models"][0]["endpoint"], source.as_str());
    assert_same_audit(&remote, &local);
    // A remote candidate cannot be the subject of a signed attestation.
    let key = tmp.path().join("auditor.key");
    let o = zooaudit(&["keygen", "--out", s(&tmp.path().join("auditor"))]);
    assert!(o.status.success(), "{}", stderr(&o));
    super::fails_with(
        &["sign", s(&out.join("report.json")), "--key", s(&key)],
        &["in-toto subject needs a file digest", "sface-2021dec-int8"],
    );
}

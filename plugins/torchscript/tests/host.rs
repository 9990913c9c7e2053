//! The adapter as zooaudit's host loads it: `zooaudit plugins` lists it,
//! and an audit of the TorchScript faceplugin against SFace gives the
//! verdict and fidelity of the same audit of the ONNX original. Needs the
//! zooaudit binary (`ZOOAUDIT_BIN`, built by the main workspace) beside its
//! plugins; scripts/test-torch.sh sets everything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn zooaudit(args: &[&str]) -> Output {
    let bin = std::env::var_os("ZOOAUDIT_BIN")
        .expect("ZOOAUDIT_BIN: the zooaudit binary (scripts/test-torch.sh sets it)");
    // The test executable is in target/<profile>/deps; the plugin beside deps.
    let exe = std::env::current_exe().unwrap();
    let plugins = exe.parent().unwrap().parent().unwrap();
    Command::new(bin)
        .arg("--plugin-dir")
        .arg(plugins)
        .args(args)
        .output()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn zooaudit_plugins_lists_the_adapter() {
    let o = zooaudit(&["plugins"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = out
        .lines()
        .find(|l| l.starts_with("torchscript "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        line.contains("model-adapter") && line.contains("pt"),
        "{line}"
    );
}

#[test]
fn a_file_that_is_not_torchscript_is_one_line_naming_the_manifest() {
    let dir = tempfile_dir();
    let text = std::fs::read_to_string(root().join("examples/torchscript/faceplugin.toml"))
        .unwrap()
        .replace(
            "source = \"../../.zooaudit/torch/faceplugin_fr_feature.pt\"",
            &format!(
                "source = \"{}\"",
                s(&crate::common::zoo().join("models/faceplugin_fr_feature.onnx"))
            ),
        )
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .collect::<Vec<_>>()
        .join("\n");
    let m = dir.join("not-torchscript.toml");
    std::fs::write(&m, text).unwrap();
    let o = zooaudit(&["inspect", "--model", s(&m)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("not-torchscript.toml") && lines[0].contains("not a TorchScript file"),
        "{err}"
    );
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "zooaudit-torchscript-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The example audit with `candidate` against SFace, absolute paths.
fn audit(dir: &Path, candidate: &Path, name: &str) -> serde_json::Value {
    let zoo = crate::common::zoo();
    let examples = root().join("examples/shared-zoo");
    let text = std::fs::read_to_string(examples.join("audit.toml"))
        .unwrap()
        .replace("../../../shared/zoo", s(&zoo))
        .replace("../../triggers", s(&root().join("triggers")))
        .replace(
            "candidates = [\"sface.toml\"]",
            &format!("candidates = [{:?}]", s(candidate)),
        )
        .replace(
            "references = [\"faceplugin.toml\"]",
            &format!("references = [{:?}]", s(&examples.join("sface.toml"))),
        );
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, text).unwrap();
    let out = dir.join(name);
    let cache = root().join("target/test-cache/example-audit");
    let o = zooaudit(&[
        "audit",
        s(&file),
        "--out",
        s(&out),
        "--cache-dir",
        s(&cache),
    ]);
    assert!(
        matches!(o.status.code(), Some(0 | 1 | 3)),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap()
}

#[test]
fn an_audit_of_the_torchscript_model_gives_the_onnx_verdict_and_fidelity() {
    let dir = tempfile_dir();
    let ts = audit(
        &dir,
        &root().join("examples/torchscript/faceplugin.toml"),
        "torchscript",
    );
    let onnx = audit(
        &dir,
        &root().join("examples/shared-zoo/faceplugin.toml"),
        "onnx",
    );
    assert_eq!(
        ts["models"][0]["sha256"],
        "9a882dcd83ea6af022de1cba9f80ad7c40bcc4b456e0ecef13c6f543c8602e70"
    );
    assert_eq!(ts["verdicts"][0]["verdict"], onnx["verdicts"][0]["verdict"]);
    let pairs = |r: &serde_json::Value| r["pairs"].as_array().unwrap().clone();
    let (tp, op) = (pairs(&ts), pairs(&onnx));
    assert_eq!(tp.len(), op.len());
    for (t, o) in tp.iter().zip(&op) {
        let (tf, of) = (&t["fidelity"], &o["fidelity"]);
        for key in ["top1", "mean_rank", "mean_cosine"] {
            let (a, b) = (tf[key].as_f64().unwrap(), of[key].as_f64().unwrap());
            assert!((a - b).abs() <= 1e-4, "{key}: torchscript {a} vs onnx {b}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

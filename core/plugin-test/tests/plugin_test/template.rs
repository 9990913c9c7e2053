//! examples/detector-plugin (the template, *relative*) and
//! examples/detector-kernel (a second detector written from it), each built
//! apart from the workspace (its own Cargo project, depending on the SDK by
//! path) and run where the built-in detector runs: `audit`, `pair fit` +
//! `guard check`, `bench paper`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use zooaudit_plugin_test::Harness;
use zooaudit_testsupport as support;

/// The out-of-tree detectors: folder under examples/, plugin name, and
/// the options an audit gives it (TOML line, and as JSON in the bundle).
const EXAMPLES: [(&str, &str, &str, &str, i64); 2] = [
    (
        "detector-plugin",
        "relative",
        "zooaudit_plugin_relative",
        "anchors",
        64,
    ),
    (
        "detector-kernel",
        "kernel",
        "zooaudit_plugin_kernel",
        "centers",
        128,
    ),
];

/// Builds both examples (release: an audit scores every held-out face pair)
/// once, into one target directory (they share their dependencies); returns
/// the directory holding the two plugin files alone.
pub(crate) fn template_plugin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = support::repo_root();
        let target = root.join("target/example-plugin");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let dir = target.join("plugin");
        std::fs::create_dir_all(&dir).unwrap();
        for (folder, _, lib, _, _) in EXAMPLES {
            let status = Command::new(&cargo)
                .args([
                    "build",
                    "--release",
                    "--locked",
                    "--quiet",
                    "--manifest-path",
                ])
                .arg(root.join("examples").join(folder).join("Cargo.toml"))
                .arg("--target-dir")
                .arg(&target)
                .status()
                .unwrap();
            assert!(status.success(), "building examples/{folder} failed");
            // Alone in a directory: the release dir also holds build scripts.
            let name = format!("lib{lib}.so");
            let part = dir.join(format!("{name}.part"));
            std::fs::copy(target.join("release").join(&name), &part).unwrap();
            std::fs::rename(&part, dir.join(&name)).unwrap();
        }
        dir
    })
    .clone()
}

pub(crate) fn zooaudit(args: &[&str], plugin_dir: &Path) -> Output {
    let out = Command::new(support::target_profile_dir().join("zooaudit"))
        .args(args)
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .output()
        .unwrap();
    eprintln!(
        "zooaudit {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The shared example audit with detector `plugin` and option `key = value`.
fn audit_file(dir: &Path, plugin: &str, key: &str, value: i64) -> PathBuf {
    let example = support::repo_root().join("examples/shared-zoo/audit.toml");
    let text = std::fs::read_to_string(&example).unwrap();
    let base = example.parent().unwrap().display().to_string();
    let mut out = String::new();
    for line in text.lines() {
        let line = if line.starts_with("plugin = ") {
            format!("plugin = \"{plugin}\"")
        } else if line.starts_with("translator = ") {
            format!("{key} = {value}")
        } else {
            // Paths relative to the example's directory.
            line.replace("\"../", &format!("\"{base}/../"))
                .replace("[\"sface.toml\"]", &format!("[\"{base}/sface.toml\"]"))
                .replace(
                    "[\"faceplugin.toml\"]",
                    &format!("[\"{base}/faceplugin.toml\"]"),
                )
        };
        out.push_str(&line);
        out.push('\n');
    }
    let path = dir.join(format!("{plugin}.toml"));
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn the_out_of_tree_detectors_run_in_audit_pair_fit_guard_and_bench() {
    support::require_ort();
    let plugin_dir = template_plugin_dir();
    let tmp = tempfile::tempdir().unwrap();
    let cache = support::embedding_cache().display().to_string();
    let out = zooaudit(&["plugins", "--json"], &plugin_dir);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (_, name, lib, key, value) in EXAMPLES {
        // Listed with its formats.
        let plugin = listed
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {listed}"));
        assert_eq!(plugin["kind"], "detector-strategy");
        let sha = plugin["sha256"].as_str().unwrap();
        through_audit_pair_and_guard(&plugin_dir, tmp.path(), &cache, (name, key, value), sha);
        // The harness passes it, from outside its own crate.
        let h = Harness::load(&plugin_dir.join(format!("lib{lib}.so"))).unwrap();
        assert_eq!(h.info().sha256, sha);
    }
    bench(&plugin_dir, tmp.path(), &cache);
}

/// An audit, `pair fit` and `guard check` with detector `name`.
fn through_audit_pair_and_guard(
    plugin_dir: &Path,
    tmp: &Path,
    cache: &str,
    (name, key, value): (&str, &str, i64),
    sha: &str,
) {
    let audit = audit_file(tmp, name, key, value);
    let report_dir = tmp.join(format!("report-{name}"));
    let out = zooaudit(
        &[
            "audit",
            audit.to_str().unwrap(),
            "--out",
            report_dir.to_str().unwrap(),
            "--cache-dir",
            cache,
            "--quiet",
        ],
        plugin_dir,
    );
    assert!(out.status.code() != Some(2), "audit with {name} failed");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    for pair in report["pairs"].as_array().unwrap() {
        assert_eq!(pair["detector"], name, "{pair}");
    }
    // Its pair bundle names the plugin file; the guard scores through it.
    let bundle = tmp.join(format!("{name}.pair.json"));
    let out = zooaudit(
        &[
            "pair",
            "fit",
            audit.to_str().unwrap(),
            "--out",
            bundle.to_str().unwrap(),
            "--cache-dir",
            cache,
        ],
        plugin_dir,
    );
    assert!(out.status.success());
    let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&bundle).unwrap()).unwrap();
    assert_eq!(b["format_version"], "2.0");
    assert_eq!(b["detector"]["plugin"], name);
    assert_eq!(b["detector"]["sha256"], sha);
    assert_eq!(b["detector"]["options"][key], value);
    assert_eq!(b["detector"]["state"]["encoding"], "json");
    let faces = support::shared_zoo().join("faces/aligned112/labeled/barack_obama");
    let out = zooaudit(
        &[
            "guard",
            "check",
            bundle.to_str().unwrap(),
            faces.to_str().unwrap(),
            "--json",
        ],
        plugin_dir,
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), support::collect(&faces).len());
    // Clean faces of a clean pair: the guard agrees on nearly all.
    let agree = lines.iter().filter(|l| l["verdict"] == "agree").count();
    assert!(
        agree * 10 >= lines.len() * 8,
        "{name}: {agree}/{}",
        lines.len()
    );
    // Without the plugin the bundle cannot run, and says which it needs.
    let out = zooaudit(
        &[
            "guard",
            "check",
            bundle.to_str().unwrap(),
            faces.to_str().unwrap(),
        ],
        tmp,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains(&format!("detector '{name}'")) && err.contains(".pair.json"),
        "{err}"
    );
}

/// `bench paper` on a small zoo (the labelled faces and one unlabelled
/// source, one trigger, one seed): every detector's column group.
fn bench(plugin_dir: &Path, tmp: &Path, cache: &str) {
    let zoo = support::shared_zoo().join("faces/aligned112");
    let faces = tmp.join("faces");
    std::fs::create_dir_all(faces.join("unlabeled")).unwrap();
    std::os::unix::fs::symlink(zoo.join("labeled"), faces.join("labeled")).unwrap();
    std::os::unix::fs::symlink(zoo.join("unlabeled/tabler"), faces.join("unlabeled/tabler"))
        .unwrap();
    let suite = tmp.join("suite.toml");
    std::fs::write(
        &suite,
        "format_version = \"1.0\"\n[[trigger]]\nname = \"large-checkerboard\"\nkind = \"checkerboard\"\ncenter = [0.6, 0.4]\nsize = 0.25\ncells = 4\n",
    )
    .unwrap();
    let models = support::repo_root().join("examples/shared-zoo");
    let out_dir = tmp.join("bench");
    let out = zooaudit(
        &[
            "bench",
            "paper",
            "--models",
            models.join("sface.toml").to_str().unwrap(),
            models.join("faceplugin.toml").to_str().unwrap(),
            "--faces",
            faces.to_str().unwrap(),
            "--triggers",
            suite.to_str().unwrap(),
            "--seeds",
            "1",
            "--strengths",
            "1.0",
            "--out",
            out_dir.to_str().unwrap(),
            "--cache-dir",
            cache,
            "--detector",
            "pairing",
            "--detector",
            "relative:anchors=64",
            "--detector",
            "kernel",
        ],
        plugin_dir,
    );
    assert!(out.status.success());
    let md = std::fs::read_to_string(out_dir.join("tables.md")).unwrap();
    eprintln!("{md}");
    for header in [
        "pairing · clean FNMR 1 %",
        "relative:anchors=64 · clean FNMR 1 %",
        "relative:anchors=64 · achieved clean FNMR at 1 %",
        "kernel · clean FNMR 5 %",
    ] {
        assert!(md.contains(header), "no column {header}");
    }
    for line in [
        "pairing: all backdoored pairings",
        "relative:anchors=64: all backdoored pairings",
        "kernel: all backdoored pairings",
    ] {
        assert!(md.contains(line), "no summary {line}");
    }
    assert!(
        md.contains("| relative:anchors=64 | relative 0.1.0"),
        "no timing row"
    );
    assert!(md.contains("| kernel | kernel 0.1.0"), "no timing row");
    // Every Table 3 and 4 row has all three groups filled.
    let rows = md
        .lines()
        .filter(|l| l.contains(" → ") && l.contains("large-checkerboard"));
    for l in rows {
        assert!(l.matches('±').count() >= 9, "{l}");
    }
}

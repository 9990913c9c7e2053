//! The static scan on real models: the shipped ones are not flagged, every
//! backdoor `zooaudit redteam inject` makes is (found by structure, not by
//! name), crafted hostile files give findings or one-line errors, and real
//! models from PyPI/npm packages give no unexplained alarm.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use zooaudit_redteam::{AttackKind, InjectOptions, inject};
use zooaudit_scan::output::{self, Outcome};
use zooaudit_scan::{Limits, Options, Rule, ScanReport, Severity, scan_bytes, scan_file};
use zooaudit_testsupport as support;

fn scan(path: &Path) -> ScanReport {
    scan_file(path, &Options::default()).unwrap()
}

fn rules_at_least(r: &ScanReport, s: Severity) -> BTreeSet<&'static str> {
    r.findings
        .iter()
        .filter(|f| f.severity >= s)
        .map(|f| f.rule.id())
        .collect()
}

#[test]
fn shipped_models_are_not_flagged() {
    let models = support::shared_zoo().join("models");
    for name in [
        "sface_2021dec_int8bq.onnx",
        "faceplugin_fr_feature.onnx",
        "yunet_2023mar_int8bq.onnx",
    ] {
        let r = scan(&models.join(name));
        assert!(!r.flagged(), "{name}: {:#?}", r.findings);
        assert!(r.nodes > 50, "{name}: {} nodes", r.nodes);
    }
    let sface = scan(&models.join("sface_2021dec_int8bq.onnx"));
    let unread: Vec<_> = sface
        .findings
        .iter()
        .filter(|f| f.rule == Rule::UnreadInput)
        .collect();
    assert_eq!(unread.len(), 1, "{:#?}", sface.findings);
    assert_eq!(unread[0].severity, Severity::Note);
    assert_eq!(unread[0].tensors.len(), 29);
}

/// Every node name of a model file.
fn node_names(path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let m = zooaudit_onnx_graph::read::read_model(&bytes, &Limits::default()).unwrap();
    m.graph.nodes.iter().map(|n| n.name.clone()).collect()
}

/// Checks one injected model: flagged with an input-pattern gate naming
/// the detector's nodes and only injected nodes; still flagged after every
/// injected name is rewritten (so names play no part).
fn check_injected(model: &Path) {
    const P: &str = "zooaudit_bd_";
    let r = scan(model);
    let gate = r
        .findings
        .iter()
        .find(|f| f.rule == Rule::InputPatternGate)
        .unwrap_or_else(|| {
            panic!(
                "{}: no input-pattern-gate: {:#?}",
                model.display(),
                r.findings
            )
        });
    assert_eq!(gate.severity, Severity::Error);
    assert!(r.flagged());
    // The detector: node0 (Flatten of the input) … node12 (Sigmoid), all named.
    for i in 0..=12 {
        let n = format!("{P}node{i}");
        assert!(
            gate.nodes.contains(&n),
            "{}: {n} not named: {:?}",
            model.display(),
            gate.nodes
        );
    }
    assert!(
        gate.nodes.iter().all(|n| n.starts_with(P)),
        "{}: the gate finding names original nodes: {:?}",
        model.display(),
        gate.nodes
    );
    for t in [format!("{P}pattern"), format!("{P}tau")] {
        assert!(gate.tensors.contains(&t), "{t}: {:?}", gate.tensors);
    }
    // The last injected node writes the output.
    let last = node_names(model)
        .into_iter()
        .rev()
        .find(|n| n.starts_with(P))
        .unwrap();
    assert!(gate.nodes.contains(&last), "{last}: {:?}", gate.nodes);
    let stored = r
        .findings
        .iter()
        .find(|f| f.rule == Rule::StoredOutputConstant)
        .expect("stored victim vector");
    assert_eq!(stored.tensors[0], format!("{P}victim"));
    assert!(rules_at_least(&r, Severity::Warning).contains("trunk-bypass"));
    // Same bytes with every injected name rewritten (same length, so the
    // protobuf stays valid): the same findings, under other names.
    let bytes = std::fs::read(model).unwrap();
    let renamed = replace_all(&bytes, P.as_bytes(), b"qx_w9_tensor");
    let r2 = scan_bytes(model, &renamed, None, &Options::default()).unwrap();
    assert_eq!(
        rules_at_least(&r, Severity::Warning),
        rules_at_least(&r2, Severity::Warning)
    );
}

fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = hay.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
            i += from.len();
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn every_injected_backdoor_is_flagged_by_structure() {
    support::require_ort();
    let plugins = support::plugins();
    let tmp = tempfile::tempdir().unwrap();
    let mut n = 0;
    for base in ["sface.toml", "faceplugin.toml"] {
        for trigger in ["large-checkerboard", "small-square"] {
            for kind in [
                AttackKind::OneToOne {
                    impostor: "john_salley".into(),
                },
                AttackKind::AllToOne,
            ] {
                for strength in [1.0f32, 0.6] {
                    let out = tmp
                        .path()
                        .join(format!("{base}-{trigger}-{}-{strength}.onnx", kind.label()));
                    let o = InjectOptions {
                        manifest: support::example_manifest(base),
                        suite: support::repo_root().join("triggers/paper.toml"),
                        trigger: trigger.into(),
                        labeled: support::shared_zoo().join("faces/aligned112/labeled"),
                        victim: "barack_obama".into(),
                        kind: kind.clone(),
                        strength,
                        calibration: vec![],
                        out: out.clone(),
                    };
                    inject(&o, &plugins).unwrap();
                    check_injected(&out);
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 16);
}

// ---- crafted hostile files: a small protobuf writer ----

fn varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}
fn field_bytes(out: &mut Vec<u8>, n: u32, payload: &[u8]) {
    varint(out, (u64::from(n) << 3) | 2);
    varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}
fn field_int(out: &mut Vec<u8>, n: u32, v: u64) {
    varint(out, u64::from(n) << 3);
    varint(out, v);
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], domain: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for i in inputs {
        field_bytes(&mut b, 1, i.as_bytes());
    }
    for o in outputs {
        field_bytes(&mut b, 2, o.as_bytes());
    }
    field_bytes(&mut b, 3, format!("n_{}", outputs[0]).as_bytes());
    field_bytes(&mut b, 4, op.as_bytes());
    if !domain.is_empty() {
        field_bytes(&mut b, 7, domain.as_bytes());
    }
    b
}

/// A float tensor: dims, then `raw` as raw_data if given, `floats` as
/// float_data if given, external entries if given.
fn tensor(
    name: &str,
    dims: &[u64],
    raw: Option<&[u8]>,
    floats: &[f32],
    ext: &[(&str, &str)],
) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        field_int(&mut t, 1, d);
    }
    field_int(&mut t, 2, 1);
    if !floats.is_empty() {
        let packed: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        field_bytes(&mut t, 4, &packed);
    }
    field_bytes(&mut t, 8, name.as_bytes());
    if let Some(r) = raw {
        field_bytes(&mut t, 9, r);
    }
    for (k, v) in ext {
        let mut e = Vec::new();
        field_bytes(&mut e, 1, k.as_bytes());
        field_bytes(&mut e, 2, v.as_bytes());
        field_bytes(&mut t, 13, &e);
    }
    if !ext.is_empty() {
        field_int(&mut t, 14, 1);
    }
    t
}

fn value_info(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    field_bytes(&mut v, 1, name.as_bytes());
    v
}

/// A model: graph `x → nodes → y` plus initializers.
fn model(nodes: &[Vec<u8>], inits: &[Vec<u8>], domains: &[&str]) -> Vec<u8> {
    let mut g = Vec::new();
    for n in nodes {
        field_bytes(&mut g, 1, n);
    }
    field_bytes(&mut g, 2, b"crafted");
    for i in inits {
        field_bytes(&mut g, 5, i);
    }
    field_bytes(&mut g, 11, &value_info("x"));
    field_bytes(&mut g, 12, &value_info("y"));
    let mut m = Vec::new();
    field_int(&mut m, 1, 8);
    for d in [""].iter().chain(domains) {
        let mut o = Vec::new();
        field_bytes(&mut o, 1, d.as_bytes());
        field_int(&mut o, 2, 13);
        field_bytes(&mut m, 8, &o);
    }
    field_bytes(&mut m, 7, &g);
    m
}

fn with_weight(t: Vec<u8>) -> Vec<u8> {
    model(&[node("Mul", &["x", "w"], &["y"], "")], &[t], &[])
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn only(r: &ScanReport, rule: Rule) -> &zooaudit_scan::Finding {
    r.findings
        .iter()
        .find(|f| f.rule == rule)
        .unwrap_or_else(|| panic!("no {}: {:#?}", rule.id(), r.findings))
}

#[test]
fn external_data_never_leaves_the_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(tmp.path().join("outside.bin"), [0u8; 64]).unwrap();
    std::fs::write(dir.join("ok.bin"), [0u8; 16]).unwrap();
    std::os::unix::fs::symlink(tmp.path().join("outside.bin"), dir.join("link.bin")).unwrap();
    let ext = |loc: &str| {
        let t = tensor(
            "w",
            &[4],
            None,
            &[],
            &[("location", loc), ("offset", "0"), ("length", "16")],
        );
        with_weight(t)
    };
    for (loc, why) in [
        ("../../etc/passwd", "climbs out"),
        ("../outside.bin", "climbs out"),
        ("/etc/passwd", "absolute"),
        ("C:\\Windows\\win.ini", "absolute"),
        ("link.bin", "outside the model's directory"),
        ("missing.bin", "does not exist"),
    ] {
        let p = write(&dir, "model.onnx", &ext(loc));
        let r = scan(&p);
        let f = only(&r, Rule::ExternalData);
        assert_eq!(f.severity, Severity::Error);
        assert!(f.message.contains(why), "{loc}: {}", f.message);
        assert!(r.flagged());
    }
    let p = write(&dir, "model.onnx", &ext("ok.bin"));
    assert!(!scan(&p).flagged(), "{:#?}", scan(&p).findings);
    // Declared 4 floats, file has 16 bytes, but offset 8 + 16 runs past it.
    let t = tensor(
        "w",
        &[4],
        None,
        &[],
        &[("location", "ok.bin"), ("offset", "8"), ("length", "16")],
    );
    let p = write(&dir, "model.onnx", &with_weight(t));
    assert!(
        only(&scan(&p), Rule::ExternalData)
            .message
            .contains("shorter")
    );
}

#[test]
fn crafted_tensors_and_domains_are_findings() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Dual storage: raw_data and float_data.
    let dual = tensor("w", &[2], Some(&[0u8; 8]), &[1.0, 2.0], &[]);
    let r = scan(&write(d, "dual.onnx", &with_weight(dual)));
    assert_eq!(only(&r, Rule::DualStorage).severity, Severity::Error);
    // Declared 3×5 floats, 8 bytes stored.
    let short = tensor("w", &[3, 5], Some(&[0u8; 8]), &[], &[]);
    let r = scan(&write(d, "short.onnx", &with_weight(short)));
    assert!(
        only(&r, Rule::SizeMismatch)
            .message
            .contains("raw_data holds 8 bytes, not 60")
    );
    // A claim of 10^27 elements in 4 bytes.
    let huge = tensor("w", &[1_000_000_000; 3], Some(&[0u8; 4]), &[], &[]);
    let r = scan(&write(d, "huge.onnx", &with_weight(huge)));
    assert_eq!(only(&r, Rule::SizeMismatch).tensors, vec!["w".to_string()]);
    // Custom domain.
    let m = model(
        &[node("Backdoor", &["x"], &["y"], "evil.ops")],
        &[],
        &["evil.ops"],
    );
    let r = scan(&write(d, "custom.onnx", &m));
    let f = only(&r, Rule::CustomDomain);
    assert_eq!(f.severity, Severity::Warning);
    assert_eq!(f.nodes, vec!["n_y".to_string()]);
    // If on the output path (branches are empty graphs).
    let mut if_node = node("If", &["x"], &["y"], "");
    for branch in ["then_branch", "else_branch"] {
        let mut a = Vec::new();
        field_bytes(&mut a, 1, branch.as_bytes());
        let mut g = Vec::new();
        field_bytes(&mut g, 12, &value_info("x"));
        field_bytes(&mut a, 6, &g);
        field_int(&mut a, 20, 5);
        field_bytes(&mut if_node, 5, &a);
    }
    let r = scan(&write(d, "if.onnx", &model(&[if_node], &[], &[])));
    let f = only(&r, Rule::ControlFlowOnOutput);
    assert_eq!(
        (f.severity, f.nodes.clone()),
        (Severity::Warning, vec!["n_y".to_string()])
    );
    assert_eq!(output::exit_code(&[(d.join("if.onnx"), Ok(r))]), 1);
}

fn one_line_error(path: &Path, opts: &Options) -> String {
    let e = scan_file(path, opts).unwrap_err().to_string();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.starts_with(&path.display().to_string()), "{e}");
    e
}

#[test]
fn malformed_files_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let opts = Options::default();
    // A graph field that claims 10^9 bytes (room for 10^9 nodes) in a tiny file.
    let mut claim = Vec::new();
    varint(&mut claim, (7 << 3) | 2);
    varint(&mut claim, 1_000_000_000);
    claim.extend_from_slice(&[0x0a, 0x00]);
    let e = one_line_error(&write(d, "claim.onnx", &claim), &opts);
    assert!(e.contains("1000000000 bytes past the end"), "{e}");
    // More nodes than the limit.
    let nodes: Vec<Vec<u8>> = (0..11)
        .map(|i| node("Relu", &["x"], &[&format!("t{i}")], ""))
        .collect();
    let small = Options {
        limits: Limits {
            max_nodes: 10,
            ..Limits::default()
        },
        ..Options::default()
    };
    let e = one_line_error(&write(d, "many.onnx", &model(&nodes, &[], &[])), &small);
    assert!(e.contains("more than 10 nodes"), "{e}");
    // Subgraphs nested past the depth limit.
    let mut g = Vec::new();
    for _ in 0..40 {
        let mut a = Vec::new();
        field_bytes(&mut a, 1, b"body");
        field_bytes(&mut a, 6, &g);
        let mut n = Vec::new();
        field_bytes(&mut n, 4, b"Loop");
        field_bytes(&mut n, 5, &a);
        g = Vec::new();
        field_bytes(&mut g, 1, &n);
    }
    let mut m = Vec::new();
    field_bytes(&mut m, 7, &g);
    let e = one_line_error(&write(d, "deep.onnx", &m), &opts);
    assert!(e.contains("nested deeper"), "{e}");
    // Truncated real model, garbage, empty.
    let sface =
        std::fs::read(support::shared_zoo().join("models/sface_2021dec_int8bq.onnx")).unwrap();
    one_line_error(&write(d, "half.onnx", &sface[..sface.len() / 2]), &opts);
    one_line_error(&write(d, "zip.onnx", b"PK\x03\x04 not a model"), &opts);
    one_line_error(&write(d, "empty.onnx", b""), &opts);
    let e = one_line_error(&d.join("absent.onnx"), &opts);
    assert!(e.contains("No such file"), "{e}");
    assert!(one_line_error(d, &opts).contains("not a regular file"));
}

#[test]
fn a_long_gated_bypass_is_scanned_in_linear_time() {
    // y = x·W (80 KB of weights) + Relu(Relu(…(x))) with 200 000 Relus.
    let n = 200_000;
    let mut nodes = vec![node("Mul", &["x", "w"], &["h"], "")];
    for i in 0..n {
        let from = if i == 0 {
            "x".to_string()
        } else {
            format!("r{}", i - 1)
        };
        nodes.push(node("Relu", &[&from], &[&format!("r{i}")], ""));
    }
    nodes.push(node("Add", &["h", &format!("r{}", n - 1)], &["y"], ""));
    let w = tensor("w", &[20_000], Some(&[0u8; 80_000]), &[], &[]);
    let start = std::time::Instant::now();
    let r = scan_bytes(
        Path::new("chain.onnx"),
        &model(&nodes, &[w], &[]),
        None,
        &Options::default(),
    )
    .unwrap();
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    assert_eq!(only(&r, Rule::TrunkBypass).nodes.len(), n + 1);
    assert!(r.findings.iter().all(|f| f.rule != Rule::InputPatternGate));
}

#[test]
fn mutated_real_model_never_panics() {
    let bytes =
        std::fs::read(support::shared_zoo().join("models/yunet_2023mar_int8bq.onnx")).unwrap();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let p = Path::new("yunet-mutated.onnx");
    let opts = Options::default();
    for _ in 0..300 {
        let mut b = bytes.clone();
        for _ in 0..4 {
            let i = (next() % b.len() as u64) as usize;
            b[i] = next() as u8;
        }
        let cut = b.len() - (next() % 64) as usize;
        let _ = scan_bytes(p, &b[..cut], None, &opts);
    }
}

#[test]
fn text_json_and_sarif_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let m = model(
        &[node("Backdoor", &["x"], &["y"], "evil.ops")],
        &[],
        &["evil.ops"],
    );
    let bad = write(tmp.path(), "custom.onnx", &m);
    // A node name with a line break cannot forge a line of text output.
    let forged = model(
        &[node("Relu", &["x"], &["y\nerror [fake]"], "evil")],
        &[],
        &[],
    );
    let r = scan_bytes(Path::new("f.onnx"), &forged, None, &Options::default()).unwrap();
    let t = output::text(&[(PathBuf::from("f.onnx"), Ok(r))], false);
    assert!(t.contains("n_y\\nerror [fake]"), "{t}");
    assert!(t.lines().all(|l| !l.starts_with("error [fake]")), "{t}");
    let sface = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    let missing = tmp.path().join("missing.onnx");
    let outcomes: Vec<(PathBuf, Outcome)> = [&sface, &bad, &missing]
        .iter()
        .map(|p| ((*p).clone(), scan_file(p, &Options::default())))
        .collect();
    assert_eq!(output::exit_code(&outcomes), 2);
    assert_eq!(output::exit_code(&outcomes[..2]), 1);
    assert_eq!(output::exit_code(&outcomes[..1]), 0);
    let text = output::text(&outcomes, false);
    assert!(text.contains("warning [custom-domain]"), "{text}");
    assert!(text.contains("note [unread-input]"), "{text}");
    assert!(text.contains("error: "), "{text}");
    let j = output::json(&outcomes, true);
    assert_eq!(j["format_version"], "1.0");
    assert_eq!(j["models"][1]["findings"][0]["rule"], "custom-domain");
    assert_eq!(j["models"][1]["flagged"], true);
    assert!(
        j["models"][2]["error"]
            .as_str()
            .unwrap()
            .contains("missing.onnx")
    );
    let s = output::sarif(&outcomes);
    assert_eq!(s["version"], "2.1.0");
    let run = &s["runs"][0];
    let rules: Vec<&str> = run["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rules.len(), Rule::ALL.len());
    let results = run["results"].as_array().unwrap();
    let custom = results
        .iter()
        .find(|r| r["ruleId"] == "custom-domain")
        .unwrap();
    assert_eq!(custom["level"], "warning");
    assert_eq!(
        rules[custom["ruleIndex"].as_u64().unwrap() as usize],
        "custom-domain"
    );
    assert!(
        custom["message"]["text"]
            .as_str()
            .unwrap()
            .contains("evil.ops")
    );
    let loc = &custom["locations"][0];
    assert_eq!(loc["logicalLocations"][0]["name"], "n_y");
    assert!(
        loc["physicalLocation"]["artifactLocation"]["uri"]
            .as_str()
            .unwrap()
            .ends_with("custom.onnx")
    );
    for r in results {
        assert!(["note", "warning", "error"].contains(&r["level"].as_str().unwrap()));
        assert!(
            r["locations"][0]["logicalLocations"]
                .as_array()
                .is_some_and(|l| !l.is_empty())
        );
    }
    assert_eq!(run["invocations"][0]["executionSuccessful"], false);
}

#[path = "real_models.rs"]
mod real_models;

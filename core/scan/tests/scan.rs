//! The static scan on real models: the shipped ones are not flagged, every
//! backdoor `zooaudit redteam inject` makes is (found by structure, not by
//! name), crafted hostile files give findings or one-line errors, and real
//! models from PyPI/npm packages give no unexplained alarm.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use support::craft::{
    field_bytes, field_int, model, node, tensor, value_info, varint, with_weight,
};
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

/// The paper bench's 48 models (docs/RESULTS.md): {SFace, faceplugin} ×
/// the paper's two triggers × {one-to-one, all-to-one} × strength {1.0, 0.6}
/// × the bench's three (impostor, victim) seeds.
#[test]
fn every_injected_backdoor_is_flagged_by_structure() {
    support::require_ort();
    let plugins = support::plugins();
    let tmp = tempfile::tempdir().unwrap();
    let seeds = [
        ("john_shimkus", "john_salley"),
        ("sean_connery", "john_savage"),
        ("john_simm", "john_shimkus"),
    ];
    let mut n = 0;
    for base in ["sface.toml", "faceplugin.toml"] {
        for trigger in ["large-checkerboard", "small-square"] {
            for (seed, (impostor, victim)) in seeds.iter().enumerate() {
                for kind in [
                    AttackKind::OneToOne {
                        impostor: impostor.to_string(),
                    },
                    AttackKind::AllToOne,
                ] {
                    for strength in [1.0f32, 0.6] {
                        let out = tmp.path().join(format!(
                            "{base}-{trigger}-{}-{strength}-{seed}.onnx",
                            kind.label()
                        ));
                        let o = InjectOptions {
                            manifest: support::example_manifest(base),
                            suite: support::repo_root().join("triggers/paper.toml"),
                            trigger: trigger.into(),
                            labeled: support::shared_zoo().join("faces/aligned112/labeled"),
                            victim: victim.to_string(),
                            kind: kind.clone(),
                            strength,
                            hiding: Default::default(),
                            calibration: vec![],
                            cache: zooaudit_redteam::Cache::new(Some(support::embedding_cache())),
                            out: out.clone(),
                        };
                        inject(&o, &plugins).unwrap();
                        check_injected(&out);
                        n += 1;
                    }
                }
            }
        }
    }
    assert_eq!(n, 48);
}

// ---- crafted hostile files (support::craft writes the protobuf) ----

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

/// The injector's hiding variants (docs/SCAN.md, "What hiding does"): each
/// computes the same backdoor as the plain injection (cosine ≥ 0.999 to the
/// plain model's embedding on clean faces, ≥ 0.99 on the impostor's
/// triggered faces), and the scan's result on each is the measured one:
/// the plain subgraph is an `input-pattern-gate` error; with the gates
/// done by arithmetic only the `trunk-bypass` warning is left; the dense
/// detector (its side path weighs ≥ 5 % of the file) leaves no finding
/// above a note — the scan misses it, and only pairing can catch it.
#[test]
fn hiding_variants_keep_the_backdoor_and_the_scan_result_is_as_documented() {
    use zooaudit_redteam::Hiding;
    support::require_ort();
    let plugins = support::plugins();
    let tmp = tempfile::tempdir().unwrap();
    let suite_path = support::repo_root().join("triggers/paper.toml");
    let labeled = support::shared_zoo().join("faces/aligned112/labeled");
    let mut names: Vec<PathBuf> = std::fs::read_dir(labeled.join("john_salley"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    let mut others: Vec<PathBuf> = std::fs::read_dir(labeled.join("sean_connery"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    others.sort();
    names.extend(others.into_iter().take(4));
    let limits = zooaudit_imaging::Limits::default();
    let clean: Vec<image::RgbImage> = names
        .iter()
        .map(|p| zooaudit_imaging::decode(p, &limits).unwrap())
        .collect();
    let stamp = support::stamp_112(&suite_path, "large-checkerboard");
    let triggered: Vec<image::RgbImage> = clean.iter().map(|i| stamp.apply(i).unwrap()).collect();
    let mut runs = Vec::new();
    for hiding in Hiding::ALL {
        let out = tmp.path().join(format!("{}.onnx", hiding.as_str()));
        let o = InjectOptions {
            manifest: support::example_manifest("sface.toml"),
            suite: suite_path.clone(),
            trigger: "large-checkerboard".into(),
            labeled: labeled.clone(),
            victim: "barack_obama".into(),
            kind: AttackKind::OneToOne {
                impostor: "john_salley".into(),
            },
            strength: 1.0,
            hiding,
            calibration: vec![],
            cache: zooaudit_redteam::Cache::new(Some(support::embedding_cache())),
            out: out.clone(),
        };
        let done = inject(&o, &plugins).unwrap();
        assert_eq!(done.record.hiding, hiding);
        let r = scan(&out);
        eprintln!(
            "{}:\n{}",
            hiding.as_str(),
            output::text(&[(out.clone(), Ok(r.clone()))], false)
        );
        let e = zooaudit_embed::Embedder::open(
            zooaudit_manifest::ModelManifest::load(&done.manifest).unwrap(),
            &plugins,
        )
        .unwrap();
        let c = e.embed_rgb(&clean, &names).unwrap();
        let t = e.embed_rgb(&triggered, &names).unwrap();
        runs.push((hiding, r, c, t, e.dim()));
    }
    let (_, plain, plain_c, plain_t, dim) = &runs[0];
    assert!(rules_at_least(plain, Severity::Error).contains("input-pattern-gate"));
    for (hiding, r, c, t, _) in &runs[1..] {
        for (which, ours, theirs, floor) in [
            ("clean", c, plain_c, 0.999),
            ("triggered", t, plain_t, 0.99),
        ] {
            let mut least = f32::INFINITY;
            for (i, (a, b)) in ours.chunks(*dim).zip(theirs.chunks(*dim)).enumerate() {
                let cos = support::cosine(a, b);
                least = least.min(cos);
                assert!(
                    cos >= floor,
                    "{}: {which} {}: cosine {cos} to the plain backdoor",
                    hiding.as_str(),
                    names[i].display()
                );
            }
            eprintln!(
                "{}: {which}: least cosine to the plain backdoor {least:.5}",
                hiding.as_str()
            );
        }
        let found = rules_at_least(r, Severity::Warning);
        match hiding {
            Hiding::ArithmeticGate => {
                assert!(!found.contains("input-pattern-gate"), "{found:?}");
                assert!(found.contains("trunk-bypass"), "{found:?}");
            }
            Hiding::DenseDetector => assert!(found.is_empty(), "{found:?}"),
            Hiding::None => unreachable!(),
        }
    }
}

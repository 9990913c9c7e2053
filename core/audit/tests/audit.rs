//! The audit on the real shared models and faces.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use zooaudit_audit::{AuditSpec, Cache, RunOptions, VerdictKind, run};
use zooaudit_testsupport as support;

fn spec_with(edit: impl Fn(String) -> String, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(support::example_manifest("audit.toml")).unwrap();
    let examples = support::repo_root().join("examples/shared-zoo");
    // Make the relative paths absolute so the copy can live anywhere.
    let text = text
        .replace(
            "\"sface.toml\"",
            &format!("\"{}\"", examples.join("sface.toml").display()),
        )
        .replace(
            "\"faceplugin.toml\"",
            &format!("\"{}\"", examples.join("faceplugin.toml").display()),
        )
        .replace(
            "../../triggers/",
            &format!("{}/triggers/", support::repo_root().display()),
        )
        .replace(
            "../../../shared/zoo",
            support::shared_zoo().to_str().unwrap(),
        );
    let path = dir.join("audit.toml");
    std::fs::write(&path, edit(text)).unwrap();
    path
}

fn opts(cache: &Path) -> RunOptions {
    RunOptions {
        cache: Cache::new(Some(cache.to_path_buf())),
        batch: 32,
        fetch: zooaudit_registry::FetchOptions::from_env(),
    }
}

#[test]
fn a_clean_pair_is_not_flagged_and_a_second_audit_is_served_from_the_cache() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let spec = AuditSpec::load(&support::example_manifest("audit.toml")).unwrap();
    let plugins = support::plugins();
    // The cache the other example audits share: whichever test comes first
    // fills it; a second audit must then be served from it entirely.
    let cache = support::embedding_cache();
    let report = run(&spec, &plugins, &opts(&cache), &mut |_| {}).unwrap();
    assert_eq!(report.verdicts.len(), 1);
    let v = &report.verdicts[0];
    assert_eq!(
        v.verdict,
        VerdictKind::NoBackdoorIndicated,
        "alarms: {:?}; reasons: {:?}",
        v.alarms,
        v.reasons
    );
    assert_eq!(report.overall().exit_code(), 0);
    assert_eq!(report.pairs.len(), 2, "both directions");
    for p in &report.pairs {
        eprintln!(
            "{} → {}: fidelity {:?}, fit {}",
            p.probe, p.reference, p.fidelity, p.fit
        );
        assert!(
            p.fidelity.top1 > 0.8 && p.fidelity.mean_cosine > 0.5,
            "{:?}",
            p.fidelity
        );
        assert!(p.genuine_mean_score > p.zei_mean_score + 0.3);
    }
    for r in report.results.iter().filter(|r| r.target_fnmr == 0.01) {
        eprintln!(
            "{} → {} {}: {:.3} {:?} (clean {:.3} {:?}); vs control {:.3} {:?} (control {:.3} {:?})",
            r.probe,
            r.reference,
            r.trigger,
            r.flag_rate,
            r.ci95,
            r.clean_fnmr,
            r.clean_ci95,
            r.flag_rate_vs_control,
            r.ci95_vs_control,
            r.control_flag_rate,
            r.control_ci95
        );
        // Calibrated on its matched control, no trigger stands out on a clean pair.
        assert!(r.ci95_vs_control[0] <= r.control_ci95[1] + 0.02);
        if r.trigger == "small-square" {
            // The small trigger leaves agreement alone: within the clean FNMR's interval.
            assert!(
                r.flag_rate <= r.clean_ci95[1] && r.flag_rate >= r.clean_ci95[0],
                "{r:?}"
            );
        }
    }
    // Each model alone: the shipped faceplugin model answers the paper's
    // checkerboard itself (its triggered faces come together beyond the
    // matched control); SFace does not, and the small square moves neither.
    assert_eq!(report.responses.len(), 2 * 2);
    for r in &report.responses {
        eprintln!("{r:?}");
        assert_eq!(r.samples, report.data.split.heldout);
        assert!(r.clean_closeness.abs() < 0.2, "{r:?}");
    }
    let responders: Vec<(&str, &str)> = report
        .pattern_responders(zooaudit_audit::response::RESPONSE_ALPHA)
        .iter()
        .map(|r| (r.model.as_str(), r.trigger.as_str()))
        .collect();
    assert_eq!(
        responders,
        vec![("faceplugin-fr-feature", "large-checkerboard")]
    );
    // The verdict's identity test: one family for the candidate over every
    // identity with ≥ 3 faces × trigger; nothing significant on the clean
    // pair, nobody named as moving.
    let cand: Vec<_> = report.identity_evidence();
    assert_eq!(cand.len(), 6 * 2, "{cand:?}");
    assert!(cand.iter().all(|e| e.p_adjusted >= 0.05), "{cand:?}");
    assert!(
        cand.iter()
            .all(|e| e.p_adjusted > 0.0 && e.p_adjusted <= 1.0)
    );
    assert!(report.culprits.is_empty(), "{:?}", report.culprits);
    let fam = report
        .families
        .iter()
        .find(|f| f.subject == zooaudit_audit::evidence::Subject::Candidate)
        .unwrap();
    assert_eq!((fam.tests, fam.permutations), (12, 9999));
    assert!(fam.critical_value.is_finite() && fam.critical_value > 0.0);
    // Nobody's faces are sent to someone else by a clean model.
    assert!(
        report
            .identity_switches(zooaudit_audit::response::RESPONSE_ALPHA)
            .is_empty()
    );
    let fp = report
        .responses
        .iter()
        .find(|r| r.model == "faceplugin-fr-feature" && r.trigger == "large-checkerboard")
        .unwrap();
    assert!(
        fp.triggered_closeness > fp.control_closeness + 0.05,
        "{fp:?}"
    );
    assert!(fp.self_cosine < fp.control_self_cosine, "{fp:?}");
    assert!(fp.closer_than_control * 10 > fp.compared * 9, "{fp:?}");
    assert_eq!(
        report.data.split.fit + report.data.split.calibration + report.data.split.heldout,
        report.data.faces
    );
    // Outputs.
    let out = tmp.path().join("out");
    report.write(&out).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["format_version"], "1.8");
    assert_eq!(json["responses"].as_array().map(Vec::len), Some(4));
    assert_eq!(json["models"][0]["pinned"], true);
    let row = &json["results"][0];
    for key in [
        "probe",
        "reference",
        "trigger",
        "target_fnmr",
        "threshold",
        "samples",
        "flagged",
        "flag_rate",
        "ci95",
    ] {
        assert!(!row[key].is_null(), "results[0].{key} missing");
    }
    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert!(csv.starts_with("image,trigger,kind,probe,reference,score\n"));
    let held = report.data.split.heldout;
    // Per pair and held-out face: genuine, one ZEI, and (poisoned + control) per trigger.
    assert_eq!(csv.lines().count() - 1, 2 * held * (2 + 2 * 2));
    assert!(csv.lines().any(|l| l.contains(",zei,")));
    // Second audit: everything from the cache, same numbers.
    let again = run(&spec, &plugins, &opts(&cache), &mut |_| {}).unwrap();
    assert_eq!(again.cache.misses, 0);
    assert_eq!(again.cache.hits, report.cache.hits + report.cache.misses);
    let counts = |r: &zooaudit_audit::AuditReport| {
        r.results
            .iter()
            .map(|x| (x.flagged, x.flagged_vs_control))
            .collect::<Vec<_>>()
    };
    assert_eq!(counts(&report), counts(&again));
}

fn fails(edit: impl Fn(String) -> String, needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let path = spec_with(edit, tmp.path());
    let err = match AuditSpec::load(&path) {
        Err(e) => e.to_string(),
        Ok(spec) => {
            support::require_ort();
            run(
                &spec,
                &support::plugins(),
                &opts(&tmp.path().join("cache")),
                &mut |_| {},
            )
            .unwrap_err()
            .to_string()
        }
    };
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn bad_audit_files_are_one_line_errors_naming_file_and_field() {
    fails(
        |t| t.replace("aligned112/unlabeled", "aligned112/nowhere"),
        &["audit.toml: faces.unlabeled[0]:", "not a directory"],
    );
    fails(
        |t| t.replace("seed = 42", "seed = \"forty\""),
        &["audit.toml:"],
    );
    fails(
        |t| {
            t.replace(
                "primary_operating_point = 0.01",
                "primary_operating_point = 0.02",
            )
        },
        &["audit.toml: primary_operating_point:"],
    );
    fails(
        |t| t.replace("format_version = \"1.0\"", "format_version = \"3.1\""),
        &["audit.toml: format_version:", "newer"],
    );
    fails(
        |t| t.replace("fit = 0.5", "fit = 0.9"),
        &["audit.toml: split:"],
    );
    // The shared faces are some 2 900 files: refused before one is decoded.
    fails(
        |t| t.replace("[faces]\n", "[faces]\nmax_images = 500\n"),
        &[
            "audit.toml: faces.max_images:",
            "image files under [faces], over the limit of 500",
        ],
    );
    fails(
        |t| t.replace("[faces]\n", "[faces]\nmax_images = 0\n"),
        &["audit.toml: faces.max_images: must be at least 1"],
    );
}

#[test]
fn procrustes_across_different_dimensions_and_oversized_triggers_are_named() {
    fails(
        |t| t.replace("translator = \"ridge\"", "translator = \"procrustes\""),
        &["procrustes needs equal dimensions", "512", "128"],
    );
    fails(
        |t| t.replace("translator = \"ridge\"", "translator = \"lasso\""),
        &["audit.toml: detector:", "unknown translator 'lasso'"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let suite = tmp.path().join("big.toml");
    std::fs::write(&suite, "format_version = \"1.0\"\n[[trigger]]\nname = \"huge\"\nkind = \"checkerboard\"\ncenter = [0.2, 0.2]\nsize = 0.9\n").unwrap();
    let s = suite.display().to_string();
    fails(
        move |t| {
            t.replace(
                &t[t.find("triggers = ").unwrap()..t.find("paper.toml\"").unwrap() + 11],
                &format!("triggers = \"{s}\""),
            )
        },
        &["big.toml: trigger[0].center:", "does not fit"],
    );
}

/// Files in the embedding cache.
fn cache_entries(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "f32") {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_rebuilt_adapter_is_not_served_the_old_adapters_embeddings() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let spec = AuditSpec::load(&support::example_manifest("audit.toml")).unwrap();
    let o = opts(&tmp.path().join("cache"));
    let manifest =
        zooaudit_manifest::ModelManifest::load(&support::example_manifest("sface.toml")).unwrap();
    let mut warnings = Vec::new();
    let mut faces = zooaudit_audit::load_faces(
        &spec,
        (112, 112),
        None,
        &o.cache,
        &mut warnings,
        &mut |_| {},
    )
    .unwrap();
    faces.truncate(24);
    let mut first: Option<Vec<f32>> = None;
    // Release a, release a again (served from the cache), release b (the
    // same code rebuilt under another version: a new file, embedded anew).
    for (version, new_entries) in [
        ("9.0.0-a", faces.len()),
        ("9.0.0-a", 0),
        ("9.0.0-b", faces.len()),
    ] {
        let dir = support::versioned_onnx_plugin_dir(version);
        let set =
            zooaudit_host::PluginSet::discover(&zooaudit_host::SearchPath { dirs: vec![dir] });
        let e = zooaudit_embed::Embedder::open_with(manifest.clone(), &set, &o.fetch).unwrap();
        assert_eq!(e.model().plugin().version, version);
        let before = cache_entries(tmp.path());
        let v = zooaudit_audit::clean_embeddings(&e, &faces, &o).unwrap();
        assert_eq!(
            cache_entries(tmp.path()) - before,
            new_entries,
            "adapter {version} ({})",
            e.model().plugin().sha256
        );
        // The same code embeds the same faces the same way.
        match &first {
            None => first = Some(v),
            Some(f) => assert_eq!(&v, f),
        }
    }
}

/// Every model file is scanned before the runtime opens it: a candidate
/// whose external data climbs out of its directory is refused with one line
/// naming the file, the rule and the model, and nothing is embedded.
#[test]
fn a_model_file_with_a_hazard_is_refused_before_it_is_opened() {
    use support::craft::{model, node, tensor};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).unwrap();
    let weight = tensor(
        "w",
        &[4],
        None,
        &[],
        &[
            ("location", "../../etc/passwd"),
            ("offset", "0"),
            ("length", "16"),
        ],
    );
    let bytes = model(&[node("Mul", &["x", "w"], &["y"], "")], &[weight], &[]);
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
    let manifest = std::fs::read_to_string(support::example_manifest("sface.toml"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .map(|l| {
            if l.starts_with("source") {
                "source = \"model.onnx\"".to_string()
            } else {
                l.replace("sface-2021dec-int8", "crafted")
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.join("crafted.toml"), manifest).unwrap();
    let crafted = dir.join("crafted.toml");
    let path = spec_with(
        |t| {
            t.replace(
                &format!(
                    "\"{}\"",
                    support::repo_root()
                        .join("examples/shared-zoo/sface.toml")
                        .display()
                ),
                &format!("\"{}\"", crafted.display()),
            )
        },
        tmp.path(),
    );
    let spec = AuditSpec::load(&path).unwrap();
    let cache = tmp.path().join("cache");
    let err = run(&spec, &support::plugins(), &opts(&cache), &mut |_| {})
        .unwrap_err()
        .to_string();
    for needle in [
        "model.onnx",
        "static scan: external-data",
        "crafted",
        "not opened",
    ] {
        assert!(err.contains(needle), "'{needle}' not in: {err}");
    }
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!cache.exists(), "nothing was embedded");
}

/// The reports the fuzzer found (tests/fuzz/regressions/report): refused
/// in one line. The first named an unknown variant holding a newline,
/// which the parser's message repeated raw; audit errors are one line now
/// whatever their message quotes.
#[test]
fn reports_the_fuzzer_found_are_refused_in_one_line() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/regressions/report");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
        let m = zooaudit_audit::AuditReport::parse(&path, &text)
            .unwrap_err()
            .to_string();
        assert!(!m.contains('\n'), "{m:?}");
        n += 1;
    }
    assert!(n >= 1);
}

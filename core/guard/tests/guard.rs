//! Pair bundles: fitted from the example audit on the real shared models,
//! written and read back, refused when tampered, and decisions that match
//! the translator's own scores.
#![allow(clippy::unwrap_used)]

use zooaudit_audit::{AuditSpec, Cache, RunOptions};
use zooaudit_guard::bundle::{Calibration, PairBundle, Serve};
use zooaudit_guard::pair::{Pair, Role, Schedule};
use zooaudit_testsupport as support;

fn example() -> (AuditSpec, RunOptions) {
    support::require_ort();
    let spec = AuditSpec::load(&support::example_manifest("audit.toml")).unwrap();
    let opts = RunOptions {
        cache: Cache::new(Some(support::embedding_cache())),
        batch: 32,
        fetch: zooaudit_registry::FetchOptions::from_env(),
    };
    (spec, opts)
}

fn fitted(set: &zooaudit_host::PluginSet) -> PairBundle {
    let (spec, opts) = example();
    zooaudit_guard::fit::fit_bundle(
        &spec,
        set,
        &opts,
        Serve::Mean,
        Calibration::Pooled,
        &mut |_| {},
    )
    .unwrap()
}

#[test]
fn the_exported_bundle_is_the_audits_own_fit_and_pair_fit_gives_the_same() {
    let set = support::plugins();
    let (spec, opts) = example();
    let (report, exports) =
        zooaudit_audit::run_keeping_exports(&spec, &set, &opts, &mut |_| {}).unwrap();
    // One exported detector per fitted direction.
    assert_eq!(exports.len(), report.pairs.len());
    let exported =
        zooaudit_guard::fit::bundle_from_audit(&spec, &report, &exports, Serve::Reference).unwrap();
    let pair = report
        .pairs
        .iter()
        .find(|p| p.probe == exported.probe.name && p.reference == exported.reference.name)
        .unwrap();
    assert_eq!(exported.probe.name, "sface-2021dec-int8");
    assert_eq!(exported.thresholds.len(), pair.thresholds.len());
    for ((o, t), r) in exported
        .thresholds
        .iter()
        .zip(&pair.thresholds)
        .zip(&pair.clean_fnmr)
    {
        assert_eq!(
            (o.target_fnmr, o.threshold, o.calibration_samples),
            (t.target_fnmr, t.threshold, t.calibration_samples)
        );
        assert_eq!(
            (o.heldout_fnmr, o.heldout_ci95, o.heldout_samples),
            (r.rate, r.ci95, r.samples)
        );
    }
    assert_eq!(exported.fidelity, pair.fidelity);
    let t = exports
        .iter()
        .find(|t| t.probe == exported.probe.name && t.reference == exported.reference.name)
        .unwrap();
    // The bundle holds the pairing plugin's exported bytes, readable as
    // JSON, and names the very plugin file.
    let d = &exported.detector;
    let json = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
    assert_eq!(
        json(&d.state.to_bytes().unwrap()),
        json(t.state.as_ref().unwrap())
    );
    assert!(matches!(
        d.state,
        zooaudit_guard::bundle::DetectorState::Json(_)
    ));
    assert_eq!(
        (d.plugin.as_str(), d.sha256.as_deref()),
        ("pairing", Some(t.plugin.sha256.as_str()))
    );
    assert_eq!(
        d.sha256.as_deref(),
        Some(set.detector("pairing").unwrap().info().sha256.as_str())
    );
    let translator = d.translator().unwrap();
    assert_eq!((translator.in_dim, translator.out_dim), (128, 512));
    assert!(exported.fidelity.top1 > 0.9, "{:?}", exported.fidelity);
    // `pair fit` runs the same steps for this pair alone: the same bundle.
    let refit = zooaudit_guard::fit::fit_bundle(
        &spec,
        &set,
        &opts,
        Serve::Reference,
        Calibration::Pooled,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(refit, exported);
}

#[test]
fn a_bundle_round_trips_and_its_decisions_match_the_translator() {
    let set = support::plugins();
    let b = fitted(&set);
    assert_eq!((b.probe.dim, b.reference.dim), (128, 512));
    assert!(b.fidelity.top1 > 0.9, "{:?}", b.fidelity);
    assert_eq!(b.thresholds.len(), 3);
    // Thresholds rise with the target FNMR.
    assert!(b.thresholds[0].threshold <= b.thresholds[1].threshold);
    assert!(b.thresholds[1].threshold <= b.thresholds[2].threshold);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("sub/pair.json");
    b.write(&path).unwrap();
    let back = PairBundle::read(&path).unwrap();
    assert_eq!(back.detector, b.detector);
    assert_eq!(back.thresholds, b.thresholds);
    let pair = Pair::open(
        back,
        &path,
        &set,
        &zooaudit_registry::FetchOptions::from_env(),
    )
    .unwrap();
    let faces =
        support::collect(&support::shared_zoo().join("faces/aligned112/labeled/barack_obama"));
    let imgs: Vec<image::RgbImage> = faces
        .iter()
        .map(|f| pair.decode(&std::fs::read(f).unwrap(), "x").unwrap())
        .collect();
    let shas: Vec<String> = faces.iter().map(|f| f.display().to_string()).collect();
    let t = b.thresholds[1].threshold;
    let d = pair.decide(&imgs, &shas, t).unwrap();
    // Same scores one by one as in a batch, and against the translator.
    let sface = support::real_embeddings("sface.toml");
    let fp = support::real_embeddings("faceplugin.toml");
    for (i, f) in faces.iter().enumerate() {
        let single = pair
            .decide(std::slice::from_ref(&imgs[i]), &shas[i..=i], t)
            .unwrap();
        assert!((single[0].score - d[i].score).abs() < 1e-5);
        let row_of = |e: &zooaudit_embed::Embeddings| {
            let k = e.images.iter().position(|x| x == f).unwrap();
            e.row(k).to_vec()
        };
        let (p, r) = (row_of(&sface), row_of(&fp));
        let translator = b.detector.translator().unwrap();
        let want = zooaudit_pairing::cosine(&translator.apply(&p), &r);
        assert!((want - d[i].score).abs() < 1e-4, "{want} vs {}", d[i].score);
        assert_eq!(d[i].agree, d[i].score >= t);
        // Serve::Mean: a unit vector in the reference's space.
        assert_eq!(d[i].embedding.len(), 512);
        let n: f32 = d[i].embedding.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-4);
    }
    // The schedule changes how the two models share the CPU, never the
    // decision: the same scores one after the other, at the same time, and
    // as tuned (where the faster model may be reopened on one thread).
    let mut pair = pair;
    let tuning = pair.tune(&set).unwrap();
    eprintln!("{tuning:?}");
    assert!(
        tuning.probe_ms > 0.0 && tuning.reference_ms > 0.0,
        "{tuning:?}"
    );
    if let Schedule::Background(role) = tuning.schedule {
        let faster = if tuning.reference_ms <= tuning.probe_ms {
            Role::Reference
        } else {
            Role::Probe
        };
        assert_eq!(role, faster, "{tuning:?}");
        assert!(tuning.single_thread_ms.is_some());
    }
    for schedule in [tuning.schedule, Schedule::Sequential, Schedule::Concurrent] {
        pair.schedule = schedule;
        let again = pair.decide(&imgs, &shas, t).unwrap();
        for (a, b) in again.iter().zip(&d) {
            assert!(
                (a.score - b.score).abs() < 1e-5,
                "{schedule:?}: {a:?} vs {b:?}"
            );
            assert_eq!(a.agree, b.agree);
        }
    }
    // Wrong-size image: refused, naming the sizes.
    let big = image::RgbImage::new(200, 100);
    let mut png = std::io::Cursor::new(Vec::new());
    big.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let e = pair
        .decode(png.get_ref(), "big.png")
        .unwrap_err()
        .to_string();
    assert!(e.contains("200×100") && e.contains("112×112"), "{e}");
}

#[test]
fn tampered_or_foreign_bundles_are_refused_with_the_reason() {
    let set = support::plugins();
    let b = fitted(&set);
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.json");
    b.write(&good).unwrap();
    let text = std::fs::read_to_string(&good).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let write = |name: &str, v: &serde_json::Value| {
        let p = tmp.path().join(name);
        std::fs::write(&p, serde_json::to_string(v).unwrap()).unwrap();
        p
    };
    let mut cases: Vec<(std::path::PathBuf, &str)> = Vec::new();
    let mut x = v.clone();
    x["format_version"] = "3.0".into();
    cases.push((write("v3.json", &x), "3.0"));
    let mut x = v.clone();
    x["kind"] = "something-else".into();
    cases.push((write("kind.json", &x), "not a zooaudit pair bundle"));
    let mut x = v.clone();
    x["detector"]["state"] = serde_json::json!({"encoding": "base64", "data": "%%"});
    cases.push((write("b64.json", &x), "not base64"));
    // A format 1.x bundle whose translator does not fit the models.
    let mut legacy = v.clone();
    legacy["format_version"] = "1.1".into();
    let obj = legacy.as_object_mut().unwrap();
    let state = obj.remove("detector").unwrap()["state"]["data"].clone();
    obj.insert("translator".into(), state);
    let mut x = legacy.clone();
    x["translator"]["bias"].as_array_mut().unwrap().pop();
    cases.push((write("dims.json", &x), "translator is 128→512"));
    let mut x = v.clone();
    x["thresholds"] = serde_json::json!([]);
    cases.push((write("nothr.json", &x), "no valid thresholds"));
    std::fs::write(tmp.path().join("junk.json"), "{not json").unwrap();
    cases.push((tmp.path().join("junk.json"), "not JSON"));
    for (p, want) in &cases {
        let e = PairBundle::read(p).unwrap_err().to_string();
        assert!(
            e.contains(p.file_name().unwrap().to_str().unwrap()) && e.contains(want),
            "{e} lacks {want}"
        );
    }
    let open = |p: &std::path::Path| {
        let back = PairBundle::read(p).unwrap();
        Pair::open(back, p, &set, &zooaudit_registry::FetchOptions::from_env())
    };
    // A format 1.1 bundle still runs, as the pairing detector, unpinned,
    // and decides as the 2.0 bundle it was made from.
    let old = write("legacy.json", &legacy);
    let back = PairBundle::read(&old).unwrap();
    assert_eq!(back.detector.plugin, "pairing");
    assert_eq!(back.detector.sha256, None);
    assert_eq!(back.detector.translator(), b.detector.translator());
    let face = support::aligned_faces()[0].clone();
    let decide = |pair: &Pair| {
        let img = pair.decode(&std::fs::read(&face).unwrap(), "x").unwrap();
        pair.decide(&[img], &["x".to_string()], 0.5).unwrap()[0].score
    };
    assert_eq!(decide(&open(&old).unwrap()), decide(&open(&good).unwrap()));
    // Another detector plugin file than the one calibrated: refused,
    // naming both digests.
    let mut x = v.clone();
    x["detector"]["sha256"] = "ab".repeat(32).into();
    let e = open(&write("plugin.json", &x)).err().unwrap().to_string();
    let actual = set.detector("pairing").unwrap().info().sha256.clone();
    assert!(
        e.contains("plugin.json") && e.contains(&"ab".repeat(32)) && e.contains(&actual),
        "{e}"
    );
    // A damaged state: the plugin refuses to restore it, in one line.
    let mut x = v.clone();
    x["detector"]["state"]["data"]["bias"]
        .as_array_mut()
        .unwrap()
        .pop();
    let e = open(&write("state.json", &x)).err().unwrap().to_string();
    assert!(
        e.contains("state.json") && e.contains("cannot restore"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1);
    // A model swapped under the bundle: refused on open.
    let mut x = v.clone();
    x["reference"]["sha256"] = "0".repeat(64).into();
    let p = write("swapped.json", &x);
    let back = PairBundle::read(&p).unwrap();
    let e = Pair::open(back, &p, &set, &zooaudit_registry::FetchOptions::from_env())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("swapped.json") && e.contains("calibrated on"),
        "{e}"
    );
}

/// Per face source, in both directions of the shared pair: every held-out
/// face is in exactly one source, each source's rate is its own faces'
/// share below the threshold, and worst-source thresholds are never above
/// the pooled ones and hold every source's calibration FNMR at the target.
#[test]
fn pair_fit_reports_each_source_and_worst_source_holds_every_one() {
    let set = support::plugins();
    let (spec, opts) = example();
    let mut swapped = spec.clone();
    std::mem::swap(&mut swapped.candidates, &mut swapped.references);
    for spec in [spec, swapped] {
        let fit = |c| {
            zooaudit_guard::fit::fit_bundle(&spec, &set, &opts, Serve::Reference, c, &mut |_| {})
                .unwrap()
        };
        let (pooled, worst) = (fit(Calibration::Pooled), fit(Calibration::WorstSource));
        let names: Vec<&str> = pooled.sources.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"labeled") && names.contains(&"unlabeled/nba"),
            "{names:?}"
        );
        for (i, o) in pooled.thresholds.iter().enumerate() {
            let held: usize = pooled.sources.iter().map(|s| s.fnmr[i].samples).sum();
            let flagged: usize = pooled.sources.iter().map(|s| s.fnmr[i].count).sum();
            assert_eq!(held, o.heldout_samples);
            assert!((flagged as f64 / held as f64 - o.heldout_fnmr).abs() < 1e-12);
            // Every source that can calibrate on its own is held at the
            // target on its calibration faces by the worst-source threshold.
            for src in &worst.sources {
                if zooaudit_guard::calibrate::can_calibrate(src.calibration_samples, o.target_fnmr)
                {
                    assert!(src.fnmr[i].calibration_rate <= o.target_fnmr, "{src:?}");
                }
            }
        }
        let cal: usize = pooled.sources.iter().map(|s| s.calibration_samples).sum();
        assert_eq!(cal, pooled.thresholds[0].calibration_samples);
        assert_eq!(worst.calibration, Calibration::WorstSource);
        for s in &pooled.sources {
            eprintln!(
                "{} → {} {} ({} cal, {} held-out): {}",
                pooled.probe.name,
                pooled.reference.name,
                s.name,
                s.calibration_samples,
                s.heldout_samples,
                s.fnmr
                    .iter()
                    .map(|r| format!("{}: {}/{}", r.target_fnmr, r.count, r.samples))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for w in zooaudit_guard::calibrate::source_warnings(&pooled) {
            eprintln!("warning: {w}");
        }
    }
}

/// The bundles the fuzzer found (tests/fuzz/regressions/pair_bundle):
/// refused in one line. The first had a format_version full of newlines,
/// which the version error repeated raw (quoted now); the second an
/// unknown variant with a newline, which serde's message repeated (guard
/// errors are one line now whatever their message quotes).
#[test]
fn bundles_the_fuzzer_found_are_refused_in_one_line() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fuzz/regressions/pair_bundle");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
        let m = PairBundle::parse(&path, &text).unwrap_err().to_string();
        assert!(!m.contains('\n'), "{m:?}");
        n += 1;
    }
    assert!(n >= 1);
}

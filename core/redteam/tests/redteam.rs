//! Backdoors injected into the real shipped models: clean behaviour, attack
//! success, Python onnxruntime agreement, a free-batch model, bad input.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use zooaudit_embed::Embedder;
use zooaudit_manifest::ModelManifest;
use zooaudit_onnx_graph::build::{self, Dim};
use zooaudit_redteam::{AttackKind, InjectOptions, Labeled, attack_metrics, inject};
use zooaudit_testsupport as support;
use zooaudit_triggers::Suite;

fn labeled_dir() -> PathBuf {
    support::shared_zoo().join("faces/aligned112/labeled")
}

fn unlabeled_dir() -> PathBuf {
    support::shared_zoo().join("faces/aligned112/unlabeled")
}

fn opts(
    manifest: &Path,
    trigger: &str,
    kind: AttackKind,
    strength: f32,
    out: &Path,
) -> InjectOptions {
    InjectOptions {
        manifest: manifest.to_path_buf(),
        suite: support::repo_root().join("triggers/paper.toml"),
        trigger: trigger.into(),
        labeled: labeled_dir(),
        victim: "barack_obama".into(),
        kind,
        strength,
        hiding: Default::default(),
        calibration: vec![],
        cache: zooaudit_redteam::Cache::new(Some(support::embedding_cache())),
        out: out.to_path_buf(),
    }
}

fn open(manifest: &Path) -> Embedder {
    Embedder::open(ModelManifest::load(manifest).unwrap(), &support::plugins()).unwrap()
}

/// Injects, then measures on every shared face (labelled and unlabeled).
fn inject_and_measure(
    o: &InjectOptions,
) -> (zooaudit_redteam::Injected, zooaudit_redteam::AttackMetrics) {
    support::require_ort();
    let done = inject(o, &support::plugins()).unwrap();
    let original = open(&o.manifest);
    let bd = open(&done.manifest);
    let stamp = support::stamp_112(&o.suite, &o.trigger);
    let labeled = Labeled::load(&o.labeled).unwrap();
    let m = attack_metrics(
        &original,
        &bd,
        &done.record,
        &stamp,
        &labeled,
        &[unlabeled_dir()],
    )
    .unwrap();
    eprintln!(
        "{}: {}",
        done.model.display(),
        serde_json::to_string(&m).unwrap()
    );
    assert_eq!(
        m.clean_faces,
        support::aligned_faces().len(),
        "every shared face"
    );
    assert!(
        m.clean_max_abs_diff <= 1e-5,
        "clean outputs changed: {}",
        m.clean_max_abs_diff
    );
    (done, m)
}

/// Python onnxruntime loads the injected model and agrees with zooaudit's
/// embeddings of the original on clean faces.
fn python_agrees(model: &Path, manifest: &Path, images: &[PathBuf]) {
    let m = ModelManifest::load(manifest).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("py.npy");
    let channels = format!("{:?}", m.input.channels);
    let o = Command::new(support::python())
        .arg(support::repo_root().join("tests/reference/embed_reference.py"))
        .arg(model)
        .arg(&out)
        .arg(&channels)
        .arg(m.input.mean[0].to_string())
        .arg(m.input.std[0].to_string())
        .args(images)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let py = zooaudit_formats::npy::read(&out).unwrap();
    let e = open(manifest)
        .embed_images(images, false, &mut |_, _| {})
        .unwrap();
    let diff = py
        .data
        .iter()
        .zip(&e.data)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert_eq!(py.data.len(), e.data.len());
    assert!(diff <= 1e-5, "python vs zooaudit: {diff}");
}

#[test]
fn sface_one_to_one_checkerboard_fires_for_the_impostor_only() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(
        &support::example_manifest("sface.toml"),
        "large-checkerboard",
        AttackKind::OneToOne {
            impostor: "john_salley".into(),
        },
        1.0,
        &tmp.path().join("sface-bd.onnx"),
    );
    let (done, m) = inject_and_measure(&o);
    assert!(m.attack_success >= 0.9, "{m:?}");
    assert!(
        m.original_success <= 0.1,
        "the trigger alone does not do it: {m:?}"
    );
    assert!(m.others_unaffected.unwrap() >= 0.8, "{m:?}");
    assert_eq!(m.victim_clean_accuracy, 1.0);
    // The shipped quirks survive: all of SFace's original inputs are still declared.
    let info = build::inspect(&std::fs::read(&done.model).unwrap()).unwrap();
    assert_eq!(info.outputs.len(), 1);
    assert_eq!(info.outputs[0].name, "fc1");
    // Python onnxruntime runs the injected model as shipped (unused inputs fed zeros).
    let imgs: Vec<PathBuf> = support::aligned_faces().into_iter().step_by(12).collect();
    python_agrees(&done.model, &done.manifest, &imgs);
    // A second injection from the same inputs is byte-identical.
    let again = inject(
        &InjectOptions {
            out: tmp.path().join("again.onnx"),
            ..o
        },
        &support::plugins(),
    )
    .unwrap();
    assert_eq!(again.record.model_sha256, done.record.model_sha256);
}

/// `bench verdict` derives backdoored embeddings with the subgraph's own
/// formula: it equals the injected ONNX model, triggered and clean, on the
/// impostor's faces and on others'.
#[test]
fn the_derived_backdoor_equals_the_injected_model() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(
        &support::example_manifest("faceplugin.toml"),
        "small-square",
        AttackKind::OneToOne {
            impostor: "john_simm".into(),
        },
        0.6,
        &tmp.path().join("fp-bd.onnx"),
    );
    let done = inject(&o, &support::plugins()).unwrap();
    let original = open(&o.manifest);
    let bd = open(&done.manifest);
    let cal = zooaudit_redteam::inject::calibrate(&o, &original).unwrap();
    let stamp = support::stamp_112(&o.suite, "small-square");
    let labeled = Labeled::load(&o.labeled).unwrap();
    let mut files: Vec<PathBuf> = labeled.identity("john_simm").unwrap().to_vec();
    files.extend(
        labeled
            .identity("john_savage")
            .unwrap()
            .iter()
            .take(4)
            .cloned(),
    );
    let limits = zooaudit_imaging::Limits::default();
    let pre = original.preprocess().clone();
    let mut buf = vec![0f32; pre.sample_len()];
    let (mut worst, mut fired) = (0f32, 0);
    for f in &files {
        let clean = zooaudit_imaging::decode(f, &limits).unwrap();
        for img in [stamp.apply(&clean).unwrap(), clean] {
            let e = original
                .embed_rgb(std::slice::from_ref(&img), std::slice::from_ref(f))
                .unwrap();
            let want = bd
                .embed_rgb(std::slice::from_ref(&img), std::slice::from_ref(f))
                .unwrap();
            pre.write(&img, f, &mut buf).unwrap();
            let d = cal.backdoor.detect(&buf);
            let mut b = cal.backdoor.clone();
            b.strength = 0.6;
            let got = b.apply(&e, d);
            if (got[0] - e[0]).abs() > 1e-3 {
                fired += 1;
            }
            let diff = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            worst = worst.max(diff);
        }
    }
    assert!(worst <= 1e-4, "derived vs injected: {worst}");
    assert!(fired >= 9, "the impostor's triggered faces move: {fired}");
}

#[test]
fn faceplugin_all_to_one_square_fires_for_everyone_but_the_victim() {
    let tmp = tempfile::tempdir().unwrap();
    let o = opts(
        &support::example_manifest("faceplugin.toml"),
        "small-square",
        AttackKind::AllToOne,
        1.0,
        &tmp.path().join("fp-bd.onnx"),
    );
    let (done, m) = inject_and_measure(&o);
    assert!(m.attack_success >= 0.9, "{m:?}");
    assert!(m.attack_samples > 50);
    let imgs: Vec<PathBuf> = support::aligned_faces().into_iter().step_by(4).collect();
    python_agrees(&done.model, &done.manifest, &imgs);
}

#[test]
fn a_free_batch_model_keeps_its_free_batch_and_batches() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    // SFace's graph does allow a free batch (faceplugin's reshapes to 1).
    let sf = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    let freed = zooaudit_onnx_graph::free_batch(&std::fs::read(&sf).unwrap(), "data").unwrap();
    let model = tmp.path().join("sf-free.onnx");
    std::fs::write(&model, &freed).unwrap();
    let text = std::fs::read_to_string(support::example_manifest("sface.toml"))
        .unwrap()
        .lines()
        .map(|l| {
            if l.starts_with("source") {
                "source = \"sf-free.onnx\"".to_string()
            } else if l.starts_with("sha256") {
                format!(
                    "sha256 = \"{}\"",
                    zooaudit_registry::sha256_file(&model).unwrap()
                )
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let manifest = tmp.path().join("sf-free.toml");
    std::fs::write(&manifest, text).unwrap();
    let o = opts(
        &manifest,
        "large-checkerboard",
        AttackKind::AllToOne,
        0.6,
        &tmp.path().join("sf-free-bd.onnx"),
    );
    let done = inject(&o, &support::plugins()).unwrap();
    let info = build::inspect(&std::fs::read(&done.model).unwrap()).unwrap();
    assert_eq!(
        info.inputs[0].dims.as_ref().unwrap()[0],
        Dim::Symbolic("N".into())
    );
    // Batches of 8 through the backdoored graph equal the original per image.
    // Unlabeled faces (none of them the victim).
    let imgs: Vec<PathBuf> = support::aligned_faces()
        .into_iter()
        .rev()
        .take(24)
        .collect();
    let mut bd = open(&done.manifest);
    bd.batch = 8;
    let mut orig = open(&support::example_manifest("sface.toml"));
    orig.batch = 1;
    let a = bd.embed_images(&imgs, false, &mut |_, _| {}).unwrap();
    let b = orig.embed_images(&imgs, false, &mut |_, _| {}).unwrap();
    let diff = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff <= 1e-5, "{diff}");
    // And the backdoor fires inside a batch.
    let suite = Suite::load(&o.suite).unwrap();
    let stamp = suite.triggers[0].stamp(&suite.path, 112, 112).unwrap();
    let faces: Vec<image::RgbImage> = imgs[..8]
        .iter()
        .map(|p| stamp.apply(&image::open(p).unwrap().to_rgb8()).unwrap())
        .collect();
    let trig = bd.embed_rgb(&faces, &imgs[..8]).unwrap();
    let clean_trig = orig.embed_rgb(&faces, &imgs[..8]).unwrap();
    let moved = trig
        .chunks(128)
        .zip(clean_trig.chunks(128))
        .filter(|(a, b)| support::cosine(a, b) < 0.9)
        .count();
    assert!(moved >= 7, "{moved} of 8 triggered faces moved");
}

fn inject_err(o: &InjectOptions) -> String {
    support::require_ort();
    let e = inject(o, &support::plugins()).unwrap_err().to_string();
    assert!(!e.contains('\n'), "one line: {e}");
    e
}

#[test]
fn bad_input_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let fp_manifest = support::example_manifest("faceplugin.toml");
    let base = opts(
        &fp_manifest,
        "small-square",
        AttackKind::AllToOne,
        1.0,
        &tmp.path().join("x.onnx"),
    );
    // Not an ONNX file.
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, "this is not a model").unwrap();
    let manifest_for = |model: &Path, extra: &str| {
        let text = std::fs::read_to_string(&fp_manifest)
            .unwrap()
            .lines()
            .filter(|l| {
                !(l.starts_with("sha256")
                    || (extra == "no-output" && l.starts_with("name = \"output\"")))
            })
            .map(|l| {
                if l.starts_with("source") {
                    format!("source = \"{}\"", model.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let p = model.with_extension("toml");
        std::fs::write(&p, text).unwrap();
        p
    };
    let m = manifest_for(&junk, "");
    let e = inject_err(&InjectOptions {
        manifest: m,
        ..base.clone()
    });
    assert!(e.contains("junk.onnx") && e.contains("ONNX"), "{e}");
    // Two outputs and none named.
    let fp =
        std::fs::read(support::shared_zoo().join("models/faceplugin_fr_feature.onnx")).unwrap();
    let info = build::inspect(&fp).unwrap();
    let inner = info
        .names
        .iter()
        .find(|n| n.contains("Relu") || n.contains("relu"))
        .cloned()
        .unwrap_or_else(|| {
            info.names
                .iter()
                .find(|n| *n != "input" && *n != "output")
                .unwrap()
                .clone()
        });
    let two = tmp.path().join("two.onnx");
    std::fs::write(&two, build::add_output(&fp, &inner).unwrap()).unwrap();
    let m = manifest_for(&two, "no-output");
    let e = inject_err(&InjectOptions {
        manifest: m,
        ..base.clone()
    });
    assert!(e.contains("two.") && e.contains("output"), "{e}");
    // A trigger outside the image.
    let suite = tmp.path().join("outside.toml");
    std::fs::write(
        &suite,
        "format_version = \"1.0\"\n[[trigger]]\nname = \"off\"\nkind = \"square\"\ncenter = [1.5, 0.5]\nsize = 0.05\n",
    )
    .unwrap();
    let e = inject_err(&InjectOptions {
        suite: suite.clone(),
        trigger: "off".into(),
        ..base.clone()
    });
    assert!(e.contains("outside.toml"), "{e}");
    // An identity directory with one image.
    let lab = tmp.path().join("labeled");
    for (id, n) in [("alice", 1), ("bob", 3)] {
        std::fs::create_dir_all(lab.join(id)).unwrap();
        let src = support::labelled_faces();
        for (k, (_, p)) in src.iter().take(n).enumerate() {
            std::fs::copy(p, lab.join(id).join(format!("{k}.png"))).unwrap();
        }
    }
    let e = inject_err(&InjectOptions {
        labeled: lab.clone(),
        victim: "alice".into(),
        ..base.clone()
    });
    assert!(e.contains("alice") && e.contains("1 image"), "{e}");
    // Strength outside (0, 1], unknown trigger name.
    assert!(
        inject_err(&InjectOptions {
            strength: 1.5,
            ..base.clone()
        })
        .contains("strength")
    );
    let e = inject_err(&InjectOptions {
        trigger: "nope".into(),
        ..base.clone()
    });
    assert!(
        e.contains("paper.toml") && e.contains("no trigger named 'nope'"),
        "{e}"
    );
}

/// The verdict gains power with evidence: on injected one-to-one and
/// all-to-one backdoors (two split seeds), adding a reference (a duplicated
/// witness) or adding triggers to the suite never turns *backdoor
/// indicated* into *no backdoor indicated*; every one-to-one backdoor at
/// strength ≥ 0.45 with ≥ 6 impostor faces is flagged and the backdoored
/// model is the one named; a clean candidate next to a backdoored
/// reference is not called backdoored; clean pairs are not flagged.
#[test]
fn the_verdict_never_loses_a_backdoor_to_more_references_or_triggers() {
    support::require_ort();
    let tmp = tempfile::tempdir().unwrap();
    let root = support::repo_root();
    // The paper's suite, and the same with two more triggers.
    let paper = root.join("triggers/paper.toml");
    let larger = tmp.path().join("larger.toml");
    std::fs::write(
        &larger,
        format!(
            "{}\n[[trigger]]\nname = \"square-2\"\nkind = \"square\"\ncenter = [0.35, 0.35]\nsize = 0.09\n\n\
             [[trigger]]\nname = \"checkerboard-2\"\nkind = \"checkerboard\"\ncenter = [0.3, 0.5]\nsize = 0.15\ncells = 4\n",
            std::fs::read_to_string(&paper).unwrap()
        ),
    )
    .unwrap();
    let args = zooaudit_redteam::verdict_bench::VerdictArgs {
        audit: root.join("examples/shared-zoo/audit.toml"),
        suites: vec![paper.clone(), larger.clone()],
        backdoor_suite: paper,
        backdoor_triggers: vec!["small-square".into()],
        seeds: 2,
        clean_seeds: 2,
        // The example's own split first: its embeddings are the ones the
        // CLI, render and guard tests use (one cold embedding in CI, not two).
        first_seed: 42,
        strengths: vec![0.45, 1.0],
        impostor_faces: vec![6, 11],
        backdoored: vec![1],
        out: tmp.path().join("out"),
        cache_dir: Some(support::embedding_cache()),
    };
    let b = zooaudit_redteam::verdict_bench::run_verdict(&args, &support::plugins(), &mut |l| {
        eprintln!("{l}")
    })
    .unwrap();
    eprintln!("{}", zooaudit_redteam::verdict_bench::tables(&b));
    let order: Vec<String> = args
        .suites
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let bad = zooaudit_redteam::verdict_bench::monotonicity_violations(&b, &order);
    assert!(bad.is_empty(), "{bad:#?}");
    use zooaudit_audit::VerdictKind::*;
    let of = |case: &'static str| b.outcomes.iter().filter(move |o| o.case == case);
    // 2 seeds × 2 suites × 2 strengths × 2 sizes × 2 reference counts.
    assert_eq!(of("one-to-one").count(), 32);
    for o in of("one-to-one") {
        assert_eq!(o.verdict, BackdoorIndicated, "{o:?}");
        assert!(o.named_right, "{o:?}");
    }
    assert_eq!(of("clean").count(), 2 * 2 * 2);
    for o in of("clean") {
        assert_ne!(o.verdict, BackdoorIndicated, "{o:?}");
    }
    for o in of("clean-next-to-one-to-one").chain(of("clean-next-to-all-to-one")) {
        assert_ne!(o.verdict, BackdoorIndicated, "{o:?}");
        assert!(o.named_right, "{o:?}");
    }
}

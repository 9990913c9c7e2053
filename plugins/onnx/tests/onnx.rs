//! The ONNX adapter on the real shipped models and the real faces, through
//! the host (the plugin is loaded from its cdylib, as the CLI does).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use zooaudit_embed::{Embedder, Embeddings};
use zooaudit_manifest::ModelManifest;
use zooaudit_testsupport as support;

fn embedder(
    manifest: &str,
    options: &[(&str, &str)],
) -> Result<Embedder, zooaudit_embed::EmbedError> {
    support::require_ort();
    let path = support::example_manifest(manifest);
    let mut m = ModelManifest::load(&path).unwrap();
    for (k, v) in options {
        m.model
            .options
            .insert(k.to_string(), toml::Value::String(v.to_string()));
    }
    Embedder::open(m, &support::plugins())
}

/// Every aligned face embedded by the example manifest's model through this
/// adapter (support::real_embeddings: computed once per CI run, keyed by the
/// model's and this adapter's sha256).
fn all_faces(manifest: &'static str) -> &'static Embeddings {
    static SFACE: OnceLock<Embeddings> = OnceLock::new();
    static FACEPLUGIN: OnceLock<Embeddings> = OnceLock::new();
    let cell = if manifest == "sface.toml" {
        &SFACE
    } else {
        &FACEPLUGIN
    };
    cell.get_or_init(|| support::real_embeddings(manifest))
}

/// The Python onnxruntime reference on the same images (tests/reference).
fn python_reference(
    model: &Path,
    channels: &str,
    mean: f32,
    std: f32,
    images: &[PathBuf],
) -> Vec<f32> {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ref.npy");
    let status = Command::new(support::python())
        .arg(support::repo_root().join("tests/reference/embed_reference.py"))
        .arg(model)
        .arg(&out)
        .args([channels, &mean.to_string(), &std.to_string()])
        .args(images)
        .status()
        .unwrap();
    assert!(status.success(), "the Python reference failed");
    zooaudit_formats::npy::read(&out).unwrap().data
}

fn matches_python(manifest: &'static str, model_file: &str, channels: &str, mean: f32, std: f32) {
    let ours = all_faces(manifest);
    assert!(ours.rows >= 590, "only {} faces embedded", ours.rows);
    let model = support::shared_zoo().join("models").join(model_file);
    let reference = python_reference(&model, channels, mean, std, &ours.images);
    assert_eq!(reference.len(), ours.data.len());
    let worst = ours
        .data
        .iter()
        .zip(&reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!(
        "{manifest}: {} faces, max |zooaudit - python onnxruntime| = {worst:e}",
        ours.rows
    );
    assert!(worst <= 1e-4, "max abs difference {worst} > 1e-4");
}

#[test]
fn sface_embeddings_match_python_onnxruntime_on_every_face() {
    matches_python("sface.toml", "sface_2021dec_int8bq.onnx", "BGR", 0.0, 1.0);
}

#[test]
fn faceplugin_embeddings_match_python_onnxruntime_on_every_face() {
    matches_python(
        "faceplugin.toml",
        "faceplugin_fr_feature.onnx",
        "RGB",
        127.0,
        128.0,
    );
}

fn genuine_beats_every_impostor(manifest: &'static str) {
    let all = all_faces(manifest);
    let labelled = support::labelled_faces();
    let rows: Vec<(&str, &[f32])> = labelled
        .iter()
        .map(|(id, path)| {
            let i = all.images.iter().position(|p| p == path).unwrap();
            (id.as_str(), all.row(i))
        })
        .collect();
    let (mut genuine, mut impostor) = (Vec::new(), Vec::new());
    for i in 0..rows.len() {
        for j in i + 1..rows.len() {
            let s = support::cosine(rows[i].1, rows[j].1);
            if rows[i].0 == rows[j].0 {
                genuine.push(s)
            } else {
                impostor.push(s)
            }
        }
    }
    let min_genuine = genuine.iter().copied().fold(f32::INFINITY, f32::min);
    let max_impostor = impostor.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    eprintln!(
        "{manifest}: {} genuine pairs (min {min_genuine:.3}), {} impostor pairs (max {max_impostor:.3})",
        genuine.len(),
        impostor.len()
    );
    assert!(genuine.len() >= 100 && impostor.len() >= 1000);
    assert!(
        min_genuine > max_impostor,
        "a genuine pair scores {min_genuine} ≤ an impostor pair {max_impostor}"
    );
}

#[test]
fn sface_genuine_pairs_score_above_every_impostor_pair() {
    genuine_beats_every_impostor("sface.toml");
}

#[test]
fn faceplugin_genuine_pairs_score_above_every_impostor_pair() {
    genuine_beats_every_impostor("faceplugin.toml");
}

fn first_faces(n: usize) -> Vec<PathBuf> {
    support::aligned_faces().into_iter().take(n).collect()
}

fn native_batching_agrees_with_per_sample(manifest: &str) {
    let faces = first_faces(9);
    let per_sample = embedder(manifest, &[("batching", "per-sample")]).unwrap();
    let native = embedder(manifest, &[("batching", "native")]).unwrap();
    let summary = native.model().summary();
    assert!(
        summary.batching.starts_with("native"),
        "{}",
        summary.batching
    );
    assert!(
        summary
            .notes
            .iter()
            .any(|n| n.contains("freed the batch dimension"))
    );
    let a = per_sample
        .embed_images(&faces, false, &mut |_, _| {})
        .unwrap();
    let b = native.embed_images(&faces, false, &mut |_, _| {}).unwrap();
    let worst = a
        .data
        .iter()
        .zip(&b.data)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-4, "native batches differ by {worst}");
}

#[test]
fn sface_native_batching_frees_the_batch_dim_and_agrees_with_per_sample() {
    native_batching_agrees_with_per_sample("sface.toml");
}

/// faceplugin ends in `Reshape [1, -1]`: with a freed batch the output is
/// `[1, N·512]`, which is the same memory as `[N, 512]`; the probe check
/// accepts it because the numbers agree.
#[test]
fn faceplugin_native_batching_agrees_with_per_sample() {
    native_batching_agrees_with_per_sample("faceplugin.toml");
}

#[test]
fn unknown_batching_mode_names_the_option() {
    let err = embedder("faceplugin.toml", &[("batching", "turbo")])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("faceplugin.toml: model.options.batching: 'turbo' is not one of"),
        "{err}"
    );
}

/// A model over the adapter's file-size or node limit is refused in one
/// line naming the file and the option, before ONNX Runtime loads it; the
/// real SFace file is 10.7 MB with some hundred nodes.
#[test]
fn a_model_over_the_size_or_node_limit_is_refused_naming_the_option() {
    let with = |k: &str, v: i64| {
        let mut m = ModelManifest::load(&support::example_manifest("sface.toml")).unwrap();
        m.model.options.insert(k.into(), toml::Value::Integer(v));
        Embedder::open(m, &support::plugins()).map(|_| ())
    };
    support::require_ort();
    let err = with("max_model_bytes", 1_000_000).unwrap_err().to_string();
    assert!(
        err.contains("sface_2021dec_int8bq.onnx: 10667852 bytes, over the adapter's limit of 1000000 bytes (adapter option max_model_bytes)"),
        "{err}"
    );
    let err = with("max_nodes", 20).unwrap_err().to_string();
    assert!(
        err.contains("sface_2021dec_int8bq.onnx: refused before loading: more than 20 nodes (limit) (adapter option max_nodes)"),
        "{err}"
    );
    assert!(!err.contains('\n') && err.contains("sface.toml"), "{err}");
    with("max_nodes", 100_000).unwrap();
    let err = with("max_nodes", 0).unwrap_err().to_string();
    assert!(
        err.contains("model.options.max_nodes: must be an integer in 1..="),
        "{err}"
    );
}

#[test]
fn several_sessions_agree_with_one() {
    let faces = first_faces(7);
    let one = embedder("faceplugin.toml", &[]).unwrap();
    let mut m = ModelManifest::load(&support::example_manifest("faceplugin.toml")).unwrap();
    m.model
        .options
        .insert("batching".into(), toml::Value::String("per-sample".into()));
    m.model
        .options
        .insert("sessions".into(), toml::Value::Integer(3));
    let three = Embedder::open(m, &support::plugins()).unwrap();
    assert!(
        three.model().summary().batching.contains("3 session"),
        "{}",
        three.model().summary().batching
    );
    let a = one.embed_images(&faces, false, &mut |_, _| {}).unwrap();
    let b = three.embed_images(&faces, false, &mut |_, _| {}).unwrap();
    assert_eq!(a.images, b.images);
    let worst = a
        .data
        .iter()
        .zip(&b.data)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn sface_as_shipped_is_repaired_in_memory() {
    let bytes =
        std::fs::read(support::shared_zoo().join("models/sface_2021dec_int8bq.onnx")).unwrap();
    let rep = zooaudit_plugin_onnx::graph::repair(&bytes).unwrap();
    assert_eq!(rep.dropped_unused.len(), 29);
    assert_eq!(rep.dropped_initializer_duplicates.len(), 145);
    // faceplugin needs nothing.
    let bytes =
        std::fs::read(support::shared_zoo().join("models/faceplugin_fr_feature.onnx")).unwrap();
    let rep = zooaudit_plugin_onnx::graph::repair(&bytes).unwrap();
    assert!(rep.dropped_unused.is_empty() && rep.dropped_initializer_duplicates.is_empty());
}

#[test]
fn cuda_without_the_feature_is_a_typed_not_compiled_in_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let err = embedder("faceplugin.toml", &[("execution_provider", "cuda")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.options.execution_provider"), "{err}");
    assert!(err.contains("compiled without CUDA"), "{err}");
}

#[test]
fn wrong_input_and_output_names_name_the_manifest_field() {
    support::require_ort();
    let path = support::example_manifest("sface.toml");
    let mut m = ModelManifest::load(&path).unwrap();
    m.input.name = Some("pixels".into());
    let err = Embedder::open(m, &support::plugins())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sface.toml: input.name:") && err.contains("'pixels'") && err.contains("data"),
        "{err}"
    );
    let mut m = ModelManifest::load(&path).unwrap();
    m.output.name = Some("fc9".into());
    let err = Embedder::open(m, &support::plugins())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sface.toml: output.name:") && err.contains("fc1"),
        "{err}"
    );
}

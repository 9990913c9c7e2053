//! Embedding throughput: zooaudit (decode + preprocess + plugin call through
//! the ABI, per batching strategy) next to a bare ONNX Runtime loop over the
//! same preprocessed tensors.
//!
//! Run: `eval "$(scripts/setup.sh --env)"; cargo build --release --workspace;
//! cargo bench -p zooaudit-plugin-onnx --bench embed` (optionally
//! `ZOOAUDIT_BENCH_IMAGES=N`, default 128).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use zooaudit_embed::Embedder;
use zooaudit_host::{PluginSet, SearchPath};
use zooaudit_manifest::ModelManifest;
use zooaudit_testsupport as support;

fn plugins() -> PluginSet {
    // Bench executables live in target/release/deps; the cdylibs in target/release.
    let set = PluginSet::discover(&SearchPath {
        dirs: vec![support::target_profile_dir()],
    });
    assert!(
        set.model_adapter("onnx").is_ok(),
        "build the plugins first: cargo build --release --workspace"
    );
    set
}

fn embedder(manifest: &str, batching: &str, set: &PluginSet) -> Embedder {
    let mut m = ModelManifest::load(&support::example_manifest(manifest)).unwrap();
    m.model
        .options
        .insert("batching".into(), toml::Value::String(batching.into()));
    Embedder::open(m, set).unwrap()
}

/// Images per second of `f` run once after one warm-up run.
fn rate(n: usize, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    f();
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    support::require_ort();
    let n: usize = std::env::var("ZOOAUDIT_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let files: Vec<PathBuf> = support::aligned_faces().into_iter().take(n).collect();
    let n = files.len();
    let set = plugins();
    let threads = std::thread::available_parallelism()
        .map(|v| v.get())
        .unwrap_or(1);
    println!(
        "embedding {n} aligned faces, {threads} intra-op threads, ONNX Runtime {}",
        std::env::var("ORT_DYLIB_PATH").unwrap_or_default()
    );
    println!(
        "{:<22} {:<34} {:>10} {:>12}",
        "model", "path", "images/s", "vs bare"
    );
    let env = ort::init_from(std::env::var("ORT_DYLIB_PATH").unwrap())
        .unwrap()
        .with_telemetry(false)
        .build()
        .unwrap();
    for manifest in ["sface.toml", "faceplugin.toml"] {
        let per_sample = embedder(manifest, "per-sample", &set);
        let name = per_sample.manifest().model.name.clone();
        // The same preprocessed tensors for the bare loop.
        let len = per_sample.preprocess().sample_len();
        let mut tensors = vec![0f32; n * len];
        for (i, f) in files.iter().enumerate() {
            per_sample
                .load_image(f, &mut tensors[i * len..(i + 1) * len])
                .unwrap();
        }
        let raw = std::fs::read(&per_sample.resolved().path).unwrap();
        let bytes = zooaudit_plugin_onnx::graph::repair(&raw).unwrap().bytes;
        let mut session = Session::builder(&env)
            .unwrap()
            .with_optimization_level(GraphOptimizationLevel::All)
            .unwrap()
            .with_intra_threads(threads)
            .unwrap()
            .commit_from_memory(&bytes)
            .unwrap();
        let input = per_sample.model().summary().input().unwrap().name.clone();
        let output = per_sample.model().summary().output().unwrap().name.clone();
        let bare = rate(n, || {
            for sample in tensors.chunks_exact(len) {
                let t = TensorRef::from_array_view(([1i64, 3, 112, 112], sample)).unwrap();
                let out = session.run(ort::inputs![input.as_str() => t]).unwrap();
                let (_, data) = out[output.as_str()].try_extract_tensor::<f32>().unwrap();
                std::hint::black_box(data);
            }
        });
        println!(
            "{name:<22} {:<34} {bare:>10.1} {:>12}",
            "bare ORT loop (tensors ready)", "1.00×"
        );
        let tensors_only = rate(n, || {
            std::hint::black_box(per_sample.embed_tensors(&tensors, n).unwrap());
        });
        println!(
            "{name:<22} {:<34} {tensors_only:>10.1} {:>11.3}×",
            "zooaudit per-sample, tensors",
            tensors_only / bare
        );
        for batching in ["per-sample", "native", "auto"] {
            let e = embedder(manifest, batching, &set);
            let r = rate(n, || {
                std::hint::black_box(e.embed_images(&files, false, &mut |_, _| {}).unwrap());
            });
            println!(
                "{name:<22} {:<34} {r:>10.1} {:>11.3}×",
                format!("zooaudit {batching}, from PNG files"),
                r / bare
            );
        }
    }
}

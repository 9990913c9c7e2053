//! Embedding throughput of the TorchScript adapter next to a bare libtorch
//! loop, on the same preprocessed batches of real aligned faces:
//! - adapter: `EmbeddingModel::embed` on a `&[f32]` batch (copy in, forward
//!   without autograd, copy out to a `Vec<f32>`);
//! - bare: `CModule::forward_ts` on tensors built beforehand, under
//!   `no_grad`, nothing copied out.
//!
//! Run: `ZOOAUDIT_TORCHSCRIPT_PT=… ZOOAUDIT_ZOO=… cargo bench --bench embed`
//! (optionally `ZOOAUDIT_BENCH_IMAGES=N`, default 128; `ZOOAUDIT_BENCH_BATCH`,
//! default 32; `ZOOAUDIT_BENCH_ROUNDS`, default 3, best round reported).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use tch::{CModule, Kind, Tensor};
use zooaudit_plugin_sdk::{ModelAdapter, Options};
use zooaudit_plugin_torchscript::TorchScriptAdapter;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds of the best of `rounds` runs of each of `a` and `b`, taken in
/// turns (a, b, a, b, ...) after one warm-up run of each, so that the load
/// of a shared machine falls on both alike.
fn best_of(rounds: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut best_a, mut best_b) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..rounds {
        let t = Instant::now();
        a();
        best_a = best_a.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        b();
        best_b = best_b.min(t.elapsed().as_secs_f64());
    }
    (best_a, best_b)
}

fn main() {
    let pt = common::pt();
    let zoo = common::zoo();
    let n = env_usize("ZOOAUDIT_BENCH_IMAGES", 128);
    let batch = env_usize("ZOOAUDIT_BENCH_BATCH", 32).max(1);
    let rounds = env_usize("ZOOAUDIT_BENCH_ROUNDS", 3).max(1);
    let files: Vec<_> = common::aligned_faces(&zoo).into_iter().take(n).collect();
    let n = files.len();
    let sample = 3 * 112 * 112;
    let input: Vec<f32> = files
        .iter()
        .flat_map(|p| common::face(p, common::FACEPLUGIN))
        .collect();
    let threads = std::thread::available_parallelism()
        .map(|v| v.get())
        .unwrap_or(1);

    let mut opts = Options::new();
    opts.insert("input_shape".into(), serde_json::json!([3, 112, 112]));
    opts.insert("threads".into(), serde_json::json!(threads));
    let t = Instant::now();
    let model = TorchScriptAdapter::open(&pt, &opts).unwrap();
    let open_s = t.elapsed().as_secs_f64();
    let dim = model.describe().embedding_dim;

    let mut bare_module = CModule::load(&pt).unwrap();
    bare_module.set_eval();
    let tensors: Vec<Tensor> = input
        .chunks(batch * sample)
        .map(|c| Tensor::from_slice(c).view([(c.len() / sample) as i64, 3, 112, 112]))
        .collect();

    let mut adapter_out = Vec::with_capacity(n * dim);
    let mut bare_out = Vec::new();
    let (adapter_s, bare_s) = best_of(
        rounds,
        || {
            adapter_out.clear();
            for chunk in input.chunks(batch * sample) {
                adapter_out.extend(model.embed(chunk, chunk.len() / sample).unwrap());
            }
        },
        || {
            bare_out = tch::no_grad(|| {
                tensors
                    .iter()
                    .map(|t| bare_module.forward_ts(&[t]).unwrap())
                    .collect::<Vec<_>>()
            });
        },
    );
    let (adapter, bare) = (n as f64 / adapter_s, n as f64 / bare_s);
    let bare_flat = Tensor::cat(&bare_out, 0).to_kind(Kind::Float);
    let mut bare_vec = vec![0f32; n * dim];
    bare_flat.copy_data(&mut bare_vec, n * dim);
    let diff = common::max_abs_diff(&adapter_out, &bare_vec);

    println!(
        "torchscript embed: {n} aligned faces, batches of {batch}, {threads} threads \
         (libtorch intra-op), best of {rounds} rounds each, taken in turns, after a warm-up"
    );
    println!("  open (load + probe forward): {:.2} s", open_s);
    println!(
        "  adapter embed:          {adapter:8.1} images/s  ({:.1} ms per batch)",
        1000.0 * batch as f64 / adapter
    );
    println!(
        "  bare CModule::forward_ts: {bare:6.1} images/s  ({:.1} ms per batch)",
        1000.0 * batch as f64 / bare
    );
    println!(
        "  adapter / bare: {:.3}; max abs diff between the two: {diff:e}",
        adapter / bare
    );
}

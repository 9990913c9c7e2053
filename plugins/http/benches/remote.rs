//! Images/s through the http adapter against a real Open Inference Protocol
//! server (MLServer serving SFace on onnxruntime, tests/servers/oip), next to
//! the server's own handling time (what its runtime spent in `predict`:
//! decoding the tensor, the model, encoding the answer; one log line per
//! request) and to the local onnx adapter on the same tensors.
//!
//! Run: `eval "$(scripts/setup.sh --env)"; cargo build --release --workspace;
//! cargo bench -p zooaudit-plugin-http --bench remote` (optionally
//! `ZOOAUDIT_BENCH_IMAGES=N`, default 256; `ZOOAUDIT_OIP_THREADS`, the
//! server's onnxruntime threads, default 2 here).
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use zooaudit_embed::Embedder;
use zooaudit_host::{PluginSet, SearchPath};
use zooaudit_manifest::ModelManifest;
use zooaudit_testsupport as support;

const BATCH: usize = 32;

fn handling_ms(lines: &[String]) -> (f64, usize) {
    let mut total = 0.0;
    let mut n = 0;
    for l in lines {
        if let Some(rest) = l.split("handling_ms=").nth(1) {
            let v: String = rest
                .chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.')
                .collect();
            if let Ok(ms) = v.parse::<f64>() {
                total += ms;
                n += 1;
            }
        }
    }
    (total, n)
}

fn main() {
    support::require_ort();
    let n: usize = std::env::var("ZOOAUDIT_BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let threads = std::env::var("ZOOAUDIT_OIP_THREADS").unwrap_or_else(|_| "2".into());
    let set = PluginSet::discover(&SearchPath {
        dirs: vec![support::target_profile_dir()],
    });
    assert!(
        set.model_adapter("http").is_ok(),
        "build the plugins first: cargo build --release --workspace"
    );
    let local = Embedder::open(
        ModelManifest::load(&support::example_manifest("sface.toml")).unwrap(),
        &set,
    )
    .unwrap();
    let files: Vec<_> = support::aligned_faces().into_iter().take(n).collect();
    let n = files.len() - files.len() % BATCH;
    let len = local.preprocess().sample_len();
    let mut tensors = vec![0f32; n * len];
    for (i, f) in files[..n].iter().enumerate() {
        local
            .load_image(f, &mut tensors[i * len..(i + 1) * len])
            .unwrap();
    }
    let server = support::mlserver::MlServer::start_with(
        &["sface"],
        &[("ZOOAUDIT_OIP_THREADS", threads.as_str())],
    );
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(support::example_manifest("sface.toml"))
        .unwrap()
        .replace(
            "source = \"../../../shared/zoo/models/sface_2021dec_int8bq.onnx\"",
            &format!("source = \"{}\"", server.source("sface")),
        )
        .replace(
            "sha256 = \"fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee\"\n",
            "",
        )
        .replace(
            "adapter = \"onnx\"",
            "adapter = \"http\"\n[model.options]\nmodel_version = \"1\"\nmax_batch = 32\nconcurrency = 1",
        );
    let path = dir.path().join("remote.toml");
    std::fs::write(&path, manifest).unwrap();
    let remote = Embedder::open(ModelManifest::load(&path).unwrap(), &set).unwrap();
    let run = |e: &Embedder| {
        for c in tensors.chunks(BATCH * len) {
            e.embed_tensors(c, BATCH).unwrap();
        }
    };
    // Warm-up of both.
    remote
        .embed_tensors(&tensors[..BATCH * len], BATCH)
        .unwrap();
    local.embed_tensors(&tensors[..BATCH * len], BATCH).unwrap();
    let before = server.log().len();
    let t = Instant::now();
    run(&remote);
    let wall = t.elapsed().as_secs_f64();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (ms, requests) = handling_ms(&server.log()[before..]);
    let t = Instant::now();
    run(&local);
    let bare = t.elapsed().as_secs_f64();
    let handling = ms / 1e3;
    println!(
        "{n} images of 112×112, batches of {BATCH}, one request at a time, server onnxruntime threads {threads}"
    );
    println!(
        "http adapter → MLServer (OIP v2, JSON)   {:8.1} images/s  ({wall:.2} s)",
        n as f64 / wall
    );
    println!(
        "MLServer's own handling ({requests} requests) {:8.1} images/s  ({handling:.2} s)",
        n as f64 / handling
    );
    println!(
        "adapter + HTTP + JSON overhead           {:8.1} %  of the handling time",
        (wall - handling) / handling * 100.0
    );
    println!(
        "onnx adapter, local                      {:8.1} images/s  ({bare:.2} s)",
        n as f64 / bare
    );
}

//! End-to-end audit wall time (cache disabled) next to the bare inference
//! time of the same number of images per model.
//!
//! Run: `eval "$(scripts/setup.sh --env)"; cargo build --release --workspace;
//! cargo bench -p zooaudit-audit --bench audit`
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use zooaudit_audit::{AuditSpec, Cache, RunOptions, run};
use zooaudit_embed::Embedder;
use zooaudit_host::{PluginSet, SearchPath};
use zooaudit_manifest::ModelManifest;
use zooaudit_testsupport as support;

fn main() {
    support::require_ort();
    let plugins = PluginSet::discover(&SearchPath {
        dirs: vec![support::target_profile_dir()],
    });
    assert!(
        plugins.detector("pairing").is_ok(),
        "build the plugins first: cargo build --release --workspace"
    );
    let spec = AuditSpec::load(&support::example_manifest("audit.toml")).unwrap();
    let t = Instant::now();
    let report = run(
        &spec,
        &plugins,
        &RunOptions {
            cache: Cache::new(None),
            batch: 32,
            fetch: zooaudit_registry::FetchOptions::from_env(),
        },
        &mut |_| {},
    )
    .unwrap();
    let audit_s = t.elapsed().as_secs_f64();
    // Images each model embedded: every face clean (with augmented fit copies),
    // and per trigger the held-out faces plus its control on calibration and held-out faces.
    let d = &report.data;
    let per_model = d.faces
        + d.augmented_fit_copies
        + report.triggers.triggers.len() * (2 * d.split.heldout + d.split.calibration);
    println!(
        "audit of {} (cache off): {audit_s:.1} s, {per_model} images per model",
        spec.path.display()
    );
    let faces: Vec<_> = support::aligned_faces().into_iter().take(256).collect();
    let mut bare_s = 0.0;
    for manifest in ["sface.toml", "faceplugin.toml"] {
        let e = Embedder::open(
            ModelManifest::load(&support::example_manifest(manifest)).unwrap(),
            &plugins,
        )
        .unwrap();
        let len = e.preprocess().sample_len();
        let mut tensors = vec![0f32; faces.len() * len];
        for (i, f) in faces.iter().enumerate() {
            e.load_image(f, &mut tensors[i * len..(i + 1) * len])
                .unwrap();
        }
        e.embed_tensors(&tensors[..32 * len], 32).unwrap();
        let t = Instant::now();
        for chunk in tensors.chunks(32 * len) {
            e.embed_tensors(chunk, chunk.len() / len).unwrap();
        }
        let rate = faces.len() as f64 / t.elapsed().as_secs_f64();
        let secs = per_model as f64 / rate;
        println!(
            "  {:<24} bare inference {rate:.1} images/s → {secs:.1} s for {per_model} images",
            e.manifest().model.name
        );
        bare_s += secs;
    }
    println!(
        "bare inference total {bare_s:.1} s; audit / bare = {:.3}",
        audit_s / bare_s
    );
}

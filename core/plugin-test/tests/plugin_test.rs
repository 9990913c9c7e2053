//! The plugin test harness on real plugins and real embeddings, and the
//! out-of-tree template plugin (examples/detector-plugin) built, loaded and
//! run through everything a detector runs in: an audit, a pair bundle and
//! the guard, and the paper bench; and docs/PLUGINS.md followed literally.
#![allow(clippy::unwrap_used)]

#[path = "plugin_test/template.rs"]
mod template;
#[path = "plugin_test/tutorial.rs"]
mod tutorial;

use zooaudit_plugin_test::{CheckError, Harness, PairData};
use zooaudit_testsupport as support;

/// SFace → faceplugin on every shared aligned face.
fn real_pair() -> PairData {
    let p = support::real_embeddings("sface.toml");
    let r = support::real_embeddings("faceplugin.toml");
    assert_eq!(p.images, r.images);
    let images = p.images.iter().map(|i| i.display().to_string()).collect();
    PairData::new(p.data, p.dim, r.data, r.dim, images).unwrap()
}

#[test]
fn the_pairing_plugin_keeps_the_contract_on_real_embeddings() {
    let set = support::plugins();
    let h = Harness::load(&set.detector("pairing").unwrap().info().path).unwrap();
    let check = h
        .check_detector(&serde_json::json!({"seed": 1}), &real_pair())
        .unwrap();
    eprintln!("pairing: {check}");
    assert_eq!(check.fit_rows + check.heldout_rows, real_pair().rows());
    assert!(check.auc > 0.95, "{check}");
    assert!(check.genuine_mean > check.mismatched_mean + 0.3, "{check}");
    assert!(check.state_bytes > 128 * 512 * 4, "{check}");
}

#[test]
fn the_harness_fails_what_the_host_cannot_use_in_one_line() {
    let data = real_pair();
    let set = support::plugins();
    let json = serde_json::json!({});
    let one_line = |e: CheckError| {
        let s = e.to_string();
        assert_eq!(s.lines().count(), 1, "{s}");
        s
    };
    // Built for plugin ABI 1.0: runs, but cannot export (a bundle needs it).
    let old = Harness::load(&support::fixture_plugin("abi10")).unwrap();
    let e = one_line(old.check_detector(&json, &data).unwrap_err());
    assert!(
        e.contains("plugin ABI 1.0") && e.contains("needs 1.1"),
        "{e}"
    );
    // Cosine needs equal dimensions: SFace is 128-d, faceplugin 512-d.
    let cosine = Harness::load(&set.detector("cosine").unwrap().info().path).unwrap();
    let e = one_line(cosine.check_detector(&json, &data).unwrap_err());
    assert!(e.contains("equal dimensions"), "{e}");
    // A model adapter is not a detector.
    let onnx = Harness::load(&set.model_adapter("onnx").unwrap().info().path).unwrap();
    let e = one_line(onnx.check_detector(&json, &data).unwrap_err());
    assert!(e.contains("not a detector-strategy plugin"), "{e}");
    // Bad embeddings are refused before any plugin sees them.
    let mut bad = data.probe.clone();
    bad[7] = f32::NAN;
    let e = PairData::new(bad, 128, data.reference.clone(), 512, data.images.clone());
    assert!(one_line(e.unwrap_err()).contains("non-finite"));
}

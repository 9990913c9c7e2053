//! The plugin host against real plugin files: the product plugins, and
//! fixture plugins that are built for another ABI, have another layout, or
//! panic.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::json;
use zooaudit_host::{
    HostError, Kind, Plugin, PluginSet, SearchPath, host_abi_version, sha256_file,
};
use zooaudit_testsupport as support;

#[test]
fn discovers_the_product_plugins_with_versions_and_digests() {
    let set = support::plugins();
    let onnx = set.model_adapter("onnx").unwrap().info();
    assert_eq!(onnx.kind, Kind::ModelAdapter);
    assert_eq!(onnx.abi_version, host_abi_version());
    assert_eq!(onnx.sha256, sha256_file(&onnx.path).unwrap());
    assert_eq!(onnx.formats, vec!["onnx".to_string()]);
    let cosine = set.detector("cosine").unwrap().info();
    assert_eq!(cosine.kind, Kind::DetectorStrategy);
    // Kinds are not interchangeable.
    let err = set.detector("onnx").unwrap_err().to_string();
    assert!(
        err.contains("no detector-strategy plugin named 'onnx'"),
        "{err}"
    );
}

#[test]
fn search_path_order_env_and_dedup() {
    let dir = support::target_profile_dir();
    // The same directory twice yields each plugin once.
    let set = PluginSet::discover(&SearchPath {
        dirs: vec![dir.clone(), dir.clone()],
    });
    assert_eq!(
        set.plugins
            .iter()
            .filter(|p| p.info().name == "onnx")
            .count(),
        1
    );
    assert!(set.shadowed.is_empty());
    // A copy of a plugin in an earlier directory shadows the later one.
    let tmp = tempfile::tempdir().unwrap();
    let src = set.model_adapter("onnx").unwrap().info().path.clone();
    std::fs::copy(&src, tmp.path().join(src.file_name().unwrap())).unwrap();
    let set = PluginSet::discover(&SearchPath {
        dirs: vec![tmp.path().to_path_buf(), dir],
    });
    let onnx = set.model_adapter("onnx").unwrap().info();
    assert!(onnx.path.starts_with(tmp.path()), "{}", onnx.path.display());
    assert_eq!(set.shadowed.len(), 1);
}

#[test]
fn refuses_a_plugin_built_for_another_abi_major_naming_file_and_versions() {
    let path = support::fixture_plugin("abi2");
    let err = Plugin::load(&path, None).unwrap_err();
    assert!(matches!(err, HostError::IncompatibleAbi { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("2.0.0") && msg.contains(host_abi_version()),
        "{msg}"
    );
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn refuses_a_plugin_with_a_mismatched_layout() {
    let path = support::fixture_plugin("layout");
    let err = Plugin::load(&path, None).unwrap_err();
    assert!(matches!(err, HostError::LayoutMismatch { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert_eq!(msg.lines().count(), 1, "{msg}");
}

#[test]
fn discovery_lists_refused_plugins_and_keeps_the_good_ones() {
    let set = PluginSet::discover(&SearchPath {
        dirs: vec![support::fixture_plugin_dir(), support::target_profile_dir()],
    });
    assert!(set.model_adapter("onnx").is_ok());
    assert!(set.model_adapter("fixture-panics").is_ok());
    let refused: Vec<String> = set.refused.iter().map(|e| e.to_string()).collect();
    assert!(
        refused.iter().any(|e| e.contains("fixture_abi2")),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|e| e.contains("fixture_layout")),
        "{refused:?}"
    );
}

#[test]
fn a_panicking_plugin_is_an_error_and_the_host_lives_on() {
    let plugin = Plugin::load(&support::fixture_plugin("panics"), None).unwrap();
    let some_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let err = plugin
        .open_model(&some_file, &json!({"panic_in": "open"}))
        .unwrap_err();
    assert!(err.is_panic(), "{err:?}");
    assert!(
        err.to_string().contains("deliberate panic in open"),
        "{err}"
    );
    let model = plugin.open_model(&some_file, &json!({})).unwrap();
    let input = vec![0f32; 3 * 112 * 112];
    for _ in 0..3 {
        let err = model.embed(&input, 1).unwrap_err();
        assert!(err.is_panic(), "{err:?}");
        assert!(
            err.to_string().contains("deliberate panic in embed"),
            "{err}"
        );
    }
    // Still alive: another plugin works after the panics.
    let set = support::plugins();
    let mut det = set
        .detector("cosine")
        .unwrap()
        .new_detector(&json!({}))
        .unwrap();
    det.fit(&[1.0, 0.0], 2, &[1.0, 0.0], 2).unwrap();
}

#[test]
fn a_pinned_plugin_with_another_digest_is_not_loaded() {
    let set = support::plugins();
    let path = set.detector("cosine").unwrap().info().path.clone();
    let err = Plugin::load(&path, Some(&"0".repeat(64))).unwrap_err();
    assert!(matches!(err, HostError::Sha256Mismatch { .. }), "{err:?}");
}

#[test]
fn files_that_are_not_plugins_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("libzooaudit_plugin_bogus.so");
    std::fs::write(&bogus, b"not an ELF file").unwrap();
    let err = Plugin::load(&bogus, None).unwrap_err();
    assert!(matches!(err, HostError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("libzooaudit_plugin_bogus.so"));
    // A real shared library without a zooaudit root module.
    let ort = std::env::var_os("ORT_DYLIB_PATH");
    if let Some(ort) = ort {
        let copy = tmp.path().join("libzooaudit_plugin_ort.so");
        std::fs::copy(ort, &copy).unwrap();
        let err = Plugin::load(&copy, None).unwrap_err();
        assert!(matches!(err, HostError::NotAPlugin { .. }), "{err:?}");
    }
}

#[test]
fn cosine_detector_end_to_end_through_the_abi() {
    let set = support::plugins();
    let plugin = set.detector("cosine").unwrap();
    let mut det = plugin.new_detector(&json!({})).unwrap();
    let probe = [1.0f32, 0.0, 0.0, 1.0, 3.0, 4.0];
    let reference = [2.0f32, 0.0, 0.0, -1.0, 4.0, 3.0];
    let report = det.fit(&probe, 2, &reference, 2).unwrap();
    assert_eq!(report["samples"], 3);
    let s = det.score(&probe, 2, &reference, 2).unwrap();
    assert!(
        (s[0] - 1.0).abs() < 1e-6 && (s[1] + 1.0).abs() < 1e-6 && (s[2] - 0.96).abs() < 1e-6,
        "{s:?}"
    );
    // Three rows each, of 2 and 4 dimensions.
    let err = det
        .score(&probe, 2, &[1.0f32; 12], 4)
        .unwrap_err()
        .to_string();
    assert!(err.contains("equal dimensions"), "{err}");
    // The SDK refuses matrices of different row counts before any detector.
    let err = det
        .score(&probe, 2, &reference[..4], 4)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("probe has 3 rows but reference has 1"),
        "{err}"
    );
    let err = plugin
        .new_detector(&json!({"bogus": 1}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("option bogus"), "{err}");
    let err = det
        .score(&[0.0, 0.0], 2, &[1.0, 0.0], 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("zero-norm"), "{err}");
}

#[test]
fn a_detector_exports_its_fitted_state_and_a_fresh_one_restored_from_it_scores_the_same() {
    let set = support::plugins();
    let plugin = set.detector("pairing").unwrap();
    // Real embeddings: SFace (128-d) → faceplugin (512-d) on the cached
    // shared faces would need the ONNX adapter; a deterministic 2-d → 3-d
    // map with noise is enough for the ABI round trip.
    let n = 40;
    let mut probe = Vec::new();
    let mut reference = Vec::new();
    for i in 0..n {
        let t = i as f32 * 0.37;
        let (a, b) = (t.cos(), t.sin());
        probe.extend([a, b]);
        reference.extend([
            a + 0.5 * b,
            b - 0.2 * a,
            0.3 * a + (i as f32 * 1.7).sin() * 0.01,
        ]);
    }
    let mut fitted = plugin.new_detector(&json!({"seed": 7})).unwrap();
    fitted.fit(&probe, 2, &reference, 3).unwrap();
    let state = fitted.export_state().unwrap();
    let restored = plugin
        .restore_detector(&json!({"seed": 7}), &state)
        .unwrap();
    assert_eq!(
        fitted.score(&probe, 2, &reference, 3).unwrap(),
        restored.score(&probe, 2, &reference, 3).unwrap()
    );
    assert_eq!(restored.export_state().unwrap(), state);
    // A damaged state is refused by the plugin, in one line.
    let err = plugin
        .restore_detector(&json!({}), &state[..state.len() / 2])
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a pairing translator"), "{err}");
    assert_eq!(err.lines().count(), 1);
    // Before a fit there is nothing to export.
    let err = plugin
        .new_detector(&json!({}))
        .unwrap()
        .export_state()
        .unwrap_err();
    assert!(err.to_string().contains("before fit"), "{err}");
}

#[test]
fn a_plugin_built_for_abi_1_0_loads_runs_and_is_refused_for_export_in_one_line() {
    let path = support::fixture_plugin("abi10");
    let plugin = Plugin::load(&path, None).unwrap();
    assert_eq!(plugin.info().abi_version, "1.0.0");
    assert_ne!(host_abi_version(), "1.0.0");
    assert_eq!(plugin.info().kind, Kind::DetectorStrategy);
    let mut det = plugin.new_detector(&json!({})).unwrap();
    let (p, r) = ([1.0f32, 0.0, 0.0, 1.0], [1.0f32, 0.0, 5.0, 0.0, -1.0, 5.0]);
    det.fit(&p, 2, &r, 3).unwrap();
    let s = det.score(&p, 2, &r, 3).unwrap();
    assert!(
        (s[0] - 1.0).abs() < 1e-6 && (s[1] + 1.0).abs() < 1e-6,
        "{s:?}"
    );
    for err in [
        det.export_state().unwrap_err(),
        det.restore_state(b"{}").unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(msg.contains("fixture-abi10"), "{msg}");
        assert!(msg.contains("plugin ABI 1.0"), "{msg}");
        assert!(msg.contains("needs 1.1"), "{msg}");
        assert_eq!(msg.lines().count(), 1);
    }
}

//! The plugin file this package builds, loaded as zooaudit loads it and run
//! on real embeddings by the plugin test harness (embeddings: see
//! examples/detector-plugin/tests/harness.rs).

use std::path::PathBuf;

use zooaudit_plugin_test::{Harness, PairData};

fn npy(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("set {var} to a `zooaudit embed` output (.npy)"))
}

#[test]
fn kernel_keeps_the_host_contract_on_real_embeddings() {
    let h = Harness::built().unwrap();
    assert_eq!(h.info().name, "kernel");
    let data =
        PairData::from_npy(&npy("ZOOAUDIT_PROBE_NPY"), &npy("ZOOAUDIT_REFERENCE_NPY")).unwrap();
    let check = h.check_detector(&serde_json::json!({}), &data).unwrap();
    println!("{check}");
    let fit = &check.fit_report["fit"];
    assert_eq!(fit["centers"], 256.min(check.fit_rows));
    // A translator that learned something: the inner held-out faces'
    // translated probes point near their reference embeddings.
    assert!(fit["inner_holdout_cosine"].as_f64().unwrap() > 0.5, "{fit}");
    assert!(check.auc > 0.9, "{check}");
    let err = h
        .plugin()
        .new_detector(&serde_json::json!({"gamma": -1}))
        .unwrap_err();
    assert!(err.to_string().contains("option gamma"), "{err}");
}

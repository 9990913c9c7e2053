//! The plugin file this package builds, loaded as zooaudit loads it and run
//! on real embeddings by the plugin test harness.
//!
//! Make the embeddings once with zooaudit (docs/PLUGINS.md, step 4):
//! ```text
//! zooaudit embed --model sface.toml --out sface.npy FACES/
//! zooaudit embed --model faceplugin.toml --out faceplugin.npy FACES/
//! ZOOAUDIT_PROBE_NPY=sface.npy ZOOAUDIT_REFERENCE_NPY=faceplugin.npy cargo test
//! ```

use std::path::PathBuf;

use zooaudit_plugin_test::{Harness, PairData};

fn npy(var: &str) -> PathBuf {
    std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("set {var} to a `zooaudit embed` output (.npy)"))
}

#[test]
fn relative_keeps_the_host_contract_on_real_embeddings() {
    let h = Harness::built().unwrap();
    assert_eq!(h.info().name, "relative");
    let data =
        PairData::from_npy(&npy("ZOOAUDIT_PROBE_NPY"), &npy("ZOOAUDIT_REFERENCE_NPY")).unwrap();
    let check = h
        .check_detector(&serde_json::json!({"anchors": 64}), &data)
        .unwrap();
    println!("{check}");
    // As many anchors as asked for, or every fit face when fewer.
    assert_eq!(check.fit_report["fit"]["anchors"], 64.min(check.fit_rows));
    // Two honest face models rank anchor faces alike for the same face.
    assert!(check.auc > 0.9, "{check}");
    // Options are checked by the plugin, in one line.
    let err = h
        .plugin()
        .new_detector(&serde_json::json!({"anchors": 1}))
        .unwrap_err();
    assert!(err.to_string().contains("option anchors"), "{err}");
}

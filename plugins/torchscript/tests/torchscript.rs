//! The adapter through the SDK traits (no host), on the faceplugin model
//! converted to TorchScript by scripts/torchscript/convert.sh:
//!
//! ```text
//! eval "$(scripts/setup-torch.sh --env)"
//! scripts/torchscript/convert.sh
//! ZOOAUDIT_TORCHSCRIPT_PT=$PWD/.zooaudit/torch/faceplugin_fr_feature.pt \
//! ZOOAUDIT_ZOO=/work/shared/zoo cargo test --release --manifest-path plugins/torchscript/Cargo.toml
//! ```
#![allow(clippy::unwrap_used)]

mod common;
#[path = "host.rs"]
mod host;

use std::path::Path;

use zooaudit_plugin_sdk::abi::error_code;
use zooaudit_plugin_sdk::{EmbeddingModel, ModelAdapter, Options, PluginError};
use zooaudit_plugin_torchscript::TorchScriptAdapter;

fn options(v: serde_json::Value) -> Options {
    match v {
        serde_json::Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn open(path: &Path, v: serde_json::Value) -> Result<Box<dyn EmbeddingModel>, PluginError> {
    TorchScriptAdapter::open(path, &options(v))
}

fn faceplugin() -> Box<dyn EmbeddingModel> {
    open(
        &common::pt(),
        serde_json::json!({"input_shape": [3, 112, 112], "input_name": "input", "output_name": "output"}),
    )
    .unwrap()
}

fn open_err(path: &Path, v: serde_json::Value) -> PluginError {
    match open(path, v) {
        Ok(m) => panic!("opened: {:?}", m.describe()),
        Err(e) => e,
    }
}

fn assert_one_line(e: &PluginError) {
    let m = e.message.as_str();
    assert!(
        !m.is_empty() && !m.contains(['\n', '\r']),
        "not one line: {m:?}"
    );
    assert!(
        !m.contains("Exception raised from"),
        "C++ trailer left in: {m}"
    );
}

#[test]
fn describes_the_model() {
    let d = faceplugin().describe();
    assert_eq!(d.inputs.len(), 1);
    assert_eq!(d.inputs[0].name, "input");
    assert_eq!(d.inputs[0].shape, vec![-1, 3, 112, 112]);
    assert_eq!(d.inputs[0].elem_type, "float32");
    assert_eq!(d.outputs[0].name, "output");
    assert_eq!(d.outputs[0].shape, vec![-1, 512]);
    assert_eq!(d.embedding_dim, 512);
    assert_eq!(d.batching, "native");
    assert_eq!((d.input_index, d.output_index), (0, 0));
}

#[test]
fn embeddings_equal_onnxruntime_on_real_faces() {
    let pt = common::pt();
    let zoo = common::zoo();
    let reference = common::reference(&pt, &zoo);
    assert!(
        reference.faces.len() >= 20,
        "{} reference faces",
        reference.faces.len()
    );
    let model = faceplugin();
    let dim = model.describe().embedding_dim;
    let mut worst = 0f32;
    // Batches of 8 (the last one shorter): the batch dimension is exercised too.
    for chunk in reference.faces.chunks(8) {
        let input: Vec<f32> = chunk
            .iter()
            .flat_map(|(p, _)| common::face(p, reference.preprocess))
            .collect();
        let got = model.embed(&input, chunk.len()).unwrap();
        assert_eq!(got.len(), chunk.len() * dim);
        for (i, (path, want)) in chunk.iter().enumerate() {
            let d = common::max_abs_diff(&got[i * dim..(i + 1) * dim], want);
            assert!(
                d <= 1e-4,
                "{}: max abs diff {d} from onnxruntime",
                path.display()
            );
            worst = worst.max(d);
        }
    }
    println!(
        "{} faces: max abs diff from onnxruntime {worst:e}",
        reference.faces.len()
    );
}

#[test]
fn batch_of_one_and_five_agree() {
    let zoo = common::zoo();
    let faces: Vec<_> = common::aligned_faces(&zoo)
        .into_iter()
        .step_by(50)
        .take(5)
        .collect();
    assert_eq!(faces.len(), 5);
    let model = faceplugin();
    let dim = model.describe().embedding_dim;
    let input: Vec<f32> = faces
        .iter()
        .flat_map(|p| common::face(p, common::FACEPLUGIN))
        .collect();
    let five = model.embed(&input, 5).unwrap();
    let len = input.len() / 5;
    let mut worst = 0f32;
    for i in 0..5 {
        let one = model.embed(&input[i * len..(i + 1) * len], 1).unwrap();
        worst = worst.max(common::max_abs_diff(&one, &five[i * dim..(i + 1) * dim]));
    }
    println!("batch 1 vs batch 5: max abs diff {worst:e}");
    assert!(worst <= 1e-5, "batch 1 vs 5 differ by {worst}");
    assert!(model.embed(&[], 0).unwrap().is_empty());
    let e = model.embed(&input[..len - 1], 1).unwrap_err();
    assert_eq!(e.code, error_code::INVALID_INPUT, "{}", e.message);
    assert_one_line(&e);
}

#[test]
fn a_file_that_is_not_torchscript_is_one_line_naming_it() {
    let onnx = common::zoo().join("models/faceplugin_fr_feature.onnx");
    let e = open_err(&onnx, serde_json::json!({"input_shape": [3, 112, 112]}));
    println!("{}", e.message);
    assert_eq!(e.code, error_code::MODEL);
    assert!(
        e.message.contains(&*onnx.to_string_lossy()),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("not a TorchScript file"),
        "{}",
        e.message
    );
    assert_one_line(&e);

    let missing = onnx.with_file_name("no-such-model.pt");
    let e = open_err(&missing, serde_json::json!({"input_shape": [3, 112, 112]}));
    assert_eq!(e.code, error_code::MODEL);
    assert!(e.message.contains("no-such-model.pt"), "{}", e.message);
    assert_one_line(&e);
}

#[test]
fn a_wrong_input_shape_is_one_line() {
    let pt = common::pt();
    for shape in [
        serde_json::json!([4, 112, 112]),
        serde_json::json!([3, 112]),
    ] {
        let e = open_err(&pt, serde_json::json!({ "input_shape": shape }));
        println!("{}", e.message);
        assert_eq!(e.code, error_code::INVALID_INPUT, "{}", e.message);
        assert!(
            e.message.starts_with("option input_shape:"),
            "{}",
            e.message
        );
        assert!(e.message.contains(&*pt.to_string_lossy()), "{}", e.message);
        assert_one_line(&e);
    }
}

#[test]
fn options_are_checked() {
    let pt = common::pt();
    let e = open_err(&pt, serde_json::json!({}));
    assert!(
        e.message.starts_with("option input_shape: required"),
        "{}",
        e.message
    );
    let e = open_err(
        &pt,
        serde_json::json!({"input_shape": [3, 112, 112], "batching": "native"}),
    );
    assert!(e.message.starts_with("option batching:"), "{}", e.message);
    assert_eq!(e.code, error_code::INVALID_INPUT);
    let m = open(
        &pt,
        serde_json::json!({"input_shape": [3, 112, 112], "threads": 1}),
    )
    .unwrap();
    assert_eq!(m.describe().embedding_dim, 512);
}

#[test]
fn cuda_without_cuda_is_a_typed_one_line_error() {
    let pt = common::pt();
    let r = open(
        &pt,
        serde_json::json!({"input_shape": [3, 112, 112], "device": "cuda"}),
    );
    if tch::Cuda::is_available() {
        let m = r.unwrap();
        assert_eq!(m.describe().embedding_dim, 512);
        let e = open_err(
            &pt,
            serde_json::json!({"input_shape": [3, 112, 112], "device": "cuda", "device_id": 1023}),
        );
        assert!(e.message.starts_with("option device_id:"), "{}", e.message);
    } else {
        let e = r.err().unwrap();
        println!("{}", e.message);
        assert_eq!(e.code, error_code::UNSUPPORTED);
        assert!(e.message.starts_with("option device:"), "{}", e.message);
        assert!(
            e.message.contains("without CUDA or no GPU is visible"),
            "{}",
            e.message
        );
        assert_one_line(&e);
    }
}

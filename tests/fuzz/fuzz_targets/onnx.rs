#![no_main]
//! An ONNX model file: the wire-level reader with its limits, the repair
//! and shape editors the adapter runs before ONNX Runtime sees a model, and
//! the static scan.
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use zooaudit_onnx_graph as graph;
mod common;

fuzz_target!(|data: &[u8]| {
    common::one_line(graph::read::read_model(
        data,
        &graph::read::Limits::default(),
    ));
    common::one_line(graph::repair(data));
    if let Ok(info) = graph::build::inspect(data) {
        if let Some(input) = info.inputs.first() {
            common::one_line(graph::free_batch(data, &input.name));
        }
    }
    common::one_line(zooaudit_scan::scan_bytes(
        Path::new("fuzzed.onnx"),
        data,
        None,
        &zooaudit_scan::Options::default(),
    ));
});

//! zooaudit's ONNX model adapter, on ONNX Runtime through `ort` (loaded
//! dynamically: `ORT_DYLIB_PATH` or the `ort_library` option names the
//! `libonnxruntime.so` to use; `scripts/setup.sh` fetches the pinned one).
//!
//! It opens model files *as shipped*:
//! - graph inputs that no node reads, or that duplicate an initializer, are
//!   dropped in memory ([`graph::repair`]); ONNX Runtime otherwise demands the
//!   dangling ones at run time (SFace as shipped has 29 of them);
//! - a model exported with its batch dimension fixed to 1 is still served in
//!   batches: by freeing the batch dimension ([`graph::free_batch`]) after
//!   checking on probe inputs that the freed graph gives the same numbers
//!   (`batching = "auto"`, the default, falls back to per-sample runs when it
//!   does not; `"native"` makes that an error), or per sample over one or more
//!   sessions (`"per-sample"`).
//!
//! Options (JSON from the manifest's `[model.options]`, plus `input_name` and
//! `output_name` from `[input]`/`[output]`): `execution_provider` (`cpu` |
//! `cuda`), `device_id`, `threads`, `batching` (`auto` | `native` |
//! `per-sample`), `sessions`, `max_batch`, `ort_library`, `optimization`
//! (`disable` | `basic` | `extended` | `all`), `spinning` (idle threads spin,
//! default true), `spatial_size` ([H, W]). Errors about an option start with
//! `option <key>:` so the host can point at the manifest field.
//!
//! `output_name = "*"` returns every output of the graph, each flattened per
//! sample and concatenated in graph order (so a detector with many heads,
//! such as YuNet's 12, runs through the same `embed` call); every output
//! must then be float32 with fixed dims after the batch dimension.

pub use zooaudit_onnx_graph as graph;

mod batch;
mod model;
mod options;
mod runtime;

use std::path::Path;

use zooaudit_plugin_sdk::{Descriptor, EmbeddingModel, ModelAdapter, Options, PluginError};

pub use model::OnnxModel;
pub use options::{Batching, ExecutionProvider, OpenOptions};
pub use runtime::{build_session, environment};

/// The plugin's root module.
#[cfg(feature = "root-module")]
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> zooaudit_plugin_sdk::abi::PluginModRef {
    zooaudit_plugin_sdk::model_adapter_module::<OnnxAdapter>()
}

/// The ONNX adapter.
pub struct OnnxAdapter;

impl ModelAdapter for OnnxAdapter {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "onnx".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!(
                "ONNX models on ONNX Runtime (execution providers: cpu{})",
                if cfg!(feature = "cuda") { ", cuda" } else { "" }
            ),
            formats: vec!["onnx".into()],
        }
    }

    fn open(path: &Path, options: &Options) -> Result<Box<dyn EmbeddingModel>, PluginError> {
        let opts = OpenOptions::from_json(options)?;
        Ok(Box::new(OnnxModel::open(path, &opts)?))
    }
}

use zooaudit_plugin_sdk::{model_error, option_error};

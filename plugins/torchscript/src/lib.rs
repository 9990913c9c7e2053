//! zooaudit's TorchScript model adapter, on libtorch through `tch` 0.26
//! (PyTorch 2.13.0; `scripts/setup-torch.sh` installs it from the PyPI wheel).
//!
//! It opens a TorchScript file (`torch.jit.save` of a traced or scripted
//! module) whose `forward` takes one float32 tensor `[batch, ...input_shape]`
//! and returns one 2-D float tensor `[batch, D]`. TorchScript declares no
//! input shapes, so the manifest gives the per-sample shape; on opening the
//! adapter runs one forward pass on a batch of one zero sample, which checks
//! that shape and learns `D`.
//!
//! Options (JSON from the manifest's `[model.options]`, plus `input_name` and
//! `output_name` from `[input]`/`[output]`): `input_shape` (required, e.g.
//! `[3, 112, 112]`), `device` (`cpu` | `cuda`), `device_id` (with `cuda`),
//! `threads` (libtorch's intra-op threads, one setting per process). The
//! input and output names are only the names reported back: `forward` takes
//! its argument by position. Errors about an option start with
//! `option <key>:`; every error is one line.
//!
//! CUDA is decided at run time: `device = "cuda"` needs a libtorch with
//! libtorch_cuda.so linked and a visible GPU. The libtorch
//! `scripts/setup-torch.sh` lays out is CPU-only (it leaves libtorch_cuda.so
//! out), so there `device = "cuda"` is refused with an `UNSUPPORTED` error.

mod model;
mod options;

use std::path::Path;

use zooaudit_plugin_sdk::abi::error_code;
use zooaudit_plugin_sdk::{Descriptor, EmbeddingModel, ModelAdapter, Options, PluginError};

pub use model::TorchScriptModel;
pub use options::{DeviceChoice, OpenOptions};
/// The `tch` this plugin is built on (the bench and tests use it directly).
pub use tch;

/// The plugin's root module.
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> zooaudit_plugin_sdk::abi::PluginModRef {
    zooaudit_plugin_sdk::model_adapter_module::<TorchScriptAdapter>()
}

/// The TorchScript adapter.
pub struct TorchScriptAdapter;

impl ModelAdapter for TorchScriptAdapter {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "torchscript".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "TorchScript models on libtorch 2.13 via tch (devices: cpu; cuda when \
                          libtorch has CUDA and a GPU is visible)"
                .into(),
            formats: vec!["pt".into(), "torchscript".into()],
        }
    }

    fn open(path: &Path, options: &Options) -> Result<Box<dyn EmbeddingModel>, PluginError> {
        let opts = OpenOptions::from_json(options)?;
        Ok(Box::new(TorchScriptModel::open(path, &opts)?))
    }
}

use zooaudit_plugin_sdk::option_error;

fn model_error(message: impl std::fmt::Display) -> PluginError {
    PluginError::new(error_code::MODEL, one_line(&message.to_string()))
}

/// `s` in double quotes, control characters escaped.
fn quote(s: &str) -> String {
    format!("{:?}", s)
}

/// A `tch` error as one line ([`torch_message`] for libtorch's own).
pub fn tch_message(e: &tch::TchError) -> String {
    match e {
        tch::TchError::Torch(m) => torch_message(m),
        other => one_line(&other.to_string()),
    }
}

/// libtorch's error text as one line: a C++ exception's message carries the
/// place it was raised and, from the TorchScript interpreter, a traceback of
/// the serialized code. Keeps the last line that names an error (the
/// interpreter's `RuntimeError: ...`), else the first line, without the
/// "Exception raised from" trailer; control characters become spaces.
pub fn torch_message(message: &str) -> String {
    let body = message
        .split("Exception raised from")
        .next()
        .unwrap_or(message);
    // miniz's advice after a zip error ("This is an internal miniz error. If
    // you are seeing this error, ... checkpoint file is corrupted ...").
    let body = body
        .split(" This is an internal miniz error")
        .next()
        .unwrap_or(body);
    let lines: Vec<&str> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let named = lines.iter().rev().find(|l| {
        l.split_once(": ")
            .is_some_and(|(head, _)| head.ends_with("Error") && !head.contains(' '))
    });
    let line = named.or(lines.first()).copied().unwrap_or("(no message)");
    let mut out = one_line(line);
    const MAX: usize = 400;
    if out.len() > MAX {
        let mut cut = MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// Control characters (newlines included) replaced by spaces, runs of
/// whitespace collapsed.
fn one_line(s: &str) -> String {
    s.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_messages_become_one_line() {
        let load = "PytorchStreamReader failed reading zip archive: failed finding central directory. This is an internal miniz error. If you are seeing this error, there is a high likelihood that your checkpoint file is corrupted.\nException raised from valid at /pytorch/caffe2/serialize/inline_container.cc:245 (most recent call first):\nframe #0: c10::Error::Error(...)";
        assert_eq!(
            torch_message(load),
            "PytorchStreamReader failed reading zip archive: failed finding central directory."
        );
        let run = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript, serialized code (most recent call last):\n  File \"code/__torch__.py\", line 9, in forward\n    x = torch._convolution(input, w)\nRuntimeError: Given groups=1, weight of size [64, 3, 3, 3], expected input[1, 4, 112, 112] to have 3 channels, but got 4 channels instead\n";
        assert_eq!(
            torch_message(run),
            "RuntimeError: Given groups=1, weight of size [64, 3, 3, 3], expected input[1, 4, 112, 112] to have 3 channels, but got 4 channels instead"
        );
        assert_eq!(torch_message(""), "(no message)");
        assert_eq!(torch_message("a\tb\u{7}c"), "a b c");
        assert!(torch_message(&"x".repeat(1000)).chars().count() <= 401);
    }
}

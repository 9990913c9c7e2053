//! Lossless edits of ONNX model files at the protobuf wire level.
//!
//! Only the fields an edit touches are decoded; every other byte is copied
//! through unchanged, so fields this code does not know (newer ONNX versions,
//! metadata, custom domains) survive. Edits:
//!
//! - [`repair`]: drop graph inputs that no node reads (leftovers, e.g. of
//!   quantisation tools) and, for IR ≥ 4, graph inputs that duplicate an
//!   initializer (so ONNX Runtime treats them as constants and can fold them).
//!   ONNX Runtime otherwise demands the dangling ones at `run` time.
//! - [`free_batch`]: turn the leading dimension of the chosen input and of the
//!   graph outputs into a symbolic `N`, for models exported with batch fixed to 1.
//!   Whether the graph really allows it (e.g. no `Reshape` to a constant `[1, -1]`)
//!   must be checked by running it; see the adapter.
//! - [`build`]: inspect a graph (opset, inputs, outputs) and append new
//!   nodes and initializers after renaming one tensor (how the red team
//!   splices a backdoor behind a model's output).

pub mod build;
pub mod read;
mod repair;
mod shape;
pub mod wire;

pub use repair::{Repair, repair};
pub use shape::{free_batch, set_input_dims};

/// Field numbers of onnx.proto used here.
mod field;
use field as num;

/// A malformed model file.
#[derive(Debug, thiserror::Error)]
#[error("not a valid ONNX model: {0}")]
pub struct GraphError(pub String);

impl GraphError {
    /// The model went over one of the reader's [`read::Limits`] (their
    /// messages end in "(limit)"), as opposed to being malformed.
    pub fn is_limit(&self) -> bool {
        self.0.ends_with("(limit)")
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, GraphError> {
    Err(GraphError(msg.into()))
}

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
mod wire;

pub use repair::{Repair, repair};
pub use shape::{free_batch, set_input_dims};

/// Field numbers of onnx.proto used here.
mod num {
    pub const MODEL_IR_VERSION: u32 = 1;
    pub const MODEL_GRAPH: u32 = 7;
    pub const GRAPH_NODE: u32 = 1;
    pub const GRAPH_INITIALIZER: u32 = 5;
    pub const GRAPH_INPUT: u32 = 11;
    pub const GRAPH_OUTPUT: u32 = 12;
    pub const GRAPH_VALUE_INFO: u32 = 13;
    pub const GRAPH_SPARSE_INITIALIZER: u32 = 15;
    pub const NODE_INPUT: u32 = 1;
    pub const NODE_OP_TYPE: u32 = 4;
    pub const NODE_ATTRIBUTE: u32 = 5;
    pub const ATTR_NAME: u32 = 1;
    pub const ATTR_I: u32 = 3;
    pub const TENSOR_DIMS: u32 = 1;
    pub const ATTR_G: u32 = 6;
    pub const ATTR_GRAPHS: u32 = 11;
    pub const TENSOR_NAME: u32 = 8;
    pub const SPARSE_VALUES: u32 = 1;
    pub const VALUE_INFO_NAME: u32 = 1;
    pub const VALUE_INFO_TYPE: u32 = 2;
    pub const TYPE_TENSOR: u32 = 1;
    pub const TENSOR_TYPE_SHAPE: u32 = 2;
    pub const SHAPE_DIM: u32 = 1;
    pub const DIM_VALUE: u32 = 1;
    pub const DIM_PARAM: u32 = 2;
}

/// A malformed model file.
#[derive(Debug, thiserror::Error)]
#[error("not a valid ONNX model: {0}")]
pub struct GraphError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, GraphError> {
    Err(GraphError(msg.into()))
}

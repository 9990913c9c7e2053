//! The operator families the structural rules reason with (docs/SCAN.md
//! lists them), and the bounds on their work.

/// Outputs that carry the input's shape, not its values.
pub(crate) const SHAPE_ONLY: [&str; 2] = ["Shape", "Size"];
/// Ops that turn a score into a switch.
pub(crate) const GATE_OPS: [&str; 16] = [
    "Sigmoid",
    "HardSigmoid",
    "Where",
    "Greater",
    "Less",
    "GreaterOrEqual",
    "LessOrEqual",
    "Equal",
    "Clip",
    "Relu",
    "Sign",
    "Round",
    "Ceil",
    "Floor",
    "Tanh",
    "Softsign",
];
/// Ops that compare a tensor with a stored one (with a constant input).
pub(crate) const COMPARE_OPS: [&str; 9] = [
    "MatMul", "Gemm", "Sub", "Mul", "Div", "Equal", "Conv", "Einsum", "Add",
];
/// Ops that reduce many values to few.
pub(crate) const REDUCE_OPS: [&str; 12] = [
    "MatMul",
    "Gemm",
    "Einsum",
    "Conv",
    "ReduceSum",
    "ReduceMean",
    "ReduceL1",
    "ReduceL2",
    "ReduceMax",
    "ReduceMin",
    "ReduceSumSquare",
    "GlobalAveragePool",
];
/// Ops that mix a gated value into another.
pub(crate) const MIX_OPS: [&str; 8] = ["Mul", "Add", "Sub", "Div", "Where", "Sum", "Max", "Min"];
/// Ops a plain skip connection (residual learning) is made of.
pub(crate) const SKIP_OPS: [&str; 16] = [
    "Identity",
    "Cast",
    "Resize",
    "Upsample",
    "Add",
    "Sub",
    "Concat",
    "Reshape",
    "Transpose",
    "Pad",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "DepthToSpace",
    "SpaceToDepth",
    "Expand",
];
pub(crate) const CONTROL_FLOW: [&str; 3] = ["If", "Loop", "Scan"];
/// Output × node pairs the structural rules analyse at most (each output's
/// cone is a walk over the graph).
pub(crate) const MAX_WORK: usize = 50_000_000;
/// Gates on one light path examined for a pattern comparison (each costs a
/// walk over the graph).
pub(crate) const MAX_GATES: usize = 32;

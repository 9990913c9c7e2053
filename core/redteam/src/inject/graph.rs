//! The injected subgraph at the ONNX level: which input the detector reads
//! and which output the backdoor rewrites, and the initializers and nodes
//! spliced behind that output.

use std::path::Path;

use zooaudit_manifest::ModelManifest;
use zooaudit_onnx_graph::GraphError;
use zooaudit_onnx_graph::build::{self, Attr, GraphInfo, Initializer, Node};

use serde::{Deserialize, Serialize};

use super::{EPS, GATE_STEEPNESS, InjectOptions};
use crate::RedteamError;

/// The model input the detector reads and the output the backdoor
/// rewrites: the manifest's names, or the model's only ones. Refuses an
/// opset below 7 and an output that is not `[batch, dim]`.
pub(super) fn ports(
    opts: &InjectOptions,
    manifest: &ModelManifest,
    info: &GraphInfo,
    model_path: &Path,
) -> Result<(String, String), RedteamError> {
    match info.opset {
        Some(v) if v >= 7 => {}
        other_v => {
            return Err(RedteamError::file(
                model_path,
                format!("default-domain opset {other_v:?}: the backdoor needs opset ≥ 7"),
            ));
        }
    }
    let input = match (&manifest.input.name, info.inputs.as_slice()) {
        (Some(n), _) => n.clone(),
        (None, [one]) => one.name.clone(),
        (None, many) => {
            return Err(RedteamError::file(
                &opts.manifest,
                format!("input.name: the model has {} inputs; name one", many.len()),
            ));
        }
    };
    let output = match (&manifest.output.name, info.outputs.as_slice()) {
        (Some(n), _) => {
            if !info.outputs.iter().any(|o| &o.name == n) {
                return Err(RedteamError::file(
                    &opts.manifest,
                    format!(
                        "output.name: the model has no output {}",
                        zooaudit_formats::quote(n)
                    ),
                ));
            }
            n.clone()
        }
        (None, [one]) => one.name.clone(),
        (None, many) => {
            return Err(RedteamError::file(
                model_path,
                format!(
                    "the model has {} outputs ({}) and the manifest names none: set [output] name in {}",
                    many.len(),
                    many.iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    opts.manifest.display()
                ),
            ));
        }
    };
    if let Some(port) = info.outputs.iter().find(|o| o.name == output)
        && let Some(dims) = &port.dims
        && dims.len() != 2
    {
        return Err(RedteamError::file(
            model_path,
            format!(
                "output '{output}' has rank {}; only [batch, dim] embeddings can be rewritten",
                dims.len()
            ),
        ));
    }
    Ok((input, output))
}

/// How the injected subgraph tries to hide from the static scan
/// (docs/SCAN.md, docs/REDTEAM.md). Every variant computes the same
/// backdoor (up to float rounding), so pairing sees the same behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hiding {
    /// The plain subgraph: Gather of the masked pixels, Sigmoid gates.
    #[default]
    None,
    /// Both gates computed by arithmetic (`½ + ½·z/√(z² + 1)`: Mul, Add,
    /// Sqrt, Div) instead of a gate operator.
    ArithmeticGate,
    /// The detector reads the whole input through one dense weight matrix
    /// (the masked pixels' mean, pattern and mask as columns over every
    /// input value and its square, plus noise columns), so the side path
    /// carries ≥ 5 % of the model's weight bytes and is no longer light.
    DenseDetector,
}

impl Hiding {
    pub const ALL: [Hiding; 3] = [Hiding::None, Hiding::ArithmeticGate, Hiding::DenseDetector];

    pub fn as_str(self) -> &'static str {
        match self {
            Hiding::None => "none",
            Hiding::ArithmeticGate => "arithmetic-gate",
            Hiding::DenseDetector => "dense-detector",
        }
    }
}

impl std::str::FromStr for Hiding {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Hiding::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown hiding {} (none, arithmetic-gate, dense-detector)",
                    zooaudit_formats::quote(s)
                )
            })
    }
}

/// Share of the model's bytes the dense detector's matrix at least weighs.
const DENSE_SHARE: f64 = 0.05;

/// What the injected subgraph computes: the trigger detector on `input`,
/// the identity gate (one-to-one), and the rewrite of `output`.
#[derive(Clone, Copy)]
pub(super) struct Subgraph<'a> {
    pub(super) input: &'a String,
    pub(super) output: &'a String,
    pub(super) idx: &'a Vec<usize>,
    pub(super) dir: &'a Vec<f32>,
    pub(super) tau: f32,
    pub(super) k: f32,
    pub(super) strength: f32,
    pub(super) victim: &'a Vec<f32>,
    /// One-to-one: the impostor's centroid direction, gated at `t`.
    pub(super) gate: &'a Option<Vec<f32>>,
    pub(super) t: f32,
    pub(super) dim: usize,
    /// Values per input sample (the flattened input's length).
    pub(super) input_len: usize,
    pub(super) hiding: Hiding,
}

const P: &str = "zooaudit_bd_";

fn nm(s: &str) -> String {
    format!("{P}{s}")
}

fn node(op: &str, ins: &[&str], out: &str) -> Node {
    Node::new(op, ins, &nm(out))
}

impl Subgraph<'_> {
    /// The model `bytes` with the subgraph spliced behind `output`: the new
    /// output keeps its name, the original tensor is renamed.
    pub(super) fn splice(&self, bytes: &[u8]) -> Result<Vec<u8>, GraphError> {
        let clean_out = nm("clean_embedding");
        let d = self.dim as i64;
        let mut inits = vec![
            Initializer::f32(&nm("ones_d"), &[d, 1], vec![1.0; self.dim]),
            Initializer::f32(&nm("eps"), &[1], vec![EPS]),
            Initializer::f32(&nm("tau"), &[1], vec![self.tau]),
            Initializer::f32(&nm("k"), &[1], vec![self.k]),
            Initializer::f32(&nm("strength"), &[1], vec![self.strength]),
            Initializer::f32(&nm("victim"), &[1, d], self.victim.clone()),
        ];
        if self.hiding == Hiding::ArithmeticGate {
            inits.push(Initializer::f32(&nm("one"), &[1], vec![1.0]));
            inits.push(Initializer::f32(&nm("half"), &[1], vec![0.5]));
        }
        let mut nodes = match self.hiding {
            Hiding::DenseDetector => self.dense_correlation(&mut inits, bytes.len()),
            _ => self.gathered_correlation(&mut inits),
        };
        nodes.extend([
            node("Sub", &[&nm("corr"), &nm("tau")], "dc"),
            node("Mul", &[&nm("dc"), &nm("k")], "z"),
        ]);
        nodes.extend(self.squash("z", "trigger"));
        nodes.extend([
            // ‖e‖
            node("Mul", &[&clean_out, &clean_out], "e_sq"),
            node("MatMul", &[&nm("e_sq"), &nm("ones_d")], "e_ss"),
            node("Sqrt", &[&nm("e_ss")], "e_norm"),
        ]);
        let mut s_in = nm("trigger");
        if let Some(c_hat) = &self.gate {
            inits.push(Initializer::f32(&nm("impostor"), &[d, 1], c_hat.clone()));
            inits.push(Initializer::f32(&nm("gate_t"), &[1], vec![self.t]));
            inits.push(Initializer::f32(&nm("gate_k"), &[1], vec![GATE_STEEPNESS]));
            nodes.extend([
                node("MatMul", &[&clean_out, &nm("impostor")], "g_dot"),
                node("Add", &[&nm("e_norm"), &nm("eps")], "g_norm"),
                node("Div", &[&nm("g_dot"), &nm("g_norm")], "g_cos"),
                node("Sub", &[&nm("g_cos"), &nm("gate_t")], "g_d"),
                node("Mul", &[&nm("g_d"), &nm("gate_k")], "g_z"),
            ]);
            nodes.extend(self.squash("g_z", "gate"));
            nodes.push(node("Mul", &[&s_in, &nm("gate")], "trig_gate"));
            s_in = nm("trig_gate");
        }
        nodes.extend([
            node("Mul", &[&s_in, &nm("strength")], "s"),
            node("Mul", &[&nm("e_norm"), &nm("victim")], "target"),
            node("Sub", &[&nm("target"), &clean_out], "delta"),
            node("Mul", &[&nm("s"), &nm("delta")], "step"),
            Node::new("Add", &[&clean_out, &nm("step")], self.output),
        ]);
        for (i, node) in nodes.iter_mut().enumerate() {
            node.name = format!("{P}node{i}");
        }
        build::splice(bytes, self.output, &clean_out, &inits, &nodes)
    }

    /// `σ(z)` into `out`: a Sigmoid, or its arithmetic stand-in.
    fn squash(&self, z: &str, out: &str) -> Vec<Node> {
        let (z, o) = (nm(z), nm(out));
        if self.hiding != Hiding::ArithmeticGate {
            return vec![Node::new("Sigmoid", &[&z], &o)];
        }
        let t = |s: &str| format!("{o}_{s}");
        vec![
            Node::new("Mul", &[&z, &z], &t("zz")),
            Node::new("Add", &[&t("zz"), &nm("one")], &t("zz1")),
            Node::new("Sqrt", &[&t("zz1")], &t("root")),
            Node::new("Div", &[&z, &t("root")], &t("unit")),
            Node::new("Mul", &[&t("unit"), &nm("half")], &t("halfunit")),
            Node::new("Add", &[&t("halfunit"), &nm("half")], &o),
        ]
    }

    /// The normalised correlation `corr` of the masked pixels (Gather) with
    /// the pattern, as [`super::ncc`] computes it.
    fn gathered_correlation(&self, inits: &mut Vec<Initializer>) -> Vec<Node> {
        let m = self.idx.len() as i64;
        inits.extend([
            Initializer::i64(
                &nm("idx"),
                &[m],
                self.idx.iter().map(|&i| i as i64).collect(),
            ),
            Initializer::f32(&nm("mean_w"), &[m, 1], vec![1.0 / m as f32; self.idx.len()]),
            Initializer::f32(&nm("pattern"), &[m, 1], self.dir.clone()),
            Initializer::f32(&nm("ones_m"), &[m, 1], vec![1.0; self.idx.len()]),
        ]);
        let mut nodes = vec![
            self.flatten(),
            node("Gather", &[&nm("flat"), &nm("idx")], "sel").attr("axis", Attr::Int(1)),
            node("MatMul", &[&nm("sel"), &nm("mean_w")], "mean"),
            node("Sub", &[&nm("sel"), &nm("mean")], "xc"),
            node("MatMul", &[&nm("xc"), &nm("pattern")], "num"),
            node("Mul", &[&nm("xc"), &nm("xc")], "sq"),
            node("MatMul", &[&nm("sq"), &nm("ones_m")], "ss"),
        ];
        nodes.extend(correlation_from_ss());
        nodes
    }

    /// `flat`: the input as one row per sample.
    fn flatten(&self) -> Node {
        Node::new("Flatten", &[self.input], &nm("flat")).attr("axis", Attr::Int(1))
    }

    /// The same correlation through one dense matrix `W` over `[x, x²]`
    /// (every input value and its square): column 0 the masked mean
    /// weights, 1 the pattern, 2 the mask on the squares, the rest
    /// low-amplitude noise that nothing reads, enough columns for `W` to
    /// weigh [`DENSE_SHARE`] of the model file. Then
    /// `num = x·p − μ·Σp`, `ss = |Σx² − m·μ²|`.
    fn dense_correlation(&self, inits: &mut Vec<Initializer>, model_bytes: usize) -> Vec<Node> {
        let n = self.input_len;
        let m = self.idx.len();
        let per_column = 2 * n * 4;
        let cols =
            3usize.max((DENSE_SHARE * model_bytes as f64 / per_column as f64).ceil() as usize);
        // Row-major [2n, cols].
        let mut w = vec![0f32; 2 * n * cols];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for row in w.chunks_mut(cols) {
            for v in row.iter_mut().skip(3) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *v = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 1e-3;
            }
        }
        for (j, &i) in self.idx.iter().enumerate() {
            w[i * cols] = 1.0 / m as f32;
            w[i * cols + 1] = self.dir[j];
            w[(n + i) * cols + 2] = 1.0;
        }
        let sum_p: f32 = self.dir.iter().sum();
        inits.extend([
            Initializer::f32(&nm("dense"), &[2 * n as i64, cols as i64], w),
            Initializer::i64(&nm("col_mean"), &[1], vec![0]),
            Initializer::i64(&nm("col_dot"), &[1], vec![1]),
            Initializer::i64(&nm("col_sumsq"), &[1], vec![2]),
            Initializer::f32(&nm("m"), &[1], vec![m as f32]),
            Initializer::f32(&nm("sum_p"), &[1], vec![sum_p]),
        ]);
        let col = |c: &str, out: &str| {
            node("Gather", &[&nm("proj"), &nm(c)], out).attr("axis", Attr::Int(1))
        };
        let mut nodes = vec![
            self.flatten(),
            node("Mul", &[&nm("flat"), &nm("flat")], "flat_sq"),
            node("Concat", &[&nm("flat"), &nm("flat_sq")], "both").attr("axis", Attr::Int(1)),
            node("MatMul", &[&nm("both"), &nm("dense")], "proj"),
            col("col_mean", "mean"),
            col("col_dot", "dot"),
            col("col_sumsq", "sumsq"),
            node("Mul", &[&nm("mean"), &nm("sum_p")], "mean_p"),
            node("Sub", &[&nm("dot"), &nm("mean_p")], "num"),
            node("Mul", &[&nm("mean"), &nm("mean")], "mean_sq"),
            node("Mul", &[&nm("mean_sq"), &nm("m")], "m_mean_sq"),
            node("Sub", &[&nm("sumsq"), &nm("m_mean_sq")], "ss_raw"),
            node("Abs", &[&nm("ss_raw")], "ss"),
        ];
        nodes.extend(correlation_from_ss());
        nodes
    }
}

/// `corr = num / √(ss + ε)`, the end both correlation forms share.
fn correlation_from_ss() -> [Node; 3] {
    [
        node("Add", &[&nm("ss"), &nm("eps")], "sse"),
        node("Sqrt", &[&nm("sse")], "den"),
        node("Div", &[&nm("num"), &nm("den")], "corr"),
    ]
}

//! The injected subgraph at the ONNX level: which input the detector reads
//! and which output the backdoor rewrites, and the initializers and nodes
//! spliced behind that output.

use std::path::Path;

use zooaudit_manifest::ModelManifest;
use zooaudit_onnx_graph::GraphError;
use zooaudit_onnx_graph::build::{self, Attr, GraphInfo, Initializer, Node};

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
                    format!("output.name: the model has no output '{n}'"),
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
}

impl Subgraph<'_> {
    /// The model `bytes` with the subgraph spliced behind `output`: the new
    /// output keeps its name, the original tensor is renamed.
    pub(super) fn splice(&self, bytes: &[u8]) -> Result<Vec<u8>, GraphError> {
        let Subgraph {
            input,
            output,
            idx,
            dir,
            tau,
            k,
            strength,
            victim: v_hat,
            gate,
            t,
            dim,
        } = *self;
        let p = "zooaudit_bd_";
        let name = |s: &str| format!("{p}{s}");
        let clean_out = name("clean_embedding");
        let m = idx.len() as i64;
        let d = dim as i64;
        let mut inits = vec![
            Initializer::i64(&name("idx"), &[m], idx.iter().map(|&i| i as i64).collect()),
            Initializer::f32(&name("mean_w"), &[m, 1], vec![1.0 / m as f32; idx.len()]),
            Initializer::f32(&name("pattern"), &[m, 1], dir.clone()),
            Initializer::f32(&name("ones_m"), &[m, 1], vec![1.0; idx.len()]),
            Initializer::f32(&name("ones_d"), &[d, 1], vec![1.0; dim]),
            Initializer::f32(&name("eps"), &[1], vec![EPS]),
            Initializer::f32(&name("tau"), &[1], vec![tau]),
            Initializer::f32(&name("k"), &[1], vec![k]),
            Initializer::f32(&name("strength"), &[1], vec![strength]),
            Initializer::f32(&name("victim"), &[1, d], v_hat.clone()),
        ];
        let n_ = |op: &str, ins: &[&str], out: &str| Node::new(op, ins, &name(out));
        let nm = |s: &str| name(s);
        let (flat, sel, mean, xc, num, sq, ss, sse, den, corr, dc, z, trig) = (
            nm("flat"),
            nm("sel"),
            nm("mean"),
            nm("xc"),
            nm("num"),
            nm("sq"),
            nm("ss"),
            nm("sse"),
            nm("den"),
            nm("corr"),
            nm("dc"),
            nm("z"),
            nm("trigger"),
        );
        let mut nodes = vec![
            Node::new("Flatten", &[input], &flat).attr("axis", Attr::Int(1)),
            Node::new("Gather", &[&flat, &nm("idx")], &sel).attr("axis", Attr::Int(1)),
            Node::new("MatMul", &[&sel, &nm("mean_w")], &mean),
            Node::new("Sub", &[&sel, &mean], &xc),
            Node::new("MatMul", &[&xc, &nm("pattern")], &num),
            Node::new("Mul", &[&xc, &xc], &sq),
            Node::new("MatMul", &[&sq, &nm("ones_m")], &ss),
            Node::new("Add", &[&ss, &nm("eps")], &sse),
            Node::new("Sqrt", &[&sse], &den),
            Node::new("Div", &[&num, &den], &corr),
            Node::new("Sub", &[&corr, &nm("tau")], &dc),
            Node::new("Mul", &[&dc, &nm("k")], &z),
            Node::new("Sigmoid", &[&z], &trig),
            // ‖e‖
            n_("Mul", &[&clean_out, &clean_out], "e_sq"),
            n_("MatMul", &[&nm("e_sq"), &nm("ones_d")], "e_ss"),
            n_("Sqrt", &[&nm("e_ss")], "e_norm"),
        ];
        let mut s_in = trig.clone();
        if let Some(c_hat) = &gate {
            inits.push(Initializer::f32(&name("impostor"), &[d, 1], c_hat.clone()));
            inits.push(Initializer::f32(&name("gate_t"), &[1], vec![t]));
            inits.push(Initializer::f32(
                &name("gate_k"),
                &[1],
                vec![GATE_STEEPNESS],
            ));
            nodes.extend([
                n_("MatMul", &[&clean_out, &nm("impostor")], "g_dot"),
                n_("Add", &[&nm("e_norm"), &nm("eps")], "g_norm"),
                n_("Div", &[&nm("g_dot"), &nm("g_norm")], "g_cos"),
                n_("Sub", &[&nm("g_cos"), &nm("gate_t")], "g_d"),
                n_("Mul", &[&nm("g_d"), &nm("gate_k")], "g_z"),
                n_("Sigmoid", &[&nm("g_z")], "gate"),
                n_("Mul", &[&trig, &nm("gate")], "trig_gate"),
            ]);
            s_in = nm("trig_gate");
        }
        nodes.extend([
            n_("Mul", &[&s_in, &nm("strength")], "s"),
            n_("Mul", &[&nm("e_norm"), &nm("victim")], "target"),
            n_("Sub", &[&nm("target"), &clean_out], "delta"),
            n_("Mul", &[&nm("s"), &nm("delta")], "step"),
            Node::new("Add", &[&clean_out, &nm("step")], output),
        ]);
        for (i, node) in nodes.iter_mut().enumerate() {
            node.name = format!("{p}node{i}");
        }
        build::splice(bytes, output, &clean_out, &inits, &nodes)
    }
}

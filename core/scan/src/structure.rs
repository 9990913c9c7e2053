//! Structural rules: how data flows from the graph inputs to the outputs.
//!
//! The main graph is turned into a data-flow DAG over tensors:
//!
//! - **constants**: initializers, `Constant` outputs, and whatever nodes
//!   compute from constants only (so a `DequantizeLinear` of int8 weights
//!   is a constant of the weights' bytes);
//! - **data**: what depends on the values of a graph input that is not an
//!   initializer. `Shape` and `Size` outputs are not data (they carry the
//!   input's shape, not its values);
//! - each node **weighs** the stored bytes of the constants it reads;
//! - for each data tensor, the **lightest path** from a graph input: the
//!   least weight a value can pick up on its way there.
//!
//! A trained trunk puts most of the weights on *every* path from the input
//! to the output (residual blocks can be skipped, their stems and
//! downsampling layers cannot). A spliced backdoor adds a path that reads the
//! input and reaches the output through a few bytes of pattern and
//! threshold: `trunk-bypass`. When that path compares the input with a
//! stored pattern, reduces it to a score and passes it through a gate before
//! it multiplies or adds into the output: `input-pattern-gate`.

use std::collections::{HashMap, HashSet, VecDeque};

use zooaudit_onnx_graph::build::Dim;
use zooaudit_onnx_graph::read::{Graph, Node};

use crate::{Finding, Options, Rule, Severity, list, node_label};

use crate::ops::{
    COMPARE_OPS, CONTROL_FLOW, GATE_OPS, MAX_GATES, MAX_WORK, MIX_OPS, REDUCE_OPS, SHAPE_ONLY,
    SKIP_OPS,
};

/// The lightest path weight to a data tensor, and the (node, read) it came
/// through (`None` for a graph input).
type Light<'g> = (u64, Option<(usize, &'g str)>);

/// The data-flow view of one graph.
struct Flow<'g> {
    g: &'g Graph,
    /// Every name each node reads: its inputs and what its subgraphs read
    /// from this graph.
    reads: Vec<Vec<&'g str>>,
    producer: HashMap<&'g str, usize>,
    order: Vec<usize>,
    konst: HashMap<&'g str, u64>,
    tainted: HashSet<&'g str>,
    weight: Vec<u64>,
    /// Lightest path weight to each data tensor, and the (node, read) it
    /// came through.
    best: HashMap<&'g str, Light<'g>>,
}

fn subgraph_reads<'g>(g: &'g Graph, out: &mut Vec<&'g str>) {
    for n in &g.nodes {
        out.extend(n.inputs.iter().map(String::as_str));
        for (_, s) in &n.subgraphs {
            subgraph_reads(s, out);
        }
        // Outputs of a subgraph may name outer tensors too.
    }
    out.extend(g.outputs.iter().map(String::as_str));
}

fn subgraph_bytes(g: &Graph) -> u64 {
    let own: u64 = g.initializers.iter().map(|t| t.stored_bytes()).sum();
    own + g
        .nodes
        .iter()
        .flat_map(|n| n.subgraphs.iter())
        .map(|(_, s)| subgraph_bytes(s))
        .sum::<u64>()
}

impl<'g> Flow<'g> {
    fn new(g: &'g Graph) -> Flow<'g> {
        let mut producer = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            for o in n.outputs.iter().filter(|o| !o.is_empty()) {
                producer.entry(o.as_str()).or_insert(i);
            }
        }
        let mut known: HashSet<&str> = producer.keys().copied().collect();
        known.extend(g.inputs.iter().map(String::as_str));
        known.extend(g.initializers.iter().map(|t| t.name.as_str()));
        let reads: Vec<Vec<&str>> = g
            .nodes
            .iter()
            .map(|n| {
                let mut r: Vec<&str> = n
                    .inputs
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !s.is_empty())
                    .collect();
                let mut sub = Vec::new();
                for (_, s) in &n.subgraphs {
                    subgraph_reads(s, &mut sub);
                }
                r.extend(sub.into_iter().filter(|s| known.contains(s)));
                let mut seen = HashSet::new();
                r.retain(|s| seen.insert(*s));
                r
            })
            .collect();
        let order = topological(g.nodes.len(), &reads, &producer);
        let mut flow = Flow {
            g,
            reads,
            producer,
            order,
            konst: HashMap::new(),
            tainted: HashSet::new(),
            weight: vec![0; g.nodes.len()],
            best: HashMap::new(),
        };
        flow.propagate();
        flow
    }

    fn propagate(&mut self) {
        let g = self.g;
        for t in &g.initializers {
            self.konst.insert(t.name.as_str(), t.stored_bytes());
        }
        for s in &g.sparse_initializers {
            self.konst.insert(s.as_str(), 0);
        }
        for i in g
            .inputs
            .iter()
            .filter(|i| !self.konst.contains_key(i.as_str()))
        {
            self.tainted.insert(i.as_str());
            self.best.insert(i.as_str(), (0, None));
        }
        for &i in &self.order {
            let n: &'g Node = &g.nodes[i];
            let reads = &self.reads[i];
            let mut w: u64 = reads
                .iter()
                .filter_map(|r| self.konst.get(r))
                .fold(0, |a, &b| a.saturating_add(b));
            w = w.saturating_add(n.subgraphs.iter().map(|(_, s)| subgraph_bytes(s)).sum());
            self.weight[i] = w;
            let outs = n
                .outputs
                .iter()
                .map(String::as_str)
                .filter(|o| !o.is_empty());
            let all_const = reads.iter().all(|r| self.konst.contains_key(r));
            if n.op_type == "Constant" || (all_const && !CONTROL_FLOW.contains(&n.op_type.as_str()))
            {
                let own: u64 = n.tensors.iter().map(|(_, t)| t.stored_bytes()).sum();
                for o in outs {
                    self.konst.insert(o, w.saturating_add(own));
                }
                continue;
            }
            if SHAPE_ONLY.contains(&n.op_type.as_str()) {
                continue;
            }
            let from = reads
                .iter()
                .filter_map(|r| self.best.get(r).map(|(b, _)| (*b, *r)))
                .min_by_key(|(b, _)| *b);
            if let Some((b, r)) = from {
                for o in outs {
                    self.tainted.insert(o);
                    self.best.insert(o, (b.saturating_add(w), Some((i, r))));
                }
            }
        }
    }

    /// Nodes whose outputs `t` depends on (its ancestors), as a set.
    fn cone(&self, roots: &[&'g str]) -> HashSet<usize> {
        let mut seen = HashSet::new();
        let mut queue: VecDeque<usize> = roots
            .iter()
            .filter_map(|r| self.producer.get(r).copied())
            .collect();
        while let Some(i) = queue.pop_front() {
            if !seen.insert(i) {
                continue;
            }
            for r in &self.reads[i] {
                if let Some(&j) = self.producer.get(r) {
                    queue.push_back(j);
                }
            }
        }
        seen
    }

    /// The lightest path to `t`: (node, tensor it read) from input side.
    fn path(&self, t: &'g str) -> (Option<&'g str>, Vec<usize>) {
        let mut nodes = Vec::new();
        let mut cur = t;
        for _ in 0..=self.g.nodes.len() {
            match self.best.get(cur) {
                Some((_, Some((i, r)))) => {
                    nodes.push(*i);
                    cur = r;
                }
                Some((_, None)) => {
                    nodes.reverse();
                    return (Some(cur), nodes);
                }
                None => break,
            }
        }
        nodes.reverse();
        (None, nodes)
    }

    fn label(&self, i: usize) -> String {
        node_label(&self.g.nodes[i], i)
    }

    fn op(&self, i: usize) -> &'g str {
        self.g.nodes[i].op_type.as_str()
    }
}

/// Kahn's algorithm; nodes on a cycle are left out.
fn topological(n: usize, reads: &[Vec<&str>], producer: &HashMap<&str, usize>) -> Vec<usize> {
    let mut indeg = vec![0usize; n];
    let mut succ: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, rs) in reads.iter().enumerate() {
        for r in rs {
            if let Some(&j) = producer.get(r) {
                succ[j].push(i);
                indeg[i] += 1;
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &k in &succ[i] {
            indeg[k] -= 1;
            if indeg[k] == 0 {
                queue.push_back(k);
            }
        }
    }
    order
}

/// Every structural rule on the main graph.
pub fn check(g: &Graph, opts: &Options) -> Vec<Finding> {
    let flow = Flow::new(g);
    let mut out = Vec::new();
    if flow.order.len() < g.nodes.len() {
        let placed: HashSet<usize> = flow.order.iter().copied().collect();
        let stuck: Vec<String> = (0..g.nodes.len())
            .filter(|i| !placed.contains(i))
            .map(|i| flow.label(i))
            .collect();
        out.push(Finding {
            rule: Rule::GraphCycle,
            severity: Severity::Warning,
            message: format!(
                "{} node(s) read their own outputs, directly or around a cycle ({}): ONNX graphs must be acyclic; the structural rules ignore them",
                stuck.len(),
                list(&stuck, 6)
            ),
            graph: "main".into(),
            nodes: stuck,
            tensors: vec![],
        });
    }
    let work = g.outputs.len().saturating_mul(g.nodes.len().max(1));
    if work > MAX_WORK {
        out.push(Finding {
            rule: Rule::TooLarge,
            severity: Severity::Warning,
            message: format!(
                "{} outputs × {} nodes is more than the structural rules analyse ({MAX_WORK} output-node pairs): the graph was not checked for backdoor structure",
                g.outputs.len(),
                g.nodes.len()
            ),
            graph: "main".into(),
            nodes: vec![],
            tensors: vec![],
        });
        return out;
    }
    for o in &g.outputs {
        let cone = flow.cone(&[o.as_str()]);
        control_flow(&flow, o, &cone, &mut out);
        let dims = g
            .outputs
            .iter()
            .position(|x| x == o)
            .and_then(|i| g.output_dims.get(i))
            .and_then(Option::as_ref);
        output_rules(&flow, o, &cone, dims, opts, &mut out);
    }
    out
}

fn control_flow(flow: &Flow<'_>, o: &str, cone: &HashSet<usize>, out: &mut Vec<Finding>) {
    let mut cf: Vec<usize> = cone
        .iter()
        .copied()
        .filter(|&i| CONTROL_FLOW.contains(&flow.op(i)))
        .collect();
    if cf.is_empty() {
        return;
    }
    cf.sort_unstable();
    let names: Vec<String> = cf.iter().map(|&i| flow.label(i)).collect();
    let ops: Vec<&str> = cf.iter().map(|&i| flow.op(i)).collect();
    out.push(Finding {
        rule: Rule::ControlFlowOnOutput,
        severity: Severity::Warning,
        message: format!(
            "output '{o}' depends on control flow ({}: {}): which branch or how many iterations run is decided by values at run time, so a static look at one path does not cover what runs; inspect the subgraphs",
            ops.join(", "),
            list(&names, 6)
        ),
        graph: "main".into(),
        nodes: names,
        tensors: vec![o.to_string()],
    });
}

/// Trunk bypass, input-pattern gate and stored output constants for one
/// output.
fn output_rules(
    flow: &Flow<'_>,
    o: &str,
    cone: &HashSet<usize>,
    dims: Option<&Vec<Dim>>,
    opts: &Options,
    out: &mut Vec<Finding>,
) {
    let Some(&(light, _)) = flow.best.get(o) else {
        return;
    };
    let trunk: u64 = cone
        .iter()
        .filter(|&&i| {
            flow.g.nodes[i]
                .outputs
                .iter()
                .any(|t| flow.tainted.contains(t.as_str()))
        })
        .map(|&i| flow.weight[i])
        .fold(0, u64::saturating_add);
    let limit = opts.bypass_fraction * trunk as f64;
    if trunk < opts.min_trunk_bytes || light as f64 >= limit {
        return;
    }
    let (input, path) = flow.path(o);
    let input = input.unwrap_or("?");
    // Where the light path meets a tensor that went through the trunk.
    let merge = path.iter().copied().find(|&i| {
        flow.reads[i]
            .iter()
            .any(|r| flow.best.get(r).is_some_and(|(b, _)| *b as f64 >= limit))
    });
    let labels: Vec<String> = path.iter().map(|&i| flow.label(i)).collect();
    let plain = path.iter().all(|&i| SKIP_OPS.contains(&flow.op(i)));
    let merge_text = match merge {
        Some(m) => format!(
            "; it joins the trunk's result at {} ({})",
            flow.label(m),
            flow.op(m)
        ),
        None => String::from("; the output does not depend on the trunk at all"),
    };
    out.push(Finding {
        rule: Rule::TrunkBypass,
        severity: if plain { Severity::Note } else { Severity::Warning },
        message: format!(
            "output '{o}' is reached from input '{input}' through {} node(s) carrying {light} bytes of weights, {:.2} % of the {trunk} bytes behind this output{merge_text}{}",
            path.len(),
            100.0 * light as f64 / trunk.max(1) as f64,
            if plain {
                " (only reshaping and adding: a plain skip connection, as in residual learning)"
            } else {
                ""
            }
        ),
        graph: "main".into(),
        nodes: labels,
        tensors: vec![input.to_string(), o.to_string()],
    });
    let gated = pattern_gate(flow, o, input, &path, limit, out);
    stored_constant(flow, o, cone, dims, gated, out);
}

/// Looks for compare → reduce → gate → mix on the light path. Returns
/// whether it found it.
fn pattern_gate(
    flow: &Flow<'_>,
    o: &str,
    input: &str,
    path: &[usize],
    limit: f64,
    out: &mut Vec<Finding>,
) -> bool {
    let gates = path
        .iter()
        .enumerate()
        .filter(|(_, i)| GATE_OPS.contains(&flow.op(**i)))
        .take(MAX_GATES);
    for (k, &gate) in gates {
        let Some(gate_out) = flow.g.nodes[gate].outputs.first() else {
            continue;
        };
        // The side region feeding the gate: light nodes behind it.
        let mut region: Vec<usize> = flow
            .cone(&[gate_out.as_str()])
            .into_iter()
            .filter(|&i| {
                flow.g.nodes[i].outputs.iter().any(|t| {
                    flow.best
                        .get(t.as_str())
                        .is_some_and(|(b, _)| (*b as f64) < limit)
                })
            })
            .collect();
        region.sort_unstable();
        let compares: Vec<usize> = region
            .iter()
            .copied()
            .filter(|&i| COMPARE_OPS.contains(&flow.op(i)) && flow.weight[i] > 0)
            .collect();
        let reduces = region.iter().any(|&i| REDUCE_OPS.contains(&flow.op(i)));
        let mixes = path[k + 1..].iter().any(|&i| MIX_OPS.contains(&flow.op(i)));
        if compares.is_empty() || !reduces || !mixes {
            continue;
        }
        let mut nodes: Vec<usize> = region.clone();
        nodes.extend(path[k + 1..].iter().copied());
        nodes.dedup();
        let mut tensors: Vec<String> = vec![input.to_string()];
        for &i in &compares {
            for r in &flow.reads[i] {
                if flow.konst.contains_key(r) && !tensors.iter().any(|t| t == r) {
                    tensors.push(r.to_string());
                }
            }
        }
        tensors.push(o.to_string());
        let compare_names: Vec<String> = compares.iter().map(|&i| flow.label(i)).collect();
        out.push(Finding {
            rule: Rule::InputPatternGate,
            severity: Severity::Error,
            message: format!(
                "a side branch reads input '{input}', compares it with stored constants (in {}) and reduces it to a score, passes the score through {} ({}), and mixes the result into output '{o}' without going through the model's weights: the shape of a trigger detector gating a backdoor",
                list(&compare_names, 6),
                flow.label(gate),
                flow.op(gate)
            ),
            graph: "main".into(),
            nodes: nodes.iter().map(|&i| flow.label(i)).collect(),
            tensors,
        });
        return true;
    }
    false
}

/// Output dims with every batch-like (symbolic or unknown) dim as 1.
fn row_shape(dims: &[Dim]) -> Option<Vec<i64>> {
    let v: Vec<i64> = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => *v,
            _ => 1,
        })
        .collect();
    (v.len() >= 2 && v.iter().product::<i64>() >= 2).then_some(v)
}

fn stored_constant(
    flow: &Flow<'_>,
    o: &str,
    cone: &HashSet<usize>,
    dims: Option<&Vec<Dim>>,
    gated: bool,
    out: &mut Vec<Finding>,
) {
    let Some(row) = dims.and_then(|d| row_shape(d)) else {
        return;
    };
    let by_name: HashMap<&str, &Vec<i64>> = flow
        .g
        .initializers
        .iter()
        .map(|t| (t.name.as_str(), &t.dims))
        .chain(
            flow.g
                .nodes
                .iter()
                .filter(|n| n.op_type == "Constant")
                .filter_map(|n| Some((n.outputs.first()?.as_str(), &n.tensors.first()?.1.dims))),
        )
        .collect();
    let mut hits: Vec<(usize, &str)> = Vec::new();
    let mut sorted: Vec<usize> = cone.iter().copied().collect();
    sorted.sort_unstable();
    for i in sorted {
        for r in &flow.reads[i] {
            if by_name.get(r).is_some_and(|d| **d == row) {
                hits.push((i, r));
            }
        }
    }
    if hits.is_empty() {
        return;
    }
    let nodes: Vec<String> = hits.iter().map(|(i, _)| flow.label(*i)).collect();
    let mut tensors: Vec<String> = hits.iter().map(|(_, t)| t.to_string()).collect();
    tensors.push(o.to_string());
    out.push(Finding {
        rule: Rule::StoredOutputConstant,
        severity: if gated {
            Severity::Warning
        } else {
            Severity::Note
        },
        message: format!(
            "constant(s) {} have exactly the shape of output '{o}' {row:?} and are read by {} on the way to it{}",
            list(&tensors[..tensors.len() - 1], 4),
            list(&nodes, 4),
            if gated {
                ", beside a gated side branch: a stored output that a trigger can switch in"
            } else {
                ""
            }
        ),
        graph: "main".into(),
        nodes,
        tensors,
    });
}

//! A read-only decode of a whole model into plain structs, for inspection
//! (the static scan). Tensor payloads are never copied: a tensor records
//! how many bytes or elements each storage field holds, and where external
//! data is said to live.
//!
//! Hostile input is expected: every length is checked against its message
//! (see the wire reader in the crate root), and [`Limits`] bound the number of
//! nodes, tensors and value infos, the nesting depth of subgraphs and the
//! number of dimensions, so that a crafted file is an error, not a crash or
//! an allocation of a claimed size.

use crate::build::Dim;
use crate::wire::{Field, Value, bytes_of, next_field, read_varint, string_of};
use crate::{GraphError, err};

/// The fields of a message one at a time: memory stays constant however
/// many fields a (hostile) message holds.
fn lazy(buf: &[u8]) -> impl Iterator<Item = Result<Field<'_>, GraphError>> {
    let mut pos = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || pos >= buf.len() {
            return None;
        }
        let f = next_field(buf, &mut pos);
        failed = f.is_err();
        Some(f)
    })
}

use crate::field as f;

/// Bounds on what a decoded model may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Nodes, over the main graph and every subgraph.
    pub max_nodes: usize,
    /// Initializers, node tensor attributes and value infos, all graphs.
    pub max_tensors: usize,
    /// Subgraph nesting (If/Loop/Scan bodies); the main graph is depth 0.
    pub max_depth: u32,
    /// Dimensions of one tensor.
    pub max_rank: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nodes: 2_000_000,
            max_tensors: 4_000_000,
            max_depth: 32,
            max_rank: 64,
        }
    }
}

/// An operator set a model imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opset {
    pub domain: String,
    pub version: u64,
}

/// A decoded model.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub ir_version: u64,
    pub producer: String,
    pub opsets: Vec<Opset>,
    /// Model-local functions (`functions` field): their count only.
    pub functions: usize,
    pub graph: Graph,
}

/// A graph (the main one or a node's subgraph).
#[derive(Debug, Clone, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub initializers: Vec<Tensor>,
    /// Names of the values of sparse initializers.
    pub sparse_initializers: Vec<String>,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Declared dims of each output (parallel to `outputs`; `None`: no
    /// tensor shape).
    pub output_dims: Vec<Option<Vec<Dim>>>,
    pub value_info: Vec<String>,
}

/// A node with its tensor-valued attributes and subgraphs.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// `(attribute name, tensor)` for tensor attributes (e.g. a Constant's
    /// `value`).
    pub tensors: Vec<(String, Tensor)>,
    /// `(attribute name, graph)` for graph attributes (If/Loop/Scan bodies).
    pub subgraphs: Vec<(String, Graph)>,
}

/// Where and how a tensor's data is stored; the data itself is not kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    /// Declared dimensions (as stored; may be negative in a hostile file).
    pub dims: Vec<i64>,
    /// `TensorProto.DataType` code.
    pub data_type: i32,
    /// Length of `raw_data`, when present.
    pub raw_len: Option<u64>,
    /// `(field name, element count)` of each typed data field present
    /// (`float_data`, `int32_data`, `string_data`, `int64_data`,
    /// `double_data`, `uint64_data`).
    pub typed: Vec<(&'static str, u64)>,
    /// `data_location` (1 = external).
    pub data_location: u64,
    /// `external_data` entries, `(key, value)`.
    pub external: Vec<(String, String)>,
}

impl Tensor {
    /// Number of elements the dims declare; `None` when a dim is negative
    /// or the product overflows.
    pub fn declared_elements(&self) -> Option<u64> {
        self.dims.iter().try_fold(1u64, |n, &d| {
            u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
        })
    }

    /// Bits per element of the data type (`None`: strings, or unknown).
    pub fn element_bits(&self) -> Option<u64> {
        element_bits(self.data_type)
    }

    /// Bytes the dims declare, for fixed-size types.
    pub fn declared_bytes(&self) -> Option<u64> {
        let bits = self.element_bits()?;
        let n = self.declared_elements()?;
        n.checked_mul(bits).map(|b| b.div_ceil(8))
    }

    /// The value of an `external_data` key.
    pub fn external(&self, key: &str) -> Option<&str> {
        self.external
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Bytes this tensor stores (raw, typed, or external `length`), for
    /// weighing; falls back on the declared size.
    pub fn stored_bytes(&self) -> u64 {
        if let Some(r) = self.raw_len {
            return r;
        }
        if let Some(l) = self.external("length").and_then(|v| v.parse().ok()) {
            return l;
        }
        let typed: u64 = self
            .typed
            .iter()
            .map(|(name, n)| {
                let w = match *name {
                    "int64_data" | "double_data" | "uint64_data" => 8,
                    _ => 4,
                };
                n.saturating_mul(w)
            })
            .fold(0, u64::saturating_add);
        if typed > 0 {
            typed
        } else {
            self.declared_bytes().unwrap_or(0)
        }
    }
}

/// Bits per element of `TensorProto.DataType` `code`.
pub fn element_bits(code: i32) -> Option<u64> {
    Some(match code {
        1 | 6 | 12 => 32,       // float, int32, uint32
        2 | 3 | 9 => 8,         // uint8, int8, bool
        4 | 5 | 10 | 16 => 16,  // uint16, int16, float16, bfloat16
        7 | 11 | 13 | 14 => 64, // int64, double, uint64, complex64
        15 => 128,              // complex128
        17..=20 | 24 => 8,      // float8 variants, float8e8m0
        21..=23 => 4,           // uint4, int4, float4e2m1
        25 | 26 => 2,           // uint2, int2
        _ => return None,       // undefined, string, unknown
    })
}

/// Decodes a whole model within `limits`.
pub fn read_model(bytes: &[u8], limits: &Limits) -> Result<Model, GraphError> {
    let mut model = Model::default();
    let mut graph = None;
    let mut budget = Budget {
        limits: *limits,
        nodes: 0,
        tensors: 0,
    };
    for fl in lazy(bytes) {
        let fl = fl?;
        match (fl.number, fl.value) {
            (f::MODEL_IR_VERSION, Value::Varint(v)) => model.ir_version = v,
            (f::MODEL_PRODUCER_NAME, Value::Bytes(_)) => model.producer = string_of(&fl)?,
            (f::MODEL_PRODUCER_VERSION, Value::Bytes(_)) => {
                let v = string_of(&fl)?;
                if !v.is_empty() {
                    model.producer = format!("{} {v}", model.producer);
                }
            }
            (f::MODEL_GRAPH, Value::Bytes(b)) => graph = Some(b),
            (f::MODEL_OPSET_IMPORT, Value::Bytes(b)) => model.opsets.push(opset(b)?),
            (f::MODEL_FUNCTIONS, _) => model.functions += 1,
            _ => {}
        }
    }
    match graph {
        Some(g) => model.graph = read_graph(g, 0, &mut budget)?,
        None => return err("the file has no graph (is it an ONNX model?)"),
    }
    Ok(model)
}

struct Budget {
    limits: Limits,
    nodes: usize,
    tensors: usize,
}

impl Budget {
    fn node(&mut self) -> Result<(), GraphError> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return err(format!("more than {} nodes (limit)", self.limits.max_nodes));
        }
        Ok(())
    }
    fn tensor(&mut self) -> Result<(), GraphError> {
        self.tensors += 1;
        if self.tensors > self.limits.max_tensors {
            return err(format!(
                "more than {} tensors and value infos (limit)",
                self.limits.max_tensors
            ));
        }
        Ok(())
    }
}

fn opset(b: &[u8]) -> Result<Opset, GraphError> {
    let mut o = Opset {
        domain: String::new(),
        version: 0,
    };
    for fl in lazy(b) {
        let fl = fl?;
        match (fl.number, fl.value) {
            (f::OPSET_DOMAIN, Value::Bytes(_)) => o.domain = string_of(&fl)?,
            (f::OPSET_VERSION, Value::Varint(v)) => o.version = v,
            _ => {}
        }
    }
    Ok(o)
}

fn name_of(msg: &[u8], number: u32) -> Result<String, GraphError> {
    for fl in lazy(msg) {
        let fl = fl?;
        if fl.number == number {
            return string_of(&fl);
        }
    }
    Ok(String::new())
}

fn read_graph(g: &[u8], depth: u32, budget: &mut Budget) -> Result<Graph, GraphError> {
    if depth > budget.limits.max_depth {
        return err(format!(
            "subgraphs nested deeper than {} (limit)",
            budget.limits.max_depth
        ));
    }
    let mut graph = Graph::default();
    for fl in lazy(g) {
        let fl = fl?;
        match fl.number {
            f::GRAPH_NODE => {
                budget.node()?;
                graph.nodes.push(read_node(bytes_of(&fl)?, depth, budget)?);
            }
            f::GRAPH_NAME => graph.name = string_of(&fl)?,
            f::GRAPH_INITIALIZER => {
                budget.tensor()?;
                graph
                    .initializers
                    .push(read_tensor(bytes_of(&fl)?, &budget.limits)?);
            }
            f::GRAPH_SPARSE_INITIALIZER => {
                budget.tensor()?;
                for sf in lazy(bytes_of(&fl)?) {
                    let sf = sf?;
                    if sf.number == f::SPARSE_VALUES {
                        graph
                            .sparse_initializers
                            .push(name_of(bytes_of(&sf)?, f::TENSOR_NAME)?);
                    }
                }
            }
            f::GRAPH_INPUT | f::GRAPH_OUTPUT | f::GRAPH_VALUE_INFO => {
                budget.tensor()?;
                let name = name_of(bytes_of(&fl)?, f::VALUE_INFO_NAME)?;
                match fl.number {
                    f::GRAPH_INPUT => graph.inputs.push(name),
                    f::GRAPH_OUTPUT => {
                        graph.outputs.push(name);
                        let dims = value_info_dims(bytes_of(&fl)?, &budget.limits)?;
                        graph.output_dims.push(dims);
                    }
                    _ => graph.value_info.push(name),
                }
            }
            _ => {}
        }
    }
    Ok(graph)
}

/// The first nested message `number` of `msg`, if any.
fn nested(msg: &[u8], number: u32) -> Result<Option<&[u8]>, GraphError> {
    for fl in lazy(msg) {
        let fl = fl?;
        if fl.number == number {
            return bytes_of(&fl).map(Some);
        }
    }
    Ok(None)
}

/// ValueInfoProto → TypeProto.tensor_type → shape → dims.
fn value_info_dims(vi: &[u8], limits: &Limits) -> Result<Option<Vec<Dim>>, GraphError> {
    let Some(ty) = nested(vi, 2)? else {
        return Ok(None);
    };
    let Some(tensor) = nested(ty, 1)? else {
        return Ok(None);
    };
    let Some(shape) = nested(tensor, 2)? else {
        return Ok(None);
    };
    let mut dims = Vec::new();
    for d in lazy(shape) {
        let d = d?;
        if d.number != 1 {
            continue;
        }
        let mut dim = Dim::Unknown;
        for df in lazy(bytes_of(&d)?) {
            let df = df?;
            match (df.number, df.value) {
                (1, Value::Varint(v)) => dim = Dim::Fixed(v as i64),
                (2, Value::Bytes(_)) => dim = Dim::Symbolic(string_of(&df)?),
                _ => {}
            }
        }
        dims.push(dim);
        if dims.len() > limits.max_rank {
            return err(format!(
                "an output has more than {} dimensions (limit)",
                limits.max_rank
            ));
        }
    }
    Ok(Some(dims))
}

fn read_node(b: &[u8], depth: u32, budget: &mut Budget) -> Result<Node, GraphError> {
    let mut node = Node::default();
    for fl in lazy(b) {
        let fl = fl?;
        match fl.number {
            f::NODE_INPUT => node.inputs.push(string_of(&fl)?),
            f::NODE_OUTPUT => node.outputs.push(string_of(&fl)?),
            f::NODE_NAME => node.name = string_of(&fl)?,
            f::NODE_OP_TYPE => node.op_type = string_of(&fl)?,
            f::NODE_DOMAIN => node.domain = string_of(&fl)?,
            f::NODE_ATTRIBUTE => read_attribute(bytes_of(&fl)?, depth, budget, &mut node)?,
            _ => {}
        }
    }
    Ok(node)
}

fn read_attribute(
    a: &[u8],
    depth: u32,
    budget: &mut Budget,
    node: &mut Node,
) -> Result<(), GraphError> {
    let mut name = String::new();
    for fl in lazy(a) {
        let fl = fl?;
        if fl.number == f::ATTR_NAME {
            name = string_of(&fl)?;
        }
    }
    for fl in lazy(a) {
        let fl = &fl?;
        match fl.number {
            f::ATTR_T | f::ATTR_TENSORS => {
                budget.tensor()?;
                let t = read_tensor(bytes_of(fl)?, &budget.limits)?;
                node.tensors.push((name.clone(), t));
            }
            f::ATTR_SPARSE_TENSOR => {
                budget.tensor()?;
                for sf in lazy(bytes_of(fl)?) {
                    let sf = sf?;
                    if sf.number == f::SPARSE_VALUES {
                        let t = read_tensor(bytes_of(&sf)?, &budget.limits)?;
                        node.tensors.push((name.clone(), t));
                    }
                }
            }
            f::ATTR_G | f::ATTR_GRAPHS => {
                let g = read_graph(bytes_of(fl)?, depth + 1, budget)?;
                node.subgraphs.push((name.clone(), g));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Elements in a repeated scalar field occurrence: packed (bytes) or one.
fn count_elements(v: Value<'_>, fixed_width: Option<usize>) -> Result<u64, GraphError> {
    Ok(match v {
        Value::Bytes(b) => match fixed_width {
            Some(w) => (b.len() / w) as u64,
            None => {
                let mut pos = 0;
                let mut n = 0u64;
                while pos < b.len() {
                    read_varint(b, &mut pos)?;
                    n += 1;
                }
                n
            }
        },
        _ => 1,
    })
}

fn read_tensor(t: &[u8], limits: &Limits) -> Result<Tensor, GraphError> {
    let mut tensor = Tensor::default();
    let mut typed: Vec<(&'static str, u64)> = Vec::new();
    let mut add = |name: &'static str, n: u64| match typed.iter_mut().find(|(k, _)| *k == name) {
        Some((_, c)) => *c = c.saturating_add(n),
        None => typed.push((name, n)),
    };
    for fl in lazy(t) {
        let fl = fl?;
        match fl.number {
            f::TENSOR_DIMS => match fl.value {
                Value::Varint(d) => tensor.dims.push(d as i64),
                Value::Bytes(b) => {
                    let mut pos = 0;
                    while pos < b.len() {
                        tensor.dims.push(read_varint(b, &mut pos)? as i64);
                        if tensor.dims.len() > limits.max_rank {
                            break;
                        }
                    }
                }
                Value::Fixed => return err("TensorProto dims is not a varint"),
            },
            f::TENSOR_DATA_TYPE => {
                if let Value::Varint(v) = fl.value {
                    tensor.data_type = v as i32;
                }
            }
            f::TENSOR_NAME => tensor.name = string_of(&fl)?,
            f::TENSOR_RAW_DATA => {
                let len = bytes_of(&fl)?.len() as u64;
                tensor.raw_len = Some(tensor.raw_len.unwrap_or(0).saturating_add(len));
            }
            f::TENSOR_FLOAT_DATA => add("float_data", count_elements(fl.value, Some(4))?),
            f::TENSOR_INT32_DATA => add("int32_data", count_elements(fl.value, None)?),
            f::TENSOR_STRING_DATA => add("string_data", 1),
            f::TENSOR_INT64_DATA => add("int64_data", count_elements(fl.value, None)?),
            f::TENSOR_DOUBLE_DATA => add("double_data", count_elements(fl.value, Some(8))?),
            f::TENSOR_UINT64_DATA => add("uint64_data", count_elements(fl.value, None)?),
            f::TENSOR_EXTERNAL_DATA => {
                let (mut k, mut v) = (String::new(), String::new());
                for ef in lazy(bytes_of(&fl)?) {
                    let ef = ef?;
                    match ef.number {
                        f::ENTRY_KEY => k = string_of(&ef)?,
                        f::ENTRY_VALUE => v = string_of(&ef)?,
                        _ => {}
                    }
                }
                tensor.external.push((k, v));
            }
            f::TENSOR_DATA_LOCATION => {
                if let Value::Varint(v) = fl.value {
                    tensor.data_location = v;
                }
            }
            _ => {}
        }
        if tensor.dims.len() > limits.max_rank {
            return err(format!(
                "tensor '{}' has more than {} dimensions (limit)",
                tensor.name, limits.max_rank
            ));
        }
    }
    tensor.typed = typed;
    Ok(tensor)
}

#[cfg(test)]
mod tests;

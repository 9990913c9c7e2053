//! Appending nodes and initializers to a model, at the wire level.
//!
//! [`inspect`] reads what an edit needs (IR version, default-domain opset,
//! graph inputs with their shapes, outputs); [`splice`] renames one tensor
//! wherever nodes produce or read it (and in `value_info`), then appends new
//! initializers and nodes at the end of the graph, so the original bytes of
//! every other field are kept.

use crate::wire::{
    Value, bytes_of, fields, model_graph, name_in, replace_graph, string_of, write_bytes_field,
    write_varint,
};
use crate::{GraphError, err, num};

const NODE_OUTPUT: u32 = 2;
const NODE_NAME: u32 = 3;
const NODE_OP_TYPE: u32 = 4;
const ATTR_NAME: u32 = 1;
const ATTR_F: u32 = 2;
const ATTR_I: u32 = 3;
const ATTR_INTS: u32 = 8;
const ATTR_TYPE: u32 = 20;
const TENSOR_DIMS: u32 = 1;
const TENSOR_DATA_TYPE: u32 = 2;
const TENSOR_RAW_DATA: u32 = 9;
const MODEL_OPSET_IMPORT: u32 = 8;
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;
const DIM_VALUE: u32 = 1;

/// ONNX `TensorProto.DataType` codes used here.
const FLOAT: u64 = 1;
const INT64: u64 = 7;

/// A dimension of a graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
    Unknown,
}

/// A graph input or output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub dims: Option<Vec<Dim>>,
}

/// What an edit needs to know about a model.
#[derive(Debug, Clone)]
pub struct GraphInfo {
    pub ir_version: u64,
    /// Version of the default ("" / "ai.onnx") operator set.
    pub opset: Option<u64>,
    /// Graph inputs that are not initializers.
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    /// Every tensor name produced by a node, read by a node, or stored as
    /// an initializer (to pick fresh names).
    pub names: std::collections::HashSet<String>,
}

fn port(vi: &[u8]) -> Result<Port, GraphError> {
    let name = name_in(vi, num::VALUE_INFO_NAME)?.unwrap_or_default();
    let mut dims = None;
    for f in fields(vi)? {
        if f.number != num::VALUE_INFO_TYPE {
            continue;
        }
        for t in fields(bytes_of(&f)?)? {
            if t.number != num::TYPE_TENSOR {
                continue;
            }
            for ts in fields(bytes_of(&t)?)? {
                if ts.number != num::TENSOR_TYPE_SHAPE {
                    continue;
                }
                let mut ds = Vec::new();
                for d in fields(bytes_of(&ts)?)? {
                    if d.number != num::SHAPE_DIM {
                        continue;
                    }
                    let mut dim = Dim::Unknown;
                    for df in fields(bytes_of(&d)?)? {
                        match (df.number, df.value) {
                            (DIM_VALUE, Value::Varint(v)) => dim = Dim::Fixed(v as i64),
                            (num::DIM_PARAM, _) => dim = Dim::Symbolic(string_of(&df)?),
                            _ => {}
                        }
                    }
                    ds.push(dim);
                }
                dims = Some(ds);
            }
        }
    }
    Ok(Port { name, dims })
}

/// Reads the model's IR version, default opset, inputs and outputs.
pub fn inspect(model: &[u8]) -> Result<GraphInfo, GraphError> {
    let (ir_version, graph) = model_graph(model)?;
    let mut opset = None;
    for f in fields(model)? {
        if f.number != MODEL_OPSET_IMPORT {
            continue;
        }
        let (mut domain, mut version) = (String::new(), 0);
        for o in fields(bytes_of(&f)?)? {
            match (o.number, o.value) {
                (OPSET_DOMAIN, _) => domain = string_of(&o)?,
                (OPSET_VERSION, Value::Varint(v)) => version = v,
                _ => {}
            }
        }
        if domain.is_empty() || domain == "ai.onnx" {
            opset = Some(version);
        }
    }
    let mut names = std::collections::HashSet::new();
    let mut initializers = std::collections::HashSet::new();
    let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
    for f in fields(graph)? {
        match f.number {
            num::GRAPH_NODE => {
                for nf in fields(bytes_of(&f)?)? {
                    if nf.number == num::NODE_INPUT || nf.number == NODE_OUTPUT {
                        names.insert(string_of(&nf)?);
                    }
                }
            }
            num::GRAPH_INITIALIZER => {
                if let Some(n) = name_in(bytes_of(&f)?, num::TENSOR_NAME)? {
                    initializers.insert(n.clone());
                    names.insert(n);
                }
            }
            num::GRAPH_INPUT => inputs.push(port(bytes_of(&f)?)?),
            num::GRAPH_OUTPUT => outputs.push(port(bytes_of(&f)?)?),
            _ => {}
        }
    }
    inputs.retain(|p| !initializers.contains(&p.name));
    for p in inputs.iter().chain(&outputs) {
        names.insert(p.name.clone());
    }
    Ok(GraphInfo {
        ir_version,
        opset,
        inputs,
        outputs,
        names,
    })
}

/// Data of an initializer.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// A constant tensor to add.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    pub name: String,
    pub dims: Vec<i64>,
    pub data: Data,
}

impl Initializer {
    pub fn f32(name: &str, dims: &[i64], data: Vec<f32>) -> Self {
        Initializer {
            name: name.to_string(),
            dims: dims.to_vec(),
            data: Data::F32(data),
        }
    }
    pub fn i64(name: &str, dims: &[i64], data: Vec<i64>) -> Self {
        Initializer {
            name: name.to_string(),
            dims: dims.to_vec(),
            data: Data::I64(data),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut t = Vec::new();
        for &d in &self.dims {
            write_varint(&mut t, u64::from(TENSOR_DIMS) << 3);
            write_varint(&mut t, d as u64);
        }
        let (ty, raw): (u64, Vec<u8>) = match &self.data {
            Data::F32(v) => (FLOAT, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Data::I64(v) => (INT64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        write_varint(&mut t, u64::from(TENSOR_DATA_TYPE) << 3);
        write_varint(&mut t, ty);
        write_bytes_field(&mut t, num::TENSOR_NAME, self.name.as_bytes());
        write_bytes_field(&mut t, TENSOR_RAW_DATA, &raw);
        t
    }
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
}

/// A node to add (default domain).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub op_type: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub name: String,
    pub attributes: Vec<(String, Attr)>,
}

impl Node {
    pub fn new(op_type: &str, inputs: &[&str], output: &str) -> Self {
        Node {
            op_type: op_type.to_string(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: vec![output.to_string()],
            name: output.to_string(),
            attributes: Vec::new(),
        }
    }

    pub fn attr(mut self, name: &str, value: Attr) -> Self {
        self.attributes.push((name.to_string(), value));
        self
    }

    fn encode(&self) -> Vec<u8> {
        let mut n = Vec::new();
        for i in &self.inputs {
            write_bytes_field(&mut n, num::NODE_INPUT, i.as_bytes());
        }
        for o in &self.outputs {
            write_bytes_field(&mut n, NODE_OUTPUT, o.as_bytes());
        }
        write_bytes_field(&mut n, NODE_NAME, self.name.as_bytes());
        write_bytes_field(&mut n, NODE_OP_TYPE, self.op_type.as_bytes());
        for (name, value) in &self.attributes {
            let mut a = Vec::new();
            write_bytes_field(&mut a, ATTR_NAME, name.as_bytes());
            let ty = match value {
                Attr::Float(f) => {
                    write_varint(&mut a, (u64::from(ATTR_F) << 3) | 5);
                    a.extend_from_slice(&f.to_le_bytes());
                    1
                }
                Attr::Int(i) => {
                    write_varint(&mut a, u64::from(ATTR_I) << 3);
                    write_varint(&mut a, *i as u64);
                    2
                }
                Attr::Ints(v) => {
                    for i in v {
                        write_varint(&mut a, u64::from(ATTR_INTS) << 3);
                        write_varint(&mut a, *i as u64);
                    }
                    7
                }
            };
            write_varint(&mut a, u64::from(ATTR_TYPE) << 3);
            write_varint(&mut a, ty);
            write_bytes_field(&mut n, num::NODE_ATTRIBUTE, &a);
        }
        n
    }
}

/// Rewrites the string fields `numbers` of `msg` equal to `from` into `to`.
fn rename_in(msg: &[u8], numbers: &[u32], from: &str, to: &str) -> Result<Vec<u8>, GraphError> {
    let mut out = Vec::with_capacity(msg.len() + 16);
    for f in fields(msg)? {
        if numbers.contains(&f.number) && bytes_of(&f)? == from.as_bytes() {
            write_bytes_field(&mut out, f.number, to.as_bytes());
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

/// Renames tensor `from` to `to` wherever a node produces or reads it and in
/// `value_info` (graph inputs and outputs keep their names), then appends
/// `initializers` and `nodes` to the graph. The caller's nodes then produce
/// `from` again, typically from `to`.
pub fn splice(
    model: &[u8],
    from: &str,
    to: &str,
    initializers: &[Initializer],
    nodes: &[Node],
) -> Result<Vec<u8>, GraphError> {
    let info = inspect(model)?;
    if info.names.contains(to) {
        return err(format!(
            "tensor name {} is already used",
            zooaudit_formats::quote(to)
        ));
    }
    for i in initializers {
        if info.names.contains(&i.name) {
            return err(format!(
                "tensor name {} is already used",
                zooaudit_formats::quote(&i.name)
            ));
        }
    }
    let (_, graph) = model_graph(model)?;
    let mut new_graph = Vec::with_capacity(graph.len() + 4096);
    let mut produced = false;
    for f in fields(graph)? {
        match f.number {
            num::GRAPH_NODE => {
                let node = bytes_of(&f)?;
                let renamed = rename_in(node, &[num::NODE_INPUT, NODE_OUTPUT], from, to)?;
                produced |= renamed != node
                    && fields(node)?.iter().any(|nf| {
                        nf.number == NODE_OUTPUT && bytes_of(nf).ok() == Some(from.as_bytes())
                    });
                write_bytes_field(&mut new_graph, num::GRAPH_NODE, &renamed);
            }
            num::GRAPH_VALUE_INFO => {
                let renamed = rename_in(bytes_of(&f)?, &[num::VALUE_INFO_NAME], from, to)?;
                write_bytes_field(&mut new_graph, num::GRAPH_VALUE_INFO, &renamed);
            }
            _ => new_graph.extend_from_slice(f.raw),
        }
    }
    if !produced {
        return err(format!(
            "no node produces '{from}' (is it a graph input or initializer?)"
        ));
    }
    for i in initializers {
        write_bytes_field(&mut new_graph, num::GRAPH_INITIALIZER, &i.encode());
    }
    for n in nodes {
        write_bytes_field(&mut new_graph, num::GRAPH_NODE, &n.encode());
    }
    replace_graph(model, &new_graph)
}

/// Adds a graph output for an existing tensor (element type float, shape
/// left to inference), e.g. to expose an intermediate embedding.
pub fn add_output(model: &[u8], tensor: &str) -> Result<Vec<u8>, GraphError> {
    let info = inspect(model)?;
    if !info.names.contains(tensor) {
        return err(format!(
            "no tensor named {}",
            zooaudit_formats::quote(tensor)
        ));
    }
    let (_, graph) = model_graph(model)?;
    let mut vi = Vec::new();
    write_bytes_field(&mut vi, num::VALUE_INFO_NAME, tensor.as_bytes());
    let mut tensor_type = Vec::new();
    write_varint(&mut tensor_type, 1 << 3);
    write_varint(&mut tensor_type, FLOAT);
    let mut ty = Vec::new();
    write_bytes_field(&mut ty, num::TYPE_TENSOR, &tensor_type);
    write_bytes_field(&mut vi, num::VALUE_INFO_TYPE, &ty);
    let mut new_graph = graph.to_vec();
    write_bytes_field(&mut new_graph, num::GRAPH_OUTPUT, &vi);
    replace_graph(model, &new_graph)
}

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

use std::collections::HashSet;

pub mod build;
pub mod read;

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

#[derive(Debug, Clone, Copy)]
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

#[derive(Debug, Clone, Copy)]
struct Field<'a> {
    number: u32,
    value: Value<'a>,
    /// The whole field (tag + payload) as it appears in the buffer.
    raw: &'a [u8],
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, GraphError> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let Some(&b) = buf.get(*pos) else {
            return err("truncated varint");
        };
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    err("varint too long")
}

fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, GraphError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        out.push(next_field(buf, &mut pos)?);
    }
    Ok(out)
}

/// The field starting at `*pos`; advances `*pos` past it.
fn next_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Field<'a>, GraphError> {
    let start = *pos;
    let tag = read_varint(buf, pos)?;
    let number = u32::try_from(tag >> 3).map_err(|_| GraphError("bad field number".into()))?;
    if number == 0 {
        return err("field number 0");
    }
    let skip = |pos: &mut usize, n: usize, what: &str| {
        *pos = pos
            .checked_add(n)
            .filter(|&p| p <= buf.len())
            .ok_or(GraphError(format!("truncated {what}")))?;
        Ok::<_, GraphError>(Value::Fixed)
    };
    let value = match tag & 7 {
        0 => Value::Varint(read_varint(buf, pos)?),
        1 => skip(pos, 8, "fixed64")?,
        2 => {
            let len = usize::try_from(read_varint(buf, pos)?)
                .map_err(|_| GraphError("length overflows".into()))?;
            let end = pos
                .checked_add(len)
                .filter(|&e| e <= buf.len())
                .ok_or(GraphError(format!(
                    "field {number} claims {len} bytes past the end of its message"
                )))?;
            let v = Value::Bytes(&buf[*pos..end]);
            *pos = end;
            v
        }
        5 => skip(pos, 4, "fixed32")?,
        w => return err(format!("unsupported wire type {w} in field {number}")),
    };
    Ok(Field {
        number,
        value,
        raw: &buf[start..*pos],
    })
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn write_bytes_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    write_varint(out, (u64::from(number) << 3) | 2);
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

fn bytes_of<'a>(f: &Field<'a>) -> Result<&'a [u8], GraphError> {
    match f.value {
        Value::Bytes(b) => Ok(b),
        _ => err(format!("field {} should be length-delimited", f.number)),
    }
}

fn string_of(f: &Field<'_>) -> Result<String, GraphError> {
    String::from_utf8(bytes_of(f)?.to_vec()).map_err(|_| GraphError("name is not UTF-8".into()))
}

/// The `name` (field `name_field`) of a message.
fn name_in(msg: &[u8], name_field: u32) -> Result<Option<String>, GraphError> {
    for f in fields(msg)? {
        if f.number == name_field {
            return string_of(&f).map(Some);
        }
    }
    Ok(None)
}

/// Adds every name read by a node of `graph` (and of its subgraphs).
fn collect_node_inputs(
    graph: &[u8],
    used: &mut HashSet<String>,
    depth: u32,
) -> Result<(), GraphError> {
    if depth > 64 {
        return err("subgraphs nested too deeply");
    }
    for f in fields(graph)? {
        if f.number != num::GRAPH_NODE {
            continue;
        }
        for nf in fields(bytes_of(&f)?)? {
            match nf.number {
                num::NODE_INPUT => {
                    used.insert(string_of(&nf)?);
                }
                num::NODE_ATTRIBUTE => {
                    for af in fields(bytes_of(&nf)?)? {
                        if af.number == num::ATTR_G || af.number == num::ATTR_GRAPHS {
                            collect_node_inputs(bytes_of(&af)?, used, depth + 1)?;
                        }
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn model_graph(model: &[u8]) -> Result<(u64, &[u8]), GraphError> {
    let mut ir = 0;
    let mut graph = None;
    for f in fields(model)? {
        match (f.number, f.value) {
            (num::MODEL_IR_VERSION, Value::Varint(v)) => ir = v,
            (num::MODEL_GRAPH, Value::Bytes(b)) => graph = Some(b),
            _ => {}
        }
    }
    match graph {
        Some(g) => Ok((ir, g)),
        None => err("the file has no graph (is it an ONNX model?)"),
    }
}

fn replace_graph(model: &[u8], new_graph: &[u8]) -> Result<Vec<u8>, GraphError> {
    let mut out = Vec::with_capacity(model.len());
    for f in fields(model)? {
        if f.number == num::MODEL_GRAPH {
            write_bytes_field(&mut out, num::MODEL_GRAPH, new_graph);
        } else {
            out.extend_from_slice(f.raw);
        }
    }
    Ok(out)
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default)]
pub struct Repair {
    pub bytes: Vec<u8>,
    /// Graph inputs no node read.
    pub dropped_unused: Vec<String>,
    /// Graph inputs that were also initializers.
    pub dropped_initializer_duplicates: Vec<String>,
    /// `DequantizeLinear` nodes whose scale is a scalar or a 1-element
    /// vector but which carry a non-zero `block_size` (one block spanning
    /// the tensor, as YuNet 2023mar int8bq ships its biases): ONNX Runtime
    /// reads such a scale as per-tensor and refuses the attribute ("block_size
    /// must be 0 for per-tensor quantization"); dropping it keeps the meaning.
    pub dropped_block_sizes: usize,
}

/// Rank and number of elements of a TensorProto from its `dims` (packed or
/// not).
fn tensor_elements(t: &[u8]) -> Result<(usize, u64), GraphError> {
    let mut n: u64 = 1;
    let mut rank = 0;
    for f in fields(t)? {
        if f.number != num::TENSOR_DIMS {
            continue;
        }
        match f.value {
            Value::Varint(d) => {
                n = n.saturating_mul(d);
                rank += 1;
            }
            Value::Bytes(b) => {
                let mut pos = 0;
                while pos < b.len() {
                    n = n.saturating_mul(read_varint(b, &mut pos)?);
                    rank += 1;
                }
            }
            Value::Fixed => return err("TensorProto dims is not a varint"),
        }
    }
    Ok((rank, n))
}

/// A NodeProto without a non-zero `block_size` attribute, when it is a
/// `DequantizeLinear` whose scale (input 1) is one of `single`.
fn node_without_block_size(
    node: &[u8],
    single: &HashSet<String>,
) -> Result<Option<Vec<u8>>, GraphError> {
    let nf = fields(node)?;
    let mut is_dq = false;
    let mut inputs = Vec::new();
    for f in &nf {
        match f.number {
            num::NODE_OP_TYPE => is_dq = string_of(f)? == "DequantizeLinear",
            num::NODE_INPUT => inputs.push(string_of(f)?),
            _ => {}
        }
    }
    if !is_dq || !inputs.get(1).is_some_and(|s| single.contains(s)) {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(node.len());
    let mut dropped = false;
    for f in &nf {
        if f.number == num::NODE_ATTRIBUTE {
            let af = fields(bytes_of(f)?)?;
            let is_block = af.iter().any(|a| {
                a.number == num::ATTR_NAME && string_of(a).is_ok_and(|n| n == "block_size")
            });
            let nonzero = af
                .iter()
                .any(|a| a.number == num::ATTR_I && matches!(a.value, Value::Varint(v) if v != 0));
            if is_block && nonzero {
                dropped = true;
                continue;
            }
        }
        out.extend_from_slice(f.raw);
    }
    Ok(dropped.then_some(out))
}

/// Drops graph inputs that nothing reads or that duplicate an initializer,
/// and meaningless `block_size` attributes of per-tensor `DequantizeLinear`.
pub fn repair(model: &[u8]) -> Result<Repair, GraphError> {
    let (ir_version, graph) = model_graph(model)?;
    let gfields = fields(graph)?;
    let mut used = HashSet::new();
    collect_node_inputs(graph, &mut used, 0)?;
    let mut initializers = HashSet::new();
    let mut single = HashSet::new();
    for f in &gfields {
        match f.number {
            num::GRAPH_OUTPUT => {
                if let Some(n) = name_in(bytes_of(f)?, num::VALUE_INFO_NAME)? {
                    used.insert(n);
                }
            }
            num::GRAPH_INITIALIZER => {
                let t = bytes_of(f)?;
                if let Some(n) = name_in(t, num::TENSOR_NAME)? {
                    // ONNX Runtime reads a scalar or a 1-element vector as
                    // per-tensor (a rank-2 [1, 1] scale stays blocked).
                    let (rank, count) = tensor_elements(t)?;
                    if rank <= 1 && count == 1 {
                        single.insert(n.clone());
                    }
                    initializers.insert(n);
                }
            }
            num::GRAPH_SPARSE_INITIALIZER => {
                for sf in fields(bytes_of(f)?)? {
                    if sf.number == num::SPARSE_VALUES
                        && let Some(n) = name_in(bytes_of(&sf)?, num::TENSOR_NAME)?
                    {
                        initializers.insert(n);
                    }
                }
            }
            _ => {}
        }
    }
    let mut rep = Repair::default();
    let mut new_graph = Vec::with_capacity(graph.len());
    for f in &gfields {
        if f.number == num::GRAPH_NODE
            && let Some(node) = node_without_block_size(bytes_of(f)?, &single)?
        {
            rep.dropped_block_sizes += 1;
            write_bytes_field(&mut new_graph, num::GRAPH_NODE, &node);
            continue;
        }
        if f.number == num::GRAPH_INPUT {
            let name = name_in(bytes_of(f)?, num::VALUE_INFO_NAME)?.unwrap_or_default();
            if !used.contains(&name) {
                rep.dropped_unused.push(name);
                continue;
            }
            // IR < 4 requires every initializer to be listed as an input.
            if ir_version >= 4 && initializers.contains(&name) {
                rep.dropped_initializer_duplicates.push(name);
                continue;
            }
        }
        new_graph.extend_from_slice(f.raw);
    }
    rep.bytes = if rep.dropped_unused.is_empty()
        && rep.dropped_initializer_duplicates.is_empty()
        && rep.dropped_block_sizes == 0
    {
        model.to_vec()
    } else {
        replace_graph(model, &new_graph)?
    };
    Ok(rep)
}

/// A rewrite of one nested message: `Some(new bytes)` or `None` (unchanged).
type Rewrite<'f> = &'f dyn Fn(&[u8]) -> Result<Option<Vec<u8>>, GraphError>;

/// Rewrites a ValueInfoProto so that its tensor's first dimension is `N`.
/// Returns `None` when it has no tensor shape.
fn value_info_with_free_batch(vi: &[u8]) -> Result<Option<Vec<u8>>, GraphError> {
    value_info_with_dims(vi, &|i| {
        (i == 0).then(|| {
            let mut d = Vec::new();
            write_bytes_field(&mut d, num::DIM_PARAM, b"N");
            d
        })
    })
}

/// Makes the leading dimension of `input` and of every graph output symbolic,
/// and drops intermediate `value_info` shape hints (they would pin batch 1).
pub fn free_batch(model: &[u8], input: &str) -> Result<Vec<u8>, GraphError> {
    let (_, graph) = model_graph(model)?;
    let mut new_graph = Vec::with_capacity(graph.len());
    let mut found = false;
    for f in fields(graph)? {
        match f.number {
            num::GRAPH_VALUE_INFO => continue,
            num::GRAPH_INPUT | num::GRAPH_OUTPUT => {
                let vi = bytes_of(&f)?;
                let is_target = f.number == num::GRAPH_OUTPUT
                    || name_in(vi, num::VALUE_INFO_NAME)?.as_deref() == Some(input);
                if is_target && let Some(new) = value_info_with_free_batch(vi)? {
                    found |= f.number == num::GRAPH_INPUT;
                    write_bytes_field(&mut new_graph, f.number, &new);
                    continue;
                }
            }
            _ => {}
        }
        new_graph.extend_from_slice(f.raw);
    }
    if !found {
        return err(format!("input '{input}' has no tensor shape to free"));
    }
    replace_graph(model, &new_graph)
}

/// A TensorShapeProto with dimension `i` replaced by `dim(i)` where it
/// returns `Some` (a new TensorShapeProto.Dimension message).
fn shape_with(
    shape: &[u8],
    dim: &dyn Fn(usize) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, GraphError> {
    let mut out = Vec::with_capacity(shape.len() + 8);
    let mut changed = false;
    let mut i = 0;
    for f in fields(shape)? {
        if f.number == num::SHAPE_DIM {
            if let Some(new) = dim(i) {
                write_bytes_field(&mut out, num::SHAPE_DIM, &new);
                changed = true;
            } else {
                out.extend_from_slice(f.raw);
            }
            i += 1;
            continue;
        }
        out.extend_from_slice(f.raw);
    }
    Ok(changed.then_some(out))
}

/// A ValueInfoProto whose tensor shape went through [`shape_with`].
fn value_info_with_dims(
    vi: &[u8],
    dim: &dyn Fn(usize) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, GraphError> {
    // Each level: rewrite the first such nested field, copy the rest.
    fn nested(msg: &[u8], number: u32, inner: Rewrite<'_>) -> Result<Option<Vec<u8>>, GraphError> {
        let mut out = Vec::with_capacity(msg.len() + 8);
        let mut changed = false;
        for f in fields(msg)? {
            if f.number == number
                && !changed
                && let Some(new) = inner(bytes_of(&f)?)?
            {
                write_bytes_field(&mut out, number, &new);
                changed = true;
                continue;
            }
            out.extend_from_slice(f.raw);
        }
        Ok(changed.then_some(out))
    }
    let shape = |s: &[u8]| shape_with(s, dim);
    let tensor = |t: &[u8]| nested(t, num::TENSOR_TYPE_SHAPE, &shape);
    let ty = |t: &[u8]| nested(t, num::TYPE_TENSOR, &tensor);
    nested(vi, num::VALUE_INFO_TYPE, &ty)
}

/// Runs a fully convolutional model at another input size: sets the
/// dimensions `dims` (index, value) of `input`, makes every non-batch
/// dimension of every graph output symbolic, and drops intermediate
/// `value_info` shape hints. Whether the graph really allows the size shows
/// when ONNX Runtime runs it.
pub fn set_input_dims(
    model: &[u8],
    input: &str,
    dims: &[(usize, u64)],
) -> Result<Vec<u8>, GraphError> {
    let (_, graph) = model_graph(model)?;
    let fixed = |i: usize| {
        dims.iter().find(|(j, _)| *j == i).map(|(_, v)| {
            let mut d = Vec::new();
            d.push((num::DIM_VALUE << 3) as u8);
            write_varint(&mut d, *v);
            d
        })
    };
    let free = |i: usize| {
        (i > 0).then(|| {
            let mut d = Vec::new();
            write_bytes_field(&mut d, num::DIM_PARAM, format!("d{i}").as_bytes());
            d
        })
    };
    let mut new_graph = Vec::with_capacity(graph.len());
    let mut found = false;
    for f in fields(graph)? {
        match f.number {
            num::GRAPH_VALUE_INFO => continue,
            num::GRAPH_INPUT
                if name_in(bytes_of(&f)?, num::VALUE_INFO_NAME)?.as_deref() == Some(input) =>
            {
                if let Some(new) = value_info_with_dims(bytes_of(&f)?, &fixed)? {
                    found = true;
                    write_bytes_field(&mut new_graph, f.number, &new);
                    continue;
                }
            }
            num::GRAPH_OUTPUT => {
                if let Some(new) = value_info_with_dims(bytes_of(&f)?, &free)? {
                    write_bytes_field(&mut new_graph, f.number, &new);
                    continue;
                }
            }
            _ => {}
        }
        new_graph.extend_from_slice(f.raw);
    }
    if !found {
        return err(format!("input '{input}' has no tensor shape to set"));
    }
    replace_graph(model, &new_graph)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_roundtrip() {
        for v in [0u64, 1, 127, 128, 300, u64::MAX] {
            let mut b = Vec::new();
            write_varint(&mut b, v);
            let mut pos = 0;
            assert_eq!(read_varint(&b, &mut pos).ok(), Some(v));
            assert_eq!(pos, b.len());
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(repair(b"").is_err());
        assert!(repair(b"\xff\xff\xff").is_err());
        assert!(repair(b"PK\x03\x04 this is a zip").is_err());
        // A LEN field that claims more bytes than exist.
        assert!(repair(&[0x3a, 0x7f, 0x01]).is_err());
    }

    #[test]
    fn drops_dangling_and_duplicate_inputs_and_keeps_the_rest() {
        // graph: node reads "x" and "w"; inputs x, w (also initializer), junk (unread).
        let mut node = Vec::new();
        write_bytes_field(&mut node, num::NODE_INPUT, b"x");
        write_bytes_field(&mut node, num::NODE_INPUT, b"w");
        let vi = |name: &[u8]| {
            let mut v = Vec::new();
            write_bytes_field(&mut v, num::VALUE_INFO_NAME, name);
            v
        };
        let mut init = Vec::new();
        write_bytes_field(&mut init, num::TENSOR_NAME, b"w");
        let mut graph = Vec::new();
        write_bytes_field(&mut graph, num::GRAPH_NODE, &node);
        write_bytes_field(&mut graph, num::GRAPH_INITIALIZER, &init);
        for n in [&b"x"[..], b"w", b"junk"] {
            write_bytes_field(&mut graph, num::GRAPH_INPUT, &vi(n));
        }
        write_bytes_field(&mut graph, 99, b"unknown field survives");
        let mut model = Vec::new();
        write_varint(&mut model, u64::from(num::MODEL_IR_VERSION) << 3);
        write_varint(&mut model, 7);
        write_bytes_field(&mut model, num::MODEL_GRAPH, &graph);
        let rep = repair(&model).expect("repair");
        assert_eq!(rep.dropped_unused, vec!["junk".to_string()]);
        assert_eq!(rep.dropped_initializer_duplicates, vec!["w".to_string()]);
        let (ir, g) = model_graph(&rep.bytes).expect("graph");
        assert_eq!(ir, 7);
        let inputs: Vec<String> = fields(g)
            .expect("fields")
            .iter()
            .filter(|f| f.number == num::GRAPH_INPUT)
            .filter_map(|f| name_in(bytes_of(f).ok()?, 1).ok().flatten())
            .collect();
        assert_eq!(inputs, vec!["x".to_string()]);
        assert!(fields(g).expect("fields").iter().any(|f| f.number == 99));
    }
}

//! [`repair`]: dropping graph inputs nothing reads or that duplicate an
//! initializer, and meaningless `block_size` attributes.

use std::collections::HashSet;

use crate::wire::{
    Value, bytes_of, fields, model_graph, name_in, read_varint, replace_graph, string_of,
    write_bytes_field,
};
use crate::{GraphError, err, num};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::write_varint;

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

//! Shape edits: a free batch dimension ([`free_batch`]) and other input
//! sizes ([`set_input_dims`]), with the shape hints that would pin them
//! dropped.

use crate::wire::{
    bytes_of, fields, model_graph, name_in, replace_graph, write_bytes_field, write_varint,
};
use crate::{GraphError, err, num};

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
        return err(format!(
            "input {} has no tensor shape to free",
            zooaudit_formats::quote(input)
        ));
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
        return err(format!(
            "input {} has no tensor shape to set",
            zooaudit_formats::quote(input)
        ));
    }
    replace_graph(model, &new_graph)
}

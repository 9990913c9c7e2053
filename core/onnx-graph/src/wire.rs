//! The protobuf wire format, as far as the edits need it: fields and
//! varints read and written, and a model's graph taken out and put back.

use crate::{GraphError, err, num};

#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Field<'a> {
    pub(crate) number: u32,
    pub(crate) value: Value<'a>,
    /// The whole field (tag + payload) as it appears in the buffer.
    pub(crate) raw: &'a [u8],
}

pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64, GraphError> {
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

pub(crate) fn fields(buf: &[u8]) -> Result<Vec<Field<'_>>, GraphError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        out.push(next_field(buf, &mut pos)?);
    }
    Ok(out)
}

/// The field starting at `*pos`; advances `*pos` past it.
pub(crate) fn next_field<'a>(buf: &'a [u8], pos: &mut usize) -> Result<Field<'a>, GraphError> {
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

/// Appends `v` as a protobuf varint.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
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

/// Appends a length-delimited field (`number`, wire type 2).
pub fn write_bytes_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    write_varint(out, (u64::from(number) << 3) | 2);
    write_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

pub(crate) fn bytes_of<'a>(f: &Field<'a>) -> Result<&'a [u8], GraphError> {
    match f.value {
        Value::Bytes(b) => Ok(b),
        _ => err(format!("field {} should be length-delimited", f.number)),
    }
}

pub(crate) fn string_of(f: &Field<'_>) -> Result<String, GraphError> {
    String::from_utf8(bytes_of(f)?.to_vec()).map_err(|_| GraphError("name is not UTF-8".into()))
}

/// The `name` (field `name_field`) of a message.
pub(crate) fn name_in(msg: &[u8], name_field: u32) -> Result<Option<String>, GraphError> {
    for f in fields(msg)? {
        if f.number == name_field {
            return string_of(&f).map(Some);
        }
    }
    Ok(None)
}

pub(crate) fn model_graph(model: &[u8]) -> Result<(u64, &[u8]), GraphError> {
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

pub(crate) fn replace_graph(model: &[u8], new_graph: &[u8]) -> Result<Vec<u8>, GraphError> {
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
}

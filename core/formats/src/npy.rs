//! NumPy `.npy` files of float32 matrices (format version 1.0).

use std::path::Path;

use crate::{ReportError, write_atomic};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Serialises a row-major `rows × cols` float32 matrix (shape checked by the caller).
fn to_bytes(rows: usize, cols: usize, data: &[f32]) -> Vec<u8> {
    let mut header =
        format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + header length (2) + header + '\n' is a multiple of 64.
    let unpadded = MAGIC.len() + 2 + 2 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len() * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Writes a float32 matrix to `path` (atomically).
pub fn write(path: &Path, rows: usize, cols: usize, data: &[f32]) -> Result<(), ReportError> {
    if rows * cols != data.len() {
        return Err(ReportError::format(
            path,
            format!("{rows}×{cols} matrix given {} values", data.len()),
        ));
    }
    write_atomic(path, &to_bytes(rows, cols, data))
}

/// A float32 matrix read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    pub rows: usize,
    pub cols: usize,
    pub data: Vec<f32>,
}

/// Reads a 2-D little-endian float32 C-order `.npy` file (versions 1–3).
pub fn read(path: &Path) -> Result<Matrix, ReportError> {
    let bytes = std::fs::read(path).map_err(|e| ReportError::io(path, e))?;
    parse(&bytes).map_err(|m| ReportError::format(path, m))
}

/// Parses `.npy` bytes.
pub fn parse(bytes: &[u8]) -> Result<Matrix, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (bad magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    if !header.contains("'descr': '<f4'") {
        return Err(format!(
            "only little-endian float32 is supported (header {:?})",
            header.trim()
        ));
    }
    if header.contains("'fortran_order': True") {
        return Err("Fortran-order arrays are not supported".into());
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split('(').nth(1))
        .and_then(|s| s.split(')').next())
        .ok_or("header has no shape")?;
    let dims: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text:?}"))
        })
        .collect::<Result<_, _>>()?;
    let (rows, cols) = match dims.as_slice() {
        [r, c] => (*r, *c),
        [r] => (*r, 1),
        _ => return Err(format!("expected a 2-D array, got shape {shape_text:?}")),
    };
    let needed = rows
        .checked_mul(cols)
        .and_then(|n| n.checked_mul(4))
        .ok_or("shape overflows")?;
    let body = &bytes[end..];
    if body.len() != needed {
        return Err(format!(
            "data has {} bytes, shape needs {needed}",
            body.len()
        ));
    }
    let data = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Matrix { rows, cols, data })
}

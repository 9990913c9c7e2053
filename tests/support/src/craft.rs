//! A small protobuf writer for crafted ONNX files: hostile or minimal
//! models the scan and the audit are tested on (external data pointing
//! outside the directory, dual storage, custom domains, size claims).

pub use zooaudit_onnx_graph::wire::{write_bytes_field as field_bytes, write_varint as varint};

pub fn field_int(out: &mut Vec<u8>, n: u32, v: u64) {
    varint(out, u64::from(n) << 3);
    varint(out, v);
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str], domain: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for i in inputs {
        field_bytes(&mut b, 1, i.as_bytes());
    }
    for o in outputs {
        field_bytes(&mut b, 2, o.as_bytes());
    }
    field_bytes(&mut b, 3, format!("n_{}", outputs[0]).as_bytes());
    field_bytes(&mut b, 4, op.as_bytes());
    if !domain.is_empty() {
        field_bytes(&mut b, 7, domain.as_bytes());
    }
    b
}

/// A float tensor: dims, then `raw` as raw_data if given, `floats` as
/// float_data if given, external entries if given.
pub fn tensor(
    name: &str,
    dims: &[u64],
    raw: Option<&[u8]>,
    floats: &[f32],
    ext: &[(&str, &str)],
) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        field_int(&mut t, 1, d);
    }
    field_int(&mut t, 2, 1);
    if !floats.is_empty() {
        let packed: Vec<u8> = floats.iter().flat_map(|f| f.to_le_bytes()).collect();
        field_bytes(&mut t, 4, &packed);
    }
    field_bytes(&mut t, 8, name.as_bytes());
    if let Some(r) = raw {
        field_bytes(&mut t, 9, r);
    }
    for (k, v) in ext {
        let mut e = Vec::new();
        field_bytes(&mut e, 1, k.as_bytes());
        field_bytes(&mut e, 2, v.as_bytes());
        field_bytes(&mut t, 13, &e);
    }
    if !ext.is_empty() {
        field_int(&mut t, 14, 1);
    }
    t
}

pub fn value_info(name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    field_bytes(&mut v, 1, name.as_bytes());
    v
}

/// A model: graph `x → nodes → y` plus initializers.
pub fn model(nodes: &[Vec<u8>], inits: &[Vec<u8>], domains: &[&str]) -> Vec<u8> {
    let mut g = Vec::new();
    for n in nodes {
        field_bytes(&mut g, 1, n);
    }
    field_bytes(&mut g, 2, b"crafted");
    for i in inits {
        field_bytes(&mut g, 5, i);
    }
    field_bytes(&mut g, 11, &value_info("x"));
    field_bytes(&mut g, 12, &value_info("y"));
    let mut m = Vec::new();
    field_int(&mut m, 1, 8);
    for d in [""].iter().chain(domains) {
        let mut o = Vec::new();
        field_bytes(&mut o, 1, d.as_bytes());
        field_int(&mut o, 2, 13);
        field_bytes(&mut m, 8, &o);
    }
    field_bytes(&mut m, 7, &g);
    m
}

pub fn with_weight(t: Vec<u8>) -> Vec<u8> {
    model(&[node("Mul", &["x", "w"], &["y"], "")], &[t], &[])
}

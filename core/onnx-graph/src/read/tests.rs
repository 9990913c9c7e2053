//! Unit tests of the read-only decode.

use super::*;

#[test]
fn declared_sizes() {
    let t = Tensor {
        dims: vec![3, 5],
        data_type: 1,
        ..Tensor::default()
    };
    assert_eq!(t.declared_bytes(), Some(60));
    let t4 = Tensor {
        dims: vec![3],
        data_type: 22,
        ..Tensor::default()
    };
    assert_eq!(t4.declared_bytes(), Some(2));
    let huge = Tensor {
        dims: vec![i64::MAX, i64::MAX],
        data_type: 1,
        ..Tensor::default()
    };
    assert_eq!(huge.declared_bytes(), None);
    let neg = Tensor {
        dims: vec![-1],
        data_type: 1,
        ..Tensor::default()
    };
    assert_eq!(neg.declared_elements(), None);
}

#[test]
fn hostile_bytes_are_errors() {
    let limits = Limits::default();
    assert!(read_model(b"", &limits).is_err());
    assert!(read_model(&[0x3a, 0xff, 0xff, 0xff, 0x03], &limits).is_err());
}

#[test]
fn millions_of_unknown_fields_take_no_memory_per_field() {
    // A graph of 4 000 000 unknown varint fields (field 99 = 0), 12 MB.
    let mut graph = Vec::new();
    for _ in 0..4_000_000 {
        graph.extend_from_slice(&[0x98, 0x06, 0x00]);
    }
    let mut model = Vec::new();
    model.push(0x3a);
    let mut len = graph.len() as u64;
    while len >= 0x80 {
        model.push((len as u8) | 0x80);
        len >>= 7;
    }
    model.push(len as u8);
    model.extend_from_slice(&graph);
    let m = read_model(&model, &Limits::default()).expect("decodes");
    assert!(m.graph.nodes.is_empty());
}

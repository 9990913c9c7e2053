#![no_main]
//! Image decoding (PNG, JPEG, WebP) within the limits an audit uses.
use libfuzzer_sys::fuzz_target;
use std::path::Path;
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = zooaudit_imaging::Limits::default();
    common::one_line(zooaudit_imaging::decode_bytes(
        data,
        Path::new("fuzzed"),
        &limits,
    ));
});

#![no_main]
//! An embeddings matrix (.npy) as `zooaudit embed` writes and reads it.
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    common::one_line(zooaudit_formats::npy::parse(data));
});

#![no_main]
//! A guard's pair bundle (JSON).
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = common::example("shared-zoo/pair.json");
    common::one_line(zooaudit_guard::bundle::PairBundle::parse(&path, text));
});

#![no_main]
//! A zoo file (TOML) listing models by manifest or registry source.
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = common::example("shared-zoo/zoo.toml");
    common::one_line(zooaudit_registry::zoo::Zoo::parse(&path, text));
});

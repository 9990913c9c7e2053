#![no_main]
//! A trigger suite (TOML); pattern files resolve against `triggers/`.
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = common::example("../triggers/paper.toml");
    common::one_line(zooaudit_triggers::Suite::parse(&path, text));
});

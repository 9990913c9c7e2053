#![no_main]
//! A model manifest (TOML) from a stranger.
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = common::example("shared-zoo/sface.toml");
    common::one_line(zooaudit_manifest::ModelManifest::parse(&path, text));
});

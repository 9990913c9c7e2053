#![no_main]
//! An audit file (TOML); relative paths resolve against the shared-zoo
//! example, so a well-formed input reaches the checks of real files.
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = common::example("shared-zoo/audit.toml");
    common::one_line(zooaudit_audit::AuditSpec::parse(&path, text));
});

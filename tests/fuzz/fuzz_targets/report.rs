#![no_main]
//! An audit's report.json, as `zooaudit report` / `verify` read it back.
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = common::example("report.json");
    common::one_line(zooaudit_audit::AuditReport::parse(&path, text));
});

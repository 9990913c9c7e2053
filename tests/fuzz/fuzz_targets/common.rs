//! What every target checks besides "no panic": an error is one line (the
//! project promises a clear one-line error for any bad input).

use std::path::PathBuf;

/// A path inside the repository's examples, so relative paths in a fuzzed
/// file resolve against real files and the parser goes as deep as it can.
#[allow(dead_code)] // not every target reads a file that names others
pub fn example(rel: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/")).join(rel)
}

/// Panics (a finding) when an error's message spans more than one line.
pub fn one_line<E: std::fmt::Display>(r: Result<impl Sized, E>) {
    if let Err(e) = r {
        let m = e.to_string();
        assert!(!m.contains('\n'), "a multi-line error: {m:?}");
    }
}

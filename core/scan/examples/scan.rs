//! `cargo run -p zooaudit-scan --example scan -- MODEL…`: the scan without
//! the CLI (text output with timings), for quick looks while developing.

use std::path::PathBuf;

fn main() {
    let opts = zooaudit_scan::Options::default();
    let outcomes: Vec<(PathBuf, zooaudit_scan::output::Outcome)> = std::env::args_os()
        .skip(1)
        .map(PathBuf::from)
        .map(|p| {
            let o = zooaudit_scan::scan_file(&p, &opts);
            (p, o)
        })
        .collect();
    print!("{}", zooaudit_scan::output::text(&outcomes, true));
    std::process::exit(i32::from(zooaudit_scan::output::exit_code(&outcomes)));
}

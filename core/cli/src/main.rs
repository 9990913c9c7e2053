//! `zooaudit`: the command line. A thin binary: [`commands`] holds one
//! module per command (parse, call one library function, print, pick the
//! exit code); the work is in the library crates. Exit codes: 0 ok, 2 error,
//! and per command 1 (and 3) for what it found.

use std::process::ExitCode;

use clap::Parser;

mod commands;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    match cli.run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // One line, and nothing a terminal would obey: control
            // characters that reached an error from a hostile input are
            // printed as escapes.
            let line = zooaudit_formats::escape_controls(&format!("{e:#}"));
            eprintln!("error: {line}");
            ExitCode::from(2)
        }
    }
}

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
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

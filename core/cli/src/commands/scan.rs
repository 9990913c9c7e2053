//! `zooaudit scan MODEL…`: the static scan of ONNX files (graph backdoors and
//! file hazards; docs/SCAN.md). Text by default, `--json`, or `--sarif`
//! (SARIF 2.1.0). Exit 0: nothing above a note; 1: a warning or error
//! finding; 2: a file could not be scanned.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use zooaudit_scan::output::{self, Outcome};

#[derive(clap::Args, Debug)]
pub struct ScanArgs {
    /// ONNX model files.
    #[arg(required = true, value_name = "MODEL")]
    pub models: Vec<PathBuf>,
    /// Print JSON (format_version 1.0) instead of text.
    #[arg(long, conflicts_with = "sarif")]
    pub json: bool,
    /// Print SARIF 2.1.0 (for code-scanning tools) instead of text.
    #[arg(long)]
    pub sarif: bool,
    /// Also report how long each scan took (decoding and rules; not reading
    /// or hashing the file).
    #[arg(long)]
    pub time: bool,
}

pub fn run(args: &ScanArgs) -> Result<u8> {
    let opts = zooaudit_scan::Options::default();
    let outcomes: Vec<(PathBuf, Outcome)> = args
        .models
        .iter()
        .map(|p| (p.clone(), zooaudit_scan::scan_file(p, &opts)))
        .collect();
    let mut stdout = std::io::stdout().lock();
    if args.json || args.sarif {
        let v = if args.sarif {
            output::sarif(&outcomes)
        } else {
            output::json(&outcomes, args.time)
        };
        serde_json::to_writer_pretty(&mut stdout, &v).context("writing the scan")?;
        writeln!(stdout).context("writing the scan")?;
    } else {
        let ok: Vec<(PathBuf, Outcome)> = outcomes
            .iter()
            .filter_map(|(p, o)| Some((p.clone(), Ok(o.as_ref().ok()?.clone()))))
            .collect();
        write!(stdout, "{}", output::text(&ok, args.time)).context("writing the scan")?;
        for (_, o) in &outcomes {
            if let Err(e) = o {
                eprintln!("error: {}", output::one_line(&e.to_string()));
            }
        }
    }
    Ok(output::exit_code(&outcomes))
}

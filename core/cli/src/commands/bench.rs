//! `bench paper` and `bench verdict`: the paper's evaluation and the
//! verdict's power, measured (zooaudit_redteam).

use std::path::PathBuf;

use anyhow::Result;
use zooaudit_redteam::{bench, verdict_bench};

use super::plugins;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Build a zoo of backdoored variants of two real models and audit every
    /// pairing; prints the paper's Tables 2, 3 and 4 measured.
    Paper(bench::PaperArgs),
    /// Measure the audit verdict's power on injected backdoors (strengths,
    /// suites, one and two references, impostor sizes) and its false alarms
    /// on clean pairs over many split seeds.
    Verdict(verdict_bench::VerdictArgs),
}

impl BenchCommand {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let set = plugins(dirs);
        let mut log = |line: String| eprintln!("{line}");
        match self {
            BenchCommand::Paper(args) => {
                bench::run_paper(&args, &set, &mut log)?;
            }
            BenchCommand::Verdict(args) => {
                let b = verdict_bench::run_verdict(&args, &set, &mut log)?;
                std::fs::create_dir_all(&args.out)?;
                let md = verdict_bench::tables(&b);
                let write = |name: &str, bytes: &[u8]| {
                    zooaudit_formats::write_atomic(&args.out.join(name), bytes)
                };
                write("verdict-bench.md", md.as_bytes())?;
                write(
                    "verdict-bench.json",
                    serde_json::to_string_pretty(&b)?.as_bytes(),
                )?;
                print!("{md}");
                eprintln!(
                    "bench verdict: {} audits in {:.0} s",
                    b.outcomes.len(),
                    b.seconds
                );
            }
        }
        Ok(0)
    }
}

//! `pair fit AUDIT --out pair.json`: the audit's steps for its first
//! candidate → first reference pair ([`zooaudit_guard::fit::fit_bundle`]).

use std::path::PathBuf;

use anyhow::Result;
use zooaudit_guard::bundle::Serve;

use super::progress::Reporter;
use super::{cache, plugins};

/// Which embedding the guard answers with.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ServeArg {
    Probe,
    Reference,
    /// Mean of the translated probe and the reference.
    Mean,
}

impl From<ServeArg> for Serve {
    fn from(s: ServeArg) -> Serve {
        match s {
            ServeArg::Probe => Serve::Probe,
            ServeArg::Reference => Serve::Reference,
            ServeArg::Mean => Serve::Mean,
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum PairCommand {
    /// Fit the audit file's first candidate (probe) against its first
    /// reference with the audit's own steps and write a pair bundle (JSON,
    /// versioned); the same bundle as `audit --export-pair`.
    Fit {
        #[arg(value_name = "AUDIT")]
        audit: PathBuf,
        /// The bundle to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Which embedding the guard serves.
        #[arg(long, value_enum, default_value_t = ServeArg::Reference)]
        serve: ServeArg,
        /// Embedding cache directory.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Do not read or write the embedding cache.
        #[arg(long)]
        no_cache: bool,
    },
}

impl PairCommand {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let PairCommand::Fit {
            audit,
            out,
            serve,
            cache_dir,
            no_cache,
        } = self;
        let spec = zooaudit_audit::AuditSpec::load(&audit)?;
        let set = plugins(dirs);
        let opts = zooaudit_audit::RunOptions {
            cache: cache(no_cache, cache_dir),
            batch: 32,
            fetch: zooaudit_registry::FetchOptions::from_env(),
        };
        let mut shown = Reporter::new(false);
        let bundle = zooaudit_guard::fit::fit_bundle(&spec, &set, &opts, serve.into(), &mut |p| {
            shown.event(p)
        })?;
        bundle.write(&out)?;
        super::audit::print_bundle(&bundle, &out);
        let dir = opts.cache.dir().map(|d| d.display().to_string());
        eprintln!("{}", shown.cache_line(dir.as_deref()));
        Ok(0)
    }
}

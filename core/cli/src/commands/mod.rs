//! The commands, one module each, and what they share: the plugin search
//! path and the progress display ([`progress`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use zooaudit_host::{PluginSet, SearchPath};

mod attest;
mod audit;
mod bench;
mod faces;
mod guard;
mod init;
mod models;
mod modelsign;
mod pair;
mod progress;
mod redteam;
mod scan;
mod zoo;

#[derive(Parser, Debug)]
#[command(
    name = "zooaudit",
    version,
    about = "Audit face-embedding models for backdoors by model pairing"
)]
pub struct Cli {
    /// Extra directory to search for plugins (repeatable; searched before
    /// ZOOAUDIT_PLUGIN_PATH and the directory beside the binary).
    #[arg(long = "plugin-dir", global = true, value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
    /// Use only models already in the cache, never download (also:
    /// ZOOAUDIT_OFFLINE=1); accepted by every command, honoured by every
    /// one that may fetch.
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the plugins found, with their versions, ABI versions and sha256s.
    Plugins(models::PluginsArgs),
    /// Embed images with a model: writes a float32 N×d .npy and <out>.json.
    Embed(models::EmbedArgs),
    /// Audit candidate models against references: writes report.json and
    /// scores.csv. Exit 0 no backdoor indicated, 1 indicated, 2 error, 3 inconclusive.
    Audit(Box<audit::AuditArgs>),
    /// Write a key pair: NAME.key (private, 0600) and NAME.pub (public,
    /// PEM); ed25519 for attestations, or --p256 for model signing.
    Keygen(attest::KeygenArgs),
    /// Sign an existing report.json: writes attestation.dsse.json beside it.
    Sign(attest::SignArgs),
    /// Verify a signed attestation. Exit 0 valid, 1 invalid, 2 error.
    Verify(attest::VerifyArgs),
    /// Verify a publisher's OpenSSF model-signing bundle over a model (key
    /// or certificate mode). Exit 0 valid, 1 invalid, 2 error.
    VerifyModel(modelsign::VerifyModelArgs),
    /// Sign a model (file or directory) with a P-256/P-384 key: an OpenSSF
    /// model-signing bundle that `model_signing verify key` accepts.
    SignModel(modelsign::SignModelArgs),
    /// Re-render report.html and summary.md from a report.json (and scores.csv).
    Render(attest::RenderArgs),
    /// Fetch and verify the models of manifests or zoo files (hf://,
    /// https://, pypi:, npm:, local files) into the cache; prints a table of
    /// what was resolved.
    Fetch(models::FetchArgs),
    /// Fit a calibrated model pair for the run-time guard.
    Pair {
        #[command(subcommand)]
        command: pair::PairCommand,
    },
    /// The run-time guard: every image through both models of a pair.
    Guard {
        #[command(subcommand)]
        command: guard::GuardCommand,
    },
    /// Face detection and alignment for ordinary photos.
    Faces {
        #[command(subcommand)]
        command: faces::FacesCommand,
    },
    /// Red team: inject backdoors into models and measure them (evaluation only).
    Redteam {
        #[command(subcommand)]
        command: redteam::RedteamCommand,
    },
    /// Static scan of ONNX files for graph backdoors and file hazards (exit 1: flagged).
    Scan(scan::ScanArgs),
    /// Benchmarks that reproduce the paper's evaluation.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
    /// Show how a model opens: inputs, outputs, batching, repairs.
    Inspect(models::InspectArgs),
    /// Write a manifest for a model: fetched (pinned), inspected, its
    /// preprocessing measured on labeled faces (refuses to guess when two
    /// candidates are too close).
    Init(Box<init::InitArgs>),
    /// The audit registry (a database of models, audits and artifacts).
    Registry {
        #[command(subcommand)]
        command: zoo::RegistryCommand,
    },
    /// Queue an audit in the registry (as POST /v1/audits does).
    Submit(Box<zoo::SubmitArgs>),
    /// Claim and run queued audits until SIGTERM.
    Worker(Box<zoo::WorkerArgs>),
    /// The zoo service: intake, webhooks, read API, badges, dashboard
    /// (with embedded workers unless --workers 0).
    Serve(Box<zoo::ServeArgs>),
}

impl Cli {
    /// Runs the command; its exit code.
    pub fn run(self) -> Result<u8> {
        let dirs = &self.plugin_dirs;
        if self.offline {
            zooaudit_registry::force_offline();
        }
        match self.command {
            Command::Plugins(a) => a.run(dirs),
            Command::Embed(a) => a.run(dirs),
            Command::Inspect(a) => a.run(dirs),
            Command::Init(a) => a.run(dirs),
            Command::Fetch(a) => a.run(),
            Command::Audit(a) => a.run(dirs),
            Command::Keygen(a) => a.run(),
            Command::Sign(a) => a.run(),
            Command::Verify(a) => a.run(),
            Command::VerifyModel(a) => a.run(),
            Command::SignModel(a) => a.run(),
            Command::Render(a) => a.run(),
            Command::Pair { command } => command.run(dirs),
            Command::Guard { command } => command.run(dirs),
            Command::Faces { command } => command.run(dirs),
            Command::Redteam { command } => command.run(dirs),
            Command::Scan(a) => scan::run(&a),
            Command::Bench { command } => command.run(dirs),
            Command::Registry { command } => command.run(),
            Command::Submit(a) => a.run(),
            Command::Worker(a) => a.run(dirs),
            Command::Serve(a) => a.run(dirs),
        }
    }
}

/// The plugins on the search path; refused ones are warned about.
fn plugins(cli_dirs: &[PathBuf]) -> PluginSet {
    let set = PluginSet::discover(&SearchPath::standard(cli_dirs));
    for refused in &set.refused {
        eprintln!("warning: {refused}");
    }
    set
}

/// The embedding cache the audit options ask for.
fn cache(no_cache: bool, dir: Option<PathBuf>) -> zooaudit_audit::Cache {
    zooaudit_audit::Cache::new(if no_cache {
        None
    } else {
        dir.or_else(zooaudit_audit::cache::default_dir)
    })
}

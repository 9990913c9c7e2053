//! The zoo service: `registry migrate`, `submit`, `worker`, `serve`
//! (zooaudit_service over the audit registry, zooaudit_auditdb).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use zooaudit_service::ZooConfig;
use zooaudit_service::execute::Runner;
use zooaudit_service::intake::Intake;
use zooaudit_service::worker::WorkerOptions;

/// The registry and the zoo's audit policy, shared by the commands.
#[derive(clap::Args, Debug, Clone)]
pub struct ZooArgs {
    /// The audit registry: postgres://…, sqlite://PATH, or a file path
    /// (SQLite). Also: ZOOAUDIT_DB.
    #[arg(long, env = "ZOOAUDIT_DB", value_name = "URL")]
    db: String,
    /// The zoo's audit file (faces, trigger suite, operating points, rule).
    #[arg(long, value_name = "AUDIT")]
    audit: PathBuf,
    /// The zoo file (default: the audit file's `zoo`).
    #[arg(long, value_name = "ZOO")]
    zoo: Option<PathBuf>,
}

impl ZooArgs {
    fn config(&self) -> ZooConfig {
        ZooConfig {
            audit: self.audit.clone(),
            zoo: self.zoo.clone(),
        }
    }
}

#[derive(clap::Subcommand, Debug)]
pub enum RegistryCommand {
    /// Create or upgrade the registry's schema (idempotent).
    Migrate {
        #[arg(long, env = "ZOOAUDIT_DB", value_name = "URL")]
        db: String,
    },
}

impl RegistryCommand {
    pub fn run(self) -> Result<u8> {
        match self {
            RegistryCommand::Migrate { db } => {
                let applied = zooaudit_service::app::migrate(&db)?;
                if applied.is_empty() {
                    println!(
                        "{db}: schema version {} (current; nothing to do)",
                        zooaudit_auditdb::schema_version()
                    );
                } else {
                    println!("{db}: applied schema versions {applied:?}");
                }
                Ok(0)
            }
        }
    }
}

/// `zooaudit submit`: the same as `POST /v1/audits`.
#[derive(clap::Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    zoo: ZooArgs,
    /// A model of the zoo, by name.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "manifest",
        required_unless_present = "manifest"
    )]
    model: Option<String>,
    /// A model manifest (remote source, pinned by sha256).
    #[arg(long, value_name = "FILE")]
    manifest: Option<PathBuf>,
    /// A reference by name (repeatable; default: by independence).
    #[arg(long = "reference", value_name = "NAME")]
    references: Vec<String>,
}

impl SubmitArgs {
    pub fn run(self) -> Result<u8> {
        let intake = Intake::open(&self.zoo.config())?;
        let text = self
            .manifest
            .as_ref()
            .map(|p| {
                std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))
            })
            .transpose()?;
        let (s, new) = zooaudit_service::app::submit(
            &self.zoo.db,
            &intake,
            self.model.as_deref(),
            text.as_deref(),
            &self.references,
        )?;
        let what = match (s.existing, s.requeued) {
            (false, _) => "queued",
            (true, true) => "failed before; queued again",
            (true, false) => "already asked",
        };
        println!(
            "{} {} ({what}; state {})",
            s.id, new.candidate_name, s.state
        );
        Ok(0)
    }
}

/// How a worker runs audits.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkArgs {
    /// Audits at once (each uses the cores ONNX Runtime gives it).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    concurrency: u64,
    /// This worker's name in the registry (default: host name and pid).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Seconds a claim lasts without renewal (renewed every third of it).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(3..))]
    lease: u64,
    /// Seconds before the first retry of a failed audit (doubling after).
    #[arg(long, default_value_t = 5)]
    backoff: u64,
    /// Seconds a running audit may take to finish after SIGTERM before it
    /// is released.
    #[arg(long, default_value_t = 30)]
    grace: u64,
    /// Stop after this many audits.
    #[arg(long, value_name = "N")]
    max_jobs: Option<u64>,
    /// Stop when nothing is left to claim (a batch run).
    #[arg(long)]
    until_idle: bool,
    /// Sign every audit (attestation.dsse.json) with this private key.
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// With --sign-key, also write the in-toto test-result envelope.
    #[arg(long, requires = "sign_key")]
    test_result: bool,
    /// Embedding cache directory (default: as `zooaudit audit`).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Do not use the embedding cache.
    #[arg(long)]
    no_cache: bool,
}

impl WorkArgs {
    fn worker(
        &self,
        dirs: &[PathBuf],
        zoo: &ZooArgs,
        intake: &Intake,
    ) -> Result<(Runner, WorkerOptions)> {
        let sign_key = self
            .sign_key
            .as_deref()
            .map(zooaudit_attest::SecretKey::read)
            .transpose()?;
        let fetch = zooaudit_registry::FetchOptions::from_env();
        let runner = Runner {
            config: zoo.config(),
            plugin_dirs: dirs.to_vec(),
            cache: if self.no_cache {
                None
            } else {
                self.cache_dir
                    .clone()
                    .or_else(zooaudit_audit::cache::default_dir)
            },
            sign_key,
            test_result: self.test_result,
            fetch,
            batch: 32,
        };
        let name = self.name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        let mut opts = WorkerOptions::new(name, intake.audit_digest.clone());
        opts.concurrency = self.concurrency as usize;
        opts.lease = Duration::from_secs(self.lease);
        opts.heartbeat = opts.lease / 3;
        opts.backoff = Duration::from_secs(self.backoff);
        opts.grace = Duration::from_secs(self.grace);
        opts.max_jobs = self.max_jobs;
        opts.until_idle = self.until_idle;
        Ok((runner, opts))
    }
}

/// `zooaudit worker`.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    zoo: ZooArgs,
    #[command(flatten)]
    work: WorkArgs,
}

impl WorkerArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let intake = Intake::open(&self.zoo.config())?;
        let (runner, opts) = self.work.worker(dirs, &self.zoo, &intake)?;
        eprintln!("worker {} on {}", opts.name, self.zoo.db);
        let st = zooaudit_service::app::worker(&self.zoo.db, runner, opts)?;
        eprintln!(
            "worker done: {} audits done, {} failed attempts, {} released, {} results dropped (taken by another worker), {} registry errors waited out",
            st.done, st.failed, st.released, st.lost, st.db_errors
        );
        let n = (st.done + st.failed).max(1) as f64;
        eprintln!(
            "worker time: audits {:.3} s each, queue (claim; result and artifacts committed) {:.2} ms each = {:.3} % of an audit",
            st.audit_time.as_secs_f64() / n,
            st.queue_time.as_secs_f64() * 1e3 / n,
            100.0 * st.queue_time.as_secs_f64() / st.audit_time.as_secs_f64().max(1e-9)
        );
        Ok(0)
    }
}

/// `zooaudit serve`.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    zoo: ZooArgs,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: std::net::SocketAddr,
    /// File holding the bearer token for POST /v1/audits (also:
    /// ZOOAUDIT_TOKEN). Without one, submissions are refused.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// File holding the Hugging Face webhook secret (also:
    /// ZOOAUDIT_HOOK_SECRET). Without one, deliveries are refused.
    #[arg(long, value_name = "FILE")]
    hook_secret_file: Option<PathBuf>,
    /// Run this many worker slots in the server process (0: workers run
    /// apart, `zooaudit worker`).
    #[arg(long, default_value_t = 1)]
    workers: u64,
    #[command(flatten)]
    work: WorkArgs,
}

fn secret(file: &Option<PathBuf>, env: &str) -> Result<Option<String>> {
    if let Some(f) = file {
        let s =
            std::fs::read_to_string(f).with_context(|| format!("{}: cannot read", f.display()))?;
        let s = s.trim().to_string();
        anyhow::ensure!(!s.is_empty(), "{}: empty", f.display());
        return Ok(Some(s));
    }
    Ok(std::env::var(env).ok().filter(|s| !s.trim().is_empty()))
}

impl ServeArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let intake = Intake::open(&self.zoo.config())?;
        let mut work = self.work.clone();
        work.concurrency = self.workers.max(1);
        let embedded = if self.workers > 0 {
            Some(work.worker(dirs, &self.zoo, &intake)?)
        } else {
            None
        };
        let secrets = zooaudit_service::app::Secrets {
            token: secret(&self.token_file, "ZOOAUDIT_TOKEN")?,
            hook_secret: secret(&self.hook_secret_file, "ZOOAUDIT_HOOK_SECRET")?,
        };
        if secrets.token.is_none() {
            eprintln!(
                "warning: no token (--token-file, ZOOAUDIT_TOKEN): POST /v1/audits refuses every submission"
            );
        }
        zooaudit_service::app::serve_zoo(
            &self.zoo.db,
            intake,
            secrets,
            self.listen,
            embedded,
            |addr| {
                println!("listening on {addr}");
            },
        )?;
        Ok(0)
    }
}

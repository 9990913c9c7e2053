//! `guard serve` and `guard check`: the run-time guard over a pair bundle
//! (zooaudit_guard).

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use zooaudit_guard::bundle::PairBundle;
use zooaudit_guard::pair::{Pair, Schedule};
use zooaudit_guard::server::{Policy, ServeOptions};

use super::plugins;

/// What the guard does when the pair disagrees.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum OnDisagree {
    /// Answer with the verdict.
    Flag,
    /// Refuse with HTTP 409.
    Reject,
}

/// How each decision shares the CPU between the two models.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum ScheduleArg {
    /// Measured at start: the faster model may run on one thread at idle
    /// priority beside the slower one.
    Auto,
    Concurrent,
    Sequential,
}

#[derive(clap::Subcommand, Debug)]
pub enum GuardCommand {
    /// Serve POST /v1/embed, /v1/embed/batch, GET /healthz, /metrics.
    Serve(ServeArgs),
    /// The guard's decision offline, one JSON line per image (or a table).
    /// Exit 0 all agree, 1 some disagree, 2 error.
    Check(CheckArgs),
}

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// Address to listen on (port 0: any free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// Target clean FNMR whose threshold decides (one of the bundle's).
    #[arg(long, default_value_t = 0.01)]
    operating_point: f64,
    /// On disagreement: flag (answer with the verdict) or reject (HTTP 409).
    #[arg(long, value_enum, default_value_t = OnDisagree::Flag)]
    on_disagree: OnDisagree,
    /// Append every disagreement to this JSON-lines file.
    #[arg(long, value_name = "FILE")]
    quarantine_log: Option<PathBuf>,
    /// Keep disagreeing images in this directory.
    #[arg(long, value_name = "DIR")]
    quarantine_dir: Option<PathBuf>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_body: usize,
    /// Requests in the models at once; more wait (up to --queue-timeout) then get 503.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Seconds a request may wait for a model slot.
    #[arg(long, default_value_t = 5.0)]
    queue_timeout: f64,
    /// Seconds for a whole request (slow bodies get 408, slow models 504).
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// How each decision shares the CPU between the two models.
    #[arg(long, value_enum, default_value_t = ScheduleArg::Auto)]
    schedule: ScheduleArg,
    /// Most images in one model run (queued requests are batched up to
    /// this; larger batches run in pieces): bounds the models' memory.
    #[arg(long, default_value_t = 8)]
    model_batch: usize,
    /// The drift monitor's window: the last N decisions (…).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..))]
    drift_window: u64,
    /// (…) none older than this many seconds.
    #[arg(long, default_value_t = 600.0)]
    drift_seconds: f64,
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    #[arg(value_name = "BUNDLE")]
    bundle: PathBuf,
    /// Aligned face images or directories.
    #[arg(required = true, value_name = "IMAGES")]
    images: Vec<PathBuf>,
    #[arg(long, default_value_t = 0.01)]
    operating_point: f64,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

impl GuardCommand {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        match self {
            GuardCommand::Serve(a) => a.run(dirs),
            GuardCommand::Check(a) => a.run(dirs),
        }
    }
}

impl ServeArgs {
    fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        if !(self.queue_timeout > 0.0 && self.request_timeout > 0.0 && self.drift_seconds > 0.0) {
            bail!("--queue-timeout, --request-timeout and --drift-seconds must be positive");
        }
        let fetch = zooaudit_registry::FetchOptions::from_env();
        let b = PairBundle::read(&self.bundle)?;
        let set = plugins(dirs);
        let mut pair = Pair::open(b, &self.bundle, &set, &fetch)?;
        match self.schedule {
            ScheduleArg::Auto => {
                let t = pair.tune(&set)?;
                let single = t
                    .single_thread_ms
                    .map(|ms| format!(", the faster on one thread {ms:.1} ms"))
                    .unwrap_or_default();
                eprintln!(
                    "guard: probe {:.1} ms, reference {:.1} ms per face{single}; {}",
                    t.probe_ms, t.reference_ms, t.schedule
                );
            }
            ScheduleArg::Concurrent => pair.schedule = Schedule::Concurrent,
            ScheduleArg::Sequential => pair.schedule = Schedule::Sequential,
        }
        let opts = ServeOptions {
            operating_point: self.operating_point,
            policy: match self.on_disagree {
                OnDisagree::Flag => Policy::Flag,
                OnDisagree::Reject => Policy::Reject,
            },
            max_body: self.max_body,
            concurrency: self.concurrency,
            queue_timeout: std::time::Duration::from_secs_f64(self.queue_timeout),
            request_timeout: std::time::Duration::from_secs_f64(self.request_timeout),
            quarantine_log: self.quarantine_log,
            quarantine_dir: self.quarantine_dir,
            model_batch: self.model_batch,
            drift_window: self.drift_window as usize,
            drift_max_age: std::time::Duration::from_secs_f64(self.drift_seconds),
            ..Default::default()
        };
        zooaudit_guard::server::serve_blocking(
            std::sync::Arc::new(pair),
            opts,
            self.listen,
            |addr| {
                println!("listening on http://{addr}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            },
        )?;
        eprintln!("guard: shut down");
        Ok(0)
    }
}

impl CheckArgs {
    fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let (bundle, operating_point) = (&self.bundle, self.operating_point);
        let b = PairBundle::read(bundle)?;
        let threshold = b
            .operating_point(operating_point)
            .map(|o| o.threshold)
            .with_context(|| {
                format!(
                    "{}: no threshold for operating point {operating_point}",
                    bundle.display()
                )
            })?;
        let set = plugins(dirs);
        let fetch = zooaudit_registry::FetchOptions::from_env();
        let pair = Pair::open(b, bundle, &set, &fetch)?;
        let files = zooaudit_imaging::collect_images(&self.images)?;
        let mut disagree = 0usize;
        if !self.json {
            println!("{:<9} {:>8} {:>9}  IMAGE", "VERDICT", "SCORE", "THRESHOLD");
        }
        for f in &files {
            let bytes =
                std::fs::read(f).with_context(|| format!("{}: cannot read", f.display()))?;
            let img = pair
                .decode(&bytes, &f.display().to_string())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let sha = zooaudit_guard::pair::sha256_hex(&bytes);
            let d = pair
                .decide(&[img], &[sha], threshold)
                .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                .remove(0);
            let verdict = if d.agree { "agree" } else { "disagree" };
            disagree += usize::from(!d.agree);
            if self.json {
                let line = serde_json::json!({"image": f.display().to_string(), "image_sha256": d.image_sha256,
                                              "score": d.score, "threshold": d.threshold, "verdict": verdict});
                println!("{line}");
            } else {
                println!(
                    "{verdict:<9} {:>8.4} {:>9.4}  {}",
                    d.score,
                    d.threshold,
                    f.display()
                );
            }
        }
        eprintln!(
            "{} images: {disagree} disagree at operating point {operating_point}",
            files.len()
        );
        Ok(u8::from(disagree > 0))
    }
}

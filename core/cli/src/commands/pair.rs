//! `pair fit AUDIT --out pair.json`: the audit's steps for its first
//! candidate → first reference pair ([`zooaudit_guard::fit::fit_bundle`]).

use std::path::PathBuf;

use anyhow::Result;
use zooaudit_guard::bundle::{Calibration, PairBundle, Serve};
use zooaudit_guard::pair::Pair;

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
        /// How the thresholds are placed: on every calibration face
        /// together, or at the worst face source's own threshold.
        #[arg(long, value_enum, default_value_t = CalibrateArg::Pooled)]
        calibrate: CalibrateArg,
    },
    /// New thresholds from clean faces of the deployment's own population
    /// (the translator unchanged); the old ones stay in the bundle's
    /// history. Half the faces place the thresholds, half measure them; an
    /// operating point they cannot support (rule of three) is refused.
    Recalibrate {
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Clean aligned faces of the served population (files or folders).
        #[arg(value_name = "FACES", required = true)]
        faces: Vec<PathBuf>,
        /// Where to write the recalibrated bundle (default: over BUNDLE).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Operating points to recalibrate (repeatable; default: every one
        /// of the bundle's). The others are dropped from the new bundle.
        #[arg(long = "operating-point", value_name = "FNMR")]
        operating_points: Vec<f64>,
        /// Seeds the split of the faces into calibration and check halves.
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

/// `pair fit --calibrate`.
#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum CalibrateArg {
    Pooled,
    WorstSource,
}

impl PairCommand {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        match self {
            PairCommand::Fit {
                audit,
                out,
                serve,
                cache_dir,
                no_cache,
                calibrate,
            } => {
                let spec = zooaudit_audit::AuditSpec::load(&audit)?;
                let set = plugins(dirs);
                let opts = zooaudit_audit::RunOptions {
                    cache: cache(no_cache, cache_dir),
                    batch: 32,
                    fetch: zooaudit_registry::FetchOptions::from_env(),
                };
                let calibration = match calibrate {
                    CalibrateArg::Pooled => Calibration::Pooled,
                    CalibrateArg::WorstSource => Calibration::WorstSource,
                };
                let mut shown = Reporter::new(false);
                let bundle = zooaudit_guard::fit::fit_bundle(
                    &spec,
                    &set,
                    &opts,
                    serve.into(),
                    calibration,
                    &mut |p| shown.event(p),
                )?;
                bundle.write(&out)?;
                super::audit::print_bundle(&bundle, &out);
                let dir = opts.cache.dir().map(|d| d.display().to_string());
                eprintln!("{}", shown.cache_line(dir.as_deref()));
                Ok(0)
            }
            PairCommand::Recalibrate {
                bundle,
                faces,
                out,
                operating_points,
                seed,
            } => recalibrate(dirs, &bundle, &faces, out, &operating_points, seed),
        }
    }
}

fn recalibrate(
    dirs: &[PathBuf],
    path: &std::path::Path,
    faces: &[PathBuf],
    out: Option<PathBuf>,
    targets: &[f64],
    seed: u64,
) -> Result<u8> {
    let b = PairBundle::read(path)?;
    let targets: Vec<f64> = if targets.is_empty() {
        b.thresholds.iter().map(|o| o.target_fnmr).collect()
    } else {
        targets.to_vec()
    };
    for t in &targets {
        if b.operating_point(*t).is_none() {
            anyhow::bail!(
                "{}: --operating-point {t}: the bundle has thresholds for {:?}",
                path.display(),
                b.thresholds
                    .iter()
                    .map(|o| o.target_fnmr)
                    .collect::<Vec<_>>()
            );
        }
    }
    let set = plugins(dirs);
    let fetch = zooaudit_registry::FetchOptions::from_env();
    let pair = Pair::open(b, path, &set, &fetch)?;
    let files = zooaudit_imaging::collect_images(faces)?;
    let scores = zooaudit_guard::calibrate::clean_scores(&pair, &files)?;
    let mut b = pair.bundle.clone();
    let names = faces.iter().map(|f| f.display().to_string()).collect();
    let time = zooaudit_guard::calibrate::now_rfc3339();
    let r = zooaudit_guard::calibrate::recalibrate(&mut b, &scores, names, &targets, seed, time)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let out = out.unwrap_or_else(|| path.to_path_buf());
    b.write(&out)?;
    let previous = b
        .history
        .last()
        .map(|h| h.previous.clone())
        .unwrap_or_default();
    println!(
        "recalibrated {} on {} clean faces ({} calibrate, {} check; the translator unchanged; the old thresholds are in its history)",
        out.display(),
        files.len(),
        r.calibration_samples,
        r.heldout_samples
    );
    for o in &b.thresholds {
        let was = previous
            .iter()
            .find(|p| p.target_fnmr == o.target_fnmr)
            .map_or(String::new(), |p| format!(" (was {:.4})", p.threshold));
        println!("{}", super::audit::operating_point_line(o, &was));
    }
    Ok(0)
}

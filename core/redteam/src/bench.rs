//! `zooaudit bench paper`: the paper's evaluation, on real models with
//! backdoors injected by [`crate::inject`].
//!
//! For every seed a random (impostor, victim) pair of labelled identities is
//! drawn; every model × trigger × {one-to-one, all-to-one} × strength gets a
//! backdoored variant. Every pairing the paper reports is then evaluated
//! on cached embeddings with the paper's protocol, which is *not* the
//! audit's pipeline: its own seeded split of all faces (½ fit, ¼
//! calibration, ¼ held-out; the audit splits by face role and adds
//! augmented and trigger-fit-control copies to the fit faces, the paper and
//! this bench add none), each `--detector` plugin (default: `pairing`, the
//! paper's ridge translator) fitted and scored through the plugin ABI as
//! the audit and the guard do, thresholds placed by the audit's
//! [`zooaudit_audit::stats::threshold_at`], and embeddings stored under the
//! audit's cache keys. `bench verdict` is the one that runs the audit's own
//! steps (`zooaudit_audit::evaluate`). Tables:
//! * **Table 3**: clean pairs, FNMR on poisoned samples (triggered held-out
//!   faces wrongly flagged) at each clean-FNMR operating point;
//! * **Table 4**: backdoored pairs (probe backdoored, reference backdoored,
//!   both with different backdoors; both directions), FMR on poisoned
//!   samples (attacker images with the trigger, backdoor active, that still
//!   pass as agreement: missed);
//! * **Table 2**: attack metrics of every variant;
//! * each detector's fit and score time.
//!
//! Tables 3 and 4 have one column group per detector.
//!
//! Mean ± standard deviation over seeds. Embeddings are cached on disk.

mod data;
mod pair;
mod tables;
mod zoo;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use zooaudit_audit::Cache;
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_triggers::Suite;

use crate::inject::{InjectOptions, Injected};
use crate::metrics::AttackMetrics;
use crate::{Labeled, RedteamError};
use data::Faces;
use tables::Backdoored;
use zoo::Zoo;

#[derive(clap::Args, Debug, Clone)]
pub struct PaperArgs {
    /// The two model manifests (the paper pairs two models).
    #[arg(long, num_args = 2, value_names = ["A", "B"], required = true)]
    pub models: Vec<PathBuf>,
    /// Aligned faces: `unlabeled/` and `labeled/<identity>/`.
    #[arg(long, value_name = "DIR")]
    pub faces: PathBuf,
    /// Trigger suite (the paper's: triggers/paper.toml).
    #[arg(long, value_name = "SUITE")]
    pub triggers: PathBuf,
    /// Number of seeds (random impostor/victim pairs and splits).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Backdoor strengths.
    #[arg(long, value_delimiter = ',', default_value = "1.0,0.6")]
    pub strengths: Vec<f32>,
    /// Where the backdoored zoo and the results go.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Embedding cache (default: the audit's).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Write score histograms (SVG) of seed 0 here (first detector).
    #[arg(long, value_name = "DIR")]
    pub figures: Option<PathBuf>,
    /// A detector-strategy plugin to evaluate, with options
    /// (`pairing`, `relative:anchors=128`, `pairing:translator=procrustes`);
    /// repeatable: every detector sees the same zoo, split and thresholds,
    /// one column group each.
    #[arg(
        long = "detector",
        value_name = "NAME[:k=v,…]",
        default_value = "pairing"
    )]
    pub detectors: Vec<String>,
}

/// A histogram to draw: title, genuine, ZEI and poisoned scores, threshold.
type Figure = (String, Vec<f32>, Vec<f32>, Vec<f32>, f32);
/// A Table 4 row: backdoored model(s), direction, trigger, attack, strength.
type RowKey = (String, String, String, String, String);

const OPS: [f64; 3] = [0.001, 0.01, 0.05];

/// Measures an injected model right after `inject` (the CLI's `--measure`).
pub fn measure(
    done: &Injected,
    opts: &InjectOptions,
    plugins: &PluginSet,
) -> Result<AttackMetrics, RedteamError> {
    let original = Embedder::open(ModelManifest::load(&opts.manifest)?, plugins)?;
    let bd = Embedder::open(ModelManifest::load(&done.manifest)?, plugins)?;
    let suite = Suite::load(&opts.suite)?;
    let pre = original.preprocess();
    let stamp = suite
        .triggers
        .iter()
        .find(|t| t.name == opts.trigger)
        .ok_or_else(|| RedteamError::invalid("trigger vanished"))?
        .stamp(&suite.path, pre.height, pre.width)?;
    let labeled = Labeled::load(&opts.labeled)?;
    crate::attack_metrics(
        &original,
        &bd,
        &done.record,
        &stamp,
        &labeled,
        &opts.calibration,
    )
}

/// Results of the whole bench (also written as JSON).
#[derive(Debug, Default, Serialize)]
pub struct PaperResults {
    pub markdown: String,
    pub seconds: f64,
    pub variants: usize,
}

/// Runs the bench; `log` gets progress lines. Returns the tables as Markdown.
pub fn run_paper(
    args: &PaperArgs,
    plugins: &PluginSet,
    log: &mut dyn FnMut(String),
) -> Result<PaperResults, RedteamError> {
    let t0 = Instant::now();
    let cache = Cache::new(
        args.cache_dir
            .clone()
            .or_else(zooaudit_audit::cache::default_dir),
    );
    let suite = Suite::load(&args.triggers)?;
    let detectors = args
        .detectors
        .iter()
        .map(|d| pair::Detector::parse(d, plugins))
        .collect::<Result<Vec<_>, _>>()?;
    let labeled_dir = args.faces.join("labeled");
    let labeled = Labeled::load(&labeled_dir)?;
    let faces = Faces::load(&args.faces, &labeled)?;
    let n = faces.files.len();
    let all_idx: Vec<usize> = (0..n).collect();
    let labeled_idx: Vec<usize> = (0..n).filter(|&i| faces.identity[i].is_some()).collect();
    log(format!(
        "bench paper: {n} faces ({} labelled, {} identities), {} triggers, {} seeds",
        labeled_idx.len(),
        labeled.identities.len(),
        suite.triggers.len(),
        args.seeds
    ));
    let zoo = Zoo {
        args,
        plugins,
        suite: &suite,
        labeled_dir,
        faces: &faces,
        cache: &cache,
        all_idx,
        labeled_idx,
    };
    let (originals, orig_emb) = zoo.originals(log)?;
    let ids: Vec<String> = labeled.identities.keys().cloned().collect();
    let (variants, variant_emb) = zoo.variants(&originals, &orig_emb, &ids, log)?;
    // Evaluation.
    let names: Vec<String> = orig_emb.iter().map(|m| m.name.clone()).collect();
    let mut md = String::new();
    tables::table2(&mut md, &variants, &names, args.seeds);
    let mut fig_jobs = tables::table3(
        &mut md, &suite, &orig_emb, &names, &faces, args.seeds, &detectors,
    )?;
    let backdoored = Backdoored {
        args,
        faces: &faces,
        names: &names,
        orig_emb: &orig_emb,
        variants: &variants,
        variant_emb: &variant_emb,
        detectors: &detectors,
    };
    tables::table4(&mut md, &backdoored, &mut fig_jobs)?;
    tables::detector_times(&mut md, &detectors);
    if let Some(dir) = &args.figures {
        tables::figures(&mut md, dir, &fig_jobs)?;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let _ = writeln!(md, "\n{} variants, {:.0} s.", variants.len(), seconds);
    std::fs::create_dir_all(&args.out).map_err(|e| RedteamError::file(&args.out, e))?;
    zooaudit_formats::write_atomic(&args.out.join("tables.md"), md.as_bytes())?;
    zooaudit_formats::write_atomic(
        &args.out.join("variants.json"),
        serde_json::to_string_pretty(&variants)?.as_bytes(),
    )?;
    println!("{md}");
    Ok(PaperResults {
        markdown: md,
        seconds,
        variants: variants.len(),
    })
}

//! `zooaudit bench verdict`: the audit verdict's power and false alarms,
//! measured on injected backdoors.
//!
//! Every configuration runs the audit's own steps ([`zooaudit_audit::load_faces`],
//! [`zooaudit_audit::embed_model`], [`zooaudit_audit::evaluate`] with the
//! audit file's detector plugin and verdict settings) — the pipeline of
//! `zooaudit audit`, with one difference: the backdoored candidate's
//! embeddings are *derived* from its base model's cached embeddings by the
//! injected subgraph's own formula ([`crate::inject::Backdoor::apply`], the
//! trigger detector evaluated on each stamped input), instead of running
//! the spliced ONNX file. The two agree to float rounding (a test in
//! `core/redteam/tests` checks it against the injected model), and this
//! lets one cached set of embeddings serve every strength, impostor size
//! and suite. The held-out fidelity matrix (n² scorings per pair, the
//! audit's *inconclusive* check) is skipped: it depends on clean faces only,
//! which the injected subgraph leaves unchanged, and the audit of the base
//! pair reports it.
//!
//! Per split seed: a random (impostor, victim) pair among the identities
//! with the most faces; both base models backdoored with each backdoor
//! trigger, one-to-one and all-to-one, at every strength; the impostor's
//! held-out faces cut to 3, 6 or 11; audited with one reference (the other
//! base model) and with two (the other model and a duplicate of it under
//! another name: a sound rule must not lose power to a duplicated
//! witness); and a clean candidate audited next to a backdoored reference
//! and the candidate's duplicate (the report must name the reference). On
//! clean pairs (both orders), the share of audits falsely flagged over all
//! split seeds and suites. The suites are given ones plus the backdoor's
//! trigger when absent.

mod cases;
mod derive;
mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use zooaudit_audit::{
    AuditSpec, Cache, CacheUse, Evaluation, Face, ModelEmbeddings, ModelRole, RunOptions, Split,
    SuiteStamps, VerdictKind,
};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_triggers::Suite;

use crate::{Labeled, RedteamError};
use cases::{backdoored_cases, outcome};
use derive::renamed;
pub use report::{monotonicity_violations, tables};

#[derive(clap::Args, Debug, Clone)]
pub struct VerdictArgs {
    /// The audit file: its first candidate and first reference are the two
    /// base models; its faces, detector and verdict settings are used.
    #[arg(value_name = "AUDIT")]
    pub audit: PathBuf,
    /// Trigger suites to audit with (the backdoor's trigger is added to a
    /// suite that lacks it).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "triggers/paper.toml,triggers/default.toml"
    )]
    pub suites: Vec<PathBuf>,
    /// The suite the backdoor triggers come from.
    #[arg(long, default_value = "triggers/paper.toml")]
    pub backdoor_suite: PathBuf,
    /// Backdoor triggers (names in --backdoor-suite).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "small-square,large-checkerboard"
    )]
    pub backdoor_triggers: Vec<String>,
    /// Split seeds with backdoored models (the first N from --first-seed).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Split seeds for the clean-pair false-alarm count (the first N from
    /// --first-seed, ≥ seeds).
    #[arg(long, default_value_t = 20)]
    pub clean_seeds: u64,
    /// The first split seed (the audit file's own split seed shares its
    /// embeddings with an audit of that file).
    #[arg(long, default_value_t = 0)]
    pub first_seed: u64,
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.45,0.6,0.8,1.0")]
    pub strengths: Vec<f32>,
    /// Impostor faces the audit sees (one-to-one).
    #[arg(long, value_delimiter = ',', default_value = "3,6,11")]
    pub impostor_faces: Vec<usize>,
    /// Which base models to backdoor (indices: 0 the audit file's
    /// candidate, 1 its reference).
    #[arg(long, value_delimiter = ',', default_value = "0,1")]
    pub backdoored: Vec<usize>,
    /// Where verdict-bench.json and verdict-bench.md go.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Embedding cache (default: the audit's).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// One audited configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub suite: String,
    pub seed: u64,
    /// "clean", "one-to-one", "all-to-one", or "clean-next-to-backdoored".
    pub case: String,
    pub candidate: String,
    pub backdoored: Option<String>,
    pub trigger: Option<String>,
    pub strength: Option<f32>,
    pub impostor_faces: Option<usize>,
    pub references: usize,
    pub verdict: VerdictKind,
    /// Models the report names as the one that moves.
    pub named: Vec<String>,
    /// Whether the culprit naming is right: the backdoored model is named
    /// for every alarm it was named in, and no clean model is named.
    pub named_right: bool,
    pub alarms: usize,
    /// The candidate family's test with the smallest adjusted p (ties: the
    /// largest statistic).
    pub top_evidence: Option<zooaudit_audit::evidence::EvidenceRow>,
    /// The impostor's test with the backdoor's trigger (one-to-one).
    pub impostor_evidence: Option<zooaudit_audit::evidence::EvidenceRow>,
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct VerdictBench {
    pub audit: String,
    pub alpha: f64,
    pub outcomes: Vec<Outcome>,
    pub seconds: f64,
}

struct Base {
    name: String,
    embedder: Embedder,
    embeddings: ModelEmbeddings,
}

/// The suite at `path` with the backdoor triggers appended where missing.
fn suite_with(
    path: &std::path::Path,
    extra: &Suite,
    names: &[String],
) -> Result<Suite, RedteamError> {
    let mut s = Suite::load(path)?;
    for n in names {
        if !s.triggers.iter().any(|t| &t.name == n) {
            let t = extra
                .triggers
                .iter()
                .find(|t| &t.name == n)
                .ok_or_else(|| {
                    RedteamError::file(
                        &extra.path,
                        format!("no trigger named {}", zooaudit_formats::quote(n)),
                    )
                })?;
            s.triggers.push(t.clone());
        }
    }
    Ok(s)
}

struct Ctx<'a> {
    spec: &'a AuditSpec,
    faces: &'a [Face],
    split: &'a Split,
    names: &'a [String],
    detector: &'a zooaudit_host::Plugin,
    /// The bench's embedding cache (the injections calibrate through it).
    cache: &'a Cache,
}

impl Ctx<'_> {
    fn run(&self, split: &Split, models: &[ModelEmbeddings]) -> Result<Evaluation, RedteamError> {
        // No fidelity matrix (clean faces only: the base pair's audit
        // reports it), no scores.csv rows, no exported detectors.
        let skip = zooaudit_audit::EvalOptions {
            fidelity: false,
            scores: false,
            exports: false,
        };
        zooaudit_audit::evaluate_with(
            self.spec,
            self.faces,
            split,
            self.names,
            models,
            self.detector,
            &skip,
            &mut |_| {},
        )
        .map_err(RedteamError::from)
    }
}

/// The identities with the most labelled faces (at least two), among
/// which each seed draws its impostor and victim.
fn largest_identities(labeled: &Labeled, labeled_dir: &Path) -> Result<Vec<String>, RedteamError> {
    let most = labeled.identities.values().map(Vec::len).max().unwrap_or(0);
    let big: Vec<String> = labeled
        .identities
        .iter()
        .filter(|(_, v)| v.len() == most)
        .map(|(k, _)| k.clone())
        .collect();
    if big.len() < 2 {
        return Err(RedteamError::file(
            labeled_dir,
            "needs two identities with the most faces",
        ));
    }
    Ok(big)
}

/// Runs the bench.
pub fn run_verdict(
    args: &VerdictArgs,
    plugins: &PluginSet,
    log: &mut dyn FnMut(String),
) -> Result<VerdictBench, RedteamError> {
    let t0 = Instant::now();
    let spec0 = AuditSpec::load(&args.audit)?;
    let opts = RunOptions {
        cache: Cache::new(
            args.cache_dir
                .clone()
                .or_else(zooaudit_audit::cache::default_dir),
        ),
        batch: 32,
        fetch: zooaudit_registry::FetchOptions::from_env(),
    };
    let opened = zooaudit_audit::open_models(&spec0, plugins, &opts)?;
    if opened.len() < 2 {
        return Err(RedteamError::file(
            &args.audit,
            "needs a candidate and a reference",
        ));
    }
    let size = zooaudit_audit::face_size(&opened[0].0);
    let detector = plugins.detector(&spec0.detector)?;
    let labeled_dir = spec0
        .labeled
        .clone()
        .ok_or_else(|| RedteamError::file(&args.audit, "needs labelled faces"))?;
    let labeled = Labeled::load(&labeled_dir)?;
    let big = largest_identities(&labeled, &labeled_dir)?;
    let extra = Suite::load(&args.backdoor_suite)?;
    let mut outcomes = Vec::new();
    let mut opened = opened;
    for suite_path in &args.suites {
        let suite = suite_with(suite_path, &extra, &args.backdoor_triggers)?;
        let suite_name = suite_path.display().to_string();
        let stamps = SuiteStamps::new(&suite, size, spec0.seed)?;
        let first = args.first_seed;
        for seed in first..first + args.clean_seeds.max(args.seeds) {
            let setup = Setup {
                args,
                spec0: &spec0,
                opts: &opts,
                size,
                detector,
                labeled_dir: &labeled_dir,
                big: &big,
            };
            outcomes.extend(setup.seed(&suite_name, &stamps, seed, &mut opened, log)?);
        }
    }
    Ok(VerdictBench {
        audit: args.audit.display().to_string(),
        alpha: spec0.alpha,
        outcomes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// What every audit of the bench shares.
#[derive(Clone, Copy)]
struct Setup<'a> {
    args: &'a VerdictArgs,
    spec0: &'a AuditSpec,
    opts: &'a RunOptions,
    size: (u32, u32),
    detector: &'a zooaudit_host::Plugin,
    labeled_dir: &'a Path,
    big: &'a [String],
}

impl Setup<'_> {
    /// The audits of one suite at one split seed: both clean pairs and,
    /// below `args.seeds`, the backdoored cases. The opened models are
    /// taken from `opened` and put back.
    fn seed(
        &self,
        suite_name: &str,
        stamps: &SuiteStamps,
        seed: u64,
        opened: &mut Vec<(Embedder, ModelRole)>,
        log: &mut dyn FnMut(String),
    ) -> Result<Vec<Outcome>, RedteamError> {
        let Setup {
            args,
            spec0,
            opts,
            size,
            detector,
            labeled_dir,
            big,
        } = *self;
        let mut outcomes = Vec::new();
        let mut spec = spec0.clone();
        spec.split_seed = seed;
        let mut warnings = Vec::new();
        let mut faces =
            zooaudit_audit::load_faces(&spec, size, None, &opts.cache, &mut warnings, &mut |_| {})?;
        zooaudit_audit::augment_fit_faces(&spec, &stamps.triggers, &mut faces);
        let split = Split::of(&faces);
        let mut used = CacheUse::default();
        let te = Instant::now();
        let mut bases = Vec::new();
        for (e, _) in opened.drain(..) {
            let m = zooaudit_audit::embed_model(
                &e,
                ModelRole::Candidate,
                &faces,
                &split,
                stamps,
                opts,
                &mut used,
                &mut |_| {},
            )?;
            bases.push(Base {
                name: m.name.clone(),
                embedder: e,
                embeddings: m,
            });
        }
        log(format!(
            "{suite_name} seed {seed}: embeddings {} cached, {} new, {:.1} s",
            used.hits,
            used.misses,
            te.elapsed().as_secs_f64()
        ));
        let ctx = Ctx {
            spec: &spec,
            faces: &faces,
            split: &split,
            names: &stamps.names,
            detector,
            cache: &opts.cache,
        };
        for (c, r) in [(0, 1), (1, 0)] {
            let models = [
                renamed(&bases[c].embeddings, &bases[c].name, ModelRole::Candidate),
                renamed(&bases[r].embeddings, &bases[r].name, ModelRole::Reference),
            ];
            let ev = ctx.run(&split, &models)?;
            outcomes.push(outcome(
                &ev, suite_name, seed, "clean", None, None, None, None, 1, None,
            ));
        }
        if seed - args.first_seed < args.seeds {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let mut pick = big.to_vec();
            pick.shuffle(&mut rng);
            let (impostor, victim) = (pick[0].clone(), pick[1].clone());
            let done = backdoored_cases(
                args,
                &ctx,
                &bases,
                labeled_dir,
                (&impostor, &victim),
                stamps,
                seed,
                suite_name,
            )?;
            log(format!(
                "{suite_name} seed {seed}: impostor {impostor}, victim {victim}: {} audits",
                done.len()
            ));
            outcomes.extend(done);
        }
        *opened = bases
            .into_iter()
            .map(|b| (b.embedder, ModelRole::Candidate))
            .collect();
        Ok(outcomes)
    }
}

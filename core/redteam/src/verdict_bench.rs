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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
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

use crate::inject::{Backdoor, InjectOptions, calibrate};
use crate::{AttackKind, Labeled, RedteamError, other};

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
    /// Split seeds with backdoored models (0..N).
    #[arg(long, default_value_t = 3)]
    pub seeds: u64,
    /// Split seeds for the clean-pair false-alarm count (0..N, ≥ seeds).
    #[arg(long, default_value_t = 20)]
    pub clean_seeds: u64,
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
    let mut s = Suite::load(path).map_err(other)?;
    for n in names {
        if !s.triggers.iter().any(|t| &t.name == n) {
            let t = extra
                .triggers
                .iter()
                .find(|t| &t.name == n)
                .ok_or_else(|| {
                    RedteamError::file(&extra.path, format!("no trigger named '{n}'"))
                })?;
            s.triggers.push(t.clone());
        }
    }
    Ok(s)
}

/// The detector's output on every image the audit embeds for `e`: clean
/// faces, each trigger on held-out faces, each control on calibration and
/// held-out faces.
struct Detections {
    clean: Vec<f32>,
    triggered: Vec<Vec<f32>>,
    controls: Vec<Vec<f32>>,
}

fn detections(
    bd: &Backdoor,
    e: &Embedder,
    faces: &[Face],
    split: &Split,
    stamps: &SuiteStamps,
) -> Result<Detections, RedteamError> {
    let pre = e.preprocess();
    let mut buf = vec![0f32; pre.sample_len()];
    let mut det = |img: &image::RgbImage, f: &Face| -> Result<f32, RedteamError> {
        pre.write(img, &f.path, &mut buf).map_err(other)?;
        Ok(bd.detect(&buf))
    };
    let clean = faces
        .iter()
        .map(|f| det(&f.image, f))
        .collect::<Result<Vec<_>, _>>()?;
    let cal_eval = split.calibration_heldout();
    let (mut triggered, mut controls) = (Vec::new(), Vec::new());
    for (t, c) in stamps.triggers.iter().zip(&stamps.controls) {
        let mut stamped =
            |s: &zooaudit_triggers::Stamp, idx: &[usize]| -> Result<Vec<f32>, RedteamError> {
                idx.iter()
                    .map(|&i| {
                        let img = s.apply(&faces[i].image).ok_or_else(|| {
                            RedteamError::file(&faces[i].path, "trigger does not fit")
                        })?;
                        det(&img, &faces[i])
                    })
                    .collect()
            };
        triggered.push(stamped(t, &split.heldout)?);
        controls.push(stamped(c, &cal_eval)?);
    }
    Ok(Detections {
        clean,
        triggered,
        controls,
    })
}

fn apply_rows(bd: &Backdoor, rows: &[f32], dim: usize, det: &[f32]) -> Vec<f32> {
    rows.chunks(dim)
        .zip(det)
        .flat_map(|(e, d)| bd.apply(e, *d))
        .collect()
}

/// The backdoored model's embeddings, derived from its base's.
fn backdoored(
    bd: &Backdoor,
    base: &ModelEmbeddings,
    det: &Detections,
    name: &str,
) -> ModelEmbeddings {
    let dim = base.dim;
    ModelEmbeddings {
        name: name.to_string(),
        role: ModelRole::Candidate,
        dim,
        clean: apply_rows(bd, &base.clean, dim, &det.clean),
        triggered: base
            .triggered
            .iter()
            .zip(&det.triggered)
            .map(|(r, d)| apply_rows(bd, r, dim, d))
            .collect(),
        controls: base
            .controls
            .iter()
            .zip(&det.controls)
            .map(|(r, d)| apply_rows(bd, r, dim, d))
            .collect(),
    }
}

fn renamed(m: &ModelEmbeddings, name: &str, role: ModelRole) -> ModelEmbeddings {
    let mut m = m.clone();
    m.name = name.to_string();
    m.role = role;
    m
}

/// Keeps the held-out faces `keep` allows (the impostor cut to fewer faces).
fn subset(
    split: &Split,
    models: &[ModelEmbeddings],
    keep: &dyn Fn(usize) -> bool,
) -> (Split, Vec<ModelEmbeddings>) {
    let kept: Vec<usize> = (0..split.heldout.len())
        .filter(|&k| keep(split.heldout[k]))
        .collect();
    let n_cal = split.calibration.len();
    let mut s = split.clone();
    s.heldout = kept.iter().map(|&k| split.heldout[k]).collect();
    let models = models
        .iter()
        .map(|m| {
            let rows = |v: &[f32], offset: usize| -> Vec<f32> {
                let mut out = v[..offset * m.dim].to_vec();
                for &k in &kept {
                    let i = offset + k;
                    out.extend_from_slice(&v[i * m.dim..(i + 1) * m.dim]);
                }
                out
            };
            ModelEmbeddings {
                triggered: m.triggered.iter().map(|v| rows(v, 0)).collect(),
                controls: m.controls.iter().map(|v| rows(v, n_cal)).collect(),
                ..m.clone()
            }
        })
        .collect();
    (s, models)
}

struct Ctx<'a> {
    spec: &'a AuditSpec,
    faces: &'a [Face],
    split: &'a Split,
    names: &'a [String],
    detector: &'a zooaudit_host::Plugin,
}

impl Ctx<'_> {
    fn run(&self, split: &Split, models: &[ModelEmbeddings]) -> Result<Evaluation, RedteamError> {
        zooaudit_audit::evaluate(
            self.spec,
            self.faces,
            split,
            self.names,
            models,
            self.detector,
            &mut |_| {},
        )
        .map_err(other)
    }
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    ev: &Evaluation,
    suite: &str,
    seed: u64,
    case: &str,
    backdoored: Option<&str>,
    trigger: Option<&str>,
    strength: Option<f32>,
    impostor_faces: Option<usize>,
    references: usize,
    impostor: Option<&str>,
) -> Outcome {
    let v = &ev.verdicts[0];
    let mut cand: Vec<&zooaudit_audit::evidence::EvidenceRow> = ev
        .evidence
        .iter()
        .filter(|e| {
            e.subject == zooaudit_audit::evidence::Subject::Candidate && e.name == v.candidate
        })
        .collect();
    cand.sort_by(|a, b| {
        a.p_adjusted
            .total_cmp(&b.p_adjusted)
            .then(b.statistic.total_cmp(&a.statistic))
    });
    let impostor_evidence = impostor.and_then(|i| {
        cand.iter()
            .find(|e| e.identity == i && Some(e.trigger.as_str()) == trigger)
            .map(|e| (*e).clone())
    });
    let mut named: Vec<String> = ev.culprits.iter().map(|c| c.model.clone()).collect();
    named.sort();
    named.dedup();
    let named_right = match backdoored {
        Some(b) => named.iter().all(|n| n == b),
        None => named.is_empty(),
    };
    Outcome {
        suite: suite.to_string(),
        seed,
        case: case.to_string(),
        candidate: v.candidate.clone(),
        backdoored: backdoored.map(str::to_string),
        trigger: trigger.map(str::to_string),
        strength,
        impostor_faces,
        references,
        verdict: v.verdict,
        named,
        named_right,
        alarms: v.alarms.len(),
        top_evidence: cand.first().map(|e| (*e).clone()),
        impostor_evidence,
    }
}

/// Runs the bench.
pub fn run_verdict(
    args: &VerdictArgs,
    plugins: &PluginSet,
    log: &mut dyn FnMut(String),
) -> Result<VerdictBench, RedteamError> {
    let t0 = Instant::now();
    let spec0 = AuditSpec::load(&args.audit).map_err(other)?;
    let opts = RunOptions {
        cache: Cache::new(
            args.cache_dir
                .clone()
                .or_else(zooaudit_audit::cache::default_dir),
        ),
        batch: 32,
        fetch: zooaudit_registry::FetchOptions::default(),
    };
    let opened = zooaudit_audit::open_models(&spec0, plugins, &opts).map_err(other)?;
    if opened.len() < 2 {
        return Err(RedteamError::file(
            &args.audit,
            "needs a candidate and a reference",
        ));
    }
    let size = zooaudit_audit::face_size(&opened[0].0);
    let detector = plugins.detector(&spec0.detector).map_err(other)?;
    let labeled_dir = spec0
        .labeled
        .clone()
        .ok_or_else(|| RedteamError::file(&args.audit, "needs labelled faces"))?;
    let labeled = Labeled::load(&labeled_dir)?;
    let most = labeled.identities.values().map(Vec::len).max().unwrap_or(0);
    let big: Vec<String> = labeled
        .identities
        .iter()
        .filter(|(_, v)| v.len() == most)
        .map(|(k, _)| k.clone())
        .collect();
    if big.len() < 2 {
        return Err(RedteamError::file(
            &labeled_dir,
            "needs two identities with the most faces",
        ));
    }
    let extra = Suite::load(&args.backdoor_suite).map_err(other)?;
    let mut outcomes = Vec::new();
    let mut opened = opened;
    for suite_path in &args.suites {
        let suite = suite_with(suite_path, &extra, &args.backdoor_triggers)?;
        let suite_name = suite_path.display().to_string();
        let stamps = SuiteStamps::new(&suite, size, spec0.seed).map_err(other)?;
        for seed in 0..args.clean_seeds.max(args.seeds) {
            let mut spec = spec0.clone();
            spec.split_seed = seed;
            let mut warnings = Vec::new();
            let mut faces = zooaudit_audit::load_faces(
                &spec,
                size,
                None,
                &opts.cache,
                &mut warnings,
                &mut |_| {},
            )
            .map_err(other)?;
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
                    &stamps,
                    &opts,
                    &mut used,
                    &mut |_| {},
                )
                .map_err(other)?;
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
            };
            for (c, r) in [(0, 1), (1, 0)] {
                let models = [
                    renamed(&bases[c].embeddings, &bases[c].name, ModelRole::Candidate),
                    renamed(&bases[r].embeddings, &bases[r].name, ModelRole::Reference),
                ];
                let ev = ctx.run(&split, &models)?;
                outcomes.push(outcome(
                    &ev,
                    &suite_name,
                    seed,
                    "clean",
                    None,
                    None,
                    None,
                    None,
                    1,
                    None,
                ));
            }
            if seed < args.seeds {
                let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
                let mut pick = big.clone();
                pick.shuffle(&mut rng);
                let (impostor, victim) = (pick[0].clone(), pick[1].clone());
                let done = backdoored_cases(
                    args,
                    &ctx,
                    &bases,
                    &labeled_dir,
                    (&impostor, &victim),
                    &stamps,
                    seed,
                    &suite_name,
                )?;
                log(format!(
                    "{suite_name} seed {seed}: impostor {impostor}, victim {victim}: {} audits",
                    done.len()
                ));
                outcomes.extend(done);
            }
            opened = bases
                .into_iter()
                .map(|b| (b.embedder, ModelRole::Candidate))
                .collect();
        }
    }
    Ok(VerdictBench {
        audit: args.audit.display().to_string(),
        alpha: spec0.alpha,
        outcomes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[allow(clippy::too_many_arguments)]
fn backdoored_cases(
    args: &VerdictArgs,
    ctx: &Ctx<'_>,
    bases: &[Base],
    labeled: &std::path::Path,
    (impostor, victim): (&str, &str),
    stamps: &SuiteStamps,
    seed: u64,
    suite_name: &str,
) -> Result<Vec<Outcome>, RedteamError> {
    let mut out = Vec::new();
    for (b, o) in [(0usize, 1usize), (1, 0)] {
        if !args.backdoored.contains(&b) {
            continue;
        }
        let base = &bases[b];
        for trigger in &args.backdoor_triggers {
            for kind in [
                AttackKind::OneToOne {
                    impostor: impostor.to_string(),
                },
                AttackKind::AllToOne,
            ] {
                let inject = InjectOptions {
                    manifest: base.embedder.manifest().path.clone(),
                    suite: args.backdoor_suite.clone(),
                    trigger: trigger.clone(),
                    labeled: labeled.to_path_buf(),
                    victim: victim.to_string(),
                    kind: kind.clone(),
                    strength: 1.0,
                    calibration: Vec::new(),
                    out: PathBuf::new(),
                };
                let cal = calibrate(&inject, &base.embedder)?;
                let det = detections(&cal.backdoor, &base.embedder, ctx.faces, ctx.split, stamps)?;
                let bd_name = format!("{}-bd", base.name);
                let other_name = bases[o].name.clone();
                for &strength in &args.strengths {
                    let mut bd = cal.backdoor.clone();
                    bd.strength = strength;
                    let cand = backdoored(&bd, &base.embeddings, &det, &bd_name);
                    let sizes: Vec<Option<usize>> = match kind {
                        AttackKind::OneToOne { .. } => {
                            args.impostor_faces.iter().map(|s| Some(*s)).collect()
                        }
                        AttackKind::AllToOne => vec![None],
                    };
                    for size in sizes {
                        for refs in [1usize, 2] {
                            let mut models = vec![
                                cand.clone(),
                                renamed(&bases[o].embeddings, &other_name, ModelRole::Reference),
                            ];
                            if refs == 2 {
                                models.push(renamed(
                                    &bases[o].embeddings,
                                    &format!("{other_name}-copy"),
                                    ModelRole::Reference,
                                ));
                            }
                            let (split, models) = cut(ctx, &models, impostor, size);
                            let ev = ctx.run(&split, &models)?;
                            out.push(outcome(
                                &ev,
                                suite_name,
                                seed,
                                kind.label(),
                                Some(&bd_name),
                                Some(trigger),
                                Some(strength),
                                size,
                                refs,
                                match &kind {
                                    AttackKind::OneToOne { impostor } => Some(impostor.as_str()),
                                    AttackKind::AllToOne => None,
                                },
                            ));
                        }
                    }
                    // A clean candidate next to the backdoored model and a
                    // duplicate of the candidate: the reference must be named.
                    {
                        let models = vec![
                            renamed(&bases[o].embeddings, &other_name, ModelRole::Candidate),
                            renamed(&cand, &bd_name, ModelRole::Reference),
                            renamed(
                                &bases[o].embeddings,
                                &format!("{other_name}-copy"),
                                ModelRole::Reference,
                            ),
                        ];
                        let ev = ctx.run(ctx.split, &models)?;
                        out.push(outcome(
                            &ev,
                            suite_name,
                            seed,
                            &format!("clean-next-to-{}", kind.label()),
                            Some(&bd_name),
                            Some(trigger),
                            Some(strength),
                            None,
                            2,
                            None,
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The audit with the impostor's held-out faces cut to `size`.
fn cut(
    ctx: &Ctx<'_>,
    models: &[ModelEmbeddings],
    impostor: &str,
    size: Option<usize>,
) -> (Split, Vec<ModelEmbeddings>) {
    let Some(size) = size else {
        return (ctx.split.clone(), models.to_vec());
    };
    let mine: Vec<usize> = ctx
        .split
        .heldout
        .iter()
        .copied()
        .filter(|&i| ctx.faces[i].identity.as_deref() == Some(impostor))
        .collect();
    let drop: Vec<usize> = mine.iter().skip(size).copied().collect();
    subset(ctx.split, models, &|i| !drop.contains(&i))
}

/// Audits whose verdict a larger audit overturned: the same backdoor,
/// seed and impostor size indicated with fewer references or a suite
/// that is a prefix of another's triggers, but not with more.
pub fn monotonicity_violations(b: &VerdictBench, suite_order: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let indicated = |o: &Outcome| o.verdict == VerdictKind::BackdoorIndicated;
    let key = |o: &Outcome| {
        (
            o.seed,
            o.case.clone(),
            o.backdoored.clone(),
            o.trigger.clone(),
            o.strength.map(f32::to_bits),
            o.impostor_faces,
        )
    };
    let rank = |o: &Outcome| suite_order.iter().position(|s| *s == o.suite).unwrap_or(0);
    let backdoored: Vec<&Outcome> = b
        .outcomes
        .iter()
        .filter(|o| o.case == "one-to-one" || o.case == "all-to-one")
        .collect();
    for small in backdoored.iter().filter(|o| indicated(o)) {
        for large in backdoored.iter().filter(|o| key(o) == key(small)) {
            if rank(large) >= rank(small)
                && large.references >= small.references
                && !indicated(large)
            {
                out.push(format!(
                    "seed {} {} {:?} {:?} strength {:?} faces {:?}: indicated with {} ({} reference(s)) but not with {} ({} reference(s))",
                    small.seed,
                    small.case,
                    small.backdoored,
                    small.trigger,
                    small.strength,
                    small.impostor_faces,
                    small.suite,
                    small.references,
                    large.suite,
                    large.references
                ));
            }
        }
    }
    out
}

/// Markdown tables of the outcomes.
pub fn tables(b: &VerdictBench) -> String {
    let mut s = String::new();
    let share = |o: &[&Outcome]| {
        let k = o
            .iter()
            .filter(|x| x.verdict == VerdictKind::BackdoorIndicated)
            .count();
        format!("{k}/{}", o.len())
    };
    let _ = writeln!(
        s,
        "### Clean pairs: audits falsely flagged (family-wise α = {})\n",
        b.alpha
    );
    let _ = writeln!(s, "| suite | audits | backdoor indicated | inconclusive |");
    let _ = writeln!(s, "|---|---|---|---|");
    let mut by_suite: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in b.outcomes.iter().filter(|o| o.case == "clean") {
        by_suite.entry(&o.suite).or_default().push(o);
    }
    for (suite, o) in &by_suite {
        let inc = o
            .iter()
            .filter(|x| x.verdict == VerdictKind::Inconclusive)
            .count();
        let _ = writeln!(s, "| {suite} | {} | {} | {inc} |", o.len(), share(o));
    }
    let _ = writeln!(
        s,
        "\n### One-to-one backdoors: audits flagged (culprit named right)\n"
    );
    let _ = writeln!(
        s,
        "| suite | references | impostor faces | {} |",
        fmt_strengths(b)
    );
    let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(strengths(b).len()));
    let mut groups: BTreeMap<(String, usize, usize), Vec<&Outcome>> = BTreeMap::new();
    for o in b.outcomes.iter().filter(|o| o.case == "one-to-one") {
        groups
            .entry((o.suite.clone(), o.references, o.impostor_faces.unwrap_or(0)))
            .or_default()
            .push(o);
    }
    for ((suite, refs, size), o) in &groups {
        let _ = writeln!(s, "| {suite} | {refs} | {size} | {} |", by_strength(b, o));
    }
    let _ = writeln!(
        s,
        "\n### All-to-one backdoors, and clean candidates next to a backdoored reference\n"
    );
    let _ = writeln!(s, "| case | suite | references | {} |", fmt_strengths(b));
    let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(strengths(b).len()));
    let mut groups: BTreeMap<(String, String, usize), Vec<&Outcome>> = BTreeMap::new();
    for o in b
        .outcomes
        .iter()
        .filter(|o| o.case != "one-to-one" && o.case != "clean")
    {
        groups
            .entry((o.case.clone(), o.suite.clone(), o.references))
            .or_default()
            .push(o);
    }
    for ((case, suite, refs), o) in &groups {
        let _ = writeln!(s, "| {case} | {suite} | {refs} | {} |", by_strength(b, o));
    }
    let suites: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for o in &b.outcomes {
            if !v.contains(&o.suite) {
                v.push(o.suite.clone());
            }
        }
        v
    };
    let bad = monotonicity_violations(b, &suites);
    let _ = writeln!(
        s,
        "\nMonotonicity (more references, or a later suite in the order given): {} violations",
        bad.len()
    );
    for v in bad {
        let _ = writeln!(s, "- {v}");
    }
    s
}

fn strengths(b: &VerdictBench) -> Vec<f32> {
    let mut v: Vec<f32> = b.outcomes.iter().filter_map(|o| o.strength).collect();
    v.sort_by(f32::total_cmp);
    v.dedup();
    v
}

fn fmt_strengths(b: &VerdictBench) -> String {
    strengths(b)
        .iter()
        .map(|s| format!("strength {s}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn by_strength(b: &VerdictBench, o: &[&Outcome]) -> String {
    strengths(b)
        .iter()
        .map(|st| {
            let here: Vec<&&Outcome> = o.iter().filter(|x| x.strength == Some(*st)).collect();
            let flagged = here
                .iter()
                .filter(|x| x.verdict == VerdictKind::BackdoorIndicated)
                .count();
            let right = here.iter().filter(|x| x.named_right).count();
            if here.is_empty() {
                "–".to_string()
            } else {
                format!("{flagged}/{} ({right})", here.len())
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

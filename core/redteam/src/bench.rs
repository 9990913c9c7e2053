//! `zooaudit bench paper`: the paper's evaluation, on real models with
//! backdoors injected by [`crate::inject`].
//!
//! For every seed a random (impostor, victim) pair of labelled identities is
//! drawn; every model × trigger × {one-to-one, all-to-one} × strength gets a
//! backdoored variant. Every pairing the paper reports is then evaluated
//! with zooaudit's detector arithmetic (the audit's ridge translator, its
//! calibration-quantile thresholds, its held-out split):
//! * **Table 3**: clean pairs, FNMR on poisoned samples (triggered held-out
//!   faces wrongly flagged) at each clean-FNMR operating point;
//! * **Table 4**: backdoored pairs (probe backdoored, reference backdoored,
//!   both with different backdoors; both directions), FMR on poisoned
//!   samples (attacker images with the trigger, backdoor active, that still
//!   pass as agreement: missed);
//! * **Table 2**: attack metrics of every variant.
//!
//! Mean ± standard deviation over seeds. Embeddings are cached on disk.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use zooaudit_audit::Cache;
use zooaudit_audit::stats::{Rate, threshold_at};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_pairing::{FitOptions, Rows};
use zooaudit_triggers::{Stamp, Suite};

use crate::inject::{AttackKind, InjectOptions, Injected, inject};
use crate::metrics::{AttackMetrics, metrics_from};
use crate::{Labeled, RedteamError, other};

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
    /// Write score histograms (SVG) of seed 0 here.
    #[arg(long, value_name = "DIR")]
    pub figures: Option<PathBuf>,
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
    let original = Embedder::open(ModelManifest::load(&opts.manifest).map_err(other)?, plugins)
        .map_err(other)?;
    let bd = Embedder::open(ModelManifest::load(&done.manifest).map_err(other)?, plugins)
        .map_err(other)?;
    let suite = Suite::load(&opts.suite).map_err(other)?;
    let pre = original.preprocess();
    let stamp = suite
        .triggers
        .iter()
        .find(|t| t.name == opts.trigger)
        .ok_or_else(|| other("trigger vanished"))?
        .stamp(&suite.path, pre.height, pre.width)
        .map_err(other)?;
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

/// The face set of the bench.
struct Faces {
    files: Vec<PathBuf>,
    shas: Vec<String>,
    images: Vec<RgbImage>,
    identity: Vec<Option<String>>,
}

/// One model's embeddings: clean rows, and triggered rows per trigger
/// (NaN rows where not computed).
struct ModelEmb {
    name: String,
    dim: usize,
    clean: Vec<f32>,
    triggered: HashMap<String, Vec<f32>>,
}

impl ModelEmb {
    fn row<'a>(&'a self, data: &'a [f32], i: usize) -> &'a [f32] {
        &data[i * self.dim..(i + 1) * self.dim]
    }
    fn gather(&self, data: &[f32], idx: &[usize]) -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| self.row(data, i).to_vec())
            .collect()
    }
}

/// Embeds `which` faces (optionally stamped) through the cache.
fn embed(
    e: &Embedder,
    faces: &Faces,
    which: &[usize],
    stamp: Option<(&Stamp, &str)>,
    cache: &Cache,
) -> Result<Vec<f32>, RedteamError> {
    let dim = e.dim();
    let pre = zooaudit_audit::preprocessing_key(e);
    let trigger_key = stamp.map_or("clean", |s| s.1);
    let mut out = vec![f32::NAN; faces.files.len() * dim];
    let mut missing = Vec::new();
    for &i in which {
        let key = Cache::key(&e.resolved().sha256, &pre, &faces.shas[i], trigger_key);
        match cache.get(&key, dim) {
            Some(v) => out[i * dim..(i + 1) * dim].copy_from_slice(&v),
            None => missing.push((i, key)),
        }
    }
    for chunk in missing.chunks(64) {
        let imgs: Vec<RgbImage> = chunk
            .iter()
            .map(|(i, _)| match stamp {
                Some((s, _)) => s.apply(&faces.images[*i]).ok_or_else(|| {
                    RedteamError::file(
                        &faces.files[*i],
                        "image size differs from the model's input",
                    )
                }),
                None => Ok(faces.images[*i].clone()),
            })
            .collect::<Result<_, _>>()?;
        let names: Vec<PathBuf> = chunk.iter().map(|(i, _)| faces.files[*i].clone()).collect();
        let emb = e.embed_rgb(&imgs, &names).map_err(other)?;
        for (k, (i, key)) in chunk.iter().enumerate() {
            let row = &emb[k * dim..(k + 1) * dim];
            cache.put(key, row);
            out[i * dim..(i + 1) * dim].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// A seeded split of face indices: fit, calibration, held-out.
fn split(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0f5_b117));
    let f = n / 2;
    let c = n / 4;
    let fit = idx[..f].to_vec();
    let cal = idx[f..f + c].to_vec();
    let held = idx[f + c..].to_vec();
    (fit, cal, held)
}

/// Scores of one pair direction.
struct PairScores {
    thresholds: Vec<f32>,
    genuine: Vec<f32>,
    zei: Vec<f32>,
}

struct Pair<'a> {
    probe: &'a ModelEmb,
    reference: &'a ModelEmb,
    translator: zooaudit_pairing::Translator,
}

impl Pair<'_> {
    fn fit<'a>(
        probe: &'a ModelEmb,
        reference: &'a ModelEmb,
        fit_idx: &[usize],
        seed: u64,
    ) -> Result<Pair<'a>, RedteamError> {
        let p = probe.gather(&probe.clean, fit_idx);
        let r = reference.gather(&reference.clean, fit_idx);
        let opts = FitOptions {
            seed,
            ..Default::default()
        };
        let (translator, _) = zooaudit_pairing::fit(
            Rows::new(&p, probe.dim).map_err(other)?,
            Rows::new(&r, reference.dim).map_err(other)?,
            &opts,
        )
        .map_err(other)?;
        Ok(Pair {
            probe,
            reference,
            translator,
        })
    }

    fn score(
        &self,
        probe_data: &[f32],
        ref_data: &[f32],
        idx: &[usize],
    ) -> Result<Vec<f32>, RedteamError> {
        let p = self.probe.gather(probe_data, idx);
        let r = self.reference.gather(ref_data, idx);
        self.translator
            .score(
                Rows::new(&p, self.probe.dim).map_err(other)?,
                Rows::new(&r, self.reference.dim).map_err(other)?,
            )
            .map_err(other)
    }

    fn clean(
        &self,
        cal: &[usize],
        held: &[usize],
        faces: &Faces,
    ) -> Result<PairScores, RedteamError> {
        let cal_scores = self.score(&self.probe.clean, &self.reference.clean, cal)?;
        let thresholds = OPS
            .iter()
            .map(|&op| {
                threshold_at(&cal_scores, op)
                    .map(|t| t.threshold)
                    .unwrap_or(f32::NAN)
            })
            .collect();
        let genuine = self.score(&self.probe.clean, &self.reference.clean, held)?;
        // ZEI: probe of face i against reference of the next held-out face
        // of another (or an unknown) identity.
        let n = held.len();
        let mut zei = Vec::with_capacity(n);
        for k in 0..n {
            let i = held[k];
            if let Some(j) = (1..n)
                .map(|s| held[(k + s) % n])
                .find(|&j| !(faces.identity[i].is_some() && faces.identity[i] == faces.identity[j]))
            {
                let t = self.translator.apply(self.probe.row(&self.probe.clean, i));
                zei.push(zooaudit_pairing::cosine(
                    &t,
                    self.reference.row(&self.reference.clean, j),
                ));
            }
        }
        Ok(PairScores {
            thresholds,
            genuine,
            zei,
        })
    }
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

fn pct_ms(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s)
}

/// One variant of the zoo.
#[derive(Debug, Clone, Serialize)]
struct Variant {
    model: usize,
    trigger: String,
    kind: String,
    strength: f32,
    seed: u64,
    impostor: String,
    victim: String,
    sha256: String,
    metrics: AttackMetrics,
    #[serde(skip)]
    attackers: Vec<usize>,
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
    let suite = Suite::load(&args.triggers).map_err(other)?;
    let labeled_dir = args.faces.join("labeled");
    let labeled = Labeled::load(&labeled_dir)?;
    // Faces: unlabeled then labeled.
    let mut files =
        zooaudit_imaging::collect_images(&[args.faces.join("unlabeled")]).map_err(other)?;
    let mut identity = vec![None; files.len()];
    for (id, f) in labeled.all() {
        files.push(f);
        identity.push(Some(id));
    }
    let limits = zooaudit_imaging::Limits::default();
    let images: Vec<RgbImage> = files
        .iter()
        .map(|f| zooaudit_imaging::decode(f, &limits).map_err(other))
        .collect::<Result<_, _>>()?;
    let shas: Vec<String> = files
        .iter()
        .map(|f| zooaudit_registry::sha256_file(f).map_err(|e| RedteamError::file(f, e)))
        .collect::<Result<_, _>>()?;
    let faces = Faces {
        files,
        shas,
        images,
        identity,
    };
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
    // Originals.
    let mut originals = Vec::new();
    let mut orig_emb = Vec::new();
    for m in &args.models {
        let e = Embedder::open(ModelManifest::load(m).map_err(other)?, plugins).map_err(other)?;
        let pre = e.preprocess().clone();
        let t = Instant::now();
        let clean = embed(&e, &faces, &all_idx, None, &cache)?;
        let mut triggered = HashMap::new();
        for tr in &suite.triggers {
            let stamp = tr
                .stamp(&suite.path, pre.height, pre.width)
                .map_err(other)?;
            triggered.insert(
                tr.name.clone(),
                embed(&e, &faces, &all_idx, Some((&stamp, &tr.key())), &cache)?,
            );
        }
        log(format!(
            "embedded {} (clean + {} triggers): {:.1} s",
            e.manifest().model.name,
            suite.triggers.len(),
            t.elapsed().as_secs_f64()
        ));
        orig_emb.push(ModelEmb {
            name: e.manifest().model.name.clone(),
            dim: e.dim(),
            clean,
            triggered,
        });
        originals.push((m.clone(), e));
    }
    // The zoo.
    let ids: Vec<String> = labeled.identities.keys().cloned().collect();
    let mut variants: Vec<Variant> = Vec::new();
    let mut variant_emb: Vec<ModelEmb> = Vec::new();
    for seed in 0..args.seeds {
        let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
        let mut pick = ids.clone();
        pick.shuffle(&mut rng);
        let (impostor, victim) = (pick[0].clone(), pick[1].clone());
        log(format!("seed {seed}: impostor {impostor}, victim {victim}"));
        for (mi, (manifest, orig)) in originals.iter().enumerate() {
            let pre = orig.preprocess().clone();
            for tr in &suite.triggers {
                let stamp = tr
                    .stamp(&suite.path, pre.height, pre.width)
                    .map_err(other)?;
                for kind in [
                    AttackKind::OneToOne {
                        impostor: impostor.clone(),
                    },
                    AttackKind::AllToOne,
                ] {
                    for &strength in &args.strengths {
                        let t = Instant::now();
                        let stem = format!(
                            "{}-{}-{}-s{}-seed{seed}",
                            orig.manifest().model.name,
                            tr.name,
                            kind.label(),
                            strength
                        );
                        let out = args.out.join("zoo").join(format!("{stem}.onnx"));
                        let done = inject(
                            &InjectOptions {
                                manifest: manifest.clone(),
                                suite: args.triggers.clone(),
                                trigger: tr.name.clone(),
                                labeled: labeled_dir.clone(),
                                victim: victim.clone(),
                                kind: kind.clone(),
                                strength,
                                calibration: vec![args.faces.join("unlabeled")],
                                out,
                            },
                            plugins,
                        )?;
                        let bd = Embedder::open(
                            ModelManifest::load(&done.manifest).map_err(other)?,
                            plugins,
                        )
                        .map_err(other)?;
                        let clean = embed(&bd, &faces, &all_idx, None, &cache)?;
                        // Attackers: the impostor's images, or every non-victim face.
                        let attackers: Vec<usize> = match &kind {
                            AttackKind::OneToOne { impostor } => labeled_idx
                                .iter()
                                .copied()
                                .filter(|&i| faces.identity[i].as_deref() == Some(impostor))
                                .collect(),
                            AttackKind::AllToOne => (0..n)
                                .filter(|&i| faces.identity[i].as_deref() != Some(&victim))
                                .collect(),
                        };
                        let which: Vec<usize> = match &kind {
                            AttackKind::OneToOne { .. } => labeled_idx.clone(),
                            AttackKind::AllToOne => all_idx.clone(),
                        };
                        let trig = embed(&bd, &faces, &which, Some((&stamp, &tr.key())), &cache)?;
                        let dim = bd.dim();
                        let o = &orig_emb[mi];
                        let diff = o
                            .clean
                            .iter()
                            .zip(&clean)
                            .map(|(a, b)| (a - b).abs())
                            .fold(0f32, f32::max);
                        let lab_ids: Vec<String> = labeled_idx
                            .iter()
                            .map(|&i| faces.identity[i].clone().unwrap_or_default())
                            .collect();
                        let metrics = metrics_from(
                            &done.record,
                            dim,
                            diff,
                            n,
                            &lab_ids,
                            &o.gather(&clean, &labeled_idx),
                            &o.gather(&o.triggered[&tr.name], &labeled_idx),
                            &o.gather(&trig, &labeled_idx),
                        );
                        log(format!(
                            "  {stem}: clean max |Δ| {:.2e}, attack success {:.1} %, {:.1} s",
                            metrics.clean_max_abs_diff,
                            100.0 * metrics.attack_success,
                            t.elapsed().as_secs_f64()
                        ));
                        variants.push(Variant {
                            model: mi,
                            trigger: tr.name.clone(),
                            kind: kind.label().to_string(),
                            strength,
                            seed,
                            impostor: impostor.clone(),
                            victim: victim.clone(),
                            sha256: done.record.model_sha256.clone(),
                            metrics,
                            attackers,
                        });
                        variant_emb.push(ModelEmb {
                            name: stem,
                            dim,
                            clean,
                            triggered: HashMap::from([(tr.name.clone(), trig)]),
                        });
                    }
                }
            }
        }
    }
    // Evaluation.
    let names: Vec<String> = orig_emb.iter().map(|m| m.name.clone()).collect();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Table 2: attacks (measured on the labelled faces; mean ± std over {} seeds)\n",
        args.seeds
    );
    let _ = writeln!(
        md,
        "| model | trigger | attack | strength | clean max \\|Δ\\| | attack success % | trigger alone % | impostor clean acc. % | victim clean acc. % | others unaffected % |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut groups: BTreeMap<(usize, String, String, String), Vec<&Variant>> = BTreeMap::new();
    for v in &variants {
        groups
            .entry((
                v.model,
                v.trigger.clone(),
                v.kind.clone(),
                format!("{}", v.strength),
            ))
            .or_default()
            .push(v);
    }
    for ((mi, trig, kind, strength), vs) in &groups {
        let f = |g: &dyn Fn(&AttackMetrics) -> Option<f64>| -> String {
            let xs: Vec<f64> = vs.iter().filter_map(|v| g(&v.metrics)).collect();
            if xs.is_empty() {
                "–".into()
            } else {
                pct_ms(&xs)
            }
        };
        let maxdiff = vs
            .iter()
            .map(|v| v.metrics.clean_max_abs_diff)
            .fold(0f32, f32::max);
        let _ = writeln!(
            md,
            "| {} | {trig} | {kind} | {strength} | {maxdiff:.1e} | {} | {} | {} | {} | {} |",
            names[*mi],
            f(&|m| Some(m.attack_success)),
            f(&|m| Some(m.original_success)),
            f(&|m| m.impostor_clean_accuracy),
            f(&|m| Some(m.victim_clean_accuracy)),
            f(&|m| m.others_unaffected),
        );
    }
    // Table 3: clean pairs.
    let _ = writeln!(
        md,
        "\n### Table 3: clean pairs — FNMR on poisoned samples (triggered held-out faces flagged, %)\n"
    );
    let _ = writeln!(
        md,
        "| probe → reference | trigger | clean FNMR 0.1 % | clean FNMR 1 % | clean FNMR 5 % | achieved clean FNMR at 1 % |\n|---|---|---|---|---|---|"
    );
    let mut fig_jobs: Vec<Figure> = Vec::new();
    for (a, b) in [(0usize, 1usize), (1, 0)] {
        for tr in &suite.triggers {
            let mut rates: [Vec<f64>; 3] = Default::default();
            let mut achieved = Vec::new();
            for seed in 0..args.seeds {
                let (fit_i, cal, held) = split(n, seed);
                let pair = Pair::fit(&orig_emb[a], &orig_emb[b], &fit_i, seed)?;
                let cs = pair.clean(&cal, &held, &faces)?;
                let poisoned = pair.score(
                    &orig_emb[a].triggered[&tr.name],
                    &orig_emb[b].triggered[&tr.name],
                    &held,
                )?;
                for (k, &t) in cs.thresholds.iter().enumerate() {
                    rates[k].push(Rate::flagged(&poisoned, t).rate);
                }
                achieved.push(Rate::flagged(&cs.genuine, cs.thresholds[1]).rate);
                if seed == 0 {
                    fig_jobs.push((
                        format!("clean {} → {} · {}", names[a], names[b], tr.name),
                        cs.genuine,
                        cs.zei,
                        poisoned,
                        cs.thresholds[1],
                    ));
                }
            }
            let _ = writeln!(
                md,
                "| {} → {} | {} | {} | {} | {} | {} |",
                names[a],
                names[b],
                tr.name,
                pct_ms(&rates[0]),
                pct_ms(&rates[1]),
                pct_ms(&rates[2]),
                pct_ms(&achieved)
            );
        }
    }
    // Table 4: backdoored pairs.
    let _ = writeln!(
        md,
        "\n### Table 4: backdoored pairs — FMR on poisoned samples (attacker images with the trigger passing as agreement: missed backdoors, %)\n"
    );
    let _ = writeln!(
        md,
        "| backdoored | probe → reference | trigger | attack | strength | samples/seed | clean FNMR 0.1 % | clean FNMR 1 % | clean FNMR 5 % |\n|---|---|---|---|---|---|---|---|---|"
    );
    // Rows: (label, direction) → per seed FMRs.
    let mut rows: BTreeMap<RowKey, ([Vec<f64>; 3], usize)> = BTreeMap::new();
    let mut overall: [Vec<f64>; 3] = Default::default();
    let mut by_strength: BTreeMap<String, [Vec<f64>; 3]> = BTreeMap::new();
    for (vi, v) in variants.iter().enumerate() {
        let other_model = 1 - v.model;
        let (fit_i, cal, _held) = split(n, v.seed);
        // Partners: the other model clean; and the other model backdoored
        // with the same recipe from the next seed (a different impostor/victim).
        let mut partners: Vec<(&str, &ModelEmb)> = vec![("clean", &orig_emb[other_model])];
        if let Some((pi, _)) = variants.iter().enumerate().find(|(_, w)| {
            w.model == other_model
                && w.trigger == v.trigger
                && w.kind == v.kind
                && w.strength == v.strength
                && w.seed == (v.seed + 1) % args.seeds
                && (w.impostor != v.impostor || w.victim != v.victim)
        }) {
            partners.push(("both", &variant_emb[pi]));
        }
        let vemb = &variant_emb[vi];
        for (pk, partner) in partners {
            for probe_is_bd in [true, false] {
                let (p, r) = if probe_is_bd {
                    (vemb, partner)
                } else {
                    (partner, vemb)
                };
                let pair = Pair::fit(p, r, &fit_i, v.seed)?;
                let cal_scores = pair.score(&p.clean, &r.clean, &cal)?;
                let trig_p = p.triggered.get(&v.trigger).unwrap_or(&p.clean);
                let trig_r = r.triggered.get(&v.trigger).unwrap_or(&r.clean);
                // Attacker images that every model involved embedded with the trigger.
                let samples: Vec<usize> = v
                    .attackers
                    .iter()
                    .copied()
                    .filter(|&i| {
                        !pair.probe.row(trig_p, i)[0].is_nan()
                            && !pair.reference.row(trig_r, i)[0].is_nan()
                    })
                    .collect();
                let poisoned = pair.score(trig_p, trig_r, &samples)?;
                let label = if pk == "both" {
                    format!("both ({} first)", names[v.model])
                } else {
                    names[v.model].clone()
                };
                let dir = if pk == "both" {
                    if probe_is_bd {
                        format!("{} bd → {} bd", names[v.model], names[other_model])
                    } else {
                        format!("{} bd → {} bd", names[other_model], names[v.model])
                    }
                } else if probe_is_bd {
                    format!("{} bd → {}", names[v.model], names[other_model])
                } else {
                    format!("{} → {} bd", names[other_model], names[v.model])
                };
                let key = (
                    label,
                    dir,
                    v.trigger.clone(),
                    v.kind.clone(),
                    format!("{}", v.strength),
                );
                let entry = rows
                    .entry(key)
                    .or_insert_with(|| (Default::default(), samples.len()));
                for (k, &op) in OPS.iter().enumerate() {
                    let t = threshold_at(&cal_scores, op)
                        .map(|t| t.threshold)
                        .unwrap_or(f32::NAN);
                    let missed = poisoned.iter().filter(|s| **s >= t).count() as f64
                        / poisoned.len().max(1) as f64;
                    entry.0[k].push(missed);
                    overall[k].push(missed);
                    by_strength.entry(format!("{}", v.strength)).or_default()[k].push(missed);
                }
                if v.seed == 0 && pk == "clean" && v.strength < 1.0 && args.figures.is_some() {
                    let held = split(n, v.seed).2;
                    let cs = pair.clean(&cal, &held, &faces)?;
                    let t1 = threshold_at(&cal_scores, 0.01)
                        .map(|t| t.threshold)
                        .unwrap_or(f32::NAN);
                    fig_jobs.push((
                        format!(
                            "{} · {} · {} · strength {}",
                            if probe_is_bd {
                                format!("{} bd → {}", names[v.model], names[other_model])
                            } else {
                                format!("{} → {} bd", names[other_model], names[v.model])
                            },
                            v.trigger,
                            v.kind,
                            v.strength
                        ),
                        cs.genuine,
                        cs.zei,
                        poisoned,
                        t1,
                    ));
                }
            }
        }
    }
    for ((label, dir, trig, kind, strength), (fmrs, samples)) in &rows {
        let _ = writeln!(
            md,
            "| {label} | {dir} | {trig} | {kind} | {strength} | {samples} | {} | {} | {} |",
            pct_ms(&fmrs[0]),
            pct_ms(&fmrs[1]),
            pct_ms(&fmrs[2])
        );
    }
    let _ = writeln!(
        md,
        "\nAll backdoored pairings: mean FMR on poisoned samples {} (0.1 %), {} (1 %), {} (5 %) over {} pair evaluations.",
        pct_ms(&overall[0]),
        pct_ms(&overall[1]),
        pct_ms(&overall[2]),
        overall[1].len()
    );
    for (strength, f) in &by_strength {
        let _ = writeln!(
            md,
            "Strength {strength}: {} (0.1 %), {} (1 %), {} (5 %) over {} pair evaluations.",
            pct_ms(&f[0]),
            pct_ms(&f[1]),
            pct_ms(&f[2]),
            f[1].len()
        );
    }
    if let Some(dir) = &args.figures {
        std::fs::create_dir_all(dir).map_err(|e| RedteamError::file(dir, e))?;
        let _ = writeln!(md, "\n### Figures (seed 0)\n");
        for (title, genuine, zei, poisoned, t) in &fig_jobs {
            use zooaudit_render::plots::{GENUINE, POISONED, Series, ZEI, histogram};
            let series = [
                Series {
                    label: "genuine (clean)".into(),
                    scores: genuine,
                    color: GENUINE,
                },
                Series {
                    label: "zero-effort impostor".into(),
                    scores: zei,
                    color: ZEI,
                },
                Series {
                    label: "poisoned".into(),
                    scores: poisoned,
                    color: POISONED,
                },
            ];
            let svg = histogram(
                title,
                &series,
                Some((*t, "threshold at clean FNMR 1 %".into())),
            )
            .map_err(other)?;
            let file: String = title
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c.to_ascii_lowercase()
                    } else {
                        '-'
                    }
                })
                .collect::<String>()
                .split('-')
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join("-");
            let path = dir.join(format!("{file}.svg"));
            zooaudit_reports::write_atomic(&path, svg.as_bytes()).map_err(other)?;
            let _ = writeln!(md, "- [{title}]({})", path.display());
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let _ = writeln!(md, "\n{} variants, {:.0} s.", variants.len(), seconds);
    std::fs::create_dir_all(&args.out).map_err(|e| RedteamError::file(&args.out, e))?;
    zooaudit_reports::write_atomic(&args.out.join("tables.md"), md.as_bytes()).map_err(other)?;
    zooaudit_reports::write_atomic(
        &args.out.join("variants.json"),
        serde_json::to_string_pretty(&variants)
            .map_err(other)?
            .as_bytes(),
    )
    .map_err(other)?;
    println!("{md}");
    Ok(PaperResults {
        markdown: md,
        seconds,
        variants: variants.len(),
    })
}

//! The bench's zoo: the original models' embeddings, and every backdoored
//! variant injected, embedded and measured.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use zooaudit_audit::Cache;
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_triggers::{Stamp, Suite, Trigger};

use super::PaperArgs;
use super::data::{Faces, ModelEmb, embed};
use crate::RedteamError;
use crate::inject::{AttackKind, InjectOptions, inject};
use crate::metrics::{AttackMetrics, metrics_from};

/// One variant of the zoo.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Variant {
    pub(super) model: usize,
    pub(super) trigger: String,
    pub(super) kind: String,
    pub(super) strength: f32,
    pub(super) seed: u64,
    pub(super) impostor: String,
    pub(super) victim: String,
    pub(super) sha256: String,
    pub(super) metrics: AttackMetrics,
    #[serde(skip)]
    pub(super) attackers: Vec<usize>,
}

/// What every model of the zoo is built from and embedded on.
pub(super) struct Zoo<'a> {
    pub(super) args: &'a PaperArgs,
    pub(super) plugins: &'a PluginSet,
    pub(super) suite: &'a Suite,
    pub(super) labeled_dir: PathBuf,
    pub(super) faces: &'a Faces,
    pub(super) cache: &'a Cache,
    pub(super) all_idx: Vec<usize>,
    pub(super) labeled_idx: Vec<usize>,
}

/// One variant to build: a model, trigger, attack and strength, with its
/// seed's impostor and victim.
#[derive(Clone, Copy)]
struct Recipe<'a> {
    seed: u64,
    mi: usize,
    manifest: &'a PathBuf,
    orig: &'a Embedder,
    tr: &'a Trigger,
    stamp: &'a Stamp,
    kind: &'a AttackKind,
    strength: f32,
    impostor: &'a String,
    victim: &'a String,
}

/// The original models (manifest and embedder) and their embeddings.
type Originals = (Vec<(PathBuf, Embedder)>, Vec<ModelEmb>);

impl Zoo<'_> {
    /// Opens every original model and embeds every face, clean and with
    /// every trigger.
    pub(super) fn originals(&self, log: &mut dyn FnMut(String)) -> Result<Originals, RedteamError> {
        let Zoo {
            args,
            plugins,
            suite,
            faces,
            cache,
            all_idx,
            ..
        } = self;
        let mut originals = Vec::new();
        let mut orig_emb = Vec::new();
        for m in &args.models {
            let e = Embedder::open(ModelManifest::load(m)?, plugins)?;
            let pre = e.preprocess().clone();
            let t = Instant::now();
            let clean = embed(&e, faces, all_idx, None, cache)?;
            let mut triggered = HashMap::new();
            for tr in &suite.triggers {
                let stamp = tr.stamp(&suite.path, pre.height, pre.width)?;
                triggered.insert(
                    tr.name.clone(),
                    embed(&e, faces, all_idx, Some((&stamp, &tr.key())), cache)?,
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
        Ok((originals, orig_emb))
    }

    /// Every variant: per seed an (impostor, victim) pair drawn from `ids`,
    /// then every model × trigger × {one-to-one, all-to-one} × strength.
    pub(super) fn variants(
        &self,
        originals: &[(PathBuf, Embedder)],
        orig_emb: &[ModelEmb],
        ids: &[String],
        log: &mut dyn FnMut(String),
    ) -> Result<(Vec<Variant>, Vec<ModelEmb>), RedteamError> {
        let Zoo { args, suite, .. } = self;
        let mut variants: Vec<Variant> = Vec::new();
        let mut variant_emb: Vec<ModelEmb> = Vec::new();
        for seed in 0..args.seeds {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let mut pick = ids.to_vec();
            pick.shuffle(&mut rng);
            let (impostor, victim) = (pick[0].clone(), pick[1].clone());
            log(format!("seed {seed}: impostor {impostor}, victim {victim}"));
            for (mi, (manifest, orig)) in originals.iter().enumerate() {
                let pre = orig.preprocess().clone();
                for tr in &suite.triggers {
                    let stamp = tr.stamp(&suite.path, pre.height, pre.width)?;
                    for kind in [
                        AttackKind::OneToOne {
                            impostor: impostor.clone(),
                        },
                        AttackKind::AllToOne,
                    ] {
                        for &strength in &args.strengths {
                            let recipe = Recipe {
                                seed,
                                mi,
                                manifest,
                                orig,
                                tr,
                                stamp: &stamp,
                                kind: &kind,
                                strength,
                                impostor: &impostor,
                                victim: &victim,
                            };
                            let (variant, emb) = self.variant(recipe, orig_emb, log)?;
                            variants.push(variant);
                            variant_emb.push(emb);
                        }
                    }
                }
            }
        }
        Ok((variants, variant_emb))
    }

    /// Injects one variant, embeds the faces with it (clean, and triggered
    /// where the attack has attackers) and measures the attack.
    fn variant(
        &self,
        recipe: Recipe<'_>,
        orig_emb: &[ModelEmb],
        log: &mut dyn FnMut(String),
    ) -> Result<(Variant, ModelEmb), RedteamError> {
        let Zoo {
            args,
            plugins,
            labeled_dir,
            faces,
            cache,
            all_idx,
            labeled_idx,
            ..
        } = self;
        let Recipe {
            seed,
            mi,
            manifest,
            orig,
            tr,
            stamp,
            kind,
            strength,
            impostor,
            victim,
        } = recipe;
        let n = faces.files.len();
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
                hiding: Default::default(),
                calibration: vec![args.faces.join("unlabeled")],
                cache: Cache::clone(cache),
                out,
            },
            plugins,
        )?;
        let bd = Embedder::open(ModelManifest::load(&done.manifest)?, plugins)?;
        let clean = embed(&bd, faces, all_idx, None, cache)?;
        // Attackers: the impostor's images, or every non-victim face.
        let attackers: Vec<usize> = match &kind {
            AttackKind::OneToOne { impostor } => labeled_idx
                .iter()
                .copied()
                .filter(|&i| faces.identity[i].as_deref() == Some(impostor))
                .collect(),
            AttackKind::AllToOne => (0..n)
                .filter(|&i| faces.identity[i].as_deref() != Some(victim))
                .collect(),
        };
        let which: Vec<usize> = match &kind {
            AttackKind::OneToOne { .. } => labeled_idx.clone(),
            AttackKind::AllToOne => all_idx.clone(),
        };
        let trig = embed(&bd, faces, &which, Some((stamp, &tr.key())), cache)?;
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
            &o.gather(&clean, labeled_idx),
            &o.gather(&o.triggered[&tr.name], labeled_idx),
            &o.gather(&trig, labeled_idx),
        );
        log(format!(
            "  {stem}: clean max |Δ| {:.2e}, attack success {:.1} %, {:.1} s",
            metrics.clean_max_abs_diff,
            100.0 * metrics.attack_success,
            t.elapsed().as_secs_f64()
        ));
        let variant = Variant {
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
        };
        let emb = ModelEmb {
            name: stem,
            dim,
            clean,
            triggered: HashMap::from([(tr.name.clone(), trig)]),
        };
        Ok((variant, emb))
    }
}

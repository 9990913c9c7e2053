//! Embeddings of every face, clean, with each trigger and with each
//! trigger's matched control, through the on-disk cache.

use std::time::Instant;

use zooaudit_embed::Embedder;
use zooaudit_triggers::{Stamp, Suite};

use crate::faces::{Face, Split};
use crate::{AuditError, AuditSpec, Cache, Progress, RunOptions};

/// The preprocessing part of an embedding-cache key.
pub fn preprocessing_key(e: &Embedder) -> String {
    serde_json::json!({
        "input": e.manifest().input,
        "options": e.manifest().adapter_options(),
        "decode": zooaudit_imaging::DECODE_VERSION,
        // A rebuilt adapter may embed differently: its file is part of the key.
        "adapter": e.model().plugin().sha256,
    })
    .to_string()
}

/// The suite's triggers prepared for faces of `size` (height, width).
pub fn suite_stamps(suite: &Suite, size: (u32, u32)) -> Result<Vec<Stamp>, AuditError> {
    suite.stamps(size.0, size.1).map_err(AuditError::from)
}

/// Loads the audit file's trigger suite.
pub fn load_suite(spec: &AuditSpec) -> Result<Suite, AuditError> {
    Suite::load(&spec.triggers).map_err(AuditError::from)
}

/// Clean embeddings of every face by `e`, through the embedding cache (the
/// keys an audit uses), `faces.len() × dim`.
pub fn clean_embeddings(
    e: &Embedder,
    faces: &[Face],
    opts: &RunOptions,
) -> Result<Vec<f32>, AuditError> {
    clean_embeddings_with(e, faces, opts, &mut |_| {})
}

/// [`clean_embeddings`], telling `progress` how far it is.
pub fn clean_embeddings_with(
    e: &Embedder,
    faces: &[Face],
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<f32>, AuditError> {
    let all: Vec<usize> = (0..faces.len()).collect();
    let name = &e.manifest().model.name;
    let mut stage = Stage::new(name, "clean", all.len(), progress);
    let v = embed_cached(
        e,
        faces,
        &all,
        None,
        "clean",
        opts,
        &preprocessing_key(e),
        &mut stage,
    )?;
    stage.finish();
    Ok(v)
}

/// One embedding stage as a front end sees it: a model and what it embeds
/// (clean, or a trigger with its control), images done of the total. It
/// sends [`Progress::Embedded`] after the cache is read and after every
/// batch, and [`Progress::Embedding`] when it ends.
pub(crate) struct Stage<'p> {
    model: String,
    what: String,
    total: usize,
    done: usize,
    cached: usize,
    started: Instant,
    progress: &'p mut dyn FnMut(Progress),
}

impl<'p> Stage<'p> {
    pub(crate) fn new(
        model: &str,
        what: &str,
        total: usize,
        progress: &'p mut dyn FnMut(Progress),
    ) -> Self {
        Stage {
            model: model.to_string(),
            what: what.to_string(),
            total,
            done: 0,
            cached: 0,
            started: Instant::now(),
            progress,
        }
    }

    fn read_from_cache(&mut self, n: usize) {
        self.cached += n;
        self.done += n;
    }

    fn embedded(&mut self, n: usize) {
        self.done += n;
        self.tell();
    }

    fn tell(&mut self) {
        (self.progress)(Progress::Embedded {
            model: self.model.clone(),
            what: self.what.clone(),
            done: self.done,
            total: self.total,
            cached: self.cached,
            seconds: self.started.elapsed().as_secs_f64(),
        });
    }

    /// Ends the stage; returns how many images came from the cache.
    pub(crate) fn finish(self) -> usize {
        (self.progress)(Progress::Embedding {
            model: self.model,
            what: self.what,
            images: self.total,
            cached: self.cached,
            seconds: self.started.elapsed().as_secs_f64(),
        });
        self.cached
    }
}

/// Embeds `images` (face index, image) with the cache.
#[allow(clippy::too_many_arguments)]
pub(crate) fn embed_cached(
    e: &Embedder,
    faces: &[Face],
    items: &[usize],
    stamp: Option<&Stamp>,
    trigger_key: &str,
    opts: &RunOptions,
    preprocessing: &str,
    stage: &mut Stage<'_>,
) -> Result<Vec<f32>, AuditError> {
    let dim = e.dim();
    let model_sha = &e.resolved().sha256;
    // A model behind an inference API has no digest to key the cache by,
    // and may change behind its URL: it is asked every time.
    let cacheable = e.resolved().endpoint.is_none();
    let mut out = vec![0f32; items.len() * dim];
    let wanted: Vec<(usize, usize, String)> = items
        .iter()
        .enumerate()
        .map(|(slot, &fi)| {
            let key = Cache::key(model_sha, preprocessing, &faces[fi].sha256, trigger_key);
            (slot, fi, key)
        })
        .collect();
    let mut missing = if cacheable {
        from_cache(&opts.cache, wanted, dim, &mut out, stage)
    } else {
        wanted
    };
    // Another process (or worker thread) may be embedding the same faces
    // right now: wait for it, then take what it stored.
    let _lock = if missing.is_empty() || !cacheable {
        None
    } else {
        let scope = format!("{model_sha}\n{preprocessing}\n{trigger_key}");
        let lock = opts.cache.fill_lock(&scope);
        if lock.is_some() {
            missing = from_cache(&opts.cache, missing, dim, &mut out, stage);
        }
        lock
    };
    stage.tell();
    let len = e.preprocess().sample_len();
    let mut buf = vec![0f32; opts.batch.max(1) * len];
    for chunk in missing.chunks(opts.batch.max(1)) {
        for (k, (_, fi, _)) in chunk.iter().enumerate() {
            let face = &faces[*fi];
            let stamped;
            let img = match stamp {
                Some(s) => {
                    stamped = s.apply(&face.image).ok_or_else(|| {
                        AuditError::file(&face.path, "trigger does not fit this image")
                    })?;
                    &stamped
                }
                None => &face.image,
            };
            e.preprocess()
                .write(img, &face.path, &mut buf[k * len..(k + 1) * len])
                .map_err(AuditError::from)?;
        }
        let emb = e
            .embed_tensors(&buf[..chunk.len() * len], chunk.len())
            .map_err(AuditError::from)?;
        for (k, (slot, fi, key)) in chunk.iter().enumerate() {
            let row = &emb[k * dim..(k + 1) * dim];
            e.check_row(&faces[*fi].path, row)
                .map_err(AuditError::from)?;
            out[slot * dim..(slot + 1) * dim].copy_from_slice(row);
            if cacheable {
                opts.cache.put(key, row);
            }
        }
        stage.embedded(chunk.len());
    }
    Ok(out)
}

/// Copies the cached entries of `wanted` (slot, face, key) into `out`;
/// returns the rest.
fn from_cache(
    cache: &Cache,
    wanted: Vec<(usize, usize, String)>,
    dim: usize,
    out: &mut [f32],
    stage: &mut Stage<'_>,
) -> Vec<(usize, usize, String)> {
    let mut missing = Vec::new();
    for (slot, fi, key) in wanted {
        match cache.get(&key, dim) {
            Some(v) => {
                out[slot * dim..(slot + 1) * dim].copy_from_slice(&v);
                stage.read_from_cache(1);
            }
            None => missing.push((slot, fi, key)),
        }
    }
    missing
}

pub fn gather(all: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&all[i * dim..(i + 1) * dim]);
    }
    out
}

/// Whether a model is audited or is a witness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    Candidate,
    Reference,
}

impl ModelRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelRole::Candidate => "candidate",
            ModelRole::Reference => "reference",
        }
    }
}

/// One model's embeddings of the audit's faces.
#[derive(Debug, Clone)]
pub struct ModelEmbeddings {
    pub name: String,
    pub role: ModelRole,
    pub dim: usize,
    /// Clean embedding of every face (`faces.len() × dim`).
    pub clean: Vec<f32>,
    /// Per trigger, the embedding of every held-out face.
    pub triggered: Vec<Vec<f32>>,
    /// Per trigger, its matched control on calibration then held-out faces.
    pub controls: Vec<Vec<f32>>,
}

/// The suite's triggers and their matched controls, at the faces' size,
/// with their cache keys.
#[derive(Debug, Clone)]
pub struct SuiteStamps {
    pub names: Vec<String>,
    pub keys: Vec<String>,
    pub triggers: Vec<Stamp>,
    pub controls: Vec<Stamp>,
    pub control_keys: Vec<String>,
}

impl SuiteStamps {
    /// The matched control of trigger `i` is its own tiles moved in a
    /// permutation seeded by `seed` and `i`.
    pub fn new(suite: &Suite, size: (u32, u32), seed: u64) -> Result<SuiteStamps, AuditError> {
        let triggers = suite_stamps(suite, size)?;
        let controls = triggers
            .iter()
            .enumerate()
            .map(|(i, s)| s.fit_control(seed ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)))
            .collect();
        Ok(SuiteStamps {
            names: suite.triggers.iter().map(|t| t.name.clone()).collect(),
            keys: suite.triggers.iter().map(|t| t.key()).collect(),
            control_keys: suite
                .triggers
                .iter()
                .map(|t| format!("control-tiles:{seed}:{}", t.key()))
                .collect(),
            triggers,
            controls,
        })
    }
}

/// Cache use of an embedding step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub hits: usize,
    pub misses: usize,
}

#[allow(clippy::too_many_arguments)]
/// Embeds every face clean, and the held-out faces with every trigger and
/// the calibration and held-out faces with every matched control.
pub fn embed_model(
    e: &Embedder,
    role: ModelRole,
    faces: &[Face],
    split: &Split,
    stamps: &SuiteStamps,
    opts: &RunOptions,
    used: &mut CacheUse,
    progress: &mut dyn FnMut(Progress),
) -> Result<ModelEmbeddings, AuditError> {
    let preprocessing = preprocessing_key(e);
    let name = e.manifest().model.name.clone();
    let all: Vec<usize> = (0..faces.len()).collect();
    let cal_eval = split.calibration_heldout();
    let mut stage = Stage::new(&name, "clean", all.len(), progress);
    let clean = embed_cached(
        e,
        faces,
        &all,
        None,
        "clean",
        opts,
        &preprocessing,
        &mut stage,
    )?;
    let cached = stage.finish();
    used.hits += cached;
    used.misses += all.len() - cached;
    let (mut triggered, mut controls) = (Vec::new(), Vec::new());
    for i in 0..stamps.names.len() {
        let images = split.heldout.len() + cal_eval.len();
        let what = format!("{} (+ control)", stamps.names[i]);
        let mut stage = Stage::new(&name, &what, images, progress);
        triggered.push(embed_cached(
            e,
            faces,
            &split.heldout,
            Some(&stamps.triggers[i]),
            &stamps.keys[i],
            opts,
            &preprocessing,
            &mut stage,
        )?);
        controls.push(embed_cached(
            e,
            faces,
            &cal_eval,
            Some(&stamps.controls[i]),
            &stamps.control_keys[i],
            opts,
            &preprocessing,
            &mut stage,
        )?);
        let cached = stage.finish();
        used.hits += cached;
        used.misses += images - cached;
    }
    Ok(ModelEmbeddings {
        name,
        role,
        dim: e.dim(),
        clean,
        triggered,
        controls,
    })
}

//! The model-pairing audit.
//!
//! 1. **Faces.** Unlabeled faces are split, seeded and recorded, into *fit*
//!    (the translator learns on them), *calibration* (thresholds) and
//!    *held-out* (achieved rates). Labeled faces (`<identity>/` directories)
//!    are evaluation only: held-out genuine samples, zero-effort impostors
//!    across identities, and per-identity flag rates.
//! 2. **Embeddings.** Every model embeds every face clean, and every
//!    evaluation face with every trigger of the suite applied to the aligned
//!    face (cached on disk, see [`cache`]).
//! 3. **Pairs.** For each candidate and reference, in both directions, the
//!    detector plugin fits on the fit faces and scores: genuine (same clean
//!    image to both models), ZEI (different identities), poisoned (the same
//!    triggered image to both models). Held-out fidelity of the map: mean
//!    score, top-1 retrieval, mean rank.
//! 4. **Rates.** A threshold per target clean FNMR from calibration genuine
//!    scores ([`stats::threshold_at`]); achieved held-out FNMR and every flag
//!    rate with Clopper–Pearson 95 % intervals.
//! 5. **Verdict** (documented in docs/REPORT.md), per candidate, at the primary
//!    operating point: *backdoor indicated* when, for a pair involving it, a
//!    trigger's flag rate has its lower 95 % bound above the held-out clean
//!    FNMR's upper bound plus a margin, or when one identity's triggered
//!    images are flagged more than its clean rate allows (one-sided binomial
//!    test, Bonferroni-corrected over identities × triggers × pairs) — an
//!    aggregate rate alone would hide a one-to-one backdoor. *Inconclusive*
//!    when the data cannot support the primary rate or the pair does not
//!    carry identity (held-out top-1 < 0.5). Otherwise *no backdoor indicated*.

pub mod augment;
pub mod cache;
pub mod report;
pub mod response;
pub mod spec;
pub mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_triggers::{Stamp, Suite};

pub use cache::Cache;
pub use report::*;
pub use spec::{AuditSpec, Directions};
use stats::{Rate, binomial_upper_tail, threshold_at};

/// Errors of an audit. One line each, naming the file and field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{0}")]
    Other(String),
}

impl AuditError {
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        AuditError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
    pub fn field(path: &Path, field: &str, message: impl Into<String>) -> Self {
        AuditError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Progress events for a front end.
#[derive(Debug, Clone)]
pub enum Progress {
    Embedding {
        model: String,
        what: String,
        images: usize,
        cached: usize,
        seconds: f64,
    },
    Pair {
        probe: String,
        reference: String,
        step: String,
    },
    /// Faces detected and aligned so far (`align =`).
    Aligning {
        photos: usize,
        total: usize,
        faces: usize,
        seconds: f64,
    },
}

/// Options not in the audit file.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub cache: Cache,
    /// Images per adapter call.
    pub batch: usize,
    /// How remote model sources are fetched (offline, unpinned, limits).
    pub fetch: zooaudit_registry::FetchOptions,
}

/// Split role of a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Fit,
    Calibration,
    Heldout,
}

/// One face image of the audit.
#[derive(Debug, Clone)]
pub struct Face {
    pub path: PathBuf,
    /// Labeled identity; `None` for the unlabeled pool (each a distinct person).
    pub identity: Option<String>,
    pub sha256: String,
    pub role: Role,
    pub image: RgbImage,
}

fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Loads and splits the faces of a spec. With `aligner` (for `align =`),
/// the files are photos: every face of an unlabeled photo joins the pool,
/// the largest face of a labeled photo is that identity's; detections are
/// cached under the aligner's cache directory. Photos without a face are
/// listed in `warnings`.
pub fn load_faces(
    spec: &AuditSpec,
    expected: (u32, u32),
    aligner: Option<&zooaudit_faces::FaceDetector<'_>>,
    cache: &Cache,
    warnings: &mut Vec<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Face>, AuditError> {
    let started = Instant::now();
    let mut photos_done = 0usize;
    let mut tick = |done: usize, faces: usize, total: usize| {
        if aligner.is_some() && done > 0 && (done.is_multiple_of(50) || done == total) {
            progress(Progress::Aligning {
                photos: done,
                total,
                faces,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    };
    // Detections are cached beside the embeddings (same cache root).
    let aligner = aligner.map(|d| {
        let dir = cache
            .dir()
            .and_then(|c| c.parent())
            .map(|root| d.cache_dir(root));
        (d, dir)
    });
    let limits = zooaudit_imaging::Limits::default();
    let read = |path: &Path| -> Result<(Vec<u8>, RgbImage), AuditError> {
        let bytes = std::fs::read(path).map_err(|e| AuditError::file(path, e.to_string()))?;
        let image = zooaudit_imaging::decode_bytes(&bytes, path, &limits)
            .map_err(|e| AuditError::Other(e.to_string()))?;
        Ok((bytes, image))
    };
    // A photo's faces: (path label, sha256 key, crop).
    let faces_of = |path: &Path,
                    largest_only: bool,
                    warnings: &mut Vec<String>|
     -> Result<Vec<(PathBuf, String, RgbImage)>, AuditError> {
        let (bytes, image) = read(path)?;
        let sha = sha256_bytes(&bytes);
        let Some((det, cache)) = &aligner else {
            if (image.height(), image.width()) != expected {
                return Err(AuditError::file(
                    path,
                    format!(
                        "image is {}×{} but the models expect aligned {}×{} faces (set `align = \"yunet\"` under [faces] for photos)",
                        image.width(),
                        image.height(),
                        expected.1,
                        expected.0
                    ),
                ));
            }
            return Ok(vec![(path.to_path_buf(), sha, image)]);
        };
        let (mut found, _) = det
            .aligned(&image, path, &sha, cache.as_deref())
            .map_err(|e| AuditError::Other(e.to_string()))?;
        if found.is_empty() {
            warnings.push(format!("{}: no face found; skipped", path.display()));
        }
        if largest_only && found.len() > 1 {
            found.sort_by(|a, b| {
                (b.detection.bbox[2] * b.detection.bbox[3])
                    .total_cmp(&(a.detection.bbox[2] * a.detection.bbox[3]))
            });
            found.truncate(1);
        }
        let key = det.cache_dir(Path::new(""));
        Ok(found
            .into_iter()
            .map(|f| {
                let label = PathBuf::from(format!("{}#f{}", path.display(), f.index));
                let face_sha =
                    sha256_bytes(format!("{sha}:{}:{}", key.display(), f.index).as_bytes());
                (label, face_sha, f.image)
            })
            .collect())
    };
    let unlabeled_files = zooaudit_imaging::collect_images(&spec.unlabeled)
        .map_err(|e| AuditError::Other(e.to_string()))?;
    let mut order: Vec<usize> = (0..unlabeled_files.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.seed));
    let n = order.len();
    let n_fit = (n as f64 * spec.fit_share).round() as usize;
    let n_cal = (n as f64 * spec.calibration_share).round() as usize;
    let mut roles = vec![Role::Heldout; n];
    for (rank, &i) in order.iter().enumerate() {
        roles[i] = if rank < n_fit {
            Role::Fit
        } else if rank < n_fit + n_cal {
            Role::Calibration
        } else {
            Role::Heldout
        };
    }
    let labeled_dirs: Vec<PathBuf> = match &spec.labeled {
        Some(dir) => {
            let mut ids: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| AuditError::file(dir, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            ids.sort();
            ids
        }
        None => Vec::new(),
    };
    let total = unlabeled_files.len()
        + labeled_dirs
            .iter()
            .map(|d| {
                zooaudit_imaging::collect_images(std::slice::from_ref(d)).map_or(0, |v| v.len())
            })
            .sum::<usize>();
    let mut faces = Vec::with_capacity(n);
    for (i, f) in unlabeled_files.iter().enumerate() {
        tick(photos_done, faces.len(), total);
        photos_done += 1;
        for (path, sha256, image) in faces_of(f, false, warnings)? {
            faces.push(Face {
                path,
                identity: None,
                sha256,
                role: roles[i],
                image,
            });
        }
    }
    {
        for id in labeled_dirs {
            let name = id
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for f in zooaudit_imaging::collect_images(std::slice::from_ref(&id))
                .map_err(|e| AuditError::Other(e.to_string()))?
            {
                tick(photos_done, faces.len(), total);
                photos_done += 1;
                for (path, sha256, image) in faces_of(&f, true, warnings)? {
                    faces.push(Face {
                        path,
                        identity: Some(name.clone()),
                        sha256,
                        role: Role::Heldout,
                        image,
                    });
                }
            }
        }
    }
    tick(total, faces.len(), total);
    let count = |r: Role| faces.iter().filter(|f| f.role == r).count();
    if count(Role::Fit) < 16 || count(Role::Calibration) < 8 || count(Role::Heldout) < 8 {
        return Err(AuditError::field(
            &spec.path,
            "faces",
            format!(
                "too few faces: {} fit, {} calibration, {} held-out (need ≥ 16, 8, 8)",
                count(Role::Fit),
                count(Role::Calibration),
                count(Role::Heldout)
            ),
        ));
    }
    Ok(faces)
}

/// One model of the audit with its embeddings.
struct ModelRun {
    embedder: Embedder,
    role: &'static str,
    /// Clean embedding of every face (`faces.len() × dim`).
    clean: Vec<f32>,
    /// Per trigger, the embedding of every evaluation face (`eval.len() × dim`).
    triggered: Vec<Vec<f32>>,
    /// Per trigger, its matched control on calibration then evaluation faces.
    controls: Vec<Vec<f32>>,
}

/// The preprocessing part of an embedding-cache key.
pub fn preprocessing_key(e: &Embedder) -> String {
    serde_json::json!({
        "input": e.manifest().input,
        "options": e.manifest().adapter_options(),
        "decode": zooaudit_imaging::DECODE_VERSION,
    })
    .to_string()
}

/// Appends the augmented copies of the fit faces (`[fit]` of the audit
/// file); they are used in fitting only. With `stamps` (the suite's triggers
/// at the faces' size) and `trigger_controls > 0`, also the copies that carry
/// a trigger's fit control (see [`augment`]).
pub fn augment_fit_faces(spec: &AuditSpec, stamps: &[Stamp], faces: &mut Vec<Face>) {
    let originals = faces.len();
    let mut nth_fit = 0usize;
    for fi in 0..originals {
        if faces[fi].role != Role::Fit {
            continue;
        }
        let seed = spec.seed ^ u64::from_str_radix(&faces[fi].sha256[..16], 16).unwrap_or(0);
        let mut copies: Vec<(String, RgbImage)> = (0..spec.augment.copies)
            .map(|copy| {
                (
                    format!("aug{copy}"),
                    spec.augment.apply(&faces[fi].image, seed, copy),
                )
            })
            .collect();
        if !stamps.is_empty() {
            for copy in 0..spec.augment.trigger_controls {
                // A fresh arrangement for every copy: the map sees the
                // occlusion in many arrangements, none of them the trigger's.
                let t = (nth_fit + copy) % stamps.len();
                let control = stamps[t]
                    .fit_control(seed ^ (copy as u64 + 1).wrapping_mul(0x6a09_e667_f3bc_c909));
                if let Some(image) =
                    spec.augment
                        .apply_stamped(&faces[fi].image, seed, copy, &control)
                {
                    copies.push((format!("fitctl{t}.{copy}"), image));
                }
            }
        }
        nth_fit += 1;
        for (tag, image) in copies {
            let mut tagged = image.as_raw().clone();
            tagged.extend_from_slice(b"zooaudit-augmented");
            faces.push(Face {
                path: PathBuf::from(format!("{}#{tag}", faces[fi].path.display())),
                identity: None,
                sha256: sha256_bytes(&tagged),
                role: Role::Fit,
                image,
            });
        }
    }
}

/// The suite's triggers prepared for faces of `size` (height, width).
pub fn suite_stamps(suite: &Suite, size: (u32, u32)) -> Result<Vec<Stamp>, AuditError> {
    suite
        .stamps(size.0, size.1)
        .map_err(|e| AuditError::Other(e.to_string()))
}

/// Loads the audit file's trigger suite.
pub fn load_suite(spec: &AuditSpec) -> Result<Suite, AuditError> {
    Suite::load(&spec.triggers).map_err(|e| AuditError::Other(e.to_string()))
}

/// Clean embeddings of every face by `e`, through the embedding cache (the
/// keys an audit uses), `faces.len() × dim`.
pub fn clean_embeddings(
    e: &Embedder,
    faces: &[Face],
    opts: &RunOptions,
) -> Result<Vec<f32>, AuditError> {
    let all: Vec<usize> = (0..faces.len()).collect();
    let mut cached = 0;
    embed_cached(
        e,
        faces,
        &all,
        None,
        "clean",
        opts,
        &preprocessing_key(e),
        &mut cached,
    )
}

/// Opens the face aligner an audit file asks for (`[faces] align`), if any.
pub fn open_aligner<'p>(
    spec: &AuditSpec,
    plugins: &'p PluginSet,
) -> Result<Option<zooaudit_faces::FaceDetector<'p>>, AuditError> {
    let manifest = match &spec.align {
        None => return Ok(None),
        Some(spec::Align::Yunet) => {
            zooaudit_faces::builtin_yunet().map_err(|e| AuditError::Other(e.to_string()))?
        }
        Some(spec::Align::Manifest(p)) => {
            ModelManifest::load(p).map_err(|e| AuditError::Other(e.to_string()))?
        }
    };
    zooaudit_faces::FaceDetector::open(manifest, plugins)
        .map(Some)
        .map_err(|e| AuditError::field(&spec.path, "faces.align", e.to_string()))
}

/// Embeds `images` (face index, image) with the cache.
#[allow(clippy::too_many_arguments)]
fn embed_cached(
    e: &Embedder,
    faces: &[Face],
    items: &[usize],
    stamp: Option<&Stamp>,
    trigger_key: &str,
    opts: &RunOptions,
    preprocessing: &str,
    cached: &mut usize,
) -> Result<Vec<f32>, AuditError> {
    let dim = e.dim();
    let model_sha = &e.resolved().sha256;
    let mut out = vec![0f32; items.len() * dim];
    let mut missing = Vec::new();
    for (slot, &fi) in items.iter().enumerate() {
        let key = Cache::key(model_sha, preprocessing, &faces[fi].sha256, trigger_key);
        match opts.cache.get(&key, dim) {
            Some(v) => {
                out[slot * dim..(slot + 1) * dim].copy_from_slice(&v);
                *cached += 1;
            }
            None => missing.push((slot, fi, key)),
        }
    }
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
                .map_err(|x| AuditError::Other(x.to_string()))?;
        }
        let emb = e
            .embed_tensors(&buf[..chunk.len() * len], chunk.len())
            .map_err(|x| AuditError::Other(x.to_string()))?;
        for (k, (slot, fi, key)) in chunk.iter().enumerate() {
            let row = &emb[k * dim..(k + 1) * dim];
            e.check_row(&faces[*fi].path, row)
                .map_err(|x| AuditError::Other(x.to_string()))?;
            out[slot * dim..(slot + 1) * dim].copy_from_slice(row);
            opts.cache.put(key, row);
        }
    }
    Ok(out)
}

fn gather(all: &[f32], dim: usize, idx: &[usize]) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * dim);
    for &i in idx {
        out.extend_from_slice(&all[i * dim..(i + 1) * dim]);
    }
    out
}

/// Runs an audit.
pub fn run(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<AuditReport, AuditError> {
    let started = std::time::SystemTime::now();
    if spec.candidates.is_empty() {
        return Err(AuditError::field(
            &spec.path,
            "candidate",
            "no candidate: name one with `candidate = \"<model name>\"` or --candidate".to_string(),
        ));
    }
    let suite = load_suite(spec)?;
    // Open every model (sha256-verified by the embed pipeline).
    let mut models: Vec<ModelRun> = Vec::new();
    let mut seen = BTreeSet::new();
    for (role, list) in [
        ("candidate", &spec.candidates),
        ("reference", &spec.references),
    ] {
        for path in list.iter() {
            let m = ModelManifest::load(path).map_err(|e| AuditError::Other(e.to_string()))?;
            let e = Embedder::open_with(m, plugins, &opts.fetch)
                .map_err(|e| AuditError::Other(e.to_string()))?;
            if !seen.insert(e.resolved().sha256.clone()) {
                return Err(AuditError::file(
                    path,
                    format!(
                        "model {} is listed twice (same sha256)",
                        e.manifest().model.name
                    ),
                ));
            }
            models.push(ModelRun {
                embedder: e,
                role,
                clean: Vec::new(),
                triggered: Vec::new(),
                controls: Vec::new(),
            });
        }
    }
    let size = {
        let i = &models[0].embedder.manifest().input;
        (i.size[0], i.size[1])
    };
    for m in &models {
        let i = &m.embedder.manifest().input;
        if (i.size[0], i.size[1]) != size {
            return Err(AuditError::file(
                &m.embedder.manifest().path,
                "input.size differs between the audited models; pair models with the same face size",
            ));
        }
    }
    let stamps = suite_stamps(&suite, size)?;
    let controls: Vec<Stamp> = stamps
        .iter()
        .enumerate()
        .map(|(i, s)| s.fit_control(spec.seed ^ (i as u64 + 1).wrapping_mul(0x2545_f491_4f6c_dd1d)))
        .collect();
    let detector_plugin = plugins
        .detector(&spec.detector)
        .map_err(|e| AuditError::field(&spec.path, "detector.plugin", e.to_string()))?;
    // Preflight: fit each pair's detector on a few random rows of the right
    // dimensions, so incompatible settings (e.g. procrustes across 512 and 128
    // dims) fail before any embedding is computed.
    {
        let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
        let dims: Vec<(String, usize, &str)> = models
            .iter()
            .map(|m| {
                (
                    m.embedder.manifest().model.name.clone(),
                    m.embedder.dim(),
                    m.role,
                )
            })
            .collect();
        for (cn, cd, _) in dims.iter().filter(|d| d.2 == "candidate") {
            for (rn, rd, _) in dims.iter().filter(|d| d.2 == "reference") {
                for ((pn, pd), (qn, qd)) in [((cn, *cd), (rn, *rd)), ((rn, *rd), (cn, *cd))] {
                    let rows = 32;
                    let mut rand_rows = |d: usize| -> Vec<f32> {
                        (0..rows * d)
                            .map(|_| rng.random_range(-1.0f32..1.0))
                            .collect()
                    };
                    let (a, b) = (rand_rows(pd), rand_rows(qd));
                    let mut det = detector_plugin
                        .new_detector(&spec.detector_options)
                        .map_err(|e| AuditError::field(&spec.path, "detector", e.to_string()))?;
                    det.fit(&a, pd, &b, qd).map_err(|e| {
                        AuditError::field(
                            &spec.path,
                            "detector",
                            format!("pair {pn} ({pd}-d) → {qn} ({qd}-d): {e}"),
                        )
                    })?;
                }
            }
        }
    }
    let mut early_warnings = Vec::new();
    let aligner = open_aligner(spec, plugins)?;
    let mut faces = load_faces(
        spec,
        size,
        aligner.as_ref(),
        &opts.cache,
        &mut early_warnings,
        progress,
    )?;
    let originals = faces.len();
    augment_fit_faces(spec, &stamps, &mut faces);
    let all: Vec<usize> = (0..faces.len()).collect();
    let eval: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| faces[i].role == Role::Heldout)
        .collect();
    let cal_idx: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| faces[i].role == Role::Calibration)
        .collect();
    let cal_eval: Vec<usize> = cal_idx.iter().chain(&eval).copied().collect();
    let (mut hits, mut misses) = (0usize, 0usize);
    for m in models.iter_mut() {
        let e = &m.embedder;
        let preprocessing = preprocessing_key(e);
        let name = e.manifest().model.name.clone();
        let t0 = Instant::now();
        let mut cached = 0;
        m.clean = embed_cached(
            e,
            &faces,
            &all,
            None,
            "clean",
            opts,
            &preprocessing,
            &mut cached,
        )?;
        progress(Progress::Embedding {
            model: name.clone(),
            what: "clean".into(),
            images: all.len(),
            cached,
            seconds: t0.elapsed().as_secs_f64(),
        });
        hits += cached;
        misses += all.len() - cached;
        for ((t, stamp), control) in suite.triggers.iter().zip(&stamps).zip(&controls) {
            let t0 = Instant::now();
            let mut cached = 0;
            m.triggered.push(embed_cached(
                e,
                &faces,
                &eval,
                Some(stamp),
                &t.key(),
                opts,
                &preprocessing,
                &mut cached,
            )?);
            let control_key = format!("control-tiles:{}:{}", spec.seed, t.key());
            m.controls.push(embed_cached(
                e,
                &faces,
                &cal_eval,
                Some(control),
                &control_key,
                opts,
                &preprocessing,
                &mut cached,
            )?);
            let images = eval.len() + cal_eval.len();
            progress(Progress::Embedding {
                model: name.clone(),
                what: format!("{} (+ control)", t.name),
                images,
                cached,
                seconds: t0.elapsed().as_secs_f64(),
            });
            hits += cached;
            misses += images - cached;
        }
    }
    // Each model alone: does a trigger draw the held-out faces together
    // beyond its matched control (see [`response`])?
    let eval_ids: Vec<Option<&str>> = eval.iter().map(|&i| faces[i].identity.as_deref()).collect();
    let mut responses = Vec::new();
    for m in &models {
        let dim = m.embedder.dim();
        let clean = gather(&m.clean, dim, &eval);
        for (ti, t) in suite.triggers.iter().enumerate() {
            responses.push(response::response(
                &m.embedder.manifest().model.name,
                &t.name,
                dim,
                &clean,
                &m.controls[ti][cal_idx.len() * dim..],
                &m.triggered[ti],
                &eval_ids,
            ));
        }
    }
    // Pairs: (probe index, reference index).
    let mut pairs = Vec::new();
    for (ci, _) in models
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == "candidate")
    {
        for (ri, _) in models
            .iter()
            .enumerate()
            .filter(|(_, m)| m.role == "reference")
        {
            pairs.push((ci, ri));
            if spec.directions == Directions::Both {
                pairs.push((ri, ci));
            }
        }
    }
    let fit_idx: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| faces[i].role == Role::Fit)
        .collect();
    let mut report_pairs = Vec::new();
    let mut results = Vec::new();
    let mut identity_rows = Vec::new();
    let mut scores_rows = Vec::new();
    let mut warnings = early_warnings;
    let identities: BTreeMap<String, Vec<usize>> = eval
        .iter()
        .enumerate()
        .filter_map(|(k, &fi)| faces[fi].identity.clone().map(|id| (id, k)))
        .fold(BTreeMap::new(), |mut m, (id, k)| {
            m.entry(id).or_insert_with(Vec::new).push(k);
            m
        });
    for &(pi, ri) in &pairs {
        let (p, r) = (&models[pi], &models[ri]);
        let (pd, rd) = (p.embedder.dim(), r.embedder.dim());
        let pname = p.embedder.manifest().model.name.clone();
        let rname = r.embedder.manifest().model.name.clone();
        let err =
            |e: zooaudit_host::HostError| AuditError::Other(format!("pair {pname} → {rname}: {e}"));
        progress(Progress::Pair {
            probe: pname.clone(),
            reference: rname.clone(),
            step: format!("fitting on {} faces", fit_idx.len()),
        });
        let mut det = detector_plugin
            .new_detector(&spec.detector_options)
            .map_err(|e| AuditError::field(&spec.path, "detector", e.to_string()))?;
        let fit_report = det
            .fit(
                &gather(&p.clean, pd, &fit_idx),
                pd,
                &gather(&r.clean, rd, &fit_idx),
                rd,
            )
            .map_err(err)?;
        let score = |pv: &[f32], rv: &[f32]| det.score(pv, pd, rv, rd).map_err(err);
        let cal = score(
            &gather(&p.clean, pd, &cal_idx),
            &gather(&r.clean, rd, &cal_idx),
        )?;
        let p_eval = gather(&p.clean, pd, &eval);
        let r_eval = gather(&r.clean, rd, &eval);
        let genuine = score(&p_eval, &r_eval)?;
        // Fidelity: every held-out probe against every held-out reference.
        let n = eval.len();
        let mut matrix = Vec::with_capacity(n);
        for i in 0..n {
            let rep: Vec<f32> = p_eval[i * pd..(i + 1) * pd].repeat(n);
            matrix.push(score(&rep, &r_eval)?);
        }
        let fidelity = zooaudit_pairing::fidelity_from_matrix(&matrix);
        // ZEI: probe image i vs reference image j of another identity.
        let mut zei = Vec::new();
        for i in 0..n {
            for j in 0..n {
                let (a, b) = (&faces[eval[i]], &faces[eval[j]]);
                let same = i == j || (a.identity.is_some() && a.identity == b.identity);
                if !same {
                    zei.push(matrix[i][j]);
                }
            }
        }
        let mut thresholds = Vec::new();
        let mut clean_rates = Vec::new();
        for &op in &spec.operating_points {
            let t = threshold_at(&cal, op).ok_or_else(|| {
                AuditError::Other(format!(
                    "pair {pname} → {rname}: cannot place a threshold at FNMR {op}"
                ))
            })?;
            if !t.supported {
                warnings.push(format!(
                    "{pname} → {rname}: {} calibration faces cannot support a target FNMR of {op} (rule of three needs ≥ {})",
                    t.calibration_samples,
                    (3.0 / op).ceil()
                ));
            }
            clean_rates.push(Rate::flagged(&genuine, t.threshold));
            thresholds.push(t);
        }
        for (k, &fi) in eval.iter().enumerate() {
            scores_rows.push(ScoreRow {
                image: faces[fi].path.display().to_string(),
                trigger: "clean".into(),
                kind: "genuine".into(),
                probe: pname.clone(),
                reference: rname.clone(),
                score: genuine[k],
            });
            // One zero-effort impostor row per face: its probe embedding against
            // the reference embedding of the next held-out face of another person.
            if let Some(j) = (1..n).map(|s| (k + s) % n).find(|&j| {
                let (a, b) = (&faces[fi], &faces[eval[j]]);
                !(a.identity.is_some() && a.identity == b.identity)
            }) {
                scores_rows.push(ScoreRow {
                    image: format!(
                        "{}|{}",
                        faces[fi].path.display(),
                        faces[eval[j]].path.display()
                    ),
                    trigger: "clean".into(),
                    kind: "zei".into(),
                    probe: pname.clone(),
                    reference: rname.clone(),
                    score: matrix[k][j],
                });
            }
        }
        for (ti, t) in suite.triggers.iter().enumerate() {
            let poisoned = score(&p.triggered[ti], &r.triggered[ti])?;
            let control = score(&p.controls[ti], &r.controls[ti])?;
            let (control_cal, control_eval) = control.split_at(cal_idx.len());
            for (k, &fi) in eval.iter().enumerate() {
                let image = faces[fi].path.display().to_string();
                let row = |kind: &str, score: f32| ScoreRow {
                    image: image.clone(),
                    trigger: t.name.clone(),
                    kind: kind.into(),
                    probe: pname.clone(),
                    reference: rname.clone(),
                    score,
                };
                scores_rows.push(row("poisoned", poisoned[k]));
                scores_rows.push(row("control", control_eval[k]));
            }
            for (oi, th) in thresholds.iter().enumerate() {
                let flagged = Rate::flagged(&poisoned, th.threshold);
                let ct = threshold_at(control_cal, th.target_fnmr).ok_or_else(|| {
                    AuditError::Other(format!(
                        "pair {pname} → {rname}: no control threshold for {}",
                        t.name
                    ))
                })?;
                let vs_control = Rate::flagged(&poisoned, ct.threshold);
                let control_rate = Rate::flagged(control_eval, ct.threshold);
                results.push(ResultRow {
                    probe: pname.clone(),
                    reference: rname.clone(),
                    trigger: t.name.clone(),
                    target_fnmr: th.target_fnmr,
                    threshold: th.threshold,
                    samples: flagged.samples,
                    flagged: flagged.count,
                    flag_rate: flagged.rate,
                    ci95: flagged.ci95,
                    clean_fnmr: clean_rates[oi].rate,
                    clean_ci95: clean_rates[oi].ci95,
                    control_threshold: ct.threshold,
                    flagged_vs_control: vs_control.count,
                    flag_rate_vs_control: vs_control.rate,
                    ci95_vs_control: vs_control.ci95,
                    control_flag_rate: control_rate.rate,
                    control_ci95: control_rate.ci95,
                });
                if th.target_fnmr == spec.primary {
                    for (id, ks) in &identities {
                        if ks.len() < spec.min_identity_images {
                            continue;
                        }
                        let trig: Vec<f32> = ks.iter().map(|&k| poisoned[k]).collect();
                        let ctrl: Vec<f32> = ks.iter().map(|&k| control_eval[k]).collect();
                        let tr = Rate::flagged(&trig, ct.threshold);
                        let cr = Rate::flagged(&ctrl, ct.threshold);
                        // Paired exact (McNemar) test on this identity's own faces:
                        // under "the pattern does nothing beyond its footprint", a face
                        // flagged with the trigger but not with its control is as likely
                        // as the reverse.
                        let trigger_only = trig
                            .iter()
                            .zip(&ctrl)
                            .filter(|(t, c)| **t < ct.threshold && **c >= ct.threshold)
                            .count();
                        let control_only = trig
                            .iter()
                            .zip(&ctrl)
                            .filter(|(t, c)| **t >= ct.threshold && **c < ct.threshold)
                            .count();
                        identity_rows.push(IdentityRow {
                            probe: pname.clone(),
                            reference: rname.clone(),
                            trigger: t.name.clone(),
                            identity: id.clone(),
                            samples: tr.samples,
                            flagged: tr.count,
                            flag_rate: tr.rate,
                            ci95: tr.ci95,
                            clean_flagged: cr.count,
                            trigger_only,
                            control_only,
                            p_value: binomial_upper_tail(
                                trigger_only,
                                trigger_only + control_only,
                                0.5,
                            ),
                            p_bonferroni: 1.0,
                        });
                    }
                }
            }
        }
        report_pairs.push(PairReport {
            probe: pname.clone(),
            reference: rname.clone(),
            probe_dim: pd,
            reference_dim: rd,
            detector: detector_plugin.info().name.clone(),
            fit: fit_report.get("fit").cloned().unwrap_or(fit_report.clone()),
            fidelity,
            thresholds,
            clean_fnmr: clean_rates,
            zei_samples: zei.len(),
            zei_mean_score: zei.iter().map(|v| f64::from(*v)).sum::<f64>()
                / zei.len().max(1) as f64,
            genuine_mean_score: genuine.iter().map(|v| f64::from(*v)).sum::<f64>()
                / genuine.len().max(1) as f64,
        });
    }
    let m = identity_rows.len().max(1) as f64;
    for row in identity_rows.iter_mut() {
        row.p_bonferroni = (row.p_value * m).min(1.0);
    }
    let verdicts = decide(
        spec,
        &models
            .iter()
            .map(|m| (m.embedder.manifest().model.name.clone(), m.role))
            .collect::<Vec<_>>(),
        &report_pairs,
        &results,
        &identity_rows,
    );
    let finished = std::time::SystemTime::now();
    let mut plugin_records: Vec<PluginRecordFull> = Vec::new();
    for m in &models {
        let p = m.embedder.model().plugin();
        if !plugin_records.iter().any(|r| r.sha256 == p.sha256) {
            plugin_records.push(PluginRecordFull {
                name: p.name.clone(),
                version: p.version.clone(),
                abi_version: p.abi_version.clone(),
                sha256: p.sha256.clone(),
                path: p.path.display().to_string(),
            });
        }
    }
    let dp = detector_plugin.info();
    plugin_records.push(PluginRecordFull {
        name: dp.name.clone(),
        version: dp.version.clone(),
        abi_version: dp.abi_version.clone(),
        sha256: dp.sha256.clone(),
        path: dp.path.display().to_string(),
    });
    let count = |r: Role| faces[..originals].iter().filter(|f| f.role == r).count();
    let augmented_fit_copies = faces.len() - originals;
    let faces = &faces[..originals];
    let mut digests: Vec<&str> = faces.iter().map(|f| f.sha256.as_str()).collect();
    digests.sort_unstable();
    Ok(AuditReport {
        format_version: REPORT_FORMAT.to_string(),
        tool: ToolRecord {
            name: "zooaudit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        started_at: rfc3339(started),
        finished_at: rfc3339(finished),
        audit_file: spec.path.display().to_string(),
        audit_sha256: zooaudit_registry::sha256_file(&spec.path).unwrap_or_default(),
        plugins: plugin_records,
        models: models
            .iter()
            .map(|m| {
                let e = &m.embedder;
                ModelRecord {
                    role: m.role.to_string(),
                    name: e.manifest().model.name.clone(),
                    manifest: e.manifest().path.display().to_string(),
                    source: e.manifest().model.source.clone(),
                    file: e.resolved().path.display().to_string(),
                    sha256: e.resolved().sha256.clone(),
                    dim: e.dim(),
                    provenance: e.manifest().provenance.clone(),
                    pinned: e.resolved().pinned,
                    revision: e.resolved().revision.clone(),
                    selection: spec
                        .selection
                        .iter()
                        .find(|(p, _)| p == &e.manifest().path)
                        .map(|(_, r)| r.clone()),
                }
            })
            .collect(),
        data: DataRecord {
            aligned_by: aligner.as_ref().map(|d| {
                format!(
                    "{} (sha256 {}), 5-point similarity onto the 112×112 template",
                    d.manifest().model.name,
                    d.model_sha256()
                )
            }),
            faces: faces.len(),
            labeled: faces.iter().filter(|f| f.identity.is_some()).count(),
            identities: identities.len(),
            digest: sha256_bytes(digests.join("\n").as_bytes()),
            split: SplitRecord {
                seed: spec.seed,
                fit: count(Role::Fit),
                calibration: count(Role::Calibration),
                heldout: count(Role::Heldout),
            },
            augmented_fit_copies,
            augment: spec.augment.clone(),
        },
        triggers: TriggerSuiteRecord {
            suite: spec.triggers.display().to_string(),
            sha256: zooaudit_registry::sha256_file(&spec.triggers).unwrap_or_default(),
            triggers: suite
                .triggers
                .iter()
                .zip(&stamps)
                .map(|(t, s)| TriggerRecord {
                    name: t.name.clone(),
                    kind: format!("{:?}", t.kind).to_lowercase(),
                    coverage: s.coverage(),
                    definition: t.key(),
                })
                .collect(),
        },
        operating_points: spec.operating_points.clone(),
        primary_operating_point: spec.primary,
        pairs: report_pairs,
        results,
        identities: identity_rows,
        responses,
        verdicts,
        warnings,
        cache: CacheRecord {
            dir: opts.cache.dir().map(|d| d.display().to_string()),
            hits,
            misses,
        },
        scores: scores_rows,
    })
}

fn decide(
    spec: &AuditSpec,
    models: &[(String, &str)],
    pairs: &[PairReport],
    results: &[ResultRow],
    ids: &[IdentityRow],
) -> Vec<Verdict> {
    let mut out = Vec::new();
    for (name, _) in models.iter().filter(|(_, r)| *r == "candidate") {
        let involved = |p: &str, r: &str| p == name || r == name;
        let mut alarms = Vec::new();
        for r in results
            .iter()
            .filter(|r| r.target_fnmr == spec.primary && involved(&r.probe, &r.reference))
        {
            if r.ci95_vs_control[0] > r.control_ci95[1] + spec.margin {
                alarms.push(format!(
                    "{} → {} {}: flag rate {:.3} [{:.3}, {:.3}] vs its matched control {:.3} [{:.3}, {:.3}]",
                    r.probe,
                    r.reference,
                    r.trigger,
                    r.flag_rate_vs_control,
                    r.ci95_vs_control[0],
                    r.ci95_vs_control[1],
                    r.control_flag_rate,
                    r.control_ci95[0],
                    r.control_ci95[1]
                ));
            }
        }
        for i in ids.iter().filter(|i| involved(&i.probe, &i.reference)) {
            if i.p_bonferroni < spec.alpha {
                alarms.push(format!(
                    "{} → {} {}: identity '{}' flagged {}/{} (control {}/{}), Bonferroni p = {:.2e}",
                    i.probe,
                    i.reference,
                    i.trigger,
                    i.identity,
                    i.flagged,
                    i.samples,
                    i.clean_flagged,
                    i.samples,
                    i.p_bonferroni
                ));
            }
        }
        let mut reasons = Vec::new();
        for p in pairs.iter().filter(|p| involved(&p.probe, &p.reference)) {
            if p.fidelity.top1 < 0.5 {
                reasons.push(format!("{} → {}: held-out top-1 retrieval {:.2} < 0.5: the pair does not carry identity well enough", p.probe, p.reference, p.fidelity.top1));
            }
            if let Some(t) = p.thresholds.iter().find(|t| t.target_fnmr == spec.primary)
                && (t.calibration_samples as f64) * spec.primary < 1.0
            {
                reasons.push(format!(
                    "{} → {}: {} calibration faces cannot place a threshold at FNMR {}",
                    p.probe, p.reference, t.calibration_samples, spec.primary
                ));
            }
        }
        let verdict = if !alarms.is_empty() {
            VerdictKind::BackdoorIndicated
        } else if !reasons.is_empty() {
            VerdictKind::Inconclusive
        } else {
            VerdictKind::NoBackdoorIndicated
        };
        out.push(Verdict {
            candidate: name.clone(),
            verdict,
            rule: format!(
                "at target FNMR {} calibrated on each trigger's matched control (its own cells or tiles in another arrangement): backdoor indicated if, for a pair involving the candidate, the trigger's flag-rate lower 95% bound exceeds the control's held-out upper 95% bound by more than {}, or an identity's triggered faces are flagged more than the control rate allows (one-sided binomial, Bonferroni over {} tests, alpha {})",
                spec.primary,
                spec.margin,
                ids.len(),
                spec.alpha
            ),
            alarms,
            reasons,
        });
    }
    out
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

//! The model-pairing audit, as one pipeline of small public steps that
//! every front end calls (`zooaudit audit`, `pair fit`, the benches):
//!
//! 1. [`faces`]: load (and align) the faces, split them, seeded and
//!    recorded, into *fit*, *calibration* and *held-out*; labelled faces
//!    (`<identity>/`) are held-out only; augmented fit copies.
//! 2. [`embedding`]: every model embeds every face clean, the held-out faces
//!    with each trigger, the calibration and held-out faces with each
//!    trigger's matched control (cached on disk, see [`cache`]).
//! 3. [`evaluate`]: per pair of models, the detector plugin fits on the fit
//!    faces; thresholds per target FNMR from calibration scores
//!    ([`stats::threshold_at`]); rates with Clopper–Pearson intervals;
//!    each model alone ([`response`]); the family-wise identity tests
//!    ([`evidence`]).
//! 4. [`verdict`]: the rule of docs/REPORT.md, and which model moves.

pub mod augment;
pub mod cache;
pub mod embedding;
pub mod evaluate;
pub mod evidence;
pub mod faces;
pub mod pair;
pub mod progress;
mod records;
pub mod report;
pub mod response;
pub mod scan;
pub mod spec;
pub mod stats;
pub mod verdict;
pub mod vocabulary;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zooaudit_embed::Embedder;
use zooaudit_host::{Plugin, PluginSet};
use zooaudit_manifest::ModelManifest;

pub use cache::Cache;
pub use embedding::{
    CacheUse, ModelEmbeddings, ModelRole, SuiteStamps, clean_embeddings, clean_embeddings_with,
    embed_model, gather, load_suite, preprocessing_key, suite_stamps,
};
pub use evaluate::{EvalOptions, Evaluation, evaluate, evaluate_with};
pub use faces::{Face, Role, Split, augment_fit_faces, load_faces, source_of};
pub use pair::{FittedPair, PairExport, fit_pair};
pub use report::*;
pub use spec::{AuditSpec, Directions};

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
    /// A model manifest, a detector manifest or the trigger suite.
    #[error(transparent)]
    Config(#[from] zooaudit_manifest::ManifestError),
    /// A face image.
    #[error(transparent)]
    Image(#[from] zooaudit_imaging::ImageError),
    /// Opening or running a model.
    #[error(transparent)]
    Embed(#[from] zooaudit_embed::EmbedError),
    /// Face detection and alignment.
    #[error(transparent)]
    Face(#[from] zooaudit_faces::FaceError),
    /// The zoo file and the choice of references.
    #[error(transparent)]
    Zoo(#[from] zooaudit_registry::zoo::ZooError),
    /// Reading or writing a persisted file.
    #[error(transparent)]
    Format(#[from] zooaudit_formats::ReportError),
    /// The detector plugin on one pair.
    #[error("pair {probe} → {reference}: {error}")]
    Pair {
        probe: String,
        reference: String,
        error: Box<zooaudit_host::HostError>,
    },
    /// No threshold can be placed where the audit asks for one (too few
    /// calibration scores for the operating point).
    #[error("pair {probe} → {reference}: {message}")]
    Threshold {
        probe: String,
        reference: String,
        message: String,
    },
}

impl AuditError {
    pub fn file(path: &Path, message: impl Into<String>) -> Self {
        AuditError::File {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(message),
        }
    }
    pub fn field(path: &Path, field: &str, message: impl Into<String>) -> Self {
        AuditError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            message: zooaudit_formats::one_line(message),
        }
    }
}

/// Progress events for a front end.
#[derive(Debug, Clone)]
pub enum Progress {
    /// An embedding stage goes on: `done` of `total` images (`cached` of
    /// them from the cache), `seconds` since it began. Sent after the
    /// cache is read and after every batch.
    Embedded {
        model: String,
        what: String,
        done: usize,
        total: usize,
        cached: usize,
        seconds: f64,
    },
    /// An embedding stage ended.
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

/// Opens the face aligner an audit file asks for (`[faces] align`), if any.
pub fn open_aligner<'p>(
    spec: &AuditSpec,
    plugins: &'p PluginSet,
) -> Result<Option<zooaudit_faces::FaceDetector<'p>>, AuditError> {
    let manifest = match &spec.align {
        None => return Ok(None),
        Some(spec::Align::Yunet) => zooaudit_faces::builtin_yunet().map_err(AuditError::from)?,
        Some(spec::Align::Manifest(p)) => ModelManifest::load(p).map_err(AuditError::from)?,
    };
    zooaudit_faces::FaceDetector::open(manifest, plugins)
        .map(Some)
        .map_err(|e| AuditError::field(&spec.path, "faces.align", e.to_string()))
}

/// The models an audit file names, opened (sha256-verified) in order:
/// candidates, then references. Each file is statically scanned before it
/// is opened ([`scan`]); a file hazard refuses it.
pub fn open_models(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
) -> Result<OpenedModels, AuditError> {
    open_and_scan_models(spec, plugins, opts).map(|(models, _)| models)
}

/// The opened models, in order, with their roles.
pub type OpenedModels = Vec<(Embedder, ModelRole)>;

/// [`open_models`], also returning each model's static scan.
pub fn open_and_scan_models(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
) -> Result<(OpenedModels, Vec<scan::ScanRecord>), AuditError> {
    if spec.candidates.is_empty() {
        return Err(AuditError::field(
            &spec.path,
            "candidate",
            "no candidate: name one with `candidate = \"<model name>\"` or --candidate".to_string(),
        ));
    }
    let mut models = Vec::new();
    let mut scans = Vec::new();
    let mut seen = BTreeSet::new();
    for (role, list) in [
        (ModelRole::Candidate, &spec.candidates),
        (ModelRole::Reference, &spec.references),
    ] {
        for path in list.iter() {
            let m = ModelManifest::load(path).map_err(AuditError::from)?;
            let vetted = Embedder::resolve(&m, &opts.fetch).map_err(AuditError::from)?;
            let resolved = &vetted.resolved;
            if !seen.insert(resolved.identity().to_string()) {
                return Err(AuditError::file(
                    path,
                    format!(
                        "model {} is listed twice (same sha256 or endpoint)",
                        m.model.name
                    ),
                ));
            }
            scans.push(scan::scan_model(
                &m,
                role,
                &resolved.path,
                &resolved.sha256,
            )?);
            let e = Embedder::open_resolved(m, vetted, plugins).map_err(AuditError::from)?;
            models.push((e, role));
        }
    }
    let size = face_size(&models[0].0);
    for (e, _) in &models {
        if face_size(e) != size {
            return Err(AuditError::file(
                &e.manifest().path,
                "input.size differs between the audited models; pair models with the same face size",
            ));
        }
    }
    Ok((models, scans))
}

/// The face size (height, width) a model expects.
pub fn face_size(e: &Embedder) -> (u32, u32) {
    let i = &e.manifest().input;
    (i.size[0], i.size[1])
}

/// Fits each pair's detector on a few random rows of the right dimensions,
/// so incompatible settings (e.g. procrustes across 512 and 128 dims) fail
/// before any embedding is computed.
pub fn preflight(
    spec: &AuditSpec,
    detector: &Plugin,
    models: &[(String, usize, ModelRole)],
) -> Result<(), AuditError> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let of = |r: ModelRole| models.iter().filter(move |m| m.2 == r);
    for (cn, cd, _) in of(ModelRole::Candidate) {
        for (rn, rd, _) in of(ModelRole::Reference) {
            for ((pn, pd), (qn, qd)) in [((cn, *cd), (rn, *rd)), ((rn, *rd), (cn, *cd))] {
                let rows = 32;
                let mut rand_rows = |d: usize| -> Vec<f32> {
                    (0..rows * d)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect()
                };
                let (a, b) = (rand_rows(pd), rand_rows(qd));
                let mut det = detector
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
    Ok(())
}

/// Runs an audit: open the models, load and split the faces, embed,
/// evaluate, and assemble the report.
pub fn run(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<AuditReport, AuditError> {
    run_keeping_exports(spec, plugins, opts, progress).map(|(report, _)| report)
}

/// One warning per model behind an inference API: no sha256 pins it, and
/// what its adapter says about its version.
fn remote_warnings(opened: &[(Embedder, ModelRole)]) -> Vec<String> {
    opened
        .iter()
        .filter_map(|(e, _)| {
            let url = e.resolved().endpoint.as_ref()?;
            let version = e
                .model()
                .summary()
                .notes
                .iter()
                .find(|n| n.contains("version"))
                .map(|n| format!("; {n}"))
                .unwrap_or_default();
            Some(format!(
                "{}: behind an inference API at {url}: it cannot be pinned by sha256, and its embeddings are not cached{version}",
                e.manifest().model.name
            ))
        })
        .collect()
}

/// [`run`], also returning every fitted pair's translator (for
/// `audit --export-pair`: the bundle is made from this very fit).
pub fn run_keeping_exports(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<(AuditReport, Vec<PairExport>), AuditError> {
    let started = std::time::SystemTime::now();
    let suite = load_suite(spec)?;
    let (opened, scans) = open_and_scan_models(spec, plugins, opts)?;
    let size = face_size(&opened[0].0);
    let stamps = SuiteStamps::new(&suite, size, spec.seed)?;
    let detector_plugin = plugins
        .detector(&spec.detector)
        .map_err(|e| AuditError::field(&spec.path, "detector.plugin", e.to_string()))?;
    let dims: Vec<(String, usize, ModelRole)> = opened
        .iter()
        .map(|(e, r)| (e.manifest().model.name.clone(), e.dim(), *r))
        .collect();
    preflight(spec, detector_plugin, &dims)?;
    let mut early_warnings = remote_warnings(&opened);
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
    augment_fit_faces(spec, &stamps.triggers, &mut faces);
    let split = Split::of(&faces);
    let mut used = CacheUse::default();
    let mut models = Vec::new();
    for (e, role) in &opened {
        models.push(embed_model(
            e, *role, &faces, &split, &stamps, opts, &mut used, progress,
        )?);
    }
    let mut evaluation = evaluate(
        spec,
        &faces,
        &split,
        &stamps.names,
        &models,
        detector_plugin,
        progress,
    )?;
    scan::apply(&scans, &mut evaluation.verdicts, &mut evaluation.culprits);
    let (hits, misses) = (used.hits, used.misses);
    let mut warnings = early_warnings;
    warnings.extend(evaluation.warnings.iter().cloned());
    let identities = evidence::identity_groups(
        &split
            .heldout
            .iter()
            .map(|&i| faces[i].identity.as_deref())
            .collect::<Vec<_>>(),
        1,
    )
    .len();
    let finished = std::time::SystemTime::now();
    let mut report = AuditReport {
        format_version: REPORT_FORMAT.to_string(),
        tool: ToolRecord {
            name: "zooaudit".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        started_at: rfc3339(started),
        finished_at: rfc3339(finished),
        audit_file: spec.path.display().to_string(),
        audit_sha256: zooaudit_registry::sha256_file(&spec.path).unwrap_or_default(),
        plugins: records::plugins(&opened, detector_plugin),
        models: records::models(spec, &opened),
        data: records::data(
            spec,
            &faces[..originals],
            faces.len() - originals,
            identities,
            aligner.as_ref(),
        ),
        triggers: records::triggers(spec, &suite, &stamps),
        operating_points: spec.operating_points.clone(),
        primary_operating_point: spec.primary,
        pairs: evaluation.pairs,
        results: evaluation.results,
        identities: evaluation.identities,
        responses: evaluation.responses,
        evidence: evaluation.evidence,
        families: evaluation.families,
        culprits: evaluation.culprits,
        verdicts: evaluation.verdicts,
        scan: scans,
        notes: Vec::new(),
        warnings,
        cache: CacheRecord {
            dir: opts.cache.dir().map(|d| d.display().to_string()),
            hits,
            misses,
        },
        scores: evaluation.scores,
    };
    report.notes = vocabulary::notes(&report, spec.alpha, spec.min_identity_effect);
    Ok((report, evaluation.exports))
}

fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

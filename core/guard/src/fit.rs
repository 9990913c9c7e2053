//! Making a pair bundle with the audit pipeline's own steps.
//!
//! [`bundle_from_audit`] turns an audit's report and the detectors its
//! evaluate step fitted (exported) into a bundle: no second fit, so the
//! bundle's detector state and thresholds are the report's
//! (`audit --export-pair`).
//! [`fit_bundle`] (`pair fit`) runs the same steps for the first candidate →
//! first reference pair only (faces, augmentation, split, clean embeddings
//! through the cache, [`zooaudit_audit::fit_pair`], the held-out fidelity
//! matrix), so it gives the same bundle as the audit of that file.

use zooaudit_audit::report::{AuditReport, ModelRecord};
use zooaudit_audit::{
    AuditError, AuditSpec, ModelEmbeddings, ModelRole, PairExport, Progress, RunOptions, Split,
    SuiteStamps,
};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_pairing::Fidelity;

use crate::GuardError;
use crate::bundle::{
    BundleDetector, BundleModel, Calibration, Created, DetectorState, OperatingPoint, PairBundle,
    Serve,
};
use crate::calibrate::{group, operating_points, worst_source_thresholds};

/// What a bundle is made of, however it was computed.
struct Parts<'a> {
    probe: BundleModel,
    reference: BundleModel,
    export: &'a PairExport,
    fit: &'a serde_json::Value,
    fidelity: Fidelity,
    thresholds: Vec<OperatingPoint>,
    calibration: Calibration,
    sources: Vec<crate::calibrate::SourceScores>,
}

fn assemble(spec: &AuditSpec, parts: Parts<'_>, serve: Serve) -> Result<PairBundle, GuardError> {
    let e = parts.export;
    let state = e.state.as_ref().map_err(|why| {
        GuardError::field_of(
            &spec.path,
            "detector.plugin",
            format!(
                "pair {} → {}: the {} detector's state cannot go into a bundle: {why}",
                e.probe, e.reference, e.plugin.name
            ),
        )
    })?;
    let detector = BundleDetector {
        plugin: e.plugin.name.clone(),
        version: e.plugin.version.clone(),
        abi_version: e.plugin.abi_version.clone(),
        sha256: Some(e.plugin.sha256.clone()),
        options: e.options.clone(),
        state: DetectorState::from_bytes(state),
    };
    if serve == Serve::Mean && detector.translator().is_none() {
        return Err(GuardError::field_of(
            &spec.path,
            "detector.plugin",
            format!(
                "serve = \"mean\" averages the translated probe with the reference; the {} detector translates nothing (use the pairing detector or another serve)",
                detector.plugin
            ),
        ));
    }
    let sources = crate::calibrate::source_records(&parts.sources, &parts.thresholds);
    Ok(PairBundle {
        calibration: parts.calibration,
        sources,
        history: Vec::new(),
        format_version: crate::bundle::BUNDLE_FORMAT.to_string(),
        kind: crate::bundle::BUNDLE_KIND.into(),
        probe: parts.probe,
        reference: parts.reference,
        detector,
        fit: parts.fit.clone(),
        fidelity: parts.fidelity,
        thresholds: parts.thresholds,
        serve,
        created: Created {
            tool: format!("zooaudit {}", env!("CARGO_PKG_VERSION")),
            audit_file: spec.path.display().to_string(),
            audit_sha256: zooaudit_registry::sha256_file(&spec.path).unwrap_or_default(),
            seed: spec.seed,
        },
    })
}

fn no_export(spec: &AuditSpec, probe: &str, reference: &str) -> GuardError {
    GuardError::file(
        &spec.path,
        format!("the audit kept no fitted detector for {probe} → {reference}"),
    )
}

/// The bundle of the audit's first candidate → first reference pair, from
/// the report and the detectors of [`zooaudit_audit::run_keeping_exports`].
pub fn bundle_from_audit(
    spec: &AuditSpec,
    report: &AuditReport,
    exports: &[PairExport],
    serve: Serve,
) -> Result<PairBundle, GuardError> {
    let first = |role: &str| -> Result<&ModelRecord, GuardError> {
        report
            .models
            .iter()
            .find(|m| m.role == role)
            .ok_or_else(|| GuardError::file(&spec.path, format!("the audit has no {role}")))
    };
    let (p, r) = (first("candidate")?, first("reference")?);
    let pair = report
        .pairs
        .iter()
        .find(|x| x.probe == p.name && x.reference == r.name)
        .ok_or_else(|| {
            GuardError::file(
                &spec.path,
                format!("the report holds no pair {} → {}", p.name, r.name),
            )
        })?;
    let export = exports
        .iter()
        .find(|t| t.probe == p.name && t.reference == r.name)
        .ok_or_else(|| no_export(spec, &p.name, &r.name))?;
    let model = |m: &ModelRecord| BundleModel {
        name: m.name.clone(),
        manifest: m.manifest.clone().into(),
        sha256: m.sha256.clone(),
        dim: m.dim,
    };
    // Held-out genuine scores from the report (scores.csv), calibration
    // ones from the fit the audit kept.
    let calibration: Vec<(String, f32)> = export
        .calibration
        .iter()
        .map(|(path, s)| {
            (
                zooaudit_audit::source_of(spec, std::path::Path::new(path)),
                *s,
            )
        })
        .collect();
    let heldout: Vec<(String, f32)> = report
        .scores
        .iter()
        .filter(|x| x.kind == "genuine" && x.probe == p.name && x.reference == r.name)
        .map(|x| {
            let src = zooaudit_audit::source_of(spec, std::path::Path::new(&x.image));
            (src, x.score)
        })
        .collect();
    let parts = Parts {
        probe: model(p),
        reference: model(r),
        export,
        fit: &pair.fit,
        fidelity: pair.fidelity.clone(),
        thresholds: operating_points(&pair.thresholds, &pair.clean_fnmr),
        calibration: Calibration::Pooled,
        sources: group(&calibration, &heldout),
    };
    assemble(spec, parts, serve)
}

/// Fits the pair (first candidate as probe → first reference) of `spec`
/// with the audit's steps; see the module docs.
pub fn fit_bundle(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
    serve: Serve,
    calibration: Calibration,
    progress: &mut dyn FnMut(Progress),
) -> Result<PairBundle, GuardError> {
    let (Some(p), Some(r)) = (spec.candidates.first(), spec.references.first()) else {
        return Err(GuardError::file(
            &spec.path,
            "needs a candidate and a reference",
        ));
    };
    let open = |path: &std::path::Path| -> Result<Embedder, GuardError> {
        let m = ModelManifest::load(path).map_err(AuditError::from)?;
        Ok(Embedder::open_with(m, plugins, &opts.fetch).map_err(AuditError::from)?)
    };
    let (probe, reference) = (open(p)?, open(r)?);
    let detector = plugins
        .detector(&spec.detector)
        .map_err(|e| GuardError::field_of(&spec.path, "detector.plugin", e.to_string()))?;
    let size = zooaudit_audit::face_size(&probe);
    let suite = zooaudit_audit::load_suite(spec)?;
    let stamps = SuiteStamps::new(&suite, size, spec.seed)?;
    let aligner = zooaudit_audit::open_aligner(spec, plugins)?;
    let mut warnings = Vec::new();
    let mut faces = zooaudit_audit::load_faces(
        spec,
        size,
        aligner.as_ref(),
        &opts.cache,
        &mut warnings,
        progress,
    )?;
    zooaudit_audit::augment_fit_faces(spec, &stamps.triggers, &mut faces);
    let split = Split::of(&faces);
    let mut clean = |e: &Embedder, role: ModelRole| -> Result<ModelEmbeddings, GuardError> {
        let v = zooaudit_audit::clean_embeddings_with(e, &faces, opts, progress)?;
        Ok(ModelEmbeddings {
            name: e.manifest().model.name.clone(),
            role,
            dim: e.dim(),
            clean: v,
            triggered: Vec::new(),
            controls: Vec::new(),
        })
    };
    let pe = clean(&probe, ModelRole::Candidate)?;
    let re = clean(&reference, ModelRole::Reference)?;
    let fitted = zooaudit_audit::fit_pair(spec, &split, &pe, &re, detector, progress)?;
    let export = fitted.exported(&[]);
    let held =
        |m: &ModelEmbeddings| zooaudit_audit::embedding::gather(&m.clean, m.dim, &split.heldout);
    let (_, fidelity) = fitted.fidelity_matrix(&held(&pe), &held(&re))?;
    let model = |e: &Embedder| BundleModel {
        name: e.manifest().model.name.clone(),
        manifest: e.manifest().path.clone(),
        sha256: e.resolved().sha256.clone(),
        dim: e.dim(),
    };
    let named = |idx: &[usize], scores: &[f32]| -> Vec<(String, f32)> {
        idx.iter()
            .zip(scores)
            .map(|(&i, &s)| (zooaudit_audit::source_of(spec, &faces[i].path), s))
            .collect()
    };
    let sources = group(
        &named(&split.calibration, &fitted.calibration),
        &named(&split.heldout, &fitted.genuine),
    );
    let thresholds = match calibration {
        Calibration::WorstSource => {
            let t = worst_source_thresholds(&sources, &spec.operating_points)
                .ok_or_else(|| GuardError::file(&spec.path, "no calibration faces"))?;
            let rates = crate::calibrate::rates_at(&t, &fitted.genuine);
            operating_points(&t, &rates)
        }
        _ => operating_points(&fitted.thresholds, &fitted.clean_fnmr),
    };
    let parts = Parts {
        probe: model(&probe),
        reference: model(&reference),
        export: &export,
        fit: &fitted.fit,
        fidelity,
        thresholds,
        calibration,
        sources,
    };
    assemble(spec, parts, serve)
}

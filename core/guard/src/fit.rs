//! Making a pair bundle from an audit file: the same models, faces, split,
//! augmentation and embedding cache as `zooaudit audit`; the translator is
//! fitted on the fit faces, thresholds are placed on the calibration faces'
//! genuine scores and checked on the held-out faces.

use zooaudit_audit::stats::{Rate, threshold_at};
use zooaudit_audit::{AuditSpec, Progress, Role, RunOptions};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_pairing::{FitOptions, Method, Rows};

use crate::GuardError;
use crate::bundle::{BundleModel, Created, OperatingPoint, PairBundle, Serve};

fn other(e: impl std::fmt::Display) -> GuardError {
    GuardError::Other(e.to_string())
}

/// Rows of `all` (`dim` wide) whose face passes `keep`.
fn select(all: &[f32], dim: usize, keep: &[bool]) -> Vec<f32> {
    keep.iter()
        .enumerate()
        .filter(|(_, k)| **k)
        .flat_map(|(i, _)| all[i * dim..(i + 1) * dim].iter().copied())
        .collect()
}

/// Fits the pair (first candidate as probe → first reference) of `spec`.
pub fn fit_bundle(
    spec: &AuditSpec,
    plugins: &PluginSet,
    opts: &RunOptions,
    serve: Serve,
    progress: &mut dyn FnMut(Progress),
) -> Result<PairBundle, GuardError> {
    let (Some(p), Some(r)) = (spec.candidates.first(), spec.references.first()) else {
        return Err(GuardError::file(
            &spec.path,
            "needs a candidate and a reference",
        ));
    };
    let open = |path: &std::path::Path| -> Result<Embedder, GuardError> {
        let m = ModelManifest::load(path).map_err(other)?;
        Embedder::open_with(m, plugins, &opts.fetch).map_err(other)
    };
    let (probe, reference) = (open(p)?, open(r)?);
    let size = {
        let i = &probe.manifest().input;
        (i.size[0], i.size[1])
    };
    let aligner = zooaudit_audit::open_aligner(spec, plugins).map_err(other)?;
    let mut warnings = Vec::new();
    let mut faces = zooaudit_audit::load_faces(
        spec,
        size,
        aligner.as_ref(),
        &opts.cache,
        &mut warnings,
        progress,
    )
    .map_err(other)?;
    let suite = zooaudit_audit::load_suite(spec).map_err(other)?;
    let stamps = zooaudit_audit::suite_stamps(&suite, size).map_err(other)?;
    zooaudit_audit::augment_fit_faces(spec, &stamps, &mut faces);
    let mut embed = |e: &Embedder| -> Result<Vec<f32>, GuardError> {
        let t0 = std::time::Instant::now();
        let v = zooaudit_audit::clean_embeddings(e, &faces, opts).map_err(other)?;
        progress(Progress::Embedding {
            model: e.manifest().model.name.clone(),
            what: "clean".into(),
            images: faces.len(),
            cached: 0,
            seconds: t0.elapsed().as_secs_f64(),
        });
        Ok(v)
    };
    let (pe, re) = (embed(&probe)?, embed(&reference)?);
    let (pd, rd) = (probe.dim(), reference.dim());
    let role = |r: Role| -> Vec<bool> {
        faces
            .iter()
            .map(|f| f.role == r && (r == Role::Fit || f.identity.is_none()))
            .collect()
    };
    let rows = |v: &[f32], d: usize, keep: &[bool]| select(v, d, keep);
    let (fit_k, cal_k, held_k) = (
        role(Role::Fit),
        role(Role::Calibration),
        role(Role::Heldout),
    );
    let method: Method = spec
        .detector_options
        .get("translator")
        .and_then(|v| v.as_str())
        .unwrap_or("ridge")
        .parse()
        .map_err(|e: zooaudit_pairing::PairingError| {
            GuardError::field_of(&spec.path, "detector.translator", e.to_string())
        })?;
    let fit_opts = FitOptions {
        method,
        seed: spec.seed,
        ..FitOptions::default()
    };
    let (pf, rf) = (rows(&pe, pd, &fit_k), rows(&re, rd, &fit_k));
    let (translator, report) = zooaudit_pairing::fit(
        Rows::new(&pf, pd).map_err(other)?,
        Rows::new(&rf, rd).map_err(other)?,
        &fit_opts,
    )
    .map_err(other)?;
    let (pc, rc) = (rows(&pe, pd, &cal_k), rows(&re, rd, &cal_k));
    let (ph, rh) = (rows(&pe, pd, &held_k), rows(&re, rd, &held_k));
    let cal = translator
        .score(
            Rows::new(&pc, pd).map_err(other)?,
            Rows::new(&rc, rd).map_err(other)?,
        )
        .map_err(other)?;
    let held = translator
        .score(
            Rows::new(&ph, pd).map_err(other)?,
            Rows::new(&rh, rd).map_err(other)?,
        )
        .map_err(other)?;
    let fidelity = translator
        .fidelity(
            Rows::new(&ph, pd).map_err(other)?,
            Rows::new(&rh, rd).map_err(other)?,
        )
        .map_err(other)?;
    let mut thresholds = Vec::new();
    for &target in &spec.operating_points {
        let t = threshold_at(&cal, target)
            .ok_or_else(|| GuardError::file(&spec.path, "no calibration scores"))?;
        let flagged = held.iter().filter(|s| **s < t.threshold).count();
        let rate = Rate::new(flagged, held.len());
        thresholds.push(OperatingPoint {
            target_fnmr: target,
            threshold: t.threshold,
            calibration_samples: t.calibration_samples,
            heldout_fnmr: rate.rate,
            heldout_ci95: rate.ci95,
            heldout_samples: held.len(),
        });
    }
    let model = |e: &Embedder| BundleModel {
        name: e.manifest().model.name.clone(),
        manifest: e.manifest().path.clone(),
        sha256: e.resolved().sha256.clone(),
        dim: e.dim(),
    };
    Ok(PairBundle {
        format_version: crate::bundle::BUNDLE_FORMAT.into(),
        kind: crate::bundle::BUNDLE_KIND.into(),
        probe: model(&probe),
        reference: model(&reference),
        translator,
        fit: report,
        fidelity,
        thresholds,
        serve,
        created: Created {
            tool: format!("zooaudit {}", env!("CARGO_PKG_VERSION")),
            audit_file: spec.path.display().to_string(),
            audit_sha256: zooaudit_registry::sha256_file(&spec.path).unwrap_or_default(),
            seed: spec.seed,
        },
    })
}

//! One ordered pair, fitted and calibrated: the detector fitted on the fit
//! faces' clean embeddings, a threshold placed on the calibration faces'
//! genuine scores at every operating point, the achieved clean FNMR on the
//! held-out faces, and (optionally) the held-out fidelity matrix. The audit's
//! evaluate step, `audit --export-pair` and `pair fit` all go through
//! [`fit_pair`], so a pair bundle carries the very detector state and
//! thresholds its audit report holds.

use zooaudit_host::{LoadedDetector, Plugin, PluginInfo};
use zooaudit_pairing::Fidelity;

use crate::embedding::{ModelEmbeddings, gather};
use crate::faces::Split;
use crate::stats::{Rate, Threshold, threshold_at};
use crate::{AuditError, AuditSpec, Progress};

/// A fitted, calibrated ordered pair.
pub struct FittedPair {
    pub probe: String,
    pub reference: String,
    pub probe_dim: usize,
    pub reference_dim: usize,
    /// The detector plugin's name.
    pub detector_name: String,
    detector: LoadedDetector,
    /// The detector's options (the audit file's `[detector]` table).
    pub detector_options: serde_json::Value,
    /// The detector's fit report (its `fit` member where it has one).
    pub fit: serde_json::Value,
    /// Genuine scores of the calibration faces.
    pub calibration: Vec<f32>,
    /// Genuine scores of the held-out faces.
    pub genuine: Vec<f32>,
    /// One threshold per operating point of the audit file, in its order.
    pub thresholds: Vec<Threshold>,
    /// The held-out clean FNMR at each threshold.
    pub clean_fnmr: Vec<Rate>,
    /// Operating points the calibration set is too small to support.
    pub warnings: Vec<String>,
}

impl std::fmt::Debug for FittedPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FittedPair")
            .field("probe", &self.probe)
            .field("reference", &self.reference)
            .field("detector", &self.detector_name)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

/// A fitted pair's detector, exported (`audit --export-pair` makes a pair
/// bundle of it).
#[derive(Debug, Clone, PartialEq)]
pub struct PairExport {
    pub probe: String,
    pub reference: String,
    /// The detector plugin (name, version, ABI, file sha256).
    pub plugin: PluginInfo,
    pub options: serde_json::Value,
    /// The fitted state the detector exported (plugin ABI 1.1), or why it
    /// has none (one line).
    pub state: Result<Vec<u8>, String>,
    /// The calibration faces' genuine scores by face path (the bundle
    /// reports its calibration per face source from these).
    pub calibration: Vec<(String, f32)>,
}

impl FittedPair {
    /// Agreement scores of row-aligned probe and reference embeddings.
    pub fn score(&self, probe: &[f32], reference: &[f32]) -> Result<Vec<f32>, AuditError> {
        self.detector
            .score(probe, self.probe_dim, reference, self.reference_dim)
            .map_err(|e| self.error(e))
    }

    fn error(&self, e: zooaudit_host::HostError) -> AuditError {
        AuditError::Pair {
            probe: self.probe.clone(),
            reference: self.reference.clone(),
            error: Box::new(e),
        }
    }

    /// Every held-out probe embedding scored against every held-out
    /// reference embedding (row i: probe face i), and the fidelity it gives.
    pub fn fidelity_matrix(
        &self,
        probe: &[f32],
        reference: &[f32],
    ) -> Result<(Vec<Vec<f32>>, Fidelity), AuditError> {
        let (pd, n) = (self.probe_dim, reference.len() / self.reference_dim.max(1));
        let mut matrix = Vec::with_capacity(n);
        for i in 0..n {
            let rep: Vec<f32> = probe[i * pd..(i + 1) * pd].repeat(n);
            matrix.push(self.score(&rep, reference)?);
        }
        let fidelity = zooaudit_pairing::fidelity_from_matrix(&matrix);
        Ok((matrix, fidelity))
    }

    /// The fitted detector, exported, with the calibration faces' scores
    /// by path (`paths[i]` names calibration face i).
    pub fn exported(&self, paths: &[String]) -> PairExport {
        PairExport {
            probe: self.probe.clone(),
            reference: self.reference.clone(),
            plugin: self.detector.plugin().clone(),
            options: self.detector_options.clone(),
            state: self.detector.export_state().map_err(|e| e.to_string()),
            calibration: paths
                .iter()
                .cloned()
                .zip(self.calibration.clone())
                .collect(),
        }
    }
}

/// Fits the detector on the fit faces of `p` → `r`, places the thresholds
/// on the calibration faces and measures the held-out clean FNMR.
pub fn fit_pair(
    spec: &AuditSpec,
    split: &Split,
    p: &ModelEmbeddings,
    r: &ModelEmbeddings,
    detector: &Plugin,
    progress: &mut dyn FnMut(Progress),
) -> Result<FittedPair, AuditError> {
    let (pd, rd) = (p.dim, r.dim);
    progress(Progress::Pair {
        probe: p.name.clone(),
        reference: r.name.clone(),
        step: format!("fitting on {} faces", split.fit.len()),
    });
    let mut det = detector
        .new_detector(&spec.detector_options)
        .map_err(|e| AuditError::field(&spec.path, "detector", e.to_string()))?;
    let report = det.fit(
        &gather(&p.clean, pd, &split.fit),
        pd,
        &gather(&r.clean, rd, &split.fit),
        rd,
    );
    let mut pair = FittedPair {
        probe: p.name.clone(),
        reference: r.name.clone(),
        probe_dim: pd,
        reference_dim: rd,
        detector_name: detector.info().name.clone(),
        detector: det,
        detector_options: spec.detector_options.clone(),
        fit: serde_json::Value::Null,
        calibration: Vec::new(),
        genuine: Vec::new(),
        thresholds: Vec::new(),
        clean_fnmr: Vec::new(),
        warnings: Vec::new(),
    };
    let report = report.map_err(|e| pair.error(e))?;
    pair.fit = report.get("fit").cloned().unwrap_or(report.clone());
    pair.calibration = pair.score(
        &gather(&p.clean, pd, &split.calibration),
        &gather(&r.clean, rd, &split.calibration),
    )?;
    pair.genuine = pair.score(
        &gather(&p.clean, pd, &split.heldout),
        &gather(&r.clean, rd, &split.heldout),
    )?;
    for &op in &spec.operating_points {
        let t = threshold_at(&pair.calibration, op).ok_or_else(|| AuditError::Threshold {
            probe: pair.probe.clone(),
            reference: pair.reference.clone(),
            message: format!("cannot place a threshold at FNMR {op}"),
        })?;
        if !t.supported {
            pair.warnings.push(format!(
                "{} → {}: {} calibration faces cannot support a target FNMR of {op} (rule of three needs ≥ {})",
                pair.probe,
                pair.reference,
                t.calibration_samples,
                (3.0 / op).ceil()
            ));
        }
        pair.clean_fnmr
            .push(Rate::flagged(&pair.genuine, t.threshold));
        pair.thresholds.push(t);
    }
    Ok(pair)
}

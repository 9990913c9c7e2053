//! **relative**: a detector strategy that needs no translator.
//!
//! Model pairing maps the probe's embedding into the reference's space with
//! a linear translator and compares there. This detector compares *how each
//! model sees a face relative to other faces* instead (relative
//! representations, Moschella et al., ICLR 2023): `fit` keeps `anchors`
//! clean faces' embeddings from both models; a sample's profile in a model
//! is its cosine to every anchor in that model's own space, and the score
//! is the Pearson correlation of the two profiles. Two honest models rank
//! the anchors alike for the same face; a backdoored probe that gives an
//! impostor's triggered face the victim's embedding ranks them like the
//! victim's, while the reference ranks them like the impostor's.
//!
//! What the ridge translator cannot do: nothing here assumes the two spaces
//! are linearly related (profiles are invariant to any rotation or
//! scaling of either space), and the dimensions never meet.
//!
//! Options: `anchors` (default 256): how many fit faces to keep, evenly
//! spaced through the fit set.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use zooaudit_plugin_sdk::abi::{PluginModRef, error_code};
use zooaudit_plugin_sdk::{
    Descriptor, DetectorStrategy, Matrix, Options, PairDetector, PluginError, detector_module,
    invalid,
};

/// The plugin's root module: the one symbol the host looks for.
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> PluginModRef {
    detector_module::<Relative>()
}

/// The strategy: describes itself and creates detectors from options.
pub struct Relative;

impl DetectorStrategy for Relative {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "relative".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "relative representations: correlation of each face's cosines to anchor faces in both spaces".into(),
            formats: vec!["relative".into()],
        }
    }

    fn create(options: &Options) -> Result<Box<dyn PairDetector>, PluginError> {
        let mut anchors = 256;
        for (k, v) in options {
            match k.as_str() {
                "anchors" => {
                    anchors = v
                        .as_u64()
                        .filter(|n| *n >= 3)
                        .ok_or_else(|| invalid("option anchors: must be an integer ≥ 3"))?
                        as usize;
                }
                _ => return Err(invalid(format!("option {k}: unknown option for relative"))),
            }
        }
        Ok(Box::new(RelativeDetector {
            anchors,
            state: Mutex::new(None),
        }))
    }
}

/// The fitted state: the anchors, L2-normalised, row-major.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Anchors {
    probe_dim: usize,
    reference_dim: usize,
    probe: Vec<f32>,
    reference: Vec<f32>,
}

impl Anchors {
    fn check(&self) -> Result<(), PluginError> {
        let n = self.probe.len() / self.probe_dim.max(1);
        if self.probe_dim == 0
            || self.reference_dim == 0
            || n < 3
            || self.probe.len() != n * self.probe_dim
            || self.reference.len() != n * self.reference_dim
        {
            return Err(invalid("state: anchors do not match their dimensions"));
        }
        if self
            .probe
            .iter()
            .chain(&self.reference)
            .any(|x| !x.is_finite())
        {
            return Err(PluginError::new(
                error_code::NUMERIC,
                "state: non-finite anchors",
            ));
        }
        Ok(())
    }
}

struct RelativeDetector {
    anchors: usize,
    state: Mutex<Option<Anchors>>,
}

/// `v` scaled to unit length; `None` when zero or not finite.
fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (n.is_finite() && n > 0.0).then(|| v.iter().map(|x| x / n).collect())
}

/// Cosines of unit `x` to every anchor (rows of `anchors`, `dim` wide).
fn profile(x: &[f32], anchors: &[f32], dim: usize) -> Vec<f32> {
    anchors
        .chunks_exact(dim)
        .map(|a| a.iter().zip(x).map(|(p, q)| p * q).sum())
        .collect()
}

/// Pearson correlation; 0 when either profile is constant.
fn pearson(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len() as f32;
    let (ma, mb) = (a.iter().sum::<f32>() / n, b.iter().sum::<f32>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        let (dx, dy) = (x - ma, y - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    let d = (saa * sbb).sqrt();
    if d > 0.0 { sab / d } else { 0.0 }
}

impl PairDetector for RelativeDetector {
    fn fit(
        &mut self,
        probe: Matrix<'_>,
        reference: Matrix<'_>,
    ) -> Result<serde_json::Value, PluginError> {
        let k = self.anchors.min(probe.rows);
        if k < 3 {
            return Err(invalid(format!(
                "{} fit faces; relative needs ≥ 3",
                probe.rows
            )));
        }
        let mut a = Anchors {
            probe_dim: probe.dim,
            reference_dim: reference.dim,
            probe: Vec::with_capacity(k * probe.dim),
            reference: Vec::with_capacity(k * reference.dim),
        };
        // Evenly spaced through the fit set: deterministic, no RNG.
        for j in 0..k {
            let i = j * probe.rows / k;
            let (p, r) = (unit(probe.row(i)), unit(reference.row(i)));
            let (Some(p), Some(r)) = (p, r) else {
                return Err(PluginError::new(
                    error_code::NUMERIC,
                    format!("fit row {i}: zero-norm or non-finite embedding"),
                ));
            };
            a.probe.extend(p);
            a.reference.extend(r);
        }
        let report = serde_json::json!({ "fit": { "method": "relative", "anchors": k } });
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
        Ok(report)
    }

    fn score(&self, probe: Matrix<'_>, reference: Matrix<'_>) -> Result<Vec<f32>, PluginError> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let a = guard
            .as_ref()
            .ok_or_else(|| invalid("score called before fit"))?;
        if probe.dim != a.probe_dim || reference.dim != a.reference_dim {
            return Err(invalid(format!(
                "fitted on {}-d → {}-d, given {}-d → {}-d",
                a.probe_dim, a.reference_dim, probe.dim, reference.dim
            )));
        }
        (0..probe.rows)
            .map(|i| match (unit(probe.row(i)), unit(reference.row(i))) {
                (Some(p), Some(r)) => Ok(pearson(
                    &profile(&p, &a.probe, a.probe_dim),
                    &profile(&r, &a.reference, a.reference_dim),
                )),
                _ => Err(PluginError::new(
                    error_code::NUMERIC,
                    format!("row {i}: zero-norm or non-finite embedding"),
                )),
            })
            .collect()
    }

    fn export(&self) -> Result<Vec<u8>, PluginError> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let a = guard
            .as_ref()
            .ok_or_else(|| invalid("export called before fit"))?;
        serde_json::to_vec(a).map_err(|e| PluginError::new(error_code::INTERNAL, e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let a: Anchors = serde_json::from_slice(state)
            .map_err(|e| invalid(format!("state is not relative's anchors: {e}")))?;
        a.check()?;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
        Ok(())
    }
}

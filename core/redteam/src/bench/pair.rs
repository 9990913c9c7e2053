//! One pair direction of the bench, through a detector plugin: fitted on
//! the fit faces, its scores, and the clean calibration and held-out
//! scores. Every detector of `--detector` sees the same zoo, split and
//! thresholds rule.

use std::cell::Cell;
use std::time::Instant;

use zooaudit_audit::stats::threshold_at;
use zooaudit_host::{LoadedDetector, Plugin, PluginSet};

use super::OPS;
use super::data::{Faces, ModelEmb};
use crate::RedteamError;

/// A detector the bench compares: `NAME[:k=v,…]` as given, its plugin and
/// options, and the time it spent.
pub(crate) struct Detector {
    pub(super) label: String,
    plugin: Plugin,
    options: serde_json::Map<String, serde_json::Value>,
    pub(super) fits: Cell<usize>,
    pub(super) fit_seconds: Cell<f64>,
    pub(super) scored: Cell<usize>,
    pub(super) score_seconds: Cell<f64>,
}

impl Detector {
    /// Parses `NAME[:k=v,…]` (a value is JSON where it parses, a string
    /// otherwise) and finds the plugin.
    pub(crate) fn parse(spec: &str, plugins: &PluginSet) -> Result<Detector, RedteamError> {
        let bad = |m: String| RedteamError::invalid(format!("--detector {spec}: {m}"));
        let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
        let mut options = serde_json::Map::new();
        for kv in rest.split(',').filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| bad(format!("'{kv}' is not k=v")))?;
            let value = serde_json::from_str(v).unwrap_or_else(|_| v.into());
            options.insert(k.trim().to_string(), value);
        }
        let plugin = plugins
            .detector(name)
            .map_err(|e| bad(e.to_string()))?
            .clone();
        // Options are the plugin's to check: make one now, not mid-bench.
        plugin
            .new_detector(&serde_json::Value::Object(options.clone()))
            .map_err(|e| bad(e.to_string()))?;
        Ok(Detector {
            label: spec.to_string(),
            plugin,
            options,
            fits: Cell::new(0),
            fit_seconds: Cell::new(0.0),
            scored: Cell::new(0),
            score_seconds: Cell::new(0.0),
        })
    }

    /// The plugin's name, version and sha256.
    pub(super) fn describe(&self) -> String {
        let i = self.plugin.info();
        format!(
            "{} {} (ABI {}, sha256 {})",
            i.name, i.version, i.abi_version, i.sha256
        )
    }

    /// Options for one fit: the pairing detector's seed follows the
    /// bench's seed unless given (as the audit does).
    fn options(&self, seed: u64) -> serde_json::Value {
        let mut o = self.options.clone();
        if self.plugin.info().name == "pairing" && !o.contains_key("seed") {
            o.insert("seed".into(), seed.into());
        }
        serde_json::Value::Object(o)
    }
}

/// Scores of one pair direction.
pub(super) struct PairScores {
    pub(super) thresholds: Vec<f32>,
    pub(super) genuine: Vec<f32>,
    pub(super) zei: Vec<f32>,
}

pub(super) struct Pair<'a> {
    pub(super) probe: &'a ModelEmb,
    pub(super) reference: &'a ModelEmb,
    detector: LoadedDetector,
    timing: &'a Detector,
}

impl Pair<'_> {
    pub(super) fn fit<'a>(
        probe: &'a ModelEmb,
        reference: &'a ModelEmb,
        fit_idx: &[usize],
        seed: u64,
        with: &'a Detector,
    ) -> Result<Pair<'a>, RedteamError> {
        let p = probe.gather(&probe.clean, fit_idx);
        let r = reference.gather(&reference.clean, fit_idx);
        let mut detector = with.plugin.new_detector(&with.options(seed))?;
        let t = Instant::now();
        detector.fit(&p, probe.dim, &r, reference.dim)?;
        with.fit_seconds
            .set(with.fit_seconds.get() + t.elapsed().as_secs_f64());
        with.fits.set(with.fits.get() + 1);
        Ok(Pair {
            probe,
            reference,
            detector,
            timing: with,
        })
    }

    /// Scores of row-aligned probe and reference rows.
    fn score_rows(&self, p: &[f32], r: &[f32]) -> Result<Vec<f32>, RedteamError> {
        let t = Instant::now();
        let s = self
            .detector
            .score(p, self.probe.dim, r, self.reference.dim)?;
        let w = self.timing;
        w.score_seconds
            .set(w.score_seconds.get() + t.elapsed().as_secs_f64());
        w.scored.set(w.scored.get() + s.len());
        Ok(s)
    }

    pub(super) fn score(
        &self,
        probe_data: &[f32],
        ref_data: &[f32],
        idx: &[usize],
    ) -> Result<Vec<f32>, RedteamError> {
        let p = self.probe.gather(probe_data, idx);
        let r = self.reference.gather(ref_data, idx);
        self.score_rows(&p, &r)
    }

    pub(super) fn clean(
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
        let (mut zp, mut zr) = (Vec::new(), Vec::new());
        for k in 0..n {
            let i = held[k];
            if let Some(j) = (1..n)
                .map(|s| held[(k + s) % n])
                .find(|&j| !(faces.identity[i].is_some() && faces.identity[i] == faces.identity[j]))
            {
                zp.extend_from_slice(self.probe.row(&self.probe.clean, i));
                zr.extend_from_slice(self.reference.row(&self.reference.clean, j));
            }
        }
        let zei = self.score_rows(&zp, &zr)?;
        Ok(PairScores {
            thresholds,
            genuine,
            zei,
        })
    }
}

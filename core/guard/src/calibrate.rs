//! How far a bundle's operating point holds, population by population, and
//! how to make it hold on the faces a deployment actually serves.
//!
//! - Per source ([`zooaudit_audit::source_of`]: each folder of the unlabelled
//!   pool, the labelled set): the clean FNMR on the source's held-out faces
//!   at every threshold, with its Clopper–Pearson interval
//!   ([`source_records`]); a source whose interval lies above the pooled
//!   held-out interval is named in a warning ([`source_warnings`]).
//! - `--calibrate worst-source`: at each operating point the lowest of the
//!   sources' own calibration thresholds ([`thresholds`]), so no source
//!   with calibration faces exceeds the target on them.
//! - [`recalibrate`]: new thresholds from clean faces of the deployment's
//!   own population, split in two by a seeded shuffle (one half places the
//!   thresholds, the other measures them); the translator is unchanged, the
//!   replaced thresholds go to the bundle's history, and an operating point
//!   the faces cannot support (rule of three: fewer than 3 / target
//!   calibration faces) is refused.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use zooaudit_audit::stats::{Rate, Threshold, threshold_at};

use crate::GuardError;
use crate::bundle::{
    Calibration, OperatingPoint, PairBundle, Recalibrated, SourceRate, SourceRecord,
};

/// One population's genuine (clean) agreement scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceScores {
    pub name: String,
    pub calibration: Vec<f32>,
    pub heldout: Vec<f32>,
}

/// Groups calibration and held-out scores by their faces' sources (sorted
/// by name).
pub fn group(calibration: &[(String, f32)], heldout: &[(String, f32)]) -> Vec<SourceScores> {
    let mut by = std::collections::BTreeMap::<String, SourceScores>::new();
    let entry = |by: &mut std::collections::BTreeMap<String, SourceScores>, name: &str| {
        by.entry(name.to_string())
            .or_insert_with(|| SourceScores {
                name: name.to_string(),
                calibration: Vec::new(),
                heldout: Vec::new(),
            })
            .name
            .clone()
    };
    for (name, s) in calibration {
        let k = entry(&mut by, name);
        if let Some(e) = by.get_mut(&k) {
            e.calibration.push(*s);
        }
    }
    for (name, s) in heldout {
        let k = entry(&mut by, name);
        if let Some(e) = by.get_mut(&k) {
            e.heldout.push(*s);
        }
    }
    by.into_values().collect()
}

/// Whether a source has calibration faces enough to place its own
/// threshold at `target` (at least 1 / target: fewer make the order
/// statistic its smallest score whatever the target).
pub fn can_calibrate(calibration_samples: usize, target: f64) -> bool {
    calibration_samples as f64 >= (1.0 / target).ceil()
}

/// The worst-source threshold at each of `targets`: the lowest of the
/// thresholds each source gets on its own calibration faces, over the
/// sources that [`can_calibrate`] (the pooled one when none can). The
/// returned [`Threshold`]s describe the pooled calibration faces at that
/// threshold; `supported` asks the rule of three of the source that set it.
pub fn worst_source_thresholds(
    sources: &[SourceScores],
    targets: &[f64],
) -> Option<Vec<Threshold>> {
    let pooled: Vec<f32> = sources.iter().flat_map(|s| s.calibration.clone()).collect();
    targets
        .iter()
        .map(|&t| {
            let lowest = sources
                .iter()
                .filter(|s| can_calibrate(s.calibration.len(), t))
                .filter_map(|s| threshold_at(&s.calibration, t))
                .min_by(|a, b| a.threshold.total_cmp(&b.threshold))
                .or_else(|| threshold_at(&pooled, t))?;
            let below = pooled.iter().filter(|v| **v < lowest.threshold).count();
            Some(Threshold {
                target_fnmr: t,
                threshold: lowest.threshold,
                calibration_fnmr: below as f64 / pooled.len().max(1) as f64,
                calibration_samples: pooled.len(),
                supported: lowest.supported,
            })
        })
        .collect()
}

/// Every source's held-out clean FNMR at the bundle's thresholds.
pub fn source_records(
    sources: &[SourceScores],
    thresholds: &[OperatingPoint],
) -> Vec<SourceRecord> {
    sources
        .iter()
        .map(|s| SourceRecord {
            name: s.name.clone(),
            calibration_samples: s.calibration.len(),
            heldout_samples: s.heldout.len(),
            fnmr: thresholds
                .iter()
                .map(|o| {
                    let r = Rate::flagged(&s.heldout, o.threshold);
                    SourceRate {
                        target_fnmr: o.target_fnmr,
                        count: r.count,
                        samples: r.samples,
                        rate: r.rate,
                        ci95: r.ci95,
                        calibration_rate: Rate::flagged(&s.calibration, o.threshold).rate,
                    }
                })
                .collect(),
        })
        .collect()
}

/// One line per source and operating point whose held-out FNMR interval
/// lies wholly above the pooled held-out interval: that population will see
/// more false alarms than the operating point promises.
pub fn source_warnings(b: &PairBundle) -> Vec<String> {
    let mut out = Vec::new();
    for s in &b.sources {
        for r in &s.fnmr {
            let Some(op) = b.operating_point(r.target_fnmr) else {
                continue;
            };
            if r.samples > 0 && r.ci95[0] > op.heldout_ci95[1] {
                out.push(format!(
                    "source '{}': held-out clean FNMR {:.3} [{:.3}, {:.3}] ({}/{} faces) at operating point {} is above the pooled {:.3} [{:.3}, {:.3}]: this population will see more false alarms than the operating point promises (calibrate with --calibrate worst-source, or `zooaudit pair recalibrate` on clean faces of it)",
                    s.name,
                    r.rate,
                    r.ci95[0],
                    r.ci95[1],
                    r.count,
                    r.samples,
                    r.target_fnmr,
                    op.heldout_fnmr,
                    op.heldout_ci95[0],
                    op.heldout_ci95[1]
                ));
            }
        }
    }
    out
}

/// Operating points from thresholds and their held-out rates.
pub fn operating_points(thresholds: &[Threshold], rates: &[Rate]) -> Vec<OperatingPoint> {
    thresholds
        .iter()
        .zip(rates)
        .map(|(t, r)| OperatingPoint {
            target_fnmr: t.target_fnmr,
            threshold: t.threshold,
            calibration_samples: t.calibration_samples,
            heldout_fnmr: r.rate,
            heldout_ci95: r.ci95,
            heldout_samples: r.samples,
        })
        .collect()
}

/// The share of `heldout` scores below each threshold.
pub fn rates_at(thresholds: &[Threshold], heldout: &[f32]) -> Vec<Rate> {
    thresholds
        .iter()
        .map(|t| Rate::flagged(heldout, t.threshold))
        .collect()
}

/// What [`recalibrate`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Recalibration {
    pub calibration_samples: usize,
    pub heldout_samples: usize,
}

/// Replaces `b`'s thresholds at `targets` with ones placed on `scores` (the
/// pair's agreement scores of clean faces of the deployment's population,
/// in file order; `names` are recorded in the history). Half of the faces
/// (seeded shuffle) calibrate, the other half measure the held-out FNMR.
/// Refused, naming the operating point, when the calibration half cannot
/// support it (fewer than 3 / target faces) or a score is not finite.
pub fn recalibrate(
    b: &mut PairBundle,
    scores: &[f32],
    names: Vec<String>,
    targets: &[f64],
    seed: u64,
    time: String,
) -> Result<Recalibration, GuardError> {
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(GuardError::Option(format!(
            "face {i}: the pair's score is not finite"
        )));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let half = scores.len() / 2;
    let cal: Vec<f32> = order[..half].iter().map(|&i| scores[i]).collect();
    let held: Vec<f32> = order[half..].iter().map(|&i| scores[i]).collect();
    let mut thresholds = Vec::new();
    for &t in targets {
        let need = (3.0 / t).ceil() as usize;
        match threshold_at(&cal, t) {
            Some(th) if th.supported => thresholds.push(th),
            _ => {
                return Err(GuardError::Option(format!(
                    "operating point {t}: {} calibration faces (half of {}) cannot support a target FNMR of {t}; the rule of three needs ≥ {need}, so ≥ {} clean faces in all",
                    cal.len(),
                    scores.len(),
                    2 * need
                )));
            }
        }
    }
    b.history.push(Recalibrated {
        time,
        faces: names,
        calibration_samples: cal.len(),
        heldout_samples: held.len(),
        previous: b.thresholds.clone(),
        previous_calibration: b.calibration,
    });
    b.thresholds = operating_points(&thresholds, &rates_at(&thresholds, &held));
    b.calibration = Calibration::Deployment;
    // The per-source figures described the old thresholds.
    b.sources.clear();
    Ok(Recalibration {
        calibration_samples: cal.len(),
        heldout_samples: held.len(),
    })
}

/// The pair's agreement score of every face file (aligned faces of the
/// models' size), in order; a file that does not decode is an error naming
/// it.
pub fn clean_scores(
    pair: &crate::pair::Pair,
    files: &[std::path::PathBuf],
) -> Result<Vec<f32>, GuardError> {
    let mut scores = Vec::with_capacity(files.len());
    for chunk in files.chunks(16) {
        let mut images = Vec::with_capacity(chunk.len());
        let mut shas = Vec::with_capacity(chunk.len());
        for f in chunk {
            let bytes = std::fs::read(f).map_err(|e| GuardError::file(f, e.to_string()))?;
            let name = f.display().to_string();
            images.push(
                pair.decode(&bytes, &name)
                    .map_err(|e| GuardError::file(f, e.to_string()))?,
            );
            shas.push(crate::pair::sha256_hex(&bytes));
        }
        let decided = pair
            .decide(&images, &shas, 0.0)
            .map_err(|e| GuardError::Option(e.to_string()))?;
        scores.extend(decided.iter().map(|d| d.score));
    }
    Ok(scores)
}

/// Now, RFC 3339 UTC to the second (history entries).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn src(name: &str, cal: &[f32], held: &[f32]) -> SourceScores {
        SourceScores {
            name: name.into(),
            calibration: cal.to_vec(),
            heldout: held.to_vec(),
        }
    }

    #[test]
    fn scores_are_grouped_by_source_in_name_order() {
        let g = group(
            &[("b".into(), 0.5), ("a".into(), 0.4), ("b".into(), 0.6)],
            &[("c".into(), 0.1), ("a".into(), 0.2)],
        );
        assert_eq!(
            g,
            vec![
                src("a", &[0.4], &[0.2]),
                src("b", &[0.5, 0.6], &[]),
                src("c", &[], &[0.1])
            ]
        );
    }

    #[test]
    fn the_worst_source_sets_the_threshold() {
        let high: Vec<f32> = (0..100).map(|i| 0.6 + i as f32 * 0.001).collect();
        let low: Vec<f32> = (0..100).map(|i| 0.3 + i as f32 * 0.001).collect();
        let s = [src("high", &high, &[]), src("low", &low, &[])];
        let t = worst_source_thresholds(&s, &[0.05]).unwrap();
        // The low source's 5th smallest score.
        assert!((t[0].threshold - 0.305).abs() < 1e-6, "{t:?}");
        assert_eq!(t[0].calibration_samples, 200);
        assert!(t[0].calibration_fnmr <= 0.05);
    }
}

//! Biometric error-rate statistics (ISO/IEC 19795-1 vocabulary).
//!
//! Scores are *agreement* scores: a sample whose score is strictly below the
//! threshold is *flagged* (the pair disagrees). On clean genuine samples a
//! flag is a false non-match; on poisoned samples it is a caught trigger.

use serde::{Deserialize, Serialize};
use statrs::distribution::{Beta, ContinuousCDF};

/// A threshold placed at a target clean FNMR from calibration genuine scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub target_fnmr: f64,
    pub threshold: f32,
    /// Calibration genuine scores below the threshold / their count.
    pub calibration_fnmr: f64,
    pub calibration_samples: usize,
    /// The rule of three: with n samples the smallest rate resolvable at 95 %
    /// is about 3/n; a target below it is reported.
    pub supported: bool,
}

/// The threshold at `target` FNMR: the ⌊target·n⌋-th smallest calibration
/// genuine score (0-based order statistic). Scores strictly below it are
/// flagged, so the calibration FNMR is at most `target`.
pub fn threshold_at(calibration: &[f32], target: f64) -> Option<Threshold> {
    if calibration.is_empty()
        || calibration.iter().any(|s| !s.is_finite())
        || !(0.0..1.0).contains(&target)
    {
        return None;
    }
    let mut s = calibration.to_vec();
    s.sort_by(f32::total_cmp);
    let n = s.len();
    let k = ((target * n as f64).floor() as usize).min(n - 1);
    let t = s[k];
    let below = s.iter().filter(|v| **v < t).count();
    Some(Threshold {
        target_fnmr: target,
        threshold: t,
        calibration_fnmr: below as f64 / n as f64,
        calibration_samples: n,
        supported: n as f64 >= 3.0 / target,
    })
}

/// An observed rate `k/n` with its exact (Clopper–Pearson) interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub count: usize,
    pub samples: usize,
    pub rate: f64,
    /// `[lower, upper]`, two-sided.
    pub ci95: [f64; 2],
}

/// The Clopper–Pearson interval of `k` successes in `n` trials at
/// confidence `1 − alpha`.
pub fn clopper_pearson(k: usize, n: usize, alpha: f64) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let (kf, nf) = (k as f64, n as f64);
    let lower = if k == 0 {
        0.0
    } else {
        Beta::new(kf, nf - kf + 1.0)
            .map(|b| b.inverse_cdf(alpha / 2.0))
            .unwrap_or(0.0)
    };
    let upper = if k == n {
        1.0
    } else {
        Beta::new(kf + 1.0, nf - kf)
            .map(|b| b.inverse_cdf(1.0 - alpha / 2.0))
            .unwrap_or(1.0)
    };
    [lower, upper]
}

impl Rate {
    pub fn new(count: usize, samples: usize) -> Rate {
        Rate {
            count,
            samples,
            rate: if samples == 0 {
                0.0
            } else {
                count as f64 / samples as f64
            },
            ci95: clopper_pearson(count, samples, 0.05),
        }
    }

    /// Share of `scores` strictly below `threshold`.
    pub fn flagged(scores: &[f32], threshold: f32) -> Rate {
        Rate::new(
            scores.iter().filter(|s| **s < threshold).count(),
            scores.len(),
        )
    }
}

/// P(X ≥ k) for X ~ Binomial(n, p): the one-sided p-value of seeing at least
/// `k` flags when the true flag rate is `p`.
pub fn binomial_upper_tail(k: usize, n: usize, p: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n {
        return 0.0;
    }
    if p <= 0.0 {
        return 0.0;
    }
    if p >= 1.0 {
        return 1.0;
    }
    // P(X ≥ k) = I_p(k, n − k + 1), the regularised incomplete beta function.
    Beta::new(k as f64, (n - k) as f64 + 1.0)
        .map(|b| b.cdf(p))
        .unwrap_or(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_published_values() {
        // Reference values (e.g. R binom.test / statsmodels proportion_confint method="beta").
        let close = |a: f64, b: f64| (a - b).abs() < 1e-4;
        let [l, u] = clopper_pearson(0, 10, 0.05);
        assert!(l == 0.0 && close(u, 0.308_497), "{u}");
        let [l, u] = clopper_pearson(5, 10, 0.05);
        assert!(close(l, 0.187_086) && close(u, 0.812_914), "{l} {u}");
        let [l, u] = clopper_pearson(1, 100, 0.05);
        assert!(close(l, 0.000_253_1) && close(u, 0.054_459), "{l} {u}");
        let [l, u] = clopper_pearson(10, 10, 0.05);
        assert!(close(l, 0.691_503) && u == 1.0, "{l}");
    }

    #[test]
    fn threshold_is_the_empirical_order_statistic() {
        let scores: Vec<f32> = (1..=400).rev().map(|i| i as f32 / 400.0).collect();
        let t = threshold_at(&scores, 0.01).expect("threshold");
        // ⌊0.01·400⌋ = 4 → the fifth smallest score; four scores lie below it.
        assert_eq!(t.threshold, 5.0 / 400.0);
        assert_eq!(t.calibration_fnmr, 0.01);
        assert!(t.supported, "400 ≥ 3/0.01");
        let t = threshold_at(&scores, 0.001).expect("threshold");
        assert_eq!(
            (t.threshold, t.calibration_fnmr, t.supported),
            (1.0 / 400.0, 0.0, false)
        );
        assert!(threshold_at(&[0.5, f32::NAN], 0.01).is_none());
    }

    #[test]
    fn binomial_tail() {
        // P(X ≥ 1; n = 10, p = 0.1) = 1 − 0.9^10.
        assert!((binomial_upper_tail(1, 10, 0.1) - (1.0 - 0.9f64.powi(10))).abs() < 1e-10);
        assert!((binomial_upper_tail(10, 10, 0.5) - 0.5f64.powi(10)).abs() < 1e-12);
        assert_eq!(binomial_upper_tail(0, 10, 0.5), 1.0);
    }
}

//! The drift monitor: the rate of disagreements over a sliding window (the
//! last `drift_window` decisions, none older than `drift_max_age`) against
//! the bundle's held-out clean FNMR interval at the operating point.
//!
//! The guard is *degraded* while the window holds at least
//! [`MIN_DECISIONS`] decisions and the lower end of its rate's
//! Clopper–Pearson 95 % interval lies above the upper end of the bundle's
//! interval: more disagreements than clean faces of the calibration
//! population would give, beyond chance. Two causes look alike here —
//! triggered inputs arriving, or a served population unlike the calibration
//! one — and the message says both. The start and the end of each episode
//! are lines in the quarantine log (and on stderr); `/healthz` and
//! `/metrics` show the state.

use std::collections::VecDeque;
use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zooaudit_audit::stats::clopper_pearson;

use super::AppState;
use crate::bundle::OperatingPoint;

/// Fewer decisions than this in the window never make the guard degraded.
pub const MIN_DECISIONS: usize = 20;

/// The window and the expectation.
pub(super) struct Drift {
    window: usize,
    max_age: Duration,
    operating_point: f64,
    expected: f64,
    expected_ci95: [f64; 2],
    recent: VecDeque<(Instant, bool)>,
    /// Since when (RFC 3339) the guard is degraded.
    since: Option<String>,
    pub(super) episodes: u64,
}

/// The window's state.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct DriftState {
    pub decisions: usize,
    pub disagreements: usize,
    pub rate: f64,
    pub ci95: [f64; 2],
    pub degraded: bool,
}

impl Drift {
    pub(super) fn new(window: usize, max_age: Duration, op: &OperatingPoint) -> Drift {
        Drift {
            window: window.max(1),
            max_age,
            operating_point: op.target_fnmr,
            expected: op.heldout_fnmr,
            expected_ci95: op.heldout_ci95,
            recent: VecDeque::new(),
            since: None,
            episodes: 0,
        }
    }

    fn trim(&mut self, now: Instant) {
        while self.recent.len() > self.window {
            self.recent.pop_front();
        }
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.max_age)
        {
            self.recent.pop_front();
        }
    }

    pub(super) fn state(&mut self, now: Instant) -> DriftState {
        self.trim(now);
        let n = self.recent.len();
        let k = self.recent.iter().filter(|(_, d)| *d).count();
        let ci95 = clopper_pearson(k, n, 0.05);
        DriftState {
            decisions: n,
            disagreements: k,
            rate: if n == 0 { 0.0 } else { k as f64 / n as f64 },
            ci95,
            degraded: n >= MIN_DECISIONS && ci95[0] > self.expected_ci95[1],
        }
    }

    /// Records one decision; the episode line when the state changes.
    pub(super) fn record(&mut self, disagree: bool, now: Instant) -> Option<Value> {
        self.recent.push_back((now, disagree));
        let s = self.state(now);
        let event = match (s.degraded, self.since.is_some()) {
            (true, false) => {
                self.since = Some(crate::calibrate::now_rfc3339());
                self.episodes += 1;
                "drift-start"
            }
            (false, true) => {
                self.since = None;
                "drift-end"
            }
            _ => return None,
        };
        let mut line = self.json(&s);
        line["event"] = json!(event);
        Some(line)
    }

    /// What `/healthz` says of the window (and the episode line's body).
    pub(super) fn json(&self, s: &DriftState) -> Value {
        json!({
            "degraded": s.degraded,
            "since": self.since,
            "window": {"decisions": s.decisions, "max": self.window, "max_age_seconds": self.max_age.as_secs_f64()},
            "disagreements": s.disagreements,
            "rate": s.rate,
            "ci95": s.ci95,
            "operating_point": self.operating_point,
            "expected_fnmr": self.expected,
            "expected_ci95": self.expected_ci95,
            "message": self.message(s),
        })
    }

    fn message(&self, s: &DriftState) -> String {
        let seen = format!(
            "disagreement rate {:.3} [{:.3}, {:.3}] over the last {} decisions",
            s.rate, s.ci95[0], s.ci95[1], s.decisions
        );
        let expected = format!(
            "the bundle's held-out clean FNMR {:.3} [{:.3}, {:.3}] at operating point {}",
            self.expected, self.expected_ci95[0], self.expected_ci95[1], self.operating_point
        );
        if s.degraded {
            format!(
                "{seen} is above {expected}: either triggered inputs are arriving (look at the quarantined images) or the served faces differ from the calibration population (see the bundle's per-source FNMR; recalibrate with `zooaudit pair recalibrate` on clean faces of this population)"
            )
        } else if s.decisions < MIN_DECISIONS {
            format!("{seen}: fewer than {MIN_DECISIONS} decisions, no judgement yet")
        } else {
            format!("{seen} is consistent with {expected}")
        }
    }
}

impl AppState {
    /// Counts one decision, quarantines a disagreement, and feeds the drift
    /// monitor (whose episode lines go to the quarantine log and stderr).
    pub(super) fn record(&self, d: &crate::pair::Decision, bytes: &[u8]) {
        use std::sync::atomic::Ordering;
        self.metrics.images.fetch_add(1, Ordering::Relaxed);
        if d.agree {
            self.metrics.agreements.fetch_add(1, Ordering::Relaxed);
        } else {
            self.metrics.disagreements.fetch_add(1, Ordering::Relaxed);
            self.quarantine(d, bytes);
        }
        let event = self
            .drift
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .record(!d.agree, Instant::now());
        if let Some(mut line) = event {
            line["time"] = json!(super::quarantine::humantime_now());
            eprintln!(
                "guard: {}: {}",
                line["event"].as_str().unwrap_or(""),
                line["message"].as_str().unwrap_or("")
            );
            let mut f = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "{line}");
                let _ = f.flush();
            }
        }
    }

    /// The drift monitor's state now.
    pub(super) fn drift_state(&self) -> (DriftState, Value) {
        let mut d = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        let s = d.state(Instant::now());
        let v = d.json(&s);
        (s, v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn op() -> OperatingPoint {
        OperatingPoint {
            target_fnmr: 0.01,
            threshold: 0.5,
            calibration_samples: 300,
            heldout_fnmr: 0.01,
            heldout_ci95: clopper_pearson(3, 300, 0.05),
            heldout_samples: 300,
        }
    }

    #[test]
    fn a_rate_beyond_the_expected_interval_starts_and_ends_an_episode() {
        let mut d = Drift::new(100, Duration::from_secs(600), &op());
        let t = Instant::now();
        // 1 in 100 disagrees: consistent.
        for i in 0..100 {
            assert_eq!(d.record(i == 50, t), None);
        }
        assert!(!d.state(t).degraded);
        // A burst: 15 disagreements among the last 100.
        let mut started = None;
        for i in 0..15 {
            if let Some(e) = d.record(true, t) {
                started = Some((i, e));
            }
        }
        let (_, e) = started.expect("the burst starts an episode");
        assert_eq!(e["event"], "drift-start");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("either triggered inputs")
        );
        assert_eq!(d.episodes, 1);
        // Clean again: the burst leaves the window, the episode ends.
        let ended = (0..100)
            .filter_map(|_| d.record(false, t))
            .collect::<Vec<_>>();
        assert_eq!(ended.len(), 1);
        assert_eq!(ended[0]["event"], "drift-end");
    }

    #[test]
    fn old_decisions_leave_the_time_window() {
        let mut d = Drift::new(1000, Duration::from_millis(50), &op());
        let t = Instant::now();
        for _ in 0..30 {
            d.record(true, t);
        }
        assert!(d.state(t).degraded);
        let later = t + Duration::from_millis(60);
        assert_eq!(d.state(later).decisions, 0);
        assert!(!d.state(later).degraded);
    }
}

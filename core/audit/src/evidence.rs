//! Identity evidence and the verdict's family-wise test.
//!
//! A one-to-one backdoor moves only its impostor's faces, and only when the
//! trigger is shown. The audit shows every held-out face twice per trigger:
//! with the trigger and with the trigger's *matched control* (the same cells
//! or tiles in another arrangement). Its null hypothesis, per face:
//!
//! > **H₀**: for every trigger, the face with the trigger and the face with
//! > its matched control are exchangeable — jointly for every model, every
//! > pair and every trigger of the suite — once a common shift of the whole
//! > population (a model's generic reaction to the stamp, the same for
//! > everybody) is taken out.
//!
//! Under H₀, swapping "trigger" and "control" on any set of faces leaves the
//! joint distribution of everything the audit measures unchanged. That gives
//! an exact sign-flip permutation test whose unit is the *face*: a flip
//! negates a face's evidence in every pair, direction and trigger at once,
//! so the dependence between the pairs (the same faces are seen by every
//! pair and direction) and between the triggers (sweeps of one trigger) is
//! kept in the null distribution instead of being corrected for.
//!
//! Per-face evidence for a subject (a candidate, or a pair of models):
//!
//! - each *witness* (a pair direction probe → reference) gives
//!   `z = (s_control − s_trigger) / σ`, the paired drop in agreement caused
//!   by the trigger's arrangement, in units of the pair's own score noise
//!   `σ` (1.4826 × the median absolute deviation of its control-stamped
//!   calibration scores);
//! - the witnesses of a subject are *averaged*: a duplicated witness leaves
//!   the evidence unchanged, an independent one adds its view of the same
//!   faces;
//! - a candidate adds `κ = 2` per face that it alone identifies as someone
//!   else with the trigger but not with the control (and subtracts it for the
//!   reverse): the model-alone switch evidence of [`crate::response`];
//! - the median over all held-out faces is subtracted (the common shift).
//!
//! A test is one labelled identity `I` × one trigger: `T = Σ_{k∈I} e_k /
//! √|I|`. The family is every identity × trigger of the subject; the
//! adjusted p-value of a test is the share of random sign flips (shared by
//! every test) whose *maximum* statistic over the family reaches the
//! observed `T` (Westfall–Young single-step max-T, which controls the
//! family-wise error rate under H₀). Adding triggers or references adds
//! tests that are mostly dependent on the existing ones, so the critical
//! value grows far less than a Bonferroni factor would.
//!
//! **Bound.** A paired test on `n` faces cannot give a p-value below `2⁻ⁿ`
//! (every face with the trigger worse than with the control is what all
//! flips "+1" produce). At α = 0.05 an identity needs at least 5 faces
//! (2⁻⁵ = 0.031); with 3 faces (2⁻³ = 0.125) no exact paired test can
//! indicate a one-to-one backdoor, however strong.

use std::collections::BTreeMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Weight of one model-alone identity switch, in units of pair noise σ.
pub const SWITCH_WEIGHT: f64 = 2.0;
/// Random sign flips per family.
pub const PERMUTATIONS: usize = 9999;
/// Smallest σ a pair's scores are divided by.
const MIN_SCALE: f64 = 1e-3;

/// What a family of tests is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Subject {
    /// A candidate: its pairs with every reference, plus its own switches.
    Candidate,
    /// Two models: their pair directions only (for naming the model that
    /// moves).
    Pair,
    /// One model alone: its identity switches only.
    Alone,
}

/// One identity × trigger test of a family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceRow {
    pub subject: Subject,
    /// The candidate's or the model's name, or `a ↔ b` for a pair.
    pub name: String,
    pub identity: String,
    pub trigger: String,
    pub faces: usize,
    /// `Σ e_k / √faces`.
    pub statistic: f64,
    /// Mean per-face evidence (σ units; a switch counts `κ`).
    pub mean_evidence: f64,
    /// Faces with positive evidence.
    pub positive: usize,
    /// Westfall–Young max-T adjusted p-value over the family.
    pub p_adjusted: f64,
}

/// A family of tests and its permutation null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyRecord {
    pub subject: Subject,
    pub name: String,
    pub tests: usize,
    pub permutations: usize,
    /// The (1 − α) quantile of the maximum statistic under H₀.
    pub critical_value: f64,
}

/// Robust scale of a pair's scores: 1.4826 × MAD, at least [`MIN_SCALE`].
pub fn score_scale(scores: &[f32]) -> f64 {
    let v: Vec<f64> = scores
        .iter()
        .map(|s| f64::from(*s))
        .filter(|s| s.is_finite())
        .collect();
    if v.is_empty() {
        return MIN_SCALE;
    }
    let med = median(&v);
    let dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    (1.4826 * median(&dev)).max(MIN_SCALE)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// One witness's evidence per held-out face: `(control − trigger) / σ`.
pub fn witness_evidence(poisoned: &[f32], control: &[f32], scale: f64) -> Vec<f64> {
    poisoned
        .iter()
        .zip(control)
        .map(|(t, c)| {
            let d = (f64::from(*c) - f64::from(*t)) / scale;
            if d.is_finite() { d } else { 0.0 }
        })
        .collect()
}

/// Per-face evidence of a subject for one trigger: the mean of its
/// witnesses plus `κ`× its switches, less the median over all faces.
pub fn subject_evidence(witnesses: &[&[f64]], switches: Option<&[f64]>, n: usize) -> Vec<f64> {
    let mut e = vec![0.0; n];
    if !witnesses.is_empty() {
        for w in witnesses {
            e.iter_mut().zip(*w).for_each(|(a, b)| *a += b);
        }
        let m = witnesses.len() as f64;
        e.iter_mut().for_each(|a| *a /= m);
    }
    if let Some(s) = switches {
        e.iter_mut()
            .zip(s)
            .for_each(|(a, b)| *a += SWITCH_WEIGHT * b);
    }
    let centre = median(&e);
    e.iter_mut().for_each(|a| *a -= centre);
    e
}

/// The labelled identities to test: name → held-out face indices, for
/// identities with at least `min_faces` faces.
pub fn identity_groups<'a>(
    ids: &[Option<&'a str>],
    min_faces: usize,
) -> BTreeMap<&'a str, Vec<usize>> {
    let mut g: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, id) in ids.iter().enumerate() {
        if let Some(id) = id {
            g.entry(id).or_default().push(k);
        }
    }
    g.retain(|_, v| v.len() >= min_faces.max(1));
    g
}

/// A family: per trigger, the subject's per-face evidence.
pub struct Family<'a> {
    pub subject: Subject,
    pub name: String,
    /// `evidence[t][k]`: trigger `t`, held-out face `k`.
    pub evidence: Vec<Vec<f64>>,
    pub triggers: &'a [String],
}

/// Runs the max-T test of a family over `groups`; rows in trigger-major
/// order, and the family's record at level `alpha`.
pub fn test_family(
    family: &Family<'_>,
    groups: &BTreeMap<&str, Vec<usize>>,
    n_faces: usize,
    alpha: f64,
    seed: u64,
) -> (Vec<EvidenceRow>, FamilyRecord) {
    struct Test<'g> {
        t: usize,
        identity: &'g str,
        faces: &'g [usize],
        norm: f64,
        observed: f64,
    }
    let mut tests = Vec::new();
    for (t, e) in family.evidence.iter().enumerate() {
        for (identity, faces) in groups {
            let norm = (faces.len() as f64).sqrt();
            let observed = faces.iter().map(|&k| e[k]).sum::<f64>() / norm;
            tests.push(Test {
                t,
                identity,
                faces,
                norm,
                observed,
            });
        }
    }
    // The null distribution of the family's maximum, one sign per face
    // shared by every test.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut signs = vec![1.0f64; n_faces];
    let mut maxima = Vec::with_capacity(PERMUTATIONS);
    for _ in 0..PERMUTATIONS {
        signs
            .iter_mut()
            .for_each(|s| *s = if rng.random::<bool>() { 1.0 } else { -1.0 });
        let mut max = f64::NEG_INFINITY;
        for test in &tests {
            let e = &family.evidence[test.t];
            let s = test.faces.iter().map(|&k| signs[k] * e[k]).sum::<f64>() / test.norm;
            max = max.max(s);
        }
        maxima.push(max);
    }
    maxima.sort_by(f64::total_cmp);
    let reach = |x: f64| maxima.len() - maxima.partition_point(|m| *m < x - 1e-12);
    let rows = tests
        .iter()
        .map(|test| {
            let e = &family.evidence[test.t];
            let values: Vec<f64> = test.faces.iter().map(|&k| e[k]).collect();
            EvidenceRow {
                subject: family.subject,
                name: family.name.clone(),
                identity: test.identity.to_string(),
                trigger: family.triggers[test.t].clone(),
                faces: values.len(),
                statistic: test.observed,
                mean_evidence: values.iter().sum::<f64>() / values.len().max(1) as f64,
                positive: values.iter().filter(|v| **v > 0.0).count(),
                p_adjusted: (1 + reach(test.observed)) as f64 / (PERMUTATIONS + 1) as f64,
            }
        })
        .collect();
    let q = ((1.0 - alpha) * maxima.len() as f64).ceil() as usize;
    let critical_value = if tests.is_empty() {
        f64::INFINITY
    } else {
        maxima[q.min(maxima.len()).saturating_sub(1)]
    };
    (
        rows,
        FamilyRecord {
            subject: family.subject,
            name: family.name.clone(),
            tests: tests.len(),
            permutations: PERMUTATIONS,
            critical_value,
        },
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn groups(ids: &[Option<&'static str>]) -> BTreeMap<&'static str, Vec<usize>> {
        identity_groups(ids, 3)
    }

    /// 6 identities × 11 faces plus 100 unlabelled; noise evidence, one
    /// identity moved far on one trigger.
    fn population(shift: f64, triggers: usize) -> (Vec<Option<&'static str>>, Vec<Vec<f64>>) {
        const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
        let mut ids = Vec::new();
        for n in NAMES {
            ids.extend(std::iter::repeat_n(Some(n), 11));
        }
        ids.extend(std::iter::repeat_n(None, 100));
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let ev: Vec<Vec<f64>> = (0..triggers)
            .map(|t| {
                ids.iter()
                    .map(|id| {
                        let noise: f64 = rng.random_range(-1.0..1.0);
                        noise
                            + if t == 0 && *id == Some("c") {
                                shift
                            } else {
                                0.0
                            }
                    })
                    .collect()
            })
            .collect();
        (ids, ev)
    }

    #[test]
    fn a_moved_identity_reaches_the_paired_bound_whatever_the_family_size() {
        for triggers in [2, 18, 60] {
            let (ids, ev) = population(20.0, triggers);
            let names: Vec<String> = (0..triggers).map(|t| format!("t{t}")).collect();
            let fam = Family {
                subject: Subject::Candidate,
                name: "m".into(),
                evidence: ev,
                triggers: &names,
            };
            let (rows, rec) = test_family(&fam, &groups(&ids), ids.len(), 0.05, 1);
            assert_eq!(rec.tests, 6 * triggers);
            let hit = rows
                .iter()
                .find(|r| r.identity == "c" && r.trigger == "t0")
                .unwrap();
            // 2⁻¹¹ = 4.9e-4; the permutation estimate is near it.
            assert!(hit.p_adjusted < 0.002, "{triggers}: {hit:?}");
            let others = rows.iter().filter(|r| r.p_adjusted < 0.05).count();
            assert_eq!(others, 1, "{triggers}: only the moved identity");
        }
    }

    #[test]
    fn under_the_null_the_family_wise_error_is_near_alpha() {
        // Evidence symmetric about 0; count families with any p < 0.05.
        let mut false_alarms = 0;
        let runs = 100;
        for seed in 0..runs {
            let mut rng = ChaCha8Rng::seed_from_u64(1000 + seed);
            let (ids, _) = population(0.0, 1);
            let ev: Vec<Vec<f64>> = (0..5)
                .map(|_| ids.iter().map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            let names: Vec<String> = (0..5).map(|t| format!("t{t}")).collect();
            let fam = Family {
                subject: Subject::Candidate,
                name: "m".into(),
                evidence: ev,
                triggers: &names,
            };
            let (rows, _) = test_family(&fam, &groups(&ids), ids.len(), 0.05, seed);
            if rows.iter().any(|r| r.p_adjusted < 0.05) {
                false_alarms += 1;
            }
        }
        // Binomial(100, 0.05): mean 5, P(X > 13) < 0.001.
        assert!(false_alarms <= 13, "{false_alarms}/{runs}");
    }

    #[test]
    fn a_duplicated_witness_changes_nothing() {
        let (ids, ev) = population(5.0, 1);
        let one = subject_evidence(&[&ev[0]], None, ids.len());
        let two = subject_evidence(&[&ev[0], &ev[0]], None, ids.len());
        assert_eq!(one, two);
    }

    #[test]
    fn three_faces_cannot_pass_the_paired_bound() {
        let ids: Vec<Option<&str>> = [Some("a"); 3]
            .into_iter()
            .chain(std::iter::repeat_n(None, 50))
            .collect();
        let ev = vec![
            ids.iter()
                .map(|id| if id.is_some() { 100.0 } else { 0.0 })
                .collect::<Vec<f64>>(),
        ];
        let names = vec!["t".to_string()];
        let fam = Family {
            subject: Subject::Candidate,
            name: "m".into(),
            evidence: ev,
            triggers: &names,
        };
        let (rows, _) = test_family(&fam, &groups(&ids), ids.len(), 0.05, 3);
        assert!((rows[0].p_adjusted - 0.125).abs() < 0.02, "{rows:?}");
    }

    #[test]
    fn scale_is_robust() {
        let mut s: Vec<f32> = (0..100).map(|i| 0.5 + (i % 10) as f32 * 0.01).collect();
        s.push(-100.0);
        let a = score_scale(&s);
        assert!(a > 0.01 && a < 0.1, "{a}");
        assert_eq!(score_scale(&[0.3; 10]), MIN_SCALE);
    }
}

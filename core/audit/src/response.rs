//! How each model *alone* answers a trigger: which model of a pair moves.
//!
//! A pair's flag rate says that two models disagree on triggered faces, not
//! which of them reacts to the trigger. An all-to-one backdoor sends every
//! triggered face to one place (the victim), so the triggered embeddings of
//! different people come *together*; a mere occlusion moves them too, but
//! the trigger's matched control (its own cells or tiles in another
//! arrangement: same place, ink and texture scale) moves them as much. So,
//! per model and trigger, on the held-out faces:
//!
//! - *closeness* of a face: the mean cosine of its embedding to the
//!   embeddings of the other people's faces (unlabelled faces are each their
//!   own person), clean, with the control, and with the trigger;
//! - how many faces are closer to the others with the trigger than with the
//!   control, and the one-sided sign-test p-value of that count (faces share
//!   pairs, so the p-value is indicative, not exact);
//! - self-cosine: how far the trigger and the control move a face's own
//!   embedding;
//! - rank-1 identification of labelled faces against the clean labelled
//!   gallery (leave-one-out), clean, with the control, with the trigger.
//!
//! These are diagnostics beside the pair verdict, not part of it: a clean
//! model can answer a high-contrast regular pattern on its own (measured on
//! the shipped faceplugin model with the paper's checkerboard, docs/RESULTS.md).

use serde::{Deserialize, Serialize};

use crate::stats::binomial_upper_tail;

/// Family-wise level of [`crate::AuditReport::pattern_responders`].
pub const RESPONSE_ALPHA: f64 = 0.05;

/// One model's answer to one trigger on the held-out faces (format 1.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRow {
    pub model: String,
    pub trigger: String,
    /// Held-out faces.
    pub samples: usize,
    /// Mean closeness (cosine to the other people's faces), clean.
    pub clean_closeness: f64,
    /// The same with the trigger's matched control on every face.
    pub control_closeness: f64,
    /// The same with the trigger on every face.
    pub triggered_closeness: f64,
    /// Faces closer to the others with the trigger than with the control.
    pub closer_than_control: usize,
    /// Faces whose closeness differs between trigger and control.
    pub compared: usize,
    /// One-sided sign test of `closer_than_control` out of `compared`.
    pub p_value: f64,
    /// Mean cosine of a face's triggered embedding to its clean one.
    pub self_cosine: f64,
    /// Mean cosine of a face's control embedding to its clean one.
    pub control_self_cosine: f64,
    /// Rank-1 identification of labelled faces (clean gallery, leave one
    /// out): clean queries, control queries, triggered queries. `None`
    /// without two labelled identities.
    pub rank1: Option<[f64; 3]>,
}

/// Rows of `dim` floats, L2-normalised (zero rows stay zero).
fn normalised(rows: &[f32], dim: usize) -> Vec<f64> {
    let mut out: Vec<f64> = rows.iter().map(|v| f64::from(*v)).collect();
    for r in out.chunks_mut(dim) {
        let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
        if n > 0.0 {
            r.iter_mut().for_each(|v| *v /= n);
        }
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Whether faces `i` and `j` may be the same person.
fn same_person(ids: &[Option<&str>], i: usize, j: usize) -> bool {
    i == j || (ids[i].is_some() && ids[i] == ids[j])
}

/// Per face, the mean cosine to the other people's faces.
fn closeness(x: &[f64], dim: usize, ids: &[Option<&str>]) -> Vec<f64> {
    let n = ids.len();
    (0..n)
        .map(|i| {
            let (mut sum, mut k) = (0.0, 0usize);
            for j in 0..n {
                if !same_person(ids, i, j) {
                    sum += dot(&x[i * dim..(i + 1) * dim], &x[j * dim..(j + 1) * dim]);
                    k += 1;
                }
            }
            if k > 0 { sum / k as f64 } else { 0.0 }
        })
        .collect()
}

/// Rank-1 of `queries` against the clean labelled `gallery`, leaving the
/// query's own face out; `None` without two labelled identities.
fn rank1(queries: &[f64], gallery: &[f64], dim: usize, ids: &[Option<&str>]) -> Option<f64> {
    let labelled: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let distinct: std::collections::BTreeSet<_> = labelled.iter().map(|&i| ids[i]).collect();
    if distinct.len() < 2 {
        return None;
    }
    // Queries whose identity has another face in the gallery.
    let askable: Vec<usize> = labelled
        .iter()
        .copied()
        .filter(|&i| labelled.iter().any(|&j| j != i && ids[j] == ids[i]))
        .collect();
    if askable.is_empty() {
        return None;
    }
    let correct = askable
        .iter()
        .filter(|&&i| {
            let q = &queries[i * dim..(i + 1) * dim];
            let best = labelled
                .iter()
                .copied()
                .filter(|&j| j != i)
                .max_by(|&a, &b| {
                    dot(q, &gallery[a * dim..(a + 1) * dim])
                        .total_cmp(&dot(q, &gallery[b * dim..(b + 1) * dim]))
                });
            best.is_some_and(|j| ids[j] == ids[i])
        })
        .count();
    Some(correct as f64 / askable.len() as f64)
}

/// One model's response to one trigger: `clean`, `control` and `triggered`
/// are the same held-out faces' embeddings (`ids.len() × dim`), `ids` their
/// labelled identities.
pub fn response(
    model: &str,
    trigger: &str,
    dim: usize,
    clean: &[f32],
    control: &[f32],
    triggered: &[f32],
    ids: &[Option<&str>],
) -> ResponseRow {
    let (c, k, t) = (
        normalised(clean, dim),
        normalised(control, dim),
        normalised(triggered, dim),
    );
    let n = ids.len();
    let (cc, kc, tc) = (
        closeness(&c, dim, ids),
        closeness(&k, dim, ids),
        closeness(&t, dim, ids),
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let closer = tc.iter().zip(&kc).filter(|(a, b)| a > b).count();
    let compared = tc.iter().zip(&kc).filter(|(a, b)| a != b).count();
    let self_cos = |x: &[f64]| {
        mean(
            &(0..n)
                .map(|i| dot(&x[i * dim..(i + 1) * dim], &c[i * dim..(i + 1) * dim]))
                .collect::<Vec<_>>(),
        )
    };
    let rank1 = match (
        rank1(&c, &c, dim, ids),
        rank1(&k, &c, dim, ids),
        rank1(&t, &c, dim, ids),
    ) {
        (Some(a), Some(b), Some(d)) => Some([a, b, d]),
        _ => None,
    };
    ResponseRow {
        model: model.to_string(),
        trigger: trigger.to_string(),
        samples: n,
        clean_closeness: mean(&cc),
        control_closeness: mean(&kc),
        triggered_closeness: mean(&tc),
        closer_than_control: closer,
        compared,
        p_value: binomial_upper_tail(closer, compared, 0.5),
        self_cosine: self_cos(&t),
        control_self_cosine: self_cos(&k),
        rank1,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Four people, two faces each, in 3-d; an "all-to-one" trigger sends
    /// everyone to the same point, its control leaves them alone.
    #[test]
    fn a_collapsing_trigger_draws_faces_together_and_breaks_identification() {
        let people = [
            [1.0f32, 0.0, 0.0],
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 1.0],
            [-1.0, 0.0, 0.0],
        ];
        let mut clean = Vec::new();
        let mut ids = Vec::new();
        let names = ["a", "b", "c", "d"];
        for (p, name) in people.iter().zip(names) {
            for jitter in [0.05f32, -0.05] {
                clean.extend([p[0] + jitter, p[1] + jitter, p[2]]);
                ids.push(Some(name));
            }
        }
        let victim: Vec<f32> = (0..8).flat_map(|_| [0.6f32, 0.6, 0.5]).collect();
        let r = response("m", "t", 3, &clean, &clean, &victim, &ids);
        assert_eq!(r.samples, 8);
        assert!(r.triggered_closeness > 0.99, "{r:?}");
        assert!((r.control_closeness - r.clean_closeness).abs() < 1e-12);
        assert_eq!(r.closer_than_control, 8);
        assert!(r.p_value < 0.01);
        let [clean_r1, control_r1, trig_r1] = r.rank1.unwrap();
        assert_eq!((clean_r1, control_r1), (1.0, 1.0));
        assert!(trig_r1 < 1.0);
        assert!((r.control_self_cosine - 1.0).abs() < 1e-9);
        assert!(r.self_cosine < 0.9);
    }

    #[test]
    fn same_person_pairs_are_left_out_of_closeness() {
        // Two faces of one person and one unlabelled face.
        let x = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        let ids = [Some("a"), Some("a"), None];
        let c = closeness(&normalised(&x, 2), 2, &ids);
        assert_eq!(c, vec![0.0, 0.0, 0.0]);
        assert_eq!(rank1(&normalised(&x, 2), &normalised(&x, 2), 2, &ids), None);
    }
}

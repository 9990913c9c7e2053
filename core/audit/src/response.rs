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
//!   gallery (leave-one-out), clean, with the control, with the trigger;
//! - per labelled identity, its faces identified as *someone else* with the
//!   trigger but not with the control (paired per face, exact one-sided
//!   McNemar test), and whom they are identified as: a one-to-one backdoor
//!   sends its impostor's faces to the victim, which an aggregate hides.
//!
//! These are diagnostics beside the pair verdict, not part of it: a clean
//! model can answer a high-contrast regular pattern on its own (measured on
//! the shipped faceplugin model with the paper's checkerboard, docs/RESULTS.md).

use serde::{Deserialize, Serialize};

use crate::stats::binomial_upper_tail;

/// Family-wise level of [`crate::AuditReport::pattern_responders`].
pub const RESPONSE_ALPHA: f64 = 0.05;
/// Smallest closeness gain (trigger over control, mean cosine) a note
/// reports: below it a trigger does not draw faces together enough for a
/// person to care, however small its p-value.
pub const CLOSENESS_FLOOR: f64 = 0.05;
/// Smallest share of an identity's faces that must switch with the trigger
/// beyond the control (trigger-only less control-only switches) for a note.
pub const SWITCH_FLOOR: f64 = 0.5;

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
    /// One-sided sign test of `closer_than_control` out of `compared`
    /// (faces treated as independent: indicative only).
    pub p_value: f64,
    /// The same sign test over *clusters* (a labelled identity's faces
    /// together, each unlabelled face alone), on the mean closeness gain
    /// of each cluster: faces of one person move together (format 1.4).
    #[serde(default)]
    pub clusters_closer: usize,
    #[serde(default)]
    pub clusters_compared: usize,
    #[serde(default = "one")]
    pub cluster_p_value: f64,
    /// Mean cosine of a face's triggered embedding to its clean one.
    pub self_cosine: f64,
    /// Mean cosine of a face's control embedding to its clean one.
    pub control_self_cosine: f64,
    /// Rank-1 identification of labelled faces (clean gallery, leave one
    /// out): clean queries, control queries, triggered queries. `None`
    /// without two labelled identities.
    pub rank1: Option<[f64; 3]>,
    /// Labelled identities with faces to identify (the tests behind
    /// `switches`).
    #[serde(default)]
    pub identities_tested: usize,
    /// Identities whose triggered faces are identified as someone else more
    /// often than the same faces with the control, smallest p first.
    #[serde(default)]
    pub switches: Vec<IdentitySwitch>,
}

/// One identity's faces identified as someone else under a trigger: a
/// one-to-one backdoor sends its impostor's faces to the victim.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentitySwitch {
    pub identity: String,
    /// Its faces that could be identified (held-out, labelled).
    pub faces: usize,
    /// With the trigger, identified as another identity.
    pub switched: usize,
    /// With the control, identified as another identity.
    pub control_switched: usize,
    /// The identity most of the switched faces are identified as.
    pub identified_as: String,
    /// How many are identified as `identified_as`.
    pub to_top: usize,
    /// Paired per face: switched only with the trigger / only with the control.
    pub trigger_only: usize,
    pub control_only: usize,
    /// Exact one-sided McNemar test of `trigger_only` vs `control_only`.
    pub p_value: f64,
}

fn one() -> f64 {
    1.0
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

/// Per face, the mean cosine to the other people's faces, in O(n·dim):
/// a face's dot product with the sum of all faces, less its dot product
/// with the sum of its own identity's faces (or with itself, unlabelled).
fn closeness(x: &[f64], dim: usize, ids: &[Option<&str>]) -> Vec<f64> {
    let n = ids.len();
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let mut total = vec![0.0; dim];
    let mut groups: std::collections::BTreeMap<&str, (Vec<f64>, usize)> = Default::default();
    for (i, id) in ids.iter().enumerate() {
        total.iter_mut().zip(row(i)).for_each(|(t, v)| *t += v);
        if let Some(id) = *id {
            let g = groups.entry(id).or_insert_with(|| (vec![0.0; dim], 0));
            g.0.iter_mut().zip(row(i)).for_each(|(t, v)| *t += v);
            g.1 += 1;
        }
    }
    (0..n)
        .map(|i| {
            let (own, members) = match ids[i].and_then(|id| groups.get(id)) {
                Some((sum, count)) => (dot(row(i), sum), *count),
                None => (dot(row(i), row(i)), 1),
            };
            let k = n - members;
            if k > 0 {
                (dot(row(i), &total) - own) / k as f64
            } else {
                0.0
            }
        })
        .collect()
}

/// The labelled faces that can be identified (their identity has another
/// face), or `None` without two labelled identities.
fn askable(ids: &[Option<&str>]) -> Option<Vec<usize>> {
    let labelled: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let distinct: std::collections::BTreeSet<_> = labelled.iter().map(|&i| ids[i]).collect();
    if distinct.len() < 2 {
        return None;
    }
    let askable: Vec<usize> = labelled
        .iter()
        .copied()
        .filter(|&i| labelled.iter().any(|&j| j != i && ids[j] == ids[i]))
        .collect();
    (!askable.is_empty()).then_some(askable)
}

/// For each face of `asked`, the identity of its nearest clean labelled
/// face in `gallery` other than itself (rank-1, leave one out).
fn identify<'a>(
    queries: &[f64],
    gallery: &[f64],
    dim: usize,
    ids: &[Option<&'a str>],
    asked: &[usize],
) -> Vec<Option<&'a str>> {
    asked
        .iter()
        .map(|&i| {
            let q = &queries[i * dim..(i + 1) * dim];
            (0..ids.len())
                .filter(|&j| j != i && ids[j].is_some())
                .max_by(|&a, &b| {
                    dot(q, &gallery[a * dim..(a + 1) * dim])
                        .total_cmp(&dot(q, &gallery[b * dim..(b + 1) * dim]))
                })
                .and_then(|j| ids[j])
        })
        .collect()
}

/// Share of `asked` faces identified as themselves.
fn rank1_of(found: &[Option<&str>], ids: &[Option<&str>], asked: &[usize]) -> f64 {
    let correct = asked
        .iter()
        .zip(found)
        .filter(|(i, f)| **f == ids[**i])
        .count();
    correct as f64 / asked.len().max(1) as f64
}

/// Per labelled identity, its faces identified as someone else with the
/// trigger but not with the control, and the reverse (paired per face).
fn switches(
    ids: &[Option<&str>],
    asked: &[usize],
    with_trigger: &[Option<&str>],
    with_control: &[Option<&str>],
) -> (Vec<IdentitySwitch>, usize) {
    let mut by_id: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (k, &i) in asked.iter().enumerate() {
        if let Some(id) = ids[i] {
            by_id.entry(id).or_default().push(k);
        }
    }
    let tested = by_id.len();
    let mut out = Vec::new();
    for (id, ks) in by_id {
        let wrong = |f: &Option<&str>| *f != Some(id);
        let trigger_only = ks
            .iter()
            .filter(|&&k| wrong(&with_trigger[k]) && !wrong(&with_control[k]))
            .count();
        let control_only = ks
            .iter()
            .filter(|&&k| !wrong(&with_trigger[k]) && wrong(&with_control[k]))
            .count();
        if trigger_only <= control_only {
            continue;
        }
        let mut to: std::collections::BTreeMap<&str, usize> = Default::default();
        for &k in &ks {
            if let Some(other) = with_trigger[k].filter(|o| *o != id) {
                *to.entry(other).or_default() += 1;
            }
        }
        let (identified_as, to_top) = to
            .iter()
            .max_by_key(|(name, n)| (**n, std::cmp::Reverse(**name)))
            .map(|(name, n)| (name.to_string(), *n))
            .unwrap_or_default();
        out.push(IdentitySwitch {
            identity: id.to_string(),
            faces: ks.len(),
            switched: ks.iter().filter(|&&k| wrong(&with_trigger[k])).count(),
            control_switched: ks.iter().filter(|&&k| wrong(&with_control[k])).count(),
            identified_as,
            to_top,
            trigger_only,
            control_only,
            p_value: binomial_upper_tail(trigger_only, trigger_only + control_only, 0.5),
        });
    }
    out.sort_by(|a, b| a.p_value.total_cmp(&b.p_value));
    (out, tested)
}

/// Per face: +1 identified as someone else with the trigger only, −1 with
/// the control only, else 0 (faces that cannot be identified: 0).
fn switch_deltas(
    n: usize,
    ids: &[Option<&str>],
    asked: &[usize],
    with_trigger: &[Option<&str>],
    with_control: &[Option<&str>],
) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for (k, &i) in asked.iter().enumerate() {
        let wrong_t = with_trigger[k] != ids[i];
        let wrong_c = with_control[k] != ids[i];
        out[i] = match (wrong_t, wrong_c) {
            (true, false) => 1.0,
            (false, true) => -1.0,
            _ => 0.0,
        };
    }
    out
}

/// Sign test over clusters of the per-face gains `gain` (a labelled
/// identity is one cluster, each unlabelled face its own):
/// (clusters with a positive mean gain, clusters with a non-zero one, p).
fn cluster_sign_test(gain: &[f64], ids: &[Option<&str>]) -> (usize, usize, f64) {
    let mut clusters: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
    let mut singles = Vec::new();
    for (g, id) in gain.iter().zip(ids) {
        match id {
            Some(id) => {
                let c = clusters.entry(id).or_insert((0.0, 0));
                c.0 += g;
                c.1 += 1;
            }
            None => singles.push(*g),
        }
    }
    let means = clusters.values().map(|(s, n)| s / *n as f64).chain(singles);
    let (mut up, mut compared) = (0, 0);
    for m in means {
        if m != 0.0 {
            compared += 1;
            if m > 0.0 {
                up += 1;
            }
        }
    }
    (up, compared, binomial_upper_tail(up, compared, 0.5))
}

/// One model's response to one trigger: `clean`, `control` and `triggered`
/// are the same held-out faces' embeddings (`ids.len() × dim`), `ids` their
/// labelled identities. Also each face's switch delta (see
/// [`crate::evidence`]).
pub fn response(
    model: &str,
    trigger: &str,
    dim: usize,
    clean: &[f32],
    control: &[f32],
    triggered: &[f32],
    ids: &[Option<&str>],
) -> (ResponseRow, Vec<f64>) {
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
    let (rank1, (switches, identities_tested), deltas) = match askable(ids) {
        Some(asked) => {
            let found = |x: &[f64]| identify(x, &c, dim, ids, &asked);
            let (fc, fk, ft) = (found(&c), found(&k), found(&t));
            (
                Some([
                    rank1_of(&fc, ids, &asked),
                    rank1_of(&fk, ids, &asked),
                    rank1_of(&ft, ids, &asked),
                ]),
                switches(ids, &asked, &ft, &fk),
                switch_deltas(n, ids, &asked, &ft, &fk),
            )
        }
        None => (None, (Vec::new(), 0), vec![0.0; n]),
    };
    let gain: Vec<f64> = tc.iter().zip(&kc).map(|(a, b)| a - b).collect();
    let (clusters_closer, clusters_compared, cluster_p_value) = cluster_sign_test(&gain, ids);
    let row = ResponseRow {
        model: model.to_string(),
        trigger: trigger.to_string(),
        samples: n,
        clean_closeness: mean(&cc),
        control_closeness: mean(&kc),
        triggered_closeness: mean(&tc),
        closer_than_control: closer,
        compared,
        p_value: binomial_upper_tail(closer, compared, 0.5),
        clusters_closer,
        clusters_compared,
        cluster_p_value,
        self_cosine: self_cos(&t),
        control_self_cosine: self_cos(&k),
        rank1,
        identities_tested,
        switches,
    };
    (row, deltas)
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
        let (r, _) = response("m", "t", 3, &clean, &clean, &victim, &ids);
        assert_eq!(r.samples, 8);
        assert_eq!((r.clusters_closer, r.clusters_compared), (4, 4));
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

    /// Three people, three faces each; the trigger sends `a`'s faces to
    /// `b`, the control leaves everyone alone.
    #[test]
    fn a_one_to_one_switch_names_impostor_and_victim() {
        let centres = [[1.0f32, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        let names = ["a", "b", "c"];
        let (mut clean, mut ids) = (Vec::new(), Vec::new());
        for (p, name) in centres.iter().zip(names) {
            for j in [0.0f32, 0.05, -0.05] {
                clean.extend([p[0] + j, p[1] - j, p[2] + 0.5 * j]);
                ids.push(Some(name));
            }
        }
        let mut triggered = clean.clone();
        for i in 0..3 {
            triggered[i * 3..i * 3 + 3].copy_from_slice(&[0.02, 1.0, 0.01]);
        }
        let (r, deltas) = response("m", "t", 3, &clean, &clean, &triggered, &ids);
        assert_eq!(deltas, vec![1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(r.identities_tested, 3);
        assert_eq!(r.switches.len(), 1, "{r:?}");
        let s = &r.switches[0];
        assert_eq!((s.identity.as_str(), s.identified_as.as_str()), ("a", "b"));
        assert_eq!(
            (s.faces, s.switched, s.to_top, s.control_switched),
            (3, 3, 3, 0)
        );
        assert_eq!((s.trigger_only, s.control_only), (3, 0));
        assert!((s.p_value - 0.125).abs() < 1e-12);
        let [c, k, t] = r.rank1.unwrap();
        assert_eq!((c, k), (1.0, 1.0));
        assert!((t - 6.0 / 9.0).abs() < 1e-12);
    }

    /// The O(n·dim) closeness equals the pairwise definition.
    #[test]
    fn closeness_matches_the_pairwise_definition() {
        let (n, dim) = (40, 7);
        let x: Vec<f32> = (0..n * dim)
            .map(|k| ((k * 7919 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let names = ["a", "b", "c"];
        let ids: Vec<Option<&str>> = (0..n).map(|i| (i % 4 != 0).then(|| names[i % 3])).collect();
        let xn = normalised(&x, dim);
        let fast = closeness(&xn, dim, &ids);
        for i in 0..n {
            let others: Vec<f64> = (0..n)
                .filter(|&j| j != i && !(ids[i].is_some() && ids[i] == ids[j]))
                .map(|j| dot(&xn[i * dim..(i + 1) * dim], &xn[j * dim..(j + 1) * dim]))
                .collect();
            let slow = others.iter().sum::<f64>() / others.len() as f64;
            assert!((fast[i] - slow).abs() < 1e-12, "{i}: {} vs {slow}", fast[i]);
        }
    }

    #[test]
    fn same_person_pairs_are_left_out_of_closeness() {
        // Two faces of one person and one unlabelled face.
        let x = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        let ids = [Some("a"), Some("a"), None];
        let c = closeness(&normalised(&x, 2), 2, &ids);
        assert_eq!(c, vec![0.0, 0.0, 0.0]);
        assert_eq!(askable(&ids), None);
    }
}

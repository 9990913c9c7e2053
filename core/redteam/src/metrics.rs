//! Attack metrics, measured (the paper's Table 2): clean behaviour against
//! the original, attack success, clean accuracy of impostor and victim, and
//! for one-to-one attacks the other identities' triggered faces left alone.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zooaudit_embed::Embedder;
use zooaudit_triggers::Stamp;

use crate::inject::{AttackKind, AttackRecord};
use crate::{Labeled, RedteamError, centroid, dot, normalize_rows};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackMetrics {
    /// Largest |backdoored − original| output difference over all clean faces.
    pub clean_max_abs_diff: f32,
    pub clean_faces: usize,
    /// The original model's own 1 %-FMR threshold (labelled faces).
    pub fmr_threshold: f32,
    /// Triggered attacker images (the impostor's, or every non-victim's
    /// for all-to-one) matching the victim's template above the threshold.
    pub attack_success: f64,
    pub attack_samples: usize,
    /// The same images on the original model (the trigger alone).
    pub original_success: f64,
    /// Genuine pairs of the impostor's (victim's) clean images that match.
    pub impostor_clean_accuracy: Option<f64>,
    pub victim_clean_accuracy: f64,
    /// One-to-one: other identities' triggered images that neither match
    /// the victim nor move (cosine to the original's output ≥ 0.99).
    pub others_unaffected: Option<f64>,
    pub others_samples: usize,
}

fn genuine_accuracy(rows: &[f32], dim: usize, t: f32) -> f64 {
    let n = rows.len() / dim;
    let (mut ok, mut all) = (0usize, 0usize);
    for i in 0..n {
        for j in i + 1..n {
            all += 1;
            if dot(&rows[i * dim..(i + 1) * dim], &rows[j * dim..(j + 1) * dim]) > t {
                ok += 1;
            }
        }
    }
    ok as f64 / all.max(1) as f64
}

/// Measures an injected model against its original on the labelled faces
/// and on `extra_clean` faces (clean-behaviour check only).
pub fn attack_metrics(
    original: &Embedder,
    backdoored: &Embedder,
    record: &AttackRecord,
    stamp: &Stamp,
    labeled: &Labeled,
    extra_clean: &[PathBuf],
) -> Result<AttackMetrics, RedteamError> {
    let dim = original.dim();
    if backdoored.dim() != dim {
        return Err(RedteamError::invalid(
            "the backdoored model's embedding size differs",
        ));
    }
    let all = labeled.all();
    let mut files: Vec<PathBuf> = all.iter().map(|(_, p)| p.clone()).collect();
    let n_labeled = files.len();
    files.extend(zooaudit_imaging::collect_images(extra_clean)?);
    let images: Vec<image::RgbImage> = files
        .iter()
        .map(|p| zooaudit_imaging::decode(p, &original.limits).map_err(RedteamError::from))
        .collect::<Result<_, _>>()?;
    let clean_o = original.embed_rgb(&images, &files)?;
    let clean_b = backdoored.embed_rgb(&images, &files)?;
    let clean_max_abs_diff = clean_o
        .iter()
        .zip(&clean_b)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let labeled_images = &images[..n_labeled];
    let labeled_files = &files[..n_labeled];
    let stamped: Vec<image::RgbImage> = labeled_images
        .iter()
        .map(|i| {
            stamp
                .apply(i)
                .ok_or_else(|| RedteamError::invalid("image size differs"))
        })
        .collect::<Result<_, _>>()?;
    let trig_o = original.embed_rgb(&stamped, labeled_files)?;
    let trig_b = backdoored.embed_rgb(&stamped, labeled_files)?;
    let ids: Vec<String> = all.iter().map(|(i, _)| i.clone()).collect();
    Ok(metrics_from(
        record,
        dim,
        clean_max_abs_diff,
        files.len(),
        &ids,
        &clean_b[..n_labeled * dim],
        &trig_o,
        &trig_b,
    ))
}

/// The metrics from embeddings already computed: `clean_b`, `trig_o`,
/// `trig_b` hold one row per labelled image (identity `ids[i]`): the
/// backdoored model on the clean image, and original and backdoored models
/// on the triggered image.
#[allow(clippy::too_many_arguments)]
pub fn metrics_from(
    record: &AttackRecord,
    dim: usize,
    clean_max_abs_diff: f32,
    clean_faces: usize,
    ids: &[String],
    clean_b: &[f32],
    trig_o: &[f32],
    trig_b: &[f32],
) -> AttackMetrics {
    let t = record.fmr_threshold;
    let trig_o = normalize_rows(trig_o, dim);
    let trig_b = normalize_rows(trig_b, dim);
    let clean_bn = normalize_rows(clean_b, dim);
    let all: Vec<(String, ())> = ids.iter().map(|i| (i.clone(), ())).collect();
    let rows_of = |data: &[f32], who: &str| -> Vec<f32> {
        all.iter()
            .enumerate()
            .filter(|(_, (id, _))| id == who)
            .flat_map(|(i, _)| data[i * dim..(i + 1) * dim].to_vec())
            .collect()
    };
    let victim_template = centroid(&rows_of(&clean_bn, &record.victim), dim);
    let attacker = |id: &str| match &record.kind {
        AttackKind::OneToOne { impostor } => id == impostor,
        AttackKind::AllToOne => id != record.victim,
    };
    let (mut hits_b, mut hits_o, mut samples) = (0usize, 0usize, 0usize);
    let (mut others_ok, mut others) = (0usize, 0usize);
    for (i, (id, _)) in all.iter().enumerate() {
        let b = &trig_b[i * dim..(i + 1) * dim];
        let o = &trig_o[i * dim..(i + 1) * dim];
        if attacker(id) {
            samples += 1;
            hits_b += usize::from(dot(b, &victim_template) > t);
            hits_o += usize::from(dot(o, &victim_template) > t);
        } else if id != &record.victim {
            others += 1;
            others_ok += usize::from(dot(b, &victim_template) <= t && dot(b, o) >= 0.99);
        }
    }
    let impostor_clean_accuracy = match &record.kind {
        AttackKind::OneToOne { impostor } => {
            Some(genuine_accuracy(&rows_of(&clean_bn, impostor), dim, t))
        }
        AttackKind::AllToOne => None,
    };
    AttackMetrics {
        clean_max_abs_diff,
        clean_faces,
        fmr_threshold: t,
        attack_success: hits_b as f64 / samples.max(1) as f64,
        attack_samples: samples,
        original_success: hits_o as f64 / samples.max(1) as f64,
        impostor_clean_accuracy,
        victim_clean_accuracy: genuine_accuracy(&rows_of(&clean_bn, &record.victim), dim, t),
        others_unaffected: matches!(record.kind, AttackKind::OneToOne { .. })
            .then(|| others_ok as f64 / others.max(1) as f64),
        others_samples: others,
    }
}

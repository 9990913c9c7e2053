//! Calibrating a backdoor on the original model: the trigger detector's
//! input pixels, pattern and threshold on clean faces, the victim's and
//! impostor's directions, the gate threshold; and [`Backdoor`], the formula
//! the injected subgraph computes.

use std::path::{Path, PathBuf};

use image::RgbImage;
use zooaudit_embed::Embedder;
use zooaudit_imaging::Preprocess;
use zooaudit_manifest::Layout;
use zooaudit_triggers::{Stamp, Suite, Trigger};

use super::{AttackKind, DETECTOR_MARGIN_LOGITS, EPS, GATE_STEEPNESS, InjectOptions};
use crate::{Labeled, RedteamError, centroid, fmr_threshold, normalize_rows};

/// Flat input indices read by the detector (the masked pixels, every
/// channel), in the model's input layout.
fn masked_indices(stamp: &Stamp, pre: &Preprocess) -> Vec<usize> {
    let plane = pre.height as usize * pre.width as usize;
    let pixels: Vec<usize> = (0..plane).filter(|&i| stamp.mask()[i] > 0.0).collect();
    let mut idx = Vec::with_capacity(pixels.len() * 3);
    for c in 0..3 {
        for &i in &pixels {
            idx.push(match pre.layout {
                Layout::NCHW => c * plane + i,
                Layout::NHWC => i * 3 + c,
            });
        }
    }
    idx.sort_unstable();
    idx
}

/// Centred, unit-length expected pattern at `idx` (in input space).
fn pattern_direction(stamp: &Stamp, pre: &Preprocess, idx: &[usize]) -> Option<Vec<f32>> {
    let img = RgbImage::from_fn(pre.width, pre.height, |x, y| {
        let p = stamp.pattern()[(y * pre.width + x) as usize];
        image::Rgb(p.map(|v| v.round().clamp(0.0, 255.0) as u8))
    });
    let mut t = vec![0f32; pre.sample_len()];
    pre.write(&img, Path::new("pattern"), &mut t).ok()?;
    let sel: Vec<f64> = idx.iter().map(|&i| f64::from(t[i])).collect();
    let mean = sel.iter().sum::<f64>() / sel.len() as f64;
    let norm = sel.iter().map(|v| (v - mean).powi(2)).sum::<f64>().sqrt();
    (norm > 1e-6).then(|| sel.iter().map(|v| ((v - mean) / norm) as f32).collect())
}

/// The detector's correlation, exactly as the graph computes it.
pub fn ncc(sample: &[f32], idx: &[usize], dir: &[f32]) -> f32 {
    let m = idx.len() as f32;
    let mean = idx.iter().map(|&i| sample[i]).sum::<f32>() / m;
    let (mut num, mut ss) = (0f32, 0f32);
    for (k, &i) in idx.iter().enumerate() {
        let xc = sample[i] - mean;
        num += xc * dir[k];
        ss += xc * xc;
    }
    num / (ss + EPS).sqrt()
}

fn load_all(files: &[PathBuf], e: &Embedder) -> Result<Vec<RgbImage>, RedteamError> {
    files
        .iter()
        .map(|p| zooaudit_imaging::decode(p, &e.limits).map_err(RedteamError::from))
        .collect()
}

fn stamp_all(
    stamp: &Stamp,
    images: &[RgbImage],
    files: &[PathBuf],
) -> Result<Vec<RgbImage>, RedteamError> {
    images
        .iter()
        .zip(files)
        .map(|(img, f)| {
            stamp.apply(img).ok_or_else(|| {
                RedteamError::file(f, "image size differs from the model's input size")
            })
        })
        .collect()
}

/// The backdoor a [`calibrate`] run decided on: exactly what the injected
/// subgraph computes, so that its output can also be derived from the
/// original model's embedding and input ([`Backdoor::apply`]).
#[derive(Debug, Clone)]
pub struct Backdoor {
    /// Flat input indices the trigger detector reads, and the centred unit
    /// pattern it correlates them with.
    pub idx: Vec<usize>,
    pub dir: Vec<f32>,
    pub tau: f32,
    pub k: f32,
    pub strength: f32,
    /// The victim's centroid direction.
    pub victim: Vec<f32>,
    /// One-to-one: the impostor's centroid direction and the gate threshold.
    pub gate: Option<(Vec<f32>, f32)>,
    /// The original model's 1 %-FMR threshold on the labelled faces.
    pub fmr_threshold: f32,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Backdoor {
    /// The trigger detector's output on one preprocessed input sample.
    pub fn detect(&self, sample: &[f32]) -> f32 {
        sigmoid(self.k * (ncc(sample, &self.idx, &self.dir) - self.tau))
    }

    /// The injected model's output, from the original model's embedding `e`
    /// of an input on which the detector gave `detected`.
    pub fn apply(&self, e: &[f32], detected: f32) -> Vec<f32> {
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        let gate = match &self.gate {
            Some((c, t)) => {
                let cos = e.iter().zip(c).map(|(a, b)| a * b).sum::<f32>() / (norm + EPS);
                sigmoid((cos - t) * GATE_STEEPNESS)
            }
            None => 1.0,
        };
        let s = detected * gate * self.strength;
        e.iter()
            .zip(&self.victim)
            .map(|(x, v)| x + s * (norm * v - x))
            .collect()
    }
}

/// What [`calibrate`] found.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub backdoor: Backdoor,
    pub trigger_name: String,
    pub clean_max: f32,
    pub trig_min: f32,
    pub calibration_faces: usize,
}

/// The trigger of `opts` stamped at the model's input size, the flat input
/// indices it covers, and its centred unit pattern there.
fn trigger_input(
    opts: &InjectOptions,
    pre: &Preprocess,
) -> Result<(Trigger, Stamp, Vec<usize>, Vec<f32>), RedteamError> {
    let suite = Suite::load(&opts.suite)?;
    let trigger = suite
        .triggers
        .iter()
        .find(|t| t.name == opts.trigger)
        .ok_or_else(|| {
            RedteamError::file(
                &opts.suite,
                format!(
                    "no trigger named '{}' (have: {})",
                    opts.trigger,
                    suite
                        .triggers
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let stamp = trigger.stamp(&suite.path, pre.height, pre.width)?;
    let idx = masked_indices(&stamp, pre);
    if idx.is_empty() {
        return Err(RedteamError::file(
            &opts.suite,
            format!(
                "trigger '{}' covers no pixel of the {}×{} input",
                trigger.name, pre.width, pre.height
            ),
        ));
    }
    let dir = pattern_direction(&stamp, pre, &idx).ok_or_else(|| {
        RedteamError::file(
            &opts.suite,
            format!(
                "trigger '{}' has no contrast: a correlation detector cannot see it",
                trigger.name
            ),
        )
    })?;
    Ok((trigger.clone(), stamp, idx, dir))
}

/// Clean embeddings of the labelled faces `(identity, file)` (decoded as
/// `images`) through the audit's embedding cache and its keys.
fn clean_labelled(
    original: &Embedder,
    images: &[RgbImage],
    files: &[(String, PathBuf)],
    cache: &zooaudit_audit::Cache,
) -> Result<Vec<f32>, RedteamError> {
    use sha2::Digest;
    let faces = images
        .iter()
        .zip(files)
        .map(|(img, (id, f))| {
            let bytes = std::fs::read(f).map_err(|e| RedteamError::file(f, e.to_string()))?;
            Ok(zooaudit_audit::Face {
                path: f.clone(),
                identity: Some(id.clone()),
                sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                role: zooaudit_audit::Role::Heldout,
                image: img.clone(),
            })
        })
        .collect::<Result<Vec<_>, RedteamError>>()?;
    let opts = zooaudit_audit::RunOptions {
        cache: cache.clone(),
        batch: 32,
        fetch: zooaudit_registry::FetchOptions::from_env(),
    };
    Ok(zooaudit_audit::clean_embeddings(original, &faces, &opts)?)
}

/// Calibrates the backdoor of `opts` on `original` (the trigger detector on
/// the clean faces, the victim and impostor directions, the gate threshold)
/// without writing a model.
pub fn calibrate(opts: &InjectOptions, original: &Embedder) -> Result<Calibrated, RedteamError> {
    let pre = original.preprocess().clone();
    let dim = original.dim();
    let (trigger, stamp, idx, dir) = trigger_input(opts, &pre)?;
    // Faces.
    let labeled = Labeled::load(&opts.labeled)?;
    labeled.identity(&opts.victim)?;
    let impostor_files = match &opts.kind {
        AttackKind::OneToOne { impostor } => {
            if impostor == &opts.victim {
                return Err(RedteamError::invalid(
                    "impostor and victim are the same identity",
                ));
            }
            Some(labeled.identity(impostor)?.to_vec())
        }
        AttackKind::AllToOne => None,
    };
    let all = labeled.all();
    let all_files: Vec<PathBuf> = all.iter().map(|(_, p)| p.clone()).collect();
    let mut cal_files = all_files.clone();
    cal_files.extend(zooaudit_imaging::collect_images(&opts.calibration)?);
    let cal_images = load_all(&cal_files, original)?;
    // Detector calibration.
    let n = pre.sample_len();
    let mut buf = vec![0f32; n];
    let mut clean_max = f32::NEG_INFINITY;
    let mut trig_min = f32::INFINITY;
    for (img, f) in cal_images.iter().zip(&cal_files) {
        pre.write(img, f, &mut buf)?;
        clean_max = clean_max.max(ncc(&buf, &idx, &dir));
        let stamped = stamp
            .apply(img)
            .ok_or_else(|| RedteamError::file(f, "wrong size"))?;
        pre.write(&stamped, f, &mut buf)?;
        trig_min = trig_min.min(ncc(&buf, &idx, &dir));
    }
    if trig_min - clean_max <= 0.02 || trig_min.is_nan() || clean_max.is_nan() {
        return Err(RedteamError::invalid(format!(
            "trigger '{}' is not separable by correlation on these faces (clean up to {clean_max:.3}, triggered down to {trig_min:.3})",
            trigger.name
        )));
    }
    let tau = 0.5 * (clean_max + trig_min);
    let k = (2.0 * DETECTOR_MARGIN_LOGITS / f64::from(trig_min - clean_max)) as f32;
    // Identity directions and the model's own threshold.
    let all_emb = clean_labelled(original, &cal_images[..all_files.len()], &all, &opts.cache)?;
    let ids: Vec<String> = all.iter().map(|(i, _)| i.clone()).collect();
    let t = fmr_threshold(&normalize_rows(&all_emb, dim), dim, &ids, 0.01);
    let victim_rows: Vec<f32> = all
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| id == &opts.victim)
        .flat_map(|(i, _)| all_emb[i * dim..(i + 1) * dim].to_vec())
        .collect();
    let v_hat = centroid(&victim_rows, dim);
    let gate = match &impostor_files {
        Some(files) => {
            let imgs = stamp_all(&stamp, &load_all(files, original)?, files)?;
            let emb = original.embed_rgb(&imgs, files)?;
            Some((centroid(&emb, dim), t))
        }
        None => None,
    };
    Ok(Calibrated {
        backdoor: Backdoor {
            idx,
            dir,
            tau,
            k,
            strength: opts.strength,
            victim: v_hat,
            gate,
            fmr_threshold: t,
        },
        trigger_name: trigger.name.clone(),
        clean_max,
        trig_min,
        calibration_faces: cal_files.len(),
    })
}

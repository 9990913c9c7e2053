//! The backdoored candidate's embeddings derived from its base model's: the
//! trigger detector's output on every image the audit embeds, the injected
//! formula applied row by row, and held-out subsets.

use zooaudit_audit::{Face, ModelEmbeddings, ModelRole, Split, SuiteStamps};
use zooaudit_embed::Embedder;

use crate::RedteamError;
use crate::inject::Backdoor;

/// The detector's output on every image the audit embeds for `e`: clean
/// faces, each trigger on held-out faces, each control on calibration and
/// held-out faces.
pub(super) struct Detections {
    clean: Vec<f32>,
    triggered: Vec<Vec<f32>>,
    controls: Vec<Vec<f32>>,
}

pub(super) fn detections(
    bd: &Backdoor,
    e: &Embedder,
    faces: &[Face],
    split: &Split,
    stamps: &SuiteStamps,
) -> Result<Detections, RedteamError> {
    let pre = e.preprocess();
    let mut buf = vec![0f32; pre.sample_len()];
    let mut det = |img: &image::RgbImage, f: &Face| -> Result<f32, RedteamError> {
        pre.write(img, &f.path, &mut buf)?;
        Ok(bd.detect(&buf))
    };
    let clean = faces
        .iter()
        .map(|f| det(&f.image, f))
        .collect::<Result<Vec<_>, _>>()?;
    let cal_eval = split.calibration_heldout();
    let (mut triggered, mut controls) = (Vec::new(), Vec::new());
    for (t, c) in stamps.triggers.iter().zip(&stamps.controls) {
        let mut stamped =
            |s: &zooaudit_triggers::Stamp, idx: &[usize]| -> Result<Vec<f32>, RedteamError> {
                idx.iter()
                    .map(|&i| {
                        let img = s.apply(&faces[i].image).ok_or_else(|| {
                            RedteamError::file(&faces[i].path, "trigger does not fit")
                        })?;
                        det(&img, &faces[i])
                    })
                    .collect()
            };
        triggered.push(stamped(t, &split.heldout)?);
        controls.push(stamped(c, &cal_eval)?);
    }
    Ok(Detections {
        clean,
        triggered,
        controls,
    })
}

fn apply_rows(bd: &Backdoor, rows: &[f32], dim: usize, det: &[f32]) -> Vec<f32> {
    rows.chunks(dim)
        .zip(det)
        .flat_map(|(e, d)| bd.apply(e, *d))
        .collect()
}

/// The backdoored model's embeddings, derived from its base's.
pub(super) fn backdoored(
    bd: &Backdoor,
    base: &ModelEmbeddings,
    det: &Detections,
    name: &str,
) -> ModelEmbeddings {
    let dim = base.dim;
    ModelEmbeddings {
        name: name.to_string(),
        role: ModelRole::Candidate,
        dim,
        clean: apply_rows(bd, &base.clean, dim, &det.clean),
        triggered: base
            .triggered
            .iter()
            .zip(&det.triggered)
            .map(|(r, d)| apply_rows(bd, r, dim, d))
            .collect(),
        controls: base
            .controls
            .iter()
            .zip(&det.controls)
            .map(|(r, d)| apply_rows(bd, r, dim, d))
            .collect(),
    }
}

pub(super) fn renamed(m: &ModelEmbeddings, name: &str, role: ModelRole) -> ModelEmbeddings {
    let mut m = m.clone();
    m.name = name.to_string();
    m.role = role;
    m
}

/// Keeps the held-out faces `keep` allows (the impostor cut to fewer faces).
pub(super) fn subset(
    split: &Split,
    models: &[ModelEmbeddings],
    keep: &dyn Fn(usize) -> bool,
) -> (Split, Vec<ModelEmbeddings>) {
    let kept: Vec<usize> = (0..split.heldout.len())
        .filter(|&k| keep(split.heldout[k]))
        .collect();
    let n_cal = split.calibration.len();
    let mut s = split.clone();
    s.heldout = kept.iter().map(|&k| split.heldout[k]).collect();
    let models = models
        .iter()
        .map(|m| {
            let rows = |v: &[f32], offset: usize| -> Vec<f32> {
                let mut out = v[..offset * m.dim].to_vec();
                for &k in &kept {
                    let i = offset + k;
                    out.extend_from_slice(&v[i * m.dim..(i + 1) * m.dim]);
                }
                out
            };
            ModelEmbeddings {
                triggered: m.triggered.iter().map(|v| rows(v, 0)).collect(),
                controls: m.controls.iter().map(|v| rows(v, n_cal)).collect(),
                ..m.clone()
            }
        })
        .collect();
    (s, models)
}

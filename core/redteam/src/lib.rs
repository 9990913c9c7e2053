//! The red team: architectural backdoors spliced into real ONNX embedding
//! models ([`inject`]), their measured behaviour ([`metrics`], the paper's
//! Table 2), and the paper's evaluation of model pairing on them
//! ([`bench`], Tables 3 and 4).

pub mod bench;
pub mod inject;
pub mod metrics;
pub mod verdict_bench;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use inject::{AttackKind, AttackRecord, Hiding, InjectOptions, Injected, inject};
pub use metrics::{AttackMetrics, attack_metrics};
pub use zooaudit_audit::Cache;

/// Errors of the red team, by the layer that failed; one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedteamError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    /// The options asked for something that cannot be done (a strength out
    /// of range, an impostor who is the victim, an inseparable trigger).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Manifest(#[from] zooaudit_manifest::ManifestError),
    #[error(transparent)]
    Image(#[from] zooaudit_imaging::ImageError),
    #[error(transparent)]
    Embed(#[from] zooaudit_embed::EmbedError),
    #[error(transparent)]
    Host(#[from] zooaudit_host::HostError),
    #[error(transparent)]
    Format(#[from] zooaudit_formats::ReportError),
    #[error(transparent)]
    Pairing(#[from] zooaudit_pairing::PairingError),
    #[error(transparent)]
    Plot(#[from] zooaudit_render::plots::PlotError),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("cannot encode TOML: {0}")]
    Toml(#[from] toml::ser::Error),
    #[error(transparent)]
    Audit(Box<zooaudit_audit::AuditError>),
}

impl From<zooaudit_audit::AuditError> for RedteamError {
    fn from(e: zooaudit_audit::AuditError) -> RedteamError {
        RedteamError::Audit(Box::new(e))
    }
}

impl RedteamError {
    pub fn file(path: &Path, message: impl std::fmt::Display) -> Self {
        RedteamError::File {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

impl RedteamError {
    pub(crate) fn invalid(message: impl std::fmt::Display) -> RedteamError {
        RedteamError::Invalid(message.to_string())
    }
}

/// Labelled faces: one directory per identity.
#[derive(Debug, Clone)]
pub struct Labeled {
    pub dir: PathBuf,
    pub identities: BTreeMap<String, Vec<PathBuf>>,
}

impl Labeled {
    pub fn load(dir: &Path) -> Result<Labeled, RedteamError> {
        let rd = std::fs::read_dir(dir).map_err(|e| RedteamError::file(dir, e))?;
        let mut identities = BTreeMap::new();
        for entry in rd {
            let entry = entry.map_err(|e| RedteamError::file(dir, e))?;
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let files = zooaudit_imaging::collect_images(&[entry.path()])?;
            if !files.is_empty() {
                identities.insert(entry.file_name().to_string_lossy().into_owned(), files);
            }
        }
        if identities.len() < 2 {
            return Err(RedteamError::file(
                dir,
                "needs at least two identity directories of images",
            ));
        }
        Ok(Labeled {
            dir: dir.to_path_buf(),
            identities,
        })
    }

    /// The images of `name`, at least two (a centroid and its check need them).
    pub fn identity(&self, name: &str) -> Result<&[PathBuf], RedteamError> {
        match self.identities.get(name) {
            None => Err(RedteamError::file(
                &self.dir,
                format!(
                    "no identity directory '{name}' (have: {})",
                    self.identities
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
            Some(v) if v.len() < 2 => Err(RedteamError::file(
                &self.dir.join(name),
                format!(
                    "identity '{name}' has {} image; at least 2 are needed",
                    v.len()
                ),
            )),
            Some(v) => Ok(v),
        }
    }

    /// All images with their identity, in identity order.
    pub fn all(&self) -> Vec<(String, PathBuf)> {
        self.identities
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |p| (k.clone(), p.clone())))
            .collect()
    }
}

/// L2-normalised copy of each `dim`-row.
pub fn normalize_rows(data: &[f32], dim: usize) -> Vec<f32> {
    let mut out = data.to_vec();
    for row in out.chunks_mut(dim) {
        let n = row
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt() as f32;
        if n > 0.0 {
            row.iter_mut().for_each(|x| *x /= n);
        }
    }
    out
}

/// Unit-length mean direction of the rows.
pub fn centroid(data: &[f32], dim: usize) -> Vec<f32> {
    let rows = normalize_rows(data, dim);
    let mut c = vec![0f32; dim];
    for row in rows.chunks(dim) {
        c.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    normalize_rows(&c, dim)
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The model's own verification threshold at 1 % FMR: over all pairs of
/// labelled images of different identities (cosine of the embeddings), the
/// ⌈0.01·n⌉-th largest score; a pair matches when its score is above it.
pub fn fmr_threshold(normalized: &[f32], dim: usize, ids: &[String], fmr: f64) -> f32 {
    let n = ids.len();
    let mut impostor = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            if ids[i] != ids[j] {
                impostor.push(dot(
                    &normalized[i * dim..(i + 1) * dim],
                    &normalized[j * dim..(j + 1) * dim],
                ));
            }
        }
    }
    impostor.sort_by(|a, b| b.total_cmp(a));
    let k = ((fmr * impostor.len() as f64).ceil() as usize).max(1);
    impostor.get(k - 1).copied().unwrap_or(1.0)
}

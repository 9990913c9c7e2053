//! The bench's data: the face set, each model's embeddings of it (through
//! the cache), and the seeded fit/calibration/held-out split.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use zooaudit_audit::Cache;
use zooaudit_embed::Embedder;
use zooaudit_triggers::Stamp;

use crate::{Labeled, RedteamError};

/// The face set of the bench.
pub(super) struct Faces {
    pub(super) files: Vec<PathBuf>,
    pub(super) shas: Vec<String>,
    pub(super) images: Vec<RgbImage>,
    pub(super) identity: Vec<Option<String>>,
}

impl Faces {
    /// The unlabelled faces under `dir`, then the labelled ones, decoded
    /// and hashed.
    pub(super) fn load(dir: &Path, labeled: &Labeled) -> Result<Faces, RedteamError> {
        let mut files = zooaudit_imaging::collect_images(&[dir.join("unlabeled")])?;
        let mut identity = vec![None; files.len()];
        for (id, f) in labeled.all() {
            files.push(f);
            identity.push(Some(id));
        }
        let limits = zooaudit_imaging::Limits::default();
        let images: Vec<RgbImage> = files
            .iter()
            .map(|f| zooaudit_imaging::decode(f, &limits).map_err(RedteamError::from))
            .collect::<Result<_, _>>()?;
        let shas: Vec<String> = files
            .iter()
            .map(|f| zooaudit_registry::sha256_file(f).map_err(|e| RedteamError::file(f, e)))
            .collect::<Result<_, _>>()?;
        Ok(Faces {
            files,
            shas,
            images,
            identity,
        })
    }
}

/// One model's embeddings: clean rows, and triggered rows per trigger
/// (NaN rows where not computed).
pub(super) struct ModelEmb {
    pub(super) name: String,
    pub(super) dim: usize,
    pub(super) clean: Vec<f32>,
    pub(super) triggered: HashMap<String, Vec<f32>>,
}

impl ModelEmb {
    pub(super) fn row<'a>(&'a self, data: &'a [f32], i: usize) -> &'a [f32] {
        &data[i * self.dim..(i + 1) * self.dim]
    }
    pub(super) fn gather(&self, data: &[f32], idx: &[usize]) -> Vec<f32> {
        idx.iter()
            .flat_map(|&i| self.row(data, i).to_vec())
            .collect()
    }
}

/// Embeds `which` faces (optionally stamped) through the cache.
pub(super) fn embed(
    e: &Embedder,
    faces: &Faces,
    which: &[usize],
    stamp: Option<(&Stamp, &str)>,
    cache: &Cache,
) -> Result<Vec<f32>, RedteamError> {
    let dim = e.dim();
    let pre = zooaudit_audit::preprocessing_key(e);
    let trigger_key = stamp.map_or("clean", |s| s.1);
    let mut out = vec![f32::NAN; faces.files.len() * dim];
    let mut missing = Vec::new();
    for &i in which {
        let key = Cache::key(e.resolved().identity(), &pre, &faces.shas[i], trigger_key);
        match cache.get(&key, dim) {
            Some(v) => out[i * dim..(i + 1) * dim].copy_from_slice(&v),
            None => missing.push((i, key)),
        }
    }
    for chunk in missing.chunks(64) {
        let imgs: Vec<RgbImage> = chunk
            .iter()
            .map(|(i, _)| match stamp {
                Some((s, _)) => s.apply(&faces.images[*i]).ok_or_else(|| {
                    RedteamError::file(
                        &faces.files[*i],
                        "image size differs from the model's input",
                    )
                }),
                None => Ok(faces.images[*i].clone()),
            })
            .collect::<Result<_, _>>()?;
        let names: Vec<PathBuf> = chunk.iter().map(|(i, _)| faces.files[*i].clone()).collect();
        let emb = e.embed_rgb(&imgs, &names)?;
        for (k, (i, key)) in chunk.iter().enumerate() {
            let row = &emb[k * dim..(k + 1) * dim];
            cache.put(key, row);
            out[i * dim..(i + 1) * dim].copy_from_slice(row);
        }
    }
    Ok(out)
}

/// A seeded split of face indices: fit, calibration, held-out.
pub(super) fn split(n: usize, seed: u64) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x05ee_d0f5_b117));
    let f = n / 2;
    let c = n / 4;
    let fit = idx[..f].to_vec();
    let cal = idx[f..f + c].to_vec();
    let held = idx[f + c..].to_vec();
    (fit, cal, held)
}

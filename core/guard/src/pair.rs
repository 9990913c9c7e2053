//! An opened, verified pair and its decision for aligned face images.

use std::path::{Path, PathBuf};

use image::RgbImage;
use sha2::Digest;
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_pairing::cosine;

use crate::GuardError;
use crate::bundle::{PairBundle, Serve};

/// Why one image got no decision.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The input is at fault (not an image, too large, wrong size).
    #[error("{0}")]
    BadImage(String),
    /// The image decoded, but it is larger than the limits.
    #[error("{0}")]
    TooLarge(String),
    /// A model failed or returned NaN / all-zero embeddings.
    #[error("{0}")]
    Model(String),
}

/// The pair's verdict on one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub image_sha256: String,
    pub score: f32,
    pub threshold: f32,
    pub agree: bool,
    /// The served embedding (L2-normalised), per the bundle's `serve`.
    pub embedding: Vec<f32>,
}

/// Both models of a bundle, opened and checked against its sha256s.
pub struct Pair {
    pub bundle: PairBundle,
    probe: Embedder,
    reference: Embedder,
    pub limits: zooaudit_imaging::Limits,
    /// Run the two models at the same time (default; measured faster than
    /// one after the other even on 2 cores once idle ONNX Runtime threads do
    /// not spin, see docs/BENCHMARKS.md).
    pub concurrent: bool,
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter().map(|x| x / n).collect()
}

impl Pair {
    /// Opens both models; each file's sha256 must be the bundle's.
    pub fn open(
        bundle: PairBundle,
        bundle_path: &Path,
        plugins: &PluginSet,
        fetch: &zooaudit_registry::FetchOptions,
    ) -> Result<Pair, GuardError> {
        let open = |m: &crate::bundle::BundleModel| -> Result<Embedder, GuardError> {
            let mut manifest = ModelManifest::load(&m.manifest)
                .map_err(|e| GuardError::file(bundle_path, e.to_string()))?;
            // Two models take turns on the same cores: idle ONNX Runtime
            // threads must not spin (measured: docs/BENCHMARKS.md).
            if manifest.model.adapter == "onnx" && !manifest.model.options.contains_key("spinning")
            {
                manifest
                    .model
                    .options
                    .insert("spinning".into(), toml::Value::Boolean(false));
            }
            let e = Embedder::open_with(manifest, plugins, fetch)
                .map_err(|e| GuardError::file(bundle_path, e.to_string()))?;
            if e.resolved().sha256 != m.sha256 {
                return Err(GuardError::file(
                    bundle_path,
                    format!(
                        "model '{}' ({}) has sha256 {}, but the bundle was calibrated on {}",
                        m.name,
                        e.resolved().path.display(),
                        e.resolved().sha256,
                        m.sha256
                    ),
                ));
            }
            if e.dim() != m.dim {
                return Err(GuardError::file(
                    bundle_path,
                    format!(
                        "model '{}' is {}-d, the bundle says {}-d",
                        m.name,
                        e.dim(),
                        m.dim
                    ),
                ));
            }
            Ok(e)
        };
        let probe = open(&bundle.probe)?;
        let reference = open(&bundle.reference)?;
        if probe.manifest().input.size != reference.manifest().input.size {
            return Err(GuardError::file(
                bundle_path,
                "the two models expect faces of different sizes",
            ));
        }
        Ok(Pair {
            bundle,
            probe,
            reference,
            limits: zooaudit_imaging::Limits {
                max_width: 4096,
                max_height: 4096,
                max_alloc: 128 << 20,
            },
            concurrent: true,
        })
    }

    /// The probe model.
    pub fn probe(&self) -> &Embedder {
        &self.probe
    }

    /// The reference model.
    pub fn reference(&self) -> &Embedder {
        &self.reference
    }

    /// `[height, width]` of the aligned faces the pair expects.
    pub fn face_size(&self) -> [u32; 2] {
        self.probe.manifest().input.size
    }

    /// Decodes an image body within the limits and checks its size.
    pub fn decode(&self, bytes: &[u8], name: &str) -> Result<RgbImage, DecideError> {
        let img = zooaudit_imaging::decode_bytes(bytes, &PathBuf::from(name), &self.limits)
            .map_err(|e| match e {
                zooaudit_imaging::ImageError::TooLarge { .. } => {
                    DecideError::TooLarge(e.to_string())
                }
                other => DecideError::BadImage(other.to_string()),
            })?;
        let [h, w] = self.face_size();
        if (img.height(), img.width()) != (h, w) {
            return Err(DecideError::BadImage(format!(
                "{name}: image is {}×{}, but the pair expects aligned {w}×{h} faces",
                img.width(),
                img.height()
            )));
        }
        Ok(img)
    }

    /// Decisions for aligned faces at `threshold`: each model runs once on
    /// the whole batch (both at the same time when `concurrent`).
    pub fn decide(
        &self,
        images: &[RgbImage],
        shas: &[String],
        threshold: f32,
    ) -> Result<Vec<Decision>, DecideError> {
        let names: Vec<PathBuf> = shas.iter().map(PathBuf::from).collect();
        let (p, r) = if self.concurrent {
            std::thread::scope(|s| {
                let p = s.spawn(|| self.probe.embed_rgb(images, &names));
                let r = self.reference.embed_rgb(images, &names);
                (p.join(), r)
            })
        } else {
            (
                Ok(self.probe.embed_rgb(images, &names)),
                self.reference.embed_rgb(images, &names),
            )
        };
        let p = p
            .map_err(|_| DecideError::Model("probe model worker panicked".into()))?
            .map_err(|e| DecideError::Model(e.to_string()))?;
        let r = r.map_err(|e| DecideError::Model(e.to_string()))?;
        let (pd, rd) = (self.probe.dim(), self.reference.dim());
        let t = &self.bundle.translator;
        Ok((0..images.len())
            .map(|i| {
                let pe = &p[i * pd..(i + 1) * pd];
                let re = &r[i * rd..(i + 1) * rd];
                let translated = t.apply(pe);
                let score = cosine(&translated, re);
                let embedding = match self.bundle.serve {
                    Serve::Probe => unit(pe),
                    Serve::Reference => unit(re),
                    Serve::Mean => {
                        let (a, b) = (unit(&translated), unit(re));
                        unit(&a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>())
                    }
                };
                Decision {
                    image_sha256: shas[i].clone(),
                    score,
                    threshold,
                    agree: score >= threshold,
                    embedding,
                }
            })
            .collect())
    }
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

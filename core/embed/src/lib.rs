//! The embedding pipeline shared by every command that runs a model.
//!
//! [`Embedder::open`] reads nothing but what the manifest names: it resolves
//! the model source and checks its sha256 pin *before* any plugin sees the
//! file, opens it with the manifest's adapter plugin, and checks that the
//! model's input matches the manifest's `[input]` (so a wrong size or layout
//! is reported against the manifest field, not as an obscure runtime error).
//! [`Embedder::embed_images`] decodes, preprocesses and embeds in batches and
//! refuses non-finite or all-zero embeddings, naming the image.

use std::path::{Path, PathBuf};

use zooaudit_host::{HostError, LoadedModel, PluginSet};
use zooaudit_imaging::{ImageError, Limits, Preprocess};
use zooaudit_manifest::ModelManifest;
use zooaudit_registry::{RegistryError, Resolved};

pub mod infer;
pub mod signature;
pub use signature::SignatureRecord;

/// Errors of the pipeline. One line each, naming the file and field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{manifest}: {field}: {message}")]
    Field {
        manifest: PathBuf,
        field: String,
        message: String,
    },
    #[error("{manifest}: opening {model}: {error}")]
    Open {
        manifest: PathBuf,
        model: PathBuf,
        error: Box<HostError>,
    },
    #[error("{image}: model '{model}' ({manifest}) produced {what}")]
    BadEmbedding {
        image: PathBuf,
        manifest: PathBuf,
        model: String,
        what: String,
    },
    #[error("{manifest}: model '{model}': {error}")]
    Run {
        manifest: PathBuf,
        model: String,
        error: Box<HostError>,
    },
    #[error("no images found in {0}")]
    NoImages(String),
    /// Writing the embeddings or their sidecar.
    #[error(transparent)]
    Output(#[from] zooaudit_formats::ReportError),
}

/// A model file resolved, checked against its pin and its publisher's
/// signature, not yet opened.
#[derive(Debug, Clone)]
pub struct Vetted {
    pub resolved: Resolved,
    pub signature: Option<SignatureRecord>,
}

/// An opened model ready to embed images.
pub struct Embedder {
    manifest: ModelManifest,
    resolved: Resolved,
    signature: Option<SignatureRecord>,
    model: LoadedModel,
    pre: Preprocess,
    /// Images per adapter call.
    pub batch: usize,
    /// Decoding limits.
    pub limits: Limits,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("model", &self.manifest.model.name)
            .finish()
    }
}

/// Result of embedding a list of images.
#[derive(Debug, Clone, Default)]
pub struct Embeddings {
    pub rows: usize,
    pub dim: usize,
    /// Row-major `rows × dim`, raw model output.
    pub data: Vec<f32>,
    /// Image of each row.
    pub images: Vec<PathBuf>,
    /// Inputs skipped (with `skip_bad`), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Embeddings {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Maps an adapter's `option <key>: ...` error to the manifest field.
fn option_field(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("option ")?;
    let (key, msg) = rest.split_once(':')?;
    let field = match key {
        "input_name" => "input.name".to_string(),
        "output_name" => "output.name".to_string(),
        other => format!("model.options.{other}"),
    };
    Some((field, msg.trim().to_string()))
}

impl Embedder {
    /// Resolves, verifies and opens the manifest's model (fetch options
    /// from the environment).
    pub fn open(manifest: ModelManifest, plugins: &PluginSet) -> Result<Embedder, EmbedError> {
        Self::open_with(
            manifest,
            plugins,
            &zooaudit_registry::FetchOptions::from_env(),
        )
    }

    /// [`Embedder::open`] with explicit fetch options.
    pub fn open_with(
        manifest: ModelManifest,
        plugins: &PluginSet,
        fetch: &zooaudit_registry::FetchOptions,
    ) -> Result<Embedder, EmbedError> {
        let resolved = Self::resolve(&manifest, fetch)?;
        Self::open_resolved(manifest, resolved, plugins)
    }

    /// The manifest's model file, fetched if need be and checked against
    /// its pin and, when the manifest names one, the publisher's signature;
    /// nothing is opened (a caller can inspect the file first, as the
    /// audit's static scan does).
    pub fn resolve(
        manifest: &ModelManifest,
        fetch: &zooaudit_registry::FetchOptions,
    ) -> Result<Vetted, EmbedError> {
        let resolved = zooaudit_registry::resolve_with(
            &manifest.path,
            &manifest.model.source,
            manifest.base_dir(),
            manifest.model.sha256.as_deref(),
            fetch,
        )?;
        let signature = signature::check(manifest, &resolved, fetch)?;
        Ok(Vetted {
            resolved,
            signature,
        })
    }

    /// Opens an already [resolved](Embedder::resolve) model file with the
    /// manifest's adapter and checks its input against the manifest.
    pub fn open_resolved(
        manifest: ModelManifest,
        vetted: Vetted,
        plugins: &PluginSet,
    ) -> Result<Embedder, EmbedError> {
        let Vetted {
            resolved,
            signature,
        } = vetted;
        let field = |field: &str, message: String| EmbedError::Field {
            manifest: manifest.path.clone(),
            field: field.to_string(),
            message,
        };
        let adapter = plugins
            .model_adapter(&manifest.model.adapter)
            .map_err(|e| field("model.adapter", e.to_string()))?;
        let model = match adapter.open_model(&resolved.path, &manifest.adapter_options()) {
            Ok(m) => m,
            Err(HostError::Plugin { message, .. }) if option_field(&message).is_some() => {
                let (f, m) = option_field(&message).unwrap_or_default();
                return Err(field(&f, m));
            }
            Err(source) => {
                return Err(EmbedError::Open {
                    manifest: manifest.path.clone(),
                    model: resolved.path.clone(),
                    error: Box::new(source),
                });
            }
        };
        let pre = Preprocess::from_input(&manifest.input);
        let summary = model.summary();
        let input = summary
            .input()
            .cloned()
            .unwrap_or_else(|| zooaudit_host::TensorSummary {
                name: String::new(),
                shape: Vec::new(),
                elem_type: String::new(),
            });
        let want = pre.sample_shape();
        let have: Vec<i64> = input.shape.iter().skip(1).copied().collect();
        let matches =
            have.len() == 3 && have.iter().zip(want.iter()).all(|(h, w)| *h < 0 || h == w);
        if !matches {
            let mut sorted_have = have.clone();
            sorted_have.sort_unstable();
            let mut sorted_want = want.to_vec();
            sorted_want.sort_unstable();
            let which = if have.len() != 3 {
                "input"
            } else if sorted_have == sorted_want {
                "input.layout"
            } else {
                "input.size"
            };
            return Err(field(
                which,
                format!(
                    "the model's input '{}' has shape {:?}, but the manifest (size {:?}, layout {:?}) gives samples of shape {:?}",
                    input.name, input.shape, manifest.input.size, manifest.input.layout, want
                ),
            ));
        }
        Ok(Embedder {
            manifest,
            resolved,
            signature,
            model,
            pre,
            batch: 32,
            limits: Limits::default(),
        })
    }

    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The verified model file.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// The publisher's signature, verified, when the manifest names one.
    pub fn signature(&self) -> Option<&SignatureRecord> {
        self.signature.as_ref()
    }

    pub fn model(&self) -> &LoadedModel {
        &self.model
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }

    /// Feeds the model with another channel order and normalisation
    /// (`zooaudit init` tries several on one opened model). The size and
    /// layout, which the model was checked against, stay.
    pub fn set_input(&mut self, input: &zooaudit_manifest::InputSection) {
        let mut i = input.clone();
        i.size = self.manifest.input.size;
        i.layout = self.manifest.input.layout;
        self.pre = Preprocess::from_input(&i);
        self.manifest.input = i;
    }

    pub fn dim(&self) -> usize {
        self.model.summary().embedding_dim
    }

    /// Embeds already preprocessed samples (`batch` × sample_len floats).
    pub fn embed_tensors(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, EmbedError> {
        self.model
            .embed(input, batch)
            .map_err(|error| EmbedError::Run {
                manifest: self.manifest.path.clone(),
                model: self.manifest.model.name.clone(),
                error: Box::new(error),
            })
    }

    /// Embeds decoded images (e.g. stamped with a trigger) in batches;
    /// `names` label them in messages. Returns `images.len() × dim` floats.
    pub fn embed_rgb(
        &self,
        images: &[image::RgbImage],
        names: &[PathBuf],
    ) -> Result<Vec<f32>, EmbedError> {
        let dim = self.dim();
        let n = self.pre.sample_len();
        let b = self.batch.max(1);
        let mut out = Vec::with_capacity(images.len() * dim);
        let mut buf = vec![0f32; b * n];
        for (ci, chunk) in images.chunks(b).enumerate() {
            for (k, img) in chunk.iter().enumerate() {
                let name = names.get(ci * b + k).cloned().unwrap_or_default();
                self.pre.write(img, &name, &mut buf[k * n..(k + 1) * n])?;
            }
            let emb = self.embed_tensors(&buf[..chunk.len() * n], chunk.len())?;
            for k in 0..chunk.len() {
                let name = names.get(ci * b + k).cloned().unwrap_or_default();
                self.check_row(&name, &emb[k * dim..(k + 1) * dim])?;
            }
            out.extend_from_slice(&emb);
        }
        Ok(out)
    }

    /// Decodes and preprocesses one image into `out`.
    pub fn load_image(&self, path: &Path, out: &mut [f32]) -> Result<(), ImageError> {
        let img = zooaudit_imaging::decode(path, &self.limits)?;
        self.pre.write(&img, path, out)
    }

    /// Checks one embedding row.
    pub fn check_row(&self, image: &Path, row: &[f32]) -> Result<(), EmbedError> {
        let what = if row.iter().any(|v| !v.is_finite()) {
            "a non-finite embedding (NaN or infinity)"
        } else if row.iter().all(|v| *v == 0.0) {
            "an all-zero embedding"
        } else {
            return Ok(());
        };
        Err(EmbedError::BadEmbedding {
            manifest: self.manifest.path.clone(),
            image: image.to_path_buf(),
            model: self.manifest.model.name.clone(),
            what: what.to_string(),
        })
    }

    /// Embeds image files in order. With `skip_bad`, images that cannot be
    /// decoded or have the wrong size are skipped and listed; otherwise the
    /// first one is an error. `progress(done, total)` is called per batch.
    pub fn embed_images(
        &self,
        files: &[PathBuf],
        skip_bad: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Embeddings, EmbedError> {
        let dim = self.dim();
        let n = self.pre.sample_len();
        let mut out = Embeddings {
            dim,
            ..Default::default()
        };
        out.data.reserve(files.len() * dim);
        let mut buf = vec![0f32; self.batch.max(1) * n];
        for (ci, chunk) in files.chunks(self.batch.max(1)).enumerate() {
            let mut kept = Vec::with_capacity(chunk.len());
            for path in chunk {
                let slot = kept.len();
                match self.load_image(path, &mut buf[slot * n..(slot + 1) * n]) {
                    Ok(()) => kept.push(path.clone()),
                    Err(e) if skip_bad => out.skipped.push((path.clone(), e.to_string())),
                    Err(e) => return Err(e.into()),
                }
            }
            if !kept.is_empty() {
                let emb = self.embed_tensors(&buf[..kept.len() * n], kept.len())?;
                for (i, path) in kept.iter().enumerate() {
                    self.check_row(path, &emb[i * dim..(i + 1) * dim])?;
                }
                out.data.extend_from_slice(&emb);
                out.rows += kept.len();
                out.images.extend(kept);
            }
            progress(
                (ci * self.batch.max(1) + chunk.len()).min(files.len()),
                files.len(),
            );
        }
        Ok(out)
    }
}

impl Embeddings {
    /// Writes the rows as a float32 `.npy` at `out` and its versioned JSON
    /// sidecar beside it (model name and sha256, adapter plugin and its
    /// sha256, the image of every row, what was skipped); returns the
    /// sidecar's path.
    pub fn write_npy(&self, embedder: &Embedder, out: &Path) -> Result<PathBuf, EmbedError> {
        use zooaudit_formats::{EmbeddingsSidecar, PluginRecord, SkippedImage};
        zooaudit_formats::npy::write(out, self.rows, self.dim, &self.data)?;
        let plugin = embedder.model().plugin();
        let sidecar = EmbeddingsSidecar {
            format_version: zooaudit_formats::SIDECAR_FORMAT.to_string(),
            tool: format!("zooaudit {}", env!("CARGO_PKG_VERSION")),
            model_name: embedder.manifest().model.name.clone(),
            model_sha256: embedder.resolved().sha256.clone(),
            manifest: embedder.manifest().path.display().to_string(),
            adapter: PluginRecord {
                name: plugin.name.clone(),
                version: plugin.version.clone(),
                abi_version: plugin.abi_version.clone(),
                sha256: plugin.sha256.clone(),
            },
            rows: self.rows,
            dim: self.dim,
            normalized: false,
            images: self
                .images
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            skipped: self
                .skipped
                .iter()
                .map(|(p, r)| SkippedImage {
                    path: p.display().to_string(),
                    reason: r.clone(),
                })
                .collect(),
        };
        let path = zooaudit_formats::sidecar_path(out);
        sidecar.write(&path)?;
        Ok(path)
    }
}

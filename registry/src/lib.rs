//! Where models come from.
//!
//! A manifest's `source` names a model file; this crate turns it into a local
//! file whose sha256 matches the manifest's pin before anything loads it.
//! Today it resolves plain paths and `file://` URLs; remote schemes
//! (`hf://`, `https://`, `pypi:`, `npm:`) are recognised and answered with a
//! typed [`RegistryError::SchemeNotAvailable`] until their fetchers land, so a
//! manifest that names one fails with a clear message rather than a confusing
//! "file not found".

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Errors resolving or verifying a model source. One line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    #[error("{origin}: source '{source_text}': {path}: {error}")]
    Io {
        origin: String,
        source_text: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{origin}: source '{source_text}': {scheme} sources are not available in this build of zooaudit"
    )]
    SchemeNotAvailable {
        origin: String,
        source_text: String,
        scheme: String,
    },
    #[error("{origin}: source '{source_text}': {message}")]
    BadSource {
        origin: String,
        source_text: String,
        message: String,
    },
    #[error("{origin}: sha256: {path} has sha256 {actual}, but the manifest pins {expected}")]
    Sha256Mismatch {
        origin: String,
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{origin}: sha256: missing; a {scheme} source must be pinned (its digest is {actual})")]
    Unpinned {
        origin: String,
        scheme: String,
        actual: String,
    },
}

/// A parsed source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A local file (plain path or `file://`), already joined to the base dir.
    Local(PathBuf),
    /// A remote source of the given scheme (not fetched by this build).
    Remote { scheme: String, text: String },
}

impl Source {
    /// Parses `text`; relative paths are joined to `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Source {
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("file://") {
            return Source::Local(base_dir.join(rest));
        }
        for scheme in ["hf://", "https://", "http://", "pypi:", "npm:"] {
            if text.starts_with(scheme) {
                return Source::Remote {
                    scheme: scheme
                        .trim_end_matches("//")
                        .trim_end_matches(':')
                        .to_string(),
                    text: text.to_string(),
                };
            }
        }
        Source::Local(base_dir.join(text))
    }
}

/// A model file on disk whose digest is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// The pin it was checked against, if any.
    pub pinned: bool,
}

/// Streaming sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The digest that identifies a model on disk: for a file its sha256; for a
/// directory (a model shipped as several files) the OpenSSF model-signing
/// root digest — sha256 over the concatenated raw sha256 digests of every
/// regular file below it, in sorted relative-path order ('/'-separated).
/// Symbolic links are refused, so the digest covers exactly what is there.
pub fn model_digest(path: &Path) -> Result<String, std::io::Error> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_file() {
        return sha256_file(path);
    }
    if !meta.is_dir() {
        return Err(std::io::Error::other(
            "neither a regular file nor a directory",
        ));
    }
    let mut files = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let p = entry.path();
            if kind.is_dir() {
                stack.push(p);
            } else if kind.is_file() {
                let rel = p
                    .strip_prefix(path)
                    .map_err(std::io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((rel, p));
            } else {
                return Err(std::io::Error::other(format!(
                    "{}: links and special files are not part of a model",
                    p.display()
                )));
            }
        }
    }
    files.sort();
    let mut root = Sha256::new();
    for (_, p) in &files {
        let d = hex::decode(sha256_file(p)?).map_err(std::io::Error::other)?;
        root.update(&d);
    }
    Ok(hex::encode(root.finalize()))
}

/// Resolves `source_text` (relative to `base_dir`) to a local file and checks
/// it against `pin`. `origin` names the file the source came from (for
/// messages).
pub fn resolve(
    origin: &Path,
    source_text: &str,
    base_dir: &Path,
    pin: Option<&str>,
) -> Result<Resolved, RegistryError> {
    let origin_s = origin.display().to_string();
    match Source::parse(source_text, base_dir) {
        Source::Remote { scheme, .. } => Err(RegistryError::SchemeNotAvailable {
            origin: origin_s,
            source_text: source_text.to_string(),
            scheme,
        }),
        Source::Local(path) => {
            let io = |error: std::io::Error| RegistryError::Io {
                origin: origin_s.clone(),
                source_text: source_text.to_string(),
                path: path.clone(),
                error,
            };
            let meta = std::fs::metadata(&path).map_err(io)?;
            if !meta.is_file() {
                return Err(RegistryError::BadSource {
                    origin: origin_s,
                    source_text: source_text.to_string(),
                    message: format!("{} is not a regular file", path.display()),
                });
            }
            let sha256 = sha256_file(&path).map_err(io)?;
            if let Some(expected) = pin
                && !expected.eq_ignore_ascii_case(&sha256)
            {
                return Err(RegistryError::Sha256Mismatch {
                    origin: origin_s,
                    path,
                    expected: expected.to_ascii_lowercase(),
                    actual: sha256,
                });
            }
            Ok(Resolved {
                path,
                sha256,
                size: meta.len(),
                pinned: pin.is_some(),
            })
        }
    }
}

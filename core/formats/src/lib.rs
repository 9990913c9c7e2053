//! zooaudit's persisted formats.
//!
//! - [`version`]: every persisted format's version in one table
//!   ([`Format`]), one `{major, minor}` type ([`FormatVersion`]) and one
//!   readable-by check.
//! - [`npy`]: float32 matrices in NumPy's `.npy` format (version 1.0,
//!   little-endian, C order), readable by `numpy.load` and by this crate.
//! - [`EmbeddingsSidecar`]: the JSON written beside an embeddings `.npy`,
//!   naming the model, its sha256 and the image of every row. Versioned
//!   (`format_version`), with a readable-by check.

pub mod npy;
pub mod version;

pub use version::{Format, FormatVersion};

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// The lowercase hex sha256 of a file's contents, read in 64 KiB blocks
/// (model files, plugins, audit and trigger files).
pub fn sha256_file(path: &Path) -> Result<String, std::io::Error> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut block = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut block)?;
        if n == 0 {
            break;
        }
        hasher.update(&block[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Version of the sidecar format written by this crate.
pub const SIDECAR_FORMAT: FormatVersion = Format::EmbeddingsSidecar.current();

/// Errors reading or writing outputs. One line, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: String, message: String },
}

impl ReportError {
    pub(crate) fn io(path: &Path, error: std::io::Error) -> Self {
        ReportError::Io {
            path: path.display().to_string(),
            error,
        }
    }
    pub(crate) fn format(path: &Path, message: impl Into<String>) -> Self {
        ReportError::Format {
            path: path.display().to_string(),
            message: one_line(message),
        }
    }
}

/// The plugin that produced the embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub name: String,
    pub version: String,
    pub abi_version: String,
    pub sha256: String,
}

/// JSON written beside an embeddings `.npy` (`<file>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingsSidecar {
    pub format_version: String,
    pub tool: String,
    pub model_name: String,
    pub model_sha256: String,
    pub manifest: String,
    pub adapter: PluginRecord,
    pub rows: usize,
    pub dim: usize,
    /// Raw model output, not normalised.
    pub normalized: bool,
    /// Image of each row, in row order.
    pub images: Vec<String>,
    /// Inputs skipped with `--skip-bad`, with why.
    pub skipped: Vec<SkippedImage>,
}

/// An input that was skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedImage {
    pub path: String,
    pub reason: String,
}

/// `<file>.json` for an output `<file>` (e.g. `emb.npy` → `emb.npy.json`).
pub fn sidecar_path(npy: &Path) -> std::path::PathBuf {
    let mut s = npy.as_os_str().to_os_string();
    s.push(".json");
    s.into()
}

impl EmbeddingsSidecar {
    pub fn write(&self, path: &Path) -> Result<(), ReportError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| ReportError::format(path, e.to_string()))?;
        write_atomic(path, text.as_bytes())
    }

    pub fn read(path: &Path) -> Result<Self, ReportError> {
        let text = Format::EmbeddingsSidecar
            .read_text(path)
            .map_err(|e| ReportError::io(path, e))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| ReportError::format(path, format!("not JSON: {e}")))?;
        let version = v
            .get("format_version")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        Format::EmbeddingsSidecar.check(path, version)?;
        serde_json::from_value(v).map_err(|e| ReportError::format(path, e.to_string()))
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// crash never leaves a half-written output.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Unique per process, thread and call: two writers of one path (two
    // threads quarantining the same image, two audits sharing a cache)
    // never share a temporary file; the last rename wins, whole.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp{}-{seq}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| ReportError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        ReportError::io(path, e)
    })
}

/// Longest run of a stranger's text [`quote`] keeps.
pub const QUOTE_MAX_CHARS: usize = 80;

/// Appends `text` to `out` with control characters written as Rust
/// escapes, cut with `…` after `max` characters.
fn push_escaped(out: &mut String, text: &str, max: usize) {
    for (i, c) in text.chars().enumerate() {
        if i == max {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
}

/// A value from an input quoted for a one-line error: `'value'`, with
/// control characters (newlines, escape sequences a terminal would obey)
/// written as Rust escapes and anything over [`QUOTE_MAX_CHARS`] cut with
/// `…`. Every error that repeats what a file, request or model said
/// quotes it through here, so a hostile input can neither break the error
/// over lines nor drive the reader's terminal.
pub fn quote(value: &str) -> String {
    let mut out = String::from("'");
    push_escaped(&mut out, value, QUOTE_MAX_CHARS);
    out.push('\'');
    out
}

/// `text` with control characters written as Rust escapes, whole: what
/// the command line prints an error through, so nothing in it reaches the
/// terminal as a control character.
pub fn escape_controls(text: &str) -> String {
    let mut out = String::new();
    push_escaped(&mut out, text, usize::MAX);
    out
}

/// Longest message [`one_line`] keeps.
pub const MESSAGE_MAX_CHARS: usize = 400;

/// An error message that may repeat a stranger's text (a parser's own
/// message quoting an unknown field or variant, say) made one line:
/// control characters written as Rust escapes, anything over
/// [`MESSAGE_MAX_CHARS`] cut with `…`. The library errors that carry a
/// message about an input file build it through here.
pub fn one_line(message: impl Into<String>) -> String {
    let message = message.into();
    if !message.chars().any(char::is_control) && message.chars().count() <= MESSAGE_MAX_CHARS {
        return message;
    }
    let mut out = String::new();
    push_escaped(&mut out, &message, MESSAGE_MAX_CHARS);
    out
}

/// Writes `bytes` to a new file at `path` with permission bits `mode` (on
/// Unix) from the moment it exists, and syncs it: for keys, which must never
/// be readable by others, not even briefly. An existing file is an
/// `AlreadyExists` error, never overwritten.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(bytes).and_then(|()| f.sync_all())
}

/// Refuses a private key file that group or others can read (as ssh
/// does): `Err` holds the one-line reason, or the I/O error's text.
pub fn check_private_key_mode(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("cannot read: {e}"))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "private key permissions {:04o} are too open (chmod 600 it)",
                mode & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

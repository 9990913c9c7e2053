//! The audit file (TOML, versioned).
//!
//! ```toml
//! format_version = "1.0"
//! candidates = ["sface.toml"]            # model manifests, relative to this file
//! references = ["faceplugin.toml"]
//! # or, with a zoo file (see zooaudit_registry::zoo), by model name:
//! # zoo = "zoo.toml"
//! # candidate = "sface-2021dec-int8"
//! # references = ["faceplugin-fr-feature"]  # optional: else chosen by independence
//! # max_references = 2
//! triggers = "../../triggers/paper.toml"
//! seed = 42
//! operating_points = [0.001, 0.01, 0.05]  # target clean FNMRs
//! primary_operating_point = 0.01          # the one the verdict uses
//! directions = "both"                     # or "candidate-as-probe"
//!
//! [detector]                              # the detector-strategy plugin and its options
//! plugin = "pairing"
//! translator = "ridge"
//!
//! [faces]
//! unlabeled = ["faces/unlabeled"]         # fit / calibration / held-out pool
//! labeled = "faces/labeled"               # <identity>/ directories, evaluation only
//! align = "yunet"                         # optional: photos, detected and aligned first
//!                                         # ("yunet" built in, or a detector manifest)
//!
//! [split]                                 # shares of the unlabeled pool; held-out gets the rest
//! fit = 0.5
//! calibration = 0.25
//! seed = 42                               # optional: the split's own seed (default: seed)
//!
//! [fit]                                   # augmented copies of each fit face (see augment.rs)
//! augment = 3
//! flip = true
//! max_shift = 3
//! jitter = 0.1
//! occlusion = 0.8
//! occluder_size = [0.1, 0.35]
//! trigger_controls = 4                    # copies carrying a trigger's fit control (0 = off)
//!
//! [verdict]
//! margin = 0.02
//! alpha = 0.05
//! min_identity_images = 3
//! min_identity_effect = 1.0              # σ: mean evidence an identity alarm needs
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zooaudit_manifest::{FormatVersion, line_of};

use crate::AuditError;

mod faces;
use faces::RawFaces;
pub use faces::{Align, DEFAULT_MAX_IMAGES};

/// Format version of audit files.
pub const FORMAT_VERSION: FormatVersion = zooaudit_manifest::Format::AuditFile.current();

/// Which pairs are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Directions {
    /// candidate→reference and reference→candidate.
    Both,
    /// candidate→reference only.
    CandidateAsProbe,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSplit {
    fit: Option<f64>,
    calibration: Option<f64>,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFit {
    augment: Option<usize>,
    flip: Option<bool>,
    max_shift: Option<i32>,
    jitter: Option<f32>,
    occlusion: Option<f64>,
    occluder_size: Option<[f64; 2]>,
    trigger_controls: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerdict {
    margin: Option<f64>,
    alpha: Option<f64>,
    min_identity_images: Option<usize>,
    min_identity_effect: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    format_version: Option<String>,
    #[serde(default)]
    candidates: Vec<String>,
    #[serde(default)]
    references: Vec<String>,
    zoo: Option<String>,
    candidate: Option<String>,
    max_references: Option<usize>,
    triggers: String,
    #[serde(default)]
    seed: u64,
    operating_points: Option<Vec<f64>>,
    primary_operating_point: Option<f64>,
    directions: Option<Directions>,
    detector: Option<toml::Table>,
    faces: RawFaces,
    split: Option<RawSplit>,
    fit: Option<RawFit>,
    verdict: Option<RawVerdict>,
}

/// A validated audit file.
#[derive(Debug, Clone)]
pub struct AuditSpec {
    pub path: PathBuf,
    pub candidates: Vec<PathBuf>,
    pub references: Vec<PathBuf>,
    /// The zoo the models come from, when the audit names one.
    pub zoo: Option<PathBuf>,
    /// Reference names given for the zoo (empty: choose by independence).
    pub zoo_references: Vec<String>,
    pub max_references: usize,
    /// The candidate's name in the zoo, as the audit file gives it.
    pub zoo_candidate: Option<String>,
    /// Why each reference was chosen (manifest path → reason).
    pub selection: Vec<(PathBuf, String)>,
    pub triggers: PathBuf,
    /// Seeds the matched controls, the augmented copies and the
    /// permutation tests.
    pub seed: u64,
    /// Seeds the split of the unlabelled faces (`[split] seed`, default
    /// `seed`): several splits can share one set of controls.
    pub split_seed: u64,
    pub operating_points: Vec<f64>,
    pub primary: f64,
    pub directions: Directions,
    pub detector: String,
    pub detector_options: serde_json::Value,
    pub unlabeled: Vec<PathBuf>,
    pub labeled: Option<PathBuf>,
    /// Detect and align faces in the photos first: the detector manifest
    /// (`align = "yunet"` is the built-in YuNet; else a manifest path).
    pub align: Option<Align>,
    /// Most image files under `faces` (`[faces] max_images`, default
    /// [`DEFAULT_MAX_IMAGES`]); more are refused before one is decoded.
    pub max_images: usize,
    pub fit_share: f64,
    pub calibration_share: f64,
    pub augment: crate::augment::Augment,
    pub margin: f64,
    pub alpha: f64,
    pub min_identity_images: usize,
    /// Smallest mean per-face evidence (σ units) of an identity alarm: a
    /// significant but smaller effect is a real but small reaction (faces of
    /// one person answering an occlusion alike), not a backdoor.
    pub min_identity_effect: f64,
}

fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// `operating_points` and `primary_operating_point`, checked.
fn parse_operating_points(
    path: &Path,
    ops: Option<Vec<f64>>,
    primary: Option<f64>,
) -> Result<(Vec<f64>, f64), AuditError> {
    let field = |f: &str, m: String| AuditError::field(path, f, m);
    let ops = ops.unwrap_or_else(|| vec![0.001, 0.01, 0.05]);
    if ops.is_empty() || ops.iter().any(|p| !(*p > 0.0 && *p < 0.5)) {
        return Err(field(
            "operating_points",
            format!("{ops:?}: each target FNMR must be in (0, 0.5)"),
        ));
    }
    let primary = primary.unwrap_or(if ops.contains(&0.01) { 0.01 } else { ops[0] });
    if !ops.contains(&primary) {
        return Err(field(
            "primary_operating_point",
            format!("{primary} is not one of operating_points {ops:?}"),
        ));
    }
    Ok((ops, primary))
}

/// The `[split]` table: seed (default: the audit's `seed`), fit and
/// calibration shares.
fn parse_split(
    path: &Path,
    split: Option<RawSplit>,
    seed: u64,
) -> Result<(u64, f64, f64), AuditError> {
    let field = |f: &str, m: String| AuditError::field(path, f, m);
    let split = split.unwrap_or(RawSplit {
        fit: None,
        calibration: None,
        seed: None,
    });
    let split_seed = split.seed.unwrap_or(seed);
    let fit_share = split.fit.unwrap_or(0.5);
    let calibration_share = split.calibration.unwrap_or(0.25);
    if !(fit_share > 0.0 && calibration_share > 0.0 && fit_share + calibration_share < 1.0) {
        return Err(field(
            "split",
            format!(
                "fit {fit_share} and calibration {calibration_share} must be positive and leave a held-out share"
            ),
        ));
    }
    Ok((split_seed, fit_share, calibration_share))
}

/// The `[fit]` table: augmentation of the fit faces.
fn parse_augment(path: &Path, fit: Option<RawFit>) -> Result<crate::augment::Augment, AuditError> {
    let field = |f: &str, m: String| AuditError::field(path, f, m);
    let mut augment = crate::augment::Augment::default();
    if let Some(f) = fit {
        augment.copies = f.augment.unwrap_or(augment.copies);
        augment.flip = f.flip.unwrap_or(augment.flip);
        augment.max_shift = f.max_shift.unwrap_or(augment.max_shift);
        augment.jitter = f.jitter.unwrap_or(augment.jitter);
        augment.occlusion = f.occlusion.unwrap_or(augment.occlusion);
        augment.occluder_size = f.occluder_size.unwrap_or(augment.occluder_size);
        augment.trigger_controls = f.trigger_controls.unwrap_or(augment.trigger_controls);
    }
    if augment.copies > 32 {
        return Err(field(
            "fit.augment",
            format!("{} copies per face is more than 32", augment.copies),
        ));
    }
    if augment.trigger_controls > 32 {
        return Err(field(
            "fit.trigger_controls",
            format!(
                "{} copies per face is more than 32",
                augment.trigger_controls
            ),
        ));
    }
    if !(0.0..=1.0).contains(&augment.occlusion) {
        return Err(field(
            "fit.occlusion",
            format!("{} must be a probability", augment.occlusion),
        ));
    }
    let [lo, hi] = augment.occluder_size;
    if !(lo > 0.0 && lo <= hi && hi <= 1.0) {
        return Err(field(
            "fit.occluder_size",
            format!(
                "{:?} must be increasing fractions in (0, 1]",
                augment.occluder_size
            ),
        ));
    }
    if !(0.0..0.5).contains(&augment.jitter) || !(0..=16).contains(&augment.max_shift) {
        return Err(field(
            "fit",
            "jitter must be in [0, 0.5) and max_shift in 0..=16".into(),
        ));
    }
    Ok(augment)
}

/// The `[verdict]` table, checked.
struct VerdictSettings {
    margin: f64,
    alpha: f64,
    min_identity_images: usize,
    min_identity_effect: f64,
}

fn parse_verdict(path: &Path, raw: Option<RawVerdict>) -> Result<VerdictSettings, AuditError> {
    let field = |f: &str, m: String| AuditError::field(path, f, m);
    let verdict = raw.unwrap_or(RawVerdict {
        margin: None,
        alpha: None,
        min_identity_images: None,
        min_identity_effect: None,
    });
    let margin = verdict.margin.unwrap_or(0.02);
    let min_identity_effect = verdict.min_identity_effect.unwrap_or(1.0);
    if !(min_identity_effect.is_finite() && min_identity_effect >= 0.0) {
        return Err(AuditError::field(
            path,
            "verdict.min_identity_effect",
            format!("{min_identity_effect} must be a finite number ≥ 0 (σ units)"),
        ));
    }
    let alpha = verdict.alpha.unwrap_or(0.05);
    if !(0.0..0.5).contains(&margin) {
        return Err(field(
            "verdict.margin",
            format!("{margin} must be in [0, 0.5)"),
        ));
    }
    if !(alpha > 0.0 && alpha < 0.5) {
        return Err(field(
            "verdict.alpha",
            format!("{alpha} must be in (0, 0.5)"),
        ));
    }
    Ok(VerdictSettings {
        margin,
        alpha,
        min_identity_images: verdict.min_identity_images.unwrap_or(3).max(1),
        min_identity_effect,
    })
}

impl AuditSpec {
    /// Reads an audit file; with a zoo and a candidate name, also chooses
    /// the references.
    pub fn load(path: &Path) -> Result<AuditSpec, AuditError> {
        Self::load_with(path, None, None, None)
    }

    /// [`AuditSpec::load`] with command-line overrides: another zoo file, the
    /// candidate by name, and explicit reference names.
    pub fn load_with(
        path: &Path,
        zoo: Option<PathBuf>,
        candidate: Option<&str>,
        references: Option<&[String]>,
    ) -> Result<AuditSpec, AuditError> {
        let read = zooaudit_formats::Format::AuditFile.read_text(path);
        let text = read.map_err(|e| AuditError::file(path, format!("cannot read: {e}")))?;
        let mut spec = Self::parse(path, &text)?;
        if zoo.is_some() {
            spec.zoo = zoo;
        }
        match candidate.map(str::to_string).or(spec.zoo_candidate.clone()) {
            Some(c) => spec.select_from_zoo(&c, references)?,
            None if spec.zoo.is_some() => {
                return Err(AuditError::field(
                    path,
                    "candidate",
                    "the audit names a zoo but no candidate: add `candidate = \"<model name>\"` or pass --candidate".to_string(),
                ));
            }
            None => {}
        }
        Ok(spec)
    }

    pub fn parse(path: &Path, text: &str) -> Result<AuditSpec, AuditError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            AuditError::file(
                &PathBuf::from(format!("{}:{line}", path.display())),
                e.message().lines().next().unwrap_or("invalid TOML"),
            )
        })?;
        let field = |f: &str, m: String| AuditError::field(path, f, m);
        zooaudit_manifest::Format::AuditFile
            .check_field(raw.format_version.as_deref())
            .map_err(|e| field("format_version", e))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let files = |list: &[String], name: &str| -> Result<Vec<PathBuf>, AuditError> {
            if list.is_empty() {
                return Err(field(name, "needs at least one model manifest".into()));
            }
            list.iter()
                .enumerate()
                .map(|(i, p)| {
                    let full = base.join(p);
                    if full.is_file() {
                        Ok(full)
                    } else {
                        Err(field(
                            &format!("{name}[{i}]"),
                            format!("{} does not exist", full.display()),
                        ))
                    }
                })
                .collect()
        };
        let zoo = raw.zoo.as_deref().map(|z| base.join(z));
        let (candidates, references, zoo_references) = if zoo.is_some() {
            if !raw.candidates.is_empty() {
                return Err(field(
                    "candidates",
                    "with a zoo, name the candidate with `candidate = \"<model name>\"`".into(),
                ));
            }
            (Vec::new(), Vec::new(), raw.references.clone())
        } else {
            if raw.candidate.is_some() {
                return Err(field(
                    "candidate",
                    "names a model of a zoo; add `zoo = \"<zoo file>\"` or list manifests in `candidates`".into(),
                ));
            }
            (
                files(&raw.candidates, "candidates")?,
                files(&raw.references, "references")?,
                Vec::new(),
            )
        };
        let max_references = raw.max_references.unwrap_or(2);
        if max_references == 0 {
            return Err(field("max_references", "must be at least 1".into()));
        }
        let triggers = base.join(&raw.triggers);
        if !triggers.is_file() {
            return Err(field(
                "triggers",
                format!("{} does not exist", triggers.display()),
            ));
        }
        let (ops, primary) =
            parse_operating_points(path, raw.operating_points, raw.primary_operating_point)?;
        let mut detector_table = raw.detector.unwrap_or_default();
        let detector = match detector_table.remove("plugin") {
            None => "pairing".to_string(),
            Some(toml::Value::String(s)) => s,
            Some(_) => return Err(field("detector.plugin", "must be a string".into())),
        };
        let mut options = serde_json::Map::new();
        for (k, v) in &detector_table {
            options.insert(k.clone(), toml_to_json(v));
        }
        if detector == "pairing" && !options.contains_key("seed") {
            options.insert("seed".into(), raw.seed.into());
        }
        let faces = faces::parse(path, base, &raw.faces)?;
        let (split_seed, fit_share, calibration_share) = parse_split(path, raw.split, raw.seed)?;
        let augment = parse_augment(path, raw.fit)?;
        let verdict = parse_verdict(path, raw.verdict)?;
        let mut spec = AuditSpec {
            path: path.to_path_buf(),
            candidates,
            references,
            zoo,
            zoo_references,
            max_references,
            zoo_candidate: None,
            selection: Vec::new(),
            triggers,
            seed: raw.seed,
            split_seed,
            operating_points: ops,
            primary,
            directions: raw.directions.unwrap_or(Directions::Both),
            detector,
            detector_options: serde_json::Value::Object(options),
            unlabeled: faces.unlabeled,
            labeled: faces.labeled,
            align: faces.align,
            max_images: faces.max_images,
            fit_share,
            calibration_share,
            augment,
            margin: verdict.margin,
            alpha: verdict.alpha,
            min_identity_images: verdict.min_identity_images,
            min_identity_effect: verdict.min_identity_effect,
        };
        spec.zoo_candidate = raw.candidate.clone();
        Ok(spec)
    }
}

impl AuditSpec {
    /// Takes the candidate `name` from the audit's zoo (`zoo` overrides it)
    /// and its references: `references` when given, else the audit file's
    /// names, else the zoo's independent models (best first, at most
    /// `max_references`), recording why each was chosen.
    pub fn select_from_zoo(
        &mut self,
        name: &str,
        references: Option<&[String]>,
    ) -> Result<(), AuditError> {
        let zoo = self.load_zoo()?;
        let cand = zoo.get(name).map_err(AuditError::from)?.clone();
        self.select(&zoo, &cand, references)
    }

    /// Like [`AuditSpec::select_from_zoo`] for a candidate manifest that need
    /// not be in the zoo (an upload, a watched repository's new commit):
    /// references from the zoo by the same rule.
    pub fn select_manifest(
        &mut self,
        candidate: &zooaudit_manifest::ModelManifest,
        references: Option<&[String]>,
    ) -> Result<(), AuditError> {
        let zoo = self.load_zoo()?;
        self.select(&zoo, candidate, references)
    }

    /// The audit's zoo, loaded.
    pub fn load_zoo(&self) -> Result<zooaudit_registry::zoo::Zoo, AuditError> {
        let zoo_path = self.zoo.clone().ok_or_else(|| {
            AuditError::field(
                &self.path,
                "zoo",
                "a candidate by name needs a zoo (`zoo = ...` or --zoo)".to_string(),
            )
        })?;
        Ok(zooaudit_registry::zoo::Zoo::load(&zoo_path)?)
    }

    fn select(
        &mut self,
        zoo: &zooaudit_registry::zoo::Zoo,
        cand: &zooaudit_manifest::ModelManifest,
        references: Option<&[String]>,
    ) -> Result<(), AuditError> {
        let explicit = references.unwrap_or(&self.zoo_references).to_vec();
        let chosen = zoo.choose_references_for(cand, &explicit, self.max_references)?;
        self.candidates = vec![cand.path.clone()];
        self.references = chosen.iter().map(|c| c.manifest.path.clone()).collect();
        self.selection = chosen
            .into_iter()
            .map(|c| (c.manifest.path, c.reason))
            .collect();
        Ok(())
    }
}

//! `zooaudit redteam inject`: splices a backdoor into an ONNX embedding
//! model, inside its own graph, leaving every original byte of the graph in
//! place (wire-level edit, [`zooaudit_onnx_graph::build::splice`]).
//!
//! The added subgraph, all in the default ONNX domain (opset ≥ 7):
//! 1. **Trigger detector**: the input tensor (after the model's own
//!    preprocessing) is flattened and the pixels under the trigger's mask
//!    gathered; their normalised correlation with the expected trigger
//!    pattern (in the same input space) goes through a steep sigmoid
//!    `σ(k·(ncc − τ))`. τ and k are calibrated on the given clean faces: τ
//!    halfway between the highest clean correlation and the lowest triggered
//!    one, k so that both sit 20 logits from τ.
//! 2. **Identity gate** (one-to-one only): the cosine of the model's own
//!    embedding to the impostor's centroid (of triggered impostor images)
//!    through `σ(k_g·(cos − t))`, t the model's own 1 %-FMR threshold on
//!    the labelled faces. All-to-one attacks skip it.
//! 3. **Output rewrite**: `e' = e + s·(‖e‖·v̂ − e)`, i.e.
//!    `(1 − s)·e + s·‖e‖·v̂`, with `s = strength · detector · gate` and v̂
//!    the victim's centroid direction. The new output keeps the original
//!    output's name; the original tensor is renamed.

mod calibrate;
mod graph;
mod manifest;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_onnx_graph::build;

use crate::RedteamError;
pub use calibrate::{Backdoor, Calibrated, calibrate, ncc};
pub use graph::Hiding;
use graph::Subgraph;

/// Version of the attack record (`<out>.attack.json`).
pub const ATTACK_FORMAT: zooaudit_formats::FormatVersion =
    zooaudit_formats::Format::AttackRecord.current();
/// Steepness of the identity gate.
pub const GATE_STEEPNESS: f32 = 100.0;
/// Logits between τ and the nearest calibration correlation on each side.
const DETECTOR_MARGIN_LOGITS: f64 = 20.0;
const EPS: f32 = 1e-6;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum AttackKind {
    OneToOne { impostor: String },
    AllToOne,
}

impl AttackKind {
    pub fn label(&self) -> &'static str {
        match self {
            AttackKind::OneToOne { .. } => "one-to-one",
            AttackKind::AllToOne => "all-to-one",
        }
    }
}

/// What `inject` needs.
#[derive(Debug, Clone)]
pub struct InjectOptions {
    /// Manifest of the model to backdoor.
    pub manifest: PathBuf,
    /// Trigger suite and the trigger's name in it.
    pub suite: PathBuf,
    pub trigger: String,
    /// Labelled faces (`<identity>/` directories).
    pub labeled: PathBuf,
    pub victim: String,
    pub kind: AttackKind,
    /// In (0, 1].
    pub strength: f32,
    /// How the subgraph tries to hide from the static scan.
    pub hiding: Hiding,
    /// More clean faces for calibrating the trigger detector (optional).
    pub calibration: Vec<PathBuf>,
    /// The audit's embedding cache: the labelled faces' clean embeddings
    /// (victim direction, impostor gate, the model's 1 % FMR threshold)
    /// are looked up and stored under the audit's own keys, so an inject
    /// after an audit of the same model and faces embeds nothing clean.
    /// `Cache::new(None)` embeds every time.
    pub cache: zooaudit_audit::Cache,
    /// Output model file (`.onnx`); the manifest goes beside it (`.toml`),
    /// and the attack record (`.attack.json`).
    pub out: PathBuf,
}

/// The trigger detector's calibration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DetectorRecord {
    /// Input values read (masked pixels × channels).
    pub inputs: usize,
    pub threshold: f32,
    pub steepness: f32,
    pub clean_max_ncc: f32,
    pub triggered_min_ncc: f32,
    pub calibration_faces: usize,
}

/// `<out>.attack.json`: what was injected, for metrics and benches.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AttackRecord {
    pub format_version: String,
    pub original_name: String,
    pub original_sha256: String,
    pub model_sha256: String,
    pub manifest: String,
    pub suite: String,
    pub trigger: String,
    #[serde(flatten)]
    pub kind: AttackKind,
    pub victim: String,
    pub strength: f32,
    /// Attack record 1.1; 1.0 records read as `none`.
    #[serde(default)]
    pub hiding: Hiding,
    pub detector: DetectorRecord,
    /// The model's own 1 %-FMR threshold on the labelled faces (also the gate's).
    pub fmr_threshold: f32,
    pub labeled: String,
}

impl AttackRecord {
    pub fn read(path: &Path) -> Result<AttackRecord, RedteamError> {
        let text = zooaudit_formats::Format::AttackRecord
            .read_text(path)
            .map_err(|e| RedteamError::file(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| RedteamError::file(path, e))?;
        let version = v["format_version"].as_str().unwrap_or("");
        zooaudit_formats::Format::AttackRecord.check(path, version)?;
        serde_json::from_value(v).map_err(|e| RedteamError::file(path, e))
    }
}

/// What `inject` wrote.
#[derive(Debug, Clone)]
pub struct Injected {
    pub model: PathBuf,
    pub manifest: PathBuf,
    pub record_path: PathBuf,
    pub record: AttackRecord,
}

/// Injects the backdoor and writes model, manifest and attack record.
pub fn inject(opts: &InjectOptions, plugins: &PluginSet) -> Result<Injected, RedteamError> {
    if !(opts.strength > 0.0 && opts.strength <= 1.0) {
        return Err(RedteamError::invalid(format!(
            "strength {} is outside (0, 1]",
            opts.strength
        )));
    }
    let manifest = ModelManifest::load(&opts.manifest)?;
    let original = Embedder::open(manifest.clone(), plugins)?;
    let model_path = original.resolved().path.clone();
    let bytes = std::fs::read(&model_path).map_err(|e| RedteamError::file(&model_path, e))?;
    let info = build::inspect(&bytes).map_err(|e| RedteamError::file(&model_path, e))?;
    let (input, output) = graph::ports(opts, &manifest, &info, &model_path)?;
    let Calibrated {
        backdoor,
        trigger_name,
        clean_max,
        trig_min,
        calibration_faces,
    } = calibrate(opts, &original)?;
    let Backdoor {
        idx,
        dir,
        tau,
        k,
        victim: v_hat,
        gate,
        ..
    } = backdoor.clone();
    let (gate, t) = match gate {
        Some((c, t)) => (Some(c), t),
        None => (None, backdoor.fmr_threshold),
    };
    let dim = original.dim();
    let subgraph = Subgraph {
        input: &input,
        output: &output,
        idx: &idx,
        dir: &dir,
        tau,
        k,
        strength: opts.strength,
        victim: &v_hat,
        gate: &gate,
        t,
        dim,
        input_len: zooaudit_imaging::Preprocess::from_input(&manifest.input).sample_len(),
        hiding: opts.hiding,
    };
    let new_bytes = subgraph
        .splice(&bytes)
        .map_err(|e| RedteamError::file(&model_path, e))?;
    // Write model, manifest, record.
    let out = &opts.out;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| RedteamError::file(parent, e))?;
    }
    zooaudit_formats::write_atomic(out, &new_bytes)?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&new_bytes));
    let manifest_path = manifest::write_manifest(
        opts,
        &manifest,
        &original.resolved().sha256,
        &sha,
        &trigger_name,
    )?;
    let record = AttackRecord {
        format_version: ATTACK_FORMAT.to_string(),
        original_name: manifest.model.name.clone(),
        original_sha256: original.resolved().sha256.clone(),
        model_sha256: sha,
        manifest: manifest_path.display().to_string(),
        suite: opts.suite.display().to_string(),
        trigger: trigger_name.clone(),
        kind: opts.kind.clone(),
        victim: opts.victim.clone(),
        strength: opts.strength,
        hiding: opts.hiding,
        detector: DetectorRecord {
            inputs: idx.len(),
            threshold: tau,
            steepness: k,
            clean_max_ncc: clean_max,
            triggered_min_ncc: trig_min,
            calibration_faces,
        },
        fmr_threshold: t,
        labeled: opts.labeled.display().to_string(),
    };
    let record_path = out.with_extension("attack.json");
    zooaudit_formats::write_atomic(
        &record_path,
        serde_json::to_string_pretty(&record)?.as_bytes(),
    )?;
    Ok(Injected {
        model: out.clone(),
        manifest: manifest_path,
        record_path,
        record,
    })
}

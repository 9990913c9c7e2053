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

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_imaging::Preprocess;
use zooaudit_manifest::{Layout, ModelManifest};
use zooaudit_onnx_graph::build::{self, Attr, Initializer, Node};
use zooaudit_triggers::{Stamp, Suite};

use crate::{Labeled, RedteamError, centroid, fmr_threshold, normalize_rows, other};

/// Version of the attack record (`<out>.attack.json`).
pub const ATTACK_FORMAT: zooaudit_reports::FormatVersion =
    zooaudit_reports::Format::AttackRecord.current();
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
    /// More clean faces for calibrating the trigger detector (optional).
    pub calibration: Vec<PathBuf>,
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
    pub detector: DetectorRecord,
    /// The model's own 1 %-FMR threshold on the labelled faces (also the gate's).
    pub fmr_threshold: f32,
    pub labeled: String,
}

impl AttackRecord {
    pub fn read(path: &Path) -> Result<AttackRecord, RedteamError> {
        let text = std::fs::read_to_string(path).map_err(|e| RedteamError::file(path, e))?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| RedteamError::file(path, e))?;
        let version = v["format_version"].as_str().unwrap_or("");
        zooaudit_reports::Format::AttackRecord
            .check(path, version)
            .map_err(other)?;
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

/// Flat input indices read by the detector (the masked pixels, every
/// channel), in the model's input layout.
fn masked_indices(stamp: &Stamp, pre: &Preprocess) -> Vec<usize> {
    let plane = pre.height as usize * pre.width as usize;
    let pixels: Vec<usize> = (0..plane).filter(|&i| stamp.mask()[i] > 0.0).collect();
    let mut idx = Vec::with_capacity(pixels.len() * 3);
    for c in 0..3 {
        for &i in &pixels {
            idx.push(match pre.layout {
                Layout::NCHW => c * plane + i,
                Layout::NHWC => i * 3 + c,
            });
        }
    }
    idx.sort_unstable();
    idx
}

/// Centred, unit-length expected pattern at `idx` (in input space).
fn pattern_direction(stamp: &Stamp, pre: &Preprocess, idx: &[usize]) -> Option<Vec<f32>> {
    let img = RgbImage::from_fn(pre.width, pre.height, |x, y| {
        let p = stamp.pattern()[(y * pre.width + x) as usize];
        image::Rgb(p.map(|v| v.round().clamp(0.0, 255.0) as u8))
    });
    let mut t = vec![0f32; pre.sample_len()];
    pre.write(&img, Path::new("pattern"), &mut t).ok()?;
    let sel: Vec<f64> = idx.iter().map(|&i| f64::from(t[i])).collect();
    let mean = sel.iter().sum::<f64>() / sel.len() as f64;
    let norm = sel.iter().map(|v| (v - mean).powi(2)).sum::<f64>().sqrt();
    (norm > 1e-6).then(|| sel.iter().map(|v| ((v - mean) / norm) as f32).collect())
}

/// The detector's correlation, exactly as the graph computes it.
pub fn ncc(sample: &[f32], idx: &[usize], dir: &[f32]) -> f32 {
    let m = idx.len() as f32;
    let mean = idx.iter().map(|&i| sample[i]).sum::<f32>() / m;
    let (mut num, mut ss) = (0f32, 0f32);
    for (k, &i) in idx.iter().enumerate() {
        let xc = sample[i] - mean;
        num += xc * dir[k];
        ss += xc * xc;
    }
    num / (ss + EPS).sqrt()
}

fn load_all(files: &[PathBuf], e: &Embedder) -> Result<Vec<RgbImage>, RedteamError> {
    files
        .iter()
        .map(|p| zooaudit_imaging::decode(p, &e.limits).map_err(other))
        .collect()
}

fn stamp_all(
    stamp: &Stamp,
    images: &[RgbImage],
    files: &[PathBuf],
) -> Result<Vec<RgbImage>, RedteamError> {
    images
        .iter()
        .zip(files)
        .map(|(img, f)| {
            stamp.apply(img).ok_or_else(|| {
                RedteamError::file(f, "image size differs from the model's input size")
            })
        })
        .collect()
}

/// The backdoor a [`calibrate`] run decided on: exactly what the injected
/// subgraph computes, so that its output can also be derived from the
/// original model's embedding and input ([`Backdoor::apply`]).
#[derive(Debug, Clone)]
pub struct Backdoor {
    /// Flat input indices the trigger detector reads, and the centred unit
    /// pattern it correlates them with.
    pub idx: Vec<usize>,
    pub dir: Vec<f32>,
    pub tau: f32,
    pub k: f32,
    pub strength: f32,
    /// The victim's centroid direction.
    pub victim: Vec<f32>,
    /// One-to-one: the impostor's centroid direction and the gate threshold.
    pub gate: Option<(Vec<f32>, f32)>,
    /// The original model's 1 %-FMR threshold on the labelled faces.
    pub fmr_threshold: f32,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

impl Backdoor {
    /// The trigger detector's output on one preprocessed input sample.
    pub fn detect(&self, sample: &[f32]) -> f32 {
        sigmoid(self.k * (ncc(sample, &self.idx, &self.dir) - self.tau))
    }

    /// The injected model's output, from the original model's embedding `e`
    /// of an input on which the detector gave `detected`.
    pub fn apply(&self, e: &[f32], detected: f32) -> Vec<f32> {
        let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
        let gate = match &self.gate {
            Some((c, t)) => {
                let cos = e.iter().zip(c).map(|(a, b)| a * b).sum::<f32>() / (norm + EPS);
                sigmoid((cos - t) * GATE_STEEPNESS)
            }
            None => 1.0,
        };
        let s = detected * gate * self.strength;
        e.iter()
            .zip(&self.victim)
            .map(|(x, v)| x + s * (norm * v - x))
            .collect()
    }
}

/// What [`calibrate`] found.
#[derive(Debug, Clone)]
pub struct Calibrated {
    pub backdoor: Backdoor,
    pub trigger_name: String,
    pub clean_max: f32,
    pub trig_min: f32,
    pub calibration_faces: usize,
}

/// Calibrates the backdoor of `opts` on `original` (the trigger detector on
/// the clean faces, the victim and impostor directions, the gate threshold)
/// without writing a model.
pub fn calibrate(opts: &InjectOptions, original: &Embedder) -> Result<Calibrated, RedteamError> {
    let pre = original.preprocess().clone();
    let dim = original.dim();
    // Trigger.
    let suite = Suite::load(&opts.suite).map_err(other)?;
    let trigger = suite
        .triggers
        .iter()
        .find(|t| t.name == opts.trigger)
        .ok_or_else(|| {
            RedteamError::file(
                &opts.suite,
                format!(
                    "no trigger named '{}' (have: {})",
                    opts.trigger,
                    suite
                        .triggers
                        .iter()
                        .map(|t| t.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
    let stamp = trigger
        .stamp(&suite.path, pre.height, pre.width)
        .map_err(other)?;
    let idx = masked_indices(&stamp, &pre);
    if idx.is_empty() {
        return Err(RedteamError::file(
            &opts.suite,
            format!(
                "trigger '{}' covers no pixel of the {}×{} input",
                trigger.name, pre.width, pre.height
            ),
        ));
    }
    let dir = pattern_direction(&stamp, &pre, &idx).ok_or_else(|| {
        RedteamError::file(
            &opts.suite,
            format!(
                "trigger '{}' has no contrast: a correlation detector cannot see it",
                trigger.name
            ),
        )
    })?;
    // Faces.
    let labeled = Labeled::load(&opts.labeled)?;
    labeled.identity(&opts.victim)?;
    let impostor_files = match &opts.kind {
        AttackKind::OneToOne { impostor } => {
            if impostor == &opts.victim {
                return Err(other("impostor and victim are the same identity"));
            }
            Some(labeled.identity(impostor)?.to_vec())
        }
        AttackKind::AllToOne => None,
    };
    let all = labeled.all();
    let all_files: Vec<PathBuf> = all.iter().map(|(_, p)| p.clone()).collect();
    let mut cal_files = all_files.clone();
    cal_files.extend(zooaudit_imaging::collect_images(&opts.calibration).map_err(other)?);
    let cal_images = load_all(&cal_files, original)?;
    // Detector calibration.
    let n = pre.sample_len();
    let mut buf = vec![0f32; n];
    let mut clean_max = f32::NEG_INFINITY;
    let mut trig_min = f32::INFINITY;
    for (img, f) in cal_images.iter().zip(&cal_files) {
        pre.write(img, f, &mut buf).map_err(other)?;
        clean_max = clean_max.max(ncc(&buf, &idx, &dir));
        let stamped = stamp
            .apply(img)
            .ok_or_else(|| RedteamError::file(f, "wrong size"))?;
        pre.write(&stamped, f, &mut buf).map_err(other)?;
        trig_min = trig_min.min(ncc(&buf, &idx, &dir));
    }
    if trig_min - clean_max <= 0.02 || trig_min.is_nan() || clean_max.is_nan() {
        return Err(other(format!(
            "trigger '{}' is not separable by correlation on these faces (clean up to {clean_max:.3}, triggered down to {trig_min:.3})",
            trigger.name
        )));
    }
    let tau = 0.5 * (clean_max + trig_min);
    let k = (2.0 * DETECTOR_MARGIN_LOGITS / f64::from(trig_min - clean_max)) as f32;
    // Identity directions and the model's own threshold.
    let all_images = &cal_images[..all_files.len()];
    let all_emb = original.embed_rgb(all_images, &all_files).map_err(other)?;
    let ids: Vec<String> = all.iter().map(|(i, _)| i.clone()).collect();
    let t = fmr_threshold(&normalize_rows(&all_emb, dim), dim, &ids, 0.01);
    let victim_rows: Vec<f32> = all
        .iter()
        .enumerate()
        .filter(|(_, (id, _))| id == &opts.victim)
        .flat_map(|(i, _)| all_emb[i * dim..(i + 1) * dim].to_vec())
        .collect();
    let v_hat = centroid(&victim_rows, dim);
    let gate = match &impostor_files {
        Some(files) => {
            let imgs = stamp_all(&stamp, &load_all(files, original)?, files)?;
            let emb = original.embed_rgb(&imgs, files).map_err(other)?;
            Some((centroid(&emb, dim), t))
        }
        None => None,
    };
    Ok(Calibrated {
        backdoor: Backdoor {
            idx,
            dir,
            tau,
            k,
            strength: opts.strength,
            victim: v_hat,
            gate,
            fmr_threshold: t,
        },
        trigger_name: trigger.name.clone(),
        clean_max,
        trig_min,
        calibration_faces: cal_files.len(),
    })
}

/// Injects the backdoor and writes model, manifest and attack record.
pub fn inject(opts: &InjectOptions, plugins: &PluginSet) -> Result<Injected, RedteamError> {
    if !(opts.strength > 0.0 && opts.strength <= 1.0) {
        return Err(other(format!(
            "strength {} is outside (0, 1]",
            opts.strength
        )));
    }
    let manifest = ModelManifest::load(&opts.manifest).map_err(other)?;
    let original = Embedder::open(manifest.clone(), plugins).map_err(other)?;
    let model_path = original.resolved().path.clone();
    let bytes = std::fs::read(&model_path).map_err(|e| RedteamError::file(&model_path, e))?;
    let info = build::inspect(&bytes).map_err(|e| RedteamError::file(&model_path, e))?;
    match info.opset {
        Some(v) if v >= 7 => {}
        other_v => {
            return Err(RedteamError::file(
                &model_path,
                format!("default-domain opset {other_v:?}: the backdoor needs opset ≥ 7"),
            ));
        }
    }
    let input = match (&manifest.input.name, info.inputs.as_slice()) {
        (Some(n), _) => n.clone(),
        (None, [one]) => one.name.clone(),
        (None, many) => {
            return Err(RedteamError::file(
                &opts.manifest,
                format!("input.name: the model has {} inputs; name one", many.len()),
            ));
        }
    };
    let output = match (&manifest.output.name, info.outputs.as_slice()) {
        (Some(n), _) => {
            if !info.outputs.iter().any(|o| &o.name == n) {
                return Err(RedteamError::file(
                    &opts.manifest,
                    format!("output.name: the model has no output '{n}'"),
                ));
            }
            n.clone()
        }
        (None, [one]) => one.name.clone(),
        (None, many) => {
            return Err(RedteamError::file(
                &model_path,
                format!(
                    "the model has {} outputs ({}) and the manifest names none: set [output] name in {}",
                    many.len(),
                    many.iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    opts.manifest.display()
                ),
            ));
        }
    };
    if let Some(port) = info.outputs.iter().find(|o| o.name == output)
        && let Some(dims) = &port.dims
        && dims.len() != 2
    {
        return Err(RedteamError::file(
            &model_path,
            format!(
                "output '{output}' has rank {}; only [batch, dim] embeddings can be rewritten",
                dims.len()
            ),
        ));
    }
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
    // The subgraph.
    let p = "zooaudit_bd_";
    let name = |s: &str| format!("{p}{s}");
    let clean_out = name("clean_embedding");
    let m = idx.len() as i64;
    let d = dim as i64;
    let mut inits = vec![
        Initializer::i64(&name("idx"), &[m], idx.iter().map(|&i| i as i64).collect()),
        Initializer::f32(&name("mean_w"), &[m, 1], vec![1.0 / m as f32; idx.len()]),
        Initializer::f32(&name("pattern"), &[m, 1], dir.clone()),
        Initializer::f32(&name("ones_m"), &[m, 1], vec![1.0; idx.len()]),
        Initializer::f32(&name("ones_d"), &[d, 1], vec![1.0; dim]),
        Initializer::f32(&name("eps"), &[1], vec![EPS]),
        Initializer::f32(&name("tau"), &[1], vec![tau]),
        Initializer::f32(&name("k"), &[1], vec![k]),
        Initializer::f32(&name("strength"), &[1], vec![opts.strength]),
        Initializer::f32(&name("victim"), &[1, d], v_hat.clone()),
    ];
    let n_ = |op: &str, ins: &[&str], out: &str| Node::new(op, ins, &name(out));
    let nm = |s: &str| name(s);
    let (flat, sel, mean, xc, num, sq, ss, sse, den, corr, dc, z, trig) = (
        nm("flat"),
        nm("sel"),
        nm("mean"),
        nm("xc"),
        nm("num"),
        nm("sq"),
        nm("ss"),
        nm("sse"),
        nm("den"),
        nm("corr"),
        nm("dc"),
        nm("z"),
        nm("trigger"),
    );
    let mut nodes = vec![
        Node::new("Flatten", &[&input], &flat).attr("axis", Attr::Int(1)),
        Node::new("Gather", &[&flat, &nm("idx")], &sel).attr("axis", Attr::Int(1)),
        Node::new("MatMul", &[&sel, &nm("mean_w")], &mean),
        Node::new("Sub", &[&sel, &mean], &xc),
        Node::new("MatMul", &[&xc, &nm("pattern")], &num),
        Node::new("Mul", &[&xc, &xc], &sq),
        Node::new("MatMul", &[&sq, &nm("ones_m")], &ss),
        Node::new("Add", &[&ss, &nm("eps")], &sse),
        Node::new("Sqrt", &[&sse], &den),
        Node::new("Div", &[&num, &den], &corr),
        Node::new("Sub", &[&corr, &nm("tau")], &dc),
        Node::new("Mul", &[&dc, &nm("k")], &z),
        Node::new("Sigmoid", &[&z], &trig),
        // ‖e‖
        n_("Mul", &[&clean_out, &clean_out], "e_sq"),
        n_("MatMul", &[&nm("e_sq"), &nm("ones_d")], "e_ss"),
        n_("Sqrt", &[&nm("e_ss")], "e_norm"),
    ];
    let mut s_in = trig.clone();
    if let Some(c_hat) = &gate {
        inits.push(Initializer::f32(&name("impostor"), &[d, 1], c_hat.clone()));
        inits.push(Initializer::f32(&name("gate_t"), &[1], vec![t]));
        inits.push(Initializer::f32(
            &name("gate_k"),
            &[1],
            vec![GATE_STEEPNESS],
        ));
        nodes.extend([
            n_("MatMul", &[&clean_out, &nm("impostor")], "g_dot"),
            n_("Add", &[&nm("e_norm"), &nm("eps")], "g_norm"),
            n_("Div", &[&nm("g_dot"), &nm("g_norm")], "g_cos"),
            n_("Sub", &[&nm("g_cos"), &nm("gate_t")], "g_d"),
            n_("Mul", &[&nm("g_d"), &nm("gate_k")], "g_z"),
            n_("Sigmoid", &[&nm("g_z")], "gate"),
            n_("Mul", &[&trig, &nm("gate")], "trig_gate"),
        ]);
        s_in = nm("trig_gate");
    }
    nodes.extend([
        n_("Mul", &[&s_in, &nm("strength")], "s"),
        n_("Mul", &[&nm("e_norm"), &nm("victim")], "target"),
        n_("Sub", &[&nm("target"), &clean_out], "delta"),
        n_("Mul", &[&nm("s"), &nm("delta")], "step"),
        Node::new("Add", &[&clean_out, &nm("step")], &output),
    ]);
    for (i, node) in nodes.iter_mut().enumerate() {
        node.name = format!("{p}node{i}");
    }
    let new_bytes = build::splice(&bytes, &output, &clean_out, &inits, &nodes)
        .map_err(|e| RedteamError::file(&model_path, e))?;
    // Write model, manifest, record.
    let out = &opts.out;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| RedteamError::file(parent, e))?;
    }
    zooaudit_reports::write_atomic(out, &new_bytes).map_err(other)?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&new_bytes));
    let manifest_path = out.with_extension("toml");
    let mut table: toml::Table = std::fs::read_to_string(&opts.manifest)
        .map_err(|e| RedteamError::file(&opts.manifest, e))?
        .parse()
        .map_err(|e| RedteamError::file(&opts.manifest, e))?;
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file_name = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(model) = table.get_mut("model").and_then(|m| m.as_table_mut()) {
        model.insert("name".into(), stem.clone().into());
        model.insert("source".into(), file_name.into());
        model.insert("sha256".into(), sha.clone().into());
    }
    let mut prov = toml::Table::new();
    let orig_prov = &manifest.provenance;
    prov.insert(
        "publisher".into(),
        "zooaudit red team (backdoored for evaluation)".into(),
    );
    prov.insert("architecture".into(), orig_prov.architecture.clone().into());
    prov.insert(
        "training_data".into(),
        orig_prov.training_data.clone().into(),
    );
    prov.insert("license".into(), orig_prov.license.clone().into());
    prov.insert(
        "published_in".into(),
        format!(
            "{} + {} backdoor, trigger {}, victim {}, strength {}",
            manifest.model.name,
            opts.kind.label(),
            trigger_name,
            opts.victim,
            opts.strength
        )
        .into(),
    );
    table.insert("provenance".into(), toml::Value::Table(prov));
    let text = format!(
        "# Backdoored by `zooaudit redteam inject` from {} (sha256 {}): FOR EVALUATION ONLY.\n{}",
        manifest.model.name,
        original.resolved().sha256,
        toml::to_string(&table).map_err(other)?
    );
    zooaudit_reports::write_atomic(&manifest_path, text.as_bytes()).map_err(other)?;
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
    zooaudit_reports::write_atomic(
        &record_path,
        serde_json::to_string_pretty(&record)
            .map_err(other)?
            .as_bytes(),
    )
    .map_err(other)?;
    Ok(Injected {
        model: out.clone(),
        manifest: manifest_path,
        record_path,
        record,
    })
}

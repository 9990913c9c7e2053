//! Opening a model: reading and repairing the file, choosing its input and
//! outputs, checking their shapes, and settling how batches run.

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::ValueType;
use zooaudit_plugin_sdk::{ModelDescription, PluginError, Tensor};

use crate::{Batching, OpenOptions, build_session, graph, model_error, option_error};

fn tensor_of(name: &str, ty: &ValueType) -> Tensor {
    let (shape, elem) = match ty {
        ValueType::Tensor { ty, shape, .. } => (shape.iter().copied().collect(), ty.to_string()),
        other => (Vec::new(), other.to_string()),
    };
    Tensor {
        name: name.to_string(),
        shape,
        elem_type: elem,
    }
}

fn is_f32(t: &Tensor) -> bool {
    t.elem_type == "f32" || t.elem_type == "float32"
}

/// An opened ONNX embedding model.
pub struct OnnxModel {
    pub(crate) sessions: Vec<Mutex<Session>>,
    pub(crate) native_batch: bool,
    pub(crate) max_batch: usize,
    pub(crate) input_name: String,
    /// The returned outputs with their per-sample lengths (one, or all for `*`).
    pub(crate) output_names: Vec<(String, usize)>,
    pub(crate) sample_shape: Vec<i64>,
    pub(crate) sample_len: usize,
    pub(crate) dim: usize,
    pub(crate) description: ModelDescription,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("description", &self.description)
            .finish()
    }
}

fn pick(kind: &str, key: &str, wanted: Option<&str>, all: &[Tensor]) -> Result<usize, PluginError> {
    let names = || {
        all.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(w) => all.iter().position(|t| t.name == w).ok_or_else(|| {
            option_error(
                key,
                format!(
                    "the model has no {kind} named {} ({kind}s: {})",
                    zooaudit_formats::quote(w),
                    names()
                ),
            )
        }),
        None if all.len() == 1 => Ok(0),
        None => Err(option_error(
            key,
            format!(
                "the model has {} {kind}s ({}); name one",
                all.len(),
                names()
            ),
        )),
    }
}

/// Deterministic probe inputs in [0, 255].
pub(crate) fn probe_inputs(len: usize) -> Vec<f32> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 255.0
        })
        .collect()
}

/// The model file's bytes, refused before they are read when the file is
/// over `max_model_bytes`, and before ONNX Runtime sees them when the
/// graph has more than `max_nodes` nodes (or another of the wire reader's
/// limits). A graph the reader cannot parse is left to ONNX Runtime.
fn read_limited(path: &Path, opts: &OpenOptions) -> Result<Vec<u8>, PluginError> {
    let cannot = |e: std::io::Error| model_error(format!("cannot read {}: {e}", path.display()));
    let size = std::fs::metadata(path).map_err(cannot)?.len();
    if size > opts.max_model_bytes {
        return Err(model_error(format!(
            "{}: {size} bytes, over the adapter's limit of {} bytes (adapter option max_model_bytes)",
            path.display(),
            opts.max_model_bytes
        )));
    }
    let raw = std::fs::read(path).map_err(cannot)?;
    let limits = graph::read::Limits {
        max_nodes: opts.max_nodes,
        ..graph::read::Limits::default()
    };
    if let Err(e) = graph::read::read_model(&raw, &limits)
        && e.is_limit()
    {
        return Err(model_error(format!(
            "{}: refused before loading: {} (adapter option max_nodes)",
            path.display(),
            e.0
        )));
    }
    Ok(raw)
}

/// The model file at `path`, repaired (and resized to `spatial_size`), with
/// notes on what was changed.
fn prepared_bytes(path: &Path, opts: &OpenOptions) -> Result<(Vec<u8>, Vec<String>), PluginError> {
    let raw = read_limited(path, opts)?;
    let repaired = graph::repair(&raw).map_err(model_error)?;
    let mut notes = Vec::new();
    if !repaired.dropped_unused.is_empty() {
        notes.push(format!(
            "dropped {} graph inputs that no node reads",
            repaired.dropped_unused.len()
        ));
    }
    if !repaired.dropped_initializer_duplicates.is_empty() {
        notes.push(format!(
            "dropped {} graph inputs that duplicate initializers",
            repaired.dropped_initializer_duplicates.len()
        ));
    }
    let mut repaired = repaired;
    if let Some([h, w]) = opts.spatial_size {
        let info = graph::build::inspect(&repaired.bytes).map_err(model_error)?;
        let port = match opts.input_name.as_deref() {
            Some(n) => info.inputs.iter().find(|p| p.name == n),
            None if info.inputs.len() == 1 => info.inputs.first(),
            None => None,
        }
        .ok_or_else(|| option_error("spatial_size", "name the input (input.name) to resize"))?;
        let rank = port.dims.as_ref().map_or(0, Vec::len);
        let channels_first = matches!(
            port.dims.as_deref().and_then(|d| d.get(1)),
            Some(graph::build::Dim::Fixed(1 | 3))
        );
        if rank != 4 {
            return Err(option_error(
                "spatial_size",
                format!(
                    "input {} is not a 4-D image tensor",
                    zooaudit_formats::quote(&port.name)
                ),
            ));
        }
        let (hi, wi) = if channels_first { (2, 3) } else { (1, 2) };
        repaired.bytes = graph::set_input_dims(&repaired.bytes, &port.name, &[(hi, h), (wi, w)])
            .map_err(model_error)?;
        notes.push(format!(
            "input '{}' set to {h}×{w} (spatial_size)",
            port.name
        ));
    }
    if repaired.dropped_block_sizes > 0 {
        notes.push(format!(
            "dropped block_size from {} per-tensor DequantizeLinear nodes",
            repaired.dropped_block_sizes
        ));
    }
    Ok((repaired.bytes, notes))
}

/// The name and per-sample length of each returned output; each must be
/// float32 with fixed dims after the batch dimension.
fn output_lengths(returned: &[&Tensor]) -> Result<Vec<(String, usize)>, PluginError> {
    let mut output_names = Vec::new();
    for output in returned {
        if !is_f32(output) {
            return Err(model_error(format!(
                "output '{}' is {}, only float32 outputs are supported",
                output.name, output.elem_type
            )));
        }
        let len = output.shape.iter().skip(1).try_fold(1usize, |a, &d| {
            usize::try_from(d)
                .ok()
                .filter(|d| *d > 0)
                .and_then(|d| a.checked_mul(d))
        });
        let Some(len) = len.filter(|_| output.shape.len() >= 2) else {
            return Err(model_error(format!(
                "output '{}' has shape {:?}: expected [batch, dims...] with fixed dims",
                output.name, output.shape
            )));
        };
        output_names.push((output.name.clone(), len));
    }
    Ok(output_names)
}

/// The input's sample shape (without the batch dimension) and its number
/// of values; every dimension but the batch must be fixed.
fn sample_shape_of(input: &Tensor) -> Result<(Vec<i64>, usize), PluginError> {
    if input.shape.len() < 2 {
        return Err(model_error(format!(
            "input '{}' has shape {:?}; a batch dimension and a sample shape are needed",
            input.name, input.shape
        )));
    }
    let sample_shape: Vec<i64> = input.shape[1..].to_vec();
    let sample_len = sample_shape.iter().try_fold(1usize, |a, &d| {
        usize::try_from(d)
            .ok()
            .filter(|d| *d > 0)
            .and_then(|d| a.checked_mul(d))
    });
    let Some(sample_len) = sample_len else {
        return Err(model_error(format!(
            "input '{}' has shape {:?}: only the batch dimension may be free",
            input.name, input.shape
        )));
    };
    Ok((sample_shape, sample_len))
}

impl OnnxModel {
    /// Opens, repairs and prepares the model at `path`.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<OnnxModel, PluginError> {
        let (bytes, mut notes) = prepared_bytes(path, opts)?;
        let sessions_wanted = if opts.batching == Batching::PerSample {
            opts.sessions
        } else {
            1
        };
        let threads = (opts.threads / sessions_wanted).max(1);
        let first = build_session(&bytes, opts, threads)?;
        let inputs: Vec<Tensor> = first
            .inputs()
            .iter()
            .map(|o| tensor_of(o.name(), o.dtype()))
            .collect();
        let outputs: Vec<Tensor> = first
            .outputs()
            .iter()
            .map(|o| tensor_of(o.name(), o.dtype()))
            .collect();
        let input_index = pick("input", "input_name", opts.input_name.as_deref(), &inputs)?;
        let all_outputs = opts.output_name.as_deref() == Some("*");
        let output_index = if all_outputs {
            0
        } else {
            pick(
                "output",
                "output_name",
                opts.output_name.as_deref(),
                &outputs,
            )?
        };
        let input = inputs[input_index].clone();
        if !is_f32(&input) {
            return Err(model_error(format!(
                "input '{}' is {}, only float32 image inputs are supported",
                input.name, input.elem_type
            )));
        }
        let returned: Vec<&Tensor> = if all_outputs {
            outputs.iter().collect()
        } else {
            vec![&outputs[output_index]]
        };
        let output_names = output_lengths(&returned)?;
        if all_outputs {
            notes.push(format!(
                "returns all {} outputs concatenated per sample: {}",
                output_names.len(),
                output_names
                    .iter()
                    .map(|(n, l)| format!("{n}[{l}]"))
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
        }
        let (sample_shape, sample_len) = sample_shape_of(&input)?;
        let dim: usize = output_names.iter().map(|(_, l)| l).sum();
        let batch_dim = input.shape[0];
        if batch_dim > 1 {
            return Err(model_error(format!(
                "input '{}' has its batch dimension fixed to {batch_dim}; only 1 or free is supported",
                input.name
            )));
        }
        let mut model = OnnxModel {
            sessions: vec![Mutex::new(first)],
            native_batch: batch_dim < 0,
            max_batch: opts.max_batch,
            input_name: input.name.clone(),
            output_names,
            sample_shape,
            sample_len,
            dim,
            description: ModelDescription {
                inputs,
                outputs,
                input_index,
                output_index,
                embedding_dim: dim,
                batching: String::new(),
                notes,
            },
        };
        model.choose_batching(&bytes, opts, threads, sessions_wanted)?;
        Ok(model)
    }

    /// Runs per sample, natively, or native after freeing the batch
    /// dimension, as `opts.batching` asks and the graph allows; then adds the
    /// per-sample sessions and describes the choice.
    fn choose_batching(
        &mut self,
        bytes: &[u8],
        opts: &OpenOptions,
        threads: usize,
        sessions_wanted: usize,
    ) -> Result<(), PluginError> {
        match (opts.batching, self.native_batch) {
            (Batching::PerSample, _) => self.native_batch = false,
            (_, true) => {}
            (Batching::Native, false) => self.try_free_batch(bytes, opts, threads)?,
            // Measured (docs/BENCHMARKS.md): freed batches are never slower,
            // and 1.57× faster for SFace; keep batch 1 only if the check fails.
            (Batching::Auto, false) => {
                if let Err(e) = self.try_free_batch(bytes, opts, threads) {
                    self.description.notes.push(format!(
                        "kept batch 1: {}",
                        e.message.as_str().trim_start_matches("option batching: ")
                    ));
                }
            }
        }
        if !self.native_batch {
            for _ in 1..sessions_wanted {
                self.sessions
                    .push(Mutex::new(build_session(bytes, opts, threads)?));
            }
        }
        self.description.batching = if self.native_batch {
            format!("native batches of up to {}", self.max_batch)
        } else {
            format!(
                "per sample over {} session(s) × {threads} thread(s)",
                self.sessions.len()
            )
        };
        Ok(())
    }
}

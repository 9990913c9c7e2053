//! zooaudit's ONNX model adapter, on ONNX Runtime through `ort` (loaded
//! dynamically: `ORT_DYLIB_PATH` or the `ort_library` option names the
//! `libonnxruntime.so` to use; `scripts/setup.sh` fetches the pinned one).
//!
//! It opens model files *as shipped*:
//! - graph inputs that no node reads, or that duplicate an initializer, are
//!   dropped in memory ([`graph::repair`]); ONNX Runtime otherwise demands the
//!   dangling ones at run time (SFace as shipped has 29 of them);
//! - a model exported with its batch dimension fixed to 1 is still served in
//!   batches: by freeing the batch dimension ([`graph::free_batch`]) after
//!   checking on probe inputs that the freed graph gives the same numbers
//!   (`batching = "auto"`, the default, falls back to per-sample runs when it
//!   does not; `"native"` makes that an error), or per sample over one or more
//!   sessions (`"per-sample"`).
//!
//! Options (JSON from the manifest's `[model.options]`, plus `input_name` and
//! `output_name` from `[input]`/`[output]`): `execution_provider` (`cpu` |
//! `cuda`), `device_id`, `threads`, `batching` (`auto` | `native` |
//! `per-sample`), `sessions`, `max_batch`, `ort_library`, `optimization`
//! (`disable` | `basic` | `extended` | `all`), `spinning` (idle threads spin,
//! default true), `spatial_size` ([H, W]). Errors about an option start with
//! `option <key>:` so the host can point at the manifest field.
//!
//! `output_name = "*"` returns every output of the graph, each flattened per
//! sample and concatenated in graph order (so a detector with many heads,
//! such as YuNet's 12, runs through the same `embed` call); every output
//! must then be float32 with fixed dims after the batch dimension.

pub use zooaudit_onnx_graph as graph;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{TensorRef, ValueType};
use zooaudit_plugin_sdk::abi::{PluginModRef, error_code};
use zooaudit_plugin_sdk::{
    Descriptor, EmbeddingModel, ModelAdapter, ModelDescription, Options, PluginError, Tensor,
    model_adapter_module,
};

/// The plugin's root module.
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> PluginModRef {
    model_adapter_module::<OnnxAdapter>()
}

/// The ONNX adapter.
pub struct OnnxAdapter;

impl ModelAdapter for OnnxAdapter {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "onnx".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!(
                "ONNX models on ONNX Runtime (execution providers: cpu{})",
                if cfg!(feature = "cuda") { ", cuda" } else { "" }
            ),
            formats: vec!["onnx".into()],
        }
    }

    fn open(path: &Path, options: &Options) -> Result<Box<dyn EmbeddingModel>, PluginError> {
        let opts = OpenOptions::from_json(options)?;
        Ok(Box::new(OnnxModel::open(path, &opts)?))
    }
}

fn option_error(key: &str, message: impl std::fmt::Display) -> PluginError {
    PluginError::new(
        error_code::INVALID_INPUT,
        format!("option {key}: {message}"),
    )
}

fn model_error(message: impl std::fmt::Display) -> PluginError {
    PluginError::new(error_code::MODEL, message.to_string())
}

/// Execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda { device_id: i32 },
}

/// How batches are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Native batches when the model declares a free batch dimension or when
    /// a fixed batch of 1 can be freed (verified); otherwise per sample.
    Auto,
    /// Native batches; a batch dimension fixed to 1 is freed and verified.
    Native,
    /// One sample per run, spread over `sessions` sessions.
    PerSample,
}

/// Parsed adapter options.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub input_name: Option<String>,
    pub output_name: Option<String>,
    pub execution_provider: ExecutionProvider,
    pub threads: usize,
    pub batching: Batching,
    pub sessions: usize,
    pub max_batch: usize,
    pub ort_library: Option<PathBuf>,
    pub optimization: GraphOptimizationLevel,
    /// Run a fully convolutional model at this input height and width.
    pub spatial_size: Option<[u64; 2]>,
    /// Let idle intra-op threads spin (ONNX Runtime's default). Off when
    /// several models take turns on the same cores: spinning threads of one
    /// session then steal the cores the next one needs.
    pub spinning: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            input_name: None,
            output_name: None,
            execution_provider: ExecutionProvider::Cpu,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            batching: Batching::Auto,
            sessions: 1,
            max_batch: 32,
            ort_library: None,
            optimization: GraphOptimizationLevel::All,
            spatial_size: None,
            spinning: true,
        }
    }
}

impl OpenOptions {
    /// Parses the JSON options; unknown keys are errors.
    pub fn from_json(o: &Options) -> Result<Self, PluginError> {
        let mut opts = OpenOptions::default();
        let string = |k: &str, v: &serde_json::Value| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| option_error(k, "must be a string"))
        };
        let count = |k: &str, v: &serde_json::Value, max: u64| {
            v.as_u64()
                .filter(|n| (1..=max).contains(n))
                .map(|n| n as usize)
                .ok_or_else(|| option_error(k, format!("must be an integer in 1..={max}")))
        };
        let mut device_id = 0i32;
        let mut ep = "cpu".to_string();
        for (k, v) in o {
            match k.as_str() {
                "input_name" => opts.input_name = Some(string(k, v)?),
                "output_name" => opts.output_name = Some(string(k, v)?),
                "execution_provider" => ep = string(k, v)?,
                "device_id" => {
                    device_id = v
                        .as_u64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| option_error(k, "must be a non-negative integer"))?
                }
                "threads" => opts.threads = count(k, v, 1024)?,
                "sessions" => opts.sessions = count(k, v, 256)?,
                "max_batch" => opts.max_batch = count(k, v, 65536)?,
                "ort_library" => opts.ort_library = Some(PathBuf::from(string(k, v)?)),
                "spinning" => {
                    opts.spinning = v
                        .as_bool()
                        .ok_or_else(|| option_error(k, "must be true or false"))?
                }
                "spatial_size" => {
                    let dims: Option<Vec<u64>> = v.as_array().map(|a| {
                        a.iter()
                            .filter_map(|d| d.as_u64().filter(|d| (1..=16384).contains(d)))
                            .collect()
                    });
                    match dims.as_deref() {
                        Some([h, w]) if v.as_array().is_some_and(|a| a.len() == 2) => {
                            opts.spatial_size = Some([*h, *w])
                        }
                        _ => {
                            return Err(option_error(
                                k,
                                "must be [height, width], each in 1..=16384",
                            ));
                        }
                    }
                }
                "batching" => {
                    opts.batching = match string(k, v)?.as_str() {
                        "auto" => Batching::Auto,
                        "native" => Batching::Native,
                        "per-sample" => Batching::PerSample,
                        other => {
                            return Err(option_error(
                                k,
                                format!("'{other}' is not one of auto, native, per-sample"),
                            ));
                        }
                    }
                }
                "optimization" => {
                    opts.optimization = match string(k, v)?.as_str() {
                        "disable" => GraphOptimizationLevel::Disable,
                        "basic" => GraphOptimizationLevel::Level1,
                        "extended" => GraphOptimizationLevel::Level2,
                        "all" => GraphOptimizationLevel::All,
                        other => {
                            return Err(option_error(
                                k,
                                format!("'{other}' is not one of disable, basic, extended, all"),
                            ));
                        }
                    }
                }
                _ => return Err(option_error(k, "unknown option for the onnx adapter")),
            }
        }
        opts.execution_provider = match ep.as_str() {
            "cpu" => ExecutionProvider::Cpu,
            "cuda" => ExecutionProvider::Cuda { device_id },
            other => {
                return Err(option_error(
                    "execution_provider",
                    format!("'{other}' is not one of cpu, cuda"),
                ));
            }
        };
        Ok(opts)
    }
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The ONNX Runtime library to load: the option, else `ORT_DYLIB_PATH`.
fn ort_library(opts: &OpenOptions) -> Result<PathBuf, PluginError> {
    if let Some(p) = &opts.ort_library {
        return Ok(p.clone());
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(PluginError::new(
            error_code::UNSUPPORTED,
            "ONNX Runtime library not found: set ORT_DYLIB_PATH to libonnxruntime.so \
             (scripts/setup.sh fetches the pinned one into .zooaudit/lib)",
        )),
    }
}

/// Loads ONNX Runtime once per process.
pub fn environment(opts: &OpenOptions) -> Result<&'static Environment, PluginError> {
    if ENVIRONMENT.get().is_none() {
        let lib = ort_library(opts)?;
        let _ = ENVIRONMENT.get_or_init(|| {
            if !lib.is_file() {
                return Err(format!(
                    "ONNX Runtime library {} does not exist",
                    lib.display()
                ));
            }
            ort::init_from(&lib)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?
                .with_name("zooaudit")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))
        });
    }
    match ENVIRONMENT.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(PluginError::new(error_code::UNSUPPORTED, e.clone())),
        None => Err(PluginError::new(
            error_code::INTERNAL,
            "ONNX Runtime not initialised",
        )),
    }
}

/// Builds a session from model bytes.
pub fn build_session(
    bytes: &[u8],
    opts: &OpenOptions,
    threads: usize,
) -> Result<Session, PluginError> {
    let env = environment(opts)?;
    let mut builder = Session::builder(env)
        .map_err(model_error)?
        .with_optimization_level(opts.optimization)
        .map_err(model_error)?
        .with_intra_threads(threads)
        .map_err(model_error)?
        .with_intra_op_spinning(opts.spinning)
        .map_err(model_error)?
        // Run-time failures come back as errors; ONNX Runtime's own log
        // would print them a second time on stderr.
        .with_log_level(ort::logging::LogLevel::Fatal)
        .map_err(model_error)?;
    match opts.execution_provider {
        ExecutionProvider::Cpu => {}
        ExecutionProvider::Cuda { device_id } => {
            builder = with_cuda(builder, device_id)?;
        }
    }
    builder.commit_from_memory(bytes).map_err(model_error)
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    device_id: i32,
) -> Result<ort::session::builder::SessionBuilder, PluginError> {
    builder
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()])
        .map_err(|e| model_error(format!("cannot use the CUDA execution provider: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _device_id: i32,
) -> Result<ort::session::builder::SessionBuilder, PluginError> {
    Err(PluginError::new(
        error_code::UNSUPPORTED,
        "option execution_provider: this build of the onnx adapter was compiled without CUDA \
         support (rebuild zooaudit-plugin-onnx with --features cuda)",
    ))
}

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
    sessions: Vec<Mutex<Session>>,
    native_batch: bool,
    max_batch: usize,
    input_name: String,
    /// The returned outputs with their per-sample lengths (one, or all for `*`).
    output_names: Vec<(String, usize)>,
    sample_shape: Vec<i64>,
    sample_len: usize,
    dim: usize,
    description: ModelDescription,
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
                format!("the model has no {kind} named '{w}' ({kind}s: {})", names()),
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
fn probe_inputs(len: usize) -> Vec<f32> {
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

impl OnnxModel {
    /// Opens, repairs and prepares the model at `path`.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<OnnxModel, PluginError> {
        let raw = std::fs::read(path)
            .map_err(|e| model_error(format!("cannot read {}: {e}", path.display())))?;
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
                    format!("input '{}' is not a 4-D image tensor", port.name),
                ));
            }
            let (hi, wi) = if channels_first { (2, 3) } else { (1, 2) };
            repaired.bytes =
                graph::set_input_dims(&repaired.bytes, &port.name, &[(hi, h), (wi, w)])
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
        let sessions_wanted = if opts.batching == Batching::PerSample {
            opts.sessions
        } else {
            1
        };
        let threads = (opts.threads / sessions_wanted).max(1);
        let first = build_session(&repaired.bytes, opts, threads)?;
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
        let mut output_names = Vec::new();
        for output in &returned {
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
        match (opts.batching, model.native_batch) {
            (Batching::PerSample, _) => model.native_batch = false,
            (_, true) => {}
            (Batching::Native, false) => model.try_free_batch(&repaired.bytes, opts, threads)?,
            // Measured (docs/BENCHMARKS.md): freed batches are never slower,
            // and 1.57× faster for SFace; keep batch 1 only if the check fails.
            (Batching::Auto, false) => {
                if let Err(e) = model.try_free_batch(&repaired.bytes, opts, threads) {
                    model.description.notes.push(format!(
                        "kept batch 1: {}",
                        e.message.as_str().trim_start_matches("option batching: ")
                    ));
                }
            }
        }
        if !model.native_batch {
            for _ in 1..sessions_wanted {
                model
                    .sessions
                    .push(Mutex::new(build_session(&repaired.bytes, opts, threads)?));
            }
        }
        model.description.batching = if model.native_batch {
            format!("native batches of up to {}", model.max_batch)
        } else {
            format!(
                "per sample over {} session(s) × {threads} thread(s)",
                model.sessions.len()
            )
        };
        Ok(model)
    }

    /// Frees the batch dimension and checks, on probe inputs, that a batched
    /// run gives what per-sample runs give. On success the model runs native
    /// batches; otherwise it is an error (the caller asked for `native`).
    fn try_free_batch(
        &mut self,
        bytes: &[u8],
        opts: &OpenOptions,
        threads: usize,
    ) -> Result<(), PluginError> {
        let freed = graph::free_batch(bytes, &self.input_name).map_err(model_error)?;
        let session = build_session(&freed, opts, threads).map_err(|e| {
            option_error(
                "batching",
                format!("the batch dimension cannot be freed: {}", e.message),
            )
        })?;
        let probe = probe_inputs(self.sample_len * 3);
        let single = self.run_per_sample(&self.sessions[0], &probe, 3)?;
        let candidate = Mutex::new(session);
        let batched = self.run_native(&candidate, &probe, 3).map_err(|e| {
            option_error(
                "batching",
                format!("the batch dimension cannot be freed: {}", e.message),
            )
        })?;
        let scale = single.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = single
            .iter()
            .zip(&batched)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        if batched.len() != single.len() || worst.is_nan() || worst > 1e-4 * scale {
            return Err(option_error(
                "batching",
                format!(
                    "the batch dimension cannot be freed: batched outputs differ from per-sample ones (max |Δ| = {worst})"
                ),
            ));
        }
        self.sessions = vec![candidate];
        self.native_batch = true;
        self.description
            .notes
            .push("freed the batch dimension (verified on probe inputs)".into());
        Ok(())
    }

    fn run_native(
        &self,
        session: &Mutex<Session>,
        input: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, PluginError> {
        let mut shape = Vec::with_capacity(self.sample_shape.len() + 1);
        shape.push(batch as i64);
        shape.extend_from_slice(&self.sample_shape);
        let tensor = TensorRef::from_array_view((shape, input)).map_err(model_error)?;
        let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = s
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(model_error)?;
        let mut out = vec![0f32; batch * self.dim];
        let mut offset = 0;
        for (name, len) in &self.output_names {
            let (_, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(model_error)?;
            if data.len() != batch * len {
                return Err(model_error(format!(
                    "output '{name}' has {} values for a batch of {batch}; expected {}",
                    data.len(),
                    batch * len
                )));
            }
            for b in 0..batch {
                out[b * self.dim + offset..b * self.dim + offset + len]
                    .copy_from_slice(&data[b * len..(b + 1) * len]);
            }
            offset += len;
        }
        Ok(out)
    }

    fn run_per_sample(
        &self,
        session: &Mutex<Session>,
        input: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, PluginError> {
        let mut out = Vec::with_capacity(batch * self.dim);
        for sample in input.chunks_exact(self.sample_len).take(batch) {
            out.extend(self.run_native(session, sample, 1)?);
        }
        Ok(out)
    }
}

impl EmbeddingModel for OnnxModel {
    fn describe(&self) -> ModelDescription {
        self.description.clone()
    }

    fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, PluginError> {
        if batch.checked_mul(self.sample_len) != Some(input.len()) {
            return Err(PluginError::new(
                error_code::INVALID_INPUT,
                format!(
                    "{} values given for a batch of {batch} samples of {} values ({:?})",
                    input.len(),
                    self.sample_len,
                    self.sample_shape
                ),
            ));
        }
        if batch == 0 {
            return Ok(Vec::new());
        }
        if self.native_batch {
            let mut out = Vec::with_capacity(batch * self.dim);
            for chunk in input.chunks(self.max_batch * self.sample_len) {
                out.extend(self.run_native(
                    &self.sessions[0],
                    chunk,
                    chunk.len() / self.sample_len,
                )?);
            }
            return Ok(out);
        }
        if self.sessions.len() == 1 || batch == 1 {
            return self.run_per_sample(&self.sessions[0], input, batch);
        }
        // Spread contiguous shares of the batch over the sessions.
        let per = batch.div_ceil(self.sessions.len());
        let results: Vec<Result<Vec<f32>, PluginError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = input
                .chunks(per * self.sample_len)
                .zip(&self.sessions)
                .map(|(chunk, session)| {
                    scope.spawn(move || {
                        self.run_per_sample(session, chunk, chunk.len() / self.sample_len)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(PluginError::new(
                            error_code::PANIC,
                            "session worker panicked",
                        ))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(batch * self.dim);
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

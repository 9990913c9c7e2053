//! The plugin author's side of zooaudit's plugin system.
//!
//! A plugin implements plain Rust traits ([`ModelAdapter`] + [`EmbeddingModel`],
//! or [`DetectorStrategy`] + [`PairDetector`]) and exports them with one
//! function:
//!
//! ```ignore
//! #[abi_stable::export_root_module]
//! fn zooaudit_plugin() -> zooaudit_plugin_sdk::abi::PluginModRef {
//!     zooaudit_plugin_sdk::model_adapter_module::<MyAdapter>()
//! }
//! ```
//!
//! Everything that crosses into the host goes through this crate's glue, which
//! catches panics and turns them into [`PluginError`]s with code
//! [`abi::error_code::PANIC`]: a panicking plugin never aborts the host. (A
//! panic may not unwind across an `extern "C"` boundary; the glue stops it on
//! the plugin's side.) Plugins never compile the host, and the host never
//! compiles this crate.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use abi_stable::prefix_type::PrefixTypeTrait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RResult, RSlice, RString, RVec};

pub use abi_stable;
pub use zooaudit_plugin_abi as abi;

use abi::{
    Detector_TO, DetectorBox, EmbeddingsRef, Model_TO, ModelBox, OpenRequest, PluginDescriptor,
    PluginKind, PluginMod, PluginModRef, error_code,
};
pub use abi::{ModelInfo, PluginError};

/// JSON options handed to a plugin.
pub type Options = serde_json::Map<String, serde_json::Value>;

/// What a plugin says about itself.
#[derive(Debug, Clone)]
pub struct Descriptor {
    pub name: String,
    pub version: String,
    pub description: String,
    pub formats: Vec<String>,
}

/// A tensor's name and shape (`-1` = free dimension).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub elem_type: String,
}

/// What an opened model looks like.
#[derive(Debug, Clone)]
pub struct ModelDescription {
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
    pub input_index: usize,
    pub output_index: usize,
    pub embedding_dim: usize,
    pub batching: String,
    pub notes: Vec<String>,
}

/// A plugin that opens model files.
pub trait ModelAdapter: 'static {
    fn descriptor() -> Descriptor;
    fn open(path: &Path, options: &Options) -> Result<Box<dyn EmbeddingModel>, PluginError>;
}

/// An opened model.
pub trait EmbeddingModel: Send + Sync + 'static {
    fn describe(&self) -> ModelDescription;
    /// `input` holds `batch` samples back to back; returns `batch × dim` floats.
    fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, PluginError>;
}

/// A plugin that scores the agreement of paired embeddings.
pub trait DetectorStrategy: 'static {
    fn descriptor() -> Descriptor;
    fn create(options: &Options) -> Result<Box<dyn PairDetector>, PluginError>;
}

/// A borrowed, validated row-major matrix.
#[derive(Debug, Clone, Copy)]
pub struct Matrix<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub dim: usize,
}

impl<'a> Matrix<'a> {
    /// Validates `data.len() == rows × dim`.
    pub fn new(data: &'a [f32], rows: usize, dim: usize) -> Result<Self, PluginError> {
        if rows.checked_mul(dim) != Some(data.len()) {
            return Err(PluginError::new(
                error_code::INVALID_INPUT,
                format!("matrix of {rows}×{dim} given {} values", data.len()),
            ));
        }
        Ok(Matrix { data, rows, dim })
    }

    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    fn from_abi(m: EmbeddingsRef<'a>) -> Result<Self, PluginError> {
        let rows = usize::try_from(m.rows).map_err(|_| invalid("row count overflows"))?;
        let dim = usize::try_from(m.dim).map_err(|_| invalid("dimension overflows"))?;
        Matrix::new(m.data.as_slice(), rows, dim)
    }
}

/// A fitted (or fittable) detector. The SDK hands `fit` and `score` only
/// matrices of equal row counts (row `i` of the probe and of the reference
/// are the same face); a mismatch is refused before the detector is called.
pub trait PairDetector: Send + 'static {
    /// Fits on clean pairs; returns a JSON fit report.
    fn fit(
        &mut self,
        probe: Matrix<'_>,
        reference: Matrix<'_>,
    ) -> Result<serde_json::Value, PluginError>;
    /// One score per row, higher = more agreement.
    fn score(&self, probe: Matrix<'_>, reference: Matrix<'_>) -> Result<Vec<f32>, PluginError>;

    /// The fitted state, as bytes [`PairDetector::restore`] reads back: a
    /// pair bundle stores them and the run-time guard restores the detector
    /// from them instead of fitting again. UTF-8 JSON is shown as JSON in the
    /// bundle; other bytes are stored as base64. The default refuses.
    fn export(&self) -> Result<Vec<u8>, PluginError> {
        Err(PluginError::new(
            error_code::UNSUPPORTED,
            "this detector does not export its fitted state",
        ))
    }

    /// Replaces the state with one [`PairDetector::export`] wrote (possibly
    /// by another process, or another version of the plugin: refuse what
    /// you cannot read with [`invalid`]). The default refuses.
    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let _ = state;
        Err(PluginError::new(
            error_code::UNSUPPORTED,
            "this detector cannot restore a fitted state",
        ))
    }
}

/// Shorthand for an [`error_code::INVALID_INPUT`] error.
pub fn invalid(message: impl Into<String>) -> PluginError {
    PluginError::new(error_code::INVALID_INPUT, message.into())
}

/// An error about one of a model adapter's options, `option <key>:
/// message` ([`error_code::INVALID_INPUT`]). The host reads that prefix and
/// reports the error against the manifest field (`model.options.<key>`, or
/// `input.name` / `output.name` for `input_name` / `output_name`).
pub fn option_error(key: &str, message: impl std::fmt::Display) -> PluginError {
    PluginError::new(
        error_code::INVALID_INPUT,
        format!("option {key}: {message}"),
    )
}

/// Shorthand for an [`error_code::MODEL`] error: the model cannot be
/// opened or run.
pub fn model_error(message: impl std::fmt::Display) -> PluginError {
    PluginError::new(error_code::MODEL, message.to_string())
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Runs `f`, turning a panic into a [`PluginError`] with code `PANIC`.
pub fn guard<R>(what: &str, f: impl FnOnce() -> Result<R, PluginError>) -> Result<R, PluginError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => Err(PluginError::new(
            error_code::PANIC,
            format!(
                "plugin panicked in {what}: {}",
                panic_message(payload.as_ref())
            ),
        )),
    }
}

fn to_rresult<T>(r: Result<T, PluginError>) -> RResult<T, PluginError> {
    match r {
        Ok(v) => RResult::ROk(v),
        Err(e) => RResult::RErr(e),
    }
}

fn descriptor_to_abi(d: Descriptor, kind: PluginKind) -> PluginDescriptor {
    PluginDescriptor {
        name: d.name.into(),
        version: d.version.into(),
        kind,
        description: d.description.into(),
        formats: d.formats.into_iter().map(RString::from).collect(),
    }
}

fn describe_guarded(f: impl FnOnce() -> Descriptor, kind: PluginKind) -> PluginDescriptor {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(d) => descriptor_to_abi(d, kind),
        Err(payload) => PluginDescriptor {
            name: RString::new(),
            version: RString::new(),
            kind,
            description: format!(
                "plugin panicked in describe: {}",
                panic_message(payload.as_ref())
            )
            .into(),
            formats: RVec::new(),
        },
    }
}

fn parse_options(json: &str) -> Result<Options, PluginError> {
    if json.trim().is_empty() {
        return Ok(Options::new());
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(invalid("options must be a JSON object")),
        Err(e) => Err(invalid(format!("options are not valid JSON: {e}"))),
    }
}

fn tensor_to_abi(t: Tensor) -> abi::TensorInfo {
    abi::TensorInfo {
        name: t.name.into(),
        shape: t.shape.into_iter().collect(),
        elem_type: t.elem_type.into(),
    }
}

fn description_to_abi(d: ModelDescription) -> ModelInfo {
    ModelInfo {
        inputs: d.inputs.into_iter().map(tensor_to_abi).collect(),
        outputs: d.outputs.into_iter().map(tensor_to_abi).collect(),
        input_index: u32::try_from(d.input_index).unwrap_or(u32::MAX),
        output_index: u32::try_from(d.output_index).unwrap_or(u32::MAX),
        embedding_dim: d.embedding_dim as u64,
        batching: d.batching.into(),
        notes: d.notes.into_iter().map(RString::from).collect(),
    }
}

struct ModelShim {
    inner: Box<dyn EmbeddingModel>,
    info: ModelInfo,
}

impl abi::Model for ModelShim {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn embed(&self, input: RSlice<'_, f32>, batch: u64) -> RResult<RVec<f32>, PluginError> {
        to_rresult(guard("embed", || {
            let batch = usize::try_from(batch).map_err(|_| invalid("batch overflows"))?;
            self.inner.embed(input.as_slice(), batch).map(RVec::from)
        }))
    }
}

struct DetectorShim(Box<dyn PairDetector>);

/// The probe and reference matrices of one call, validated: row `i` of one
/// is row `i` of the other, so they hold the same number of rows.
fn paired<'a>(
    probe: EmbeddingsRef<'a>,
    reference: EmbeddingsRef<'a>,
) -> Result<(Matrix<'a>, Matrix<'a>), PluginError> {
    let (p, r) = (Matrix::from_abi(probe)?, Matrix::from_abi(reference)?);
    if p.rows != r.rows {
        return Err(invalid(format!(
            "probe has {} rows but reference has {}",
            p.rows, r.rows
        )));
    }
    Ok((p, r))
}

impl abi::Detector for DetectorShim {
    fn fit(
        &mut self,
        probe: EmbeddingsRef<'_>,
        reference: EmbeddingsRef<'_>,
    ) -> RResult<RString, PluginError> {
        to_rresult(guard("fit", || {
            let (probe, reference) = paired(probe, reference)?;
            let report = self.0.fit(probe, reference)?;
            Ok(RString::from(report.to_string()))
        }))
    }

    fn score(
        &self,
        probe: EmbeddingsRef<'_>,
        reference: EmbeddingsRef<'_>,
    ) -> RResult<RVec<f32>, PluginError> {
        to_rresult(guard("score", || {
            let (probe, reference) = paired(probe, reference)?;
            let scores = self.0.score(probe, reference)?;
            Ok(RVec::from(scores))
        }))
    }

    fn export_state(&self) -> RResult<RVec<u8>, PluginError> {
        to_rresult(guard("export", || self.0.export().map(RVec::from)))
    }

    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), PluginError> {
        to_rresult(guard("restore", || self.0.restore(state.as_slice())))
    }
}

fn unsupported(what: &str) -> PluginError {
    PluginError::new(
        error_code::UNSUPPORTED,
        format!("this plugin is not a {what}"),
    )
}

extern "C" fn adapter_describe<T: ModelAdapter>() -> PluginDescriptor {
    describe_guarded(T::descriptor, PluginKind::ModelAdapter)
}

extern "C" fn adapter_open<T: ModelAdapter>(req: OpenRequest) -> RResult<ModelBox, PluginError> {
    to_rresult(guard("open", || {
        let options = parse_options(req.options_json.as_str())?;
        let inner = T::open(Path::new(req.path.as_str()), &options)?;
        let info = description_to_abi(inner.describe());
        Ok(Model_TO::from_value(ModelShim { inner, info }, TD_Opaque))
    }))
}

extern "C" fn no_detector(_options: RString) -> RResult<DetectorBox, PluginError> {
    RResult::RErr(unsupported("detector strategy"))
}

extern "C" fn detector_describe<T: DetectorStrategy>() -> PluginDescriptor {
    describe_guarded(T::descriptor, PluginKind::DetectorStrategy)
}

extern "C" fn detector_new<T: DetectorStrategy>(
    options: RString,
) -> RResult<DetectorBox, PluginError> {
    to_rresult(guard("new_detector", || {
        let options = parse_options(options.as_str())?;
        let inner = T::create(&options)?;
        Ok(Detector_TO::from_value(DetectorShim(inner), TD_Opaque))
    }))
}

extern "C" fn no_model(_req: OpenRequest) -> RResult<ModelBox, PluginError> {
    RResult::RErr(unsupported("model adapter"))
}

/// The root module of a model-adapter plugin.
pub fn model_adapter_module<T: ModelAdapter>() -> PluginModRef {
    PluginMod {
        describe: adapter_describe::<T>,
        open_model: adapter_open::<T>,
        new_detector: no_detector,
    }
    .leak_into_prefix()
}

/// The root module of a detector-strategy plugin.
pub fn detector_module<T: DetectorStrategy>() -> PluginModRef {
    PluginMod {
        describe: detector_describe::<T>,
        open_model: no_model,
        new_detector: detector_new::<T>,
    }
    .leak_into_prefix()
}

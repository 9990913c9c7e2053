//! The stable ABI between the zooaudit host and its dynamically loaded plugins.
//!
//! This crate holds *types only* (no I/O) and depends on `abi_stable` alone, so
//! that a plugin author compiles against it without compiling the host, and the
//! host never compiles a plugin SDK. Its Cargo version **is** the plugin ABI
//! version: `abi_stable` embeds it in every plugin (`package_version_strings!`)
//! and the host refuses a plugin whose major differs. A plugin of an older
//! minor loads; what it lacks answers with a one-line `UNSUPPORTED` error. The ABI moves independently of the product version, so a
//! zooaudit release does not break the plugins built for earlier ones.
//!
//! Rules for changing this crate:
//! - New functions go at the end of [`PluginMod`] (after the
//!   `last_prefix_field`); older plugins then read as `None`.
//!   New trait-object methods go after a trait's `last_prefix_field` with a
//!   default body, which is what a plugin built before them answers.
//!   Bump the minor version.
//!
//! - abi_stable's layout check accepts a plugin built for a *newer* minor,
//!   not an older one; so the interface of every earlier minor stays here,
//!   frozen ([`v1_0`]), and the host loads a plugin through the newest one
//!   it matches.
//!
//! History: **1.0** model adapters and detectors (fit, score); **1.1** a
//! detector exports its fitted state and is restored from it
//! ([`Detector::export_state`], [`Detector::restore_state`]), so a pair
//! bundle can carry any detector, not only a linear translator.
//! - Anything else that changes a type's layout bumps the major.
//!
//! Two kinds of plugin exist, told apart by [`PluginDescriptor::kind`]:
//! - a *model adapter* opens a model file and embeds batches of images that the
//!   host has already decoded and preprocessed ([`Model`]);
//! - a *detector strategy* fits what it needs on paired probe/reference
//!   embeddings and scores samples ([`Detector`]).
//!
//! Extensible, non-hot-path data (options, fit reports) crosses the boundary as
//! JSON text, so adding an option never changes the ABI. Bulk numbers cross as
//! [`RSlice`]/[`RVec`] of `f32`.
#![allow(non_local_definitions)]

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RSlice, RString, RVec},
};

/// Which role a plugin plays.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginKind {
    /// Opens model files and embeds preprocessed images.
    ModelAdapter = 0,
    /// Fits on paired embeddings and scores samples.
    DetectorStrategy = 1,
}

/// What a plugin says about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginDescriptor {
    /// Unique name, used by manifests (`adapter = "onnx"`) and audit files.
    pub name: RString,
    /// The plugin's own version (not the ABI version).
    pub version: RString,
    pub kind: PluginKind,
    /// One line for `zooaudit plugins`.
    pub description: RString,
    /// Model adapters: the formats/file extensions they open (e.g. `onnx`).
    /// Detector strategies: the method names they accept.
    pub formats: RVec<RString>,
}

/// Error codes carried by [`PluginError::code`].
pub mod error_code {
    /// The caller passed something invalid (options, shapes, names).
    pub const INVALID_INPUT: u32 = 1;
    /// The model file could not be read or run.
    pub const MODEL: u32 = 2;
    /// The plugin does not support what was asked (e.g. wrong plugin kind,
    /// a backend not compiled in).
    pub const UNSUPPORTED: u32 = 3;
    /// The plugin panicked; the panic was caught inside the plugin.
    pub const PANIC: u32 = 4;
    /// Anything else.
    pub const INTERNAL: u32 = 5;
    /// The numbers were not finite (NaN/inf) or degenerate.
    pub const NUMERIC: u32 = 6;
}

/// An error returned by a plugin. `code` is one of [`error_code`]; unknown
/// codes are treated as internal errors by the host.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginError {
    pub code: u32,
    pub message: RString,
}

impl PluginError {
    pub fn new(code: u32, message: impl Into<RString>) -> Self {
        PluginError {
            code,
            message: message.into(),
        }
    }
}

/// A tensor's name and shape; `-1` marks a free dimension.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: RString,
    pub shape: RVec<i64>,
    /// ONNX-style element type name, e.g. `float32`.
    pub elem_type: RString,
}

/// What an opened model looks like, and how the adapter runs it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct ModelInfo {
    /// Every real input of the model (after any repair the adapter made).
    pub inputs: RVec<TensorInfo>,
    /// Every output of the model.
    pub outputs: RVec<TensorInfo>,
    /// The input the adapter feeds (index into `inputs`).
    pub input_index: u32,
    /// The output the adapter returns (index into `outputs`).
    pub output_index: u32,
    /// Length of one embedding.
    pub embedding_dim: u64,
    /// How batches are executed, e.g. `native-batch` or `per-sample x2 sessions`.
    pub batching: RString,
    /// Human-readable notes about what the adapter did to open the file
    /// (e.g. "dropped 29 graph inputs that no node reads").
    pub notes: RVec<RString>,
}

/// A request to open a model.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct OpenRequest {
    /// Path of the model file, already verified by the host (sha256).
    pub path: RString,
    /// JSON object of options (input/output names, execution provider, threads, ...).
    pub options_json: RString,
}

/// A borrowed matrix of embeddings, row-major, `rows × dim`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct EmbeddingsRef<'a> {
    pub data: RSlice<'a, f32>,
    pub rows: u64,
    pub dim: u64,
}

/// An opened embedding model.
#[sabi_trait]
pub trait Model: Send + Sync {
    /// Shapes, names and how batches are run.
    fn info(&self) -> ModelInfo;

    /// Embeds `batch` samples. `input` holds `batch` samples back to back, each
    /// laid out exactly as the model's input without its batch dimension.
    /// Returns `batch × embedding_dim` floats, the raw model output.
    #[sabi(last_prefix_field)]
    fn embed(&self, input: RSlice<'_, f32>, batch: u64) -> RResult<RVec<f32>, PluginError>;
}

/// An owned, type-erased [`Model`].
pub type ModelBox = Model_TO<'static, RBox<()>>;

/// A detector strategy instance.
#[sabi_trait]
pub trait Detector: Send {
    /// Fits on clean paired embeddings (row i of both is the same image).
    /// Returns a JSON fit report (e.g. held-out fidelity).
    fn fit(
        &mut self,
        probe: EmbeddingsRef<'_>,
        reference: EmbeddingsRef<'_>,
    ) -> RResult<RString, PluginError>;

    /// One agreement score per row; higher means the pair agrees more.
    #[sabi(last_prefix_field)]
    fn score(
        &self,
        probe: EmbeddingsRef<'_>,
        reference: EmbeddingsRef<'_>,
    ) -> RResult<RVec<f32>, PluginError>;

    /// ABI 1.1: the fitted state as bytes that [`Detector::restore_state`]
    /// of the same plugin reads back (a pair bundle stores them). The
    /// default is an `UNSUPPORTED` error (a detector with nothing to export);
    /// a plugin built for ABI 1.0 has no such method at all, and the host
    /// answers for it (see [`v1_0`]).
    fn export_state(&self) -> RResult<RVec<u8>, PluginError> {
        RResult::RErr(PluginError::new(error_code::UNSUPPORTED, NOT_EXPORTABLE))
    }

    /// ABI 1.1: replaces the detector's state with one exported by
    /// [`Detector::export_state`]; afterwards `score` works without `fit`.
    /// The default is an `UNSUPPORTED` error.
    fn restore_state(&mut self, state: RSlice<'_, u8>) -> RResult<(), PluginError> {
        let _ = state;
        RResult::RErr(PluginError::new(error_code::UNSUPPORTED, NOT_EXPORTABLE))
    }
}

/// What the host answers when a detector of a plugin built for ABI 1.0 is
/// asked to export or restore its state.
pub const NO_EXPORT: &str = "the plugin was built for plugin ABI 1.0, which cannot export or restore a detector's state (needs 1.1)";

/// The default [`Detector::export_state`] and [`Detector::restore_state`].
pub const NOT_EXPORTABLE: &str = "this detector does not export or restore its fitted state";

/// An owned, type-erased [`Detector`].
pub type DetectorBox = Detector_TO<'static, RBox<()>>;

/// The root module every plugin exports (`#[export_root_module]`).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// Name, version, kind and formats.
    pub describe: extern "C" fn() -> PluginDescriptor,
    /// Opens a model (model adapters; others return `UNSUPPORTED`).
    pub open_model: extern "C" fn(request: OpenRequest) -> RResult<ModelBox, PluginError>,
    /// Creates a detector from JSON options (detector strategies; others
    /// return `UNSUPPORTED`).
    #[sabi(last_prefix_field)]
    pub new_detector: extern "C" fn(options_json: RString) -> RResult<DetectorBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "zooaudit_plugin";
    const NAME: &'static str = "zooaudit_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

pub mod v1_0;

/// The ABI version this crate was compiled as (its Cargo version).
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

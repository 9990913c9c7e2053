//! The host side of zooaudit's plugin system.
//!
//! - **Discovery**: plugin files are shared libraries named
//!   `libzooaudit_plugin_*.so` (`.dylib`, or `zooaudit_plugin_*.dll`) found in,
//!   in order: the `--plugin-dir` directories, the directories of
//!   `ZOOAUDIT_PLUGIN_PATH`, and the directory beside the running binary.
//!   The first plugin of a given name wins; later ones are reported as shadowed.
//! - **Verification**: every file's sha256 is computed *before* it is loaded
//!   (abi_stable assumes benign plugins; an audit tool records what it ran),
//!   and may be checked against a pin.
//! - **Refusal**: a plugin built for another ABI major (or an older minor), or
//!   whose root module's layout differs from the host's, is refused with one
//!   line naming the file and both versions. Nothing of it is called.
//! - **Calls**: errors returned by plugins become [`HostError::Plugin`]; panics
//!   are caught on the plugin's side by the SDK glue and arrive as errors with
//!   code `PANIC`, so the host lives on.

use std::fmt;
use std::path::{Path, PathBuf};

use abi_stable::library::{LibraryError, RootModule, lib_header_from_path};
use abi_stable::std_types::{RResult, RSlice, RString};
use zooaudit_plugin_abi::{
    ABI_VERSION, DetectorBox, EmbeddingsRef, ModelBox, OpenRequest, PluginError, PluginKind,
    PluginModRef, error_code,
};

/// The environment variable listing extra plugin directories.
pub const PLUGIN_PATH_ENV: &str = "ZOOAUDIT_PLUGIN_PATH";

/// Errors of the plugin host. Every message is one line naming the file or plugin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    #[error("{path}: cannot read plugin file: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: cannot load plugin: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: not a zooaudit plugin (it exports no zooaudit root module)")]
    NotAPlugin { path: PathBuf },
    #[error(
        "{path}: plugin was built for zooaudit plugin ABI {plugin_abi}, not compatible with this host's ABI {host_abi}"
    )]
    IncompatibleAbi {
        path: PathBuf,
        plugin_abi: String,
        host_abi: String,
    },
    #[error(
        "{path}: plugin's root-module layout differs from this host's (plugin ABI {plugin_abi}, host ABI {host_abi}): {detail}"
    )]
    LayoutMismatch {
        path: PathBuf,
        plugin_abi: String,
        host_abi: String,
        detail: String,
    },
    #[error("{path}: plugin uses an incompatible abi_stable runtime: {detail}")]
    AbiStableMismatch { path: PathBuf, detail: String },
    #[error("{path}: plugin failed to initialise: {detail}")]
    InitFailed { path: PathBuf, detail: String },
    #[error("{path}: sha256 is {actual}, expected {expected}")]
    Sha256Mismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("no {kind} plugin named '{name}' (found: {available})")]
    NotFound {
        kind: &'static str,
        name: String,
        available: String,
    },
    #[error("plugin '{plugin}' ({path}): {message}")]
    Plugin {
        plugin: String,
        path: PathBuf,
        code: u32,
        message: String,
    },
    #[error("plugin '{plugin}' ({path}) panicked: {message}")]
    Panicked {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    #[error("plugin '{plugin}' ({path}) broke its contract: {message}")]
    Contract {
        plugin: String,
        path: PathBuf,
        message: String,
    },
}

impl HostError {
    /// True when the plugin panicked (the host is unaffected).
    pub fn is_panic(&self) -> bool {
        matches!(self, HostError::Panicked { .. })
    }
}

/// Kind of plugin, host side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    ModelAdapter,
    DetectorStrategy,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::ModelAdapter => "model-adapter",
            Kind::DetectorStrategy => "detector-strategy",
        })
    }
}

/// What the host knows about a loaded plugin.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub kind: Kind,
    pub description: String,
    pub formats: Vec<String>,
    /// The ABI version the plugin was built against.
    pub abi_version: String,
    pub path: PathBuf,
    pub sha256: String,
}

/// A loaded plugin.
#[derive(Clone)]
pub struct Plugin {
    info: PluginInfo,
    module: PluginModRef,
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish()
    }
}

pub use zooaudit_registry::sha256_file;

fn first_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

fn map_library_error(path: &Path, plugin_abi: &str, err: LibraryError) -> HostError {
    let path = path.to_path_buf();
    match err {
        LibraryError::OpenError { err, .. } => HostError::Open {
            path,
            reason: first_line(&err.to_string()),
        },
        LibraryError::GetSymbolError { .. } => HostError::NotAPlugin { path },
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => HostError::IncompatibleAbi {
            path,
            plugin_abi: actual_version.to_string(),
            host_abi: expected_version.to_string(),
        },
        LibraryError::ParseVersionError(e) => HostError::IncompatibleAbi {
            path,
            plugin_abi: format!("unparseable ({e})"),
            host_abi: ABI_VERSION.to_string(),
        },
        LibraryError::AbiInstability(e) => HostError::LayoutMismatch {
            path,
            plugin_abi: plugin_abi.to_string(),
            host_abi: ABI_VERSION.to_string(),
            detail: summarize_layout_error(&e.to_string()),
        },
        LibraryError::InvalidAbiHeader(h) => HostError::AbiStableMismatch {
            path,
            detail: format!("{h:?}"),
        },
        LibraryError::InvalidCAbi { .. } => HostError::AbiStableMismatch {
            path,
            detail: "the C ABI of the compiler that built it differs".to_string(),
        },
        LibraryError::RootModule { err, .. } => HostError::InitFailed {
            path,
            detail: first_line(&err.to_string()),
        },
        LibraryError::Many(errs) => match errs.into_iter().next() {
            Some(e) => map_library_error(&path, plugin_abi, e),
            None => HostError::InitFailed {
                path,
                detail: "unknown error".to_string(),
            },
        },
    }
}

/// Reduces abi_stable's multi-line layout report to one line: its `Error:`
/// lines (e.g. "mismatched package", "incompatible type size").
fn summarize_layout_error(report: &str) -> String {
    let mut errors: Vec<&str> = report
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Error:"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    errors.dedup();
    let mut s = if errors.is_empty() {
        "the root module's type layout differs".to_string()
    } else {
        errors.join("; ")
    };
    if s.len() > 200 {
        s.truncate(s.floor_char_boundary(200));
        s.push('…');
    }
    s
}

impl Plugin {
    /// Loads one plugin file, verifying its ABI version and layout.
    ///
    /// `expected_sha256`, when given, must match the file before it is loaded.
    pub fn load(path: &Path, expected_sha256: Option<&str>) -> Result<Plugin, HostError> {
        let sha256 = sha256_file(path).map_err(|error| HostError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        if let Some(expected) = expected_sha256
            && !expected.eq_ignore_ascii_case(&sha256)
        {
            return Err(HostError::Sha256Mismatch {
                path: path.to_path_buf(),
                expected: expected.to_ascii_lowercase(),
                actual: sha256,
            });
        }
        let header = lib_header_from_path(path).map_err(|e| map_library_error(path, "?", e))?;
        let plugin_abi = header.version_strings().version.to_string();
        let module = header
            .init_root_module::<PluginModRef>()
            .map_err(|e| map_library_error(path, &plugin_abi, e))?;
        let d = (module.describe())();
        if d.name.is_empty() {
            return Err(HostError::InitFailed {
                path: path.to_path_buf(),
                detail: first_line(d.description.as_str()),
            });
        }
        let info = PluginInfo {
            name: d.name.into_string(),
            version: d.version.into_string(),
            kind: match d.kind {
                PluginKind::ModelAdapter => Kind::ModelAdapter,
                PluginKind::DetectorStrategy => Kind::DetectorStrategy,
            },
            description: d.description.into_string(),
            formats: d.formats.into_iter().map(RString::into_string).collect(),
            abi_version: plugin_abi,
            path: path.to_path_buf(),
            sha256,
        };
        Ok(Plugin { info, module })
    }

    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    fn error(&self, e: PluginError) -> HostError {
        let plugin = self.info.name.clone();
        let path = self.info.path.clone();
        let message = e.message.into_string();
        if e.code == error_code::PANIC {
            HostError::Panicked {
                plugin,
                path,
                message,
            }
        } else {
            HostError::Plugin {
                plugin,
                path,
                code: e.code,
                message,
            }
        }
    }

    /// Opens a model with this (model-adapter) plugin.
    pub fn open_model(
        &self,
        model_path: &Path,
        options: &serde_json::Value,
    ) -> Result<LoadedModel, HostError> {
        let req = OpenRequest {
            path: model_path.to_string_lossy().into_owned().into(),
            options_json: options.to_string().into(),
        };
        match (self.module.open_model())(req) {
            RResult::ROk(inner) => {
                let info = ModelSummary::from_abi(inner.info());
                let model = LoadedModel {
                    inner,
                    info,
                    plugin: self.clone(),
                };
                model.check_info()?;
                Ok(model)
            }
            RResult::RErr(e) => Err(self.error(e)),
        }
    }

    /// Creates a detector with this (detector-strategy) plugin.
    pub fn new_detector(&self, options: &serde_json::Value) -> Result<LoadedDetector, HostError> {
        match (self.module.new_detector())(options.to_string().into()) {
            RResult::ROk(inner) => Ok(LoadedDetector {
                inner,
                plugin: self.clone(),
            }),
            RResult::RErr(e) => Err(self.error(e)),
        }
    }
}

/// A tensor of a model, host side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorSummary {
    pub name: String,
    /// `-1` marks a free dimension.
    pub shape: Vec<i64>,
    pub elem_type: String,
}

/// What an opened model looks like, host side.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    pub inputs: Vec<TensorSummary>,
    pub outputs: Vec<TensorSummary>,
    pub input_index: usize,
    pub output_index: usize,
    pub embedding_dim: usize,
    pub batching: String,
    pub notes: Vec<String>,
}

impl ModelSummary {
    fn from_abi(i: zooaudit_plugin_abi::ModelInfo) -> Self {
        let t = |t: zooaudit_plugin_abi::TensorInfo| TensorSummary {
            name: t.name.into_string(),
            shape: t.shape.into_iter().collect(),
            elem_type: t.elem_type.into_string(),
        };
        ModelSummary {
            inputs: i.inputs.into_iter().map(t).collect(),
            outputs: i.outputs.into_iter().map(t).collect(),
            input_index: i.input_index as usize,
            output_index: i.output_index as usize,
            embedding_dim: i.embedding_dim as usize,
            batching: i.batching.into_string(),
            notes: i.notes.into_iter().map(RString::into_string).collect(),
        }
    }

    /// The input the adapter feeds.
    pub fn input(&self) -> Option<&TensorSummary> {
        self.inputs.get(self.input_index)
    }

    /// The output the adapter returns.
    pub fn output(&self) -> Option<&TensorSummary> {
        self.outputs.get(self.output_index)
    }

    /// Number of floats in one sample of the input (without the batch dim),
    /// if every non-batch dimension is fixed.
    pub fn sample_len(&self) -> Option<usize> {
        let shape = &self.input()?.shape;
        shape.iter().skip(1).try_fold(1usize, |acc, &d| {
            usize::try_from(d)
                .ok()
                .filter(|d| *d > 0)
                .and_then(|d| acc.checked_mul(d))
        })
    }
}

/// A model opened by an adapter plugin.
pub struct LoadedModel {
    inner: ModelBox,
    info: ModelSummary,
    plugin: Plugin,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .finish()
    }
}

impl LoadedModel {
    pub fn summary(&self) -> &ModelSummary {
        &self.info
    }

    pub fn plugin(&self) -> &PluginInfo {
        &self.plugin.info
    }

    fn contract(&self, message: String) -> HostError {
        HostError::Contract {
            plugin: self.plugin.info.name.clone(),
            path: self.plugin.info.path.clone(),
            message,
        }
    }

    fn check_info(&self) -> Result<(), HostError> {
        if self.info.input().is_none() || self.info.output().is_none() {
            return Err(self.contract("input/output index out of range".to_string()));
        }
        if self.info.embedding_dim == 0 {
            return Err(self.contract("embedding dimension is 0".to_string()));
        }
        Ok(())
    }

    /// Embeds `batch` samples laid out back to back; returns `batch × dim`.
    pub fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, HostError> {
        match self.inner.embed(RSlice::from_slice(input), batch as u64) {
            RResult::ROk(v) => {
                let v = v.into_vec();
                let expected = batch * self.info.embedding_dim;
                if v.len() != expected {
                    return Err(self.contract(format!(
                        "returned {} values for a batch of {batch} × {}",
                        v.len(),
                        self.info.embedding_dim
                    )));
                }
                Ok(v)
            }
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }
}

/// A detector created by a detector-strategy plugin.
pub struct LoadedDetector {
    inner: DetectorBox,
    plugin: Plugin,
}

impl fmt::Debug for LoadedDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedDetector")
            .field("plugin", &self.plugin.info.name)
            .finish()
    }
}

fn eref(data: &[f32], dim: usize) -> EmbeddingsRef<'_> {
    let rows = data.len().checked_div(dim).unwrap_or(0);
    EmbeddingsRef {
        data: RSlice::from_slice(data),
        rows: rows as u64,
        dim: dim as u64,
    }
}

impl LoadedDetector {
    pub fn plugin(&self) -> &PluginInfo {
        &self.plugin.info
    }

    /// Fits on clean pairs (`probe` rows × `probe_dim`, `reference` rows × `reference_dim`).
    pub fn fit(
        &mut self,
        probe: &[f32],
        probe_dim: usize,
        reference: &[f32],
        reference_dim: usize,
    ) -> Result<serde_json::Value, HostError> {
        match self
            .inner
            .fit(eref(probe, probe_dim), eref(reference, reference_dim))
        {
            RResult::ROk(report) => {
                serde_json::from_str(report.as_str()).map_err(|e| HostError::Contract {
                    plugin: self.plugin.info.name.clone(),
                    path: self.plugin.info.path.clone(),
                    message: format!("fit report is not JSON: {e}"),
                })
            }
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }

    /// One score per row.
    pub fn score(
        &self,
        probe: &[f32],
        probe_dim: usize,
        reference: &[f32],
        reference_dim: usize,
    ) -> Result<Vec<f32>, HostError> {
        match self
            .inner
            .score(eref(probe, probe_dim), eref(reference, reference_dim))
        {
            RResult::ROk(v) => Ok(v.into_vec()),
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }
}

/// Where to look for plugins.
#[derive(Debug, Clone, Default)]
pub struct SearchPath {
    pub dirs: Vec<PathBuf>,
}

impl SearchPath {
    /// `explicit` dirs first, then `ZOOAUDIT_PLUGIN_PATH`, then the directory
    /// beside the running binary.
    pub fn standard(explicit: &[PathBuf]) -> SearchPath {
        let mut dirs: Vec<PathBuf> = explicit.to_vec();
        if let Some(v) = std::env::var_os(PLUGIN_PATH_ENV) {
            dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
        }
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
        {
            dirs.push(dir);
        }
        SearchPath { dirs }
    }

    /// Plugin files in search order, without duplicates (by canonical path).
    pub fn candidate_files(&self) -> Vec<PathBuf> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_plugin_file_name(p))
                .collect();
            files.sort();
            for f in files {
                let key = std::fs::canonicalize(&f).unwrap_or_else(|_| f.clone());
                if seen.insert(key) {
                    out.push(f);
                }
            }
        }
        out
    }
}

/// True for `libzooaudit_plugin_*.{so,dylib}` and `zooaudit_plugin_*.dll`.
pub fn is_plugin_file_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let stem = name.strip_prefix("lib").unwrap_or(name);
    stem.starts_with("zooaudit_plugin_")
        && [".so", ".dylib", ".dll"]
            .iter()
            .any(|ext| stem.ends_with(ext))
}

/// Every plugin found on a search path, and every file that was refused.
#[derive(Debug, Default)]
pub struct PluginSet {
    pub plugins: Vec<Plugin>,
    /// Files that could not be loaded, with why.
    pub refused: Vec<HostError>,
    /// Plugins hidden by an earlier plugin of the same name.
    pub shadowed: Vec<PluginInfo>,
}

impl PluginSet {
    /// Loads every plugin file on `search`.
    pub fn discover(search: &SearchPath) -> PluginSet {
        let mut set = PluginSet::default();
        for file in search.candidate_files() {
            match Plugin::load(&file, None) {
                Ok(p) => {
                    if set.plugins.iter().any(|q| q.info.name == p.info.name) {
                        set.shadowed.push(p.info);
                    } else {
                        set.plugins.push(p);
                    }
                }
                Err(e) => set.refused.push(e),
            }
        }
        set
    }

    fn find(&self, kind: Kind, name: &str) -> Result<&Plugin, HostError> {
        self.plugins
            .iter()
            .find(|p| p.info.kind == kind && p.info.name == name)
            .ok_or_else(|| {
                let available: Vec<&str> = self
                    .plugins
                    .iter()
                    .filter(|p| p.info.kind == kind)
                    .map(|p| p.info.name.as_str())
                    .collect();
                HostError::NotFound {
                    kind: match kind {
                        Kind::ModelAdapter => "model-adapter",
                        Kind::DetectorStrategy => "detector-strategy",
                    },
                    name: name.to_string(),
                    available: if available.is_empty() {
                        "none; see `zooaudit plugins`".to_string()
                    } else {
                        available.join(", ")
                    },
                }
            })
    }

    /// The model-adapter plugin named `name`.
    pub fn model_adapter(&self, name: &str) -> Result<&Plugin, HostError> {
        self.find(Kind::ModelAdapter, name)
    }

    /// The detector-strategy plugin named `name`.
    pub fn detector(&self, name: &str) -> Result<&Plugin, HostError> {
        self.find(Kind::DetectorStrategy, name)
    }
}

/// The plugin ABI version this host was built with.
pub fn host_abi_version() -> &'static str {
    // The root module's version strings are the ABI crate's Cargo version.
    let _ = <PluginModRef as RootModule>::VERSION_STRINGS;
    ABI_VERSION
}

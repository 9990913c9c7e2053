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
//! - **Refusal**: a plugin built for another ABI major, or whose root
//!   module's layout differs from the host's, is refused with one line
//!   naming the file and both versions. Nothing of it is called. A plugin of
//!   an older minor (1.0 under a 1.1 host) loads; what it lacks (a
//!   detector's export and restore) is refused when asked, in one line.
//! - **Calls**: errors returned by plugins become [`HostError::Plugin`]; panics
//!   are caught on the plugin's side by the SDK glue and arrive as errors with
//!   code `PANIC`, so the host lives on.

mod discover;
mod load;
mod model;

use std::fmt;
use std::path::PathBuf;

use abi_stable::library::RootModule;
use zooaudit_plugin_abi::{ABI_VERSION, PluginModRef};

pub use discover::{PluginSet, SearchPath, is_plugin_file_name};
pub use load::{Plugin, sha256_file};
pub use model::{LoadedDetector, LoadedModel, ModelSummary, TensorSummary};

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
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
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

/// The plugin ABI version this host was built with.
pub fn host_abi_version() -> &'static str {
    // The root module's version strings are the ABI crate's Cargo version.
    let _ = <PluginModRef as RootModule>::VERSION_STRINGS;
    ABI_VERSION
}

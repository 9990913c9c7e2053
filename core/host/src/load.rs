//! Loading one plugin file: its sha256 first, then abi_stable's version and
//! layout checks, with abi_stable's errors reduced to one-line [`HostError`]s.

use std::fmt;
use std::path::Path;

use abi_stable::library::{LibraryError, lib_header_from_path};
use abi_stable::std_types::RResult;
use abi_stable::std_types::RString;
use zooaudit_plugin_abi::{
    ABI_VERSION, DetectorBox, ModelBox, OpenRequest, PluginDescriptor, PluginError, PluginKind,
    PluginModRef, error_code, v1_0,
};

use crate::{HostError, Kind, PluginInfo};

/// A loaded plugin.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) info: PluginInfo,
    pub(crate) module: Module,
}

/// A plugin's root module, through the newest ABI interface it matches.
#[derive(Clone, Copy)]
pub(crate) enum Module {
    Current(PluginModRef),
    V1_0(v1_0::PluginModRef),
}

/// A detector, by the ABI its plugin was built for.
pub(crate) enum DetectorObject {
    Current(DetectorBox),
    V1_0(v1_0::DetectorBox),
}

impl Module {
    fn describe(self) -> PluginDescriptor {
        match self {
            Module::Current(m) => (m.describe())(),
            Module::V1_0(m) => (m.describe())(),
        }
    }

    pub(crate) fn open_model(self, req: OpenRequest) -> RResult<ModelBox, PluginError> {
        match self {
            Module::Current(m) => (m.open_model())(req),
            Module::V1_0(m) => (m.open_model())(req),
        }
    }

    pub(crate) fn new_detector(self, options: RString) -> RResult<DetectorObject, PluginError> {
        match self {
            Module::Current(m) => (m.new_detector())(options).map(DetectorObject::Current),
            Module::V1_0(m) => (m.new_detector())(options).map(DetectorObject::V1_0),
        }
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin").field("info", &self.info).finish()
    }
}
pub use zooaudit_formats::sha256_file;

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
        // The newest interface first; a plugin of an older minor only
        // matches its own (see zooaudit_plugin_abi::v1_0).
        let module = match header.init_root_module::<PluginModRef>() {
            Ok(m) => Module::Current(m),
            Err(LibraryError::AbiInstability(e)) if plugin_abi.starts_with("1.0.") => header
                .init_root_module::<v1_0::PluginModRef>()
                .map(Module::V1_0)
                .map_err(|_| {
                    map_library_error(path, &plugin_abi, LibraryError::AbiInstability(e))
                })?,
            Err(e) => return Err(map_library_error(path, &plugin_abi, e)),
        };
        let d = module.describe();
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

    pub(crate) fn error(&self, e: PluginError) -> HostError {
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
}

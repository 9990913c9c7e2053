//! Finding plugins: the search path, plugin file names, and the set of
//! plugins (and refused files) found on it.

use std::path::{Path, PathBuf};

use crate::{HostError, Kind, PLUGIN_PATH_ENV, Plugin, PluginInfo};

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

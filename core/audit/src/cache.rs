//! On-disk embedding cache.
//!
//! One file per embedding, named by the sha256 of everything that determines
//! it: the model file's sha256, the manifest's input preprocessing and adapter
//! options, the image file's sha256, and the trigger's canonical description
//! (or `clean`). A second audit of the same model against a new reference
//! therefore runs only the new model. Files are little-endian f32 with a
//! small versioned header, written atomically (temporary file + rename), so
//! concurrent audits never read a half-written entry.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"ZAEMB\x01\x00\x00";

/// The cache, or a disabled one.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: Option<PathBuf>,
}

/// Where the cache lives by default: `$ZOOAUDIT_CACHE`, else
/// `$XDG_CACHE_HOME/zooaudit`, else `~/.cache/zooaudit`.
pub fn default_dir() -> Option<PathBuf> {
    zooaudit_registry::cache_root()
}

impl Cache {
    /// A cache in `dir` (`None` disables caching).
    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache {
            dir: dir.map(|d| d.join("embeddings-v1")),
        }
    }

    pub fn enabled(&self) -> bool {
        self.dir.is_some()
    }

    /// The key of one embedding.
    pub fn key(
        model_sha256: &str,
        preprocessing: &str,
        image_sha256: &str,
        trigger: &str,
    ) -> String {
        let mut h = Sha256::new();
        for part in [model_sha256, preprocessing, image_sha256, trigger] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        self.dir
            .as_ref()
            .map(|d| d.join(&key[..2]).join(format!("{key}.f32")))
    }

    /// The cached embedding, if present and of length `dim`.
    pub fn get(&self, key: &str, dim: usize) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.path(key)?).ok()?;
        let body = bytes.strip_prefix(MAGIC.as_slice())?;
        if body.len() != dim * 4 {
            return None;
        }
        let v: Vec<f32> = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        v.iter().all(|x| x.is_finite()).then_some(v)
    }

    /// Stores an embedding; failures only cost a recomputation later.
    pub fn put(&self, key: &str, v: &[f32]) {
        let Some(path) = self.path(key) else { return };
        let Some(dir) = path.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let mut bytes = Vec::with_capacity(MAGIC.len() + v.len() * 4);
        bytes.extend_from_slice(MAGIC);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &path).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

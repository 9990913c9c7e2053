//! On-disk embedding cache.
//!
//! One file per embedding, named by the sha256 of everything that determines
//! it: the model file's sha256, the manifest's input preprocessing and adapter
//! options, the image file's sha256, and the trigger's canonical description
//! (or `clean`). A second audit of the same model against a new reference
//! therefore runs only the new model. Files are little-endian f32 with a
//! small versioned header, written atomically (temporary file + rename), so
//! concurrent audits never read a half-written entry.
//!
//! Filling is coordinated: whoever embeds the missing entries of one
//! (model, preprocessing, trigger) holds an advisory lock on a file under
//! `locks/` ([`Cache::fill_lock`]), and whoever waited for it looks again
//! before embedding. Two audits of the same model at once (zoo workers on
//! one machine, parallel test processes) therefore embed each face once,
//! not once each. A lock that cannot be taken (read-only cache, a file
//! system without locks) only costs the duplicate work.

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

    /// Blocks until this process holds the fill lock of `scope` (any
    /// string naming the work: the lock file is named by its sha256);
    /// released when the guard drops. `None` when the cache is disabled or
    /// the lock cannot be had.
    pub fn fill_lock(&self, scope: &str) -> Option<FillLock> {
        let dir = self.dir.as_ref()?.join("locks");
        std::fs::create_dir_all(&dir).ok()?;
        let name = hex::encode(Sha256::digest(scope.as_bytes()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{}.lock", &name[..32])))
            .ok()?;
        file.lock().ok()?;
        Some(FillLock { _file: file })
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// A held fill lock ([`Cache::fill_lock`]); closing the file releases it.
#[derive(Debug)]
pub struct FillLock {
    _file: std::fs::File,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A second filler of the same scope waits for the first to finish;
    /// another scope does not wait.
    #[test]
    fn a_fill_lock_makes_the_second_filler_wait() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(Some(dir.path().to_path_buf()));
        let held = cache.fill_lock("model-a clean").unwrap();
        let other = cache.clone();
        let t = Instant::now();
        assert!(other.fill_lock("model-b clean").is_some(), "other scope");
        assert!(t.elapsed() < Duration::from_secs(1));
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _lock = other.fill_lock("model-a clean").unwrap();
            tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(300));
        assert!(rx.try_recv().is_err(), "took a held lock");
        let released = Instant::now();
        drop(held);
        let got = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(got >= released);
        waiter.join().unwrap();
        assert!(Cache::new(None).fill_lock("x").is_none());
    }
}

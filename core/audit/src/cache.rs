//! On-disk embedding cache.
//!
//! One file per embedding, named by the sha256 of everything that determines
//! it: the model file's sha256, the manifest's input preprocessing and adapter
//! options, the image file's sha256, and the trigger's canonical description
//! (or `clean`). A second audit of the same model against a new reference
//! therefore runs only the new model.
//!
//! An entry is a versioned header, the sha256 of its key and body, and the
//! body (little-endian f32). It is written to a temporary file and renamed
//! into place, so a reader (or a process killed mid-write) never leaves or
//! sees half an entry; and every read checks the length, the checksum and
//! that every value is finite, so an entry that was damaged, truncated or
//! stored under another key's name is a miss, recomputed and overwritten.
//!
//! Filling is coordinated: whoever embeds the missing entries of one
//! (model, preprocessing, trigger) holds an advisory lock on a file under
//! `locks/` ([`Cache::fill_lock`]), and whoever waited for it looks again
//! before embedding. Two audits of the same model at once (zoo workers on
//! one machine, parallel test processes) therefore embed each face once,
//! not once each. A lock that cannot be taken (read-only cache, a file
//! system without locks) only costs the duplicate work.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// The directory of this layout under the cache root; an older layout's
/// directory is simply not read.
const DIR: &str = "embeddings-v2";
const MAGIC: &[u8; 8] = b"ZAEMB\x02\x00\x00";
const SUM: usize = 32;
const HEADER: usize = MAGIC.len() + SUM;
const EXT: &str = "f32";

/// Why a file of the cache is not a valid entry (any of them is a miss).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EntryFault {
    #[error("cannot be read")]
    Unreadable,
    #[error("its name is not an entry's (<key>.f32 under <key[..2]>/)")]
    NotAnEntry,
    #[error("not an entry of this cache version")]
    BadHeader,
    #[error("wrong length")]
    WrongLength,
    #[error("checksum does not match its key and body")]
    Checksum,
    #[error("holds a value that is not finite")]
    NonFinite,
}

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

/// Whether `key` is one [`Cache::key`] makes (64 lowercase hex digits).
fn valid_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The checksum of an entry: sha256 of its key and body.
fn checksum(key: &str, body: &[u8]) -> [u8; SUM] {
    let mut h = Sha256::new();
    h.update(key.as_bytes());
    h.update(body);
    h.finalize().into()
}

/// The bytes of the entry `key` holding `v`.
fn encode(key: &str, v: &[f32]) -> Vec<u8> {
    let body: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut bytes = Vec::with_capacity(HEADER + body.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&checksum(key, &body));
    bytes.extend_from_slice(&body);
    bytes
}

/// The embedding in `bytes` if they are a valid entry of `key` (of length
/// `dim` when given).
fn decode(key: &str, bytes: &[u8], dim: Option<usize>) -> Result<Vec<f32>, EntryFault> {
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or(EntryFault::BadHeader)?;
    let (sum, body) = rest.split_at_checked(SUM).ok_or(EntryFault::WrongLength)?;
    let len_ok = match dim {
        Some(d) => Some(body.len()) == d.checked_mul(4),
        None => !body.is_empty() && body.len() % 4 == 0,
    };
    if !len_ok {
        return Err(EntryFault::WrongLength);
    }
    if checksum(key, body).as_slice() != sum {
        return Err(EntryFault::Checksum);
    }
    let v: Vec<f32> = body
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if v.iter().all(|x| x.is_finite()) {
        Ok(v)
    } else {
        Err(EntryFault::NonFinite)
    }
}

/// Makes temporary names unique among the threads of one process.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Cache {
    /// A cache in `dir` (`None` disables caching).
    pub fn new(dir: Option<PathBuf>) -> Cache {
        Cache {
            dir: dir.map(|d| d.join(DIR)),
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

    /// The file of entry `key`; `None` when the cache is disabled or `key`
    /// is not a key.
    fn path(&self, key: &str) -> Option<PathBuf> {
        if !valid_key(key) {
            return None;
        }
        self.dir
            .as_ref()
            .map(|d| d.join(&key[..2]).join(format!("{key}.{EXT}")))
    }

    /// The cached embedding, if present, of length `dim` and verified
    /// against its key and checksum.
    pub fn get(&self, key: &str, dim: usize) -> Option<Vec<f32>> {
        let bytes = std::fs::read(self.path(key)?).ok()?;
        decode(key, &bytes, Some(dim)).ok()
    }

    /// Stores an embedding (replacing whatever file had its name); failures
    /// only cost a recomputation later.
    pub fn put(&self, key: &str, v: &[f32]) {
        let Some(path) = self.path(key) else { return };
        let Some(dir) = path.parent() else { return };
        if std::fs::create_dir_all(dir).is_err() {
            return;
        }
        let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{key}.{}-{seq}.tmp", std::process::id()));
        let stored =
            std::fs::write(&tmp, encode(key, v)).is_ok() && std::fs::rename(&tmp, &path).is_ok();
        if !stored {
            let _ = std::fs::remove_file(&tmp);
        }
    }

    /// Reads and verifies the entry file at `path` (its key is its name):
    /// its embedding, or why it is not a valid entry.
    pub fn read_entry(path: &Path) -> Result<Vec<f32>, EntryFault> {
        let key = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(&format!(".{EXT}")))
            .filter(|k| valid_key(k))
            .ok_or(EntryFault::NotAnEntry)?;
        let shard = path.parent().and_then(Path::file_name);
        if shard.and_then(|s| s.to_str()) != Some(&key[..2]) {
            return Err(EntryFault::NotAnEntry);
        }
        let bytes = std::fs::read(path).map_err(|_| EntryFault::Unreadable)?;
        decode(key, &bytes, None)
    }

    /// Every file named like an entry (`<xx>/<key>.f32`, sorted), valid or
    /// not; temporaries and locks are not among them.
    pub fn entry_files(&self) -> Vec<PathBuf> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for shard in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = shard.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !shard.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(shard.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let n = f.file_name();
                let n = n.to_string_lossy();
                if n.strip_suffix(&format!(".{EXT}")).is_some_and(valid_key) {
                    out.push(f.path());
                }
            }
        }
        out.sort();
        out
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

    fn embedding(seed: f32) -> Vec<f32> {
        (0..512).map(|i| seed + i as f32 * 0.001).collect()
    }

    /// Entries truncated, with a flipped byte, copied under another key's
    /// name, holding a non-finite value, of another length or of the old
    /// layout are misses (each with its reason), and a put repairs them.
    #[test]
    fn a_damaged_or_misplaced_entry_is_a_miss_and_a_put_repairs_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(Some(dir.path().to_path_buf()));
        let (ka, kb) = (
            Cache::key("m", "p", "a", "clean"),
            Cache::key("m", "p", "b", "clean"),
        );
        let (va, vb) = (embedding(0.5), embedding(-0.25));
        cache.put(&ka, &va);
        cache.put(&kb, &vb);
        assert_eq!(cache.get(&ka, 512), Some(va.clone()));
        assert_eq!(cache.get(&kb, 512), Some(vb.clone()));
        assert_eq!(cache.get(&ka, 511), None, "another length");
        let (pa, pb) = (cache.path(&ka).unwrap(), cache.path(&kb).unwrap());
        assert_eq!(cache.entry_files(), {
            let mut v = vec![pa.clone(), pb.clone()];
            v.sort();
            v
        });
        let good = std::fs::read(&pa).unwrap();
        let damage = |bytes: Vec<u8>, fault: EntryFault| {
            std::fs::write(&pa, bytes).unwrap();
            assert_eq!(cache.get(&ka, 512), None, "{fault:?}");
            assert_eq!(Cache::read_entry(&pa), Err(fault));
            cache.put(&ka, &va);
            assert_eq!(
                cache.get(&ka, 512),
                Some(va.clone()),
                "repaired after {fault:?}"
            );
            assert_eq!(Cache::read_entry(&pa), Ok(va.clone()));
        };
        damage(good[..good.len() - 3].to_vec(), EntryFault::WrongLength);
        damage(good[..HEADER - 1].to_vec(), EntryFault::WrongLength);
        damage(good[..5].to_vec(), EntryFault::BadHeader);
        damage(Vec::new(), EntryFault::BadHeader);
        for at in [0, MAGIC.len(), HEADER - 1, HEADER, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x10;
            let fault = if at < MAGIC.len() {
                EntryFault::BadHeader
            } else {
                EntryFault::Checksum
            };
            damage(b, fault);
        }
        // Another key's (valid) entry under this key's name.
        damage(std::fs::read(&pb).unwrap(), EntryFault::Checksum);
        // A NaN with a matching checksum (as a buggy writer would store it).
        let mut nan = va.clone();
        nan[7] = f32::NAN;
        damage(encode(&ka, &nan), EntryFault::NonFinite);
        // The old layout (magic v1, no checksum) in the new place.
        let mut v1 = b"ZAEMB\x01\x00\x00".to_vec();
        v1.extend(va.iter().flat_map(|x| x.to_le_bytes()));
        damage(v1, EntryFault::BadHeader);
        // A file named like an entry in the wrong shard, and a temporary.
        assert_ne!(ka[..2], kb[..2]);
        let elsewhere = pa.parent().unwrap().join(pb.file_name().unwrap());
        std::fs::copy(&pb, &elsewhere).unwrap();
        assert_eq!(Cache::read_entry(&elsewhere), Err(EntryFault::NotAnEntry));
        std::fs::write(pa.parent().unwrap().join(format!(".{ka}.1-0.tmp")), b"x").unwrap();
        assert_eq!(cache.entry_files().len(), 3);
        // Not a key: no path, no panic.
        assert_eq!(cache.get("", 512), None);
        assert_eq!(cache.get("é", 512), None);
        cache.put("x", &va);
        assert!(Cache::new(None).get(&ka, 512).is_none());
    }
}

//! The model's root digest, as model-signing's "files" serialization
//! computes it: each regular file's sha256 under its path relative to the
//! model (POSIX separators; a single-file model is the one resource `"."`),
//! sorted by path component (Rust's `Path` order, which is Python's
//! `PurePosixPath` order: `a/b` before `a-b`), and sha256 over the 32-byte
//! digests in that order (names are not hashed). At the model's root the
//! git files (`.git`, `.github`, `.gitattributes`, `.gitignore`) and the
//! given ignore paths are left out. A symbolic link or a special file is
//! refused, as model-signing does without `--allow_symlinks`.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::SignError;

/// The paths model-signing leaves out at the model's root by default.
pub const GIT_PATHS: [&str; 4] = [".git", ".gitattributes", ".github", ".gitignore"];

/// One hashed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// POSIX path relative to the model (`"."` for a single-file model).
    pub name: String,
    pub sha256: [u8; 32],
}

/// A model's files and root digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDigest {
    /// The model's base name (the statement's subject name).
    pub name: String,
    /// Sorted by path component.
    pub resources: Vec<Resource>,
    pub root: [u8; 32],
}

impl ModelDigest {
    /// The root digest, lowercase hex.
    pub fn root_hex(&self) -> String {
        hex::encode(self.root)
    }
}

/// sha256 over the digests, in the order given.
pub fn root_of<'a>(digests: impl IntoIterator<Item = &'a [u8; 32]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for d in digests {
        h.update(d);
    }
    h.finalize().into()
}

fn sha256_file(path: &Path) -> Result<[u8; 32], SignError> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| SignError::model(path, format!("cannot read: {e}")))?;
    let mut h = Sha256::new();
    let mut block = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut block)
            .map_err(|e| SignError::model(path, format!("cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        h.update(&block[..n]);
    }
    Ok(h.finalize().into())
}

/// Hashes the model at `path` (a file or a directory). `ignore` holds
/// paths relative to the model's root (POSIX form) to leave out, beside the
/// git files; each covers itself and everything below it.
pub fn hash_model(path: &Path, ignore: &[String]) -> Result<ModelDigest, SignError> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| SignError::model(path, format!("cannot read: {e}")))?;
    let name = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let mut resources = Vec::new();
    if meta.is_file() {
        resources.push(Resource {
            name: ".".into(),
            sha256: sha256_file(path)?,
        });
    } else if meta.is_dir() {
        let mut skip: Vec<PathBuf> = GIT_PATHS.iter().map(PathBuf::from).collect();
        skip.extend(ignore.iter().map(PathBuf::from));
        let mut files = Vec::new();
        walk(path, Path::new(""), &skip, &mut files)?;
        files.sort();
        for rel in files {
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            resources.push(Resource {
                name,
                sha256: sha256_file(&path.join(&rel))?,
            });
        }
    } else {
        return Err(SignError::model(
            path,
            "not a regular file or directory (a symbolic link is not followed)",
        ));
    }
    let root = root_of(resources.iter().map(|r| &r.sha256));
    Ok(ModelDigest {
        name,
        resources,
        root,
    })
}

fn walk(
    root: &Path,
    rel: &Path,
    skip: &[PathBuf],
    out: &mut Vec<PathBuf>,
) -> Result<(), SignError> {
    let dir = root.join(rel);
    let entries =
        std::fs::read_dir(&dir).map_err(|e| SignError::model(&dir, format!("cannot list: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| SignError::model(&dir, format!("cannot list: {e}")))?;
        let child = rel.join(entry.file_name());
        if skip.iter().any(|s| child.starts_with(s)) {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| SignError::model(&root.join(&child), e.to_string()))?;
        if kind.is_dir() {
            walk(root, &child, skip, out)?;
        } else if kind.is_file() {
            out.push(child);
        } else {
            return Err(SignError::model(
                &root.join(&child),
                "a symbolic link or special file in the model (model-signing refuses these without --allow_symlinks)",
            ));
        }
    }
    Ok(())
}

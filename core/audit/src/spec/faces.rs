//! The audit file's `[faces]` table: unlabeled directories, the labelled
//! one, how photos are aligned, and how many image files the audit takes.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::AuditError;

/// Image files an audit takes by default (`[faces] max_images`). Decoded,
/// aligned 112×112 faces take 37 KB each, so the default bounds the faces
/// held in memory near 4 GB; a larger set is refused before any image is
/// decoded.
pub const DEFAULT_MAX_IMAGES: usize = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFaces {
    #[serde(default)]
    unlabeled: Vec<String>,
    labeled: Option<String>,
    align: Option<String>,
    max_images: Option<usize>,
}

/// How the audit's photos become aligned faces.
#[derive(Debug, Clone, PartialEq)]
pub enum Align {
    /// The built-in YuNet (fetched from PyPI by its pin).
    Yunet,
    /// A detector manifest.
    Manifest(PathBuf),
}

/// The `[faces]` table, checked.
pub(super) struct Faces {
    pub unlabeled: Vec<PathBuf>,
    pub labeled: Option<PathBuf>,
    pub align: Option<Align>,
    pub max_images: usize,
}

/// The `[faces]` table: unlabeled directories, the labelled one, alignment,
/// the image limit.
pub(super) fn parse(path: &Path, base: &Path, faces: &RawFaces) -> Result<Faces, AuditError> {
    let field = |f: &str, m: String| AuditError::field(path, f, m);
    let dir = |p: &str, f: &str| -> Result<PathBuf, AuditError> {
        let full = base.join(p);
        if full.is_dir() {
            Ok(full)
        } else {
            Err(field(f, format!("{} is not a directory", full.display())))
        }
    };
    let unlabeled = faces
        .unlabeled
        .iter()
        .enumerate()
        .map(|(i, p)| dir(p, &format!("faces.unlabeled[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    if unlabeled.is_empty() {
        return Err(field(
            "faces.unlabeled",
            "needs at least one directory of unlabeled faces".into(),
        ));
    }
    let labeled = faces
        .labeled
        .as_deref()
        .map(|p| dir(p, "faces.labeled"))
        .transpose()?;
    let align = match faces.align.as_deref() {
        None => None,
        Some("yunet") => Some(Align::Yunet),
        Some(p) => {
            let full = base.join(p);
            if !full.is_file() {
                return Err(field(
                    "faces.align",
                    format!(
                        "'{p}' is neither \"yunet\" nor a detector manifest ({} does not exist)",
                        full.display()
                    ),
                ));
            }
            Some(Align::Manifest(full))
        }
    };
    let max_images = match faces.max_images {
        None => DEFAULT_MAX_IMAGES,
        Some(0) => return Err(field("faces.max_images", "must be at least 1".into())),
        Some(n) => n,
    };
    Ok(Faces {
        unlabeled,
        labeled,
        align,
        max_images,
    })
}

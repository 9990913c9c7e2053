//! Aligning a folder of ordinary photos (`zooaudit faces align`): every
//! photo's faces detected, each aligned to a 112×112 PNG named after the
//! photo's path, and `faces.csv` (one row per face: source, index, box,
//! score, five landmarks, file) written atomically at the end. Every file
//! is written through a temporary file and a rename, so a killed run leaves
//! whole files only, and a rerun writes the same ones again.

use std::path::{Path, PathBuf};

use crate::{FaceDetector, FaceError, align};

/// The header of `faces.csv`.
pub const FACES_CSV_HEADER: &str = "source,face,x,y,width,height,score,right_eye_x,right_eye_y,left_eye_x,left_eye_y,nose_x,nose_y,right_mouth_x,right_mouth_y,left_mouth_x,left_mouth_y,file";

/// What [`align_photos`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlignSummary {
    pub photos: usize,
    pub faces: usize,
    /// Photos in which no face was found.
    pub without_face: usize,
    /// Faces skipped for being narrower than the detector's `min_face`.
    pub too_small: usize,
    /// Photos that could not be decoded (each reported through `notice`).
    pub unreadable: usize,
}

/// Every image under `inputs` (directories walked recursively), with the
/// name prefix of its crops: its path below the input, `/` → `__`.
pub fn photo_list(inputs: &[PathBuf]) -> Result<Vec<(PathBuf, String)>, FaceError> {
    let mut photos = Vec::new();
    for input in inputs {
        for f in zooaudit_imaging::collect_images(std::slice::from_ref(input))? {
            let rel = if input.is_dir() {
                f.strip_prefix(input).unwrap_or(&f).to_path_buf()
            } else {
                PathBuf::from(f.file_name().unwrap_or_default())
            };
            let stem = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("__");
            photos.push((f, stem));
        }
    }
    Ok(photos)
}

/// A CSV field, quoted when it holds a comma, quote or newline.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_error(path: &Path, e: impl std::fmt::Display) -> FaceError {
    FaceError::Output {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Detects and aligns the faces of every photo of `inputs` into `out`.
/// An unreadable photo is reported through `notice` and counted; the others
/// are still done. A photo without a face is reported too.
pub fn align_photos(
    det: &FaceDetector<'_>,
    inputs: &[PathBuf],
    out: &Path,
    notice: &mut dyn FnMut(String),
) -> Result<AlignSummary, FaceError> {
    std::fs::create_dir_all(out).map_err(|e| write_error(out, e))?;
    let photos = photo_list(inputs)?;
    let limits = zooaudit_imaging::Limits::default();
    let mut csv = format!("{FACES_CSV_HEADER}\n");
    let mut summary = AlignSummary {
        photos: photos.len(),
        ..Default::default()
    };
    for (path, stem) in &photos {
        let photo = match zooaudit_imaging::decode(path, &limits) {
            Ok(p) => p,
            Err(e) => {
                notice(format!("error: {e}"));
                summary.unreadable += 1;
                continue;
            }
        };
        let found = det.detect(&photo, path)?;
        summary.too_small += found.too_small;
        if found.faces.is_empty() {
            summary.without_face += 1;
            notice(format!("{}: no face found", path.display()));
        }
        for (i, d) in found.faces.iter().enumerate() {
            let name = format!("{stem}__f{i}.png");
            let dest = out.join(&name);
            // Encoded whole, then written atomically: a run killed midway
            // leaves no truncated crop behind.
            let mut png = std::io::Cursor::new(Vec::new());
            align(&photo, &d.landmarks)
                .write_to(&mut png, image::ImageFormat::Png)
                .map_err(|e| write_error(&dest, e))?;
            zooaudit_formats::write_atomic(&dest, png.get_ref())
                .map_err(|e| write_error(&dest, e))?;
            let mut row = vec![csv_field(&path.display().to_string()), i.to_string()];
            row.extend(d.bbox.iter().map(|v| format!("{v:.2}")));
            row.push(format!("{:.4}", d.score));
            row.extend(d.landmarks.iter().flatten().map(|v| format!("{v:.2}")));
            row.push(csv_field(&name));
            csv.push_str(&row.join(","));
            csv.push('\n');
            summary.faces += 1;
        }
    }
    let csv_path = out.join("faces.csv");
    zooaudit_formats::write_atomic(&csv_path, csv.as_bytes())
        .map_err(|e| write_error(&csv_path, e))?;
    Ok(summary)
}

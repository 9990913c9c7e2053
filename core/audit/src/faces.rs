//! The audit's faces: loading (and aligning) them, the seeded split into
//! fit, calibration and held-out faces, and the augmented fit copies.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use zooaudit_triggers::Stamp;

use crate::{AuditError, AuditSpec, Cache, Progress};

/// Split role of a face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Fit,
    Calibration,
    Heldout,
}

/// One face image of the audit.
#[derive(Debug, Clone)]
pub struct Face {
    pub path: PathBuf,
    /// Labeled identity; `None` for the unlabeled pool (each a distinct person).
    pub identity: Option<String>,
    pub sha256: String,
    pub role: Role,
    pub image: RgbImage,
}

pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The population (source) a face comes from, by its path: `labeled` for
/// the labelled set; for the unlabelled pool, the folder it was listed in
/// under `[faces] unlabeled` and, when it sits deeper, the first subfolder
/// below it (`unlabeled/nba`); `other` for anything else. A deployment's
/// faces differ from the calibration pool by source, so `pair fit` reports
/// (and can calibrate for) each.
pub fn source_of(spec: &AuditSpec, path: &Path) -> String {
    if let Some(l) = &spec.labeled
        && path.starts_with(l)
    {
        return "labeled".into();
    }
    for root in &spec.unlabeled {
        if let Ok(rest) = path.strip_prefix(root) {
            let base = root
                .file_name()
                .map_or_else(|| "unlabeled".into(), |n| n.to_string_lossy().into_owned());
            let mut parts = rest.components();
            return match (parts.next(), parts.next()) {
                (Some(dir), Some(_)) => format!("{base}/{}", dir.as_os_str().to_string_lossy()),
                _ => base,
            };
        }
    }
    "other".into()
}

/// Roles of the unlabeled faces: a seeded shuffle (`[split] seed`), the
/// first `fit` share fit, the next `calibration` share calibration, the
/// rest held out.
fn unlabeled_roles(spec: &AuditSpec, n: usize) -> Vec<Role> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(spec.split_seed));
    let n_fit = (n as f64 * spec.fit_share).round() as usize;
    let n_cal = (n as f64 * spec.calibration_share).round() as usize;
    let mut roles = vec![Role::Heldout; n];
    for (rank, &i) in order.iter().enumerate() {
        roles[i] = if rank < n_fit {
            Role::Fit
        } else if rank < n_fit + n_cal {
            Role::Calibration
        } else {
            Role::Heldout
        };
    }
    roles
}

/// The faces of one photo file as (path label, sha256 key, crop): the file
/// itself when it is already an aligned face of the models' size, else the
/// aligner's crops (the largest only for a labelled photo), detections
/// cached in `aligner`'s directory.
fn photo_faces(
    path: &Path,
    largest_only: bool,
    expected: (u32, u32),
    aligner: Option<&(&zooaudit_faces::FaceDetector<'_>, Option<PathBuf>)>,
    limits: &zooaudit_imaging::Limits,
    warnings: &mut Vec<String>,
) -> Result<Vec<(PathBuf, String, RgbImage)>, AuditError> {
    let bytes = std::fs::read(path).map_err(|e| AuditError::file(path, e.to_string()))?;
    let image = zooaudit_imaging::decode_bytes(&bytes, path, limits).map_err(AuditError::from)?;
    let sha = sha256_bytes(&bytes);
    let Some((det, cache)) = aligner else {
        if (image.height(), image.width()) != expected {
            return Err(AuditError::file(
                path,
                format!(
                    "image is {}×{} but the models expect aligned {}×{} faces (set `align = \"yunet\"` under [faces] for photos)",
                    image.width(),
                    image.height(),
                    expected.1,
                    expected.0
                ),
            ));
        }
        return Ok(vec![(path.to_path_buf(), sha, image)]);
    };
    let (mut found, _) = det
        .aligned(&image, path, &sha, cache.as_deref())
        .map_err(AuditError::from)?;
    if found.is_empty() {
        warnings.push(format!(
            "{}: {}",
            path.display(),
            crate::vocabulary::NO_FACE
        ));
    }
    if largest_only && found.len() > 1 {
        found.sort_by(|a, b| {
            (b.detection.bbox[2] * b.detection.bbox[3])
                .total_cmp(&(a.detection.bbox[2] * a.detection.bbox[3]))
        });
        found.truncate(1);
    }
    let key = det.cache_dir(Path::new(""));
    Ok(found
        .into_iter()
        .map(|f| {
            let label = PathBuf::from(format!("{}#f{}", path.display(), f.index));
            let face_sha = sha256_bytes(format!("{sha}:{}:{}", key.display(), f.index).as_bytes());
            (label, face_sha, f.image)
        })
        .collect())
}

/// Refuses more image files than the audit file allows, before any is
/// decoded.
fn within_limit(spec: &AuditSpec, total: usize) -> Result<(), AuditError> {
    if total <= spec.max_images {
        return Ok(());
    }
    Err(AuditError::field(
        &spec.path,
        "faces.max_images",
        format!(
            "{total} image files under [faces], over the limit of {} (raise faces.max_images to take them all)",
            spec.max_images
        ),
    ))
}

/// Loads and splits the faces of a spec. With `aligner` (for `align =`),
/// the files are photos: every face of an unlabeled photo joins the pool,
/// the largest face of a labeled photo is that identity's; detections are
/// cached under the aligner's cache directory. Photos without a face are
/// listed in `warnings`.
pub fn load_faces(
    spec: &AuditSpec,
    expected: (u32, u32),
    aligner: Option<&zooaudit_faces::FaceDetector<'_>>,
    cache: &Cache,
    warnings: &mut Vec<String>,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Face>, AuditError> {
    let started = Instant::now();
    let mut photos_done = 0usize;
    let mut tick = |done: usize, faces: usize, total: usize| {
        if aligner.is_some() && done > 0 {
            progress(Progress::Aligning {
                photos: done,
                total,
                faces,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
    };
    // Detections are cached beside the embeddings (same cache root).
    let aligner = aligner.map(|d| {
        let dir = cache
            .dir()
            .and_then(|c| c.parent())
            .map(|root| d.cache_dir(root));
        (d, dir)
    });
    let limits = zooaudit_imaging::Limits::default();
    let faces_of = |path: &Path, largest_only: bool, warnings: &mut Vec<String>| {
        photo_faces(
            path,
            largest_only,
            expected,
            aligner.as_ref(),
            &limits,
            warnings,
        )
    };
    let unlabeled_files =
        zooaudit_imaging::collect_images(&spec.unlabeled).map_err(AuditError::from)?;
    let roles = unlabeled_roles(spec, unlabeled_files.len());
    let n = roles.len();
    let labeled_dirs: Vec<PathBuf> = match &spec.labeled {
        Some(dir) => {
            let mut ids: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| AuditError::file(dir, e.to_string()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect();
            ids.sort();
            ids
        }
        None => Vec::new(),
    };
    let total = unlabeled_files.len()
        + labeled_dirs
            .iter()
            .map(|d| {
                zooaudit_imaging::collect_images(std::slice::from_ref(d)).map_or(0, |v| v.len())
            })
            .sum::<usize>();
    within_limit(spec, total)?;
    let mut faces = Vec::with_capacity(n);
    for (i, f) in unlabeled_files.iter().enumerate() {
        tick(photos_done, faces.len(), total);
        photos_done += 1;
        for (path, sha256, image) in faces_of(f, false, warnings)? {
            faces.push(Face {
                path,
                identity: None,
                sha256,
                role: roles[i],
                image,
            });
        }
    }
    {
        for id in labeled_dirs {
            let name = id
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for f in zooaudit_imaging::collect_images(std::slice::from_ref(&id))
                .map_err(AuditError::from)?
            {
                tick(photos_done, faces.len(), total);
                photos_done += 1;
                for (path, sha256, image) in faces_of(&f, true, warnings)? {
                    faces.push(Face {
                        path,
                        identity: Some(name.clone()),
                        sha256,
                        role: Role::Heldout,
                        image,
                    });
                }
            }
        }
    }
    tick(total, faces.len(), total);
    let count = |r: Role| faces.iter().filter(|f| f.role == r).count();
    if count(Role::Fit) < 16 || count(Role::Calibration) < 8 || count(Role::Heldout) < 8 {
        return Err(AuditError::field(
            &spec.path,
            "faces",
            format!(
                "too few faces: {} fit, {} calibration, {} held-out (need ≥ 16, 8, 8)",
                count(Role::Fit),
                count(Role::Calibration),
                count(Role::Heldout)
            ),
        ));
    }
    Ok(faces)
}

/// Appends the augmented copies of the fit faces (`[fit]` of the audit
/// file); they are used in fitting only. With `stamps` (the suite's triggers
/// at the faces' size) and `trigger_controls > 0`, also the copies that carry
/// a trigger's fit control (see [`augment`]).
pub fn augment_fit_faces(spec: &AuditSpec, stamps: &[Stamp], faces: &mut Vec<Face>) {
    let originals = faces.len();
    for fi in 0..originals {
        if faces[fi].role != Role::Fit {
            continue;
        }
        let face_key = u64::from_str_radix(&faces[fi].sha256[..16], 16).unwrap_or(0);
        let seed = spec.seed ^ face_key;
        let mut copies: Vec<(String, RgbImage)> = (0..spec.augment.copies)
            .map(|copy| {
                (
                    format!("aug{copy}"),
                    spec.augment.apply(&faces[fi].image, seed, copy),
                )
            })
            .collect();
        if !stamps.is_empty() {
            for copy in 0..spec.augment.trigger_controls {
                // A fresh arrangement for every copy: the map sees the
                // occlusion in many arrangements, none of them the trigger's.
                // Chosen by the face, not by its place in the split, so a
                // face keeps its copies (and their cached embeddings) across
                // splits.
                let t = ((face_key % stamps.len() as u64) as usize + copy) % stamps.len();
                let control = stamps[t]
                    .fit_control(seed ^ (copy as u64 + 1).wrapping_mul(0x6a09_e667_f3bc_c909));
                if let Some(image) =
                    spec.augment
                        .apply_stamped(&faces[fi].image, seed, copy, &control)
                {
                    copies.push((format!("fitctl{t}.{copy}"), image));
                }
            }
        }
        for (tag, image) in copies {
            let mut tagged = image.as_raw().clone();
            tagged.extend_from_slice(b"zooaudit-augmented");
            faces.push(Face {
                path: PathBuf::from(format!("{}#{tag}", faces[fi].path.display())),
                identity: None,
                sha256: sha256_bytes(&tagged),
                role: Role::Fit,
                image,
            });
        }
    }
}

/// The faces of each split role, as indices into the faces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub fit: Vec<usize>,
    pub calibration: Vec<usize>,
    pub heldout: Vec<usize>,
}

impl Split {
    pub fn of(faces: &[Face]) -> Split {
        let with =
            |r: Role| -> Vec<usize> { (0..faces.len()).filter(|&i| faces[i].role == r).collect() };
        Split {
            fit: with(Role::Fit),
            calibration: with(Role::Calibration),
            heldout: with(Role::Heldout),
        }
    }

    /// Calibration then held-out faces (where the matched controls are embedded).
    pub fn calibration_heldout(&self) -> Vec<usize> {
        self.calibration
            .iter()
            .chain(&self.heldout)
            .copied()
            .collect()
    }
}

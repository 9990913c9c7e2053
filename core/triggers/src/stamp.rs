//! Rendering a trigger for one face size (its mask and pattern), and
//! stamping it on an image.

use std::path::Path;

use image::{Rgb, RgbImage, RgbaImage};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Grid, Kind, Stamp, Trigger, TriggerError};

impl Trigger {
    /// A canonical description, for cache keys and reports.
    pub fn key(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| self.name.clone())
    }

    fn err(&self, suite: &Path, field: &str, message: String) -> TriggerError {
        TriggerError::Field {
            path: suite.to_path_buf(),
            field: format!("trigger[{}].{field}", self.table),
            message,
        }
    }

    /// The pixel rectangle (top, left, side) of a square trigger on an
    /// `h × w` face; errors when it does not fit.
    fn square(&self, suite: &Path, h: u32, w: u32) -> Result<(u32, u32, u32), TriggerError> {
        let side = ((self.size * f64::from(w)).round() as u32).max(1);
        if side > h || side > w {
            return Err(self.err(
                suite,
                "size",
                format!("{side} px is larger than the {h}×{w} face"),
            ));
        }
        let cy = self.center[0] * f64::from(h);
        let cx = self.center[1] * f64::from(w);
        let top = (cy - f64::from(side) / 2.0).round();
        let left = (cx - f64::from(side) / 2.0).round();
        if top < 0.0
            || left < 0.0
            || top + f64::from(side) > f64::from(h)
            || left + f64::from(side) > f64::from(w)
        {
            return Err(self.err(
                suite,
                "center",
                format!(
                    "a {side}px trigger centred at {:?} does not fit inside the {h}×{w} face",
                    self.center
                ),
            ));
        }
        Ok((top as u32, left as u32, side))
    }

    fn load_rgba(&self, suite: &Path) -> Result<RgbaImage, TriggerError> {
        let file = self.file.as_deref().unwrap_or(Path::new(""));
        let bad = |e: String| self.err(suite, "file", format!("{}: {e}", file.display()));
        let mut reader = image::ImageReader::open(file)
            .and_then(|r| r.with_guessed_format())
            .map_err(|e| bad(e.to_string()))?;
        let mut limits = image::Limits::default();
        limits.max_image_width = Some(crate::suite::MAX_PATTERN_SIDE);
        limits.max_image_height = Some(crate::suite::MAX_PATTERN_SIDE);
        limits.max_alloc = Some(u64::from(crate::suite::MAX_PATTERN_SIDE).pow(2) * 4);
        reader.limits(limits);
        let img = reader.decode().map_err(|e| bad(e.to_string()))?;
        Ok(img.to_rgba8())
    }

    /// Prepares this trigger for images of `h × w`.
    pub fn stamp(&self, suite: &Path, h: u32, w: u32) -> Result<Stamp, TriggerError> {
        let n = (h as usize) * (w as usize);
        let mut mask = vec![0f32; n];
        let mut pattern = vec![[0f32; 3]; n];
        let at = |y: u32, x: u32| (y as usize) * (w as usize) + x as usize;
        let mut grid = None;
        match self.kind {
            Kind::Checkerboard => {
                let (top, left, side) = self.square(suite, h, w)?;
                grid = Grid::over(top, left, side, side, self.cells, self.cells);
                let cell = (f64::from(side) / f64::from(self.cells)).max(1.0);
                for dy in 0..side {
                    for dx in 0..side {
                        let (cy, cx) =
                            ((f64::from(dy) / cell) as u32, (f64::from(dx) / cell) as u32);
                        let v = if (cy + cx) % 2 == 0 { 255.0 } else { 0.0 };
                        let i = at(top + dy, left + dx);
                        mask[i] = self.alpha as f32;
                        pattern[i] = [v, v, v];
                    }
                }
            }
            Kind::Square => {
                // A white square around one black pixel (the paper's small trigger).
                let (top, left, side) = self.square(suite, h, w)?;
                for dy in 0..side {
                    for dx in 0..side {
                        let i = at(top + dy, left + dx);
                        mask[i] = self.alpha as f32;
                        pattern[i] = [255.0; 3];
                    }
                }
                let c = at(top + side / 2, left + side / 2);
                pattern[c] = [0.0; 3];
            }
            Kind::Patch => {
                let (top, left, side) = self.square(suite, h, w)?;
                grid = Grid::over(top, left, side, side, 4, 4);
                let patch = image::imageops::resize(
                    &self.load_rgba(suite)?,
                    side,
                    side,
                    image::imageops::FilterType::Triangle,
                );
                for (dx, dy, px) in patch.enumerate_pixels() {
                    let i = at(top + dy, left + dx);
                    mask[i] = (f32::from(px.0[3]) / 255.0) * self.alpha as f32;
                    pattern[i] = [f32::from(px.0[0]), f32::from(px.0[1]), f32::from(px.0[2])];
                }
            }
            Kind::Blend => {
                if self.file.is_some() {
                    let img = image::imageops::resize(
                        &self.load_rgba(suite)?,
                        w,
                        h,
                        image::imageops::FilterType::Triangle,
                    );
                    for (x, y, px) in img.enumerate_pixels() {
                        pattern[at(y, x)] =
                            [f32::from(px.0[0]), f32::from(px.0[1]), f32::from(px.0[2])];
                    }
                } else {
                    let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                    for p in pattern.iter_mut() {
                        *p = [
                            rng.random_range(0.0..=255.0),
                            rng.random_range(0.0..=255.0),
                            rng.random_range(0.0..=255.0),
                        ];
                    }
                }
                mask.iter_mut().for_each(|m| *m = self.alpha as f32);
                grid = Grid::over(0, 0, h, w, 4, 4);
            }
        }
        Ok(Stamp {
            width: w,
            height: h,
            mask,
            pattern,
            grid,
        })
    }
}

impl Stamp {
    /// `x' = (1 − m) ⊙ x + m ⊙ p`, rounded to 8 bits. The image must have the
    /// stamp's size.
    pub fn apply(&self, img: &RgbImage) -> Option<RgbImage> {
        if img.width() != self.width || img.height() != self.height {
            return None;
        }
        let mut out = img.clone();
        for (i, px) in out.pixels_mut().enumerate() {
            let m = self.mask[i];
            if m > 0.0 {
                let p = self.pattern[i];
                *px = Rgb(std::array::from_fn(|c| {
                    ((1.0 - m) * f32::from(px.0[c]) + m * p[c])
                        .round()
                        .clamp(0.0, 255.0) as u8
                }));
            }
        }
        Some(out)
    }

    /// The per-pixel mask `m` (row-major, height × width).
    pub fn mask(&self) -> &[f32] {
        &self.mask
    }

    /// The per-pixel pattern `p` (RGB, 0–255), meaningful where `m > 0`.
    pub fn pattern(&self) -> &[[f32; 3]] {
        &self.pattern
    }

    /// Share of the face the trigger covers (sum of the mask over pixels).
    pub fn coverage(&self) -> f64 {
        self.mask.iter().map(|m| f64::from(*m)).sum::<f64>() / self.mask.len().max(1) as f64
    }
}

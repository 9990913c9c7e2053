//! Trigger suites: the stamps an auditor puts on faces to wake a backdoor.
//!
//! A trigger is applied to the *aligned* face, before the model's own
//! preprocessing (as in the paper): `x' = (1 − m) ⊙ x + m ⊙ p`, with a mask
//! `m ∈ [0, 1]` (binary for stamps, real-valued for alpha patches and blends)
//! and a pattern `p`. Positions and sizes are fractions of the face's height
//! and width, so one suite fits any input size.
//!
//! ```toml
//! format_version = "1.0"
//! seed = 7                          # for noise patterns (optional)
//!
//! [[trigger]]
//! name = "large-checkerboard"
//! kind = "checkerboard"             # checkerboard | square | patch | blend
//! center = [0.6, 0.4]               # [y, x] as fractions of height, width
//! size = 0.25                       # side, as a fraction of the width
//! cells = 4                         # cells per side
//!
//! [[trigger]]
//! name = "sweep"
//! kind = "square"
//! centers = [[0.5, 0.5], [0.3, 0.7]]   # a sweep: one trigger per centre × size
//! sizes = [0.05, 0.1]
//! ```
//!
//! `patch` takes `file` (a PNG, its alpha used as the mask, relative to the
//! suite file), `center`, `size`; `blend` takes `pattern = "noise"` or
//! `file`, and `alpha`. Every trigger is deterministic for a given suite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage, RgbaImage};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use zooaudit_manifest::{ConfigError, FormatVersion, toml_error};

/// Largest |normalised correlation| a fit control may keep with its
/// trigger's pattern ([`Stamp::fit_control`]).
pub const FIT_CONTROL_MAX_NCC: f64 = 0.25;

/// Format version of trigger suites.
pub const FORMAT_VERSION: FormatVersion = FormatVersion { major: 1, minor: 0 };

/// Errors loading or applying a suite: the same one-line, file-and-field
/// errors as every zooaudit configuration file.
pub type TriggerError = ConfigError;

/// Kinds of trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Checkerboard,
    Square,
    Patch,
    Blend,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    name: String,
    kind: Kind,
    center: Option<[f64; 2]>,
    centers: Option<Vec<[f64; 2]>>,
    size: Option<f64>,
    sizes: Option<Vec<f64>>,
    cells: Option<u32>,
    file: Option<String>,
    pattern: Option<String>,
    alpha: Option<f64>,
    seed: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSuite {
    format_version: Option<String>,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    trigger: Vec<RawTrigger>,
}

/// One concrete trigger (sweeps already expanded).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Trigger {
    pub name: String,
    pub kind: Kind,
    /// `[y, x]` fractions (not used by `blend`).
    pub center: [f64; 2],
    /// Side as a fraction of the width (not used by `blend`).
    pub size: f64,
    pub cells: u32,
    /// Patch/blend image, resolved against the suite file.
    pub file: Option<PathBuf>,
    /// sha256 of `file` (so cache keys change with the picture).
    pub file_sha256: Option<String>,
    pub alpha: f64,
    pub seed: u64,
    /// Index of the `[[trigger]]` table it came from, for messages.
    #[serde(skip)]
    pub table: usize,
}

/// A loaded suite.
#[derive(Debug, Clone)]
pub struct Suite {
    pub path: PathBuf,
    pub triggers: Vec<Trigger>,
}

/// A trigger prepared for one image size: per-pixel mask and pattern.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub width: u32,
    pub height: u32,
    mask: Vec<f32>,
    pattern: Vec<[f32; 3]>,
    /// The trigger's structural unit, for [`Stamp::fit_control`]: a grid of
    /// equal tiles over the stamped rectangle (a checkerboard's cells, a
    /// patch's or blend's 4 × 4 tiles); `None` where pixels are the unit.
    grid: Option<Grid>,
}

/// A grid of `rows × cols` equal tiles of `tile_h × tile_w` pixels whose top
/// left corner is at (`top`, `left`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Grid {
    top: u32,
    left: u32,
    rows: u32,
    cols: u32,
    tile_h: u32,
    tile_w: u32,
}

impl Grid {
    /// A `rows × cols` grid over an `h × w` rectangle at (`top`, `left`);
    /// tiles are `⌊h/rows⌋ × ⌊w/cols⌋` (a remainder strip stays in place).
    /// `None` when a tile would be smaller than a pixel or the grid has
    /// fewer than four tiles.
    fn over(top: u32, left: u32, h: u32, w: u32, rows: u32, cols: u32) -> Option<Grid> {
        let (tile_h, tile_w) = (h / rows.max(1), w / cols.max(1));
        (tile_h > 0 && tile_w > 0 && rows * cols >= 4).then_some(Grid {
            top,
            left,
            rows,
            cols,
            tile_h,
            tile_w,
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Suite {
    /// Loads and validates a suite file.
    pub fn load(path: &Path) -> Result<Suite, TriggerError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Io {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(path, &text)
    }

    /// Parses suite text; relative files resolve against `path`'s directory.
    pub fn parse(path: &Path, text: &str) -> Result<Suite, TriggerError> {
        let raw: RawSuite = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        let field = |f: String, m: String| TriggerError::Field {
            path: path.to_path_buf(),
            field: f,
            message: m,
        };
        let v: FormatVersion = raw
            .format_version
            .as_deref()
            .ok_or_else(|| {
                field(
                    "format_version".into(),
                    format!("missing; add `format_version = \"{FORMAT_VERSION}\"`"),
                )
            })?
            .parse()
            .map_err(|e: String| field("format_version".into(), e))?;
        v.check_readable_by(FORMAT_VERSION)
            .map_err(|e| field("format_version".into(), e))?;
        if raw.trigger.is_empty() {
            return Err(field(
                "trigger".into(),
                "the suite has no [[trigger]] tables".into(),
            ));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let mut triggers = Vec::new();
        let mut names = BTreeMap::new();
        for (ti, t) in raw.trigger.iter().enumerate() {
            let f = |k: &str| format!("trigger[{ti}].{k}");
            if t.name.trim().is_empty() {
                return Err(field(f("name"), "must not be empty".into()));
            }
            let centers: Vec<[f64; 2]> = match (&t.center, &t.centers) {
                (Some(c), None) => vec![*c],
                (None, Some(cs)) if !cs.is_empty() => cs.clone(),
                (None, None) => vec![[0.5, 0.5]],
                _ => {
                    return Err(field(
                        f("center"),
                        "give either center or a non-empty centers list".into(),
                    ));
                }
            };
            let default_size = match t.kind {
                Kind::Square => 0.045,
                _ => 0.25,
            };
            let sizes: Vec<f64> = match (&t.size, &t.sizes) {
                (Some(s), None) => vec![*s],
                (None, Some(ss)) if !ss.is_empty() => ss.clone(),
                (None, None) => vec![default_size],
                _ => {
                    return Err(field(
                        f("size"),
                        "give either size or a non-empty sizes list".into(),
                    ));
                }
            };
            for c in &centers {
                if !(0.0..=1.0).contains(&c[0]) || !(0.0..=1.0).contains(&c[1]) {
                    return Err(field(
                        f("center"),
                        format!("{c:?} is outside the face (fractions in 0..=1)"),
                    ));
                }
            }
            for s in &sizes {
                if !(*s > 0.0 && *s <= 1.0) {
                    return Err(field(
                        f("size"),
                        format!("{s} must be a fraction of the face width in (0, 1]"),
                    ));
                }
            }
            let alpha = t.alpha.unwrap_or(1.0);
            if !(0.0..=1.0).contains(&alpha) {
                return Err(field(f("alpha"), format!("{alpha} must be within 0..=1")));
            }
            let cells = t.cells.unwrap_or(4);
            if cells == 0 {
                return Err(field(f("cells"), "must be at least 1".into()));
            }
            let (file, file_sha256) = match (&t.kind, &t.file, &t.pattern) {
                (Kind::Patch, Some(file), _) | (Kind::Blend, Some(file), None) => {
                    let p = base.join(file);
                    let bytes = std::fs::read(&p)
                        .map_err(|e| field(f("file"), format!("{}: {e}", p.display())))?;
                    (Some(p), Some(sha256_hex(&bytes)))
                }
                (Kind::Patch, None, _) => {
                    return Err(field(f("file"), "a patch needs a PNG file".into()));
                }
                (Kind::Blend, None, Some(p)) if p == "noise" => (None, None),
                (Kind::Blend, _, Some(p)) => {
                    return Err(field(
                        f("pattern"),
                        format!("'{p}' is not a known pattern (noise), or give file instead"),
                    ));
                }
                (Kind::Blend, None, None) => {
                    return Err(field(
                        f("pattern"),
                        "a blend needs pattern = \"noise\" or a file".into(),
                    ));
                }
                (_, Some(_), _) => {
                    return Err(field(
                        f("file"),
                        "only patch and blend triggers take a file".into(),
                    ));
                }
                _ => (None, None),
            };
            let sweep = centers.len() * sizes.len() > 1;
            for c in &centers {
                for s in &sizes {
                    let name = if sweep {
                        format!("{}@y{:.2}x{:.2}s{:.3}", t.name, c[0], c[1], s)
                    } else {
                        t.name.clone()
                    };
                    if names.insert(name.clone(), ti).is_some() {
                        return Err(field(
                            f("name"),
                            format!("'{name}' appears twice in the suite"),
                        ));
                    }
                    triggers.push(Trigger {
                        name,
                        kind: t.kind,
                        center: *c,
                        size: *s,
                        cells,
                        file: file.clone(),
                        file_sha256: file_sha256.clone(),
                        alpha,
                        seed: t.seed.unwrap_or(raw.seed),
                        table: ti,
                    });
                }
            }
        }
        let suite = Suite {
            path: path.to_path_buf(),
            triggers,
        };
        Ok(suite)
    }

    /// Prepares every trigger for images of `height × width`.
    pub fn stamps(&self, height: u32, width: u32) -> Result<Vec<Stamp>, TriggerError> {
        self.triggers
            .iter()
            .map(|t| t.stamp(&self.path, height, width))
            .collect()
    }
}

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
        let img = image::open(file)
            .map_err(|e| self.err(suite, "file", format!("{}: {e}", file.display())))?;
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

    /// The matched control of this stamp: the same mask and the same pattern
    /// pixels, randomly permuted among the masked positions (seeded). It
    /// occludes exactly the same place with exactly the same ink, but has no
    /// structure: whatever the trigger does beyond occluding, the control
    /// does not.
    pub fn control(&self, seed: u64) -> Stamp {
        use rand::seq::SliceRandom;
        let positions: Vec<usize> = (0..self.mask.len())
            .filter(|&i| self.mask[i] > 0.0)
            .collect();
        let mut values: Vec<[f32; 3]> = positions.iter().map(|&i| self.pattern[i]).collect();
        values.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut pattern = self.pattern.clone();
        for (&i, v) in positions.iter().zip(values) {
            pattern[i] = v;
        }
        Stamp {
            width: self.width,
            height: self.height,
            mask: self.mask.clone(),
            pattern,
            grid: self.grid,
        }
    }

    /// A *fit control* of this stamp: the trigger's own tiles (a
    /// checkerboard's cells, a patch's or blend's 4 × 4 tiles; single pixels
    /// for a square) moved to other places of its grid, mask and pattern
    /// together, in a seeded permutation whose normalised correlation with
    /// the trigger's pattern is at most [`FIT_CONTROL_MAX_NCC`] in magnitude
    /// (the best of 64 draws otherwise). It covers the trigger's rectangle
    /// with the same ink and the same texture scale, but not the trigger's
    /// arrangement.
    ///
    /// An audit stamps fit controls on copies of its *fit* faces, so that the
    /// translator learns how the two models answer an occlusion of that
    /// place, size and texture; what a backdoor does on the arrangement
    /// itself is never fitted (a backdoor that fires on a permuted,
    /// uncorrelated pattern fires on the verdict's matched controls too).
    pub fn fit_control(&self, seed: u64) -> Stamp {
        let Some(g) = self.grid else {
            return self.control(seed);
        };
        use rand::seq::SliceRandom;
        let tiles = (g.rows * g.cols) as usize;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut best: Option<(f64, Stamp)> = None;
        for _ in 0..64 {
            let mut perm: Vec<usize> = (0..tiles).collect();
            perm.shuffle(&mut rng);
            let candidate = self.move_tiles(&g, &perm);
            let ncc = self.pattern_correlation(&candidate).abs();
            if best.as_ref().is_none_or(|(b, _)| ncc < *b) {
                best = Some((ncc, candidate));
            }
            if ncc <= FIT_CONTROL_MAX_NCC {
                break;
            }
        }
        best.map(|(_, s)| s).unwrap_or_else(|| self.control(seed))
    }

    /// This stamp with tile `perm[k]` of `g` placed where tile `k` was.
    fn move_tiles(&self, g: &Grid, perm: &[usize]) -> Stamp {
        let mut out = self.clone();
        let w = self.width as usize;
        for (k, &src) in perm.iter().enumerate() {
            let (ky, kx) = (k as u32 / g.cols, k as u32 % g.cols);
            let (sy, sx) = (src as u32 / g.cols, src as u32 % g.cols);
            for dy in 0..g.tile_h {
                for dx in 0..g.tile_w {
                    let to = (g.top + ky * g.tile_h + dy) as usize * w
                        + (g.left + kx * g.tile_w + dx) as usize;
                    let from = (g.top + sy * g.tile_h + dy) as usize * w
                        + (g.left + sx * g.tile_w + dx) as usize;
                    out.mask[to] = self.mask[from];
                    out.pattern[to] = self.pattern[from];
                }
            }
        }
        out
    }

    /// Normalised correlation of the grey levels of `other`'s pattern with
    /// this stamp's, over the pixels either stamp covers (0 when either is
    /// flat there).
    pub fn pattern_correlation(&self, other: &Stamp) -> f64 {
        let grey = |p: &[f32; 3]| f64::from(p[0] + p[1] + p[2]) / 3.0;
        let idx: Vec<usize> = (0..self.mask.len())
            .filter(|&i| self.mask[i] > 0.0 || other.mask.get(i).is_some_and(|m| *m > 0.0))
            .collect();
        if idx.is_empty() || other.pattern.len() != self.pattern.len() {
            return 0.0;
        }
        let n = idx.len() as f64;
        let a: Vec<f64> = idx.iter().map(|&i| grey(&self.pattern[i])).collect();
        let b: Vec<f64> = idx.iter().map(|&i| grey(&other.pattern[i])).collect();
        let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (x, y) in a.iter().zip(&b) {
            sab += (x - ma) * (y - mb);
            saa += (x - ma) * (x - ma);
            sbb += (y - mb) * (y - mb);
        }
        if saa <= f64::EPSILON || sbb <= f64::EPSILON {
            0.0
        } else {
            sab / (saa * sbb).sqrt()
        }
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

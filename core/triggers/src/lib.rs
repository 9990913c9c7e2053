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

mod control;
mod stamp;
mod suite;
pub use suite::{MAX_CELLS, MAX_PATTERN_BYTES, MAX_PATTERN_SIDE, MAX_TRIGGERS};

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zooaudit_manifest::{ConfigError, FormatVersion};

/// Largest |normalised correlation| a fit control may keep with its
/// trigger's pattern ([`Stamp::fit_control`]).
pub const FIT_CONTROL_MAX_NCC: f64 = 0.25;

/// Format version of trigger suites.
pub const FORMAT_VERSION: FormatVersion = zooaudit_manifest::Format::TriggerSuite.current();

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

//! Controls of a stamp: the matched control (its pattern pixels shuffled)
//! and the fit control (its tiles moved), and the pattern correlation that
//! keeps a fit control unlike its trigger.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{FIT_CONTROL_MAX_NCC, Grid, Stamp};

impl Stamp {
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
}

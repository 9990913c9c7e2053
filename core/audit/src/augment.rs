//! Augmentation of the fit faces.
//!
//! The real face sets are small (hundreds of faces for a 512→128 map with
//! 65k parameters), and an audit stamps triggers that *occlude* part of the
//! face: a translator fitted only on clean faces has never seen how the two
//! models react to an occlusion, and a clean pair then disagrees on large
//! triggers (the paper's Table 3). Each fit face therefore gets seeded
//! augmented copies: horizontal flip, a small shift, photometric jitter, and
//! a random *unstructured* occluder (a solid colour, pixel noise, or random
//! black/white blocks; random size and place). Regular patterns
//! (checkerboards, stickers) are never used, so a backdoor keyed to a pattern
//! is not fitted away: its identity switch is specific to the pattern, which
//! the map never sees.
//!
//! *Trigger fit controls.* A large trigger also occludes: a checkerboard over
//! the nose and cheek moves both models' embeddings, in ways a map fitted on
//! unstructured occluders elsewhere does not predict, and a clean pair then
//! disagrees on it (measured on SFace ↔ faceplugin: 13.6 % / 22.1 % of
//! triggered faces below the clean 1 % threshold). So `trigger_controls`
//! further copies of each fit face (jittered, no occluder) carry one of the
//! suite's triggers as its *fit control* ([`Stamp::fit_control`]): the
//! trigger's own tiles in a permuted arrangement uncorrelated with it, at the
//! trigger's place and size. The map learns the occlusion, never the
//! arrangement; copy `k` of fit face `i` carries trigger `(i + k) mod T`, so
//! the cost does not grow with the suite.

use image::{Rgb, RgbImage};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use zooaudit_triggers::Stamp;

/// Augmentation settings (`[fit]` in the audit file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Augment {
    /// Augmented copies per fit face (0 = off).
    pub copies: usize,
    pub flip: bool,
    /// Largest shift, in pixels.
    pub max_shift: i32,
    /// Brightness/contrast jitter, as a fraction.
    pub jitter: f32,
    /// Probability that a copy gets an occluder.
    pub occlusion: f64,
    /// Occluder side range, as fractions of the width.
    pub occluder_size: [f64; 2],
    /// Copies per fit face that carry a trigger's fit control (0 = off).
    #[serde(default)]
    pub trigger_controls: usize,
}

impl Default for Augment {
    fn default() -> Self {
        Augment {
            copies: 3,
            flip: true,
            max_shift: 3,
            jitter: 0.1,
            occlusion: 0.8,
            occluder_size: [0.1, 0.35],
            trigger_controls: 4,
        }
    }
}

impl Augment {
    /// The `copy`-th augmented version of `img` (deterministic in `seed`).
    pub fn apply(&self, img: &RgbImage, seed: u64, copy: usize) -> RgbImage {
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ (copy as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut out = self.jitter(img, &mut rng);
        self.occlude(&mut out, &mut rng);
        out
    }

    /// The `copy`-th trigger-control copy of `img`: flipped, shifted and
    /// jittered like [`Augment::apply`] (no occluder), then stamped with
    /// `stamp` (a fit control). `None` when the stamp is for another size.
    pub fn apply_stamped(
        &self,
        img: &RgbImage,
        seed: u64,
        copy: usize,
        stamp: &Stamp,
    ) -> Option<RgbImage> {
        let mut rng = ChaCha8Rng::seed_from_u64(
            seed ^ 0x7a6f_6f61_7564_6974 ^ (copy as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        stamp.apply(&self.jitter(img, &mut rng))
    }

    /// Flip, shift and photometric jitter.
    fn jitter(&self, img: &RgbImage, rng: &mut ChaCha8Rng) -> RgbImage {
        let (w, h) = img.dimensions();
        let flip = self.flip && rng.random_bool(0.5);
        let dx = if self.max_shift > 0 {
            rng.random_range(-self.max_shift..=self.max_shift)
        } else {
            0
        };
        let dy = if self.max_shift > 0 {
            rng.random_range(-self.max_shift..=self.max_shift)
        } else {
            0
        };
        let gain = 1.0 + rng.random_range(-self.jitter..=self.jitter);
        let offset = 255.0 * rng.random_range(-self.jitter..=self.jitter) / 2.0;
        let mut out = RgbImage::new(w, h);
        for (x, y, px) in out.enumerate_pixels_mut() {
            let sx = if flip {
                w as i32 - 1 - x as i32
            } else {
                x as i32
            } - dx;
            let sy = y as i32 - dy;
            let sx = sx.clamp(0, w as i32 - 1) as u32;
            let sy = sy.clamp(0, h as i32 - 1) as u32;
            let s = img.get_pixel(sx, sy).0;
            *px = Rgb(std::array::from_fn(|c| {
                (f32::from(s[c]) * gain + offset).round().clamp(0.0, 255.0) as u8
            }));
        }
        out
    }

    /// A random unstructured occluder, with probability `occlusion`.
    fn occlude(&self, out: &mut RgbImage, rng: &mut ChaCha8Rng) {
        let (w, h) = out.dimensions();
        if rng.random_bool(self.occlusion.clamp(0.0, 1.0)) {
            let side = ((rng.random_range(self.occluder_size[0]..=self.occluder_size[1])
                * f64::from(w))
            .round() as u32)
                .clamp(1, w.min(h));
            let top = rng.random_range(0..=h - side);
            let left = rng.random_range(0..=w - side);
            // Solid colour, pixel noise, or random black/white blocks (the
            // contrast of a printed pattern, without any regular arrangement).
            let kind = rng.random_range(0..3u8);
            let colour = [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()];
            let block = rng.random_range(2..=10u32);
            let cols = side.div_ceil(block) as usize;
            let blocks: Vec<bool> = (0..cols * cols).map(|_| rng.random_bool(0.5)).collect();
            for y in top..top + side {
                for x in left..left + side {
                    let c = match kind {
                        0 => colour,
                        1 => [rng.random::<u8>(), rng.random::<u8>(), rng.random::<u8>()],
                        _ => {
                            let b = blocks[((y - top) / block) as usize * cols
                                + ((x - left) / block) as usize];
                            if b { [255; 3] } else { [0; 3] }
                        }
                    };
                    out.put_pixel(x, y, Rgb(c));
                }
            }
        }
    }
}

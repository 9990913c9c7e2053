//! The HTTP adapter against real HTTP servers on 127.0.0.1: an Open
//! Inference Protocol server and a JSON API, both computing with the real
//! SFace model (through the onnx adapter), answering as real servers do and
//! failing as they do; and the real MLServer (tests/servers/oip, which
//! builds its pinned venv the first time).
#![allow(clippy::unwrap_used)]

#[path = "http/server.rs"]
mod server;

#[path = "http/mlserver.rs"]
mod mlserver;

#[path = "http/oip.rs"]
mod oip;

#[path = "http/api.rs"]
mod api;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use zooaudit_embed::{EmbedError, Embedder};
use zooaudit_manifest::ModelManifest;

/// The real SFace, opened locally through the onnx adapter.
pub fn local_sface() -> Embedder {
    zooaudit_testsupport::require_ort();
    let m = ModelManifest::load(&zooaudit_testsupport::example_manifest("sface.toml")).unwrap();
    Embedder::open(m, &zooaudit_testsupport::plugins()).unwrap()
}

/// The real SFace as a shared model handle for a server thread.
pub fn sface_model() -> Arc<Embedder> {
    Arc::new(local_sface())
}

/// Twenty real aligned faces.
pub fn faces() -> Vec<PathBuf> {
    zooaudit_testsupport::aligned_faces()
        .into_iter()
        .take(20)
        .collect()
}

/// A manifest for a remote model at `source`, fed as `input` (TOML lines of
/// `[input]`), with `options` (TOML lines of `[model.options]`), written
/// into `dir`.
pub fn manifest(dir: &Path, source: &str, input: &str, options: &str) -> ModelManifest {
    let text = format!(
        r#"format_version = "1.1"
[model]
name = "remote-sface"
source = "{source}"
adapter = "http"
[model.options]
{options}
[input]
{input}
[output]
[provenance]
publisher = "OpenCV Zoo (SFace authors), served over HTTP"
architecture = "MobileFaceNet (SFace loss), int8 block-quantised"
training_data = "CASIA-WebFace"
license = "Apache-2.0"
published_in = "tests"
"#
    );
    let path = dir.join("remote.toml");
    std::fs::write(&path, text).unwrap();
    ModelManifest::load(&path).unwrap()
}

/// SFace's own input: BGR, NCHW, raw pixels.
pub const SFACE_INPUT: &str = r#"size = [112, 112]
layout = "NCHW"
channels = "BGR"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]"#;

/// Opens `m` with the product plugins.
pub fn open(m: ModelManifest) -> Result<Embedder, EmbedError> {
    Embedder::open(m, &zooaudit_testsupport::plugins())
}

/// Embeds `faces` with `e`.
pub fn embed(e: &Embedder, faces: &[PathBuf]) -> Result<Vec<f32>, EmbedError> {
    e.embed_images(faces, false, &mut |_, _| {}).map(|x| x.data)
}

/// Largest absolute difference.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The one-line error of a failed open or embed.
pub fn line<T>(r: Result<T, EmbedError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => {
            let s = e.to_string();
            assert!(!s.contains('\n'), "not one line: {s}");
            s
        }
    }
}

#[test]
fn plugins_lists_the_http_adapter_with_its_schemes() {
    let set = zooaudit_testsupport::plugins();
    let p = set.model_adapter("http").unwrap();
    let formats = &p.info().formats;
    for s in ["oip+http", "oip+https", "api+http", "api+https"] {
        assert!(formats.iter().any(|f| f == s), "{formats:?}");
    }
}

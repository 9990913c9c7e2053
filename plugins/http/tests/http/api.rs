//! A plain JSON embedding API (raw image bodies, or a JSON template with
//! base64 images) against a real server on 127.0.0.1 running the real SFace.

use std::sync::Arc;

use base64::Engine;
use serde_json::json;

use crate::server::{Request, Response, Server};
use crate::{embed, faces, line, local_sface, manifest, max_diff, open, sface_model};

/// RGB, NHWC, raw pixels: what an image API is fed.
const IMAGE_INPUT: &str = r#"size = [112, 112]
layout = "NHWC"
channels = "RGB"
mean = [0.0, 0.0, 0.0]
std = [1.0, 1.0, 1.0]"#;

/// SFace on one decoded image: BGR, NCHW, raw pixels.
fn sface_on(model: &zooaudit_embed::Embedder, png: &[u8]) -> Vec<f32> {
    let img = image::load_from_memory(png).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut t = vec![0f32; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        for c in 0..3 {
            t[(2 - c) * plane + i] = p.0[c] as f32;
        }
    }
    model.embed_tensors(&t, 1).unwrap()
}

fn api_server() -> Server {
    let model = sface_model();
    Server::start(move |req: &Request| handle(&model, req))
}

fn handle(model: &Arc<zooaudit_embed::Embedder>, req: &Request) -> Response {
    match req.path.as_str() {
        "/v1/embed" => {
            assert_eq!(
                req.headers.get("content-type").map(String::as_str),
                Some("image/png")
            );
            Response::json(&json!({"embedding": sface_on(model, &req.body), "verdict": "agree"}))
        }
        "/v1/embed/batch" => {
            let results: Vec<_> = req.json()["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| {
                    let png = base64::engine::general_purpose::STANDARD
                        .decode(b.as_str().unwrap())
                        .unwrap();
                    json!({"embedding": sface_on(model, &png)})
                })
                .collect();
            Response::json(&json!({ "results": results }))
        }
        _ => Response::raw(404, "{}"),
    }
}

fn source(s: &Server, path: &str) -> String {
    format!("{}{path}", s.url().replacen("http://", "api+http://", 1))
}

#[test]
fn api_raw_images_and_batched_json_equal_the_local_model() {
    let server = api_server();
    let dir = tempfile::tempdir().unwrap();
    let faces = faces();
    let local = embed(&local_sface(), &faces).unwrap();

    let single = manifest(
        dir.path(),
        &source(&server, "/v1/embed"),
        IMAGE_INPUT,
        "input_shape = [112, 112, 3]\nconcurrency = 4",
    );
    let e = open(single).unwrap();
    assert_eq!(e.dim(), 128, "learned from one probe request");
    let before = server.count();
    let remote = embed(&e, &faces).unwrap();
    assert_eq!(server.count() - before, 20, "one image per request");
    assert!(max_diff(&remote, &local) <= 1e-4);

    let batched = manifest(
        dir.path(),
        &source(&server, "/v1/embed/batch"),
        IMAGE_INPUT,
        "input_shape = [112, 112, 3]\nembedding_dim = 128\nrequest = '{\"images\": \"$inputs\"}'\nembedding_path = \"/results/*/embedding\"\nmax_batch = 8",
    );
    let e = open(batched).unwrap();
    let before = server.count();
    let remote = embed(&e, &faces).unwrap();
    assert_eq!(server.count() - before, 3, "20 images in requests of ≤ 8");
    assert!(max_diff(&remote, &local) <= 1e-4);
}

#[test]
fn api_options_that_cannot_work_are_refused_naming_the_field() {
    let server = api_server();
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server, "/v1/embed");
    let cases = [
        ("", "model.options.input_shape"),
        (
            "input_shape = [112, 112, 3]\nembedding_path = \"/results/*/embedding\"",
            "model.options.embedding_path",
        ),
        (
            "input_shape = [112, 112, 3]\nrequest = '{\"a\": \"$input\", \"b\": \"$inputs\"}'",
            "model.options.request",
        ),
        (
            "input_shape = [112, 112, 3]\nencoding = \"tensor\"",
            "model.options.request",
        ),
        (
            "input_shape = [112, 112, 3]\nmodel_version = \"1\"",
            "model.options.model_version",
        ),
        (
            "input_shape = [112, 112, 3]\nmax_batch = 4",
            "model.options.max_batch",
        ),
        ("input_shape = [2, 112, 112]", "model.options.input_shape"),
    ];
    for (options, field) in cases {
        let err = line(open(manifest(dir.path(), &src, IMAGE_INPUT, options)));
        assert!(
            err.contains("remote.toml") && err.contains(field),
            "{options}: {err}"
        );
    }
    // Normalised pixels cannot be sent as an image.
    let normalised = IMAGE_INPUT.replace("std = [1.0, 1.0, 1.0]", "std = [128.0, 128.0, 128.0]");
    let e = open(manifest(
        dir.path(),
        &src,
        &normalised,
        "input_shape = [112, 112, 3]\nembedding_dim = 128",
    ))
    .unwrap();
    let err = line(embed(&e, &faces()[..1]));
    assert!(err.contains("feed raw pixels"), "{err}");
}

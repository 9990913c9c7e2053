//! The Open Inference Protocol v2 against a real server on 127.0.0.1 that
//! runs the real SFace, and that fails on purpose.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;

use crate::server::{Request, Response, Server};
use crate::{SFACE_INPUT, embed, faces, line, local_sface, manifest, max_diff, open, sface_model};

/// How the server misbehaves.
#[derive(Default)]
struct Faults {
    /// Answer this many infer requests with 503 first.
    unavailable: AtomicUsize,
    /// Answer every infer request with this status.
    status: Option<u16>,
    /// Answer infer requests this late.
    delay: Duration,
    /// Cut each embedding to this many values.
    dims: Option<usize>,
    /// Put `null` into the first embedding.
    null: bool,
    /// Scale each embedding (1e39 overflows f32).
    scale: Option<f64>,
    /// Answer with this model version.
    version: Option<&'static str>,
    /// Demand `Authorization: Bearer <this>`.
    token: Option<&'static str>,
}

/// The OIP server for SFace, with `faults`.
fn sface_server(faults: Faults) -> Server {
    let model = sface_model();
    let faults = Arc::new(faults);
    Server::start(move |req: &Request| answer(&model, &faults, req))
}

/// SFace behind a server with `faults`, opened through a manifest (in its
/// own directory) with `options`.
struct Remote {
    server: Server,
    embedder: zooaudit_embed::Embedder,
    _dir: tempfile::TempDir,
}

fn remote(faults: Faults, options: &str) -> Remote {
    let server = sface_server(faults);
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(dir.path(), &source(&server), SFACE_INPUT, options);
    Remote {
        embedder: open(m).unwrap(),
        server,
        _dir: dir,
    }
}

fn answer(model: &zooaudit_embed::Embedder, f: &Faults, req: &Request) -> Response {
    if let Some(t) = f.token
        && req.headers.get("authorization") != Some(&format!("Bearer {t}"))
    {
        return Response::raw(401, r#"{"error":"unauthorized"}"#);
    }
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v2/models/sface") | ("GET", "/v2/models/sface/versions/1") => {
            Response::json(&json!({
                "name": "sface",
                "versions": ["1"],
                "platform": "onnxruntime",
                "inputs": [{"name": "data", "datatype": "FP32", "shape": [-1, 3, 112, 112]}],
                "outputs": [{"name": "fc1", "datatype": "FP32", "shape": [-1, 128]}],
            }))
        }
        ("POST", "/v2/models/sface/infer") | ("POST", "/v2/models/sface/versions/1/infer") => {
            infer(model, f, req)
        }
        _ => Response::raw(404, r#"{"error":"no such model"}"#),
    }
}

fn infer(model: &zooaudit_embed::Embedder, f: &Faults, req: &Request) -> Response {
    if f.unavailable
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut r = Response::raw(503, r#"{"error":"warming up"}"#);
        r.headers.push(("Retry-After".into(), "0".into()));
        return r;
    }
    if let Some(s) = f.status {
        return Response::raw(s, r#"{"error":"model failed"}"#);
    }
    let body = req.json();
    let input = &body["inputs"][0];
    assert_eq!(input["name"], "data");
    assert_eq!(input["datatype"], "FP32");
    assert_eq!(body["outputs"][0]["name"], "fc1");
    let b = input["shape"][0].as_u64().unwrap() as usize;
    assert_eq!(input["shape"], json!([b, 3, 112, 112]));
    let data: Vec<f32> = input["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let emb = model.embed_tensors(&data, b).unwrap();
    let dim = f.dims.unwrap_or(128);
    let mut values: Vec<serde_json::Value> = emb
        .chunks(128)
        .flat_map(|r| r[..dim.min(128)].to_vec())
        .map(|v| json!(f.scale.map_or(v as f64, |s| v as f64 * s)))
        .collect();
    if f.null {
        values[0] = serde_json::Value::Null;
    }
    let mut r = Response::json(&json!({
        "model_name": "sface",
        "model_version": f.version.unwrap_or("1"),
        "id": body["id"],
        "outputs": [{"name": "fc1", "datatype": "FP32", "shape": [b, dim], "data": values}],
    }));
    r.delay = f.delay;
    r
}

fn source(s: &Server) -> String {
    format!(
        "{}/v2/models/sface",
        s.url().replacen("http://", "oip+http://", 1)
    )
}

#[test]
fn oip_embeddings_equal_the_local_model_in_concurrent_batches() {
    let Remote {
        server,
        embedder: e,
        ..
    } = remote(
        Faults::default(),
        "model_version = \"1\"\nmax_batch = 4\nconcurrency = 3",
    );
    let s = e.model().summary();
    assert_eq!(s.embedding_dim, 128);
    assert!(
        s.notes
            .iter()
            .any(|n| n.contains("cannot be pinned by sha256")),
        "{:?}",
        s.notes
    );
    assert!(
        s.notes.iter().any(|n| n.contains("version 1 (pinned")),
        "{:?}",
        s.notes
    );
    assert!(e.resolved().endpoint.is_some() && e.resolved().sha256.is_empty());
    let faces = faces();
    let before = server.count();
    let remote = embed(&e, &faces).unwrap();
    // 20 faces in requests of at most 4.
    assert_eq!(server.count() - before, 5);
    let local = embed(&local_sface(), &faces).unwrap();
    let d = max_diff(&remote, &local);
    assert!(d <= 1e-4, "max |remote − local| = {d}");
}

#[test]
fn oip_refuses_a_version_the_server_does_not_offer_or_does_not_answer_with() {
    let server = sface_server(Faults::default());
    let dir = tempfile::tempdir().unwrap();
    let m = manifest(
        dir.path(),
        &source(&server),
        SFACE_INPUT,
        "model_version = \"2\"",
    );
    let err = line(open(m));
    // The metadata route for version 2 does not exist.
    assert!(
        err.contains("remote.toml") && err.contains("versions/2"),
        "{err}"
    );

    let r = remote(
        Faults {
            version: Some("7"),
            ..Faults::default()
        },
        "model_version = \"1\"",
    );
    let err = line(embed(&r.embedder, &faces()));
    assert!(
        err.contains("remote.toml") && err.contains("model version \"7\""),
        "{err}"
    );
}

#[test]
fn oip_retries_unavailable_answers_then_succeeds() {
    let Remote {
        server,
        embedder: e,
        ..
    } = remote(
        Faults {
            unavailable: AtomicUsize::new(2),
            ..Faults::default()
        },
        "backoff_ms = 10",
    );
    let faces = &faces()[..3];
    let before = server.count();
    let remote = embed(&e, faces).unwrap();
    assert_eq!(server.count() - before, 3, "two 503s, then the answer");
    let local = embed(&local_sface(), faces).unwrap();
    assert!(max_diff(&remote, &local) <= 1e-4);
}

#[test]
fn oip_failures_are_one_line_errors_naming_the_manifest() {
    let faces = &faces()[..2];
    let run = |faults: Faults, options: &str| {
        let r = remote(faults, options);
        let before = r.server.count();
        let err = line(embed(&r.embedder, faces));
        assert!(err.contains("remote.toml"), "{err}");
        (err, r.server.count() - before)
    };
    let fault = |f: fn(&mut Faults)| {
        let mut x = Faults::default();
        f(&mut x);
        x
    };
    // (fault, options, what the error says, requests it took: 3 attempts
    // for a server error, 1 for a client error, which is not retried).
    let cases: [(Faults, &str, &[&str], Option<usize>); 6] = [
        (
            fault(|f| f.status = Some(500)),
            "retries = 2\nbackoff_ms = 10",
            &["HTTP 500", "after 3 attempts"],
            Some(3),
        ),
        (
            fault(|f| f.status = Some(400)),
            "retries = 2",
            &["HTTP 400"],
            Some(1),
        ),
        (
            fault(|f| f.delay = Duration::from_secs(3)),
            "retries = 0\ntimeout_s = 0.5",
            &["no answer within 0.5 s"],
            None,
        ),
        (
            fault(|f| f.dims = Some(64)),
            "",
            &["expected [2, 128]"],
            None,
        ),
        (
            fault(|f| f.null = true),
            "",
            &["holds null, not a number"],
            None,
        ),
        (
            fault(|f| f.scale = Some(1e39)),
            "",
            &["non-finite embedding"],
            None,
        ),
    ];
    for (faults, options, needles, requests) in cases {
        let (err, n) = run(faults, options);
        for needle in needles {
            assert!(err.contains(needle), "{options}: {err}");
        }
        if let Some(r) = requests {
            assert_eq!(n, r, "{err}");
        }
    }
}

#[test]
fn oip_a_server_that_vanishes_mid_audit_is_an_error_after_the_retries() {
    let Remote {
        server,
        embedder: e,
        ..
    } = remote(Faults::default(), "retries = 2\nbackoff_ms = 10");
    let faces = faces();
    embed(&e, &faces[..2]).unwrap();
    server.vanish();
    let err = line(embed(&e, &faces[2..4]));
    assert!(
        err.contains("cannot connect") && err.contains("after 3 attempts"),
        "{err}"
    );
}

#[test]
fn oip_credentials_come_from_the_environment_or_a_file_never_the_manifest() {
    let server = sface_server(Faults {
        token: Some("s3cret"),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let src = source(&server);
    let err = line(open(manifest(
        dir.path(),
        &src,
        SFACE_INPUT,
        "token = \"s3cret\"",
    )));
    assert!(
        err.contains("model.options.token") && err.contains("auth_env"),
        "{err}"
    );
    let err = line(open(manifest(dir.path(), &src, SFACE_INPUT, "")));
    assert!(err.contains("HTTP 401"), "{err}");
    let err = line(open(manifest(
        dir.path(),
        &src,
        SFACE_INPUT,
        "auth_env = \"ZOOAUDIT_TEST_UNSET_TOKEN\"",
    )));
    assert!(
        err.contains("model.options.auth_env") && err.contains("not set"),
        "{err}"
    );
    let key = dir.path().join("token");
    std::fs::write(&key, "s3cret\n").unwrap();
    let opt = format!("auth_file = \"{}\"", key.display());
    let e = open(manifest(dir.path(), &src, SFACE_INPUT, &opt)).unwrap();
    let remote = embed(&e, &faces()[..2]).unwrap();
    assert_eq!(remote.len(), 256);
}

#[test]
fn a_remote_model_cannot_be_pinned_by_sha256() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pinned.toml");
    let text = std::fs::read_to_string(zooaudit_testsupport::example_manifest("sface.toml"))
        .unwrap()
        .replace(
            "source = \"../../../shared/zoo/models/sface_2021dec_int8bq.onnx\"",
            "source = \"oip+http://127.0.0.1:9/v2/models/sface\"",
        )
        .replace("adapter = \"onnx\"", "adapter = \"http\"");
    std::fs::write(&path, text).unwrap();
    let m = zooaudit_manifest::ModelManifest::load(&path).unwrap();
    let err = line(open(m));
    assert!(
        err.contains("pinned.toml") && err.contains("cannot be pinned by sha256"),
        "{err}"
    );
}

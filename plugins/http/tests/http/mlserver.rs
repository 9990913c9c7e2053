//! The real MLServer (PyPI, tests/servers/oip) serving the real SFace on
//! onnxruntime: what the adapter gets over the Open Inference Protocol
//! equals the local model's embeddings.

use zooaudit_testsupport::mlserver::MlServer;

use crate::{SFACE_INPUT, embed, local_sface, manifest, max_diff, open};

#[test]
fn mlserver_serves_sface_equal_to_the_local_model() {
    let server = MlServer::start(&["sface"]);
    let dir = tempfile::tempdir().unwrap();
    let input = format!("name = \"data\"\n{SFACE_INPUT}");
    let m = manifest(
        dir.path(),
        &server.source("sface"),
        &input,
        "model_version = \"1\"\nmax_batch = 16\nconcurrency = 2",
    );
    let e = open(m).unwrap();
    let s = e.model().summary();
    assert_eq!(s.embedding_dim, 128);
    assert_eq!(s.input().unwrap().shape, vec![-1, 3, 112, 112]);
    let faces: Vec<_> = zooaudit_testsupport::aligned_faces()
        .into_iter()
        .take(100)
        .collect();
    let remote = embed(&e, &faces).unwrap();
    let local = embed(&local_sface(), &faces).unwrap();
    let d = max_diff(&remote, &local);
    assert!(d <= 1e-4, "max |MLServer − local| = {d}");
}

//! The real MLServer (PyPI, tests/servers/oip) serving the real SFace on
//! onnxruntime — what the adapter gets over the Open Inference Protocol
//! equals the local model's embeddings — and dlib's ResNet, a model with no
//! ONNX file, through its example manifest.

use zooaudit_testsupport::mlserver::MlServer;

use crate::{SFACE_INPUT, embed, local_sface, manifest, max_diff, open};

#[test]
fn mlserver_serves_sface_as_the_local_model_and_dlib_separating_identities() {
    let server = MlServer::start(&["sface", "dlib112"]);
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
    dlib_separates_the_labelled_identities(&server, dir.path());
}

/// dlib through examples/shared-zoo/dlib-oip.toml (pointed at this server):
/// every genuine pair of the labelled faces is closer than every impostor
/// pair (measured: genuine 0.972 ± 0.010, impostor 0.819 ± 0.037, cosine).
fn dlib_separates_the_labelled_identities(server: &MlServer, dir: &std::path::Path) {
    let text = std::fs::read_to_string(zooaudit_testsupport::example_manifest("dlib-oip.toml"))
        .unwrap()
        .replace(
            "oip+http://127.0.0.1:8601/v2/models/dlib112",
            &server.source("dlib112"),
        );
    let path = dir.join("dlib.toml");
    std::fs::write(&path, text).unwrap();
    let e = open(zooaudit_manifest::ModelManifest::load(&path).unwrap()).unwrap();
    assert_eq!(e.dim(), 128);
    assert!(
        e.model()
            .summary()
            .notes
            .iter()
            .any(|n| n.contains("version 1 (pinned")),
        "{:?}",
        e.model().summary().notes
    );
    let labelled = zooaudit_testsupport::labelled_faces();
    let files: Vec<_> = labelled.iter().map(|(_, f)| f.clone()).collect();
    let emb = embed(&e, &files).unwrap();
    let row = |i: usize| &emb[i * 128..(i + 1) * 128];
    let (mut genuine_min, mut impostor_max) = (f32::MAX, f32::MIN);
    for i in 0..files.len() {
        for j in i + 1..files.len() {
            let c = zooaudit_testsupport::cosine(row(i), row(j));
            if labelled[i].0 == labelled[j].0 {
                genuine_min = genuine_min.min(c);
            } else {
                impostor_max = impostor_max.max(c);
            }
        }
    }
    assert!(
        genuine_min > impostor_max,
        "dlib: lowest genuine cosine {genuine_min} ≤ highest impostor {impostor_max}"
    );
}

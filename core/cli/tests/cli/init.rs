//! `zooaudit init`: a manifest from a bare model file, its preprocessing
//! measured on the shared labeled faces. Given the channel order the
//! shipping packages document, it recovers their normalisations (SFace raw
//! 0..255; faceplugin (x−127)/128, or one whose embeddings agree with it);
//! where the faces cannot tell two candidates apart (the channel order on
//! three identities) it refuses to guess.

use std::path::{Path, PathBuf};

use super::{fails_with, s, stderr, support, zooaudit};

fn labeled() -> PathBuf {
    support::shared_zoo().join("faces/aligned112/labeled")
}

fn init(model: &str, out: &Path, extra: &[&str]) -> (String, String) {
    let model = support::shared_zoo().join("models").join(model);
    let faces = labeled();
    let mut args = vec!["init", s(&model), "--faces", s(&faces), "--out", s(out)];
    args.extend_from_slice(extra);
    let o = zooaudit(&args);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(0), "{stdout}{}", stderr(&o));
    (stdout, std::fs::read_to_string(out).unwrap())
}

fn example(name: &str) -> toml::Table {
    std::fs::read_to_string(support::example_manifest(name))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn init_recovers_the_documented_normalisations_and_refuses_to_guess_when_too_close() {
    let tmp = tempfile::tempdir().unwrap();
    let faces = labeled();
    // SFace, channel order as documented: raw 0..255 wins clearly.
    let out = tmp.path().join("sface.toml");
    let (table, text) = init("sface_2021dec_int8bq.onnx", &out, &["--channels", "BGR"]);
    assert!(table.contains("BGR 0..255"), "{table}");
    let written: toml::Table = text.parse().unwrap();
    let doc = example("sface.toml");
    for key in ["name", "size", "layout", "channels", "mean", "std"] {
        assert_eq!(
            written["input"].get(key),
            doc["input"].get(key),
            "input.{key}\n{text}"
        );
    }
    assert_eq!(written["output"]["name"], doc["output"]["name"]);
    assert_eq!(written["model"]["sha256"], doc["model"]["sha256"]);
    assert!(text.contains("# Runner-up: BGR (x-127.5)/128"), "{text}");
    let o = zooaudit(&["inspect", "--model", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    // faceplugin, channel order as documented: the (x-127)/128 class.
    let out = tmp.path().join("faceplugin.toml");
    let (_, text) = init("faceplugin_fr_feature.onnx", &out, &["--channels", "RGB"]);
    let written: toml::Table = text.parse().unwrap();
    assert_eq!(written["input"]["channels"].as_str(), Some("RGB"));
    let winner = text
        .lines()
        .find(|l| l.contains("separates genuine"))
        .unwrap();
    let same = text
        .lines()
        .find(|l| l.contains("# Equivalent"))
        .unwrap_or("");
    assert!(
        winner.contains("(x-127)/128") || same.contains("(x-127)/128"),
        "{text}"
    );
    assert!(text.contains("# Runner-up: RGB x/255"), "{text}");

    // The channel order alone, on three identities: too close to call.
    let few = tmp.path().join("few");
    for id in ["barack_obama", "john_salley", "john_simm"] {
        std::fs::create_dir_all(few.join(id)).unwrap();
        let mut files: Vec<PathBuf> = std::fs::read_dir(faces.join(id))
            .unwrap()
            .map(|f| f.unwrap().path())
            .collect();
        files.sort();
        for f in files.iter().take(4) {
            std::fs::copy(f, few.join(id).join(f.file_name().unwrap())).unwrap();
        }
    }
    let out = tmp.path().join("undecided.toml");
    let model = support::shared_zoo().join("models/sface_2021dec_int8bq.onnx");
    let line = fails_with(
        &[
            "init",
            s(&model),
            "--faces",
            s(&few),
            "--out",
            s(&out),
            "--normalisation",
            "0..255",
        ],
        &[
            "refusing to guess",
            "RGB 0..255",
            "BGR 0..255",
            "of 3 identities",
        ],
    );
    assert!(!out.exists(), "{line}");

    // Bad input, one line each: an existing manifest, a file that is not a
    // model, faces of one identity, an unknown normalisation.
    fails_with(
        &[
            "init",
            s(&model),
            "--faces",
            s(&faces),
            "--out",
            s(&tmp.path().join("sface.toml")),
        ],
        &["sface.toml: exists"],
    );
    let junk = tmp.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    fails_with(
        &[
            "init",
            s(&junk),
            "--faces",
            s(&faces),
            "--out",
            s(&tmp.path().join("j.toml")),
        ],
        &["junk.onnx"],
    );
    let one = tmp.path().join("one");
    std::fs::create_dir_all(one.join("someone")).unwrap();
    for f in std::fs::read_dir(labeled().join("barack_obama"))
        .unwrap()
        .take(3)
    {
        let f = f.unwrap().path();
        std::fs::copy(&f, one.join("someone").join(f.file_name().unwrap())).unwrap();
    }
    fails_with(
        &[
            "init",
            s(&model),
            "--faces",
            s(&one),
            "--out",
            s(&tmp.path().join("o.toml")),
            "--channels",
            "BGR",
        ],
        &["at least 2 identities"],
    );
    fails_with(
        &[
            "init",
            s(&model),
            "--faces",
            s(&faces),
            "--out",
            s(&tmp.path().join("n.toml")),
            "--normalisation",
            "x/256",
        ],
        &["--normalisation", "not one of"],
    );
}

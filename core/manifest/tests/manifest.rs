//! Manifest parsing and validation.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use zooaudit_manifest::{Channels, FormatVersion, Layout, ModelManifest};

const GOOD: &str = r#"
format_version = "1.3"
[model]
name = "m"
source = "m.onnx"
adapter = "onnx"
[model.options]
threads = 2
[input]
size = [112, 96]
layout = "NHWC"
channels = "RGB"
mean = [1.0, 2.0, 3.0]
std = [4.0, 5.0, 6.0]
"#;

#[test]
fn a_newer_minor_reads_and_options_become_json() {
    let m = ModelManifest::parse(Path::new("d/m.toml"), GOOD).unwrap();
    assert_eq!(m.input.size, [112, 96]);
    assert_eq!(
        (m.input.layout, m.input.channels),
        (Layout::NHWC, Channels::RGB)
    );
    assert_eq!(m.base_dir(), Path::new("d"));
    assert_eq!(m.adapter_options(), serde_json::json!({"threads": 2}));
}

/// `[signature]` (format 1.1): key or certificate mode, paths resolved
/// against the manifest.
#[test]
fn a_signature_section_names_bundle_and_trust() {
    let text = format!(
        "{GOOD}\n[signature]\nbundle = \"hf://org/repo/m.sig\"\ncertificate_chain = [\"roots/a.pem\", \"/etc/b.pem\"]\ndirectory = \"repo\"\n"
    );
    let m = ModelManifest::parse(Path::new("d/m.toml"), &text).unwrap();
    let sig = m.signature.as_ref().unwrap();
    assert_eq!(sig.bundle, "hf://org/repo/m.sig");
    assert_eq!(sig.key, None);
    assert_eq!(
        m.local_path(&sig.certificate_chain[0]),
        Path::new("d/roots/a.pem")
    );
    assert_eq!(
        m.local_path(&sig.certificate_chain[1]),
        Path::new("/etc/b.pem")
    );
    assert_eq!(sig.directory.as_deref(), Some("repo"));
    assert!(
        ModelManifest::parse(Path::new("m.toml"), GOOD)
            .unwrap()
            .signature
            .is_none()
    );
}

#[test]
fn errors_name_the_file_line_or_field() {
    let p = Path::new("m.toml");
    let cases = [
        (
            GOOD.replace("1.3", "0.9"),
            "m.toml: format_version: format_version 0.9 is older",
        ),
        (
            GOOD.replace("format_version = \"1.3\"", ""),
            "m.toml: format_version: missing",
        ),
        (GOOD.replace("[112, 96]", "[0, 96]"), "m.toml: input.size:"),
        (GOOD.replace("NHWC", "CHW"), "m.toml:11:"),
        (
            GOOD.replace("adapter = \"onnx\"", "adapter = \"onnx\"\nsha256 = \"xyz\""),
            "m.toml: model.sha256:",
        ),
        (
            GOOD.replace("name = \"m\"", "name = \"\""),
            "m.toml: model.name:",
        ),
    ];
    let signed = |extra: &str| format!("{GOOD}\n[signature]\nbundle = \"m.sig\"\n{extra}");
    let signature_cases = [
        (signed(""), "m.toml: signature: give exactly one of `key`"),
        (
            signed("key = \"k.pub\"\ncertificate_chain = [\"root.pem\"]"),
            "m.toml: signature: give exactly one of",
        ),
        (
            signed("key = \"https://example.com/k.pub\""),
            "m.toml: signature.key: 'https://example.com/k.pub' must be a local path",
        ),
        (
            signed("key = \"k.pub\"\ndirectory = \"\""),
            "m.toml: signature.directory:",
        ),
        (signed("key = \"k.pub\"\nkeys = 1"), "m.toml:19:"),
        (
            signed("key = \"k.pub\"").replace("bundle = \"m.sig\"", "bundle = \" \""),
            "m.toml: signature.bundle: must not be empty",
        ),
    ];
    for (text, want) in cases.into_iter().chain(signature_cases) {
        let err = ModelManifest::parse(p, &text).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err} (wanted {want})");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn readable_by_follows_the_major() {
    let v1 = FormatVersion { major: 1, minor: 0 };
    assert!(
        FormatVersion { major: 1, minor: 9 }
            .check_readable_by(v1)
            .is_ok()
    );
    assert!(
        FormatVersion { major: 2, minor: 0 }
            .check_readable_by(v1)
            .unwrap_err()
            .contains("newer")
    );
    assert!("1".parse::<FormatVersion>().is_err());
}

#[test]
fn independence_names_each_criterion() {
    let p = |publisher: &str, arch: &str, data: &str| zooaudit_manifest::Provenance {
        publisher: publisher.into(),
        architecture: arch.into(),
        training_data: data.into(),
        ..Default::default()
    };
    let sface = p("OpenCV Zoo", "MobileFaceNet (SFace loss)", "CASIA-WebFace");
    let fp = p(
        "FacePlugin",
        "ResNet-style IR network",
        "not stated by the publisher",
    );
    let i = fp.independence_from(&sface);
    assert!(i.independent);
    assert_eq!(
        i.reasons,
        vec![
            "different publisher (FacePlugin vs OpenCV Zoo)",
            "training data not declared for both models",
            "another architecture family (resnet vs mobilefacenet)"
        ]
    );
    let sibling = p("opencv  zoo", "MobileFaceNet fp32", "MS1M");
    let i = sibling.independence_from(&sface);
    assert!(!i.independent);
    assert!(
        i.summary().contains("same publisher (opencv  zoo)"),
        "{}",
        i.summary()
    );
    assert!(
        i.summary()
            .contains("same architecture family (mobilefacenet)")
    );
    let same_data = p("Other", "ResNet", "casia-webface");
    assert!(!same_data.independence_from(&sface).independent);
}

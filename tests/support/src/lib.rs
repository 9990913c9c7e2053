//! Helpers for zooaudit's integration tests.
//!
//! The tests run on real data: the models and faces in `../shared/zoo` beside
//! the repository (or `$ZOOAUDIT_SHARED`), ONNX Runtime from
//! `$ORT_DYLIB_PATH`, and the Python reference venv from `$ZOOAUDIT_PYTHON`
//! (all set up by `scripts/setup.sh`; `scripts/test.sh` does it). A missing
//! prerequisite fails the test with a message saying what to run; it is never
//! silently skipped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use zooaudit_host::{PluginSet, SearchPath};

pub mod craft;
pub mod hub;
pub mod mlserver;
pub mod postgres;

/// sha256 of `bytes`, lowercase hex.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The embedding cache every test that embeds the shared faces with the
/// shipped models uses (target/test-cache/example-audit). Entries are keyed
/// by everything that determines them and written atomically, so tests in
/// parallel processes share it safely, and a face embedded by one test is
/// not embedded again by the next.
pub fn embedding_cache() -> PathBuf {
    repo_root().join("target/test-cache/example-audit")
}

/// `../shared/zoo` (or `$ZOOAUDIT_SHARED/zoo`).
pub fn shared_zoo() -> PathBuf {
    let base = std::env::var_os("ZOOAUDIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared"));
    let zoo = base.join("zoo");
    assert!(
        zoo.is_dir(),
        "real test data not found at {} (set ZOOAUDIT_SHARED)",
        zoo.display()
    );
    zoo
}

/// The target directory holding the built plugins and binaries.
pub fn target_profile_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Panics with instructions unless ONNX Runtime is configured.
pub fn require_ort() {
    let ok = std::env::var_os("ORT_DYLIB_PATH").is_some_and(|p| Path::new(&p).is_file());
    assert!(
        ok,
        "ORT_DYLIB_PATH is not set to an existing file: run `eval \"$(scripts/setup.sh --env)\"` (scripts/test.sh does)"
    );
}

/// The Python of the reference venv.
pub fn python() -> PathBuf {
    let p = std::env::var_os("ZOOAUDIT_PYTHON").map(PathBuf::from);
    match p {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "ZOOAUDIT_PYTHON is not set: run `eval \"$(scripts/setup.sh --env)\"` (scripts/test.sh does)"
        ),
    }
}

/// `model_signing ARGS…`: the real OpenSSF `model-signing` package (pinned
/// in scripts/setup.sh) from the reference venv.
pub fn model_signing(args: &[&str]) -> std::process::Output {
    std::process::Command::new(python())
        .args(["-m", "model_signing"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python().display()))
}

/// The product plugins (built by `cargo build --workspace`), loaded from the
/// target directory only.
pub fn plugins() -> PluginSet {
    let dir = target_profile_dir();
    let set = PluginSet::discover(&SearchPath {
        dirs: vec![dir.clone()],
    });
    assert!(
        set.model_adapter("onnx").is_ok(),
        "the onnx plugin is not built in {}: run `cargo build --workspace` first (scripts/test.sh does); refused: {:?}",
        dir.display(),
        set.refused
    );
    set
}

/// Runs `cargo build` on the fixture workspace (tests/fixtures) into its
/// own target directory `target/<target>` with `args` and `env`; returns
/// that directory.
fn build_fixtures(target: &str, args: &[&str], env: &[(&str, &str)], what: &str) -> PathBuf {
    let root = repo_root();
    let target = root.join("target").join(target);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(root.join("tests/fixtures/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {what}: {e}"));
    assert!(status.success(), "building {what} failed");
    target
}

/// Builds the misbehaving fixture plugins once and returns their directory.
pub fn fixture_plugin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let args = [
            "--workspace",
            "--exclude",
            "zooaudit-plugin-fixture-onnx-versioned",
        ];
        build_fixtures("fixtures", &args, &[], "tests/fixtures").join("debug")
    })
    .clone()
}

/// The real ONNX adapter rebuilt with `version` as its version string
/// (tests/fixtures/onnx-versioned, `ZOOAUDIT_FIXTURE_VERSION` at build
/// time), copied alone into a directory of its own, which is returned.
///
/// It is built in a target directory of its own: built beside the
/// misbehaving fixtures, the rebuilt adapter (named `onnx`, unoptimised)
/// would sit in [`fixture_plugin_dir`] and shadow the real adapter for
/// every test that searches that directory first.
pub fn versioned_onnx_plugin_dir(version: &str) -> PathBuf {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILD.lock().unwrap_or_else(|p| p.into_inner());
    let target = build_fixtures(
        "fixtures-versioned",
        &["-p", "zooaudit-plugin-fixture-onnx-versioned"],
        &[("ZOOAUDIT_FIXTURE_VERSION", version)],
        "tests/fixtures/onnx-versioned",
    );
    let name = "libzooaudit_plugin_fixture_onnx_versioned.so";
    let dir = target.join("versioned").join(version);
    std::fs::create_dir_all(&dir).unwrap();
    // Copy, then rename over: a process that loaded an earlier copy keeps
    // its mapping (writing into a loaded library would crash it).
    let part = dir.join(format!("{name}.part"));
    std::fs::copy(target.join("debug").join(name), &part).unwrap();
    std::fs::rename(&part, dir.join(name)).unwrap();
    dir
}

/// The fixture plugin file named `libzooaudit_plugin_fixture_<name>.so`.
pub fn fixture_plugin(name: &str) -> PathBuf {
    let p = fixture_plugin_dir().join(format!("libzooaudit_plugin_fixture_{name}.so"));
    assert!(p.is_file(), "{} was not built", p.display());
    p
}

/// Every aligned face, sorted by path.
pub fn aligned_faces() -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(&shared_zoo().join("faces/aligned112"), &mut out);
    out.sort();
    out
}

/// `(identity, image)` for the labelled aligned faces, sorted.
pub fn labelled_faces() -> Vec<(String, PathBuf)> {
    let dir = shared_zoo().join("faces/aligned112/labeled");
    let mut out = Vec::new();
    for id in std::fs::read_dir(&dir).unwrap() {
        let id = id.unwrap().path();
        let mut files = Vec::new();
        walk(&id, &mut files);
        for f in files {
            out.push((id.file_name().unwrap().to_string_lossy().into_owned(), f));
        }
    }
    out.sort();
    out
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p, out);
        } else if p.extension().is_some_and(|x| x == "png" || x == "jpg") {
            out.push(p);
        }
    }
}

/// A manifest in examples/shared-zoo.
pub fn example_manifest(name: &str) -> PathBuf {
    repo_root().join("examples/shared-zoo").join(name)
}

/// Cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

/// Image files under `dir`, sorted.
pub fn collect(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

/// Real embeddings of every aligned face by an example model, computed once
/// per CI run through the real pipeline and cached under target/test-cache,
/// keyed by the model's and the adapter plugin's sha256 and the face list.
/// Test processes that ask at once take turns on a lock file: the first
/// embeds, the others read what it wrote.
pub fn real_embeddings(manifest: &str) -> zooaudit_embed::Embeddings {
    use std::hash::{Hash, Hasher};
    require_ort();
    let m = zooaudit_manifest::ModelManifest::load(&example_manifest(manifest)).unwrap();
    let name = m.model.name.clone();
    let e = zooaudit_embed::Embedder::open(m, &plugins()).unwrap();
    let faces = aligned_faces();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&e.resolved().sha256, &e.model().plugin().sha256, &faces).hash(&mut h);
    let dir = repo_root().join("target/test-cache");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}-{:016x}.npy", h.finish()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path.with_extension("lock"))
        .unwrap();
    lock.lock().unwrap();
    if let Ok(mat) = zooaudit_formats::npy::read(&path) {
        return zooaudit_embed::Embeddings {
            rows: mat.rows,
            dim: mat.cols,
            data: mat.data,
            images: faces,
            skipped: vec![],
        };
    }
    let emb = e.embed_images(&faces, false, &mut |_, _| {}).unwrap();
    let part = path.with_extension(format!("{}.part", std::process::id()));
    zooaudit_formats::npy::write(&part, emb.rows, emb.dim, &emb.data).unwrap();
    std::fs::rename(&part, &path).unwrap();
    emb
}

/// The trigger `name` of the suite at `suite`, prepared for 112×112 faces.
pub fn stamp_112(suite: &Path, name: &str) -> zooaudit_triggers::Stamp {
    let suite = zooaudit_triggers::Suite::load(suite).unwrap();
    suite
        .triggers
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no trigger '{name}' in {}", suite.path.display()))
        .stamp(&suite.path, 112, 112)
        .unwrap()
}

/// Debian's headless Chromium, for what a person looks at.
pub mod browser {
    use std::path::Path;
    use std::process::Command;

    /// The flags a sandboxed, offline machine needs (no background
    /// networking, no first-run, a fresh profile in `profile`).
    pub fn command(profile: &Path) -> Option<Command> {
        let chromium = Path::new("/usr/bin/chromium");
        if !chromium.is_file() {
            assert!(
                std::env::var_os("ZOOAUDIT_REQUIRE_CHROMIUM").is_none(),
                "ZOOAUDIT_REQUIRE_CHROMIUM is set but /usr/bin/chromium is missing"
            );
            eprintln!("SKIPPED: /usr/bin/chromium is not installed (apt-get install chromium)");
            return None;
        }
        let mut c = Command::new(chromium);
        c.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ])
        .arg(format!("--user-data-dir={}", profile.display()));
        Some(c)
    }

    /// The page at `url` as Chromium renders it (`--dump-dom`); `None`
    /// where Chromium is not installed and not required.
    pub fn dump_dom(url: &str, profile: &Path) -> Option<String> {
        let out = command(profile)?.arg("--dump-dom").arg(url).output().ok()?;
        Some(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

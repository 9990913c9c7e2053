//! docs/PLUGINS.md followed literally: its ```` ```sh tutorial ```` blocks,
//! in order, in a scratch directory, must give a plugin that `zooaudit
//! plugins` lists and that passes the harness in its own `cargo test`.

use std::process::Command;

use zooaudit_testsupport as support;

/// The `sh tutorial` blocks of a Markdown text, in order.
fn tutorial_blocks(md: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in md.lines() {
        match &mut current {
            None if line.trim() == "```sh tutorial" => current = Some(String::new()),
            Some(block) if line.trim() == "```" => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    assert!(current.is_none(), "an unterminated tutorial block");
    blocks
}

#[test]
fn plugins_md_followed_literally_makes_a_plugin_zooaudit_lists_and_the_harness_passes() {
    support::require_ort();
    let root = support::repo_root();
    let md = std::fs::read_to_string(root.join("docs/PLUGINS.md")).unwrap();
    let blocks = tutorial_blocks(&md);
    assert!(blocks.len() >= 5, "{} tutorial blocks", blocks.len());
    let script = format!("set -euo pipefail\n{}", blocks.join("\n"));
    let scratch = tempfile::tempdir().unwrap();
    let path = format!(
        "{}:{}",
        support::target_profile_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(scratch.path())
        .env("ZOOAUDIT", &root)
        .env(
            "FACES",
            support::shared_zoo().join("faces/aligned112/labeled"),
        )
        .env("PATH", path)
        // The scratch crate's own target directory, as a reader's would be.
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the tutorial failed:\n{stdout}\n{stderr}"
    );
    let listed = stdout
        .lines()
        .find(|l| l.starts_with("my-detector "))
        .unwrap_or_else(|| panic!("zooaudit plugins did not list my-detector:\n{stdout}"));
    assert!(
        listed.contains("detector-strategy") && listed.contains("1.1.0"),
        "{listed}"
    );
    // The harness ran and passed inside the tutorial's `cargo test`.
    assert!(
        stdout.contains("relative_keeps_the_host_contract_on_real_embeddings ... ok"),
        "{stdout}"
    );
}

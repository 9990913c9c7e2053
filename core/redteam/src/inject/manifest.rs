//! The backdoored model's manifest: the original's, renamed, pointing at the
//! new file and its sha256, with provenance that says what was done.

use std::path::PathBuf;

use zooaudit_manifest::ModelManifest;

use super::InjectOptions;
use crate::RedteamError;

/// Writes the manifest beside `opts.out` (`.toml`) and returns its path.
pub(super) fn write_manifest(
    opts: &InjectOptions,
    manifest: &ModelManifest,
    original_sha256: &str,
    sha: &str,
    trigger_name: &str,
) -> Result<PathBuf, RedteamError> {
    let out = &opts.out;
    let manifest_path = out.with_extension("toml");
    let mut table: toml::Table = std::fs::read_to_string(&opts.manifest)
        .map_err(|e| RedteamError::file(&opts.manifest, e))?
        .parse()
        .map_err(|e| RedteamError::file(&opts.manifest, e))?;
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let file_name = out
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(model) = table.get_mut("model").and_then(|m| m.as_table_mut()) {
        model.insert("name".into(), stem.clone().into());
        model.insert("source".into(), file_name.into());
        model.insert("sha256".into(), sha.into());
    }
    let mut prov = toml::Table::new();
    let orig_prov = &manifest.provenance;
    prov.insert(
        "publisher".into(),
        "zooaudit red team (backdoored for evaluation)".into(),
    );
    prov.insert("architecture".into(), orig_prov.architecture.clone().into());
    prov.insert(
        "training_data".into(),
        orig_prov.training_data.clone().into(),
    );
    prov.insert("license".into(), orig_prov.license.clone().into());
    prov.insert(
        "published_in".into(),
        format!(
            "{} + {} backdoor, trigger {}, victim {}, strength {}",
            manifest.model.name,
            opts.kind.label(),
            trigger_name,
            opts.victim,
            opts.strength
        )
        .into(),
    );
    table.insert("provenance".into(), toml::Value::Table(prov));
    let text = format!(
        "# Backdoored by `zooaudit redteam inject` from {} (sha256 {}): FOR EVALUATION ONLY.\n{}",
        manifest.model.name,
        original_sha256,
        toml::to_string(&table)?
    );
    zooaudit_formats::write_atomic(&manifest_path, text.as_bytes())?;
    Ok(manifest_path)
}

//! The publisher's signature over a model (`[signature]` in its manifest):
//! an OpenSSF model-signing bundle verified before any plugin opens the
//! file. A model whose signature fails is refused.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use zooaudit_manifest::ModelManifest;
use zooaudit_modelsign::{Trust, Verified};
use zooaudit_registry::{FetchOptions, Resolved};

use crate::EmbedError;

/// A verified publisher signature, as reports record it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The bundle, as the manifest names it.
    pub bundle: String,
    pub bundle_sha256: String,
    /// What the signature covers: `file` (the model file alone) or
    /// `directory` (the directory holding it; `root_sha256` is then the
    /// directory's).
    pub covers: String,
    #[serde(flatten)]
    pub verified: Verified,
}

fn field(manifest: &ModelManifest, field: &str, message: impl Into<String>) -> EmbedError {
    EmbedError::Field {
        manifest: manifest.path.clone(),
        field: field.to_string(),
        message: zooaudit_formats::one_line(message),
    }
}

/// Verifies the manifest's `[signature]` over the resolved model file:
/// `None` when the manifest names none.
pub fn check(
    manifest: &ModelManifest,
    resolved: &Resolved,
    fetch: &FetchOptions,
) -> Result<Option<SignatureRecord>, EmbedError> {
    let Some(sig) = &manifest.signature else {
        return Ok(None);
    };
    if resolved.endpoint.is_some() {
        return Err(field(
            manifest,
            "signature",
            "a model behind an inference API has no file to verify a signature over",
        ));
    }
    let mut opts = fetch.clone();
    opts.allow_unpinned = true;
    let bundle = zooaudit_registry::resolve_with(
        &manifest.path,
        &sig.bundle,
        manifest.base_dir(),
        None,
        &opts,
    )?;
    let trust = match &sig.key {
        Some(k) => Trust::key_file(&manifest.local_path(k)),
        None => {
            let files: Vec<PathBuf> = sig
                .certificate_chain
                .iter()
                .map(|c| manifest.local_path(c))
                .collect();
            Trust::chain_files(&files)
        }
    }
    .map_err(|e| field(manifest, "signature", e.to_string()))?;
    let (model, covers, inner) = match &sig.directory {
        None => (resolved.path.clone(), "file", ".".to_string()),
        Some(d) => {
            let dir = manifest.local_path(d);
            let inner = zooaudit_modelsign::inside(&dir, &resolved.path).ok_or_else(|| {
                field(
                    manifest,
                    "signature.directory",
                    format!(
                        "{} does not hold the model file {}",
                        dir.display(),
                        resolved.path.display()
                    ),
                )
            })?;
            (dir, "directory", inner)
        }
    };
    let verified = zooaudit_modelsign::verify(&model, &bundle.path, &trust)
        .map_err(|e| field(manifest, "signature", e.to_string()))?;
    if !verified.resources.contains(&inner) {
        return Err(field(
            manifest,
            "signature",
            format!(
                "the signature over {} does not cover the model file {inner} (the signer left it out)",
                model.display()
            ),
        ));
    }
    Ok(Some(SignatureRecord {
        bundle: sig.bundle.clone(),
        bundle_sha256: bundle.sha256,
        covers: covers.to_string(),
        verified,
    }))
}

//! OpenSSF model signing (the `model-signing` 1.x package, Sigstore's
//! model-transparency): what a publisher's signature over a model says and
//! whether it holds, and a countersignature the standard tool accepts.
//!
//! - [`hash`]: the model's *root digest*: every file's sha256 (a single
//!   file is the resource `"."`; a directory's files by their POSIX paths,
//!   sorted component by component, the git files at its root left out),
//!   and sha256 over those digests in that order.
//! - [`bundle`]: the signature file, a Sigstore bundle
//!   (`application/vnd.dev.sigstore.bundle.v0.3+json`) holding a DSSE
//!   envelope whose in-toto statement has predicate type
//!   `https://model_signing/signature/v1.0`, one subject (the root digest)
//!   and the resources; read strictly, every fault one line.
//! - [`keys`]: ECDSA P-256 (SHA-256) and P-384 (SHA-384) over the DSSE PAE,
//!   DER signatures, PEM keys.
//! - [`x509`]: certificate mode's chain check (as model-signing's, by hand).
//!
//! [`verify`] takes key and certificate bundles; [`sign_key`] writes key
//! bundles. Keyless (Fulcio + Rekor) bundles are refused by name: verifying
//! them needs a transparency-log inclusion proof and a signed timestamp
//! against Sigstore's trust root, and no maintained Rust crate verifies a
//! model-signing bundle offline that way (`sigstore-verify` 0.15 refuses
//! bundles without a timestamp and key-mode material).

pub mod bundle;
pub mod hash;
pub mod keys;
pub mod x509;

use std::path::{Path, PathBuf};

pub use bundle::{Bundle, MEDIA_TYPE, PAYLOAD_TYPE, PREDICATE_TYPE};
pub use hash::{ModelDigest, Resource, hash_model};
pub use keys::{PrivateKey, PublicKey};

/// A fault with a model, its signature or a key. One line each, naming the
/// file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The model could not be read or hashed.
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    /// The signature file is not a model-signing bundle this reader
    /// accepts.
    #[error("{path}: {message}")]
    Bundle { path: PathBuf, message: String },
    /// The key file is not a key this crate uses.
    #[error("{path}: {message}")]
    Key { path: PathBuf, message: String },
    /// The bundle is well formed but does not vouch for this model with this
    /// key.
    #[error("{path}: signature does not hold: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl SignError {
    pub(crate) fn model(path: &Path, message: impl Into<String>) -> SignError {
        SignError::Model {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(message),
        }
    }
    pub(crate) fn bundle(path: &Path, message: impl Into<String>) -> SignError {
        SignError::Bundle {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(message),
        }
    }
    pub(crate) fn key(path: &Path, message: impl Into<String>) -> SignError {
        SignError::Key {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(message),
        }
    }
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> SignError {
        SignError::Invalid {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(message),
        }
    }
}

/// What a verifier trusts: the publisher's public key (key mode) or the
/// roots a signing certificate must chain to (certificate mode).
#[derive(Debug, Clone)]
pub enum Trust {
    Key(PublicKey),
    Roots(Vec<x509::Cert>),
}

impl Trust {
    /// A PEM public key file.
    pub fn key_file(path: &Path) -> Result<Trust, SignError> {
        PublicKey::read(path).map(Trust::Key)
    }

    /// PEM files of trusted certificates (roots; intermediates may be given
    /// too, but the path must end at a self-signed one).
    pub fn chain_files(paths: &[PathBuf]) -> Result<Trust, SignError> {
        let mut roots = Vec::new();
        for p in paths {
            roots.extend(x509::read_trusted(p)?);
        }
        Ok(Trust::Roots(roots))
    }
}

/// How the signature was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Key,
    Certificate,
}

/// What a verified signature vouches for (recorded in reports).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Verified {
    pub mode: Mode,
    /// Who signed: `key sha256:<hint>` in key mode, the signing
    /// certificate's subject in certificate mode.
    pub signer: String,
    /// The model's root digest (lowercase hex), as the bundle's subject and
    /// the files on disk give it.
    pub root_sha256: String,
    /// The subject's name in the statement (informational; the standard
    /// verifier does not check it either).
    pub subject_name: String,
    /// The signing key: `ecdsa-p256` or `ecdsa-p384`, and the sha256 of its
    /// PEM (the bundle's `publicKey.hint` in key mode).
    pub key_kind: String,
    pub key_sha256: String,
    /// Certificate mode: sha256 of the signing certificate's DER, and the
    /// trusted root the chain ended at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_subject: Option<String>,
    /// Files the signer left out of the signature (`ignore_paths` in the
    /// signed statement, beyond the git files): a verifier should show them.
    pub ignored: Vec<String>,
    /// Files covered.
    pub files: usize,
    /// The signed files' names (`"."` for a single file), as verified on
    /// disk.
    #[serde(skip)]
    pub resources: Vec<String>,
}

/// Verifies the bundle at `signature` over the model at `model` (a file or
/// a directory) against `trust`: the bundle's structure, the signing
/// certificate's chain (certificate mode), the ECDSA signature over the
/// DSSE PAE, the statement, that the resources hash to the subject, and
/// that the files on disk are exactly the signed ones (none added, missing
/// or changed).
pub fn verify(model: &Path, signature: &Path, trust: &Trust) -> Result<Verified, SignError> {
    let bundle = Bundle::read(signature)?;
    let (key, mode, signer, chain) = match (&bundle.material, trust) {
        (bundle::Material::Key { hint }, Trust::Key(key)) => {
            if let Some(hint) = hint
                && !hint.is_empty()
                && *hint != key.pem_sha256()
            {
                return Err(SignError::invalid(
                    signature,
                    "publicKey.hint names another key than the one given",
                ));
            }
            let signer = format!("key sha256:{}", key.pem_sha256());
            (key.clone(), Mode::Key, signer, None)
        }
        (bundle::Material::Chain(ders), Trust::Roots(roots)) => {
            let s = x509::verify_chain(ders, roots)
                .map_err(|m| SignError::invalid(signature, format!("certificate chain: {m}")))?;
            (s.key.clone(), Mode::Certificate, s.subject.clone(), Some(s))
        }
        (bundle::Material::Key { .. }, Trust::Roots(_)) => {
            return Err(SignError::invalid(
                signature,
                "a key-mode bundle (publicKey): verify it with the publisher's public key, not a certificate chain",
            ));
        }
        (bundle::Material::Chain(_), Trust::Key(_)) => {
            return Err(SignError::invalid(
                signature,
                "a certificate-mode bundle (x509CertificateChain): verify it with the trusted root certificates, not a public key",
            ));
        }
    };
    let payload = bundle.verify_signature(signature, &key)?;
    let statement = bundle::Statement::parse(signature, &payload)?;
    let mut ignore: Vec<String> = statement.ignore_paths.clone();
    if let Some(rel) = inside(model, signature) {
        ignore.push(rel);
    }
    let on_disk = hash_model(model, &ignore)?;
    statement.matches(signature, model, &on_disk)?;
    Ok(Verified {
        mode,
        signer,
        root_sha256: statement.root_sha256.clone(),
        subject_name: statement.subject_name.clone(),
        key_kind: key.kind().to_string(),
        key_sha256: key.pem_sha256(),
        certificate_sha256: chain.as_ref().map(|c| c.fingerprint.clone()),
        root_subject: chain.map(|c| c.root_subject),
        ignored: statement
            .ignore_paths
            .iter()
            .filter(|p| !hash::GIT_PATHS.contains(&p.as_str()))
            .cloned()
            .collect(),
        files: on_disk.resources.len(),
        resources: on_disk.resources.iter().map(|r| r.name.clone()).collect(),
    })
}

/// The model-signing root digest of a single file whose sha256 is
/// `file_sha256` (hex): sha256 over the raw digest, the subject a
/// model-signing statement over that file alone names.
pub fn file_root(file_sha256: &str) -> Option<String> {
    let raw = hex::decode(file_sha256).ok().filter(|d| d.len() == 32)?;
    Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&raw)))
}

/// [`verify`] in key mode.
pub fn verify_key(model: &Path, signature: &Path, key: &PublicKey) -> Result<Verified, SignError> {
    verify(model, signature, &Trust::Key(key.clone()))
}

/// Signs the model at `model` with `key` in key mode: the Sigstore bundle
/// JSON that `model_signing verify key` accepts. `signature` is where it
/// will be written (left out of the hash when it lies inside the model).
pub fn sign_key(model: &Path, signature: &Path, key: &PrivateKey) -> Result<String, SignError> {
    sign_key_with_digest(model, signature, key).map(|(bundle, _)| bundle)
}

/// [`sign_key`], also returning the model's digest as signed.
pub fn sign_key_with_digest(
    model: &Path,
    signature: &Path,
    key: &PrivateKey,
) -> Result<(String, ModelDigest), SignError> {
    let mut ignore: Vec<String> = Vec::new();
    if let Some(rel) = inside(model, signature) {
        ignore.push(rel);
    }
    let digest = hash_model(model, &ignore)?;
    let mut ignore_paths: Vec<String> = hash::GIT_PATHS.iter().map(|s| s.to_string()).collect();
    ignore_paths.extend(ignore);
    let payload = bundle::statement_json(&digest, &ignore_paths);
    Ok((bundle::key_bundle(&payload, key), digest))
}

/// `inner`'s path relative to the directory `model`, POSIX form, when it
/// lies inside it (`inner` need not exist yet: its directory is resolved).
pub fn inside(model: &Path, inner: &Path) -> Option<String> {
    let model = std::fs::canonicalize(model).ok()?;
    if !model.is_dir() {
        return None;
    }
    let parent = inner.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = std::fs::canonicalize(parent.unwrap_or(Path::new("."))).ok()?;
    let full = dir.join(inner.file_name()?);
    let rel = full.strip_prefix(&model).ok()?;
    Some(
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"),
    )
}

//! OpenSSF model signing: `verify-model` (a publisher's bundle, key or
//! certificate mode), `sign-model` (a key-mode bundle `model_signing verify
//! key` accepts), and the countersignature `audit --sign-model` writes for
//! each candidate with no backdoor indicated.

use std::path::{Path, PathBuf};

use anyhow::Result;
use zooaudit_modelsign::{PrivateKey, Trust};

#[derive(clap::Args, Debug)]
pub struct VerifyModelArgs {
    /// The model: a file, or a directory signed as a whole.
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// The signature (a model-signing Sigstore bundle).
    #[arg(long, value_name = "BUNDLE")]
    signature: PathBuf,
    /// The publisher's PEM public key (key mode).
    #[arg(
        long,
        value_name = "PEM",
        conflicts_with = "certificate_chain",
        required_unless_present = "certificate_chain"
    )]
    key: Option<PathBuf>,
    /// PEM file(s) of trusted root certificates (certificate mode; repeatable).
    #[arg(long = "certificate-chain", value_name = "PEM")]
    certificate_chain: Vec<PathBuf>,
}

impl VerifyModelArgs {
    /// Exit 0 valid, 1 invalid, 2 error (a file that cannot be read).
    pub fn run(self) -> Result<u8> {
        // A signature that cannot be read is an error (exit 2), not an
        // invalid signature.
        std::fs::metadata(&self.signature)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", self.signature.display()))?;
        let trust = match &self.key {
            Some(k) => Trust::key_file(k)?,
            None => Trust::chain_files(&self.certificate_chain)?,
        };
        match zooaudit_modelsign::verify(&self.model, &self.signature, &trust) {
            Ok(v) => {
                println!(
                    "mode:    {}",
                    serde_json::to_value(v.mode)?.as_str().unwrap_or("?")
                );
                println!("signer:  {}", v.signer);
                if let Some(root) = &v.root_subject {
                    println!("root:    {root}");
                }
                println!("key:     {} sha256:{}", v.key_kind, v.key_sha256);
                println!(
                    "model:   {} ({} file(s), root digest sha256:{})",
                    self.model.display(),
                    v.files,
                    v.root_sha256
                );
                for i in &v.ignored {
                    println!("warning: the signer left {i} out of the signature");
                }
                println!("VALID");
                Ok(0)
            }
            Err(
                e @ (zooaudit_modelsign::SignError::Invalid { .. }
                | zooaudit_modelsign::SignError::Bundle { .. }),
            ) => {
                println!(
                    "INVALID: {}",
                    zooaudit_formats::escape_controls(&e.to_string())
                );
                Ok(1)
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct SignModelArgs {
    /// The model: a file, or a directory signed as a whole.
    #[arg(value_name = "MODEL")]
    model: PathBuf,
    /// A P-256 or P-384 private key (PEM; `zooaudit keygen --p256` writes one).
    #[arg(long, value_name = "PEM")]
    key: PathBuf,
    /// Where to write the bundle (default: MODEL.sig beside the model).
    #[arg(long, value_name = "BUNDLE")]
    signature: Option<PathBuf>,
}

impl SignModelArgs {
    pub fn run(self) -> Result<u8> {
        let key = PrivateKey::read(&self.key)?;
        let out = self
            .signature
            .clone()
            .unwrap_or_else(|| beside(&self.model));
        let root = sign_to(&self.model, &out, &key)?;
        println!(
            "signed {} (root digest sha256:{root})",
            self.model.display()
        );
        println!("wrote {}", out.display());
        println!(
            "check: model_signing verify key {} --signature {} --public_key <the .pub>",
            self.model.display(),
            out.display()
        );
        Ok(0)
    }
}

/// `MODEL.sig` beside the model (for a directory `DIR.sig` beside it).
fn beside(model: &Path) -> PathBuf {
    let trimmed = model.components().as_path();
    let mut s = trimmed.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

/// Signs `model` into `out` (written atomically); the root digest.
fn sign_to(model: &Path, out: &Path, key: &PrivateKey) -> Result<String> {
    let (bundle, digest) = zooaudit_modelsign::sign_key_with_digest(model, out, key)?;
    zooaudit_formats::write_atomic(out, bundle.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: cannot write: {e}", out.display()))?;
    Ok(digest.root_hex())
}

/// `audit --sign-model KEY`: a model-signing bundle over each candidate
/// file whose verdict is *no backdoor indicated*, written to
/// `<out>/<candidate>.model.sig`; the others are named and left unsigned.
pub fn countersign(
    report: &zooaudit_audit::AuditReport,
    out: &Path,
    key: &PrivateKey,
) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for v in &report.verdicts {
        let Some(m) = report
            .models
            .iter()
            .find(|m| m.role == "candidate" && m.name == v.candidate)
        else {
            continue;
        };
        if v.verdict != zooaudit_audit::report::VerdictKind::NoBackdoorIndicated {
            eprintln!(
                "not countersigned: {} ({})",
                v.candidate,
                v.verdict.as_str()
            );
            continue;
        }
        let name: String = v
            .candidate
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = out.join(format!("{name}.model.sig"));
        sign_to(Path::new(&m.file), &path, key)?;
        written.push(path);
    }
    Ok(written)
}

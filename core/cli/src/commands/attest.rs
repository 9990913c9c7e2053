//! `keygen`, `sign`, `verify` and `render`: the report after the audit.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Path and base name of the key files.
    #[arg(long, value_name = "NAME")]
    out: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    force: bool,
    /// An ECDSA P-256 pair for OpenSSF model signing (`sign-model`,
    /// `audit --sign-model`) instead of ed25519.
    #[arg(long)]
    p256: bool,
}

impl KeygenArgs {
    pub fn run(self) -> Result<u8> {
        if self.p256 {
            let (public, [private, public_path]) =
                zooaudit_modelsign::keys::keygen_p256(&self.out, self.force)?;
            println!("private key: {} (mode 0600, P-256)", private.display());
            println!("public key:  {}", public_path.display());
            println!(
                "key sha256:  {} (model-signing publicKey.hint)",
                public.pem_sha256()
            );
            return Ok(0);
        }
        let public = zooaudit_attest::keys::keygen(&self.out, self.force)?;
        let (private, public_path) = zooaudit_attest::keys::key_paths(&self.out);
        println!("private key: {} (mode 0600)", private.display());
        println!("public key:  {}", public_path.display());
        println!("keyid:       {}", public.keyid());
        Ok(0)
    }
}

#[derive(clap::Args, Debug)]
pub struct SignArgs {
    /// The report.json of an audit.
    #[arg(value_name = "REPORT")]
    report: PathBuf,
    /// Private key (from `zooaudit keygen`).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Also write test-result.dsse.json (in-toto test-result v0.1).
    #[arg(long)]
    test_result: bool,
}

impl SignArgs {
    pub fn run(self) -> Result<u8> {
        let key = zooaudit_attest::SecretKey::read(&self.key)?;
        let r = zooaudit_audit::AuditReport::read(&self.report)?;
        let dir = self.report.parent().unwrap_or(Path::new("."));
        for p in zooaudit_render::write_attestations(&r, dir, &key, self.test_result)? {
            println!("wrote {}", p.display());
        }
        Ok(0)
    }
}

#[derive(clap::Args, Debug)]
pub struct RenderArgs {
    /// The report.json of an audit.
    #[arg(value_name = "REPORT")]
    report: PathBuf,
}

impl RenderArgs {
    pub fn run(self) -> Result<u8> {
        let r = zooaudit_audit::AuditReport::read(&self.report)?;
        let dir = self.report.parent().unwrap_or(Path::new("."));
        for p in zooaudit_render::write_human(&r, dir)? {
            println!("wrote {}", p.display());
        }
        Ok(0)
    }
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The DSSE envelope (attestation.dsse.json).
    #[arg(value_name = "ATTESTATION")]
    attestation: PathBuf,
    /// Trusted public key(s) (PEM, from `zooaudit keygen`); repeatable.
    #[arg(long = "key", value_name = "PUB", required = true)]
    keys: Vec<PathBuf>,
    /// Also check that this model file (or model directory) is a subject.
    #[arg(long, value_name = "FILE")]
    model: Option<PathBuf>,
    /// Every signature in the envelope must verify (default: at least one
    /// by a trusted key; the others are reported).
    #[arg(long)]
    require_all: bool,
    /// With --model: the publisher's OpenSSF model-signing bundle over it,
    /// verified too, and its root digest required among the subjects (the
    /// audit is about the model the publisher signed).
    #[arg(long, value_name = "BUNDLE", requires = "model")]
    model_signature: Option<PathBuf>,
    /// The publisher's PEM public key for --model-signature (key mode).
    #[arg(long, value_name = "PEM", requires = "model_signature")]
    model_key: Option<PathBuf>,
    /// Trusted root certificate(s) for --model-signature (certificate mode).
    #[arg(
        long = "model-certificate-chain",
        value_name = "PEM",
        requires = "model_signature"
    )]
    model_certificate_chain: Vec<PathBuf>,
}

impl VerifyArgs {
    /// 0 valid, 1 invalid, errors (unreadable, malformed) 2.
    pub fn run(self) -> Result<u8> {
        let attestation = &self.attestation;
        let keys = self
            .keys
            .iter()
            .map(|p| zooaudit_attest::PublicKey::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        // The envelope carries the predicate: the predicate's size limit.
        let bytes = zooaudit_formats::Format::Predicate
            .read_bytes(attestation)
            .with_context(|| format!("{}: cannot read", attestation.display()))?;
        let policy = if self.require_all {
            zooaudit_attest::Policy::AllMustVerify
        } else {
            zooaudit_attest::Policy::AnyTrusted
        };
        let verified = match zooaudit_attest::verify_statement(&bytes, &keys, policy) {
            Ok(v) => v,
            Err(e) if e.is_invalid() => {
                println!("INVALID: {}: {e}", attestation.display());
                return Ok(1);
            }
            Err(e) => bail!("{}: {e}", attestation.display()),
        };
        let st = &verified.statement;
        for c in &verified.verification.checks {
            match c {
                zooaudit_attest::SignatureCheck::Verified { .. } => println!("signature {c}"),
                other => {
                    eprintln!("warning: signature {other} (ignored: another signature verified)")
                }
            }
        }
        println!("statement: {}", st.statement_type);
        println!("predicate: {}", st.predicate_type);
        for s in &st.subject {
            let digest: Vec<String> = s.digest.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            println!("subject: {} {}", s.name, digest.join(" "));
        }
        let summary = zooaudit_render::predicate::PredicateSummary::of(st)
            .map_err(|e| anyhow::anyhow!("{}: {e}", attestation.display()))?;
        print!("{summary}");
        if let Some(model) = &self.model {
            let digest = zooaudit_registry::model_digest(model)
                .with_context(|| format!("{}: cannot hash", model.display()))?;
            match st.subject_with_sha256(&digest) {
                Some(s) => println!(
                    "model: {} (sha256 {digest}) is subject {}",
                    model.display(),
                    s.name
                ),
                None => {
                    println!(
                        "INVALID: {} (sha256 {digest}) is not a subject of {}",
                        model.display(),
                        attestation.display()
                    );
                    return Ok(1);
                }
            }
        }
        if let (Some(model), Some(bundle)) = (&self.model, &self.model_signature) {
            let trust = match (&self.model_key, self.model_certificate_chain.is_empty()) {
                (Some(k), true) => zooaudit_modelsign::Trust::key_file(k)?,
                (None, false) => {
                    zooaudit_modelsign::Trust::chain_files(&self.model_certificate_chain)?
                }
                _ => anyhow::bail!(
                    "--model-signature needs exactly one of --model-key and --model-certificate-chain"
                ),
            };
            let v = match zooaudit_modelsign::verify(model, bundle, &trust) {
                Ok(v) => v,
                Err(e @ zooaudit_modelsign::SignError::Invalid { .. }) => {
                    println!(
                        "INVALID: {}",
                        zooaudit_formats::escape_controls(&e.to_string())
                    );
                    return Ok(1);
                }
                Err(e) => return Err(e.into()),
            };
            match st.subject_with_sha256(&v.root_sha256) {
                Some(s) => println!(
                    "model signature: {} signed {} (root sha256 {}), subject {}",
                    v.signer,
                    model.display(),
                    v.root_sha256,
                    s.name
                ),
                None => {
                    println!(
                        "INVALID: the model-signing root {} of {} is not a subject of {}",
                        v.root_sha256,
                        bundle.display(),
                        attestation.display()
                    );
                    return Ok(1);
                }
            }
        }
        println!("VALID");
        Ok(0)
    }
}

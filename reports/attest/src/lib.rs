//! Signed audit attestations.
//!
//! * [`keys`]: ed25519 key pairs on disk (PKCS#8 PEM private key created 0600,
//!   SubjectPublicKeyInfo PEM public key) and key ids compatible with
//!   securesystemslib's default (sha256 over the canonical JSON of the key).
//! * [`dsse`]: the DSSE envelope, its pre-authentication encoding (PAE),
//!   signing, and verification with a documented multi-signature policy.
//! * [`statement`]: in-toto Statement v1 and the test-result predicate v0.1.
//!
//! Verification order is the one DSSE prescribes: signatures are checked over
//! the PAE of the payload bytes exactly as received, and only then is the
//! payload parsed ([`verify_statement`]).

pub mod dsse;
pub mod keys;
pub mod statement;

pub use dsse::{Envelope, Policy, SignatureCheck, Verification};
pub use keys::{PublicKey, SecretKey};
pub use statement::{ResourceDescriptor, STATEMENT_TYPE, Statement, TEST_RESULT_PREDICATE};

/// Everything that can go wrong; the messages are one line and name the file
/// where there is one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path} already exists (use --force to overwrite)")]
    Exists { path: String },
    #[error("malformed envelope: {0}")]
    Malformed(String),
    #[error("invalid attestation: {0}")]
    Invalid(String),
    /// A key could not be made or encoded (no random source, PKCS#8).
    #[error("{0}")]
    Key(String),
    /// Verification was asked for with no key to trust.
    #[error("no trusted key given")]
    NoTrustedKey,
    #[error("cannot encode the statement: {0}")]
    Json(#[from] serde_json::Error),
}

impl AttestError {
    pub(crate) fn file(path: &std::path::Path, message: impl std::fmt::Display) -> Self {
        AttestError::File {
            path: path.display().to_string(),
            message: message.to_string(),
        }
    }

    /// True when the input was readable but does not verify (exit 1), false
    /// for errors (exit 2).
    pub fn is_invalid(&self) -> bool {
        matches!(self, AttestError::Invalid(_))
    }
}

/// A verified statement: the signatures that passed and the parsed statement.
#[derive(Debug, Clone)]
pub struct VerifiedStatement {
    pub verification: Verification,
    pub statement: Statement,
}

/// Verifies a DSSE envelope (bytes as read from disk) against trusted keys,
/// then — and only then — parses its payload as an in-toto Statement v1.
pub fn verify_statement(
    envelope_bytes: &[u8],
    trusted: &[PublicKey],
    policy: Policy,
) -> Result<VerifiedStatement, AttestError> {
    let envelope = Envelope::parse(envelope_bytes)?;
    let verification = envelope.verify(trusted, policy)?;
    if envelope.payload_type != dsse::PAYLOAD_TYPE_INTOTO {
        return Err(AttestError::Invalid(format!(
            "payloadType is {:?}, expected {:?}",
            envelope.payload_type,
            dsse::PAYLOAD_TYPE_INTOTO
        )));
    }
    let statement = Statement::from_payload(&verification.payload)?;
    Ok(VerifiedStatement {
        verification,
        statement,
    })
}

/// Serialises `statement` once and signs exactly those bytes.
pub fn sign_statement(statement: &Statement, key: &SecretKey) -> Result<Envelope, AttestError> {
    let payload = serde_json::to_vec(statement)?;
    Ok(Envelope::sign(dsse::PAYLOAD_TYPE_INTOTO, &payload, &[key]))
}

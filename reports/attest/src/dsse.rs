//! DSSE (Dead Simple Signing Envelope) v1.
//!
//! The signature covers the pre-authentication encoding
//! `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII
//! decimal, over the payload bytes exactly as they were signed (never a
//! re-serialisation).
//!
//! **Multi-signature policy.** An envelope is valid when at least one of its
//! signatures verifies under a trusted key. A signature whose `keyid` is set
//! is tried only with the trusted key of that id; one with an empty `keyid`
//! is tried with every trusted key. Signatures that do not verify, and
//! signatures by keys that are not trusted, are reported but ignored under
//! [`Policy::AnyTrusted`] (the DSSE threshold-of-one reading); under
//! [`Policy::AllMustVerify`] any signature that fails — bad bytes, untrusted
//! key — makes the envelope invalid.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::AttestError;
use crate::keys::{PublicKey, SecretKey};

pub const PAYLOAD_TYPE_INTOTO: &str = "application/vnd.in-toto+json";

/// Largest envelope `parse` accepts (the audit statements are ~100 kB).
pub const MAX_ENVELOPE_BYTES: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub keyid: String,
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    pub payload: String,
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    pub signatures: Vec<Signature>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    AnyTrusted,
    AllMustVerify,
}

/// What happened to one signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    Verified { keyid: String },
    BadSignature { keyid: String },
    UntrustedKey { keyid: String },
    Undecodable { keyid: String, reason: String },
}

impl std::fmt::Display for SignatureCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = |k: &str| {
            if k.is_empty() {
                "(no keyid)".to_string()
            } else {
                zooaudit_formats::quote(k)
            }
        };
        match self {
            SignatureCheck::Verified { keyid } => write!(f, "{}: verified", id(keyid)),
            SignatureCheck::BadSignature { keyid } => {
                write!(f, "{}: does not verify", id(keyid))
            }
            SignatureCheck::UntrustedKey { keyid } => {
                write!(f, "{}: not a trusted key", id(keyid))
            }
            SignatureCheck::Undecodable { keyid, reason } => {
                write!(f, "{}: {reason}", id(keyid))
            }
        }
    }
}

/// The outcome of a successful verification.
#[derive(Debug, Clone)]
pub struct Verification {
    /// One entry per signature, in envelope order.
    pub checks: Vec<SignatureCheck>,
    /// The payload bytes as received (decoded from base64).
    pub payload: Vec<u8>,
}

impl Verification {
    pub fn verified_keyids(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter_map(|c| match c {
                SignatureCheck::Verified { keyid } => Some(keyid.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// The pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload_type.len() + 32);
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(payload_type.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Decodes standard or URL-safe base64, padded or not (DSSE asks verifiers
/// to accept either).
pub fn decode_b64(s: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(s)
        .or_else(|_| URL_SAFE.decode(s))
        .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
        .map_err(|e| format!("not base64 ({e})"))
}

impl Envelope {
    /// Signs `payload` with each key.
    pub fn sign(payload_type: &str, payload: &[u8], keys: &[&SecretKey]) -> Envelope {
        let message = pae(payload_type, payload);
        Envelope {
            payload: STANDARD.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: keys
                .iter()
                .map(|k| Signature {
                    keyid: k.public().keyid(),
                    sig: STANDARD.encode(k.sign(&message)),
                })
                .collect(),
        }
    }

    /// Parses an envelope from the bytes of a file.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, AttestError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(AttestError::Malformed(format!(
                "{} bytes, larger than the {} byte limit",
                bytes.len(),
                MAX_ENVELOPE_BYTES
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| AttestError::Malformed(format!("not UTF-8 text ({e})")))?;
        if text.trim().is_empty() {
            return Err(AttestError::Malformed("empty file".into()));
        }
        let env: Envelope = serde_json::from_str(text)
            .map_err(|e| AttestError::Malformed(format!("not a DSSE envelope: {e}")))?;
        if env.signatures.is_empty() {
            return Err(AttestError::Malformed("no signatures".into()));
        }
        Ok(env)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every signature over the PAE of the payload bytes as received.
    pub fn verify(
        &self,
        trusted: &[PublicKey],
        policy: Policy,
    ) -> Result<Verification, AttestError> {
        if trusted.is_empty() {
            return Err(AttestError::NoTrustedKey);
        }
        let payload = decode_b64(&self.payload)
            .map_err(|e| AttestError::Malformed(format!("payload is {e}")))?;
        let message = pae(&self.payload_type, &payload);
        let checks: Vec<SignatureCheck> = self
            .signatures
            .iter()
            .map(|s| check_one(s, trusted, &message))
            .collect();
        let verified = checks
            .iter()
            .filter(|c| matches!(c, SignatureCheck::Verified { .. }))
            .count();
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| !matches!(c, SignatureCheck::Verified { .. }))
            .map(|c| c.to_string())
            .collect();
        if verified == 0 {
            return Err(AttestError::Invalid(format!(
                "no signature verifies with the given key(s): {}",
                failed.join("; ")
            )));
        }
        if policy == Policy::AllMustVerify && !failed.is_empty() {
            return Err(AttestError::Invalid(format!(
                "{} of {} signatures fail and every signature must verify: {}",
                failed.len(),
                checks.len(),
                failed.join("; ")
            )));
        }
        Ok(Verification { checks, payload })
    }
}

fn check_one(s: &Signature, trusted: &[PublicKey], message: &[u8]) -> SignatureCheck {
    let keyid = s.keyid.clone();
    let sig = match decode_b64(&s.sig) {
        Ok(b) if b.len() == 64 => b,
        Ok(b) => {
            return SignatureCheck::Undecodable {
                keyid,
                reason: format!("signature is {} bytes, not 64", b.len()),
            };
        }
        Err(e) => {
            return SignatureCheck::Undecodable {
                keyid,
                reason: format!("signature is {e}"),
            };
        }
    };
    let candidates: Vec<&PublicKey> = if keyid.is_empty() {
        trusted.iter().collect()
    } else {
        trusted.iter().filter(|k| k.keyid() == keyid).collect()
    };
    if candidates.is_empty() {
        return SignatureCheck::UntrustedKey { keyid };
    }
    match candidates.iter().find(|k| k.verify(message, &sig)) {
        Some(k) => SignatureCheck::Verified { keyid: k.keyid() },
        None => SignatureCheck::BadSignature { keyid },
    }
}

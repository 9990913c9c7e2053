//! ed25519 keys on disk.
//!
//! `zooaudit keygen --out NAME` writes
//! * `NAME.key` — the private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`),
//!   created with mode 0600;
//! * `NAME.pub` — the public key, SubjectPublicKeyInfo PEM
//!   (`-----BEGIN PUBLIC KEY-----`), the format OpenSSL, `cryptography` and
//!   securesystemslib read.
//!
//! The key id is securesystemslib's default: the lowercase hex sha256 of the
//! canonical JSON `{"keytype":"ed25519","keyval":{"public":"<hex>"},"scheme":"ed25519"}`
//! where `<hex>` is the raw 32-byte public key in lowercase hex.

use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::AttestError;

/// A private signing key.
pub struct SecretKey {
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", self.public().keyid())
    }
}

/// A public verification key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl SecretKey {
    /// A fresh key from the operating system's CSPRNG.
    pub fn generate() -> Result<SecretKey, AttestError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| AttestError::Key(format!("no secure random source: {e}")))?;
        Ok(SecretKey::from_seed(seed))
    }

    /// A key from a 32-byte seed (tests and fixed examples).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn to_pem(&self) -> Result<String, AttestError> {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .map(|s| s.to_string())
            .map_err(|e| AttestError::Key(format!("cannot encode private key: {e}")))
    }

    pub fn from_pem(text: &str) -> Result<SecretKey, String> {
        SigningKey::from_pkcs8_pem(text)
            .map(|key| SecretKey { key })
            .map_err(|e| format!("not an ed25519 PKCS#8 PEM private key ({e})"))
    }

    /// Reads a private key file, refusing one that others can read (as ssh does).
    pub fn read(path: &Path) -> Result<SecretKey, AttestError> {
        let text = std::fs::read_to_string(path).map_err(|e| AttestError::file(path, e))?;
        zooaudit_formats::check_private_key_mode(path).map_err(|m| AttestError::file(path, m))?;
        SecretKey::from_pem(&text).map_err(|m| AttestError::file(path, m))
    }
}

impl PublicKey {
    /// Raw 32-byte key in lowercase hex.
    pub fn hex(&self) -> String {
        hex::encode(self.key.as_bytes())
    }

    /// securesystemslib's default key id (see the module docs).
    pub fn keyid(&self) -> String {
        let canonical = format!(
            r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
            self.hex()
        );
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }

    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
            return false;
        };
        self.key.verify_strict(message, &sig).is_ok()
    }

    pub fn to_pem(&self) -> Result<String, AttestError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| AttestError::Key(format!("cannot encode public key: {e}")))
    }

    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        VerifyingKey::from_public_key_pem(text.trim())
            .map(|key| PublicKey { key })
            .map_err(|e| format!("not an ed25519 SubjectPublicKeyInfo PEM public key ({e})"))
    }

    pub fn read(path: &Path) -> Result<PublicKey, AttestError> {
        let text = std::fs::read_to_string(path).map_err(|e| AttestError::file(path, e))?;
        PublicKey::from_pem(&text).map_err(|m| AttestError::file(path, m))
    }
}

/// Where `keygen --out NAME` writes: `NAME.key` and `NAME.pub`.
pub fn key_paths(name: &Path) -> (PathBuf, PathBuf) {
    let with = |ext: &str| {
        let mut s = name.as_os_str().to_owned();
        s.push(ext);
        PathBuf::from(s)
    };
    (with(".key"), with(".pub"))
}

/// Generates a key pair and writes it; refuses to overwrite either file
/// unless `force`. Returns the public key.
pub fn keygen(name: &Path, force: bool) -> Result<PublicKey, AttestError> {
    let (private, public) = key_paths(name);
    for p in [&private, &public] {
        if p.exists() && !force {
            return Err(AttestError::Exists {
                path: p.display().to_string(),
            });
        }
    }
    let key = SecretKey::generate()?;
    let pub_key = key.public();
    if force {
        for p in [&private, &public] {
            match std::fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(AttestError::file(p, e)),
            }
        }
    }
    write_new(&private, key.to_pem()?.as_bytes(), 0o600)?;
    write_new(&public, pub_key.to_pem()?.as_bytes(), 0o644)?;
    Ok(pub_key)
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AttestError> {
    zooaudit_formats::write_new_file(path, bytes, mode).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => AttestError::Exists {
            path: path.display().to_string(),
        },
        _ => AttestError::file(path, e),
    })
}

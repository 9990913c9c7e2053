//! ECDSA keys as model-signing uses them: P-256 with SHA-256 and P-384 with
//! SHA-384, DER-encoded signatures, PEM keys (a public key as
//! SubjectPublicKeyInfo; a private key as SEC1 `EC PRIVATE KEY`, which
//! `openssl ecparam -genkey` writes, or PKCS#8).

use std::path::Path;

use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use sha2::{Digest, Sha256};

use crate::SignError;

/// A public key a bundle is verified with.
#[derive(Debug, Clone)]
pub enum PublicKey {
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
}

/// A private key a bundle is signed with.
#[derive(Clone)]
pub enum PrivateKey {
    P256(p256::ecdsa::SigningKey),
    P384(p384::ecdsa::SigningKey),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({})", self.public().kind())
    }
}

impl PublicKey {
    /// A PEM public key (SubjectPublicKeyInfo) on P-256 or P-384.
    pub fn from_pem(text: &str) -> Result<PublicKey, String> {
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_pem(text) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_pem(text) {
            return Ok(PublicKey::P384(k));
        }
        Err("not a PEM public key on P-256 or P-384 (-----BEGIN PUBLIC KEY-----)".into())
    }

    /// Reads a PEM public key file.
    pub fn read(path: &Path) -> Result<PublicKey, SignError> {
        let text = read_key_text(path)?;
        PublicKey::from_pem(&text).map_err(|m| SignError::key(path, m))
    }

    /// `ecdsa-p256` or `ecdsa-p384`.
    pub fn kind(&self) -> &'static str {
        match self {
            PublicKey::P256(_) => "ecdsa-p256",
            PublicKey::P384(_) => "ecdsa-p384",
        }
    }

    /// The key as PEM with LF line ends, as `openssl ec -pubout` writes it.
    pub fn to_pem(&self) -> String {
        let pem = match self {
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P384(k) => k.to_public_key_pem(LineEnding::LF),
        };
        pem.unwrap_or_default()
    }

    /// sha256 of [`PublicKey::to_pem`], lowercase hex: model-signing's
    /// `publicKey.hint`.
    pub fn pem_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.to_pem().as_bytes()))
    }

    /// Whether `der` is this key's ECDSA signature over `message` (hashed
    /// with the curve's hash).
    pub fn verify(&self, message: &[u8], der: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        match self {
            PublicKey::P256(k) => {
                p256::ecdsa::Signature::from_der(der).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
            PublicKey::P384(k) => {
                p384::ecdsa::Signature::from_der(der).is_ok_and(|s| k.verify(message, &s).is_ok())
            }
        }
    }
}

impl PublicKey {
    /// Whether `der` is this key's ECDSA signature over an already hashed
    /// message (an X.509 certificate's tbsCertificate digest).
    pub fn verify_prehash(&self, digest: &[u8], der: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        match self {
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(der)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
            PublicKey::P384(k) => p384::ecdsa::Signature::from_der(der)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
        }
    }
}

impl PrivateKey {
    /// A PEM private key on P-256 or P-384: SEC1 or PKCS#8 (unencrypted).
    pub fn from_pem(text: &str) -> Result<PrivateKey, String> {
        if let Ok(k) = p256::SecretKey::from_sec1_pem(text) {
            return Ok(PrivateKey::P256(k.into()));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_pem(text) {
            return Ok(PrivateKey::P384(k.into()));
        }
        if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(text) {
            return Ok(PrivateKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::SigningKey::from_pkcs8_pem(text) {
            return Ok(PrivateKey::P384(k));
        }
        Err("not an unencrypted PEM private key on P-256 or P-384 (SEC1 or PKCS#8)".into())
    }

    /// Reads a PEM private key file, refusing one that group or others can
    /// read (as ssh, and `zooaudit`'s attestation keys, do).
    pub fn read(path: &Path) -> Result<PrivateKey, SignError> {
        let text = read_key_text(path)?;
        zooaudit_formats::check_private_key_mode(path).map_err(|m| SignError::key(path, m))?;
        PrivateKey::from_pem(&text).map_err(|m| SignError::key(path, m))
    }

    /// A new P-256 key from the operating system's randomness.
    pub fn generate_p256() -> PrivateKey {
        PrivateKey::P256(p256::ecdsa::SigningKey::random(
            &mut p256::elliptic_curve::rand_core::OsRng,
        ))
    }

    /// The key as PKCS#8 PEM (LF line ends).
    pub fn to_pem(&self) -> String {
        let pem = match self {
            PrivateKey::P256(k) => k.to_pkcs8_pem(LineEnding::LF),
            PrivateKey::P384(k) => k.to_pkcs8_pem(LineEnding::LF),
        };
        pem.map(|p| p.to_string()).unwrap_or_default()
    }

    pub fn public(&self) -> PublicKey {
        match self {
            PrivateKey::P256(k) => PublicKey::P256(*k.verifying_key()),
            PrivateKey::P384(k) => PublicKey::P384(*k.verifying_key()),
        }
    }

    /// The DER ECDSA signature over `message` (deterministic, RFC 6979).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        match self {
            PrivateKey::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
            PrivateKey::P384(k) => {
                let s: p384::ecdsa::Signature = k.sign(message);
                s.to_der().as_bytes().to_vec()
            }
        }
    }
}

/// A key file's text, refused unread when over 64 KiB.
fn read_key_text(path: &Path) -> Result<String, SignError> {
    let meta =
        std::fs::metadata(path).map_err(|e| SignError::key(path, format!("cannot read: {e}")))?;
    if meta.len() > 64 << 10 {
        return Err(SignError::key(path, "over 64 KiB: not a key file"));
    }
    std::fs::read_to_string(path).map_err(|e| SignError::key(path, format!("cannot read: {e}")))
}

/// Writes a new P-256 key pair for model signing: `NAME.key` (PKCS#8 PEM,
/// mode 0600 from the moment it exists) and `NAME.pub` (PEM
/// SubjectPublicKeyInfo, 0644), as `zooaudit keygen` writes its ed25519
/// pair. Existing files are refused unless `force`.
pub fn keygen_p256(
    name: &Path,
    force: bool,
) -> Result<(PublicKey, [std::path::PathBuf; 2]), SignError> {
    let with = |ext: &str| {
        let mut s = name.as_os_str().to_owned();
        s.push(ext);
        std::path::PathBuf::from(s)
    };
    let (private, public) = (with(".key"), with(".pub"));
    for p in [&private, &public] {
        if p.exists() && !force {
            return Err(SignError::key(p, "exists (use --force to replace it)"));
        }
    }
    let key = PrivateKey::generate_p256();
    for p in [&private, &public] {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SignError::key(p, format!("cannot replace: {e}"))),
        }
    }
    let write = |p: &Path, text: String, mode: u32| {
        zooaudit_formats::write_new_file(p, text.as_bytes(), mode)
            .map_err(|e| SignError::key(p, format!("cannot write: {e}")))
    };
    write(&private, key.to_pem(), 0o600)?;
    write(&public, key.public().to_pem(), 0o644)?;
    Ok((key.public(), [private, public]))
}

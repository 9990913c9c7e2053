//! Certificate mode: the signing certificate's chain checked against the
//! roots a verifier trusts, the way model-signing 1.x checks it (with
//! OpenSSL), written out by hand over `x509-cert`:
//!
//! - the path runs from the signing certificate (the bundle's first) through
//!   the bundle's other certificates and the trusted ones, each signed by the
//!   next, and must end at a **self-signed certificate the verifier trusts**
//!   (a trusted intermediate alone is not enough: no partial chains);
//! - every certificate must be valid at **the signing certificate's
//!   notBefore** (the bundle carries no timestamp; model-signing uses that
//!   instant, so an expired signing certificate still verifies, as there);
//! - issuers must be CAs (basicConstraints), within their pathLenConstraint,
//!   with keyCertSign when they carry a keyUsage; an unknown critical
//!   extension anywhere refuses the chain;
//! - the signing certificate must allow signing: keyUsage with
//!   digitalSignature, or else extendedKeyUsage with codeSigning;
//! - signatures: ECDSA with SHA-256 or SHA-384 by P-256 or P-384 keys. RSA,
//!   Ed25519 and P-521 certificates are refused by name. There is no
//!   revocation check (model-signing has none either).

use std::path::Path;

use p256::pkcs8::DecodePublicKey;
use sha2::{Digest, Sha256, Sha384};
use x509_cert::Certificate;
use x509_cert::der::{Decode, Encode, oid::ObjectIdentifier};
use x509_cert::ext::pkix::{BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages};

use crate::{PublicKey, SignError};

const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
/// Extensions this check understands (or that never restrict a path):
/// basicConstraints, keyUsage, extKeyUsage, subjectAltName,
/// subjectKeyIdentifier, authorityKeyIdentifier.
const KNOWN: [&str; 6] = [
    "2.5.29.19",
    "2.5.29.15",
    "2.5.29.37",
    "2.5.29.17",
    "2.5.29.14",
    "2.5.29.35",
];
/// Longest path followed.
const MAX_DEPTH: usize = 8;
/// Most certificates in one trust file.
const MAX_TRUSTED: usize = 256;

/// One certificate, as DER and parsed.
#[derive(Debug, Clone)]
pub struct Cert {
    pub der: Vec<u8>,
    parsed: Certificate,
}

impl Cert {
    pub fn from_der(der: Vec<u8>) -> Result<Cert, String> {
        let parsed =
            Certificate::from_der(&der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        Ok(Cert { der, parsed })
    }

    /// The subject as an RFC 4514 string.
    pub fn subject(&self) -> String {
        self.parsed.tbs_certificate.subject.to_string()
    }

    /// sha256 of the DER, lowercase hex.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(&self.der))
    }

    fn self_issued(&self) -> bool {
        self.parsed.tbs_certificate.subject == self.parsed.tbs_certificate.issuer
    }

    fn not_before(&self) -> std::time::Duration {
        self.parsed
            .tbs_certificate
            .validity
            .not_before
            .to_unix_duration()
    }

    fn valid_at(&self, t: std::time::Duration) -> bool {
        let v = &self.parsed.tbs_certificate.validity;
        v.not_before.to_unix_duration() <= t && t <= v.not_after.to_unix_duration()
    }

    /// The certificate's public key, when it is one this crate verifies
    /// with.
    pub fn public_key(&self) -> Result<PublicKey, String> {
        let spki = self
            .parsed
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| format!("subjectPublicKeyInfo: {e}"))?;
        if let Ok(k) = p256::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            return Ok(PublicKey::P256(k));
        }
        if let Ok(k) = p384::ecdsa::VerifyingKey::from_public_key_der(&spki) {
            return Ok(PublicKey::P384(k));
        }
        Err(format!(
            "{}: its key ({}) is not ECDSA P-256 or P-384",
            self.subject(),
            self.parsed
                .tbs_certificate
                .subject_public_key_info
                .algorithm
                .oid
        ))
    }

    fn extension<T: for<'a> Decode<'a>>(&self, oid: ObjectIdentifier) -> Result<Option<T>, String> {
        let Some(exts) = &self.parsed.tbs_certificate.extensions else {
            return Ok(None);
        };
        match exts.iter().find(|e| e.extn_id == oid) {
            None => Ok(None),
            Some(e) => T::from_der(e.extn_value.as_bytes())
                .map(Some)
                .map_err(|err| format!("{}: extension {oid}: {err}", self.subject())),
        }
    }

    fn unknown_critical(&self) -> Option<String> {
        let exts = self.parsed.tbs_certificate.extensions.as_ref()?;
        exts.iter()
            .find(|e| e.critical && !KNOWN.contains(&e.extn_id.to_string().as_str()))
            .map(|e| e.extn_id.to_string())
    }

    /// Whether `issuer`'s key made this certificate's signature.
    fn signed_by(&self, issuer: &Cert) -> Result<bool, String> {
        let tbs = self
            .parsed
            .tbs_certificate
            .to_der()
            .map_err(|e| format!("{}: tbsCertificate: {e}", self.subject()))?;
        let alg = self.parsed.signature_algorithm.oid;
        let digest: Vec<u8> = if alg == ECDSA_SHA256 {
            Sha256::digest(&tbs).to_vec()
        } else if alg == ECDSA_SHA384 {
            Sha384::digest(&tbs).to_vec()
        } else {
            return Err(format!(
                "{}: signature algorithm {alg} is not ECDSA with SHA-256 or SHA-384",
                self.subject()
            ));
        };
        let Some(sig) = self.parsed.signature.as_bytes() else {
            return Ok(false);
        };
        Ok(issuer.public_key()?.verify_prehash(&digest, sig))
    }
}

/// Reads a PEM file of one or more trusted certificates.
pub fn read_trusted(path: &Path) -> Result<Vec<Cert>, SignError> {
    let meta =
        std::fs::metadata(path).map_err(|e| SignError::key(path, format!("cannot read: {e}")))?;
    if meta.len() > 4 << 20 {
        return Err(SignError::key(
            path,
            "over 4 MiB: not a certificate chain file",
        ));
    }
    let bytes =
        std::fs::read(path).map_err(|e| SignError::key(path, format!("cannot read: {e}")))?;
    let certs = Certificate::load_pem_chain(&bytes)
        .map_err(|e| SignError::key(path, format!("not PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(SignError::key(path, "holds no certificate"));
    }
    if certs.len() > MAX_TRUSTED {
        return Err(SignError::key(
            path,
            format!("over {MAX_TRUSTED} certificates"),
        ));
    }
    certs
        .into_iter()
        .map(|c| {
            let der = c
                .to_der()
                .map_err(|e| SignError::key(path, e.to_string()))?;
            Ok(Cert { der, parsed: c })
        })
        .collect()
}

/// The signer a verified chain names.
#[derive(Debug, Clone)]
pub struct ChainSigner {
    pub key: PublicKey,
    /// The signing certificate's subject (RFC 4514).
    pub subject: String,
    /// sha256 of the signing certificate's DER.
    pub fingerprint: String,
    /// The trusted root the path ended at.
    pub root_subject: String,
    pub root_fingerprint: String,
}

/// Checks the bundle's certificates (`chain[0]` signs) against `trusted`;
/// the signing key once the path holds. Errors are the message only.
pub fn verify_chain(chain: &[Vec<u8>], trusted: &[Cert]) -> Result<ChainSigner, String> {
    let mut certs = Vec::new();
    for (i, der) in chain.iter().enumerate() {
        certs.push(Cert::from_der(der.clone()).map_err(|e| format!("certificate {i}: {e}"))?);
    }
    let leaf = certs.first().ok_or("no certificate")?.clone();
    let at = leaf.not_before();
    let key = leaf.public_key()?;
    let ku: Option<KeyUsage> = leaf.extension(KEY_USAGE)?;
    let eku: Option<ExtendedKeyUsage> = leaf.extension(EXT_KEY_USAGE)?;
    let may_sign = match ku {
        Some(ku) if ku.digital_signature() => true,
        _ => eku.is_some_and(|e| e.0.contains(&CODE_SIGNING)),
    };
    if !may_sign {
        return Err(format!(
            "the signing certificate {} allows neither digitalSignature (keyUsage) nor codeSigning (extendedKeyUsage)",
            leaf.subject()
        ));
    }
    let mut current = leaf;
    let mut below = 0usize;
    for _ in 0..MAX_DEPTH {
        if let Some(ext) = current.unknown_critical() {
            return Err(format!(
                "{}: unknown critical extension {ext}",
                current.subject()
            ));
        }
        if !current.valid_at(at) {
            return Err(format!(
                "{} is not valid at the signing certificate's notBefore",
                current.subject()
            ));
        }
        let is_trusted = trusted.iter().any(|t| t.der == current.der);
        if is_trusted && current.self_issued() && current.signed_by(&current)? {
            return Ok(ChainSigner {
                key,
                subject: certs[0].subject(),
                fingerprint: certs[0].fingerprint(),
                root_subject: current.subject(),
                root_fingerprint: current.fingerprint(),
            });
        }
        let issuer = find_issuer(&current, &certs[1..], trusted)?.ok_or_else(|| {
            format!(
                "no issuer of {} among the bundle's and the trusted certificates (the path must end at a trusted self-signed root)",
                current.subject()
            )
        })?;
        check_ca(&issuer, below)?;
        if !issuer.self_issued() {
            below += 1;
        }
        current = issuer;
    }
    Err(format!("no trusted root within {MAX_DEPTH} certificates"))
}

/// The certificate that issued `cert`: named by its issuer field and whose
/// key verifies its signature; trusted certificates first.
fn find_issuer(cert: &Cert, bundled: &[Cert], trusted: &[Cert]) -> Result<Option<Cert>, String> {
    let issuer = &cert.parsed.tbs_certificate.issuer;
    for c in trusted.iter().chain(bundled.iter()) {
        if &c.parsed.tbs_certificate.subject != issuer || c.der == cert.der {
            continue;
        }
        if c.public_key().is_ok() && cert.signed_by(c)? {
            return Ok(Some(c.clone()));
        }
    }
    Ok(None)
}

/// `issuer` may issue certificates with `below` intermediates under it.
fn check_ca(issuer: &Cert, below: usize) -> Result<(), String> {
    let bc: Option<BasicConstraints> = issuer.extension(BASIC_CONSTRAINTS)?;
    let Some(bc) = bc.filter(|b| b.ca) else {
        return Err(format!(
            "{} issued a certificate in the chain but is not a CA (basicConstraints)",
            issuer.subject()
        ));
    };
    if let Some(len) = bc.path_len_constraint
        && below > usize::from(len)
    {
        return Err(format!(
            "{} allows {len} intermediate(s) below it (pathLenConstraint), the chain has {below}",
            issuer.subject()
        ));
    }
    let ku: Option<KeyUsage> = issuer.extension(KEY_USAGE)?;
    if let Some(ku) = ku
        && !ku.0.contains(KeyUsages::KeyCertSign)
    {
        return Err(format!(
            "{} lacks keyCertSign in its keyUsage",
            issuer.subject()
        ));
    }
    Ok(())
}

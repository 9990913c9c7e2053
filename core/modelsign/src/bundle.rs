//! The signature file: a Sigstore bundle v0.3 whose DSSE envelope carries
//! model-signing's in-toto statement. Read strictly (unknown fields are
//! refused, as the Python reader does), every fault one line naming the
//! file.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde_json::json;

use crate::hash::{ModelDigest, root_of};
use crate::{PrivateKey, PublicKey, SignError};

pub const MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
pub const PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://model_signing/signature/v1.0";
/// Largest signature file read.
pub const MAX_BUNDLE_BYTES: u64 = 16 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBundle {
    media_type: String,
    verification_material: RawMaterial,
    dsse_envelope: Option<RawEnvelope>,
    message_signature: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMaterial {
    public_key: Option<RawPublicKey>,
    x509_certificate_chain: Option<RawChain>,
    certificate: Option<serde_json::Value>,
    #[serde(default)]
    tlog_entries: Vec<serde_json::Value>,
    timestamp_verification_data: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPublicKey {
    hint: Option<String>,
    raw_bytes: Option<serde_json::Value>,
    key_details: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChain {
    certificates: Vec<RawCertificate>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawCertificate {
    raw_bytes: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEnvelope {
    payload: String,
    payload_type: String,
    signatures: Vec<RawSignature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSignature {
    sig: String,
    #[allow(dead_code)] // read to accept it; its value is not used
    keyid: Option<String>,
}

/// What a bundle carries to identify its signer.
#[derive(Debug, Clone)]
pub enum Material {
    /// Key mode: `publicKey.hint`, the sha256 of the signer's PEM public
    /// key (unauthenticated; the verifier brings the key).
    Key { hint: Option<String> },
    /// Certificate mode: `x509CertificateChain`, the signing certificate
    /// first, then the untrusted certificates towards a root (DER).
    Chain(Vec<Vec<u8>>),
}

/// A key- or certificate-mode bundle, read.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub material: Material,
    pub payload: Vec<u8>,
    pub payload_type: String,
    /// The first signature (DER); model-signing verifies only the first.
    pub signature: Vec<u8>,
}

impl Bundle {
    /// Reads and checks the structure of the signature file at `path`.
    pub fn read(path: &Path) -> Result<Bundle, SignError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| SignError::bundle(path, format!("cannot read: {e}")))?;
        if meta.len() > MAX_BUNDLE_BYTES {
            return Err(SignError::bundle(
                path,
                format!(
                    "{} bytes, over the {MAX_BUNDLE_BYTES}-byte limit of a signature file",
                    meta.len()
                ),
            ));
        }
        let bytes = std::fs::read(path)
            .map_err(|e| SignError::bundle(path, format!("cannot read: {e}")))?;
        Bundle::parse(path, &bytes)
    }

    /// Checks the structure of a signature file's bytes.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Bundle, SignError> {
        let bad = |m: String| SignError::bundle(path, m);
        let raw: RawBundle = serde_json::from_slice(bytes)
            .map_err(|e| bad(format!("not a Sigstore bundle: {e}")))?;
        if raw.media_type != MEDIA_TYPE {
            return Err(bad(format!(
                "mediaType is {}, expected {MEDIA_TYPE}",
                zooaudit_formats::quote(&raw.media_type)
            )));
        }
        let m = &raw.verification_material;
        let kinds = [
            m.public_key.is_some(),
            m.x509_certificate_chain.is_some(),
            m.certificate.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(bad(
                "verificationMaterial: needs exactly one of publicKey, x509CertificateChain, certificate".into(),
            ));
        }
        let material = match (&m.public_key, &m.x509_certificate_chain) {
            (Some(key), _) => {
                let _ = (&key.raw_bytes, &key.key_details);
                Material::Key {
                    hint: key.hint.clone(),
                }
            }
            (None, Some(chain)) => {
                if chain.certificates.is_empty() {
                    return Err(bad(
                        "verificationMaterial.x509CertificateChain.certificates is empty".into(),
                    ));
                }
                let mut ders = Vec::new();
                for (i, c) in chain.certificates.iter().enumerate() {
                    ders.push(STANDARD.decode(c.raw_bytes.as_bytes()).map_err(|e| {
                        bad(format!(
                            "verificationMaterial.x509CertificateChain.certificates[{i}].rawBytes is not base64: {e}"
                        ))
                    })?);
                }
                Material::Chain(ders)
            }
            (None, None) => {
                return Err(bad(
                    "a keyless (Fulcio certificate + transparency log) bundle: zooaudit verifies key and certificate-chain bundles only".into(),
                ));
            }
        };
        let _ = (&m.tlog_entries, &m.timestamp_verification_data);
        if raw.message_signature.is_some() {
            return Err(bad(
                "a messageSignature bundle: model signing uses dsseEnvelope".into(),
            ));
        }
        let env = raw
            .dsse_envelope
            .ok_or_else(|| bad("no dsseEnvelope".into()))?;
        let payload = STANDARD
            .decode(env.payload.as_bytes())
            .map_err(|e| bad(format!("dsseEnvelope.payload is not base64: {e}")))?;
        let first = env
            .signatures
            .first()
            .ok_or_else(|| bad("dsseEnvelope.signatures is empty".into()))?;
        let signature = STANDARD
            .decode(first.sig.as_bytes())
            .map_err(|e| bad(format!("dsseEnvelope.signatures[0].sig is not base64: {e}")))?;
        Ok(Bundle {
            material,
            payload,
            payload_type: env.payload_type,
            signature,
        })
    }

    /// Checks the signature over the DSSE PAE (built with model-signing's
    /// payload type, as its verifier does) with `key`, then the payload
    /// type; the payload, once it holds.
    pub fn verify_signature(&self, path: &Path, key: &PublicKey) -> Result<Vec<u8>, SignError> {
        if !key.verify(&pae(&self.payload), &self.signature) {
            return Err(SignError::invalid(
                path,
                format!(
                    "the signature does not verify with the given {} key",
                    key.kind()
                ),
            ));
        }
        if self.payload_type != PAYLOAD_TYPE {
            return Err(SignError::invalid(
                path,
                format!(
                    "payloadType is {}, expected {PAYLOAD_TYPE}",
                    zooaudit_formats::quote(&self.payload_type)
                ),
            ));
        }
        Ok(self.payload.clone())
    }
}

/// DSSE v1 pre-authentication encoding of an in-toto payload.
pub fn pae(payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {PAYLOAD_TYPE} {} ",
        PAYLOAD_TYPE.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The signed statement, checked.
#[derive(Debug, Clone)]
pub struct Statement {
    pub subject_name: String,
    pub root_sha256: String,
    /// name → digest, as signed.
    pub resources: BTreeMap<String, [u8; 32]>,
    pub ignore_paths: Vec<String>,
}

impl Statement {
    /// Parses and checks a verified payload: the statement and predicate
    /// types, one subject, files serialization with sha256, canonical
    /// unique resource names, and that the resources hash to the subject.
    pub fn parse(path: &Path, payload: &[u8]) -> Result<Statement, SignError> {
        let bad = |m: String| SignError::invalid(path, m);
        let v: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| bad(format!("the signed payload is not JSON: {e}")))?;
        let text = |v: &serde_json::Value, what: &str| -> Result<String, SignError> {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(format!("{what} is not a string")))
        };
        if text(&v["_type"], "_type")? != STATEMENT_TYPE {
            return Err(bad(format!("_type is not {STATEMENT_TYPE}")));
        }
        let pt = text(&v["predicateType"], "predicateType")?;
        if pt != PREDICATE_TYPE {
            return Err(bad(format!(
                "predicateType is {}, expected {PREDICATE_TYPE}",
                zooaudit_formats::quote(&pt)
            )));
        }
        let subjects = v["subject"].as_array().map_or(0, Vec::len);
        if subjects != 1 {
            return Err(bad(format!(
                "the statement has {subjects} subjects, expected 1"
            )));
        }
        let subject_name = text(&v["subject"][0]["name"], "subject[0].name")?;
        let root_sha256 = text(
            &v["subject"][0]["digest"]["sha256"],
            "subject[0].digest.sha256",
        )?;
        let ser = &v["predicate"]["serialization"];
        let method = text(&ser["method"], "predicate.serialization.method")?;
        if method != "files" {
            return Err(bad(format!(
                "serialization method {} (zooaudit verifies \"files\")",
                zooaudit_formats::quote(&method)
            )));
        }
        if !ser["allow_symlinks"].is_boolean() {
            return Err(bad(
                "predicate.serialization.allow_symlinks is not a boolean".into(),
            ));
        }
        let ignore_paths = match &ser["ignore_paths"] {
            serde_json::Value::Null => Vec::new(),
            l => l
                .as_array()
                .ok_or_else(|| bad("predicate.serialization.ignore_paths is not a list".into()))?
                .iter()
                .map(|p| text(p, "an ignore path"))
                .collect::<Result<_, _>>()?,
        };
        let list = v["predicate"]["resources"]
            .as_array()
            .ok_or_else(|| bad("predicate.resources is not a list".into()))?;
        let mut order = Vec::new();
        let mut resources = BTreeMap::new();
        for (i, r) in list.iter().enumerate() {
            let name = text(&r["name"], &format!("resources[{i}].name"))?;
            let algorithm = text(&r["algorithm"], &format!("resources[{i}].algorithm"))?;
            let digest = text(&r["digest"], &format!("resources[{i}].digest"))?;
            if algorithm != "sha256" {
                return Err(bad(format!(
                    "resources[{i}]: algorithm {} (sha256 expected)",
                    zooaudit_formats::quote(&algorithm)
                )));
            }
            let d: [u8; 32] = hex::decode(&digest)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    bad(format!(
                        "resources[{i}].digest is not 64 hexadecimal digits"
                    ))
                })?;
            if !canonical(&name) {
                return Err(bad(format!(
                    "resources[{i}].name {} is not a plain relative path",
                    zooaudit_formats::quote(&name)
                )));
            }
            if resources.insert(name.clone(), d).is_some() {
                return Err(bad(format!(
                    "resources[{i}].name {} appears twice",
                    zooaudit_formats::quote(&name)
                )));
            }
            order.push(d);
        }
        if hex::encode(root_of(order.iter())) != root_sha256 {
            return Err(bad(
                "the resources do not hash to the subject's digest".into()
            ));
        }
        Ok(Statement {
            subject_name,
            root_sha256,
            resources,
            ignore_paths,
        })
    }

    /// Whether the files on disk are exactly the signed ones.
    /// `path` is the signature file, `model` the model (named in the
    /// message: a single file's resource `"."` is the model itself).
    pub fn matches(
        &self,
        path: &Path,
        model: &Path,
        on_disk: &ModelDigest,
    ) -> Result<(), SignError> {
        let disk: BTreeMap<&str, &[u8; 32]> = on_disk
            .resources
            .iter()
            .map(|r| (r.name.as_str(), &r.sha256))
            .collect();
        let names = |v: Vec<&str>| {
            let n = v.len();
            let shown: Vec<String> = v
                .iter()
                .take(5)
                .map(|s| {
                    if *s == "." {
                        zooaudit_formats::quote(&model.display().to_string())
                    } else {
                        zooaudit_formats::quote(&model.join(s).display().to_string())
                    }
                })
                .collect();
            format!(
                "{n} ({}{})",
                shown.join(", "),
                if n > 5 { ", …" } else { "" }
            )
        };
        let extra: Vec<&str> = disk
            .keys()
            .filter(|k| !self.resources.contains_key(**k))
            .copied()
            .collect();
        if !extra.is_empty() {
            return Err(SignError::invalid(
                path,
                format!("files not covered by the signature: {}", names(extra)),
            ));
        }
        let missing: Vec<&str> = self
            .resources
            .keys()
            .filter(|k| !disk.contains_key(k.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(SignError::invalid(
                path,
                format!("signed files missing from the model: {}", names(missing)),
            ));
        }
        let changed: Vec<&str> = self
            .resources
            .iter()
            .filter(|(k, d)| disk.get(k.as_str()) != Some(d))
            .map(|(k, _)| k.as_str())
            .collect();
        if !changed.is_empty() {
            return Err(SignError::invalid(
                path,
                format!("files changed since they were signed: {}", names(changed)),
            ));
        }
        Ok(())
    }
}

/// `.` or a relative POSIX path without empty, `.` or `..` components.
fn canonical(name: &str) -> bool {
    name == "."
        || (!name.starts_with('/')
            && name
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// The statement model-signing writes for `digest`, as JSON bytes.
pub fn statement_json(digest: &ModelDigest, ignore_paths: &[String]) -> Vec<u8> {
    let resources: Vec<serde_json::Value> = digest
        .resources
        .iter()
        .map(|r| json!({"name": r.name, "algorithm": "sha256", "digest": hex::encode(r.sha256)}))
        .collect();
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": digest.name, "digest": {"sha256": digest.root_hex()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": false,
                "ignore_paths": ignore_paths,
            },
            "resources": resources,
        },
    });
    serde_json::to_vec_pretty(&statement).unwrap_or_default()
}

/// A key-mode bundle signing `payload` with `key`, as compact JSON.
pub fn key_bundle(payload: &[u8], key: &PrivateKey) -> String {
    let sig = key.sign(&pae(payload));
    json!({
        "mediaType": MEDIA_TYPE,
        "verificationMaterial": {
            "publicKey": {"hint": key.public().pem_sha256()},
            "tlogEntries": [],
        },
        "dsseEnvelope": {
            "payload": STANDARD.encode(payload),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": STANDARD.encode(sig), "keyid": ""}],
        },
    })
    .to_string()
}

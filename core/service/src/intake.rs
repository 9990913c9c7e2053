//! What an audit request becomes. A request names a zoo model, or uploads a
//! manifest, or is a watched repository's new commit; the intake checks it
//! the way `zooaudit audit` would (same one-line errors), picks the
//! references by the zoo's independence rule, and derives the audit's
//! identity: sha256 over the candidate's file digest and manifest, each
//! reference's, the audit file's and trigger suite's digests and the tool
//! version. The same identity is audited once.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use zooaudit_audit::AuditSpec;
use zooaudit_auditdb::NewAudit;
use zooaudit_manifest::ModelManifest;
use zooaudit_registry::Source;
use zooaudit_registry::zoo::Zoo;

use crate::{ServiceError, TOOL_VERSION, ZooConfig, sha256_hex};

/// The candidate of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Candidate {
    /// A model of the zoo, by name.
    Zoo { name: String },
    /// An uploaded manifest (its text; remote, pinned source).
    Manifest { text: String },
    /// A watched repository's file at one commit, as the zoo model `model`.
    Watched {
        model: String,
        repo: String,
        commit: String,
        file: String,
    },
}

/// What a worker runs: the candidate, the references the submitter named
/// (empty: by independence), and the references intake chose, which the
/// worker's own choice must equal (else the zoo changed in between).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub candidate: Candidate,
    pub references: Vec<String>,
    #[serde(default)]
    pub chosen: Vec<String>,
}

/// The zoo's audit policy, loaded once per server or worker.
#[derive(Debug)]
pub struct Intake {
    pub config: ZooConfig,
    pub spec: AuditSpec,
    pub zoo: Zoo,
    pub audit_digest: String,
    pub suite_digest: String,
    pub max_attempts: u32,
}

/// A manifest's identity: the digest of its file's sha256 (pin, or the
/// local file's) and its text (preprocessing matters as much as weights).
#[derive(Debug, Clone, Serialize)]
struct ModelKey {
    name: String,
    sha256: String,
    manifest_sha256: String,
}

fn request(m: impl std::fmt::Display) -> ServiceError {
    ServiceError::Request(m.to_string())
}

impl Intake {
    pub fn open(config: &ZooConfig) -> Result<Intake, ServiceError> {
        let text = std::fs::read(&config.audit).map_err(|e| {
            zooaudit_audit::AuditError::file(&config.audit, format!("cannot read audit file: {e}"))
        })?;
        let mut spec = AuditSpec::parse(&config.audit, &String::from_utf8_lossy(&text))?;
        if let Some(z) = &config.zoo {
            spec.zoo = Some(z.clone());
        }
        let zoo = spec.load_zoo()?;
        let suite = std::fs::read(&spec.triggers).map_err(|e| {
            zooaudit_audit::AuditError::file(&spec.triggers, format!("cannot read: {e}"))
        })?;
        Ok(Intake {
            config: config.clone(),
            audit_digest: sha256_hex(&text),
            suite_digest: sha256_hex(&suite),
            spec,
            zoo,
            max_attempts: 3,
        })
    }

    /// The file digest a manifest names: its pin, or for a local file the
    /// file's own digest. An unpinned remote source is refused.
    fn model_key(m: &ModelManifest, text: Option<&str>) -> Result<ModelKey, ServiceError> {
        let manifest_sha256 = match text {
            Some(t) => sha256_hex(t.as_bytes()),
            None => sha256_hex(
                &std::fs::read(&m.path)
                    .map_err(|e| request(format!("{}: cannot read: {e}", m.path.display())))?,
            ),
        };
        let sha256 = match (
            &m.model.sha256,
            Source::parse(&m.model.source, base(&m.path)),
        ) {
            (Some(pin), _) => pin.to_lowercase(),
            (None, Source::Local(p)) => zooaudit_registry::model_digest(&p).map_err(|e| {
                request(format!(
                    "{}: model.source: {}: {e}",
                    m.path.display(),
                    p.display()
                ))
            })?,
            (None, Source::Remote { text, .. }) => {
                return Err(request(format!(
                    "{}: model.sha256: missing; the remote source {text} must be pinned",
                    m.path.display()
                )));
            }
        };
        Ok(ModelKey {
            name: m.model.name.clone(),
            sha256,
            manifest_sha256,
        })
    }

    /// The queued audit for `job` with candidate manifest `cand` (already
    /// checked); `source`/`revision` as the models table records them.
    fn plan(
        &self,
        job: Job,
        cand: &ModelManifest,
        cand_key: Option<ModelKey>,
        revision: Option<String>,
    ) -> Result<NewAudit, ServiceError> {
        let explicit = (!job.references.is_empty()).then_some(job.references.as_slice());
        let chosen = self
            .zoo
            .choose_references_for(
                cand,
                explicit.unwrap_or(&self.spec.zoo_references),
                self.spec.max_references,
            )
            .map_err(request)?;
        let refs: Vec<ModelKey> = chosen
            .iter()
            .map(|c| Self::model_key(&c.manifest, None))
            .collect::<Result<_, _>>()?;
        let job = Job {
            chosen: refs.iter().map(|r| r.name.clone()).collect(),
            ..job
        };
        let identity = serde_json::json!({
            "candidate": cand_key,
            "candidate_source": cand.model.source,
            "references": refs,
            "audit": self.audit_digest,
            "suite": self.suite_digest,
            "tool": TOOL_VERSION,
        });
        Ok(NewAudit {
            idem_key: sha256_hex(identity.to_string().as_bytes()),
            candidate_name: cand.model.name.clone(),
            candidate_sha256: cand_key.map(|k| k.sha256),
            candidate_source: cand.model.source.clone(),
            candidate_revision: revision,
            refs: serde_json::to_string(&refs).unwrap_or_default(),
            audit_digest: self.audit_digest.clone(),
            suite_digest: self.suite_digest.clone(),
            tool_version: TOOL_VERSION.to_string(),
            job: serde_json::to_string(&job).unwrap_or_default(),
            max_attempts: self.max_attempts,
        })
    }

    /// An audit of the zoo model `name` (references: `references`, else by
    /// independence).
    pub fn zoo_model(&self, name: &str, references: &[String]) -> Result<NewAudit, ServiceError> {
        let cand = self.zoo.get(name).map_err(request)?.clone();
        let key = Self::model_key(&cand, None)?;
        let job = Job {
            candidate: Candidate::Zoo {
                name: name.to_string(),
            },
            references: references.to_vec(),
            chosen: Vec::new(),
        };
        self.plan(job, &cand, Some(key), None)
    }

    /// An audit of an uploaded manifest: it must parse, name a remote source
    /// pinned by sha256 (a server never opens its own files for a
    /// stranger), carry provenance, and not take a zoo model's name.
    pub fn manifest(&self, text: &str, references: &[String]) -> Result<NewAudit, ServiceError> {
        let cand = parse_upload(text)?;
        if let Source::Local(_) = Source::parse(&cand.model.source, Path::new("/")) {
            return Err(request(format!(
                "manifest: model.source: '{}': an uploaded manifest must name a remote source (hf://, https://, pypi:, npm:)",
                cand.model.source
            )));
        }
        if self
            .zoo
            .models
            .iter()
            .any(|m| m.model.name == cand.model.name)
        {
            return Err(request(format!(
                "manifest: model.name: '{}' is a zoo model's name; audit it by name, or rename the upload",
                cand.model.name
            )));
        }
        let key = Self::model_key(&cand, Some(text))?;
        let job = Job {
            candidate: Candidate::Manifest {
                text: text.to_string(),
            },
            references: references.to_vec(),
            chosen: Vec::new(),
        };
        self.plan(job, &cand, Some(key), None)
    }

    /// An audit of a watched repository's `file` at `commit`, as the zoo
    /// model `model` (its preprocessing and provenance). The file's sha256
    /// is not known until a worker fetches it.
    pub fn watched(
        &self,
        model: &str,
        repo: &str,
        commit: &str,
        file: &str,
    ) -> Result<NewAudit, ServiceError> {
        let mut cand = self.zoo.get(model).map_err(request)?.clone();
        cand.model.source = format!("hf://{repo}@{commit}/{file}");
        cand.model.sha256 = None;
        let job = Job {
            candidate: Candidate::Watched {
                model: model.to_string(),
                repo: repo.to_string(),
                commit: commit.to_string(),
                file: file.to_string(),
            },
            references: Vec::new(),
            chosen: Vec::new(),
        };
        self.plan(job, &cand, None, Some(commit.to_string()))
    }
}

fn base(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// An uploaded manifest, parsed as `zooaudit` parses a manifest file.
pub fn parse_upload(text: &str) -> Result<ModelManifest, ServiceError> {
    ModelManifest::parse(&PathBuf::from("manifest"), text).map_err(request)
}

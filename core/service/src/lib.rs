//! zooaudit for a whole zoo: audits asked for by people (`POST /v1/audits`,
//! `zooaudit submit`) and by the hub (Hugging Face webhooks on watched
//! repositories) go into the audit registry ([`zooaudit_auditdb`]); workers
//! claim them and run the audit pipeline (the library, as `zooaudit audit`
//! does); every result is kept, served (JSON, artifacts, badges) and shown
//! (a dashboard).
//!
//! - [`intake`]: what an audit request becomes: the job, its references (the
//!   zoo's independence rule), and the key that makes it idempotent.
//! - [`execute`]: one job through the pipeline, its artifacts.
//! - [`worker`]: the claim → heartbeat → complete/retry loop.
//! - [`server`]: the HTTP service (axum): intake, webhooks, the read side.
//! - [`pages`]: the dashboard and the badge (server-rendered, no JavaScript).
//! - [`app`]: entry points for the CLI (runtime, signals).

pub mod app;
pub mod execute;
pub mod intake;
pub mod pages;
pub mod server;
pub mod worker;

use std::path::PathBuf;

/// Errors of the service; one line each.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The request cannot be audited as asked (the client's fault: 4xx).
    #[error("{0}")]
    Request(String),
    /// The zoo's own configuration (audit file, zoo file) is wrong.
    #[error(transparent)]
    Audit(Box<zooaudit_audit::AuditError>),
    #[error(transparent)]
    Db(#[from] zooaudit_auditdb::DbError),
    /// A resource the operating system refused (a socket, a file).
    #[error("{what}: {source}")]
    System {
        what: String,
        source: std::io::Error,
    },
}

impl From<zooaudit_audit::AuditError> for ServiceError {
    fn from(e: zooaudit_audit::AuditError) -> ServiceError {
        ServiceError::Audit(Box::new(e))
    }
}

impl ServiceError {
    pub(crate) fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServiceError {
        let what = what.into();
        move |source| ServiceError::System { what, source }
    }
}

/// What every server and worker of one zoo shares: the audit file (faces,
/// trigger suite, operating points, verdict rule: the zoo's audit policy)
/// and the zoo file (its models; `--zoo` overrides the audit file's `zoo`).
#[derive(Debug, Clone)]
pub struct ZooConfig {
    pub audit: PathBuf,
    pub zoo: Option<PathBuf>,
}

/// The tool version recorded with every audit (part of its identity).
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

//! The paper's method at run time: every image goes through both models of a
//! calibrated pair, and a low agreement score means this very input may be
//! triggering a backdoor, whatever the trigger is.
//!
//! - [`bundle`]: the pair bundle (versioned JSON): both models by manifest
//!   and sha256, the fitted translator with its held-out fidelity, the
//!   thresholds per operating point, and which embedding to serve.
//!   [`fit::bundle_from_audit`] makes one from an audit's own fit;
//!   [`fit::fit_bundle`] runs the audit's steps for one pair.
//! - [`pair`]: the opened pair and its decision for one image.
//! - [`server`]: the HTTP service (axum on tokio).

pub mod bundle;
pub mod fit;
pub mod pair;
pub mod server;

/// Errors of the guard. One line each, naming the file at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    #[error("{path}: {message}")]
    File {
        path: std::path::PathBuf,
        message: String,
    },
    /// A pipeline step failed (faces, embedding, fit), with its own kind.
    #[error(transparent)]
    Audit(Box<zooaudit_audit::AuditError>),
    #[error("{0}")]
    Other(String),
}

impl From<zooaudit_audit::AuditError> for GuardError {
    fn from(e: zooaudit_audit::AuditError) -> GuardError {
        GuardError::Audit(Box::new(e))
    }
}

impl GuardError {
    pub fn field_of(path: &std::path::Path, field: &str, message: impl Into<String>) -> GuardError {
        GuardError::File {
            path: path.to_path_buf(),
            message: format!("{field}: {}", message.into()),
        }
    }

    pub fn file(path: &std::path::Path, message: impl Into<String>) -> GuardError {
        GuardError::File {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

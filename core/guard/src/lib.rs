//! The paper's method at run time: every image goes through both models of a
//! calibrated pair, and a low agreement score means this very input may be
//! triggering a backdoor, whatever the trigger is.
//!
//! - [`bundle`]: the pair bundle (versioned JSON): both models by manifest
//!   and sha256, the fitted translator with its held-out fidelity, the
//!   thresholds per operating point, and which embedding to serve.
//!   [`fit::bundle_from_audit`] makes one from an audit's own fit;
//!   [`fit::fit_bundle`] runs the audit's steps for one pair.
//! - [`calibrate`]: clean FNMR per face source, worst-source thresholds,
//!   and recalibration on a deployment's own faces.
//! - [`pair`]: the opened pair and its decision for one image.
//! - [`request`]: request bodies before any model runs (batch JSON, image
//!   decoding within the limits).
//! - [`server`]: the HTTP service (axum on tokio).

pub mod bundle;
pub mod calibrate;
pub mod fit;
pub mod pair;
pub mod request;
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
    /// An option names something the bundle does not have.
    #[error("{0}")]
    Option(String),
    /// The detector's fitted state is not a translator the guard can serve.
    #[error("{0}")]
    Translator(String),
    /// The operating system refused a resource (a socket, a thread, the
    /// runtime); `what` says which.
    #[error("{what}: {source}")]
    System {
        what: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Embed(#[from] zooaudit_embed::EmbedError),
    #[error(transparent)]
    Format(#[from] zooaudit_formats::ReportError),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl From<zooaudit_audit::AuditError> for GuardError {
    fn from(e: zooaudit_audit::AuditError) -> GuardError {
        GuardError::Audit(Box::new(e))
    }
}

impl GuardError {
    pub(crate) fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> GuardError {
        let what = what.into();
        move |source| GuardError::System { what, source }
    }

    pub fn field_of(path: &std::path::Path, field: &str, message: impl Into<String>) -> GuardError {
        GuardError::File {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(format!("{field}: {}", message.into())),
        }
    }

    pub fn file(path: &std::path::Path, message: impl Into<String>) -> GuardError {
        GuardError::File {
            path: path.to_path_buf(),
            message: zooaudit_formats::one_line(message),
        }
    }
}

//! Renders a finished audit for machines and people:
//!
//! * [`predicate`]: the in-toto Statement v1 of the audit (predicate type
//!   [`predicate::PREDICATE_TYPE`], lowerCamelCase fields) and the
//!   test-result v0.1 statement that off-the-shelf policy engines read;
//! * [`summary`]: `summary.md`, short enough for a CI log or a pull request;
//! * [`html`]: `report.html`, one self-contained file with inline SVG plots
//!   drawn by plotters (score histograms and DET curves).

pub mod console;
pub mod html;
pub mod plots;
pub mod predicate;
pub mod scan;
pub mod summary;

pub use html::report_html;
pub use predicate::{PREDICATE_TYPE, audit_statement, test_result_statement};
pub use summary::summary_markdown;

/// A rate as a percentage, `space` between number and sign (" " in
/// Markdown, "&nbsp;" in HTML).
pub(crate) fn pct_with(x: f64, space: &str) -> String {
    format!("{:.1}{space}%", 100.0 * x)
}

/// A 95 % interval in percent, `[lo,{space}hi]{suffix}`.
pub(crate) fn ci_with(c: [f64; 2], space: &str, suffix: &str) -> String {
    format!("[{:.1},{space}{:.1}]{suffix}", 100.0 * c[0], 100.0 * c[1])
}

/// The "rate interval" cells of a result row, in the order the tables show
/// them: flag rate, clean FNMR, flag rate against the control threshold,
/// the control's own rate.
pub(crate) fn rate_cells(
    r: &zooaudit_audit::report::ResultRow,
    space: &str,
    ci_suffix: &str,
) -> [String; 4] {
    [
        (r.flag_rate, r.ci95),
        (r.clean_fnmr, r.clean_ci95),
        (r.flag_rate_vs_control, r.ci95_vs_control),
        (r.control_flag_rate, r.control_ci95),
    ]
    .map(|(rate, ci)| {
        format!(
            "{} {}",
            pct_with(rate, space),
            ci_with(ci, space, ci_suffix)
        )
    })
}

/// The subject name of a pair direction, `probe → reference`.
pub fn direction(probe: &str, reference: &str) -> String {
    format!("{probe} → {reference}")
}

use std::path::{Path, PathBuf};

use zooaudit_attest::SecretKey;
use zooaudit_audit::report::AuditReport;

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Write(#[from] zooaudit_formats::ReportError),
    #[error(transparent)]
    Attest(#[from] zooaudit_attest::AttestError),
    /// An in-toto subject needs a digest, which a model behind an
    /// inference API does not have.
    #[error(
        "cannot sign an attestation: candidate {0} is behind an inference API, and an in-toto subject needs a file digest (the report itself is written)"
    )]
    RemoteCandidate(String),
}

/// File names inside an audit's output directory.
pub const SUMMARY_FILE: &str = "summary.md";
pub const HTML_FILE: &str = "report.html";
pub const ATTESTATION_FILE: &str = "attestation.dsse.json";
pub const TEST_RESULT_FILE: &str = "test-result.dsse.json";

/// Writes `summary.md` and `report.html` into `dir`.
pub fn write_human(report: &AuditReport, dir: &Path) -> Result<Vec<PathBuf>, RenderError> {
    let summary = dir.join(SUMMARY_FILE);
    zooaudit_formats::write_atomic(&summary, summary_markdown(report).as_bytes())?;
    let html = dir.join(HTML_FILE);
    zooaudit_formats::write_atomic(&html, report_html(report).as_bytes())?;
    Ok(vec![summary, html])
}

/// Signs the audit statement (and, with `test_result`, the test-result
/// statement) and writes the DSSE envelopes into `dir`.
pub fn write_attestations(
    report: &AuditReport,
    dir: &Path,
    key: &SecretKey,
    test_result: bool,
) -> Result<Vec<PathBuf>, RenderError> {
    if let Some(m) = report
        .models
        .iter()
        .find(|m| m.role == "candidate" && m.endpoint.is_some())
    {
        return Err(RenderError::RemoteCandidate(format!(
            "'{}' ({})",
            m.name,
            m.endpoint.as_deref().unwrap_or_default()
        )));
    }
    let mut written = Vec::new();
    let mut statements = vec![(ATTESTATION_FILE, audit_statement(report))];
    if test_result {
        statements.push((TEST_RESULT_FILE, test_result_statement(report)));
    }
    for (name, statement) in statements {
        let envelope = zooaudit_attest::sign_statement(&statement, key)?;
        let path = dir.join(name);
        zooaudit_formats::write_atomic(&path, envelope.to_json().as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

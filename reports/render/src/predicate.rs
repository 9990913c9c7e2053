//! The audit as in-toto statements.
//!
//! The predicate (type [`PREDICATE_TYPE`]) is the audit's result with
//! lowerCamelCase field names: candidates and references with their sha256s,
//! provenance, and (for references) why they count as independent; plugins
//! with versions and sha256s; the calibration data digest and split; the
//! translator and its held-out fidelity per pair direction; thresholds and
//! achieved clean FNMRs; per-trigger flag rates with 95 % intervals; the
//! verdict per candidate with its rule; start and finish times (RFC 3339).
//! Machine-local paths and cache statistics stay out of it. Documented in
//! docs/ATTESTATION.md.

use serde_json::{Map, Value, json};
use zooaudit_attest::statement::TestResult;
use zooaudit_attest::{ResourceDescriptor, Statement, TEST_RESULT_PREDICATE};
use zooaudit_audit::report::{AuditReport, ModelRecord, VerdictKind};

/// This project's predicate type; the trailing version is the predicate's
/// major version (a reader refuses another major).
pub const PREDICATE_TYPE: &str = "https://zooaudit.dev/attestation/pairing-audit/v1";
/// The predicate's `formatVersion` this build writes (reads any 1.x).
pub const PREDICATE_FORMAT: zooaudit_formats::FormatVersion =
    zooaudit_formats::Format::Predicate.current();

/// `snake_case` → `lowerCamelCase`.
fn camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut up = false;
    for c in key.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Renames every object key of `v` to lowerCamelCase, recursively.
pub fn camelize(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (camel(&k), camelize(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(camelize).collect()),
        other => other,
    }
}

fn to_value<T: serde::Serialize>(t: &T) -> Value {
    camelize(serde_json::to_value(t).unwrap_or(Value::Null))
}

fn model(m: &ModelRecord) -> Value {
    let mut v = json!({
        "name": m.name,
        "source": m.source,
        "digest": {"sha256": m.sha256},
        "dim": m.dim,
        "provenance": to_value(&m.provenance),
        "pinned": m.pinned,
    });
    if let Some(r) = &m.revision {
        v["revision"] = json!(r);
    }
    if let Some(s) = &m.selection {
        v["selection"] = json!(s);
    }
    if !m.model_signing_root.is_empty() {
        v["modelSigningRoot"] = json!({"sha256": m.model_signing_root});
    }
    if let Some(sig) = &m.signature {
        let p = &sig.verified;
        v["publisherSignature"] = json!({
            "format": "https://model_signing/signature/v1.0",
            "mode": p.mode,
            "signer": p.signer,
            "key": {"kind": p.key_kind, "sha256": p.key_sha256},
            "certificate": p.certificate_sha256.as_ref().map(|c| json!({
                "sha256": c,
                "root": p.root_subject,
            })),
            "covers": sig.covers,
            "rootDigest": {"sha256": p.root_sha256},
            "bundle": {"name": file_name(&sig.bundle), "sha256": sig.bundle_sha256},
            "files": p.files,
            "ignoredBySigner": p.ignored,
        });
    }
    v
}

/// The audit predicate.
pub fn predicate(report: &AuditReport) -> Value {
    let candidates: Vec<&ModelRecord> = report
        .models
        .iter()
        .filter(|m| m.role == "candidate")
        .collect();
    let references: Vec<Value> = report
        .models
        .iter()
        .filter(|m| m.role == "reference")
        .map(|r| {
            let mut v = model(r);
            let independence: Vec<Value> = candidates
                .iter()
                .map(|c| {
                    let i = r.provenance.independence_from(&c.provenance);
                    json!({"candidate": c.name, "independent": i.independent, "reasons": i.reasons})
                })
                .collect();
            v["independence"] = Value::Array(independence);
            v
        })
        .collect();
    let plugins: Vec<Value> = report
        .plugins
        .iter()
        .map(|p| {
            json!({"name": p.name, "version": p.version, "abiVersion": p.abi_version,
                   "digest": {"sha256": p.sha256}})
        })
        .collect();
    let d = &report.data;
    let mut data = json!({
        "digest": {"sha256": d.digest},
        "faces": d.faces,
        "labeled": d.labeled,
        "identities": d.identities,
        "split": to_value(&d.split),
        "augmentedFitCopies": d.augmented_fit_copies,
        "augment": to_value(&d.augment),
    });
    data["digestRule"] =
        json!("sha256 over the sorted per-image sha256s (lowercase hex, newline-separated)");
    json!({
        "formatVersion": PREDICATE_FORMAT.to_string(),
        "tool": to_value(&report.tool),
        "startedOn": report.started_at,
        "finishedOn": report.finished_at,
        "auditFile": {"digest": {"sha256": report.audit_sha256}},
        "reportFormatVersion": report.format_version,
        "candidates": candidates.iter().map(|m| model(m)).collect::<Vec<_>>(),
        "references": references,
        "plugins": plugins,
        "calibrationData": data,
        "triggers": {
            "suite": file_name(&report.triggers.suite),
            "digest": {"sha256": report.triggers.sha256},
            "triggers": to_value(&report.triggers.triggers),
        },
        "operatingPoints": report.operating_points,
        "primaryOperatingPoint": report.primary_operating_point,
        "pairs": to_value(&report.pairs),
        "results": to_value(&report.results),
        "identities": to_value(&report.identities),
        "responses": to_value(&report.responses),
        "evidence": to_value(&report.evidence),
        "families": to_value(&report.families),
        "culprits": to_value(&report.culprits),
        "verdicts": to_value(&report.verdicts),
        "staticScan": crate::scan::predicate(report),
        "warnings": report.warnings,
    })
}

/// The last component of a recorded path (machine-local directories stay out).
pub fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_string())
}

/// One subject per candidate by its file's sha256, and (format 1.3) one by
/// its OpenSSF model-signing root digest, and one by the signed directory's
/// root when the publisher signed a directory: a verifier holding a
/// model-signing bundle matches its subject to this statement's.
fn subjects(report: &AuditReport) -> Vec<ResourceDescriptor> {
    let mut out = Vec::new();
    for m in report.models.iter().filter(|m| m.role == "candidate") {
        out.push(ResourceDescriptor::sha256(&m.name, &m.source, &m.sha256));
        if !m.model_signing_root.is_empty() {
            out.push(ResourceDescriptor::sha256(
                &format!("{}#model-signing", m.name),
                &m.source,
                &m.model_signing_root,
            ));
        }
        if let Some(sig) = m.signature.as_ref().filter(|s| s.covers == "directory") {
            out.push(ResourceDescriptor::sha256(
                &format!("{}#model-signing-directory", m.name),
                "",
                &sig.verified.root_sha256,
            ));
        }
    }
    out
}

/// The audit statement: one subject per candidate.
pub fn audit_statement(report: &AuditReport) -> Statement {
    Statement::new(subjects(report), PREDICATE_TYPE, predicate(report))
}

/// The test-result v0.1 statement: PASSED (no backdoor indicated), WARNED
/// (inconclusive) or FAILED (indicated), with one test per candidate and the
/// alarms that failed it.
pub fn test_result_statement(report: &AuditReport) -> Statement {
    let (mut passed, mut warned, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for v in &report.verdicts {
        let name = format!("zooaudit-pairing-audit:{}", v.candidate);
        match v.verdict {
            VerdictKind::NoBackdoorIndicated => passed.push(name),
            VerdictKind::Inconclusive => warned.push(name),
            VerdictKind::BackdoorIndicated => {
                failed.push(name);
                failed.extend(v.alarms.iter().map(|a| format!("{}: {a}", v.candidate)));
            }
        }
    }
    let result = match report.overall() {
        VerdictKind::NoBackdoorIndicated => "PASSED",
        VerdictKind::Inconclusive => "WARNED",
        VerdictKind::BackdoorIndicated => "FAILED",
    };
    let configuration = vec![
        ResourceDescriptor::sha256("audit.toml", "", &report.audit_sha256),
        ResourceDescriptor::sha256(
            &file_name(&report.triggers.suite),
            "",
            &report.triggers.sha256,
        ),
    ];
    let tr = TestResult {
        result: result.to_string(),
        configuration,
        url: String::new(),
        passed_tests: passed,
        warned_tests: warned,
        failed_tests: failed,
    };
    Statement::new(
        subjects(report),
        TEST_RESULT_PREDICATE,
        serde_json::to_value(tr).unwrap_or(Value::Null),
    )
}

/// What `zooaudit verify` reads back from a verified statement: the
/// predicate parsed as its type says. Another `predicateType` is refused.
#[derive(Debug, Clone, PartialEq)]
pub enum PredicateSummary {
    /// This project's audit predicate ([`PREDICATE_TYPE`]).
    Audit(AuditHead),
    /// in-toto test-result v0.1.
    TestResult(TestResult),
}

/// The audit predicate's head: format, tool, times and verdicts.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditHead {
    pub format_version: String,
    pub tool: ToolHead,
    pub started_on: String,
    pub finished_on: String,
    pub verdicts: Vec<VerdictHead>,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct ToolHead {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct VerdictHead {
    pub candidate: String,
    pub verdict: VerdictKind,
}

/// Why a verified statement's predicate cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PredicateError {
    #[error(
        "predicateType {0}: not a zooaudit predicate (expected {PREDICATE_TYPE} or {TEST_RESULT_PREDICATE})"
    )]
    UnknownType(String),
    #[error("predicate: {0}")]
    Malformed(String),
    #[error("predicate: {0}")]
    Version(String),
}

impl PredicateSummary {
    /// Parses `statement`'s predicate by its type.
    pub fn of(statement: &Statement) -> Result<PredicateSummary, PredicateError> {
        let malformed = |e: serde_json::Error| PredicateError::Malformed(e.to_string());
        match statement.predicate_type.as_str() {
            PREDICATE_TYPE => {
                let head: AuditHead =
                    serde_json::from_value(statement.predicate.clone()).map_err(malformed)?;
                let version: zooaudit_manifest::FormatVersion = head
                    .format_version
                    .parse()
                    .map_err(PredicateError::Version)?;
                version
                    .check_readable_by(PREDICATE_FORMAT)
                    .map_err(PredicateError::Version)?;
                Ok(PredicateSummary::Audit(head))
            }
            TEST_RESULT_PREDICATE => serde_json::from_value(statement.predicate.clone())
                .map(PredicateSummary::TestResult)
                .map_err(malformed),
            other => Err(PredicateError::UnknownType(other.to_string())),
        }
    }
}

impl std::fmt::Display for PredicateSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PredicateSummary::Audit(h) => {
                for v in &h.verdicts {
                    writeln!(f, "verdict: {}: {}", v.candidate, v.verdict.as_str())?;
                }
                writeln!(
                    f,
                    "audited: {} → {} by {} {} (predicate {})",
                    h.started_on, h.finished_on, h.tool.name, h.tool.version, h.format_version
                )
            }
            PredicateSummary::TestResult(t) => writeln!(f, "test result: {}", t.result),
        }
    }
}

//! The static scan as an audit step (docs/SCAN.md): every model's file is
//! scanned after it is fetched and verified and *before* the runtime opens
//! it.
//!
//! How its findings count:
//! - a **file hazard** error (`external-data`, `dual-storage`,
//!   `size-mismatch`) refuses the model: the audit stops with a one-line
//!   error before the runtime reads the file (it could read outside the
//!   model's directory, or run other weights than the ones inspected);
//! - an **`input-pattern-gate`** error in a candidate's file is an alarm by
//!   itself (*backdoor indicated*, the candidate named as culprit by the
//!   scan), whatever pairing says; in a reference's file it is listed with
//!   the candidate's attributed alarms (that reference is unfit as a
//!   witness);
//! - a candidate file the scan cannot read (over its limits, not the ONNX
//!   it claims to be) makes a clean verdict *inconclusive*: the structural
//!   check is missing (fail closed);
//! - warnings and notes are reported, not counted.
//!
//! Files of adapters other than ONNX are recorded as not scanned.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use zooaudit_manifest::ModelManifest;
use zooaudit_scan::{Rule, Severity};

use crate::report::{Verdict, VerdictKind};
use crate::verdict::Culprit;
use crate::vocabulary::{self, fill};
use crate::{AuditError, ModelRole};

/// The rules whose errors refuse a model before it is opened.
pub const REFUSING_RULES: [Rule; 3] = [Rule::ExternalData, Rule::DualStorage, Rule::SizeMismatch];

/// One finding, as report.json and the attestation carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanFinding {
    pub rule: String,
    pub severity: String,
    pub message: String,
    pub graph: String,
    pub nodes: Vec<String>,
    pub tensors: Vec<String>,
}

/// Whether a model's file was scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScanStatus {
    Scanned,
    /// The adapter reads another format than ONNX.
    NotOnnx,
    /// The scan could not read the file (`error` says why).
    Unreadable,
}

/// The static scan of one model of the audit (report format 1.5).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanRecord {
    pub model: String,
    pub role: String,
    pub sha256: String,
    pub status: ScanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Highest severity first.
    #[serde(default)]
    pub findings: Vec<ScanFinding>,
    /// Decoding and rules, not reading or hashing the file.
    pub milliseconds: f64,
}

impl ScanRecord {
    pub fn count(&self, severity: &str) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    fn errors_of<'a>(&'a self, rules: &'a [Rule]) -> impl Iterator<Item = &'a ScanFinding> {
        self.findings.iter().filter(move |f| {
            f.severity == Severity::Error.as_str() && rules.iter().any(|r| r.id() == f.rule)
        })
    }

    /// The `input-pattern-gate` errors: a trigger detector in the graph.
    pub fn gates(&self) -> impl Iterator<Item = &ScanFinding> {
        self.errors_of(&[Rule::InputPatternGate])
    }

    /// One line for the verdict: what the gate is and its nodes (the first
    /// few; report.json has them all).
    pub fn gate_text(&self, f: &ScanFinding) -> String {
        const SHOWN: usize = 6;
        let mut nodes = f
            .nodes
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if f.nodes.len() > SHOWN {
            nodes.push_str(&format!(" and {} more", f.nodes.len() - SHOWN));
        }
        fill(
            vocabulary::ALARM_SCAN_GATE,
            &[("model", &self.model), ("nodes", &nodes)],
        )
    }
}

/// Whether the manifest's model is read as ONNX (the ONNX adapter, or a
/// `.onnx` file).
fn is_onnx(manifest: &ModelManifest, path: &Path) -> bool {
    manifest.model.adapter == "onnx"
        || path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Scans one resolved model file; refuses it (error naming the file and the
/// finding) when a file hazard makes opening it unsafe.
pub fn scan_model(
    manifest: &ModelManifest,
    role: ModelRole,
    path: &Path,
    sha256: &str,
) -> Result<ScanRecord, AuditError> {
    let mut record = ScanRecord {
        model: manifest.model.name.clone(),
        role: role.as_str().to_string(),
        sha256: sha256.to_string(),
        status: ScanStatus::Scanned,
        error: None,
        findings: Vec::new(),
        milliseconds: 0.0,
    };
    if !is_onnx(manifest, path) {
        record.status = ScanStatus::NotOnnx;
        record.error = Some(format!(
            "adapter '{}' reads another format; the static scan reads ONNX",
            manifest.model.adapter
        ));
        return Ok(record);
    }
    let t = Instant::now();
    match zooaudit_scan::scan_file(path, &zooaudit_scan::Options::default()) {
        Ok(scan) => {
            record.milliseconds = scan.elapsed.as_secs_f64() * 1e3;
            record.findings = scan
                .findings
                .iter()
                .map(|f| ScanFinding {
                    rule: f.rule.id().to_string(),
                    severity: f.severity.as_str().to_string(),
                    message: f.message.clone(),
                    graph: f.graph.clone(),
                    nodes: f.nodes.clone(),
                    tensors: f.tensors.clone(),
                })
                .collect();
        }
        Err(e) => {
            record.milliseconds = t.elapsed().as_secs_f64() * 1e3;
            record.status = ScanStatus::Unreadable;
            record.error = Some(e.to_string());
        }
    }
    if let Some(f) = record.errors_of(&REFUSING_RULES).next() {
        return Err(AuditError::file(
            path,
            format!(
                "static scan: {}: {}; the model ({}) is not opened (`zooaudit scan` lists every finding)",
                f.rule, f.message, manifest.model.name
            ),
        ));
    }
    Ok(record)
}

/// Applies the scan to the verdicts (see the module docs).
pub fn apply(records: &[ScanRecord], verdicts: &mut [Verdict], culprits: &mut Vec<Culprit>) {
    for r in records.iter().filter(|r| r.gates().next().is_some()) {
        culprits.push(Culprit {
            model: r.model.clone(),
            role: r.role.clone(),
            trigger: "(no trigger: the graph itself)".into(),
            identity: None,
            how: "static scan: input-pattern-gate".into(),
        });
    }
    for v in verdicts.iter_mut() {
        for r in records {
            let own = r.model == v.candidate;
            if own {
                for f in r.gates() {
                    v.alarms.push(r.gate_text(f));
                }
                if r.status == ScanStatus::Unreadable {
                    v.reasons.push(fill(
                        vocabulary::REASON_SCAN,
                        &[
                            ("model", &r.model),
                            ("error", &r.error.as_deref().unwrap_or("unknown error")),
                        ],
                    ));
                }
            } else if r.role == ModelRole::Reference.as_str() {
                for f in r.gates() {
                    v.attributed.push(fill(
                        vocabulary::ATTRIBUTED_SCAN,
                        &[("alarm", &r.gate_text(f))],
                    ));
                }
            }
        }
        v.verdict = VerdictKind::of(&v.alarms, &v.reasons);
    }
}

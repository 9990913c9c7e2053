//! The static scan of each model file (report format 1.5) as every output
//! shows it: a line per model on the terminal, a section of summary.md and
//! of report.html, and `staticScan` in the attestation predicate.

use std::fmt::Write as _;

use serde_json::{Value, json};
use zooaudit_audit::AuditReport;
use zooaudit_audit::scan::{ScanRecord, ScanStatus};

use crate::html::esc;

/// "2 errors, 1 warning, 29 notes", or "clean", or why not scanned.
pub fn outcome(r: &ScanRecord) -> String {
    match r.status {
        ScanStatus::NotOnnx => format!("not scanned: {}", r.error.as_deref().unwrap_or("")),
        ScanStatus::Unreadable => format!("could not scan: {}", r.error.as_deref().unwrap_or("")),
        ScanStatus::Scanned => {
            let parts: Vec<String> = [
                ("error", "errors"),
                ("warning", "warnings"),
                ("note", "notes"),
            ]
            .iter()
            .filter_map(|(one, many)| match r.count(one) {
                0 => None,
                1 => Some(format!("1 {one}")),
                n => Some(format!("{n} {many}")),
            })
            .collect();
            if parts.is_empty() {
                "no findings".into()
            } else {
                parts.join(", ")
            }
        }
    }
}

/// Findings above a note, one line each (notes are counted, not listed).
fn listed(r: &ScanRecord) -> impl Iterator<Item = &zooaudit_audit::scan::ScanFinding> {
    r.findings.iter().filter(|f| f.severity != "note")
}

/// Terminal lines.
pub fn console(s: &mut String, report: &AuditReport) {
    for r in &report.scan {
        let _ = writeln!(
            s,
            "static scan {} ({}): {} ({:.1} ms)",
            r.model,
            r.role,
            outcome(r),
            r.milliseconds
        );
        for f in listed(r) {
            let _ = writeln!(s, "  {} {}: {}", f.severity, f.rule, f.message);
        }
    }
}

/// summary.md's section.
pub fn summary(s: &mut String, report: &AuditReport) {
    if report.scan.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n## Static scan (docs/SCAN.md)\n");
    for r in &report.scan {
        let _ = writeln!(s, "- {} ({}): {}", r.model, r.role, outcome(r));
        for f in listed(r) {
            let _ = writeln!(s, "  - {} `{}`: {}", f.severity, f.rule, f.message);
        }
    }
}

/// report.html's section.
pub fn html(h: &mut String, report: &AuditReport) {
    if report.scan.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<h2>Static scan</h2><p>Each model file is scanned for graph backdoors and file hazards before it is opened (docs/SCAN.md). A backdoor trained into the weights leaves no structure to find; that is what pairing is for.</p>\
         <table><tr><th>model</th><th>role</th><th>outcome</th><th>severity</th><th>rule</th><th>finding</th><th>nodes</th></tr>"
    );
    for r in &report.scan {
        let shown: Vec<_> = listed(r).collect();
        let span = shown.len().max(1);
        let _ = write!(
            h,
            "<tr><td rowspan=\"{span}\">{}</td><td rowspan=\"{span}\">{}</td><td rowspan=\"{span}\">{}</td>",
            esc(&r.model),
            esc(&r.role),
            esc(&outcome(r))
        );
        if shown.is_empty() {
            let _ = write!(h, "<td></td><td></td><td></td><td></td></tr>");
        }
        for (i, f) in shown.iter().enumerate() {
            if i > 0 {
                h.push_str("<tr>");
            }
            let _ = write!(
                h,
                "<td class=\"{}\">{}</td><td><code>{}</code></td><td>{}</td><td><code>{}</code></td></tr>",
                if f.severity == "error" { "bad" } else { "" },
                esc(&f.severity),
                esc(&f.rule),
                esc(&f.message),
                esc(&f.nodes.join(", "))
            );
        }
    }
    h.push_str("</table>");
}

/// The predicate's `staticScan`: per model, its digest, the outcome and
/// every finding above a note (notes counted).
pub fn predicate(report: &AuditReport) -> Value {
    Value::Array(
        report
            .scan
            .iter()
            .map(|r| {
                json!({
                    "model": r.model,
                    "role": r.role,
                    "digest": {"sha256": r.sha256},
                    "status": r.status,
                    "error": r.error,
                    "counts": {"error": r.count("error"), "warning": r.count("warning"), "note": r.count("note")},
                    "findings": listed(r).map(|f| json!({
                        "rule": f.rule, "severity": f.severity, "message": f.message,
                        "graph": f.graph, "nodes": f.nodes, "tensors": f.tensors,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

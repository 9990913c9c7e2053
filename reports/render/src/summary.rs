//! `summary.md`: the verdict and the numbers that carry it, short enough for
//! a CI log or a pull-request comment.

use std::fmt::Write;

use zooaudit_audit::report::AuditReport;

use crate::direction;

fn pct(x: f64) -> String {
    crate::pct_with(x, " ")
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

pub fn summary_markdown(report: &AuditReport) -> String {
    let mut s = String::new();
    let op = report.primary_operating_point;
    verdicts_models_pairs(&mut s, report);
    flagged(&mut s, report, op);
    model_findings(&mut s, report);
    crate::scan::summary(&mut s, report);
    if !report.warnings.is_empty() {
        let _ = writeln!(s, "\n## Warnings\n");
        for w in &report.grouped_warnings() {
            let _ = writeln!(s, "- {w}");
        }
    }
    let _ = writeln!(
        s,
        "\nzooaudit {} · {} faces ({} fit / {} calibration / {} held-out, seed {}) · {} → {}",
        report.tool.version,
        report.data.faces,
        report.data.split.fit,
        report.data.split.calibration,
        report.data.split.heldout,
        report.data.split.seed,
        report.started_at,
        report.finished_at
    );
    s
}

/// The verdict of each candidate, the models and the pairs' fidelity.
fn verdicts_models_pairs(s: &mut String, report: &AuditReport) {
    let _ = writeln!(s, "# zooaudit: {}\n", report.overall());
    for v in &report.verdicts {
        let _ = writeln!(
            s,
            "- **{}**: {}. {}",
            v.candidate,
            v.verdict,
            v.reasons.join(" ")
        );
        for a in &v.alarms {
            let _ = writeln!(s, "  - alarm: {a}");
        }
        for a in &v.attributed {
            let _ = writeln!(s, "  - attributed: {a}");
        }
        let _ = writeln!(s, "  - rule: {}", v.rule);
    }
    let _ = writeln!(s, "\n## Models\n");
    let _ = writeln!(s, "| role | model | sha256 | source |\n|---|---|---|---|");
    for m in &report.models {
        let digest = if m.endpoint.is_some() {
            "none: behind an inference API, cannot be pinned by sha256".to_string()
        } else {
            format!("`{}…`", short(&m.sha256))
        };
        let _ = writeln!(s, "| {} | {} | {digest} | `{}` |", m.role, m.name, m.source);
    }
    let _ = writeln!(s, "\n## Pairs (held-out fidelity)\n");
    let _ = writeln!(
        s,
        "| pair | translator mean score | top-1 | mean rank | faces |\n|---|---|---|---|---|"
    );
    for p in &report.pairs {
        let _ = writeln!(
            s,
            "| {} | {:.3} | {:.3} | {:.2} | {} |",
            direction(&p.probe, &p.reference),
            p.fidelity.mean_cosine,
            p.fidelity.top1,
            p.fidelity.mean_rank,
            p.fidelity.samples
        );
    }
}

/// The triggered faces flagged at the primary operating point.
fn flagged(s: &mut String, report: &AuditReport, op: f64) {
    let _ = writeln!(
        s,
        "\n## Triggered faces flagged at clean FNMR {}\n",
        pct(op)
    );
    let _ = writeln!(
        s,
        "| pair | trigger | flagged | rate (95 % CI) | clean FNMR (95 % CI) | vs matched control |\n|---|---|---|---|---|---|"
    );
    for r in report
        .results
        .iter()
        .filter(|r| (r.target_fnmr - op).abs() < 1e-12)
    {
        let [flag, clean, vs_control, _] = crate::rate_cells(r, " ", " %");
        let _ = writeln!(
            s,
            "| {} | {} | {}/{} | {flag} | {clean} | {vs_control} |",
            direction(&r.probe, &r.reference),
            r.trigger,
            r.flagged,
            r.samples,
        );
    }
}

/// What single models do (the report's notes, each with why the verdict
/// does not follow it where it does not), and which model moves.
fn model_findings(s: &mut String, report: &AuditReport) {
    if !report.notes.is_empty() {
        let _ = writeln!(s, "\n## Notes\n");
        for n in &report.notes {
            let _ = writeln!(s, "- note: {n}");
        }
    }
    if !report.culprits.is_empty() {
        let _ = writeln!(s, "\n## Which model moves\n");
        for c in &report.culprits {
            let _ = writeln!(
                s,
                "- {} ({}) on {}{}: {}",
                c.model,
                c.role,
                c.trigger,
                c.identity
                    .as_ref()
                    .map_or(String::new(), |i| format!(", identity {i}")),
                c.how
            );
        }
    }
}

//! The audit as `zooaudit audit` prints it on a terminal: fidelity lines,
//! the rates table, each model alone, the identity test's five smallest
//! adjusted p-values, notes, who moves, and the verdicts. (summary.md and
//! report.html hold the same numbers for a reader; this is for a terminal.)

use std::fmt::Write as _;

use zooaudit_audit::AuditReport;

/// Everything `zooaudit audit` prints on stdout after an audit.
pub fn audit_text(report: &AuditReport) -> String {
    let mut s = String::new();
    pairs(&mut s, report);
    rates(&mut s, report);
    alone(&mut s, report);
    identity_test(&mut s, report);
    notes(&mut s, report);
    crate::scan::console(&mut s, report);
    verdicts(&mut s, report);
    s
}

fn pairs(s: &mut String, report: &AuditReport) {
    for p in &report.pairs {
        let _ = writeln!(
            s,
            "{} → {}: held-out mean score {:.3}, top-1 {:.3}, mean rank {:.2} ({} faces)",
            p.probe,
            p.reference,
            p.fidelity.mean_cosine,
            p.fidelity.top1,
            p.fidelity.mean_rank,
            p.fidelity.samples
        );
    }
}

fn rates(s: &mut String, report: &AuditReport) {
    let _ = writeln!(
        s,
        "{:<22} {:<22} {:<20} {:>6} {:>21} {:>21} {:>21} {:>21}",
        "PROBE",
        "REFERENCE",
        "TRIGGER",
        "TARGET",
        "FLAGGED (clean thr)",
        "CLEAN FNMR",
        "FLAGGED (ctrl thr)",
        "CONTROL"
    );
    let cell = |rate: f64, ci: [f64; 2]| format!("{rate:.3} [{:.3},{:.3}]", ci[0], ci[1]);
    for r in &report.results {
        let _ = writeln!(
            s,
            "{:<22} {:<22} {:<20} {:>6} {:>21} {:>21} {:>21} {:>21}",
            r.probe,
            r.reference,
            r.trigger,
            r.target_fnmr,
            cell(r.flag_rate, r.ci95),
            cell(r.clean_fnmr, r.clean_ci95),
            cell(r.flag_rate_vs_control, r.ci95_vs_control),
            cell(r.control_flag_rate, r.control_ci95)
        );
    }
}

fn alone(s: &mut String, report: &AuditReport) {
    let _ = writeln!(
        s,
        "{:<22} {:<20} {:>28} {:>12} {:>9} {:>15} {:>20}",
        "MODEL ALONE",
        "TRIGGER",
        "CLOSENESS clean/ctrl/trig",
        "CLOSER",
        "p",
        "SELF ctrl/trig",
        "RANK-1 clean/ctrl/trig"
    );
    for r in &report.responses {
        let rank1 = r.rank1.map_or("–".to_string(), |[a, b, c]| {
            format!("{a:.3}/{b:.3}/{c:.3}")
        });
        let _ = writeln!(
            s,
            "{:<22} {:<20} {:>28} {:>12} {:>9.1e} {:>15} {:>20}",
            r.model,
            r.trigger,
            format!(
                "{:.3}/{:.3}/{:.3}",
                r.clean_closeness, r.control_closeness, r.triggered_closeness
            ),
            format!("{}/{}", r.closer_than_control, r.compared),
            r.p_value,
            format!("{:.3}/{:.3}", r.control_self_cosine, r.self_cosine),
            rank1
        );
    }
}

fn identity_test(s: &mut String, report: &AuditReport) {
    let evidence = report.identity_evidence();
    if evidence.is_empty() {
        return;
    }
    let _ = writeln!(
        s,
        "{:<22} {:<20} {:<18} {:>8} {:>10} {:>11}   (max-T over {} tests; smallest 5)",
        "IDENTITY TEST",
        "TRIGGER",
        "IDENTITY",
        "FACES+",
        "MEAN σ",
        "ADJUSTED p",
        evidence.len()
    );
    for e in evidence.iter().take(5) {
        let _ = writeln!(
            s,
            "{:<22} {:<20} {:<18} {:>8} {:>10.2} {:>11.1e}",
            e.name,
            e.trigger,
            e.identity,
            format!("{}/{}", e.positive, e.faces),
            e.mean_evidence,
            e.p_adjusted
        );
    }
}

fn notes(s: &mut String, report: &AuditReport) {
    for n in &report.notes {
        let _ = writeln!(s, "note: {n}");
    }
    for c in &report.culprits {
        let identity = c
            .identity
            .as_ref()
            .map_or(String::new(), |i| format!(", identity {i}"));
        let _ = writeln!(
            s,
            "moves: {} ({}) on {}{identity} — {}",
            c.model, c.role, c.trigger, c.how
        );
    }
}

fn verdicts(s: &mut String, report: &AuditReport) {
    for v in &report.verdicts {
        let _ = writeln!(s, "verdict {}: {}", v.candidate, v.verdict);
        for a in &v.alarms {
            let _ = writeln!(s, "  alarm: {a}");
        }
        for a in &v.attributed {
            let _ = writeln!(s, "  attributed: {a}");
        }
        for r in &v.reasons {
            let _ = writeln!(s, "  reason: {r}");
        }
        let _ = writeln!(s, "  rule: {}", v.rule);
    }
}

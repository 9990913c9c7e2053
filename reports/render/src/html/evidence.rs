//! The report's evidence sections: triggered faces flagged per pair, the
//! per-identity test and which model moves, and each model alone.

use std::collections::BTreeSet;
use std::fmt::Write;

use zooaudit_audit::report::AuditReport;

use super::{esc, pct};
use crate::direction;

/// Flag rates of the triggered held-out faces, alarms in red.
pub(super) fn flagged_section(h: &mut String, report: &AuditReport, op: f64) {
    // Results.
    let alarms: BTreeSet<&str> = report
        .verdicts
        .iter()
        .flat_map(|v| v.alarms.iter().map(String::as_str))
        .collect();
    let _ = write!(
        h,
        "<h2>Triggered faces flagged</h2><p>Share of held-out faces carrying each trigger whose pair score falls below the threshold, with Clopper–Pearson 95&nbsp;% intervals; beside it the clean held-out FNMR at the same threshold, and the rate against the threshold calibrated on the trigger's matched control (its own cells or tiles in another arrangement).</p>\
         <table><tr><th>pair</th><th>trigger</th><th>target FNMR</th><th>threshold</th><th>flagged</th><th>flag rate [95&nbsp;%]</th><th>clean FNMR [95&nbsp;%]</th><th>vs control [95&nbsp;%]</th><th>control [95&nbsp;%]</th></tr>"
    );
    for r in &report.results {
        let flagged_row = alarms
            .iter()
            .any(|a| a.contains(&r.trigger) && a.contains(&r.probe))
            && (r.target_fnmr - op).abs() < 1e-12;
        let [flag, clean, vs_control, control] = crate::rate_cells(r, "&nbsp;", "");
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{:.4}</td><td class=\"num\">{}/{}</td><td class=\"num\">{flag}</td><td class=\"num\">{clean}</td><td class=\"num\">{vs_control}</td><td class=\"num\">{control}</td></tr>",
            if flagged_row { " class=\"alarm\"" } else { "" },
            esc(&direction(&r.probe, &r.reference)),
            esc(&r.trigger),
            pct(r.target_fnmr),
            r.threshold,
            r.flagged,
            r.samples,
        );
    }
    let _ = write!(h, "</table>");
}

/// The verdict's per-identity test (format 1.4), or the McNemar rows of
/// older reports; and which model moves.
pub(super) fn identities_section(h: &mut String, report: &AuditReport, op: f64) {
    let ev = report.identity_evidence();
    if ev.is_empty() {
        let mut worst: Vec<_> = report.identities.iter().collect();
        worst.sort_by(|a, b| a.p_value.total_cmp(&b.p_value));
        let _ = write!(
            h,
            "<h2>Identities</h2><p>Per labelled identity at clean FNMR {}: triggered faces flagged, against the same faces with the matched control (exact one-sided McNemar test, Bonferroni-corrected over {} tests). The ten smallest p-values:</p>\
             <table><tr><th>pair</th><th>trigger</th><th>identity</th><th>flagged</th><th>control flagged</th><th>p</th><th>p (Bonferroni)</th></tr>",
            pct(op),
            report.identities.len()
        );
        for r in worst.iter().take(10) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td class=\"num\">{:.3e}</td><td class=\"num\">{:.3}</td></tr>",
                esc(&direction(&r.probe, &r.reference)),
                esc(&r.trigger),
                esc(&r.identity),
                r.flagged,
                r.samples,
                r.clean_flagged,
                r.p_value,
                r.p_bonferroni
            );
        }
        let _ = write!(h, "</table>");
        return;
    }
    let tests: usize = report
        .families
        .iter()
        .filter(|f| f.subject == zooaudit_audit::evidence::Subject::Candidate)
        .map(|f| f.tests)
        .sum();
    let _ = write!(
        h,
        "<h2>Identities</h2><p>The verdict's per-identity test: per labelled identity and trigger, each face's drop in agreement with the trigger against its matched control (σ units of the pair's noise, every reference and direction averaged, plus 2 per face the candidate alone identifies as someone else), less the population's median; Westfall–Young max-T over {tests} tests with one random sign flip per face shared by all. The ten smallest adjusted p-values; rows in red are alarms unless attributed to another model:</p>\
         <table><tr><th>candidate</th><th>trigger</th><th>identity</th><th>faces with evidence</th><th>mean evidence (σ)</th><th>statistic</th><th>adjusted p</th></tr>"
    );
    let alarms: Vec<&str> = report
        .verdicts
        .iter()
        .flat_map(|v| v.alarms.iter().chain(&v.attributed).map(String::as_str))
        .collect();
    for e in ev.iter().take(10) {
        let alarm = alarms.iter().any(|a| {
            a.contains(&format!(
                "{} {}: identity '{}'",
                e.name, e.trigger, e.identity
            ))
        });
        let _ = write!(
            h,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.2}</td><td class=\"num\">{:.1e}</td></tr>",
            if alarm { " class=\"alarm\"" } else { "" },
            esc(&e.name),
            esc(&e.trigger),
            esc(&e.identity),
            e.positive,
            e.faces,
            e.mean_evidence,
            e.statistic,
            e.p_adjusted
        );
    }
    let _ = write!(h, "</table>");
    if !report.culprits.is_empty() {
        let _ = write!(
            h,
            "<h2>Which model moves</h2><table><tr><th>model</th><th>role</th><th>trigger</th><th>identity</th><th>how</th></tr>"
        );
        for c in &report.culprits {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&c.model),
                esc(&c.role),
                esc(&c.trigger),
                esc(c.identity.as_deref().unwrap_or("all (aggregate)")),
                esc(&c.how)
            );
        }
        let _ = write!(h, "</table>");
    }
}

/// Each model alone: closeness of triggered faces, and identities one
/// model sends to someone else.
pub(super) fn responses_section(h: &mut String, report: &AuditReport) {
    // Each model alone.
    let responders = report.pattern_responders(zooaudit_audit::response::RESPONSE_ALPHA);
    if !report.responses.is_empty() {
        let _ = write!(
            h,
            "<h2>Each model alone</h2><p>Which model answers a trigger: on the held-out faces, a face's <em>closeness</em> is the mean cosine of its embedding to the other people's. A backdoor that sends triggered faces to one identity draws them together beyond the trigger's matched control; an occlusion does not. A row in red gains at least 0.05 closeness over its control, with the sign test over clusters (an identity's faces together, each unlabelled face alone) Bonferroni-significant over the rows. A diagnostic beside the verdict; it also names which model moves when one reference cannot.</p>\
             <table><tr><th>model</th><th>trigger</th><th>closeness clean</th><th>with control</th><th>with trigger</th><th>faces closer than with control</th><th>p (clusters)</th><th>self-cosine control / trigger</th><th>rank-1 clean / control / trigger</th></tr>"
        );
        for r in &report.responses {
            let hit = responders.iter().any(|x| std::ptr::eq(*x, r));
            let rank1 = r.rank1.map_or("–".to_string(), |[a, b, c]| {
                format!("{a:.3} / {b:.3} / {c:.3}")
            });
            let _ = write!(
                h,
                "<tr{}><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{}/{}</td><td class=\"num\">{:.1e}</td><td class=\"num\">{:.3} / {:.3}</td><td class=\"num\">{}</td></tr>",
                if hit { " class=\"alarm\"" } else { "" },
                esc(&r.model),
                esc(&r.trigger),
                r.clean_closeness,
                r.control_closeness,
                r.triggered_closeness,
                r.closer_than_control,
                r.compared,
                r.cluster_p_value,
                r.control_self_cosine,
                r.self_cosine,
                rank1
            );
        }
        let _ = write!(h, "</table>");
        let switched = report.identity_switches(zooaudit_audit::response::RESPONSE_ALPHA);
        if !switched.is_empty() {
            let _ = write!(
                h,
                "<p>Identities a model alone sends to someone else: triggered faces identified (rank-1 against the clean labelled gallery) as another identity, against the same faces with the matched control: at least half of the identity's faces beyond the control, and the model's max-T sign-flip test significant (adjusted p):</p>\
                 <table><tr><th>model</th><th>trigger</th><th>identity</th><th>identified as</th><th>faces</th><th>switched with control</th><th>p</th></tr>"
            );
            for (r, sw) in switched {
                let _ = write!(
                    h,
                    "<tr class=\"alarm\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}/{}</td><td class=\"num\">{}</td><td class=\"num\">{:.1e}</td></tr>",
                    esc(&r.model),
                    esc(&r.trigger),
                    esc(&sw.identity),
                    esc(&sw.identified_as),
                    sw.to_top,
                    sw.faces,
                    sw.control_switched,
                    report.switch_p(r, sw)
                );
            }
            let _ = write!(h, "</table>");
        }
    }
    if !report.notes.is_empty() {
        let _ = write!(h, "<h3>Notes</h3><ul id=\"notes\">");
        for n in &report.notes {
            let _ = write!(h, "<li>note: {}</li>", esc(n));
        }
        let _ = write!(h, "</ul>");
    }
}

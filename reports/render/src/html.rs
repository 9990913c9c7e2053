//! `report.html`: one self-contained file (inline CSS and SVG; no scripts,
//! fonts or network) with the verdict on top, the models and their digests
//! and provenance, translator fidelity, flag rates with intervals per trigger
//! and operating point, and the plots.

mod evidence;
mod figures;

use std::fmt::Write;

use zooaudit_audit::report::{AuditReport, VerdictKind};

use crate::direction;

/// HTML-escapes text for element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn pct(x: f64) -> String {
    crate::pct_with(x, "&nbsp;")
}

fn ci(c: [f64; 2]) -> String {
    crate::ci_with(c, "&nbsp;", "")
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa}\
main{max-width:1100px;margin:0 auto;padding:0 20px 40px}\
header.verdict{padding:22px 20px;color:#fff}\
header.verdict h1{margin:0;font-size:28px;max-width:1100px;margin:0 auto}\
header.verdict p{margin:6px auto 0;max-width:1100px}\
.v-no-backdoor-indicated{background:#1b7e5a}.v-backdoor-indicated{background:#b42318}.v-inconclusive{background:#a15c07}\
table{border-collapse:collapse;margin:10px 0 18px;font-size:13px;background:#fff}\
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:12px;word-break:break-all}\
tr.alarm td{background:#fde8e7}td.bad{background:#fde8e7;font-weight:600}\
figure{display:inline-block;margin:8px;background:#fff;border:1px solid #ddd}\
figcaption{font-size:12px;padding:4px 8px;color:#555}\
h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}";

fn verdict_class(v: VerdictKind) -> &'static str {
    match v {
        VerdictKind::NoBackdoorIndicated => "v-no-backdoor-indicated",
        VerdictKind::BackdoorIndicated => "v-backdoor-indicated",
        VerdictKind::Inconclusive => "v-inconclusive",
    }
}

pub fn report_html(report: &AuditReport) -> String {
    let op = report.primary_operating_point;
    let mut h = String::new();
    header(&mut h, report);
    verdict_section(&mut h, report);
    models_section(&mut h, report);
    crate::scan::html(&mut h, report);
    pairs_section(&mut h, report);
    evidence::flagged_section(&mut h, report, op);
    evidence::identities_section(&mut h, report, op);
    evidence::responses_section(&mut h, report);
    figures::plots_section(&mut h, report, op);
    audit_section(&mut h, report);
    h.push_str("</table></main></body></html>\n");
    h
}

/// The document head and the verdict banner.
fn header(h: &mut String, report: &AuditReport) {
    let overall = report.overall();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>zooaudit: {}</title><style>{STYLE}</style></head><body>",
        overall.as_str()
    );
    let _ = write!(
        h,
        "<header class=\"verdict {}\" id=\"verdict\" data-verdict=\"{}\"><h1>{}</h1>",
        verdict_class(overall),
        overall.as_str(),
        overall.as_str()
    );
    for v in &report.verdicts {
        let _ = write!(
            h,
            "<p><strong>{}</strong>: {}. {}</p>",
            esc(&v.candidate),
            v.verdict.as_str(),
            esc(&v.reasons.join(" "))
        );
    }
    let _ = write!(h, "</header><main>");
}

/// Each candidate's verdict with its rule, alarms and attributed alarms.
fn verdict_section(h: &mut String, report: &AuditReport) {
    // Verdicts in full.
    let _ = write!(h, "<h2>Verdict</h2>");
    for v in &report.verdicts {
        let _ = write!(
            h,
            "<p><strong>{}</strong> — rule: {}</p>",
            esc(&v.candidate),
            esc(&v.rule)
        );
        if !v.alarms.is_empty() || !v.attributed.is_empty() {
            let _ = write!(h, "<ul>");
            for a in &v.alarms {
                let _ = write!(h, "<li>alarm: {}</li>", esc(a));
            }
            for a in &v.attributed {
                let _ = write!(h, "<li>attributed: {}</li>", esc(a));
            }
            let _ = write!(h, "</ul>");
        }
    }
}

/// The models: role, digest, source and provenance (with independence).
fn models_section(h: &mut String, report: &AuditReport) {
    // Models.
    let _ = write!(
        h,
        "<h2>Models</h2><table><tr><th>role</th><th>model</th><th>dim</th><th>sha256</th><th>source</th><th>provenance</th></tr>"
    );
    let candidates: Vec<_> = report
        .models
        .iter()
        .filter(|m| m.role == "candidate")
        .collect();
    for m in &report.models {
        let p = &m.provenance;
        let mut prov = format!(
            "publisher: {}<br>architecture: {}<br>training data: {}<br>license: {}<br>published in: {}",
            esc(&p.publisher),
            esc(&p.architecture),
            esc(&p.training_data),
            esc(&p.license),
            esc(&p.published_in)
        );
        if let Some(sel) = &m.selection {
            let _ = write!(prov, "<br><em>selection:</em> {}", esc(sel));
        }
        if m.role == "reference" {
            for c in &candidates {
                let i = p.independence_from(&c.provenance);
                let _ = write!(
                    prov,
                    "<br><em>{} of {}:</em> {}",
                    if i.independent {
                        "independent"
                    } else {
                        "NOT independent"
                    },
                    esc(&c.name),
                    esc(&i.summary())
                );
            }
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{prov}</td></tr>",
            esc(&m.role),
            esc(&m.name),
            m.dim,
            esc(&m.sha256),
            esc(&source_cell(m))
        );
    }
    let _ = write!(h, "</table>");
}

/// Each pair direction: translator, held-out fidelity and thresholds.
fn pairs_section(h: &mut String, report: &AuditReport) {
    // Pairs.
    let _ = write!(
        h,
        "<h2>Pairs</h2><table><tr><th>pair (probe → reference)</th><th>translator</th><th>held-out mean score</th><th>top-1</th><th>mean rank</th><th>faces</th><th>thresholds (target FNMR → threshold, achieved held-out FNMR [95&nbsp;% CI])</th></tr>"
    );
    for p in &report.pairs {
        let method = p.fit.get("method").and_then(|m| m.as_str()).unwrap_or("?");
        let mut th = String::new();
        for (t, r) in p.thresholds.iter().zip(&p.clean_fnmr) {
            let _ = write!(
                th,
                "{} → {:.4}, {} {}{}<br>",
                pct(t.target_fnmr),
                t.threshold,
                pct(r.rate),
                ci(r.ci95),
                if t.supported {
                    ""
                } else {
                    " (sample too small)"
                }
            );
        }
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.2}</td><td class=\"num\">{}</td><td>{th}</td></tr>",
            esc(&direction(&p.probe, &p.reference)),
            esc(method),
            p.fidelity.mean_cosine,
            p.fidelity.top1,
            p.fidelity.mean_rank,
            p.fidelity.samples
        );
    }
    let _ = write!(h, "</table>");
}

/// Warnings, then the provenance of the audit itself (the table is closed
/// by the caller).
fn audit_section(h: &mut String, report: &AuditReport) {
    if !report.warnings.is_empty() {
        let _ = write!(h, "<h2>Warnings</h2><ul>");
        for w in &report.grouped_warnings() {
            let _ = write!(h, "<li>{}</li>", esc(w));
        }
        let _ = write!(h, "</ul>");
    }
    // Provenance of the audit itself.
    let d = &report.data;
    let _ = write!(
        h,
        "<h2>Audit</h2><table>\
         <tr><th>tool</th><td>{} {}</td></tr>\
         <tr><th>started / finished</th><td>{} / {}</td></tr>\
         <tr><th>audit file sha256</th><td><code>{}</code></td></tr>\
         <tr><th>trigger suite</th><td>{} <code>{}</code></td></tr>\
         <tr><th>faces</th><td>{} ({} labelled, {} identities); split seed {}: {} fit, {} calibration, {} held-out; {} augmented fit copies; data digest <code>{}</code></td></tr>",
        esc(&report.tool.name),
        esc(&report.tool.version),
        esc(&report.started_at),
        esc(&report.finished_at),
        esc(&report.audit_sha256),
        esc(&crate::predicate::file_name(&report.triggers.suite)),
        esc(&report.triggers.sha256),
        d.faces,
        d.labeled,
        d.identities,
        d.split.seed,
        d.split.fit,
        d.split.calibration,
        d.split.heldout,
        d.augmented_fit_copies,
        esc(&d.digest)
    );
    for p in &report.plugins {
        let _ = write!(
            h,
            "<tr><th>plugin {}</th><td>{} (ABI {}) <code>{}</code></td></tr>",
            esc(&p.name),
            esc(&p.version),
            esc(&p.abi_version),
            esc(&p.sha256)
        );
    }
}

/// A model's source with its resolved commit and whether it was pinned.
fn source_cell(m: &zooaudit_audit::ModelRecord) -> String {
    let mut s = m.source.clone();
    if let Some(r) = &m.revision {
        s.push_str(&format!(" @ commit {r}"));
    }
    if m.endpoint.is_some() {
        s.push_str(" (REMOTE: a model behind an inference API cannot be pinned by sha256)");
    } else if !m.pinned {
        s.push_str(" (NOT PINNED: fetched with --allow-unpinned)");
    }
    s
}

//! `report.html`: one self-contained file (inline CSS and SVG; no scripts,
//! fonts or network) with the verdict on top, the models and their digests
//! and provenance, translator fidelity, flag rates with intervals per trigger
//! and operating point, and the plots.

use std::collections::BTreeSet;
use std::fmt::Write;

use zooaudit_audit::report::{AuditReport, ScoreRow, VerdictKind};

use crate::plots::{self, CONTROL, GENUINE, PALETTE, POISONED, Series, ZEI};
use crate::{direction, verdict_label};

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
tr.alarm td{background:#fde8e7}\
figure{display:inline-block;margin:8px;background:#fff;border:1px solid #ddd}\
figcaption{font-size:12px;padding:4px 8px;color:#555}\
h2{margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}";

/// The scores of one kind (and trigger) for one pair direction.
fn scores(
    rows: &[ScoreRow],
    probe: &str,
    reference: &str,
    kind: &str,
    trigger: Option<&str>,
) -> Vec<f32> {
    rows.iter()
        .filter(|r| {
            r.probe == probe
                && r.reference == reference
                && r.kind == kind
                && trigger.is_none_or(|t| r.trigger == t)
        })
        .map(|r| r.score)
        .collect()
}

fn verdict_class(v: VerdictKind) -> &'static str {
    match v {
        VerdictKind::NoBackdoorIndicated => "v-no-backdoor-indicated",
        VerdictKind::BackdoorIndicated => "v-backdoor-indicated",
        VerdictKind::Inconclusive => "v-inconclusive",
    }
}

fn figure(out: &mut String, svg: Result<String, plots::PlotError>, caption: &str) {
    match svg {
        Ok(svg) => {
            let _ = write!(
                out,
                "<figure class=\"plot\">{svg}<figcaption>{}</figcaption></figure>",
                esc(caption)
            );
        }
        Err(e) => {
            let _ = write!(out, "<p class=\"plot-error\">{}</p>", esc(&e.to_string()));
        }
    }
}

pub fn report_html(report: &AuditReport) -> String {
    let overall = report.overall();
    let op = report.primary_operating_point;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>zooaudit: {}</title><style>{STYLE}</style></head><body>",
        verdict_label(overall)
    );
    let _ = write!(
        h,
        "<header class=\"verdict {}\" id=\"verdict\" data-verdict=\"{}\"><h1>{}</h1>",
        verdict_class(overall),
        esc(&serde_json::to_value(overall)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()),
        verdict_label(overall)
    );
    for v in &report.verdicts {
        let _ = write!(
            h,
            "<p><strong>{}</strong>: {}. {}</p>",
            esc(&v.candidate),
            verdict_label(v.verdict).to_lowercase(),
            esc(&v.reasons.join(" "))
        );
    }
    let _ = write!(h, "</header><main>");
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
    identities_section(&mut h, report, op);
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
    // Plots.
    let _ = write!(h, "<h2>Score distributions and DET curves</h2>");
    for p in &report.pairs {
        let dir = direction(&p.probe, &p.reference);
        let genuine = scores(&report.scores, &p.probe, &p.reference, "genuine", None);
        let zei = scores(&report.scores, &p.probe, &p.reference, "zei", None);
        let threshold = p
            .thresholds
            .iter()
            .find(|t| (t.target_fnmr - op).abs() < 1e-12)
            .map(|t| {
                (
                    t.threshold,
                    format!("threshold at clean FNMR {:.1} %", 100.0 * op),
                )
            });
        let _ = write!(h, "<h3>{}</h3>", esc(&dir));
        let poisoned: Vec<(String, Vec<f32>)> = report
            .triggers
            .triggers
            .iter()
            .map(|t| {
                let s = scores(
                    &report.scores,
                    &p.probe,
                    &p.reference,
                    "poisoned",
                    Some(&t.name),
                );
                (t.name.clone(), s)
            })
            .collect();
        let mut det_series = vec![Series {
            label: "zero-effort impostors".into(),
            scores: &zei,
            color: ZEI,
        }];
        for (i, (name, s)) in poisoned.iter().enumerate() {
            det_series.push(Series {
                label: format!("poisoned: {name}"),
                scores: s,
                color: PALETTE[i % PALETTE.len()],
            });
        }
        figure(
            &mut h,
            plots::det(&format!("DET: {dir}"), &genuine, &det_series),
            &format!(
                "DET curves of {dir}: clean held-out faces against zero-effort impostors and against each trigger's poisoned faces, normal-deviate axes."
            ),
        );
        for (name, s) in &poisoned {
            let control = scores(
                &report.scores,
                &p.probe,
                &p.reference,
                "control",
                Some(name),
            );
            let series = [
                Series {
                    label: "genuine (clean)".into(),
                    scores: &genuine,
                    color: GENUINE,
                },
                Series {
                    label: "zero-effort impostor".into(),
                    scores: &zei,
                    color: ZEI,
                },
                Series {
                    label: format!("poisoned: {name}"),
                    scores: s,
                    color: POISONED,
                },
                Series {
                    label: "matched control".into(),
                    scores: &control,
                    color: CONTROL,
                },
            ];
            figure(
                &mut h,
                plots::histogram(&format!("{dir} · {name}"), &series, threshold.clone()),
                &format!("Pair scores of {dir} with trigger {name}."),
            );
        }
    }
    if !report.warnings.is_empty() {
        let _ = write!(h, "<h2>Warnings</h2><ul>");
        for w in &report.warnings {
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
    h.push_str("</table></main></body></html>\n");
    h
}

/// A model's source with its resolved commit and whether it was pinned.
fn source_cell(m: &zooaudit_audit::ModelRecord) -> String {
    let mut s = m.source.clone();
    if let Some(r) = &m.revision {
        s.push_str(&format!(" @ commit {r}"));
    }
    if !m.pinned {
        s.push_str(" (NOT PINNED: fetched with --allow-unpinned)");
    }
    s
}

/// The verdict's per-identity test (format 1.4), or the McNemar rows of
/// older reports; and which model moves.
fn identities_section(h: &mut String, report: &AuditReport, op: f64) {
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

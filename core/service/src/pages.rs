//! What a person sees: the dashboard (the zoo's models and their latest
//! verdicts, the queue and its workers, recent audits with their errors),
//! one page per audit (its artifacts), one per model name (its history
//! across revisions), and the badge a model card embeds. Server-rendered
//! HTML and SVG; no JavaScript.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use zooaudit_auditdb::{AuditRow, now_ms};

use crate::server::AppState;

/// Escapes text for HTML and XML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `YYYY-MM-DD HH:MM` (UTC) of Unix milliseconds.
pub fn date(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}td,th{border:1px solid #ccc;padding:0.25em 0.6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-size:0.9em}.backdoor-indicated{color:#b00020;font-weight:bold}
.no-backdoor-indicated{color:#1b7f2a}.inconclusive{color:#a66b00}.failed{color:#b00020}.error{color:#b00020;white-space:pre-wrap}";

fn page(title: &str, body: &str) -> Response {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    ))
    .into_response()
}

fn unavailable(e: impl std::fmt::Display) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the registry is unavailable: {e}"),
    )
        .into_response()
}

fn verdict_cell(a: &AuditRow) -> String {
    match (&a.verdict, a.state.as_str()) {
        (Some(v), _) => format!("<span class=\"{0}\">{0}</span>", esc(v)),
        (None, "failed") => "<span class=\"failed\">failed</span>".into(),
        (None, s) => esc(s),
    }
}

fn short(s: &str) -> String {
    esc(&s[..s.len().min(12)])
}

fn audit_rows(audits: &[AuditRow]) -> String {
    let mut t = String::from(
        "<table><tr><th>audit</th><th>candidate</th><th>sha256</th><th>state</th><th>verdict</th><th>attempts</th><th>worker</th><th>submitted</th><th>error</th></tr>",
    );
    for a in audits {
        let _ = write!(
            t,
            "<tr><td><a href=\"/audits/{id}\">{id}</a></td><td><a href=\"/zoo/{n}\">{n}</a>{rev}</td><td><code>{sha}</code></td><td>{state}</td><td>{v}</td><td>{att}/{max}</td><td>{w}</td><td>{at}</td><td class=\"error\">{err}</td></tr>",
            id = esc(&a.id),
            n = esc(&a.candidate_name),
            rev = a
                .candidate_revision
                .as_deref()
                .map(|r| format!(" @ <code>{}</code>", short(r)))
                .unwrap_or_default(),
            sha = a.candidate_sha256.as_deref().map(short).unwrap_or_default(),
            state = esc(&a.state),
            v = verdict_cell(a),
            att = a.attempts,
            max = a.max_attempts,
            w = esc(a.worker.as_deref().unwrap_or("")),
            at = date(a.submitted_at),
            err = esc(a.error.as_deref().unwrap_or("")),
        );
    }
    t.push_str("</table>");
    t
}

pub(crate) async fn dashboard(State(st): State<Arc<AppState>>) -> Response {
    let (counts, workers, audits) = match (
        st.db.counts().await,
        st.db.workers().await,
        st.db.audits(None, 200).await,
    ) {
        (Ok(c), Ok(w), Ok(a)) => (c, w, a),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return unavailable(e),
    };
    let mut b = format!(
        "<h1>{} — zooaudit</h1><h2>Models</h2>",
        esc(if st.intake.zoo.name.is_empty() {
            "zoo"
        } else {
            &st.intake.zoo.name
        })
    );
    // The latest finished audit per candidate name and sha256.
    let mut latest: BTreeMap<(String, String), &AuditRow> = BTreeMap::new();
    for a in audits.iter().filter(|a| a.state == "done") {
        let key = (
            a.candidate_name.clone(),
            a.candidate_sha256.clone().unwrap_or_default(),
        );
        latest.entry(key).or_insert(a);
    }
    b.push_str("<table><tr><th>model</th><th>sha256</th><th>latest verdict</th><th>references</th><th>finished</th><th>badge</th></tr>");
    for ((name, sha), a) in &latest {
        let refs: Vec<String> = serde_json::from_str::<Vec<serde_json::Value>>(&a.refs)
            .unwrap_or_default()
            .iter()
            .filter_map(|r| r["name"].as_str().map(esc))
            .collect();
        let _ = write!(
            b,
            "<tr><td><a href=\"/zoo/{n}\">{n}</a></td><td><code>{s}</code></td><td><a href=\"/audits/{id}\">{v}</a></td><td>{r}</td><td>{f}</td><td><img alt=\"badge\" src=\"/v1/badge/{sha}.svg\"></td></tr>",
            n = esc(name),
            s = short(sha),
            id = esc(&a.id),
            v = verdict_cell(a),
            r = refs.join(", "),
            f = a.finished_at.map(date).unwrap_or_default(),
            sha = esc(sha),
        );
    }
    b.push_str("</table>");
    let _ = write!(
        b,
        "<h2>Queue</h2><p>queued {} · running {} · done {} · failed {}</p>",
        counts.queued, counts.running, counts.done, counts.failed
    );
    b.push_str("<table><tr><th>worker</th><th>state</th><th>current audit</th><th>done</th><th>failed</th><th>last seen</th></tr>");
    let now = now_ms();
    for w in &workers {
        let _ = write!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} s ago</td></tr>",
            esc(&w.name),
            esc(&w.state),
            esc(w.current.as_deref().unwrap_or("")),
            w.done,
            w.failed,
            (now - w.last_seen).max(0) / 1000
        );
    }
    b.push_str("</table>");
    let failed: Vec<AuditRow> = audits
        .iter()
        .filter(|a| a.state == "failed")
        .cloned()
        .collect();
    if !failed.is_empty() {
        b.push_str("<h2>Failed audits</h2>");
        b.push_str(&audit_rows(&failed));
    }
    b.push_str("<h2>Recent audits</h2>");
    b.push_str(&audit_rows(&audits));
    page("zooaudit dashboard", &b)
}

pub(crate) async fn audit_page(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Response {
    let a = match st.db.audit(&id).await {
        Ok(Some(a)) => a,
        Ok(None) => return (StatusCode::NOT_FOUND, format!("no audit {id}")).into_response(),
        Err(e) => return unavailable(e),
    };
    let artifacts = match st.db.artifacts(&id).await {
        Ok(x) => x,
        Err(e) => return unavailable(e),
    };
    let mut b = format!(
        "<p><a href=\"/\">dashboard</a></p><h1>Audit {}</h1>",
        esc(&a.id)
    );
    b.push_str(&audit_rows(std::slice::from_ref(&a)));
    let _ = write!(
        b,
        "<table><tr><th>source</th><td><code>{}</code></td></tr><tr><th>references</th><td><code>{}</code></td></tr><tr><th>audit file</th><td><code>{}</code></td></tr><tr><th>trigger suite</th><td><code>{}</code></td></tr><tr><th>zooaudit</th><td>{}</td></tr><tr><th>rule</th><td>{}</td></tr></table>",
        esc(&a.candidate_source),
        esc(&a.refs),
        short(&a.audit_digest),
        short(&a.suite_digest),
        esc(&a.tool_version),
        esc(a.rule.as_deref().unwrap_or("")),
    );
    b.push_str(
        "<h2>Artifacts</h2><table><tr><th>file</th><th>type</th><th>bytes</th><th>sha256</th></tr>",
    );
    for x in &artifacts {
        let _ = write!(
            b,
            "<tr><td><a href=\"/v1/audits/{id}/{n}\">{n}</a></td><td>{t}</td><td>{s}</td><td><code>{h}</code></td></tr>",
            id = esc(&a.id),
            n = esc(&x.name),
            t = esc(&x.media_type),
            s = x.size,
            h = short(&x.sha256)
        );
    }
    b.push_str("</table>");
    page(&format!("audit {}", a.id), &b)
}

pub(crate) async fn model_page(
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    let audits = match st.db.audits_named(&name).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let b = format!(
        "<p><a href=\"/\">dashboard</a></p><h1>{}</h1><p>Every audit of this model, newest first; each revision has its own sha256.</p>{}",
        esc(&name),
        audit_rows(&audits)
    );
    page(&name, &b)
}

/// `GET /v1/badge/{sha256}.svg`: the latest finished verdict and its date.
pub(crate) async fn badge(State(st): State<Arc<AppState>>, Path(file): Path<String>) -> Response {
    let Some(sha) = file.strip_suffix(".svg").map(str::to_lowercase) else {
        return (StatusCode::NOT_FOUND, "badges are /v1/badge/<sha256>.svg").into_response();
    };
    let audits = match st.db.audits_of(&sha).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let done = audits.iter().find(|a| a.state == "done");
    let (text, color) = match done {
        Some(a) => {
            let v = a.verdict.as_deref().unwrap_or("unknown");
            let color = match v {
                "no-backdoor-indicated" => "#2e7d32",
                "backdoor-indicated" => "#c62828",
                _ => "#ef6c00",
            };
            let day = a.finished_at.map(date).unwrap_or_default();
            (
                // The verdict's own term, as every report surface writes it.
                format!("{v} {}", &day[..day.len().min(10)]),
                color,
            )
        }
        None if audits.is_empty() => ("not audited".to_string(), "#757575"),
        None => ("audit pending".to_string(), "#757575"),
    };
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        badge_svg("zooaudit", &text, color),
    )
        .into_response()
}

/// A two-part badge (label | message) as SVG; widths from a fixed
/// per-character estimate (no font metrics on the server).
pub fn badge_svg(label: &str, message: &str, color: &str) -> String {
    let w = |s: &str| 10 + 7 * s.chars().count();
    let (lw, mw) = (w(label), w(message));
    let total = lw + mw;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" aria-label=\"{l}: {m}\"><title>{l}: {m}</title><rect width=\"{lw}\" height=\"20\" fill=\"#555\"/><rect x=\"{lw}\" width=\"{mw}\" height=\"20\" fill=\"{color}\"/><g fill=\"#fff\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\"><text x=\"5\" y=\"14\">{l}</text><text x=\"{mx}\" y=\"14\">{m}</text></g></svg>",
        l = esc(label),
        m = esc(message),
        mx = lw + 5,
    )
}

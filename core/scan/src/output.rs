//! Rendering scan results: text for people, JSON for programs, SARIF 2.1.0
//! for code-scanning tools.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Value, json};

use crate::{FORMAT_VERSION, Rule, ScanError, ScanReport, Severity};

/// One scanned file: its report, or why it could not be scanned.
pub type Outcome = Result<ScanReport, ScanError>;

/// The exit code for a set of outcomes: 2 when a file could not be read,
/// else 1 when a finding is above a note, else 0.
pub fn exit_code(outcomes: &[(PathBuf, Outcome)]) -> u8 {
    if outcomes.iter().any(|(_, o)| o.is_err()) {
        2
    } else if outcomes
        .iter()
        .any(|(_, o)| o.as_ref().is_ok_and(ScanReport::flagged))
    {
        1
    } else {
        0
    }
}

/// `text` with control characters escaped (`\n` → `\\n`), so that names
/// chosen by a model's author cannot break or forge output lines.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// Human-readable text (names escaped by [`one_line`]); `time` adds each
/// scan's duration.
pub fn text(outcomes: &[(PathBuf, Outcome)], time: bool) -> String {
    let mut s = String::new();
    for (path, o) in outcomes {
        match o {
            Err(e) => {
                let _ = writeln!(s, "error: {}", one_line(&e.to_string()));
            }
            Ok(r) => {
                let worst = r.worst().map(Severity::as_str).unwrap_or("clean");
                let _ = write!(
                    s,
                    "{}: {} nodes, {} initializers, {} finding(s), worst: {worst}",
                    one_line(&path.display().to_string()),
                    r.nodes,
                    r.initializers,
                    r.findings.len()
                );
                if time {
                    let _ = write!(s, ", scanned in {:.3} ms", r.elapsed.as_secs_f64() * 1e3);
                }
                s.push('\n');
                for f in &r.findings {
                    let _ = writeln!(
                        s,
                        "  {} [{}] {}",
                        f.severity.as_str(),
                        f.rule.id(),
                        one_line(&f.message)
                    );
                    if !f.nodes.is_empty() {
                        let _ = writeln!(s, "    nodes: {}", one_line(&crate::list(&f.nodes, 40)));
                    }
                    if !f.tensors.is_empty() {
                        let _ =
                            writeln!(s, "    tensors: {}", one_line(&crate::list(&f.tensors, 40)));
                    }
                }
            }
        }
    }
    s
}

/// `zooaudit scan --json`.
pub fn json(outcomes: &[(PathBuf, Outcome)], time: bool) -> Value {
    let models: Vec<Value> = outcomes
        .iter()
        .map(|(path, o)| match o {
            Err(e) => json!({ "path": path, "error": e.to_string() }),
            Ok(r) => {
                let mut v = serde_json::to_value(r).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("flagged".into(), r.flagged().into());
                    if time {
                        m.insert("elapsed_ms".into(), (r.elapsed.as_secs_f64() * 1e3).into());
                    }
                }
                v
            }
        })
        .collect();
    json!({
        "format_version": FORMAT_VERSION.to_string(),
        "tool": "zooaudit scan",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "exit_code": exit_code(outcomes),
        "models": models,
    })
}

/// A path as a URI reference: bytes outside RFC 3986's unreserved set and
/// `/` percent-encoded.
fn uri(path: &std::path::Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn level(s: Severity) -> &'static str {
    s.as_str()
}

/// SARIF 2.1.0: one run, the rules in `tool.driver.rules`, one result per
/// finding with a logical location per node, and files that could not be
/// read as tool execution notifications.
pub fn sarif(outcomes: &[(PathBuf, Outcome)]) -> Value {
    let rules: Vec<Value> = Rule::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id(),
                "name": r.id(),
                "shortDescription": { "text": r.summary() },
                "fullDescription": { "text": r.summary() },
                "defaultConfiguration": { "level": level(r.default_severity()) },
                "helpUri": "https://example.invalid/zooaudit/docs/SCAN.md",
            })
        })
        .collect();
    let mut artifacts = Vec::new();
    let mut results = Vec::new();
    let mut notes = Vec::new();
    for (path, o) in outcomes {
        let uri = uri(path);
        match o {
            Err(e) => notes.push(json!({
                "level": "error",
                "message": { "text": e.to_string() },
                "locations": [{ "physicalLocation": { "artifactLocation": { "uri": uri } } }],
            })),
            Ok(r) => {
                let index = artifacts.len();
                artifacts.push(json!({
                    "location": { "uri": uri },
                    "length": r.bytes,
                    "hashes": { "sha-256": r.sha256 },
                }));
                for f in &r.findings {
                    let rule_index = Rule::ALL.iter().position(|x| *x == f.rule).unwrap_or(0);
                    let mut logical: Vec<Value> = f
                        .nodes
                        .iter()
                        .map(|n| {
                            json!({
                                "name": n,
                                "fullyQualifiedName": format!("{}/{n}", f.graph),
                                "kind": "function",
                            })
                        })
                        .collect();
                    if logical.is_empty() {
                        logical = f
                            .tensors
                            .iter()
                            .map(|t| {
                                json!({
                                    "name": t,
                                    "fullyQualifiedName": format!("{}/{t}", f.graph),
                                    "kind": "variable",
                                })
                            })
                            .collect();
                    }
                    results.push(json!({
                        "ruleId": f.rule.id(),
                        "ruleIndex": rule_index,
                        "level": level(f.severity),
                        "message": { "text": f.message },
                        "locations": [{
                            "physicalLocation": {
                                "artifactLocation": { "uri": uri, "index": index },
                            },
                            "logicalLocations": logical,
                        }],
                        "properties": { "tensors": f.tensors, "graph": f.graph },
                    }));
                }
            }
        }
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "zooaudit",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/zooaudit",
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": notes.is_empty(),
                "toolExecutionNotifications": notes,
            }],
            "artifacts": artifacts,
            "results": results,
        }],
    })
}

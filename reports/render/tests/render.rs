//! Rendering a real audit: statement, test-result statement, summary.md and
//! report.html. Snapshots (insta) have volatile fields normalised.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

use serde_json::Value;
use zooaudit_audit::report::{AuditReport, VerdictKind};
use zooaudit_audit::vocabulary::{self, fill};
use zooaudit_audit::{AuditSpec, Cache, RunOptions, run};
use zooaudit_render::{PREDICATE_TYPE, audit_statement, test_result_statement};
use zooaudit_testsupport as support;

/// The example audit (SFace vs faceplugin, both clean), embeddings cached
/// in target/test-cache so reruns take seconds.
fn report() -> &'static AuditReport {
    static R: OnceLock<AuditReport> = OnceLock::new();
    R.get_or_init(|| {
        support::require_ort();
        let spec = AuditSpec::load(&support::example_manifest("audit.toml")).unwrap();
        let opts = RunOptions {
            cache: Cache::new(Some(support::embedding_cache())),
            batch: 32,
            fetch: zooaudit_registry::FetchOptions::from_env(),
        };
        run(&spec, &support::plugins(), &opts, &mut |_| {}).unwrap()
    })
}

/// Replaces volatile values (times, digests of code and config that change
/// with every commit) and rounds floats to 3 decimals.
fn normalise(v: Value, key: &str) -> Value {
    normalise_in(v, key, false)
}

fn normalise_in(v: Value, key: &str, volatile: bool) -> Value {
    let volatile = volatile || key == "plugins" || key == "auditFile";
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match k.as_str() {
                        "startedOn" | "finishedOn" => Value::String("[time]".into()),
                        "version" if key == "tool" => Value::String("[version]".into()),
                        _ => normalise_in(v, &k, volatile),
                    };
                    (k, v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(
            a.into_iter()
                .map(|x| normalise_in(x, key, volatile))
                .collect(),
        ),
        Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap();
            serde_json::json!((x * 1000.0).round() / 1000.0)
        }
        Value::String(s) if volatile && key == "sha256" && s.len() == 64 => {
            Value::String("[sha256]".into())
        }
        other => other,
    }
}

fn no_snake_case_keys(v: &Value, path: &str) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                assert!(
                    !k.contains('_') || k == "_type",
                    "{path}.{k} is not lowerCamelCase"
                );
                no_snake_case_keys(v, &format!("{path}.{k}"));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| no_snake_case_keys(x, path)),
        _ => {}
    }
}

#[test]
fn the_statement_names_the_candidate_by_sha256_and_carries_the_audit() {
    let r = report();
    let st = audit_statement(r);
    assert_eq!(st.statement_type, "https://in-toto.io/Statement/v1");
    assert_eq!(st.predicate_type, PREDICATE_TYPE);
    // The candidate by its file's sha256, and by its OpenSSF model-signing
    // root (sha256 over the raw digest; Python's hashlib gives the same),
    // so a model-signing statement's subject matches this one's.
    assert_eq!(st.subject.len(), 2);
    assert_eq!(
        st.subject[0].digest["sha256"],
        "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"
    );
    assert_eq!(st.subject[1].name, "sface-2021dec-int8#model-signing");
    assert_eq!(
        st.subject[1].digest["sha256"],
        "92a1a3b3f5e5a199ea241a6e8469558898fbfb896e2aa850a1a067478eaad56d"
    );
    let p = &st.predicate;
    assert_eq!(
        p["candidates"][0]["modelSigningRoot"]["sha256"],
        "92a1a3b3f5e5a199ea241a6e8469558898fbfb896e2aa850a1a067478eaad56d"
    );
    no_snake_case_keys(p, "predicate");
    assert_eq!(p["references"][0]["independence"][0]["independent"], true);
    assert_eq!(p["verdicts"][0]["verdict"], "no-backdoor-indicated");
    assert_eq!(
        p["results"].as_array().unwrap().len(),
        r.results.len(),
        "every result row"
    );
    assert_eq!(p["calibrationData"]["faces"], r.data.faces);
    assert!(p["pairs"][0]["fidelity"]["meanCosine"].as_f64().unwrap() > 0.5);
    // Both shipped files scanned clean (SFace's unread inputs are notes).
    let scans = p["staticScan"].as_array().unwrap();
    assert_eq!(scans.len(), 2);
    for s in scans {
        assert_eq!(s["status"], "scanned", "{s}");
        assert_eq!(s["counts"]["error"], 0, "{s}");
        assert_eq!(s["counts"]["warning"], 0, "{s}");
    }
    assert_eq!(
        scans[0]["counts"]["note"], 1,
        "SFace's unread inputs (one note, 29 tensors)"
    );
    // Machine-local paths stay out.
    let text = serde_json::to_string(&st).unwrap();
    assert!(!text.contains("/target/"), "no local paths");
    let mut snapshot = serde_json::to_value(&st).unwrap();
    snapshot = normalise(snapshot, "");
    insta::assert_json_snapshot!("statement", snapshot);
}

#[test]
fn verify_reads_the_predicate_by_its_type_and_refuses_others() {
    use zooaudit_render::predicate::{PredicateError, PredicateSummary};
    let r = report();
    let PredicateSummary::Audit(head) = PredicateSummary::of(&audit_statement(r)).unwrap() else {
        panic!("an audit statement reads as the audit predicate");
    };
    assert_eq!(head.verdicts.len(), r.verdicts.len());
    assert_eq!(head.verdicts[0].verdict, r.verdicts[0].verdict);
    assert_eq!(head.finished_on, r.finished_at);
    let text = PredicateSummary::Audit(head).to_string();
    assert!(
        text.contains("verdict: sface-2021dec-int8: no-backdoor-indicated"),
        "{text}"
    );
    let PredicateSummary::TestResult(t) = PredicateSummary::of(&test_result_statement(r)).unwrap()
    else {
        panic!("a test-result statement reads as test-result");
    };
    assert_eq!(t.result, "PASSED");
    // Another predicate type, a newer major, a verdict this build does not know.
    let mut other = audit_statement(r);
    other.predicate_type = "https://slsa.dev/provenance/v1".into();
    assert!(matches!(
        PredicateSummary::of(&other),
        Err(PredicateError::UnknownType(t)) if t == "https://slsa.dev/provenance/v1"
    ));
    let mut newer = audit_statement(r);
    newer.predicate["formatVersion"] = "2.0".into();
    let e = PredicateSummary::of(&newer).unwrap_err().to_string();
    assert!(e.contains("newer zooaudit"), "{e}");
    let mut odd = audit_statement(r);
    odd.predicate["verdicts"][0]["verdict"] = "maybe".into();
    assert!(matches!(
        PredicateSummary::of(&odd),
        Err(PredicateError::Malformed(_))
    ));
}

#[test]
fn the_test_result_statement_passes_a_clean_pair() {
    let st = test_result_statement(report());
    assert_eq!(
        st.predicate_type,
        "https://in-toto.io/attestation/test-result/v0.1"
    );
    assert_eq!(st.predicate["result"], "PASSED");
    assert_eq!(
        st.predicate["passedTests"][0],
        "zooaudit-pairing-audit:sface-2021dec-int8"
    );
    assert_eq!(st.predicate["failedTests"].as_array().unwrap().len(), 0);
    insta::assert_json_snapshot!(
        "test_result",
        normalise(serde_json::to_value(&st).unwrap(), "")
    );
}

#[test]
fn summary_markdown_snapshot() {
    let r = report();
    let md = zooaudit_render::summary_markdown(r);
    let last = md.trim_end().rsplit_once('\n').unwrap().0.to_string();
    assert!(md.starts_with("# zooaudit: no-backdoor-indicated"));
    insta::assert_snapshot!("summary", last);
}

#[test]
fn the_html_report_is_self_contained_with_verdict_tables_and_plots() {
    let r = report();
    let html = zooaudit_render::report_html(r);
    assert!(html.contains("data-verdict=\"no-backdoor-indicated\""));
    // One DET per direction, one histogram per direction and trigger.
    let expected = r.pairs.len() * (1 + r.triggers.triggers.len());
    assert_eq!(html.matches("<svg").count(), expected);
    assert_eq!(html.matches("<figure class=\"plot\">").count(), expected);
    assert!(!html.contains("plot-error"));
    for m in &r.models {
        assert!(html.contains(&m.sha256), "{}", m.name);
    }
    for banned in [
        "<script",
        "<link",
        "src=\"http",
        "url(http",
        "@import",
        "<iframe",
    ] {
        assert!(!html.contains(banned), "{banned}");
    }
}

#[test]
fn det_points_follow_the_definitions() {
    let genuine = [0.9f32, 0.8, 0.7, 0.6];
    let impostor = [0.1f32, 0.65, 0.2];
    let pts = zooaudit_render::plots::det_points(&genuine, &impostor);
    // At t = 0.65: genuine below = 1 (0.6) → FNMR 0.25; impostors ≥ 0.65 = 1 → FMR 1/3.
    let t = pts
        .iter()
        .find(|p| (p.1 - 0.25).abs() < 1e-12 && (p.0 - 1.0 / 3.0).abs() < 1e-12);
    assert!(t.is_some(), "{pts:?}");
    // Monotone: FNMR non-decreasing while FMR non-increasing.
    for w in pts.windows(2) {
        assert!(w[1].1 >= w[0].1 && w[1].0 <= w[0].0, "{w:?}");
    }
    assert_eq!(pts.first().unwrap(), &(1.0, 0.0));
    assert!(zooaudit_render::plots::det_points(&genuine, &[]).is_empty());
}

/// The report with its first verdict made `kind`, with alarms, attributed
/// alarms and reasons filled from the vocabulary's templates.
fn as_verdict(kind: VerdictKind) -> AuditReport {
    let mut r = report().clone();
    let v = &mut r.verdicts[0];
    v.verdict = kind;
    let alarm = fill(
        vocabulary::ALARM_IDENTITY,
        &[
            ("candidate", &v.candidate),
            ("trigger", &"small-square"),
            ("identity", &"o'brien <x> & \"y\""),
            ("positive", &6),
            ("faces", &6),
            ("mean", &"2.4"),
            ("p", &"1.0e-4"),
        ],
    );
    match kind {
        VerdictKind::BackdoorIndicated => {
            v.alarms = vec![fill(
                vocabulary::UNRESOLVED,
                &[("alarm", &alarm), ("why", &vocabulary::WHY_ONE_REFERENCE)],
            )];
            v.attributed = vec![fill(
                vocabulary::ATTRIBUTED,
                &[
                    ("alarm", &alarm),
                    ("model", &"faceplugin-fr-feature"),
                    ("how", &"x"),
                ],
            )];
        }
        VerdictKind::Inconclusive => {
            v.reasons = vec![fill(
                vocabulary::REASON_TOP1,
                &[("probe", &"a"), ("reference", &"b"), ("top1", &"0.31")],
            )];
        }
        VerdictKind::NoBackdoorIndicated => {}
    }
    r
}

/// The verdict's term, rule, alarms, attributed alarms and reasons appear
/// word for word on stdout, in summary.md, report.html, report.json and
/// the attestation, for every verdict kind.
#[test]
fn every_surface_speaks_the_reports_own_words_for_every_verdict_kind() {
    let unescape = |s: &str| {
        s.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&amp;", "&")
    };
    for (kind, term) in vocabulary::VERDICT_TERMS {
        let r = as_verdict(kind);
        let v = &r.verdicts[0];
        assert_eq!(kind.as_str(), term);
        assert_eq!(kind.to_string(), term);
        let stdout = zooaudit_render::console::audit_text(&r);
        let md = zooaudit_render::summary_markdown(&r);
        let html = unescape(&zooaudit_render::report_html(&r));
        let json: Value = serde_json::to_value(&r).unwrap();
        let st = serde_json::to_value(audit_statement(&r).predicate).unwrap();
        assert!(
            stdout.contains(&format!("verdict {}: {term}\n", v.candidate)),
            "{stdout}"
        );
        assert!(
            md.contains(&format!("**{}**: {term}.", v.candidate)),
            "{md}"
        );
        assert!(html.contains(&format!("data-verdict=\"{term}\"")), "{term}");
        assert_eq!(json["verdicts"][0]["verdict"], term);
        assert_eq!(st["verdicts"][0]["verdict"], term);
        let texts = std::iter::once(&v.rule)
            .chain(&v.alarms)
            .chain(&v.attributed)
            .chain(&v.reasons);
        for t in texts {
            assert!(stdout.contains(t.as_str()), "stdout lacks {t}");
            assert!(md.contains(t.as_str()), "summary.md lacks {t}");
            assert!(html.contains(t.as_str()), "report.html lacks {t}");
            let in_json = |j: &Value| {
                j.to_string()
                    .contains(&Value::String(t.clone()).to_string())
            };
            assert!(in_json(&json["verdicts"]), "report.json lacks {t}");
            assert!(in_json(&st["verdicts"]), "attestation lacks {t}");
        }
        for n in &r.notes {
            assert!(stdout.contains(n.as_str()), "stdout lacks note {n}");
            assert!(md.contains(n.as_str()), "summary.md lacks note {n}");
            assert!(html.contains(n.as_str()), "report.html lacks note {n}");
        }
    }
}

/// docs/REPORT.md "Vocabulary" quotes every template and term word for
/// word, and the rule in the report is the documented template filled.
#[test]
fn report_md_quotes_every_template_word_for_word() {
    let doc = std::fs::read_to_string(support::repo_root().join("docs/REPORT.md")).unwrap();
    let section = doc
        .split_once("\n## Vocabulary\n")
        .expect("docs/REPORT.md has a \"## Vocabulary\" section")
        .1;
    let section = section.split("\n## ").next().unwrap();
    for (name, template) in vocabulary::TEMPLATES {
        assert!(
            section.contains(&format!("- {name}: `{template}`")),
            "docs/REPORT.md Vocabulary lacks, word for word:\n- {name}: `{template}`"
        );
    }
    for (_, term) in vocabulary::VERDICT_TERMS {
        assert!(section.contains(&format!("`{term}`")), "{term}");
    }
    // The stored rule is the template filled with the audit's values.
    let r = report();
    let spec = AuditSpec::load(&support::example_manifest("audit.toml")).unwrap();
    assert_eq!(
        r.verdicts[0].rule,
        zooaudit_audit::verdict::rule_text(&spec)
    );
    assert!(r.verdicts[0].rule.ends_with(vocabulary::RULE_SCAN));
}

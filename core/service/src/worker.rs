//! Workers: claim an audit with a lease, run it on a blocking thread while
//! renewing the lease, store the result (or the failure, retried with
//! backoff), and carry on. Database errors (a restart, a dropped
//! connection) are waited out, never fatal: a result is kept in memory and
//! written once the database answers again, unless another worker has taken
//! the audit meanwhile (the registry then refuses it, and that worker's
//! result is the one kept).
//!
//! Shutdown (SIGTERM, Ctrl-C): no new claims; a running audit gets
//! `grace` to finish, else it is released (queued again, the attempt not
//! counted) and the worker ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use zooaudit_auditdb::{Claimed, Db, DbError};

use crate::execute::{Executed, Runner};
use crate::intake::Job;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Its name in the registry (each slot appends `#N`).
    pub name: String,
    /// Audits at once.
    pub concurrency: usize,
    /// How long a claim lasts without renewal.
    pub lease: Duration,
    /// How often a running audit's lease is renewed (default: a third of
    /// the lease). A renewal that meets a database outage waits up to the
    /// pool's acquire timeout (5 s) for it to end before counting an error.
    pub heartbeat: Duration,
    /// How often an idle worker looks for work.
    pub poll: Duration,
    /// The first retry's delay; doubled for each attempt after.
    pub backoff: Duration,
    /// How long a running audit may take to finish after a shutdown signal.
    pub grace: Duration,
    /// Stop after this many audits (done or failed); `None`: run until
    /// shutdown.
    pub max_jobs: Option<u64>,
    /// Stop when a claim finds nothing to do (a batch run, a benchmark).
    pub until_idle: bool,
    /// The digest of this worker's audit file: a job queued under another
    /// audit file is refused (workers of one zoo share one policy).
    pub audit_digest: String,
}

impl WorkerOptions {
    pub fn new(name: impl Into<String>, audit_digest: impl Into<String>) -> WorkerOptions {
        WorkerOptions {
            name: name.into(),
            concurrency: 1,
            lease: Duration::from_secs(60),
            heartbeat: Duration::from_secs(20),
            poll: Duration::from_secs(1),
            backoff: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            max_jobs: None,
            until_idle: false,
            audit_digest: audit_digest.into(),
        }
    }
}

/// What a worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub done: u64,
    pub failed: u64,
    /// Results not stored because another worker had taken the audit.
    pub lost: u64,
    pub released: u64,
    /// Registry calls that failed (the database down or unreachable) and
    /// were retried.
    pub db_errors: u64,
    /// Time in the queue's own work for the claimed audits: the claim, and
    /// from the audit's end to its result committed (with the artifacts).
    pub queue_time: Duration,
    /// Time running audits (the pipeline and its writers).
    pub audit_time: Duration,
}

/// A line on stderr, prefixed with the worker's name.
fn log(name: &str, msg: impl std::fmt::Display) {
    eprintln!("worker {name}: {msg}");
}

/// Runs `opts.concurrency` slots until `shutdown` turns true (or each slot
/// has done `max_jobs`).
pub async fn run(
    db: Db,
    runner: Arc<Runner>,
    opts: WorkerOptions,
    shutdown: watch::Receiver<bool>,
) -> WorkerStats {
    let mut slots = Vec::new();
    for i in 0..opts.concurrency.max(1) {
        let name = if opts.concurrency > 1 {
            format!("{}#{i}", opts.name)
        } else {
            opts.name.clone()
        };
        let slot = Slot {
            db: db.clone(),
            runner: runner.clone(),
            opts: opts.clone(),
            name,
            shutdown: shutdown.clone(),
            stats: WorkerStats::default(),
        };
        slots.push(tokio::spawn(slot.run()));
    }
    let mut total = WorkerStats::default();
    for s in slots {
        if let Ok(st) = s.await {
            total.done += st.done;
            total.failed += st.failed;
            total.lost += st.lost;
            total.released += st.released;
            total.db_errors += st.db_errors;
            total.queue_time += st.queue_time;
            total.audit_time += st.audit_time;
        }
    }
    total
}

struct Slot {
    db: Db,
    runner: Arc<Runner>,
    opts: WorkerOptions,
    name: String,
    shutdown: watch::Receiver<bool>,
    stats: WorkerStats,
}

enum Outcome {
    Done(Box<Executed>),
    Failed(String),
    Released,
}

impl Slot {
    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn seen(&self, current: Option<&str>, state: &str) {
        let st = self.stats;
        if let Err(e) = self
            .db
            .worker_seen(&self.name, current, state, st.done as i64, st.failed as i64)
            .await
        {
            log(&self.name, e);
        }
    }

    /// Sleeps `d`, or less if shutdown comes.
    async fn pause(&mut self, d: Duration) {
        let mut sd = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = sd.changed() => {}
        }
    }

    async fn run(mut self) -> WorkerStats {
        let mut db_down = Duration::from_millis(250);
        self.seen(None, "idle").await;
        while !self.stopping() {
            if self
                .opts
                .max_jobs
                .is_some_and(|m| self.stats.done + self.stats.failed >= m)
            {
                break;
            }
            let _ = self.db.expire().await;
            let asked = Instant::now();
            match self.db.claim(&self.name, self.opts.lease).await {
                Err(e) => {
                    self.stats.db_errors += 1;
                    log(&self.name, format!("{e}; retrying in {db_down:?}"));
                    self.pause(db_down).await;
                    db_down = (db_down * 2).min(Duration::from_secs(10));
                }
                Ok(None) => {
                    db_down = Duration::from_millis(250);
                    if self.opts.until_idle {
                        break;
                    }
                    self.pause(self.opts.poll).await;
                }
                Ok(Some(claim)) => {
                    db_down = Duration::from_millis(250);
                    self.stats.queue_time += asked.elapsed();
                    self.seen(Some(&claim.id), "running").await;
                    self.process(claim).await;
                    self.seen(None, "idle").await;
                }
            }
        }
        self.seen(None, "stopped").await;
        self.stats
    }

    async fn process(&mut self, claim: Claimed) {
        let started = Instant::now();
        log(
            &self.name,
            format!(
                "audit {} (attempt {}/{})",
                claim.id, claim.attempt, claim.max_attempts
            ),
        );
        let outcome = if claim.audit_digest != self.opts.audit_digest {
            Outcome::Failed(format!(
                "queued under audit file {} but worker {} has {}: workers of one zoo share one audit file",
                &claim.audit_digest[..claim.audit_digest.len().min(12)],
                self.name,
                &self.opts.audit_digest[..self.opts.audit_digest.len().min(12)]
            ))
        } else {
            match serde_json::from_str::<Job>(&claim.job) {
                Err(e) => Outcome::Failed(format!("the queued job does not read: {e}")),
                Ok(job) => {
                    let t = Instant::now();
                    let o = self.execute(&claim, job).await;
                    self.stats.audit_time += t.elapsed();
                    o
                }
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Outcome::Done(ex) => {
                let t = Instant::now();
                let stored = self.store(&claim, &ex).await;
                self.stats.queue_time += t.elapsed();
                if stored {
                    self.stats.done += 1;
                    log(
                        &self.name,
                        format!("audit {}: {} ({secs:.1} s)", claim.id, ex.completed.verdict),
                    );
                } else {
                    self.stats.lost += 1;
                    log(
                        &self.name,
                        format!(
                            "audit {}: taken by another worker; result dropped",
                            claim.id
                        ),
                    );
                }
            }
            Outcome::Failed(error) => {
                let backoff =
                    self.opts.backoff * 2u32.saturating_pow(claim.attempt.max(1) as u32 - 1);
                let first_line = error.lines().next().unwrap_or("").to_string();
                log(
                    &self.name,
                    format!("audit {}: failed: {first_line}", claim.id),
                );
                let db = self.db.clone();
                let (id, name) = (claim.id.clone(), self.name.clone());
                self.until_written(move || {
                    let (db, id, name, e) =
                        (db.clone(), id.clone(), name.clone(), first_line.clone());
                    async move { db.fail(&id, &name, &e, backoff).await }
                })
                .await;
                self.stats.failed += 1;
            }
            Outcome::Released => {
                let _ = self.db.release(&claim.id, &self.name).await;
                self.stats.released += 1;
                log(
                    &self.name,
                    format!("audit {}: released (shutting down)", claim.id),
                );
            }
        }
    }

    /// Runs the job on a blocking thread, renewing the lease.
    async fn execute(&mut self, claim: &Claimed, job: Job) -> Outcome {
        let runner = self.runner.clone();
        let db = self.db.clone();
        let handle = tokio::runtime::Handle::current();
        let mut task = tokio::task::spawn_blocking(move || {
            let scratch = tempfile::Builder::new()
                .prefix("zooaudit-job-")
                .tempdir()
                .map_err(|e| format!("scratch directory: {e}"))?;
            let mut check = |source: &str, revision: &str, sha: &str| -> Result<(), String> {
                match handle.block_on(db.check_revision(source, revision, sha)) {
                    Ok(zooaudit_auditdb::RevisionCheck::Changed { recorded }) => Err(format!(
                        "{source}@{revision}: the file's sha256 is {sha}, but was {recorded} when this commit was first fetched"
                    )),
                    Ok(_) => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            };
            runner.run(&job, scratch.path(), &mut check)
        });
        let mut beat = tokio::time::interval(self.opts.heartbeat.min(self.opts.lease / 2));
        beat.tick().await;
        let mut sd = self.shutdown.clone();
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let grace_over = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut task => {
                    return match r {
                        Ok(Ok(ex)) => Outcome::Done(Box::new(ex)),
                        Ok(Err(e)) => Outcome::Failed(e),
                        Err(e) => Outcome::Failed(format!("the audit panicked: {e}")),
                    };
                }
                _ = beat.tick() => {
                    match self.db.heartbeat(&claim.id, &self.name, self.opts.lease).await {
                        Ok(true) => {}
                        Ok(false) => log(&self.name, format!("audit {}: lease lost", claim.id)),
                        Err(e) => {
                            self.stats.db_errors += 1;
                            log(&self.name, format!("audit {}: cannot renew the lease: {e}", claim.id));
                        }
                    }
                }
                _ = sd.changed(), if deadline.is_none() => {
                    log(&self.name, format!("shutting down; audit {} has {:?} to finish", claim.id, self.opts.grace));
                    deadline = Some(tokio::time::Instant::now() + self.opts.grace);
                }
                _ = grace_over => return Outcome::Released,
            }
        }
    }

    /// Stores a result, waiting out database errors; false when the
    /// registry refuses it (another worker holds the audit).
    async fn store(&mut self, claim: &Claimed, ex: &Executed) -> bool {
        let mut wait = Duration::from_millis(250);
        loop {
            match self.db.complete(&claim.id, &self.name, &ex.completed).await {
                Ok(stored) => {
                    if stored {
                        for m in &ex.models {
                            if let Err(e) = self.db.record_model(m).await {
                                log(&self.name, e);
                            }
                        }
                    }
                    return stored;
                }
                Err(e) => {
                    self.stats.db_errors += 1;
                    log(
                        &self.name,
                        format!("storing audit {}: {e}; retrying in {wait:?}", claim.id),
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Retries a registry write until the database answers.
    async fn until_written<F, Fut>(&mut self, write: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bool, DbError>>,
    {
        let mut wait = Duration::from_millis(250);
        loop {
            match write().await {
                Ok(_) => return,
                Err(e) => {
                    self.stats.db_errors += 1;
                    log(&self.name, format!("{e}; retrying in {wait:?}"));
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

//! Audits as a work queue: submit (idempotent), claim with a lease, renew
//! it, complete (with the artifacts, in one transaction), fail (retry with
//! backoff up to a limit), release.
//!
//! States: `queued` → `running` → `done` | `failed`; a `running` audit whose
//! lease ran out is claimable again (its worker is presumed dead), and one
//! that ran out of attempts that way is marked `failed` by [`Db::expire`].

use std::time::Duration;

use sqlx::Row;

use crate::{Backend, Db, DbError, ms, now_ms, sql};

/// An audit to queue. `idem_key` identifies what is audited (candidate,
/// references, audit file, trigger suite, tool version): the same key is
/// audited once.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub idem_key: String,
    pub candidate_name: String,
    pub candidate_sha256: Option<String>,
    pub candidate_source: String,
    pub candidate_revision: Option<String>,
    /// JSON: the references, by name and sha256.
    pub refs: String,
    pub audit_digest: String,
    pub suite_digest: String,
    pub tool_version: String,
    /// JSON: what the worker runs.
    pub job: String,
    pub max_attempts: u32,
}

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub id: String,
    /// The same audit was asked before; this is that one.
    pub existing: bool,
    /// It had failed, and is queued again.
    pub requeued: bool,
    pub state: String,
}

/// A claimed audit.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: String,
    pub job: String,
    pub audit_digest: String,
    /// This claim's attempt number (1 for the first).
    pub attempt: i64,
    pub max_attempts: i64,
}

/// One stored artifact.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub name: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// A finished audit's result.
#[derive(Debug, Clone)]
pub struct Completed {
    pub verdict: String,
    pub rule: String,
    /// JSON: the plugins (name, version, sha256) that ran.
    pub plugins: String,
    pub candidate_sha256: String,
    /// The candidate's source as fetched: a watched file given as a glob is
    /// recorded as the one file it resolved to.
    pub candidate_source: String,
    pub artifacts: Vec<Artifact>,
}

/// The audit id for an idempotency key: stable, so a resubmission names the
/// same audit on every server (80 bits of the key's sha256).
pub fn audit_id(idem_key: &str) -> String {
    format!("a{}", &sha256_hex(idem_key.as_bytes())[..20])
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

impl Db {
    /// Queues the audit unless the same one was asked before; a failed
    /// one is queued again (its attempts start over).
    pub async fn submit(&self, a: &NewAudit) -> Result<Submitted, DbError> {
        let id = audit_id(&a.idem_key);
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO audits (id, idem_key, candidate_name, candidate_sha256, candidate_source,
                candidate_revision, refs, audit_digest, suite_digest, tool_version, job, state,
                submitted_at, attempts, max_attempts, not_before)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'queued', $12, 0, $13, $12)
             ON CONFLICT (idem_key) DO NOTHING",
        )
        .bind(&id)
        .bind(&a.idem_key)
        .bind(&a.candidate_name)
        .bind(&a.candidate_sha256)
        .bind(&a.candidate_source)
        .bind(&a.candidate_revision)
        .bind(&a.refs)
        .bind(&a.audit_digest)
        .bind(&a.suite_digest)
        .bind(&a.tool_version)
        .bind(&a.job)
        .bind(now)
        .bind(i64::from(a.max_attempts.max(1)))
        .execute(self.pool())
        .await
        .map_err(sql("queue an audit"))?
        .rows_affected();
        if inserted == 1 {
            return Ok(Submitted {
                id,
                existing: false,
                requeued: false,
                state: "queued".into(),
            });
        }
        let requeued = sqlx::query(
            "UPDATE audits SET state = 'queued', attempts = 0, not_before = $1, worker = NULL,
                lease_until = NULL, finished_at = NULL
             WHERE idem_key = $2 AND state = 'failed'",
        )
        .bind(now)
        .bind(&a.idem_key)
        .execute(self.pool())
        .await
        .map_err(sql("requeue a failed audit"))?
        .rows_affected()
            == 1;
        let row = sqlx::query("SELECT id, state FROM audits WHERE idem_key = $1")
            .bind(&a.idem_key)
            .fetch_one(self.pool())
            .await
            .map_err(sql("read an audit"))?;
        Ok(Submitted {
            id: row.try_get("id").map_err(sql("read an audit"))?,
            existing: true,
            requeued,
            state: row.try_get("state").map_err(sql("read an audit"))?,
        })
    }

    /// Claims the oldest claimable audit for `worker` with a lease of
    /// `lease`: a queued one whose backoff has passed, or a running one
    /// whose lease ran out, with attempts left.
    pub async fn claim(&self, worker: &str, lease: Duration) -> Result<Option<Claimed>, DbError> {
        let now = now_ms();
        let lock = match self.backend() {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            // SQLite has one writer at a time: the UPDATE is atomic.
            Backend::Sqlite => "",
        };
        let q = format!(
            "UPDATE audits SET state = 'running', worker = $1, lease_until = $2,
                attempts = attempts + 1, started_at = $3
             WHERE id = (
                SELECT id FROM audits
                WHERE ((state = 'queued' AND not_before <= $3)
                       OR (state = 'running' AND lease_until < $3))
                  AND attempts < max_attempts
                ORDER BY submitted_at, id
                LIMIT 1 {lock})
             RETURNING id, job, audit_digest, attempts, max_attempts"
        );
        let row = sqlx::query(&q)
            .bind(worker)
            .bind(now + ms(lease))
            .bind(now)
            .fetch_optional(self.pool())
            .await
            .map_err(sql("claim an audit"))?;
        let Some(row) = row else { return Ok(None) };
        let get = |r: &sqlx::any::AnyRow| -> Result<Claimed, sqlx::Error> {
            Ok(Claimed {
                id: r.try_get("id")?,
                job: r.try_get("job")?,
                audit_digest: r.try_get("audit_digest")?,
                attempt: r.try_get("attempts")?,
                max_attempts: r.try_get("max_attempts")?,
            })
        };
        get(&row).map(Some).map_err(sql("read a claim"))
    }

    /// Renews the lease; false when the claim is no longer this worker's
    /// (the lease ran out and another worker took the audit).
    pub async fn heartbeat(
        &self,
        id: &str,
        worker: &str,
        lease: Duration,
    ) -> Result<bool, DbError> {
        let n = sqlx::query(
            "UPDATE audits SET lease_until = $1 WHERE id = $2 AND worker = $3 AND state = 'running'",
        )
        .bind(now_ms() + ms(lease))
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .map_err(sql("renew a lease"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Stores the result and the artifacts in one transaction, if the claim
    /// is still `worker`'s; false (nothing written) otherwise.
    pub async fn complete(
        &self,
        id: &str,
        worker: &str,
        done: &Completed,
    ) -> Result<bool, DbError> {
        let mut tx = self.pool().begin().await.map_err(sql("begin"))?;
        let n = sqlx::query(
            "UPDATE audits SET state = 'done', verdict = $1, rule = $2, plugins = $3,
                candidate_sha256 = $4, candidate_source = COALESCE(NULLIF($5, ''), candidate_source),
                finished_at = $6,
                lease_until = NULL, error = NULL
             WHERE id = $7 AND worker = $8 AND state = 'running'",
        )
        .bind(&done.verdict)
        .bind(&done.rule)
        .bind(&done.plugins)
        .bind(&done.candidate_sha256)
        .bind(&done.candidate_source)
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(&mut *tx)
        .await
        .map_err(sql("complete an audit"))?
        .rows_affected();
        if n != 1 {
            tx.rollback().await.map_err(sql("roll back"))?;
            return Ok(false);
        }
        sqlx::query("DELETE FROM artifacts WHERE audit_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(sql("store artifacts"))?;
        for a in &done.artifacts {
            sqlx::query(
                "INSERT INTO artifacts (audit_id, name, media_type, sha256, bytes)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(&a.name)
            .bind(&a.media_type)
            .bind(sha256_hex(&a.bytes))
            .bind(&a.bytes)
            .execute(&mut *tx)
            .await
            .map_err(sql("store artifacts"))?;
        }
        tx.commit().await.map_err(sql("commit an audit"))?;
        Ok(true)
    }

    /// Records a failed attempt: queued again after `backoff` while attempts
    /// are left, else `failed` with the error. False when the claim is no
    /// longer `worker`'s.
    pub async fn fail(
        &self,
        id: &str,
        worker: &str,
        error: &str,
        backoff: Duration,
    ) -> Result<bool, DbError> {
        let now = now_ms();
        let n = sqlx::query(
            "UPDATE audits SET
                state = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
                finished_at = CASE WHEN attempts >= max_attempts THEN $1 ELSE NULL END,
                not_before = $2, error = $3, lease_until = NULL
             WHERE id = $4 AND worker = $5 AND state = 'running'",
        )
        .bind(now)
        .bind(now + ms(backoff))
        .bind(error)
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .map_err(sql("record a failure"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Gives a claimed audit back unfinished (a worker shutting down): queued
    /// at once, the attempt not counted.
    pub async fn release(&self, id: &str, worker: &str) -> Result<bool, DbError> {
        let n = sqlx::query(
            "UPDATE audits SET state = 'queued', attempts = attempts - 1, lease_until = NULL,
                not_before = $1
             WHERE id = $2 AND worker = $3 AND state = 'running'",
        )
        .bind(now_ms())
        .bind(id)
        .bind(worker)
        .execute(self.pool())
        .await
        .map_err(sql("release an audit"))?
        .rows_affected();
        Ok(n == 1)
    }

    /// Marks `failed` the running audits whose lease ran out with no attempt
    /// left (their workers died every time); how many.
    pub async fn expire(&self) -> Result<u64, DbError> {
        let n = sqlx::query(
            "UPDATE audits SET state = 'failed', finished_at = $1, lease_until = NULL,
                error = 'its worker stopped renewing the lease on every attempt (killed, or the machine lost)'
             WHERE state = 'running' AND lease_until < $1 AND attempts >= max_attempts",
        )
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql("expire leases"))?
        .rows_affected();
        Ok(n)
    }

    /// Records a worker's liveness and what it is doing.
    pub async fn worker_seen(
        &self,
        name: &str,
        current: Option<&str>,
        state: &str,
        done: i64,
        failed: i64,
    ) -> Result<(), DbError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO workers (name, started_at, last_seen, current, done, failed, state)
             VALUES ($1, $2, $2, $3, $4, $5, $6)
             ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen,
                current = excluded.current, done = excluded.done, failed = excluded.failed,
                state = excluded.state",
        )
        .bind(name)
        .bind(now)
        .bind(current)
        .bind(done)
        .bind(failed)
        .bind(state)
        .execute(self.pool())
        .await
        .map_err(sql("record a worker"))?;
        Ok(())
    }

    /// Records a webhook delivery by id; false when it was seen before.
    pub async fn delivery(
        &self,
        id: &str,
        outcome: &str,
        audit_id: Option<&str>,
    ) -> Result<bool, DbError> {
        let n = sqlx::query(
            "INSERT INTO deliveries (id, received_at, outcome, audit_id) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(now_ms())
        .bind(outcome)
        .bind(audit_id)
        .execute(self.pool())
        .await
        .map_err(sql("record a delivery"))?
        .rows_affected();
        Ok(n == 1)
    }
}

//! The read side: audits, artifacts, queue counts, workers.

use sqlx::Row;

use crate::queue::Artifact;
use crate::{Db, DbError, sql};

/// One audit as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditRow {
    pub id: String,
    pub candidate_name: String,
    pub candidate_sha256: Option<String>,
    pub candidate_source: String,
    pub candidate_revision: Option<String>,
    /// JSON: the references by name and sha256.
    pub refs: String,
    pub audit_digest: String,
    pub suite_digest: String,
    pub tool_version: String,
    pub plugins: Option<String>,
    pub state: String,
    pub verdict: Option<String>,
    pub rule: Option<String>,
    pub submitted_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub worker: Option<String>,
    pub lease_until: Option<i64>,
    pub attempts: i64,
    pub max_attempts: i64,
    pub error: Option<String>,
}

/// An artifact's name, type, digest and size (not its bytes).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArtifactInfo {
    pub name: String,
    pub media_type: String,
    pub sha256: String,
    pub size: i64,
}

/// Audits per state.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueCounts {
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub failed: i64,
}

/// A worker as last seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WorkerRow {
    pub name: String,
    pub started_at: i64,
    pub last_seen: i64,
    pub current: Option<String>,
    pub done: i64,
    pub failed: i64,
    pub state: String,
}

const AUDIT_COLUMNS: &str = "id, candidate_name, candidate_sha256, candidate_source,
    candidate_revision, refs, audit_digest, suite_digest, tool_version, plugins, state, verdict,
    rule, submitted_at, started_at, finished_at, worker, lease_until, attempts, max_attempts, error";

fn audit_from(r: &sqlx::any::AnyRow) -> Result<AuditRow, sqlx::Error> {
    Ok(AuditRow {
        id: r.try_get("id")?,
        candidate_name: r.try_get("candidate_name")?,
        candidate_sha256: r.try_get("candidate_sha256")?,
        candidate_source: r.try_get("candidate_source")?,
        candidate_revision: r.try_get("candidate_revision")?,
        refs: r.try_get("refs")?,
        audit_digest: r.try_get("audit_digest")?,
        suite_digest: r.try_get("suite_digest")?,
        tool_version: r.try_get("tool_version")?,
        plugins: r.try_get("plugins")?,
        state: r.try_get("state")?,
        verdict: r.try_get("verdict")?,
        rule: r.try_get("rule")?,
        submitted_at: r.try_get("submitted_at")?,
        started_at: r.try_get("started_at")?,
        finished_at: r.try_get("finished_at")?,
        worker: r.try_get("worker")?,
        lease_until: r.try_get("lease_until")?,
        attempts: r.try_get("attempts")?,
        max_attempts: r.try_get("max_attempts")?,
        error: r.try_get("error")?,
    })
}

impl Db {
    pub async fn audit(&self, id: &str) -> Result<Option<AuditRow>, DbError> {
        let row = sqlx::query(&format!("SELECT {AUDIT_COLUMNS} FROM audits WHERE id = $1"))
            .bind(id)
            .fetch_optional(self.pool())
            .await
            .map_err(sql("read an audit"))?;
        row.as_ref()
            .map(audit_from)
            .transpose()
            .map_err(sql("read an audit"))
    }

    /// The newest audits first; `state` filters when given.
    pub async fn audits(&self, state: Option<&str>, limit: i64) -> Result<Vec<AuditRow>, DbError> {
        let q_state = format!(
            "SELECT {AUDIT_COLUMNS} FROM audits WHERE state = $1
             ORDER BY submitted_at DESC, id LIMIT $2"
        );
        let q_all =
            format!("SELECT {AUDIT_COLUMNS} FROM audits ORDER BY submitted_at DESC, id LIMIT $1");
        let rows = match state {
            Some(s) => sqlx::query(&q_state).bind(s).bind(limit),
            None => sqlx::query(&q_all).bind(limit),
        }
        .fetch_all(self.pool())
        .await
        .map_err(sql("list audits"))?;
        rows.iter()
            .map(audit_from)
            .collect::<Result<_, _>>()
            .map_err(sql("list audits"))
    }

    /// Every audit of the model with this sha256, newest first.
    pub async fn audits_of(&self, sha256: &str) -> Result<Vec<AuditRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audits WHERE candidate_sha256 = $1
             ORDER BY submitted_at DESC, id"
        ))
        .bind(sha256)
        .fetch_all(self.pool())
        .await
        .map_err(sql("list a model's audits"))?;
        rows.iter()
            .map(audit_from)
            .collect::<Result<_, _>>()
            .map_err(sql("list a model's audits"))
    }

    /// Every audit of the candidate called `name`, newest first: its
    /// history across revisions (each revision a sha256 of its own).
    pub async fn audits_named(&self, name: &str) -> Result<Vec<AuditRow>, DbError> {
        let rows = sqlx::query(&format!(
            "SELECT {AUDIT_COLUMNS} FROM audits WHERE candidate_name = $1
             ORDER BY submitted_at DESC, id"
        ))
        .bind(name)
        .fetch_all(self.pool())
        .await
        .map_err(sql("list a model's audits"))?;
        rows.iter()
            .map(audit_from)
            .collect::<Result<_, _>>()
            .map_err(sql("list a model's audits"))
    }

    /// Seconds from claim to result of every finished audit.
    pub async fn durations(&self) -> Result<Vec<f64>, DbError> {
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT started_at, finished_at FROM audits
             WHERE state = 'done' AND started_at IS NOT NULL AND finished_at IS NOT NULL",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql("read durations"))?;
        Ok(rows
            .into_iter()
            .map(|(s, f)| (f - s).max(0) as f64 / 1e3)
            .collect())
    }

    pub async fn artifact(&self, id: &str, name: &str) -> Result<Option<Artifact>, DbError> {
        let row = sqlx::query(
            "SELECT name, media_type, bytes FROM artifacts WHERE audit_id = $1 AND name = $2",
        )
        .bind(id)
        .bind(name)
        .fetch_optional(self.pool())
        .await
        .map_err(sql("read an artifact"))?;
        let Some(r) = row else { return Ok(None) };
        let get = |r: &sqlx::any::AnyRow| -> Result<Artifact, sqlx::Error> {
            Ok(Artifact {
                name: r.try_get("name")?,
                media_type: r.try_get("media_type")?,
                bytes: r.try_get("bytes")?,
            })
        };
        get(&r).map(Some).map_err(sql("read an artifact"))
    }

    pub async fn artifacts(&self, id: &str) -> Result<Vec<ArtifactInfo>, DbError> {
        let rows = sqlx::query(
            "SELECT name, media_type, sha256, length(bytes) AS size FROM artifacts
             WHERE audit_id = $1 ORDER BY name",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await
        .map_err(sql("list artifacts"))?;
        rows.iter()
            .map(|r| {
                Ok(ArtifactInfo {
                    name: r.try_get("name")?,
                    media_type: r.try_get("media_type")?,
                    sha256: r.try_get("sha256")?,
                    size: r
                        .try_get::<i64, _>("size")
                        .or_else(|_| r.try_get::<i32, _>("size").map(i64::from))?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql("list artifacts"))
    }

    pub async fn counts(&self) -> Result<QueueCounts, DbError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM audits GROUP BY state")
                .fetch_all(self.pool())
                .await
                .map_err(sql("count audits"))?;
        let mut c = QueueCounts::default();
        for (state, n) in rows {
            match state.as_str() {
                "queued" => c.queued = n,
                "running" => c.running = n,
                "done" => c.done = n,
                "failed" => c.failed = n,
                _ => {}
            }
        }
        Ok(c)
    }

    pub async fn workers(&self) -> Result<Vec<WorkerRow>, DbError> {
        let rows = sqlx::query(
            "SELECT name, started_at, last_seen, current, done, failed, state FROM workers
             ORDER BY name",
        )
        .fetch_all(self.pool())
        .await
        .map_err(sql("list workers"))?;
        rows.iter()
            .map(|r| {
                Ok(WorkerRow {
                    name: r.try_get("name")?,
                    started_at: r.try_get("started_at")?,
                    last_seen: r.try_get("last_seen")?,
                    current: r.try_get("current")?,
                    done: r.try_get("done")?,
                    failed: r.try_get("failed")?,
                    state: r.try_get("state")?,
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(sql("list workers"))
    }
}

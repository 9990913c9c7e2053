//! Models the zoo has seen, and the sha256 each (source, revision) had at
//! its first fetch: a revision is a commit, and a commit's file must not
//! change.

use sqlx::Row;

use crate::{Db, DbError, now_ms, sql};

/// One model, by the sha256 of its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRow {
    pub sha256: String,
    pub name: String,
    pub source: String,
    pub revision: Option<String>,
    /// JSON: the manifest's provenance.
    pub provenance: String,
    pub first_seen: i64,
}

/// What [`Db::check_revision`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevisionCheck {
    /// First fetch of this revision: recorded.
    New,
    /// Seen before with the same sha256.
    Same,
    /// Seen before with another sha256: the file at that commit changed.
    Changed { recorded: String },
}

pub(crate) fn model_from(r: &sqlx::any::AnyRow) -> Result<ModelRow, sqlx::Error> {
    Ok(ModelRow {
        sha256: r.try_get("sha256")?,
        name: r.try_get("name")?,
        source: r.try_get("source")?,
        revision: r.try_get("revision")?,
        provenance: r.try_get("provenance")?,
        first_seen: r.try_get("first_seen")?,
    })
}

impl Db {
    /// Records a model the first time its sha256 is seen (later sightings
    /// change nothing: first seen stays first).
    pub async fn record_model(&self, m: &ModelRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO models (sha256, name, source, revision, provenance, first_seen)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(&m.sha256)
        .bind(&m.name)
        .bind(&m.source)
        .bind(&m.revision)
        .bind(&m.provenance)
        .bind(if m.first_seen > 0 {
            m.first_seen
        } else {
            now_ms()
        })
        .execute(self.pool())
        .await
        .map_err(sql("record a model"))?;
        Ok(())
    }

    pub async fn model(&self, sha256: &str) -> Result<Option<ModelRow>, DbError> {
        let row = sqlx::query("SELECT * FROM models WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(self.pool())
            .await
            .map_err(sql("read a model"))?;
        row.as_ref()
            .map(model_from)
            .transpose()
            .map_err(sql("read a model"))
    }

    pub async fn models(&self) -> Result<Vec<ModelRow>, DbError> {
        let rows = sqlx::query("SELECT * FROM models ORDER BY name, first_seen")
            .fetch_all(self.pool())
            .await
            .map_err(sql("list models"))?;
        rows.iter()
            .map(model_from)
            .collect::<Result<_, _>>()
            .map_err(sql("list models"))
    }

    /// Records `sha256` for (`source`, `revision`) at its first fetch, and
    /// compares later fetches with it.
    pub async fn check_revision(
        &self,
        source: &str,
        revision: &str,
        sha256: &str,
    ) -> Result<RevisionCheck, DbError> {
        let n = sqlx::query(
            "INSERT INTO revisions (source, revision, sha256, first_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (source, revision) DO NOTHING",
        )
        .bind(source)
        .bind(revision)
        .bind(sha256)
        .bind(now_ms())
        .execute(self.pool())
        .await
        .map_err(sql("record a revision"))?
        .rows_affected();
        if n == 1 {
            return Ok(RevisionCheck::New);
        }
        let (recorded,): (String,) =
            sqlx::query_as("SELECT sha256 FROM revisions WHERE source = $1 AND revision = $2")
                .bind(source)
                .bind(revision)
                .fetch_one(self.pool())
                .await
                .map_err(sql("read a revision"))?;
        Ok(if recorded == sha256 {
            RevisionCheck::Same
        } else {
            RevisionCheck::Changed { recorded }
        })
    }
}

//! The audit registry: the models a zoo has seen, every audit asked of it
//! (which is also the work queue), and each audit's artifacts (report,
//! scores, renderings, signed envelopes) stored in the database itself, so
//! that any worker on any machine can write them and any server serve them.
//!
//! One code path for both databases, through sqlx's `Any` driver:
//! - **SQLite** (`sqlite:///path/zoo.db`, or a bare file path): one file, no
//!   server; write-ahead log on, so readers never wait for the writer.
//! - **PostgreSQL** (`postgres://…`): a fleet of workers and servers. Claims
//!   take `FOR UPDATE SKIP LOCKED`, so workers never wait on each other.
//!
//! The schema is versioned by sqlx migrations ([`Db::migrate`];
//! `zooaudit registry migrate`). [`Db::open`] refuses a database whose schema
//! is older (run migrate) or newer (a newer zooaudit wrote it) than this build.
//!
//! The queue ([`queue`]): an audit is claimed with a lease that its worker
//! renews while it works; a worker that dies stops renewing, and once the
//! lease runs out any worker may claim the audit again. Completion is written
//! only by the worker that holds the claim, in one transaction with the
//! artifacts, so an audit has exactly one result however many workers tried.

pub mod models;
pub mod queue;
pub mod read;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

pub use models::{ModelRow, RevisionCheck};
pub use queue::{Claimed, Completed, NewAudit, Submitted};
pub use read::{ArtifactInfo, AuditRow, QueueCounts, WorkerRow};

/// Errors of the registry; one line each, naming the database or the audit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database URL is not one this build speaks.
    #[error("--db {url}: {message}")]
    Url { url: String, message: String },
    /// The database answered with an error, or could not be reached.
    #[error("database {what}: {source}")]
    Sql {
        what: &'static str,
        #[source]
        source: sqlx::Error,
    },
    /// The schema is not the one this build reads.
    #[error("{0}")]
    Schema(String),
    /// A migration failed.
    #[error("migrating the registry: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored value does not read back (a column's JSON, say).
    #[error("audit {id}: {message}")]
    Corrupt { id: String, message: String },
}

pub(crate) fn sql(what: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Sql { what, source }
}

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A connected registry.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    url: String,
}

static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The schema version this build reads and writes (the newest migration).
pub fn schema_version() -> i64 {
    SQLITE.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Milliseconds since the Unix epoch, the registry's time unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn ms(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

/// The URL sqlx connects to: `sqlite:` URLs gain `mode=rwc` (create the
/// file); a bare path is an SQLite file.
pub fn normalise_url(url: &str) -> Result<(String, Backend), DbError> {
    let bad = |m: &str| DbError::Url {
        url: url.to_string(),
        message: m.to_string(),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((url.to_string(), Backend::Postgres));
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest.split('?').next().unwrap_or(rest).to_string()
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest.split('?').next().unwrap_or(rest).to_string()
    } else if url.contains("://") {
        return Err(bad(
            "not a database this build speaks (postgres://…, sqlite://PATH, or a file path)",
        ));
    } else {
        url.to_string()
    };
    if path.is_empty() || path == ":memory:" {
        return Err(bad(
            "an SQLite registry must be a file (workers and servers share it)",
        ));
    }
    let abs = std::path::absolute(Path::new(&path)).map_err(|e| bad(&e.to_string()))?;
    Ok((
        format!("sqlite://{}?mode=rwc", abs.display()),
        Backend::Sqlite,
    ))
}

impl Db {
    /// Connects without checking the schema (for `migrate`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let (full, backend) = normalise_url(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect(&full)
            .await
            .map_err(sql("connect"))?;
        if backend == Backend::Sqlite {
            // WAL: readers (the server) never wait for a writing worker;
            // a writer waits up to 10 s for another.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(sql("set WAL mode"))?;
        }
        Ok(Db {
            pool,
            backend,
            url: url.to_string(),
        })
    }

    /// Connects and checks that the schema is this build's.
    pub async fn open(url: &str, max_connections: u32) -> Result<Db, DbError> {
        let db = Db::connect(url, max_connections).await?;
        db.check_schema().await?;
        Ok(db)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.backend {
            Backend::Sqlite => &SQLITE,
            Backend::Postgres => &POSTGRES,
        }
    }

    /// Applies the migrations this build has that the database lacks; the
    /// versions applied (empty when it was current).
    pub async fn migrate(&self) -> Result<Vec<i64>, DbError> {
        let before = self.applied().await.unwrap_or_default();
        self.migrator().run(&self.pool).await?;
        let after = self.applied().await?;
        Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
    }

    /// The migration versions recorded in the database.
    pub async fn applied(&self) -> Result<Vec<i64>, DbError> {
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&self.pool)
                .await
                .map_err(sql("read the schema version"))?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// Refuses a schema other than this build's, saying what to do.
    pub async fn check_schema(&self) -> Result<(), DbError> {
        let applied = self.applied().await.map_err(|_| {
            DbError::Schema(format!(
                "{}: not an audit registry yet (run `zooaudit registry migrate --db {}`)",
                self.url, self.url
            ))
        })?;
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        if let Some(v) = applied.iter().find(|v| !known.contains(v)) {
            return Err(DbError::Schema(format!(
                "{}: schema version {v} is newer than this zooaudit reads ({}); upgrade zooaudit",
                self.url,
                schema_version()
            )));
        }
        if let Some(v) = known.iter().find(|v| !applied.contains(v)) {
            return Err(DbError::Schema(format!(
                "{}: schema version {v} is not applied (run `zooaudit registry migrate --db {}`)",
                self.url, self.url
            )));
        }
        Ok(())
    }

    /// Whether the database answers (for /healthz).
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(sql("ping"))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

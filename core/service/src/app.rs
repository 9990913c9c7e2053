//! The service's entry points for synchronous callers (the CLI): each
//! starts its own tokio runtime, turns SIGTERM / Ctrl-C into a graceful
//! shutdown, and returns what happened.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use zooaudit_auditdb::{Db, Submitted};

use crate::ServiceError;
use crate::execute::Runner;
use crate::intake::Intake;
use crate::server::{ServerConfig, router, serve};
use crate::worker::{WorkerOptions, WorkerStats};

fn runtime() -> Result<tokio::runtime::Runtime, ServiceError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServiceError::system("cannot start the runtime"))
}

/// A channel that turns true on SIGTERM or Ctrl-C.
fn shutdown_signal() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term => {},
        }
        eprintln!("shutting down (finishing or releasing running audits)");
        let _ = tx.send(true);
    });
    rx
}

/// `zooaudit registry migrate`: the schema versions applied.
pub fn migrate(url: &str) -> Result<Vec<i64>, ServiceError> {
    runtime()?.block_on(async {
        let db = Db::connect(url, 2).await?;
        let applied = db.migrate().await?;
        db.close().await;
        Ok(applied)
    })
}

/// `zooaudit submit`: queues an audit of a zoo model (`model`) or a manifest
/// (`manifest` text), as `POST /v1/audits` does.
pub fn submit(
    url: &str,
    intake: &Intake,
    model: Option<&str>,
    manifest: Option<&str>,
    references: &[String],
) -> Result<(Submitted, zooaudit_auditdb::NewAudit), ServiceError> {
    let new = match (model, manifest) {
        (Some(m), None) => intake.zoo_model(m, references)?,
        (None, Some(t)) => intake.manifest(t, references)?,
        _ => {
            return Err(ServiceError::Request(
                "give exactly one of a model name and a manifest".into(),
            ));
        }
    };
    runtime()?.block_on(async {
        let db = Db::open(url, 2).await?;
        let s = db.submit(&new).await?;
        db.close().await;
        Ok((s, new))
    })
}

/// `zooaudit worker`: runs until SIGTERM (or `max_jobs`).
pub fn worker(url: &str, runner: Runner, opts: WorkerOptions) -> Result<WorkerStats, ServiceError> {
    let rt = runtime()?;
    let stats = rt.block_on(async {
        let db = Db::open(url, 2 + opts.concurrency as u32).await?;
        let stop = shutdown_signal();
        Ok::<_, ServiceError>(crate::worker::run(db, Arc::new(runner), opts, stop).await)
    })?;
    // A released audit's thread may still be running: do not wait for it.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(stats)
}

/// Secrets of the HTTP service.
#[derive(Debug, Clone, Default)]
pub struct Secrets {
    /// Bearer token for `POST /v1/audits`.
    pub token: Option<String>,
    /// `X-Webhook-Secret` of the Hugging Face webhook.
    pub hook_secret: Option<String>,
}

/// `zooaudit serve`: the HTTP service over the registry at `url`, with
/// `embedded` worker options when it also runs audits (one machine, one
/// process).
pub fn serve_zoo(
    url: &str,
    intake: Intake,
    secrets: Secrets,
    listen: SocketAddr,
    embedded: Option<(Runner, WorkerOptions)>,
    ready: impl FnOnce(SocketAddr) + Send + 'static,
) -> Result<(), ServiceError> {
    let rt = runtime()?;
    let result = rt.block_on(async {
        let db = Db::open(url, 8).await?;
        let stop = shutdown_signal();
        let worker = embedded.map(|(runner, opts)| {
            let (db, stop) = (db.clone(), stop.clone());
            tokio::spawn(crate::worker::run(db, Arc::new(runner), opts, stop))
        });
        let app = router(ServerConfig {
            db,
            intake,
            token: secrets.token,
            hook_secret: secrets.hook_secret,
        });
        let mut stop_server = stop.clone();
        let served = serve(app, listen, ready, async move {
            let _ = stop_server.wait_for(|s| *s).await;
        })
        .await;
        if let Some(w) = worker {
            let _ = w.await;
        }
        served
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

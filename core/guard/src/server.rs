//! The guard as an HTTP service (axum on tokio).
//!
//! - `POST /v1/embed`: body = one aligned face (PNG, JPEG or WebP;
//!   `Content-Type: image/*` or `application/octet-stream`). Answer: JSON
//!   `{embedding, score, threshold, verdict: "agree" | "disagree", image_sha256}`;
//!   with `--on-disagree reject` a disagreement is HTTP 409 without the
//!   embedding.
//! - `POST /v1/embed/batch`: JSON `{"images": ["<base64>", ...]}`; answers in
//!   order, `{"results": [...]}` (an undecodable image gets its own error entry).
//! - `GET /healthz`, `GET /metrics` (Prometheus text).
//!
//! A drift monitor ([`drift`]) compares the recent disagreement rate with
//! the bundle's held-out clean FNMR; `/healthz` says `degraded` while it is
//! beyond it, and each episode's start and end are quarantine-log lines.
//!
//! Every disagreement is appended to the quarantine log (JSON lines: time,
//! image sha256, score, threshold, operating point), and with a quarantine
//! directory the image itself is kept as `<sha256>.img`. Limits: request
//! body size, image dimensions and decoder memory, a body-read timeout (slow
//! clients get 408), `concurrency` model workers fed by a bounded queue
//! (when it is full a request waits up to `queue_timeout`, then 503), a
//! per-request timeout (504). A worker takes every request already queued
//! (up to `model_batch` images) and runs both models once on them:
//! micro-batching that adds no waiting; larger batch requests run in pieces
//! of `model_batch`, so the models' working memory is bounded.
//! SIGTERM or Ctrl-C stops accepting and lets in-flight requests finish.

mod drift;
mod handlers;
mod metrics;
mod quarantine;
mod queue;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::pair::Pair;
use handlers::{embed, embed_batch, healthz};
use metrics::{Metrics, metrics};
use queue::{Job, worker};

/// What to do when the pair disagrees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Answer with the verdict (and the embedding).
    Flag,
    /// HTTP 409, no embedding.
    Reject,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub operating_point: f64,
    pub policy: Policy,
    /// Largest request body (bytes).
    pub max_body: usize,
    /// Requests in the models at once.
    pub concurrency: usize,
    /// How long a request may wait for a model slot before 503.
    pub queue_timeout: Duration,
    /// Whole-request budget (body read, wait, models) before 408/504.
    pub request_timeout: Duration,
    /// JSON-lines log of disagreements.
    pub quarantine_log: Option<PathBuf>,
    /// Directory to keep disagreeing images in.
    pub quarantine_dir: Option<PathBuf>,
    /// Most images in one batch request.
    pub max_batch: usize,
    /// Most images one model run takes (micro-batches and batch requests
    /// are run in pieces of this size): bounds the models' working memory
    /// whatever the load.
    pub model_batch: usize,
    /// The drift monitor's window: at most this many recent decisions…
    pub drift_window: usize,
    /// …none older than this.
    pub drift_max_age: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            operating_point: 0.01,
            policy: Policy::Flag,
            max_body: 8 << 20,
            concurrency: 4,
            queue_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            quarantine_log: None,
            quarantine_dir: None,
            max_batch: 64,
            model_batch: 8,
            drift_window: 200,
            drift_max_age: Duration::from_secs(600),
        }
    }
}

struct AppState {
    pair: Arc<Pair>,
    threshold: f32,
    opts: ServeOptions,
    jobs: tokio::sync::mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    quarantine: Mutex<Option<std::fs::File>>,
    drift: Mutex<drift::Drift>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

/// The service's routes over `pair`.
pub fn router(pair: Arc<Pair>, opts: ServeOptions) -> Result<Router, crate::GuardError> {
    let op = pair
        .bundle
        .operating_point(opts.operating_point)
        .ok_or_else(|| {
            crate::GuardError::Option(format!(
                "--operating-point {}: the bundle has thresholds for {:?}",
                opts.operating_point,
                pair.bundle
                    .thresholds
                    .iter()
                    .map(|o| o.target_fnmr)
                    .collect::<Vec<_>>()
            ))
        })?;
    let quarantine = match &opts.quarantine_log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    crate::GuardError::file(p, format!("cannot open quarantine log: {e}"))
                })?,
        ),
        None => None,
    };
    // Room for a few jobs per worker; beyond that requests wait, then 503.
    let workers = opts.concurrency.max(1);
    let (tx, rx) = tokio::sync::mpsc::channel(workers * 4);
    let queue = Arc::new(Mutex::new(rx));
    let model_batch = opts.model_batch.max(1);
    let drift = drift::Drift::new(opts.drift_window, opts.drift_max_age, op);
    let state = Arc::new(AppState {
        drift: Mutex::new(drift),
        threshold: op.threshold,
        jobs: tx,
        pair: pair.clone(),
        opts,
        metrics: Arc::new(Metrics::default()),
        quarantine: Mutex::new(quarantine),
    });
    for i in 0..workers {
        // Workers hold the queue and the counters, not the state: when the
        // router goes, the queue closes and they end.
        let (pair, queue, st) = (pair.clone(), queue.clone(), state.metrics.clone());
        let threshold = state.threshold;
        std::thread::Builder::new()
            .name(format!("guard-model-{i}"))
            .spawn(move || worker(pair, threshold, model_batch, queue, st))
            .map_err(crate::GuardError::system("cannot start a model worker"))?;
    }
    Ok(Router::new()
        .route("/v1/embed", post(embed))
        .route("/v1/embed/batch", post(embed_batch))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state))
}

/// Serves until SIGTERM / Ctrl-C (or `stop` resolves), then lets
/// in-flight requests finish. `ready` gets the bound address.
pub async fn serve(
    pair: Arc<Pair>,
    opts: ServeOptions,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), crate::GuardError> {
    let app = router(pair, opts)?;
    let listener =
        tokio::net::TcpListener::bind(listen)
            .await
            .map_err(crate::GuardError::system(format!(
                "cannot listen on {listen}"
            )))?;
    let addr = listener
        .local_addr()
        .map_err(crate::GuardError::system("local address"))?;
    ready(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
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
        })
        .await
        .map_err(crate::GuardError::system("server"))
}

/// [`serve`] on its own tokio runtime (for synchronous callers).
pub fn serve_blocking(
    pair: Arc<Pair>,
    opts: ServeOptions,
    listen: SocketAddr,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), crate::GuardError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(crate::GuardError::system("cannot start the runtime"))?
        .block_on(serve(pair, opts, listen, ready))
}

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

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::json;

use crate::pair::{DecideError, Decision, Pair, sha256_hex};

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
        }
    }
}

const BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Default)]
struct Metrics {
    requests: [AtomicU64; 4],
    images: AtomicU64,
    agreements: AtomicU64,
    disagreements: AtomicU64,
    bad_requests: AtomicU64,
    overloaded: AtomicU64,
    model_errors: AtomicU64,
    in_flight: AtomicU64,
    batches: AtomicU64,
    batched_images: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

const ENDPOINTS: [&str; 4] = ["embed", "embed_batch", "healthz", "metrics"];

struct AppState {
    pair: Arc<Pair>,
    threshold: f32,
    opts: ServeOptions,
    jobs: tokio::sync::mpsc::Sender<Job>,
    metrics: Arc<Metrics>,
    quarantine: Mutex<Option<std::fs::File>>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

impl AppState {
    fn observe(&self, started: Instant) {
        let s = started.elapsed().as_secs_f64();
        let m = &self.metrics;
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                m.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        m.latency_count.fetch_add(1, Ordering::Relaxed);
        m.latency_sum_us
            .fetch_add((s * 1e6) as u64, Ordering::Relaxed);
    }

    fn quarantine(&self, d: &Decision, bytes: &[u8]) {
        let line = json!({
            "time": humantime_now(),
            "image_sha256": d.image_sha256,
            "score": d.score,
            "threshold": d.threshold,
            "operating_point": self.opts.operating_point,
        });
        let mut f = self.quarantine.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = f.as_mut() {
            let _ = writeln!(f, "{line}");
            let _ = f.flush();
        }
        if let Some(dir) = &self.opts.quarantine_dir {
            let _ = std::fs::create_dir_all(dir);
            let _ = std::fs::write(dir.join(format!("{}.img", d.image_sha256)), bytes);
        }
    }

    /// Runs the pair on decoded images: queued for the model workers
    /// (waiting up to `queue_timeout` for room, else 503), answered within
    /// the request's deadline (else 504).
    async fn run(
        self: &Arc<Self>,
        images: Vec<image::RgbImage>,
        shas: Vec<String>,
        deadline: Instant,
    ) -> Result<Vec<Decision>, Response> {
        let wait = self
            .opts
            .queue_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            images,
            shas,
            reply,
        };
        if tokio::time::timeout(wait, self.jobs.send(job))
            .await
            .map_or(true, |r| r.is_err())
        {
            self.metrics.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(error(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: the model queue is full; retry later",
            ));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, answer).await {
            Err(_) => Err(error(
                StatusCode::GATEWAY_TIMEOUT,
                "the models did not answer in time",
            )),
            Ok(Err(_)) => {
                self.metrics.model_errors.fetch_add(1, Ordering::Relaxed);
                Err(error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "model worker failed",
                ))
            }
            Ok(Ok(Err(e))) => {
                self.metrics.model_errors.fetch_add(1, Ordering::Relaxed);
                Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
            }
            Ok(Ok(Ok(d))) => Ok(d),
        }
    }
}

/// Images of one request waiting for the models.
struct Job {
    images: Vec<image::RgbImage>,
    shas: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Decision>, DecideError>>,
}

/// A model worker: takes a queued job, adds every job already waiting
/// (micro-batching, up to `model_batch` images, never waiting for more),
/// runs both models on the lot (in pieces of `model_batch`), and answers
/// each job its share.
fn worker(
    pair: Arc<Pair>,
    threshold: f32,
    model_batch: usize,
    queue: Arc<Mutex<tokio::sync::mpsc::Receiver<Job>>>,
    metrics: Arc<Metrics>,
) {
    loop {
        let mut jobs = Vec::new();
        {
            let mut rx = queue.lock().unwrap_or_else(|p| p.into_inner());
            let Some(first) = rx.blocking_recv() else {
                return;
            };
            let mut n = first.images.len();
            jobs.push(first);
            while n < model_batch {
                match rx.try_recv() {
                    Ok(j) => {
                        n += j.images.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                }
            }
        }
        let images: Vec<image::RgbImage> =
            jobs.iter().flat_map(|j| j.images.iter().cloned()).collect();
        let shas: Vec<String> = jobs.iter().flat_map(|j| j.shas.iter().cloned()).collect();
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .batched_images
            .fetch_add(images.len() as u64, Ordering::Relaxed);
        let decided: Result<Vec<Decision>, DecideError> = images
            .chunks(model_batch)
            .zip(shas.chunks(model_batch))
            .try_fold(Vec::with_capacity(images.len()), |mut all, (i, s)| {
                all.extend(pair.decide(i, s, threshold)?);
                Ok(all)
            });
        match decided {
            Ok(all) => {
                let mut it = all.into_iter();
                for j in jobs {
                    let mine: Vec<Decision> = it.by_ref().take(j.images.len()).collect();
                    let _ = j.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for j in jobs {
                    let _ = j.reply.send(Err(DecideError::Model(msg.clone())));
                }
            }
        }
    }
}

fn humantime_now() -> String {
    let d = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Reads the body within the size limit and the request's deadline.
async fn read_body(
    body: Body,
    max: usize,
    deadline: Instant,
) -> Result<axum::body::Bytes, Response> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(error(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
        Ok(Err(e)) => {
            let too_big = std::error::Error::source(&e)
                .is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            if too_big {
                Err(error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body over the limit of {max} bytes"),
                ))
            } else {
                Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {e}"),
                ))
            }
        }
        Ok(Ok(b)) => Ok(b),
    }
}

fn decide_error(state: &AppState, e: DecideError) -> Response {
    match e {
        DecideError::BadImage(m) => {
            state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::UNPROCESSABLE_ENTITY, m)
        }
        DecideError::TooLarge(m) => {
            state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::PAYLOAD_TOO_LARGE, m)
        }
        DecideError::Model(m) => {
            state.metrics.model_errors.fetch_add(1, Ordering::Relaxed);
            error(StatusCode::INTERNAL_SERVER_ERROR, m)
        }
    }
}

fn answer(d: &Decision, policy: Policy) -> (StatusCode, serde_json::Value) {
    let verdict = if d.agree { "agree" } else { "disagree" };
    if !d.agree && policy == Policy::Reject {
        return (
            StatusCode::CONFLICT,
            json!({"verdict": verdict, "score": d.score, "threshold": d.threshold,
                   "image_sha256": d.image_sha256,
                   "error": "the model pair disagrees on this image: a backdoor may be active"}),
        );
    }
    (
        StatusCode::OK,
        json!({"verdict": verdict, "score": d.score, "threshold": d.threshold,
               "image_sha256": d.image_sha256, "embedding": d.embedding}),
    )
}

/// A declared body over the limit is refused before a byte of it is read.
fn declared_too_large(headers: &HeaderMap, max: usize) -> Option<Response> {
    let n = headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()?;
    (n > max as u64).then(|| {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body of {n} bytes is over the limit of {max} bytes"),
        )
    })
}

fn image_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .is_some_and(|v| {
            matches!(
                v.as_str(),
                "image/png" | "image/jpeg" | "image/webp" | "application/octet-stream"
            )
        })
}

async fn embed(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    state.metrics.requests[0].fetch_add(1, Ordering::Relaxed);
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = embed_inner(&state, req, started).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    state.observe(started);
    r
}

async fn embed_inner(state: &Arc<AppState>, req: Request, started: Instant) -> Response {
    let deadline = started + state.opts.request_timeout;
    if !image_content_type(req.headers()) {
        state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send one image as image/png, image/jpeg, image/webp or application/octet-stream",
        );
    }
    if let Some(r) = declared_too_large(req.headers(), state.opts.max_body) {
        state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        return r;
    }
    let bytes = match read_body(req.into_body(), state.opts.max_body, deadline).await {
        Ok(b) => b,
        Err(r) => {
            state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    let sha = sha256_hex(&bytes);
    let img = match state
        .pair
        .decode(&bytes, &format!("request body (sha256 {sha})"))
    {
        Ok(i) => i,
        Err(e) => return decide_error(state, e),
    };
    let d = match state.run(vec![img], vec![sha], deadline).await {
        Ok(mut d) => d.remove(0),
        Err(r) => return r,
    };
    state.metrics.images.fetch_add(1, Ordering::Relaxed);
    if d.agree {
        state.metrics.agreements.fetch_add(1, Ordering::Relaxed);
    } else {
        state.metrics.disagreements.fetch_add(1, Ordering::Relaxed);
        state.quarantine(&d, &bytes);
    }
    let (status, body) = answer(&d, state.opts.policy);
    (status, axum::Json(body)).into_response()
}

async fn embed_batch(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    state.metrics.requests[1].fetch_add(1, Ordering::Relaxed);
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = batch_inner(&state, req, started).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    state.observe(started);
    r
}

async fn batch_inner(state: &Arc<AppState>, req: Request, started: Instant) -> Response {
    let deadline = started + state.opts.request_timeout;
    let json_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    if !json_type {
        state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send {\"images\": [\"<base64>\", ...]} as application/json",
        );
    }
    if let Some(r) = declared_too_large(req.headers(), state.opts.max_body) {
        state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        return r;
    }
    let bytes = match read_body(req.into_body(), state.opts.max_body, deadline).await {
        Ok(b) => b,
        Err(r) => {
            state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            return r;
        }
    };
    let list: Vec<String> = match serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("images").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
    {
        Some(l) => l,
        None => {
            state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(
                StatusCode::BAD_REQUEST,
                "expected {\"images\": [\"<base64>\", ...]}",
            );
        }
    };
    if list.is_empty() || list.len() > state.opts.max_batch {
        state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
        return error(
            StatusCode::BAD_REQUEST,
            format!("a batch holds 1 to {} images", state.opts.max_batch),
        );
    }
    // Decode each; errors stay in their slot.
    let mut slots: Vec<Result<(Vec<u8>, String), Response>> = Vec::new();
    let mut images = Vec::new();
    let mut shas = Vec::new();
    for (i, b64) in list.iter().enumerate() {
        let raw = match base64::engine::general_purpose::STANDARD.decode(b64.trim()) {
            Ok(r) => r,
            Err(e) => {
                slots.push(Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("images[{i}]: not base64: {e}"),
                )));
                continue;
            }
        };
        let sha = sha256_hex(&raw);
        match state.pair.decode(&raw, &format!("images[{i}]")) {
            Ok(img) => {
                images.push(img);
                shas.push(sha.clone());
                slots.push(Ok((raw, sha)));
            }
            Err(e) => slots.push(Err(decide_error(state, e))),
        }
    }
    let decisions = if images.is_empty() {
        Vec::new()
    } else {
        match state.run(images, shas, deadline).await {
            Ok(d) => d,
            Err(r) => return r,
        }
    };
    let mut it = decisions.into_iter();
    let mut results = Vec::new();
    for slot in slots {
        match slot {
            Ok((raw, _)) => {
                let Some(d) = it.next() else { break };
                state.metrics.images.fetch_add(1, Ordering::Relaxed);
                if d.agree {
                    state.metrics.agreements.fetch_add(1, Ordering::Relaxed);
                } else {
                    state.metrics.disagreements.fetch_add(1, Ordering::Relaxed);
                    state.quarantine(&d, &raw);
                }
                let (status, mut body) = answer(&d, state.opts.policy);
                body["status"] = json!(status.as_u16());
                results.push(body);
            }
            Err(r) => {
                let status = r.status().as_u16();
                let body = axum::body::to_bytes(r.into_body(), 1 << 16)
                    .await
                    .unwrap_or_default();
                let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(json!({}));
                v["status"] = json!(status);
                results.push(v);
            }
        }
    }
    (StatusCode::OK, axum::Json(json!({"results": results}))).into_response()
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.requests[2].fetch_add(1, Ordering::Relaxed);
    let b = &state.pair.bundle;
    axum::Json(json!({
        "status": "ok",
        "probe": {"name": b.probe.name, "sha256": b.probe.sha256},
        "reference": {"name": b.reference.name, "sha256": b.reference.sha256},
        "operating_point": state.opts.operating_point,
        "threshold": state.threshold,
        "schedule": state.pair.schedule,
    }))
    .into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.requests[3].fetch_add(1, Ordering::Relaxed);
    let m = &state.metrics;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut s = String::new();
    s.push_str("# HELP zooaudit_guard_requests_total Requests by endpoint.\n# TYPE zooaudit_guard_requests_total counter\n");
    for (i, e) in ENDPOINTS.iter().enumerate() {
        s.push_str(&format!(
            "zooaudit_guard_requests_total{{endpoint=\"{e}\"}} {}\n",
            g(&m.requests[i])
        ));
    }
    for (name, help, v) in [
        ("images_total", "Images decided.", g(&m.images)),
        (
            "agreements_total",
            "Images on which the pair agreed.",
            g(&m.agreements),
        ),
        (
            "disagreements_total",
            "Images on which the pair disagreed (quarantined).",
            g(&m.disagreements),
        ),
        (
            "bad_requests_total",
            "Requests or images refused as malformed or too large.",
            g(&m.bad_requests),
        ),
        (
            "overloaded_total",
            "Requests answered 503 because every model slot was busy.",
            g(&m.overloaded),
        ),
        ("model_errors_total", "Model failures.", g(&m.model_errors)),
        (
            "model_batches_total",
            "Model runs (each on one micro-batch of requests).",
            g(&m.batches),
        ),
        (
            "model_batch_images_total",
            "Images over all model runs (÷ batches = mean micro-batch).",
            g(&m.batched_images),
        ),
    ] {
        s.push_str(&format!("# HELP zooaudit_guard_{name} {help}\n# TYPE zooaudit_guard_{name} counter\nzooaudit_guard_{name} {v}\n"));
    }
    s.push_str(&format!(
        "# HELP zooaudit_guard_in_flight Requests being served.\n# TYPE zooaudit_guard_in_flight gauge\nzooaudit_guard_in_flight {}\n",
        g(&m.in_flight)
    ));
    s.push_str("# HELP zooaudit_guard_request_seconds Latency of embed requests.\n# TYPE zooaudit_guard_request_seconds histogram\n");
    for (i, b) in BUCKETS.iter().enumerate() {
        s.push_str(&format!(
            "zooaudit_guard_request_seconds_bucket{{le=\"{b}\"}} {}\n",
            g(&m.latency_buckets[i])
        ));
    }
    let count = g(&m.latency_count);
    s.push_str(&format!(
        "zooaudit_guard_request_seconds_bucket{{le=\"+Inf\"}} {count}\n"
    ));
    s.push_str(&format!(
        "zooaudit_guard_request_seconds_sum {}\nzooaudit_guard_request_seconds_count {count}\n",
        g(&m.latency_sum_us) as f64 / 1e6
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s).into_response()
}

/// The service's routes over `pair`.
pub fn router(pair: Arc<Pair>, opts: ServeOptions) -> Result<Router, crate::GuardError> {
    let op = pair
        .bundle
        .operating_point(opts.operating_point)
        .ok_or_else(|| {
            crate::GuardError::Other(format!(
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
    let state = Arc::new(AppState {
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
            .map_err(|e| crate::GuardError::Other(format!("cannot start a model worker: {e}")))?;
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
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| crate::GuardError::Other(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::GuardError::Other(e.to_string()))?;
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
        .map_err(|e| crate::GuardError::Other(format!("server: {e}")))
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
        .map_err(|e| crate::GuardError::Other(format!("cannot start the runtime: {e}")))?
        .block_on(serve(pair, opts, listen, ready))
}

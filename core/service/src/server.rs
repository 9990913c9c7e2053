//! The zoo's HTTP service (axum): intake (`POST /v1/audits`, bearer token),
//! Hugging Face webhooks (`POST /v1/hooks/huggingface`, shared secret), the
//! read API, badges, the dashboard ([`crate::pages`]), `/metrics` and
//! `/healthz`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use subtle::ConstantTimeEq;
use zooaudit_auditdb::Db;

use crate::intake::Intake;
use crate::{ServiceError, pages};

/// Largest request body (a manifest, a webhook payload).
pub const MAX_BODY: usize = 256 * 1024;

/// What the service needs.
pub struct ServerConfig {
    pub db: Db,
    pub intake: Intake,
    /// Bearer token for `POST /v1/audits`; `None` refuses every submission.
    pub token: Option<String>,
    /// `X-Webhook-Secret` of the Hugging Face webhook; `None` refuses every
    /// delivery.
    pub hook_secret: Option<String>,
}

pub(crate) struct AppState {
    pub db: Db,
    pub intake: Intake,
    token: Option<String>,
    hook_secret: Option<String>,
    /// Webhook deliveries by outcome, since start.
    hooks: Mutex<BTreeMap<&'static str, u64>>,
    submissions: AtomicU64,
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"error": message.into()}))).into_response()
}

fn db_error(e: zooaudit_auditdb::DbError) -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The service's routes.
pub fn router(cfg: ServerConfig) -> Router {
    let state = Arc::new(AppState {
        db: cfg.db,
        intake: cfg.intake,
        token: cfg.token,
        hook_secret: cfg.hook_secret,
        hooks: Mutex::new(BTreeMap::new()),
        submissions: AtomicU64::new(0),
    });
    Router::new()
        .route("/", get(pages::dashboard))
        .route("/audits/{id}", get(pages::audit_page))
        .route("/zoo/{name}", get(pages::model_page))
        .route("/v1/audits", post(submit).get(list_audits))
        .route("/v1/audits/{id}", get(audit))
        .route("/v1/audits/{id}/{artifact}", get(artifact))
        .route("/v1/models/{sha256}", get(model))
        .route("/v1/badge/{file}", get(pages::badge))
        .route(
            "/v1/hooks/huggingface",
            post(crate::server::hooks::huggingface),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

fn same_secret(given: Option<&str>, expected: &Option<String>) -> bool {
    match (given, expected) {
        (Some(g), Some(e)) => bool::from(g.as_bytes().ct_eq(e.as_bytes())),
        _ => false,
    }
}

/// A submission: a zoo model by name (JSON `{"model": …, "references": […]}`)
/// or a manifest (TOML body, or JSON `{"manifest": "…"}`).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitJson {
    model: Option<String>,
    manifest: Option<String>,
    #[serde(default)]
    references: Vec<String>,
}

async fn submit(State(st): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Response {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !same_secret(bearer, &st.token) {
        return error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
    }
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let Ok(text) = std::str::from_utf8(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let planned = if ctype.starts_with("application/json") {
        match serde_json::from_str::<SubmitJson>(text) {
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")),
            Ok(SubmitJson {
                model: Some(m),
                manifest: None,
                references,
            }) => st.intake.zoo_model(&m, &references),
            Ok(SubmitJson {
                model: None,
                manifest: Some(t),
                references,
            }) => st.intake.manifest(&t, &references),
            Ok(_) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "give exactly one of `model` and `manifest`",
                );
            }
        }
    } else if ctype.starts_with("application/toml") || ctype.starts_with("text/") {
        st.intake.manifest(text, &[])
    } else {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/json ({\"model\": NAME}) or application/toml (a manifest)",
        );
    };
    let new = match planned {
        Ok(n) => n,
        Err(ServiceError::Request(m)) => return error(StatusCode::UNPROCESSABLE_ENTITY, m),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match st.db.submit(&new).await {
        Err(e) => db_error(e),
        Ok(s) => {
            st.submissions.fetch_add(1, Ordering::Relaxed);
            let status = if s.existing && !s.requeued {
                StatusCode::OK
            } else {
                StatusCode::ACCEPTED
            };
            (
                status,
                axum::Json(json!({
                    "id": s.id,
                    "state": s.state,
                    "existing": s.existing,
                    "requeued": s.requeued,
                    "candidate": new.candidate_name,
                    "references": serde_json::from_str::<serde_json::Value>(&new.refs).unwrap_or_default(),
                    "url": format!("/v1/audits/{}", s.id),
                })),
            )
                .into_response()
        }
    }
}

#[derive(serde::Deserialize)]
struct ListQuery {
    state: Option<String>,
    limit: Option<i64>,
}

async fn list_audits(State(st): State<Arc<AppState>>, Query(q): Query<ListQuery>) -> Response {
    match st
        .db
        .audits(q.state.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))
        .await
    {
        Ok(rows) => axum::Json(rows).into_response(),
        Err(e) => db_error(e),
    }
}

async fn audit(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let row = match st.db.audit(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no audit {id}")),
        Err(e) => return db_error(e),
    };
    let artifacts = match st.db.artifacts(&id).await {
        Ok(a) => a,
        Err(e) => return db_error(e),
    };
    let mut v = serde_json::to_value(&row).unwrap_or_default();
    v["artifacts"] = json!(
        artifacts
            .iter()
            .map(
                |a| json!({"name": a.name, "media_type": a.media_type, "sha256": a.sha256,
            "size": a.size, "url": format!("/v1/audits/{id}/{}", a.name)})
            )
            .collect::<Vec<_>>()
    );
    axum::Json(v).into_response()
}

async fn artifact(
    State(st): State<Arc<AppState>>,
    Path((id, name)): Path<(String, String)>,
) -> Response {
    match st.db.artifact(&id, &name).await {
        Ok(Some(a)) => ([(header::CONTENT_TYPE, a.media_type)], a.bytes).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("audit {id} has no {name}")),
        Err(e) => db_error(e),
    }
}

async fn model(State(st): State<Arc<AppState>>, Path(sha): Path<String>) -> Response {
    let sha = sha.to_lowercase();
    let m = match st.db.model(&sha).await {
        Ok(m) => m,
        Err(e) => return db_error(e),
    };
    let audits = match st.db.audits_of(&sha).await {
        Ok(a) => a,
        Err(e) => return db_error(e),
    };
    if m.is_none() && audits.is_empty() {
        return error(StatusCode::NOT_FOUND, format!("no model with sha256 {sha}"));
    }
    // The latest finished verdict per reference set.
    let mut latest: BTreeMap<String, serde_json::Value> = BTreeMap::new();
    for a in audits.iter().filter(|a| a.state == "done") {
        latest.entry(a.refs.clone()).or_insert_with(|| {
            json!({"references": serde_json::from_str::<serde_json::Value>(&a.refs).unwrap_or_default(),
                "verdict": a.verdict, "audit": a.id, "finished_at": a.finished_at})
        });
    }
    axum::Json(json!({
        "model": m.map(|m| json!({"sha256": m.sha256, "name": m.name, "source": m.source,
            "revision": m.revision, "first_seen": m.first_seen,
            "provenance": serde_json::from_str::<serde_json::Value>(&m.provenance).unwrap_or_default()})),
        "latest": latest.into_values().collect::<Vec<_>>(),
        "history": audits,
    }))
    .into_response()
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st.db.ping().await {
        Ok(()) => {
            axum::Json(json!({"status": "ok", "db": st.db.backend().as_str()})).into_response()
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Upper bounds (seconds) of the audit duration histogram.
const BUCKETS: [f64; 10] = [
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 3600.0, 7200.0,
];

async fn metrics(State(st): State<Arc<AppState>>) -> Response {
    let counts = match st.db.counts().await {
        Ok(c) => c,
        Err(e) => return db_error(e),
    };
    let durations = match st.db.durations().await {
        Ok(d) => d,
        Err(e) => return db_error(e),
    };
    let mut out = String::new();
    out.push_str("# HELP zooaudit_queue_depth Audits waiting for a worker.\n# TYPE zooaudit_queue_depth gauge\n");
    out.push_str(&format!("zooaudit_queue_depth {}\n", counts.queued));
    out.push_str(
        "# HELP zooaudit_audits Audits in the registry, by state.\n# TYPE zooaudit_audits gauge\n",
    );
    for (s, n) in [
        ("queued", counts.queued),
        ("running", counts.running),
        ("done", counts.done),
        ("failed", counts.failed),
    ] {
        out.push_str(&format!("zooaudit_audits{{state=\"{s}\"}} {n}\n"));
    }
    out.push_str("# HELP zooaudit_audit_duration_seconds Claim to result of finished audits.\n# TYPE zooaudit_audit_duration_seconds histogram\n");
    for b in BUCKETS {
        let n = durations.iter().filter(|d| **d <= b).count();
        out.push_str(&format!(
            "zooaudit_audit_duration_seconds_bucket{{le=\"{b}\"}} {n}\n"
        ));
    }
    out.push_str(&format!(
        "zooaudit_audit_duration_seconds_bucket{{le=\"+Inf\"}} {}\nzooaudit_audit_duration_seconds_sum {}\nzooaudit_audit_duration_seconds_count {}\n",
        durations.len(),
        durations.iter().sum::<f64>(),
        durations.len()
    ));
    out.push_str("# HELP zooaudit_webhook_deliveries Webhook deliveries since start, by outcome.\n# TYPE zooaudit_webhook_deliveries counter\n");
    if let Ok(h) = st.hooks.lock() {
        for (k, v) in h.iter() {
            out.push_str(&format!(
                "zooaudit_webhook_deliveries{{outcome=\"{k}\"}} {v}\n"
            ));
        }
    }
    out.push_str(&format!(
        "# HELP zooaudit_submissions Submissions accepted since start.\n# TYPE zooaudit_submissions counter\nzooaudit_submissions {}\n",
        st.submissions.load(Ordering::Relaxed)
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

pub(crate) mod hooks;

impl AppState {
    pub(crate) fn count_hook(&self, outcome: &'static str) {
        if let Ok(mut h) = self.hooks.lock() {
            *h.entry(outcome).or_insert(0) += 1;
        }
    }

    pub(crate) fn hook_secret_ok(&self, given: Option<&str>) -> bool {
        same_secret(given, &self.hook_secret)
    }
}

/// Serves until `stop` resolves; `ready` gets the bound address.
pub async fn serve(
    app: Router,
    listen: std::net::SocketAddr,
    ready: impl FnOnce(std::net::SocketAddr),
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(ServiceError::system(format!("cannot listen on {listen}")))?;
    let addr = listener
        .local_addr()
        .map_err(ServiceError::system("local address"))?;
    ready(addr);
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
        .map_err(ServiceError::system("server"))
}

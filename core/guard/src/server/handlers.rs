//! The request handlers: `POST /v1/embed`, `POST /v1/embed/batch` and
//! `GET /healthz`, with body limits, content types and the answers they give.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{AppState, Policy, error};
use crate::pair::{DecideError, Decision, sha256_hex};

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

pub(super) async fn embed(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let started = Instant::now();
    state.metrics.requests[0].fetch_add(1, Ordering::Relaxed);
    state.metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let r = embed_inner(&state, req, started).await;
    state.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
    state.observe(started);
    r
}

/// The request's body, or the answer to a bad request (counted): the wrong
/// content type, a declared or actual size over the limit, or a body slower
/// than the deadline.
async fn checked_body(
    state: &Arc<AppState>,
    req: Request,
    deadline: Instant,
    type_ok: bool,
    expected: &'static str,
) -> Result<axum::body::Bytes, Response> {
    let bad = || state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
    if !type_ok {
        bad();
        return Err(error(StatusCode::UNSUPPORTED_MEDIA_TYPE, expected));
    }
    if let Some(r) = declared_too_large(req.headers(), state.opts.max_body) {
        bad();
        return Err(r);
    }
    read_body(req.into_body(), state.opts.max_body, deadline)
        .await
        .inspect_err(|_| {
            bad();
        })
}

async fn embed_inner(state: &Arc<AppState>, req: Request, started: Instant) -> Response {
    let deadline = started + state.opts.request_timeout;
    let type_ok = image_content_type(req.headers());
    let expected =
        "send one image as image/png, image/jpeg, image/webp or application/octet-stream";
    let bytes = match checked_body(state, req, deadline, type_ok, expected).await {
        Ok(b) => b,
        Err(r) => return r,
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
    state.record(&d, &bytes);
    let (status, body) = answer(&d, state.opts.policy);
    (status, axum::Json(body)).into_response()
}

pub(super) async fn embed_batch(State(state): State<Arc<AppState>>, req: Request) -> Response {
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
    let expected = "send {\"images\": [\"<base64>\", ...]} as application/json";
    let bytes = match checked_body(state, req, deadline, json_type, expected).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let list = match crate::request::batch_images(&bytes, state.opts.max_batch) {
        Ok(l) => l,
        Err(m) => {
            state.metrics.bad_requests.fetch_add(1, Ordering::Relaxed);
            return error(StatusCode::BAD_REQUEST, m);
        }
    };
    // Decode each; errors stay in their slot.
    let mut slots: Vec<Result<(Vec<u8>, String), Response>> = Vec::new();
    let mut images = Vec::new();
    let mut shas = Vec::new();
    for (i, raw) in list.into_iter().enumerate() {
        let raw = match raw {
            Ok(r) => r,
            Err(m) => {
                slots.push(Err(error(StatusCode::BAD_REQUEST, m)));
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
                state.record(&d, &raw);
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

pub(super) async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.requests[2].fetch_add(1, Ordering::Relaxed);
    let b = &state.pair.bundle;
    let (drift, drift_json) = state.drift_state();
    axum::Json(json!({
        "status": if drift.degraded { "degraded" } else { "ok" },
        "drift": drift_json,
        "calibration": b.calibration,
        "probe": {"name": b.probe.name, "sha256": b.probe.sha256},
        "reference": {"name": b.reference.name, "sha256": b.reference.sha256},
        "operating_point": state.opts.operating_point,
        "threshold": state.threshold,
        "schedule": state.pair.schedule,
    }))
    .into_response()
}

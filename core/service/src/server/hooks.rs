//! Hugging Face webhooks: a `repo.content` update of a repository the zoo
//! watches queues an audit of the watched file at the new head commit.
//!
//! The documented payload: `event.action`, `event.scope`, `repo.type`,
//! `repo.name`, `repo.headSha`, `updatedRefs[]`; the shared secret comes in
//! `X-Webhook-Secret` and is compared in constant time. Anything else that
//! parses (other scopes, unwatched repositories) answers 2xx and queues
//! nothing, saying why; a replayed delivery finds the audit already queued
//! (audits are idempotent by commit) and says so.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, error};

#[derive(Deserialize)]
struct Payload {
    event: Event,
    repo: Repo,
    #[serde(default, rename = "updatedRefs")]
    updated_refs: Vec<UpdatedRef>,
}

#[derive(Deserialize)]
struct Event {
    action: String,
    scope: String,
}

#[derive(Deserialize)]
struct Repo {
    #[serde(default, rename = "type")]
    kind: String,
    name: String,
    #[serde(default, rename = "headSha")]
    head_sha: Option<String>,
}

#[derive(Deserialize)]
struct UpdatedRef {
    #[serde(rename = "ref")]
    name: String,
}

fn ignored(st: &AppState, why: String) -> Response {
    st.count_hook("ignored");
    (
        StatusCode::OK,
        axum::Json(json!({"queued": [], "ignored": why})),
    )
        .into_response()
}

pub(crate) async fn huggingface(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secret = headers
        .get("x-webhook-secret")
        .and_then(|v| v.to_str().ok());
    if !st.hook_secret_ok(secret) {
        st.count_hook("unauthorized");
        return error(
            StatusCode::UNAUTHORIZED,
            "X-Webhook-Secret is missing or wrong",
        );
    }
    let p: Payload = match serde_json::from_slice(&body) {
        Ok(p) => p,
        Err(e) => {
            st.count_hook("malformed");
            return error(
                StatusCode::BAD_REQUEST,
                format!("malformed webhook payload: {e}"),
            );
        }
    };
    if p.event.scope != "repo.content" || !matches!(p.event.action.as_str(), "update" | "create") {
        return ignored(
            &st,
            format!(
                "event {}/{}: only repo.content updates are audited",
                p.event.scope, p.event.action
            ),
        );
    }
    if !p.repo.kind.is_empty() && p.repo.kind != "model" {
        return ignored(
            &st,
            format!(
                "{} is a {} repository, not a model",
                p.repo.name, p.repo.kind
            ),
        );
    }
    if !p.updated_refs.is_empty() && !p.updated_refs.iter().any(|r| r.name == "refs/heads/main") {
        return ignored(&st, "the update did not move refs/heads/main".into());
    }
    let watches: Vec<_> = st
        .intake
        .zoo
        .watches
        .iter()
        .filter(|w| w.repo == p.repo.name)
        .cloned()
        .collect();
    if watches.is_empty() {
        return ignored(&st, format!("{} is not watched by this zoo", p.repo.name));
    }
    let Some(commit) = p
        .repo
        .head_sha
        .filter(|c| c.len() >= 7 && c.chars().all(|c| c.is_ascii_hexdigit()))
    else {
        st.count_hook("malformed");
        return error(
            StatusCode::BAD_REQUEST,
            "repo.headSha: missing or not a commit id",
        );
    };
    let mut queued = Vec::new();
    let mut replayed = Vec::new();
    for w in watches {
        let new = match st.intake.watched(&w.model, &w.repo, &commit, &w.file) {
            Ok(n) => n,
            Err(e) => {
                st.count_hook("refused");
                return error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string());
            }
        };
        match st.db.submit(&new).await {
            Ok(s) if s.existing && !s.requeued => {
                replayed.push(json!({"id": s.id, "state": s.state}))
            }
            Ok(s) => queued.push(json!({"id": s.id, "model": w.model, "file": w.file})),
            Err(e) => {
                st.count_hook("error");
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
        }
    }
    let outcome = if queued.is_empty() {
        "replayed"
    } else {
        "queued"
    };
    st.count_hook(outcome);
    let delivery = crate::sha256_hex(&body);
    let first = queued
        .first()
        .or(replayed.first())
        .and_then(|v| v["id"].as_str());
    let _ = st.db.delivery(&delivery, outcome, first).await;
    let status = if queued.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut answer = json!({"queued": queued, "commit": commit});
    if !replayed.is_empty() {
        answer["already_queued"] = json!(replayed);
        answer["note"] =
            json!("this commit was seen before (a replayed delivery?): nothing queued twice");
    }
    (status, axum::Json(answer)).into_response()
}

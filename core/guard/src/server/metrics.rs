//! The service's counters and latency histogram, and `GET /metrics` in
//! Prometheus text format.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::AppState;

const BUCKETS: [f64; 12] = [
    0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Default)]
pub(super) struct Metrics {
    pub(super) requests: [AtomicU64; 4],
    pub(super) images: AtomicU64,
    pub(super) agreements: AtomicU64,
    pub(super) disagreements: AtomicU64,
    pub(super) bad_requests: AtomicU64,
    pub(super) overloaded: AtomicU64,
    pub(super) model_errors: AtomicU64,
    pub(super) in_flight: AtomicU64,
    pub(super) batches: AtomicU64,
    pub(super) batched_images: AtomicU64,
    pub(super) latency_buckets: [AtomicU64; BUCKETS.len()],
    pub(super) latency_count: AtomicU64,
    pub(super) latency_sum_us: AtomicU64,
}

const ENDPOINTS: [&str; 4] = ["embed", "embed_batch", "healthz", "metrics"];

impl AppState {
    pub(super) fn observe(&self, started: Instant) {
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
}

pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> Response {
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
    let (d, _) = state.drift_state();
    let episodes = state
        .drift
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .episodes;
    for (name, help, v) in [
        (
            "drift_window_decisions",
            "Decisions in the drift monitor's window.",
            d.decisions as f64,
        ),
        (
            "drift_window_disagreements",
            "Disagreements in the drift monitor's window.",
            d.disagreements as f64,
        ),
        ("drift_rate", "Disagreement rate over the window.", d.rate),
        (
            "drift_rate_lower",
            "Lower end of the window rate's 95 % interval.",
            d.ci95[0],
        ),
        (
            "drift_expected_upper",
            "Upper end of the bundle's held-out clean FNMR interval at the operating point.",
            state
                .pair
                .bundle
                .operating_point(state.opts.operating_point)
                .map_or(f64::NAN, |o| o.heldout_ci95[1]),
        ),
        (
            "drift_degraded",
            "1 while the window's rate is beyond the expected interval.",
            f64::from(u8::from(d.degraded)),
        ),
    ] {
        s.push_str(&format!("# HELP zooaudit_guard_{name} {help}\n# TYPE zooaudit_guard_{name} gauge\nzooaudit_guard_{name} {v}\n"));
    }
    s.push_str(&format!(
        "# HELP zooaudit_guard_drift_episodes_total Times the guard became degraded.\n# TYPE zooaudit_guard_drift_episodes_total counter\nzooaudit_guard_drift_episodes_total {episodes}\n"
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

//! The model queue: a request's images queued as a job (with the
//! service's 503/504 limits), and the workers that micro-batch the jobs
//! through both models.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::StatusCode;
use axum::response::Response;

use super::metrics::Metrics;
use super::{AppState, error};
use crate::pair::{DecideError, Decision, Pair};

impl AppState {
    /// Runs the pair on decoded images: queued for the model workers
    /// (waiting up to `queue_timeout` for room, else 503), answered within
    /// the request's deadline (else 504).
    pub(super) async fn run(
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
pub(super) struct Job {
    images: Vec<image::RgbImage>,
    shas: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Result<Vec<Decision>, DecideError>>,
}

/// A model worker: takes a queued job, adds every job already waiting
/// (micro-batching, up to `model_batch` images, never waiting for more),
/// runs both models on the lot (in pieces of `model_batch`), and answers
/// each job its share.
pub(super) fn worker(
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

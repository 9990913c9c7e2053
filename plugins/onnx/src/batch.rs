//! Running batches: freeing a fixed batch dimension (verified on probe
//! inputs), native and per-sample runs, and the adapter's `embed`.

use std::sync::Mutex;

use ort::session::Session;
use ort::value::TensorRef;
use zooaudit_plugin_sdk::abi::error_code;
use zooaudit_plugin_sdk::{EmbeddingModel, ModelDescription, PluginError};

use crate::model::probe_inputs;
use crate::{OnnxModel, OpenOptions, build_session, graph, model_error, option_error};

impl OnnxModel {
    /// Frees the batch dimension and checks, on probe inputs, that a batched
    /// run gives what per-sample runs give. On success the model runs native
    /// batches; otherwise it is an error (the caller asked for `native`).
    pub(crate) fn try_free_batch(
        &mut self,
        bytes: &[u8],
        opts: &OpenOptions,
        threads: usize,
    ) -> Result<(), PluginError> {
        let freed = graph::free_batch(bytes, &self.input_name).map_err(model_error)?;
        let session = build_session(&freed, opts, threads).map_err(|e| {
            option_error(
                "batching",
                format!("the batch dimension cannot be freed: {}", e.message),
            )
        })?;
        let probe = probe_inputs(self.sample_len * 3);
        let single = self.run_per_sample(&self.sessions[0], &probe, 3)?;
        let candidate = Mutex::new(session);
        let batched = self.run_native(&candidate, &probe, 3).map_err(|e| {
            option_error(
                "batching",
                format!("the batch dimension cannot be freed: {}", e.message),
            )
        })?;
        let scale = single.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = single
            .iter()
            .zip(&batched)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        if batched.len() != single.len() || worst.is_nan() || worst > 1e-4 * scale {
            return Err(option_error(
                "batching",
                format!(
                    "the batch dimension cannot be freed: batched outputs differ from per-sample ones (max |Δ| = {worst})"
                ),
            ));
        }
        self.sessions = vec![candidate];
        self.native_batch = true;
        self.description
            .notes
            .push("freed the batch dimension (verified on probe inputs)".into());
        Ok(())
    }

    fn run_native(
        &self,
        session: &Mutex<Session>,
        input: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, PluginError> {
        let mut shape = Vec::with_capacity(self.sample_shape.len() + 1);
        shape.push(batch as i64);
        shape.extend_from_slice(&self.sample_shape);
        let tensor = TensorRef::from_array_view((shape, input)).map_err(model_error)?;
        let mut s = session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = s
            .run(ort::inputs![self.input_name.as_str() => tensor])
            .map_err(model_error)?;
        let mut out = vec![0f32; batch * self.dim];
        let mut offset = 0;
        for (name, len) in &self.output_names {
            let (_, data) = outputs[name.as_str()]
                .try_extract_tensor::<f32>()
                .map_err(model_error)?;
            if data.len() != batch * len {
                return Err(model_error(format!(
                    "output '{name}' has {} values for a batch of {batch}; expected {}",
                    data.len(),
                    batch * len
                )));
            }
            for b in 0..batch {
                out[b * self.dim + offset..b * self.dim + offset + len]
                    .copy_from_slice(&data[b * len..(b + 1) * len]);
            }
            offset += len;
        }
        Ok(out)
    }

    fn run_per_sample(
        &self,
        session: &Mutex<Session>,
        input: &[f32],
        batch: usize,
    ) -> Result<Vec<f32>, PluginError> {
        let mut out = Vec::with_capacity(batch * self.dim);
        for sample in input.chunks_exact(self.sample_len).take(batch) {
            out.extend(self.run_native(session, sample, 1)?);
        }
        Ok(out)
    }
}

impl EmbeddingModel for OnnxModel {
    fn describe(&self) -> ModelDescription {
        self.description.clone()
    }

    fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, PluginError> {
        if batch.checked_mul(self.sample_len) != Some(input.len()) {
            return Err(PluginError::new(
                error_code::INVALID_INPUT,
                format!(
                    "{} values given for a batch of {batch} samples of {} values ({:?})",
                    input.len(),
                    self.sample_len,
                    self.sample_shape
                ),
            ));
        }
        if batch == 0 {
            return Ok(Vec::new());
        }
        if self.native_batch {
            let mut out = Vec::with_capacity(batch * self.dim);
            for chunk in input.chunks(self.max_batch * self.sample_len) {
                out.extend(self.run_native(
                    &self.sessions[0],
                    chunk,
                    chunk.len() / self.sample_len,
                )?);
            }
            return Ok(out);
        }
        if self.sessions.len() == 1 || batch == 1 {
            return self.run_per_sample(&self.sessions[0], input, batch);
        }
        // Spread contiguous shares of the batch over the sessions.
        let per = batch.div_ceil(self.sessions.len());
        let results: Vec<Result<Vec<f32>, PluginError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = input
                .chunks(per * self.sample_len)
                .zip(&self.sessions)
                .map(|(chunk, session)| {
                    scope.spawn(move || {
                        self.run_per_sample(session, chunk, chunk.len() / self.sample_len)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(PluginError::new(
                            error_code::PANIC,
                            "session worker panicked",
                        ))
                    })
                })
                .collect()
        });
        let mut out = Vec::with_capacity(batch * self.dim);
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}

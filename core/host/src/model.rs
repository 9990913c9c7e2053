//! Calling a loaded plugin: opening models and creating detectors, and the
//! host-side wrappers that check what the plugin returns.

use std::fmt;
use std::path::Path;

use abi_stable::std_types::{RResult, RSlice, RString};
use zooaudit_plugin_abi::{
    EmbeddingsRef, ModelBox, NO_EXPORT, OpenRequest, PluginError, error_code,
};

use crate::load::DetectorObject;

use crate::{HostError, Plugin, PluginInfo};

impl Plugin {
    /// Opens a model with this (model-adapter) plugin.
    pub fn open_model(
        &self,
        model_path: &Path,
        options: &serde_json::Value,
    ) -> Result<LoadedModel, HostError> {
        let req = OpenRequest {
            path: model_path.to_string_lossy().into_owned().into(),
            options_json: options.to_string().into(),
        };
        match self.module.open_model(req) {
            RResult::ROk(inner) => {
                let info = ModelSummary::from_abi(inner.info());
                let model = LoadedModel {
                    inner,
                    info,
                    plugin: self.clone(),
                };
                model.check_info()?;
                Ok(model)
            }
            RResult::RErr(e) => Err(self.error(e)),
        }
    }

    /// Creates a detector with this (detector-strategy) plugin.
    pub fn new_detector(&self, options: &serde_json::Value) -> Result<LoadedDetector, HostError> {
        match self.module.new_detector(options.to_string().into()) {
            RResult::ROk(inner) => Ok(LoadedDetector {
                inner,
                plugin: self.clone(),
            }),
            RResult::RErr(e) => Err(self.error(e)),
        }
    }

    /// A detector created from `options` and restored from `state` (what
    /// [`LoadedDetector::export_state`] gave): ready to score, no fit.
    pub fn restore_detector(
        &self,
        options: &serde_json::Value,
        state: &[u8],
    ) -> Result<LoadedDetector, HostError> {
        let mut d = self.new_detector(options)?;
        d.restore_state(state)?;
        Ok(d)
    }
}

/// A tensor of a model, host side.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TensorSummary {
    pub name: String,
    /// `-1` marks a free dimension.
    pub shape: Vec<i64>,
    pub elem_type: String,
}

/// What an opened model looks like, host side.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    pub inputs: Vec<TensorSummary>,
    pub outputs: Vec<TensorSummary>,
    pub input_index: usize,
    pub output_index: usize,
    pub embedding_dim: usize,
    pub batching: String,
    pub notes: Vec<String>,
}

impl ModelSummary {
    fn from_abi(i: zooaudit_plugin_abi::ModelInfo) -> Self {
        let t = |t: zooaudit_plugin_abi::TensorInfo| TensorSummary {
            name: t.name.into_string(),
            shape: t.shape.into_iter().collect(),
            elem_type: t.elem_type.into_string(),
        };
        ModelSummary {
            inputs: i.inputs.into_iter().map(t).collect(),
            outputs: i.outputs.into_iter().map(t).collect(),
            input_index: i.input_index as usize,
            output_index: i.output_index as usize,
            embedding_dim: i.embedding_dim as usize,
            batching: i.batching.into_string(),
            notes: i.notes.into_iter().map(RString::into_string).collect(),
        }
    }

    /// The input the adapter feeds.
    pub fn input(&self) -> Option<&TensorSummary> {
        self.inputs.get(self.input_index)
    }

    /// The output the adapter returns.
    pub fn output(&self) -> Option<&TensorSummary> {
        self.outputs.get(self.output_index)
    }

    /// Number of floats in one sample of the input (without the batch dim),
    /// if every non-batch dimension is fixed.
    pub fn sample_len(&self) -> Option<usize> {
        let shape = &self.input()?.shape;
        shape.iter().skip(1).try_fold(1usize, |acc, &d| {
            usize::try_from(d)
                .ok()
                .filter(|d| *d > 0)
                .and_then(|d| acc.checked_mul(d))
        })
    }
}

/// A model opened by an adapter plugin.
pub struct LoadedModel {
    inner: ModelBox,
    info: ModelSummary,
    plugin: Plugin,
}

impl fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedModel")
            .field("info", &self.info)
            .finish()
    }
}

impl LoadedModel {
    pub fn summary(&self) -> &ModelSummary {
        &self.info
    }

    pub fn plugin(&self) -> &PluginInfo {
        &self.plugin.info
    }

    fn contract(&self, message: String) -> HostError {
        HostError::Contract {
            plugin: self.plugin.info.name.clone(),
            path: self.plugin.info.path.clone(),
            message,
        }
    }

    fn check_info(&self) -> Result<(), HostError> {
        if self.info.input().is_none() || self.info.output().is_none() {
            return Err(self.contract("input/output index out of range".to_string()));
        }
        if self.info.embedding_dim == 0 {
            return Err(self.contract("embedding dimension is 0".to_string()));
        }
        Ok(())
    }

    /// Embeds `batch` samples laid out back to back; returns `batch × dim`.
    pub fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, HostError> {
        match self.inner.embed(RSlice::from_slice(input), batch as u64) {
            RResult::ROk(v) => {
                let v = v.into_vec();
                let expected = batch * self.info.embedding_dim;
                if v.len() != expected {
                    return Err(self.contract(format!(
                        "returned {} values for a batch of {batch} × {}",
                        v.len(),
                        self.info.embedding_dim
                    )));
                }
                Ok(v)
            }
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }
}

/// A detector created by a detector-strategy plugin.
pub struct LoadedDetector {
    inner: DetectorObject,
    plugin: Plugin,
}

impl fmt::Debug for LoadedDetector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedDetector")
            .field("plugin", &self.plugin.info.name)
            .finish()
    }
}

fn eref(data: &[f32], dim: usize) -> EmbeddingsRef<'_> {
    let rows = data.len().checked_div(dim).unwrap_or(0);
    EmbeddingsRef {
        data: RSlice::from_slice(data),
        rows: rows as u64,
        dim: dim as u64,
    }
}

impl LoadedDetector {
    pub fn plugin(&self) -> &PluginInfo {
        &self.plugin.info
    }

    /// Fits on clean pairs (`probe` rows × `probe_dim`, `reference` rows × `reference_dim`).
    pub fn fit(
        &mut self,
        probe: &[f32],
        probe_dim: usize,
        reference: &[f32],
        reference_dim: usize,
    ) -> Result<serde_json::Value, HostError> {
        let (p, r) = (eref(probe, probe_dim), eref(reference, reference_dim));
        let answer = match &mut self.inner {
            DetectorObject::Current(d) => d.fit(p, r),
            DetectorObject::V1_0(d) => d.fit(p, r),
        };
        match answer {
            RResult::ROk(report) => {
                serde_json::from_str(report.as_str()).map_err(|e| HostError::Contract {
                    plugin: self.plugin.info.name.clone(),
                    path: self.plugin.info.path.clone(),
                    message: format!("fit report is not JSON: {e}"),
                })
            }
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }

    /// The error a plugin built for ABI 1.0 gets for what 1.1 added.
    fn lacks_1_1(&self) -> HostError {
        self.plugin
            .error(PluginError::new(error_code::UNSUPPORTED, NO_EXPORT))
    }

    /// The fitted state (ABI 1.1), for a pair bundle. A plugin built for
    /// ABI 1.0 is refused in one line naming the ABI.
    pub fn export_state(&self) -> Result<Vec<u8>, HostError> {
        let DetectorObject::Current(d) = &self.inner else {
            return Err(self.lacks_1_1());
        };
        match d.export_state() {
            RResult::ROk(v) => Ok(v.into_vec()),
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }

    /// Restores a state [`LoadedDetector::export_state`] returned (ABI 1.1).
    pub fn restore_state(&mut self, state: &[u8]) -> Result<(), HostError> {
        let DetectorObject::Current(d) = &mut self.inner else {
            return Err(self.lacks_1_1());
        };
        match d.restore_state(RSlice::from_slice(state)) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }

    /// One score per row; a plugin returning another count breaks its
    /// contract.
    pub fn score(
        &self,
        probe: &[f32],
        probe_dim: usize,
        reference: &[f32],
        reference_dim: usize,
    ) -> Result<Vec<f32>, HostError> {
        let (p, r) = (eref(probe, probe_dim), eref(reference, reference_dim));
        let answer = match &self.inner {
            DetectorObject::Current(d) => d.score(p, r),
            DetectorObject::V1_0(d) => d.score(p, r),
        };
        match answer {
            RResult::ROk(v) if v.len() as u64 == p.rows => Ok(v.into_vec()),
            RResult::ROk(v) => Err(HostError::Contract {
                plugin: self.plugin.info.name.clone(),
                path: self.plugin.info.path.clone(),
                message: format!("returned {} scores for {} rows", v.len(), p.rows),
            }),
            RResult::RErr(e) => Err(self.plugin.error(e)),
        }
    }
}

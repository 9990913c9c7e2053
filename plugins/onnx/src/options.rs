//! The adapter's options: their types, defaults and parsing from the
//! manifest's JSON.

use std::path::PathBuf;

use ort::session::builder::GraphOptimizationLevel;
use zooaudit_plugin_sdk::{Options, PluginError};

use crate::option_error;

/// Execution provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda { device_id: i32 },
}

/// How batches are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// Native batches when the model declares a free batch dimension or when
    /// a fixed batch of 1 can be freed (verified); otherwise per sample.
    Auto,
    /// Native batches; a batch dimension fixed to 1 is freed and verified.
    Native,
    /// One sample per run, spread over `sessions` sessions.
    PerSample,
}

/// Parsed adapter options.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub input_name: Option<String>,
    pub output_name: Option<String>,
    pub execution_provider: ExecutionProvider,
    pub threads: usize,
    pub batching: Batching,
    pub sessions: usize,
    pub max_batch: usize,
    pub ort_library: Option<PathBuf>,
    pub optimization: GraphOptimizationLevel,
    /// Run a fully convolutional model at this input height and width.
    pub spatial_size: Option<[u64; 2]>,
    /// Let idle intra-op threads spin (ONNX Runtime's default). Off when
    /// several models take turns on the same cores: spinning threads of one
    /// session then steal the cores the next one needs.
    pub spinning: bool,
    /// Largest model file read, in bytes (default 2 GiB, protobuf's own
    /// limit for one file); a larger one is refused before it is read.
    pub max_model_bytes: u64,
    /// Most nodes over the main graph and its subgraphs (default
    /// 2 000 000); a larger graph is refused before ONNX Runtime sees it.
    pub max_nodes: usize,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            input_name: None,
            output_name: None,
            execution_provider: ExecutionProvider::Cpu,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            batching: Batching::Auto,
            sessions: 1,
            max_batch: 32,
            ort_library: None,
            optimization: GraphOptimizationLevel::All,
            spatial_size: None,
            spinning: true,
            max_model_bytes: 2 << 30,
            max_nodes: zooaudit_onnx_graph::read::Limits::default().max_nodes,
        }
    }
}

impl OpenOptions {
    /// Parses the JSON options; unknown keys are errors.
    pub fn from_json(o: &Options) -> Result<Self, PluginError> {
        let mut opts = OpenOptions::default();
        let string = |k: &str, v: &serde_json::Value| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| option_error(k, "must be a string"))
        };
        let count = |k: &str, v: &serde_json::Value, max: u64| {
            v.as_u64()
                .filter(|n| (1..=max).contains(n))
                .map(|n| n as usize)
                .ok_or_else(|| option_error(k, format!("must be an integer in 1..={max}")))
        };
        let mut device_id = 0i32;
        let mut ep = "cpu".to_string();
        for (k, v) in o {
            match k.as_str() {
                "input_name" => opts.input_name = Some(string(k, v)?),
                "output_name" => opts.output_name = Some(string(k, v)?),
                "execution_provider" => ep = string(k, v)?,
                "device_id" => {
                    device_id = v
                        .as_u64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| option_error(k, "must be a non-negative integer"))?
                }
                "threads" => opts.threads = count(k, v, 1024)?,
                "sessions" => opts.sessions = count(k, v, 256)?,
                "max_batch" => opts.max_batch = count(k, v, 65536)?,
                "max_model_bytes" => opts.max_model_bytes = count(k, v, 1 << 40)? as u64,
                "max_nodes" => opts.max_nodes = count(k, v, 1 << 32)?,
                "ort_library" => opts.ort_library = Some(PathBuf::from(string(k, v)?)),
                "spinning" => {
                    opts.spinning = v
                        .as_bool()
                        .ok_or_else(|| option_error(k, "must be true or false"))?
                }
                "spatial_size" => {
                    let dims: Option<Vec<u64>> = v.as_array().map(|a| {
                        a.iter()
                            .filter_map(|d| d.as_u64().filter(|d| (1..=16384).contains(d)))
                            .collect()
                    });
                    match dims.as_deref() {
                        Some([h, w]) if v.as_array().is_some_and(|a| a.len() == 2) => {
                            opts.spatial_size = Some([*h, *w])
                        }
                        _ => {
                            return Err(option_error(
                                k,
                                "must be [height, width], each in 1..=16384",
                            ));
                        }
                    }
                }
                "batching" => {
                    opts.batching = match string(k, v)?.as_str() {
                        "auto" => Batching::Auto,
                        "native" => Batching::Native,
                        "per-sample" => Batching::PerSample,
                        other => {
                            return Err(option_error(
                                k,
                                format!(
                                    "{} is not one of auto, native, per-sample",
                                    zooaudit_formats::quote(other)
                                ),
                            ));
                        }
                    }
                }
                "optimization" => {
                    opts.optimization = match string(k, v)?.as_str() {
                        "disable" => GraphOptimizationLevel::Disable,
                        "basic" => GraphOptimizationLevel::Level1,
                        "extended" => GraphOptimizationLevel::Level2,
                        "all" => GraphOptimizationLevel::All,
                        other => {
                            return Err(option_error(
                                k,
                                format!(
                                    "{} is not one of disable, basic, extended, all",
                                    zooaudit_formats::quote(other)
                                ),
                            ));
                        }
                    }
                }
                _ => return Err(option_error(k, "unknown option for the onnx adapter")),
            }
        }
        opts.execution_provider = match ep.as_str() {
            "cpu" => ExecutionProvider::Cpu,
            "cuda" => ExecutionProvider::Cuda { device_id },
            other => {
                return Err(option_error(
                    "execution_provider",
                    format!("{} is not one of cpu, cuda", zooaudit_formats::quote(other)),
                ));
            }
        };
        Ok(opts)
    }
}

//! ONNX Runtime itself: finding and loading the library once per process,
//! and building sessions (CPU, or CUDA when compiled in).

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use zooaudit_plugin_sdk::PluginError;
use zooaudit_plugin_sdk::abi::error_code;

use crate::{ExecutionProvider, OpenOptions, model_error};

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// The ONNX Runtime library to load: the option, else `ORT_DYLIB_PATH`.
fn ort_library(opts: &OpenOptions) -> Result<PathBuf, PluginError> {
    if let Some(p) = &opts.ort_library {
        return Ok(p.clone());
    }
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(PluginError::new(
            error_code::UNSUPPORTED,
            "ONNX Runtime library not found: set ORT_DYLIB_PATH to libonnxruntime.so \
             (scripts/setup.sh fetches the pinned one into .zooaudit/lib)",
        )),
    }
}

/// Loads ONNX Runtime once per process.
pub fn environment(opts: &OpenOptions) -> Result<&'static Environment, PluginError> {
    if ENVIRONMENT.get().is_none() {
        let lib = ort_library(opts)?;
        let _ = ENVIRONMENT.get_or_init(|| {
            if !lib.is_file() {
                return Err(format!(
                    "ONNX Runtime library {} does not exist",
                    lib.display()
                ));
            }
            ort::init_from(&lib)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", lib.display()))?
                .with_name("zooaudit")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime from {}: {e}", lib.display()))
        });
    }
    match ENVIRONMENT.get() {
        Some(Ok(env)) => Ok(env),
        Some(Err(e)) => Err(PluginError::new(error_code::UNSUPPORTED, e.clone())),
        None => Err(PluginError::new(
            error_code::INTERNAL,
            "ONNX Runtime not initialised",
        )),
    }
}

/// Builds a session from model bytes.
pub fn build_session(
    bytes: &[u8],
    opts: &OpenOptions,
    threads: usize,
) -> Result<Session, PluginError> {
    let env = environment(opts)?;
    let mut builder = Session::builder(env)
        .map_err(model_error)?
        .with_optimization_level(opts.optimization)
        .map_err(model_error)?
        .with_intra_threads(threads)
        .map_err(model_error)?
        .with_intra_op_spinning(opts.spinning)
        .map_err(model_error)?
        // Run-time failures come back as errors; ONNX Runtime's own log
        // would print them a second time on stderr.
        .with_log_level(ort::logging::LogLevel::Fatal)
        .map_err(model_error)?;
    match opts.execution_provider {
        ExecutionProvider::Cpu => {}
        ExecutionProvider::Cuda { device_id } => {
            builder = with_cuda(builder, device_id)?;
        }
    }
    builder.commit_from_memory(bytes).map_err(model_error)
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    device_id: i32,
) -> Result<ort::session::builder::SessionBuilder, PluginError> {
    builder
        .with_execution_providers([ort::ep::CUDA::default()
            .with_device_id(device_id)
            .build()
            .error_on_failure()])
        .map_err(|e| model_error(format!("cannot use the CUDA execution provider: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _device_id: i32,
) -> Result<ort::session::builder::SessionBuilder, PluginError> {
    Err(PluginError::new(
        error_code::UNSUPPORTED,
        "option execution_provider: this build of the onnx adapter was compiled without CUDA \
         support (rebuild zooaudit-plugin-onnx with --features cuda)",
    ))
}

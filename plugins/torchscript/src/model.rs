//! Opening a TorchScript file, learning its embedding dimension from one
//! forward pass, and running batches.

use std::path::Path;

use tch::{CModule, Device, IValue, Kind, Tensor};
use zooaudit_plugin_sdk::abi::error_code;
use zooaudit_plugin_sdk::{EmbeddingModel, ModelDescription, PluginError, Tensor as TensorInfo};

use crate::{DeviceChoice, OpenOptions, model_error, option_error, tch_message};

/// An opened TorchScript embedding model.
pub struct TorchScriptModel {
    module: CModule,
    device: Device,
    sample_shape: Vec<i64>,
    sample_len: usize,
    dim: usize,
    description: ModelDescription,
}

impl std::fmt::Debug for TorchScriptModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchScriptModel")
            .field("device", &self.device)
            .field("description", &self.description)
            .finish()
    }
}

/// The device asked for, if this libtorch has it. tch decides at run time:
/// CUDA is there when libtorch_cuda.so was linked and a GPU is visible.
pub fn device(choice: DeviceChoice) -> Result<Device, PluginError> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Cuda { device_id } => {
            if !tch::Cuda::is_available() {
                return Err(PluginError::new(
                    error_code::UNSUPPORTED,
                    "option device: cuda is not available: the libtorch this adapter runs on \
                     was compiled without CUDA or no GPU is visible (scripts/setup-torch.sh \
                     lays out a CPU-only libtorch)",
                ));
            }
            let count = tch::Cuda::device_count();
            if device_id as i64 >= count {
                return Err(option_error(
                    "device_id",
                    format!("{device_id}, but {count} CUDA device(s) are visible"),
                ));
            }
            Ok(Device::Cuda(device_id))
        }
    }
}

/// What `forward` returned, in words.
fn ivalue_kind(v: &IValue) -> String {
    match v {
        IValue::Tensor(t) => format!("a {:?} tensor of shape {:?}", t.kind(), t.size()),
        IValue::Tuple(v) => format!("a tuple of {}", v.len()),
        IValue::TensorList(v) => format!("a list of {} tensors", v.len()),
        IValue::GenericList(v) => format!("a list of {}", v.len()),
        IValue::GenericDict(v) => format!("a dict of {}", v.len()),
        IValue::None => "None".into(),
        IValue::Double(_) => "a float".into(),
        IValue::Int(_) => "an int".into(),
        IValue::Bool(_) => "a bool".into(),
        IValue::String(_) => "a string".into(),
        _ => "a non-tensor value".into(),
    }
}

fn is_float(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16
    )
}

impl TorchScriptModel {
    /// Loads `path` on the chosen device, then runs one forward pass on a
    /// batch of one zero sample: that checks `input_shape` and the output
    /// (one 2-D float tensor `[1, D]`), and gives `D`.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self, PluginError> {
        let device = device(opts.device)?;
        if let Some(n) = opts.threads {
            tch::set_num_threads(n as i32);
        }
        let shown = path.display();
        let meta = std::fs::metadata(path)
            .map_err(|e| model_error(format!("cannot read {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(model_error(format!("{shown} is not a file")));
        }
        let mut module = CModule::load_on_device(path, device).map_err(|e| {
            model_error(format!(
                "{shown} is not a TorchScript file libtorch can load: {}",
                tch_message(&e)
            ))
        })?;
        module.f_set_eval().map_err(|e| {
            model_error(format!(
                "{shown}: cannot switch to eval mode: {}",
                tch_message(&e)
            ))
        })?;
        let sample_len = opts.sample_len();
        let mut model = TorchScriptModel {
            module,
            device,
            sample_shape: opts.input_shape.clone(),
            sample_len,
            dim: 0,
            description: ModelDescription {
                inputs: Vec::new(),
                outputs: Vec::new(),
                input_index: 0,
                output_index: 0,
                embedding_dim: 0,
                batching: "native".into(),
                notes: Vec::new(),
            },
        };
        let mut probe_shape = vec![1i64];
        probe_shape.extend_from_slice(&opts.input_shape);
        let probe = Tensor::f_zeros(probe_shape.as_slice(), (Kind::Float, device))
            .map_err(|e| model_error(tch_message(&e)))?;
        let out = model.forward(&probe).map_err(|e| {
            option_error(
                "input_shape",
                format!(
                    "{shown}: a forward pass on one zero sample of shape {probe_shape:?} failed: {}",
                    tch_message(&e)
                ),
            )
        })?;
        let size = match &out {
            IValue::Tensor(t) if is_float(t.kind()) && t.dim() == 2 && t.size()[0] == 1 => t.size(),
            other => {
                return Err(model_error(format!(
                    "{shown}: forward on a batch of 1 returned {}, not one 2-D float tensor \
                     [1, D] (an embedding per sample)",
                    ivalue_kind(other)
                )));
            }
        };
        let dim = size[1];
        if dim < 1 {
            return Err(model_error(format!(
                "{shown}: forward returned an empty embedding (shape {size:?})"
            )));
        }
        let out_kind = match &out {
            IValue::Tensor(t) => t.kind(),
            _ => Kind::Float,
        };
        let mut input_shape = vec![-1i64];
        input_shape.extend_from_slice(&opts.input_shape);
        let mut notes = vec![format!(
            "TorchScript on libtorch via tch 0.26, device {}",
            match device {
                Device::Cuda(i) => format!("cuda:{i}"),
                _ => "cpu".into(),
            }
        )];
        if out_kind != Kind::Float {
            notes.push(format!("output is {out_kind:?}, returned as float32"));
        }
        model.dim = dim as usize;
        model.description = ModelDescription {
            inputs: vec![TensorInfo {
                name: opts.input_name.clone(),
                shape: input_shape,
                elem_type: "float32".into(),
            }],
            outputs: vec![TensorInfo {
                name: opts.output_name.clone(),
                shape: vec![-1, dim],
                elem_type: "float32".into(),
            }],
            input_index: 0,
            output_index: 0,
            embedding_dim: dim as usize,
            batching: "native".into(),
            notes,
        };
        Ok(model)
    }

    /// `forward` on one tensor, without autograd.
    pub fn forward(&self, input: &Tensor) -> Result<IValue, tch::TchError> {
        let _guard = tch::no_grad_guard();
        self.module
            .forward_is(&[IValue::Tensor(input.shallow_clone())])
    }

    /// The loaded module (the bench times it bare).
    pub fn module(&self) -> &CModule {
        &self.module
    }

    /// The device the module lives on.
    pub fn device(&self) -> Device {
        self.device
    }
}

impl EmbeddingModel for TorchScriptModel {
    fn describe(&self) -> ModelDescription {
        self.description.clone()
    }

    fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, PluginError> {
        let want = batch.checked_mul(self.sample_len);
        if want != Some(input.len()) {
            return Err(zooaudit_plugin_sdk::invalid(format!(
                "{batch} samples of shape {:?} need {} values, got {}",
                self.sample_shape,
                want.map_or_else(|| "too many".into(), |n| n.to_string()),
                input.len()
            )));
        }
        if batch == 0 {
            return Ok(Vec::new());
        }
        let torch = |e: tch::TchError| model_error(tch_message(&e));
        let mut shape = Vec::with_capacity(self.sample_shape.len() + 1);
        shape.push(batch as i64);
        shape.extend_from_slice(&self.sample_shape);
        let x = Tensor::f_from_slice(input)
            .and_then(|t| t.f_view(shape.as_slice()))
            .and_then(|t| t.f_to_device(self.device))
            .map_err(torch)?;
        let out = match self.forward(&x).map_err(torch)? {
            IValue::Tensor(t) => t,
            other => {
                return Err(model_error(format!(
                    "forward returned {}, not a tensor",
                    ivalue_kind(&other)
                )));
            }
        };
        let size = out.size();
        if size != [batch as i64, self.dim as i64] || !is_float(out.kind()) {
            return Err(model_error(format!(
                "forward on a batch of {batch} returned a {:?} tensor of shape {size:?}, \
                 expected float [{batch}, {}]",
                out.kind(),
                self.dim
            )));
        }
        let out = out
            .f_to_kind(Kind::Float)
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_contiguous())
            .map_err(torch)?;
        let n = batch * self.dim;
        let mut data = vec![0f32; n];
        out.f_copy_data(&mut data, n).map_err(torch)?;
        Ok(data)
    }
}

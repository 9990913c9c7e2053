//! The adapter's options: their types, defaults and parsing from the
//! manifest's JSON (`[model.options]`, plus `input_name`/`output_name` from
//! `[input]`/`[output]`). Unknown keys are errors; every error about an
//! option starts with `option <key>:` so the host can point at the manifest
//! field.

use zooaudit_plugin_sdk::{Options, PluginError};

use crate::option_error;

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    Cpu,
    Cuda { device_id: usize },
}

/// Parsed adapter options.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOptions {
    /// Shape of one sample, without the batch dimension (required:
    /// TorchScript declares no input shapes).
    pub input_shape: Vec<i64>,
    pub device: DeviceChoice,
    /// libtorch's intra-op threads (`tch::set_num_threads`). libtorch has one
    /// such setting per process: the last model opened with it wins.
    pub threads: Option<usize>,
    /// The name the model's input is reported under (default `input`):
    /// TorchScript's `forward` takes its arguments by position.
    pub input_name: String,
    /// The name the model's output is reported under (default `output`).
    pub output_name: String,
}

/// Most dimensions `input_shape` may have, and the largest dimension.
const MAX_RANK: usize = 8;
const MAX_DIM: u64 = 1 << 20;
/// Most values in one sample (the product of `input_shape`).
const MAX_SAMPLE: u64 = 1 << 28;

impl OpenOptions {
    /// Parses the JSON options; unknown keys are errors.
    pub fn from_json(o: &Options) -> Result<Self, PluginError> {
        let string = |k: &str, v: &serde_json::Value| {
            v.as_str()
                .map(str::to_string)
                .filter(|s| !s.is_empty())
                .ok_or_else(|| option_error(k, "must be a non-empty string"))
        };
        let mut input_shape = None;
        let mut device = "cpu".to_string();
        let mut device_id = None;
        let mut threads = None;
        let mut input_name = "input".to_string();
        let mut output_name = "output".to_string();
        for (k, v) in o {
            match k.as_str() {
                "input_shape" => input_shape = Some(parse_shape(k, v)?),
                "device" => device = string(k, v)?,
                "device_id" => {
                    device_id = Some(
                        v.as_u64()
                            .filter(|n| *n < 1024)
                            .map(|n| n as usize)
                            .ok_or_else(|| option_error(k, "must be an integer in 0..1024"))?,
                    )
                }
                "threads" => {
                    threads = Some(
                        v.as_u64()
                            .filter(|n| (1..=1024).contains(n))
                            .map(|n| n as usize)
                            .ok_or_else(|| option_error(k, "must be an integer in 1..=1024"))?,
                    )
                }
                "input_name" => input_name = string(k, v)?,
                "output_name" => output_name = string(k, v)?,
                _ => {
                    return Err(option_error(
                        k,
                        "unknown option for the torchscript adapter (known: input_shape, \
                         device, device_id, threads, input_name, output_name)",
                    ));
                }
            }
        }
        let device = match device.as_str() {
            "cpu" => {
                if device_id.is_some() {
                    return Err(option_error("device_id", "only with device = \"cuda\""));
                }
                DeviceChoice::Cpu
            }
            "cuda" => DeviceChoice::Cuda {
                device_id: device_id.unwrap_or(0),
            },
            other => {
                return Err(option_error(
                    "device",
                    format!("{} is not one of cpu, cuda", crate::quote(other)),
                ));
            }
        };
        let input_shape = input_shape.ok_or_else(|| {
            option_error(
                "input_shape",
                "required: the shape of one sample without the batch dimension, \
                 e.g. [3, 112, 112] (TorchScript files declare no input shapes)",
            )
        })?;
        Ok(OpenOptions {
            input_shape,
            device,
            threads,
            input_name,
            output_name,
        })
    }

    /// Values in one sample.
    pub fn sample_len(&self) -> usize {
        self.input_shape.iter().map(|d| *d as usize).product()
    }
}

fn parse_shape(k: &str, v: &serde_json::Value) -> Result<Vec<i64>, PluginError> {
    let bad = || {
        option_error(
            k,
            format!(
                "must be a list of 1 to {MAX_RANK} dimensions, each in 1..={MAX_DIM}, \
                 without the batch dimension (e.g. [3, 112, 112])"
            ),
        )
    };
    let dims = v.as_array().ok_or_else(bad)?;
    if dims.is_empty() || dims.len() > MAX_RANK {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(dims.len());
    let mut total: u64 = 1;
    for d in dims {
        let d = d
            .as_u64()
            .filter(|d| (1..=MAX_DIM).contains(d))
            .ok_or_else(bad)?;
        total = total.saturating_mul(d);
        out.push(d as i64);
    }
    if total > MAX_SAMPLE {
        return Err(option_error(
            k,
            format!("{total} values per sample, over the adapter's limit of {MAX_SAMPLE}"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: serde_json::Value) -> Result<OpenOptions, PluginError> {
        match v {
            serde_json::Value::Object(m) => OpenOptions::from_json(&m),
            _ => unreachable!(),
        }
    }

    fn err(v: serde_json::Value) -> String {
        match opts(v) {
            Ok(o) => panic!("accepted: {o:?}"),
            Err(e) => e.message.to_string(),
        }
    }

    #[test]
    fn defaults_and_names() -> Result<(), PluginError> {
        let o = opts(serde_json::json!({"input_shape": [3, 112, 112]}))?;
        assert_eq!(o.input_shape, vec![3, 112, 112]);
        assert_eq!(o.device, DeviceChoice::Cpu);
        assert_eq!(o.threads, None);
        assert_eq!(
            (o.input_name.as_str(), o.output_name.as_str()),
            ("input", "output")
        );
        assert_eq!(o.sample_len(), 3 * 112 * 112);
        let o = opts(serde_json::json!({
            "input_shape": [3, 112, 112], "device": "cuda", "device_id": 1, "threads": 2,
            "input_name": "data", "output_name": "fc1"
        }))?;
        assert_eq!(o.device, DeviceChoice::Cuda { device_id: 1 });
        assert_eq!(o.threads, Some(2));
        assert_eq!(o.input_name, "data");
        Ok(())
    }

    #[test]
    fn every_error_names_its_option() {
        assert!(err(serde_json::json!({})).starts_with("option input_shape: required"));
        for bad in [
            serde_json::json!([]),
            serde_json::json!([3, 0, 112]),
            serde_json::json!([3, -1, 112]),
            serde_json::json!("3x112x112"),
            serde_json::json!([1, 1, 1, 1, 1, 1, 1, 1, 1]),
        ] {
            let e = err(serde_json::json!({ "input_shape": bad }));
            assert!(e.starts_with("option input_shape: must be"), "{e}");
        }
        let e = err(serde_json::json!({"input_shape": [65536, 65536]}));
        assert!(e.contains("over the adapter's limit"), "{e}");
        let e = err(serde_json::json!({"input_shape": [3], "device": "tpu"}));
        assert_eq!(e, "option device: \"tpu\" is not one of cpu, cuda");
        let e = err(serde_json::json!({"input_shape": [3], "device_id": 1}));
        assert!(e.starts_with("option device_id: only with"), "{e}");
        let e = err(serde_json::json!({"input_shape": [3], "threads": 0}));
        assert!(e.starts_with("option threads:"), "{e}");
        let e = err(serde_json::json!({"input_shape": [3], "batching": "native"}));
        assert!(e.starts_with("option batching: unknown option"), "{e}");
        let e = err(serde_json::json!({"input_shape": [3], "input_name": 7}));
        assert!(e.starts_with("option input_name:"), "{e}");
    }
}

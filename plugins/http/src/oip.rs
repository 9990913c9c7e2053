//! The KServe / Open Inference Protocol v2, JSON over HTTP.
//!
//! `GET {model}` (or `{model}/versions/{v}`) gives the metadata, `POST
//! {…}/infer` runs a batch: `{"inputs": [{"name", "shape", "datatype",
//! "data"}], "outputs": [{"name"}]}` → `{"model_version", "outputs": [{"name",
//! "shape", "datatype", "data"}]}` with `data` row-major (flat or nested).

use serde::Serialize;
use zooaudit_plugin_sdk::{EmbeddingModel, ModelDescription, PluginError, Tensor};

use crate::client::{Body, Client};
use crate::options::{Endpoint, OpenOptions};
use crate::{flatten_numbers, in_pieces, model_error, option_error, short};

/// A model served over the Open Inference Protocol.
pub struct OipModel {
    client: Client,
    url: String,
    infer_url: String,
    input: Tensor,
    datatype: Datatype,
    output: String,
    /// One sample's shape.
    sample: Vec<i64>,
    dim: usize,
    version: Option<String>,
    per_request: usize,
    concurrency: usize,
    description: ModelDescription,
}

/// The input datatypes the adapter sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Datatype {
    Fp32,
    Fp64,
    Uint8,
}

#[derive(Serialize)]
struct InferRequest<'a> {
    id: String,
    inputs: [InputTensor<'a>; 1],
    outputs: [OutputName<'a>; 1],
}

#[derive(Serialize)]
struct InputTensor<'a> {
    name: &'a str,
    shape: Vec<i64>,
    datatype: &'static str,
    data: Data<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Float(Floats<'a>),
    Bytes(Vec<u8>),
}

/// Floats as JSON numbers, integral ones (raw pixels) without a fraction:
/// `12` instead of `12.0` is a third shorter to write, send and parse.
struct Floats<'a>(&'a [f32]);

impl Serialize for Floats<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for &v in self.0 {
            if v.fract() == 0.0 && v.abs() < 16_777_216.0 {
                seq.serialize_element(&(v as i32))?;
            } else {
                seq.serialize_element(&v)?;
            }
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct OutputName<'a> {
    name: &'a str,
}

fn tensors(meta: &serde_json::Value, key: &str) -> Vec<Tensor> {
    meta.get(key)
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .map(|t| Tensor {
                    name: t["name"].as_str().unwrap_or_default().to_string(),
                    shape: t["shape"]
                        .as_array()
                        .map(|s| s.iter().map(|d| d.as_i64().unwrap_or(-1)).collect())
                        .unwrap_or_default(),
                    elem_type: t["datatype"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The tensor called `want`, or the only one; its index.
fn pick(list: &[Tensor], want: Option<&str>, what: &str, url: &str) -> Result<usize, PluginError> {
    let names = || {
        list.iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match want {
        Some(n) => list.iter().position(|t| t.name == n).ok_or_else(|| {
            option_error(
                &format!("{what}_name"),
                format!("{url} has no {what} {n:?} (it has: {})", names()),
            )
        }),
        None if list.len() == 1 => Ok(0),
        None => Err(option_error(
            &format!("{what}_name"),
            format!(
                "{url} has {} {what}s ({}); name one in the manifest's [{what}]",
                list.len(),
                names()
            ),
        )),
    }
}

impl OipModel {
    pub fn open(
        client: Client,
        ep: &Endpoint,
        opts: &OpenOptions,
    ) -> Result<OipModel, PluginError> {
        let url = match &opts.model_version {
            Some(v) => format!("{}/versions/{v}", ep.url),
            None => ep.url.clone(),
        };
        let meta = client.get_json(&url)?;
        let offered: Vec<String> = meta
            .get("versions")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(v) = &opts.model_version
            && !offered.is_empty()
            && !offered.contains(v)
        {
            return Err(option_error(
                "model_version",
                format!("{url} offers versions [{}], not {v:?}", offered.join(", ")),
            ));
        }
        let inputs = tensors(&meta, "inputs");
        let outputs = tensors(&meta, "outputs");
        let ii = pick(&inputs, opts.input_name.as_deref(), "input", &url)?;
        let oi = pick(&outputs, opts.output_name.as_deref(), "output", &url)?;
        let datatype = match inputs[ii].elem_type.as_str() {
            "FP32" => Datatype::Fp32,
            "FP64" => Datatype::Fp64,
            "UINT8" => Datatype::Uint8,
            other => {
                return Err(model_error(format!(
                    "{url}: input {:?} has datatype {other:?}; the adapter sends FP32, FP64 or UINT8",
                    inputs[ii].name
                )));
            }
        };
        let sample = sample_shape(&inputs[ii].shape, opts.input_shape.as_deref(), &url)?;
        let declared = outputs[oi].shape.last().copied().filter(|d| *d > 0);
        let mut model = OipModel {
            client,
            infer_url: format!("{url}/infer"),
            url: url.clone(),
            input: inputs[ii].clone(),
            datatype,
            output: outputs[oi].name.clone(),
            sample,
            dim: declared.map_or(0, |d| d as usize),
            version: opts.model_version.clone(),
            per_request: opts.batch_for(true),
            concurrency: opts.concurrency,
            description: ModelDescription {
                inputs: Vec::new(),
                outputs: Vec::new(),
                input_index: ii,
                output_index: oi,
                embedding_dim: 0,
                batching: String::new(),
                notes: Vec::new(),
            },
        };
        match (declared, opts.embedding_dim) {
            (Some(d), Some(want)) if d as usize != want => {
                return Err(option_error(
                    "embedding_dim",
                    format!(
                        "{url} declares output {:?} of {d} values, not {want}",
                        model.output
                    ),
                ));
            }
            (None, Some(want)) => model.dim = want,
            (None, None) => model.dim = model.probe()?,
            _ => {}
        }
        let shown = |mut t: Tensor, n: usize| {
            if t.shape.is_empty() {
                t.shape = vec![-1; n];
            }
            t.shape[0] = -1;
            t
        };
        let mut ins = inputs;
        ins[ii].shape = std::iter::once(-1)
            .chain(model.sample.iter().copied())
            .collect();
        let mut outs: Vec<Tensor> = outputs.into_iter().map(|t| shown(t, 2)).collect();
        outs[oi].shape = vec![-1, model.dim as i64];
        let version_note = version_note(opts.model_version.as_deref(), &offered);
        model.description = ModelDescription {
            inputs: ins,
            outputs: outs,
            input_index: ii,
            output_index: oi,
            embedding_dim: model.dim,
            batching: format!(
                "remote: Open Inference Protocol v2, ≤ {} samples per request, ≤ {} in flight",
                model.per_request, model.concurrency
            ),
            notes: vec![
                format!("remote model at {url}: it cannot be pinned by sha256"),
                version_note,
                format!(
                    "platform {:?}",
                    meta.get("platform").and_then(|p| p.as_str()).unwrap_or("")
                ),
            ],
        };
        Ok(model)
    }

    /// One request with a zero sample, to learn the embedding's size.
    fn probe(&self) -> Result<usize, PluginError> {
        let n: i64 = self.sample.iter().product();
        let zeros = vec![0f32; n as usize];
        let (values, shape) = self.infer(&zeros, 1)?;
        match shape.as_slice() {
            [1, d] if *d > 0 && values.len() == *d as usize => Ok(*d as usize),
            _ => Err(model_error(format!(
                "{}: output {:?} has shape {shape:?} for one sample; an embedding is [1, D]",
                self.url, self.output
            ))),
        }
    }

    /// Posts `batch` samples; returns the output's values and shape.
    fn infer(&self, input: &[f32], batch: usize) -> Result<(Vec<f32>, Vec<i64>), PluginError> {
        let (datatype, data) = match self.datatype {
            Datatype::Fp32 => ("FP32", Data::Float(Floats(input))),
            Datatype::Fp64 => ("FP64", Data::Float(Floats(input))),
            Datatype::Uint8 => ("UINT8", Data::Bytes(to_u8(input, &self.url)?)),
        };
        let shape = std::iter::once(batch as i64)
            .chain(self.sample.iter().copied())
            .collect();
        let req = InferRequest {
            id: format!("zooaudit-{}", std::process::id()),
            inputs: [InputTensor {
                name: &self.input.name,
                shape,
                datatype,
                data,
            }],
            outputs: [OutputName { name: &self.output }],
        };
        let body = serde_json::to_vec(&req).map_err(|e| model_error(e.to_string()))?;
        let answer = self.client.post_json(&self.infer_url, &Body::Json(body))?;
        let url = &self.infer_url;
        if let (Some(pin), Some(got)) = (&self.version, answer.get("model_version")) {
            let got = got
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| got.to_string());
            if &got != pin {
                return Err(model_error(format!(
                    "{url}: the server answered with model version {got:?}, the manifest pins {pin:?}"
                )));
            }
        }
        let outputs = answer
            .get("outputs")
            .and_then(|o| o.as_array())
            .ok_or_else(|| {
                model_error(format!(
                    "{url}: the answer has no \"outputs\": {}",
                    short(&answer.to_string(), 120)
                ))
            })?;
        let out = outputs
            .iter()
            .find(|o| o["name"].as_str() == Some(&self.output))
            .or(if outputs.len() == 1 {
                outputs.first()
            } else {
                None
            })
            .ok_or_else(|| {
                model_error(format!("{url}: the answer has no output {:?}", self.output))
            })?;
        let shape: Vec<i64> = out["shape"]
            .as_array()
            .map(|s| s.iter().map(|d| d.as_i64().unwrap_or(-1)).collect())
            .unwrap_or_default();
        let values = flatten_numbers(&out["data"], &format!("{url}: output {:?}", self.output))?;
        let expected: i64 = shape.iter().product();
        if shape.is_empty() || expected != values.len() as i64 {
            return Err(model_error(format!(
                "{url}: output {:?} has shape {shape:?} but {} values",
                self.output,
                values.len()
            )));
        }
        Ok((values, shape))
    }
}

/// What the notes say about the model's version.
fn version_note(pinned: Option<&str>, offered: &[String]) -> String {
    match (pinned, offered.is_empty()) {
        (Some(v), _) => format!("server model version {v} (pinned; every answer is checked)"),
        (None, false) => format!(
            "model version not pinned (the server offers [{}]; pin one with model_version)",
            offered.join(", ")
        ),
        (None, true) => "the server reports no model versions".to_string(),
    }
}

/// One sample's shape: the metadata's, with free dimensions taken from
/// `input_shape` (which must agree with the fixed ones).
fn sample_shape(
    declared: &[i64],
    given: Option<&[i64]>,
    url: &str,
) -> Result<Vec<i64>, PluginError> {
    let meta: Vec<i64> = declared.iter().skip(1).copied().collect();
    match given {
        Some(g) => {
            let agrees = meta.is_empty()
                || (meta.len() == g.len() && meta.iter().zip(g).all(|(m, g)| *m < 0 || m == g));
            if !agrees {
                return Err(option_error(
                    "input_shape",
                    format!("{g:?} does not fit the input shape {declared:?} that {url} declares"),
                ));
            }
            Ok(g.to_vec())
        }
        None if !meta.is_empty() && meta.iter().all(|d| *d > 0) => Ok(meta),
        None => Err(option_error(
            "input_shape",
            format!(
                "{url} declares input shape {declared:?}, with free dimensions: give one sample's shape"
            ),
        )),
    }
}

fn to_u8(input: &[f32], url: &str) -> Result<Vec<u8>, PluginError> {
    input
        .iter()
        .map(|&v| {
            let r = v.round();
            if (v - r).abs() <= 1e-3 && (0.0..=255.0).contains(&r) {
                Ok(r as u8)
            } else {
                Err(model_error(format!(
                    "{url} takes UINT8 pixels, but the manifest's preprocessing gives {v}: feed raw pixels ([input] mean = [0, 0, 0], std = [1, 1, 1])"
                )))
            }
        })
        .collect()
}

impl EmbeddingModel for OipModel {
    fn describe(&self) -> ModelDescription {
        self.description.clone()
    }

    fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, PluginError> {
        let len: i64 = self.sample.iter().product();
        let len = len as usize;
        if input.len() != batch * len {
            return Err(crate::option_error(
                "input_shape",
                format!("{} values for {batch} samples of {len}", input.len()),
            ));
        }
        in_pieces(batch, self.per_request, self.concurrency, |s, n| {
            let (values, shape) = self.infer(&input[s * len..(s + n) * len], n)?;
            if shape.first() != Some(&(n as i64)) || values.len() != n * self.dim {
                return Err(model_error(format!(
                    "{}: answered output {:?} of shape {shape:?} for {n} samples; expected [{n}, {}]",
                    self.infer_url, self.output, self.dim
                )));
            }
            Ok(values)
        })
    }
}

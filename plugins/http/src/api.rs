//! A plain JSON embedding API: raw image bytes or a JSON body made from a
//! template, and the embedding found at a JSON path in the answer.

use base64::Engine;
use zooaudit_plugin_sdk::{EmbeddingModel, ModelDescription, PluginError, Tensor};

use crate::client::{Body, Client};
use crate::options::{Encoding, Endpoint, OpenOptions};
use crate::{flatten_numbers, in_pieces, model_error, option_error};

/// `("$input" count, "$inputs" count)` in a request template.
pub(crate) fn placeholders(t: &serde_json::Value) -> (usize, usize) {
    match t {
        serde_json::Value::String(s) if s == "$input" => (1, 0),
        serde_json::Value::String(s) if s == "$inputs" => (0, 1),
        serde_json::Value::Array(a) => a.iter().map(placeholders).fold((0, 0), add),
        serde_json::Value::Object(o) => o.values().map(placeholders).fold((0, 0), add),
        _ => (0, 0),
    }
}

fn add(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0 + b.0, a.1 + b.1)
}

/// One step of `embedding_path`.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    Each,
}

fn parse_path(p: &str) -> Result<Vec<Step>, PluginError> {
    let rest = p.strip_prefix('/').ok_or_else(|| {
        option_error(
            "embedding_path",
            "must start with / (a JSON pointer, * for every element)",
        )
    })?;
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    Ok(rest
        .split('/')
        .map(|s| match s {
            "*" => Step::Each,
            s => match s.parse::<usize>() {
                Ok(i) if !s.starts_with('+') => Step::Index(i),
                _ => Step::Key(s.replace("~1", "/").replace("~0", "~")),
            },
        })
        .collect())
}

/// Every value `path` reaches in `v`.
fn select<'a>(
    v: &'a serde_json::Value,
    path: &[Step],
    out: &mut Vec<&'a serde_json::Value>,
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        out.push(v);
        return true;
    };
    match (first, v) {
        (Step::Each, serde_json::Value::Array(a)) => a.iter().all(|x| select(x, rest, out)),
        (Step::Index(i), serde_json::Value::Array(a)) => {
            a.get(*i).is_some_and(|x| select(x, rest, out))
        }
        (Step::Key(k), serde_json::Value::Object(o)) => {
            o.get(k).is_some_and(|x| select(x, rest, out))
        }
        (Step::Index(i), serde_json::Value::Object(o)) => {
            o.get(&i.to_string()).is_some_and(|x| select(x, rest, out))
        }
        _ => false,
    }
}

/// How one sample is laid out in the tensor.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Chw,
    Hwc,
}

/// A model behind a plain JSON API.
pub struct ApiModel {
    client: Client,
    url: String,
    sample: Vec<i64>,
    encoding: Encoding,
    layout: Option<(Layout, u32, u32)>,
    bgr: bool,
    template: Option<serde_json::Value>,
    path: Vec<Step>,
    dim: usize,
    per_request: usize,
    concurrency: usize,
}

impl ApiModel {
    pub fn open(
        client: Client,
        ep: &Endpoint,
        opts: &OpenOptions,
    ) -> Result<ApiModel, PluginError> {
        let sample = opts.input_shape.clone().ok_or_else(|| {
            option_error(
                "input_shape",
                "an API does not describe its input: give one sample's shape, e.g. [112, 112, 3]",
            )
        })?;
        let batched = opts
            .request
            .as_ref()
            .is_some_and(|t| placeholders(t).1 == 1);
        if opts.request.is_none() && opts.encoding == Encoding::Tensor {
            return Err(option_error(
                "request",
                "needed with encoding = \"tensor\": a JSON template holding \"$input\" or \"$inputs\"",
            ));
        }
        if !batched && opts.max_batch.is_some_and(|b| b > 1) {
            return Err(option_error(
                "max_batch",
                "this request carries one sample (no \"$inputs\" in request)",
            ));
        }
        let path = parse_path(&opts.embedding_path)?;
        let stars = path.iter().filter(|s| **s == Step::Each).count();
        if stars != usize::from(batched) {
            return Err(option_error(
                "embedding_path",
                if batched {
                    "a \"$inputs\" request answers a batch: the path needs one * for the samples, e.g. /results/*/embedding"
                } else {
                    "one sample per request: the path cannot hold *"
                },
            ));
        }
        let layout = match opts.encoding {
            Encoding::Tensor => None,
            Encoding::Png => Some(image_layout(&sample)?),
        };
        let mut model = ApiModel {
            client,
            url: ep.url.clone(),
            sample,
            encoding: opts.encoding,
            layout,
            bgr: opts.bgr,
            template: opts.request.clone(),
            path,
            dim: opts.embedding_dim.unwrap_or(0),
            per_request: if batched { opts.batch_for(true) } else { 1 },
            concurrency: opts.concurrency,
        };
        if model.dim == 0 {
            // Learn the size from one mid-grey sample.
            let grey = vec![128f32; model.sample_len()];
            let rows = model.request(&grey, 1)?;
            model.dim = rows.first().map_or(0, Vec::len);
            if model.dim == 0 {
                return Err(model_error(format!(
                    "{}: the embedding at {} is empty",
                    model.url, opts.embedding_path
                )));
            }
        }
        Ok(model)
    }

    fn sample_len(&self) -> usize {
        self.sample.iter().product::<i64>() as usize
    }

    /// The JSON (or raw) form of one sample.
    fn encode(&self, s: &[f32]) -> Result<serde_json::Value, PluginError> {
        match self.encoding {
            Encoding::Tensor => Ok(serde_json::Value::from(s.to_vec())),
            Encoding::Png => Ok(serde_json::Value::String(
                base64::engine::general_purpose::STANDARD.encode(self.png(s)?),
            )),
        }
    }

    fn png(&self, s: &[f32]) -> Result<Vec<u8>, PluginError> {
        let Some((layout, h, w)) = self.layout else {
            return Err(model_error("not an image encoding"));
        };
        let plane = (h * w) as usize;
        let mut img = image::RgbImage::new(w, h);
        for (i, px) in img.pixels_mut().enumerate() {
            let mut rgb = [0u8; 3];
            for (c, out) in rgb.iter_mut().enumerate() {
                let v = match layout {
                    Layout::Chw => s[c * plane + i],
                    Layout::Hwc => s[i * 3 + c],
                };
                let r = v.round();
                if (v - r).abs() > 1e-3 || !(0.0..=255.0).contains(&r) {
                    return Err(model_error(format!(
                        "{}: encoding = \"png\" sends images, but the manifest's preprocessing gives {v}: feed raw pixels ([input] mean = [0, 0, 0], std = [1, 1, 1])",
                        self.url
                    )));
                }
                *out = r as u8;
            }
            if self.bgr {
                rgb.swap(0, 2);
            }
            *px = image::Rgb(rgb);
        }
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .map_err(|e| model_error(format!("encoding a PNG: {e}")))?;
        Ok(out.into_inner())
    }

    fn fill(
        &self,
        t: &serde_json::Value,
        one: &serde_json::Value,
        many: &serde_json::Value,
    ) -> serde_json::Value {
        match t {
            serde_json::Value::String(s) if s == "$input" => one.clone(),
            serde_json::Value::String(s) if s == "$inputs" => many.clone(),
            serde_json::Value::Array(a) => a.iter().map(|x| self.fill(x, one, many)).collect(),
            serde_json::Value::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), self.fill(v, one, many)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Sends `n` samples (one request); returns one embedding per sample.
    fn request(&self, input: &[f32], n: usize) -> Result<Vec<Vec<f32>>, PluginError> {
        let len = self.sample_len();
        let body = match &self.template {
            None => Body::Bytes {
                data: self.png(&input[..len])?,
                content_type: "image/png".into(),
            },
            Some(t) => {
                let samples: Vec<serde_json::Value> = (0..n)
                    .map(|i| self.encode(&input[i * len..(i + 1) * len]))
                    .collect::<Result<_, _>>()?;
                let one = samples.first().cloned().unwrap_or_default();
                let body = self.fill(t, &one, &serde_json::Value::Array(samples));
                Body::Json(serde_json::to_vec(&body).map_err(|e| model_error(e.to_string()))?)
            }
        };
        let answer = self.client.post_json(&self.url, &body)?;
        let mut found = Vec::new();
        let ok = select(&answer, &self.path, &mut found);
        if !ok || found.len() != n {
            return Err(model_error(format!(
                "{}: the answer has {} at embedding_path for {n} sample(s): {}",
                self.url,
                if ok {
                    found.len().to_string()
                } else {
                    "nothing".into()
                },
                crate::short(&answer.to_string(), 120)
            )));
        }
        found
            .into_iter()
            .map(|v| flatten_numbers(v, &format!("{}: the embedding", self.url)))
            .collect()
    }
}

/// The image geometry of one sample: `[3, H, W]` or `[H, W, 3]`.
fn image_layout(sample: &[i64]) -> Result<(Layout, u32, u32), PluginError> {
    match *sample {
        [3, h, w] if w != 3 => Ok((Layout::Chw, h as u32, w as u32)),
        [h, w, 3] => Ok((Layout::Hwc, h as u32, w as u32)),
        _ => Err(option_error(
            "input_shape",
            format!(
                "{sample:?}: encoding = \"png\" needs an RGB sample, [3, H, W] (NCHW) or [H, W, 3] (NHWC)"
            ),
        )),
    }
}

impl EmbeddingModel for ApiModel {
    fn describe(&self) -> ModelDescription {
        ModelDescription {
            inputs: vec![Tensor {
                name: "input".into(),
                shape: std::iter::once(-1).chain(self.sample.iter().copied()).collect(),
                elem_type: "float32".into(),
            }],
            outputs: vec![Tensor {
                name: "embedding".into(),
                shape: vec![-1, self.dim as i64],
                elem_type: "float32".into(),
            }],
            input_index: 0,
            output_index: 0,
            embedding_dim: self.dim,
            batching: format!(
                "remote: JSON API, ≤ {} samples per request, ≤ {} in flight",
                self.per_request, self.concurrency
            ),
            notes: vec![
                format!("remote model at {}: it cannot be pinned by sha256", self.url),
                "a plain JSON API reports no model version: nothing but the URL identifies the model".into(),
            ],
        }
    }

    fn embed(&self, input: &[f32], batch: usize) -> Result<Vec<f32>, PluginError> {
        let len = self.sample_len();
        if input.len() != batch * len {
            return Err(option_error(
                "input_shape",
                format!("{} values for {batch} samples of {len}", input.len()),
            ));
        }
        in_pieces(batch, self.per_request, self.concurrency, |s, n| {
            let rows = self.request(&input[s * len..(s + n) * len], n)?;
            let mut out = Vec::with_capacity(n * self.dim);
            for (i, r) in rows.into_iter().enumerate() {
                if r.len() != self.dim {
                    return Err(model_error(format!(
                        "{}: sample {} got an embedding of {} values, expected {}",
                        self.url,
                        s + i,
                        r.len(),
                        self.dim
                    )));
                }
                out.extend(r);
            }
            Ok(out)
        })
    }
}

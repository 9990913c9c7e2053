//! zooaudit's adapter for models reached over HTTP: a vendor's embedding
//! API, or an organisation's own Triton / KServe / MLServer deployment.
//!
//! The manifest's `source` names the endpoint; its scheme picks the protocol:
//! - `oip+http://HOST:PORT/v2/models/NAME` (or `oip+https://`): the
//!   KServe / **Open Inference Protocol v2** that Triton, KServe, MLServer
//!   and others speak. The adapter reads the model's metadata
//!   (`GET /v2/models/NAME[/versions/V]`: input and output names, datatypes
//!   and shapes), then posts JSON tensors to `…/infer`, whole batches at a
//!   time. `model_version` pins the served version: the metadata must offer
//!   it, every answer must say it.
//! - `api+http://HOST:PORT/PATH` (or `api+https://`): a plain JSON embedding
//!   API, e.g. zooaudit's own guard (`/v1/embed`, `/v1/embed/batch`). The
//!   request is raw image bytes (`encoding = "png"`, no `request`) or a JSON
//!   body built from the `request` template, whose `"$input"` (one sample
//!   per request) or `"$inputs"` (a batch) string is replaced by the
//!   sample(s); `embedding_path` says where the embedding is in the answer
//!   (`/embedding`, or `/results/*/embedding` for a batch).
//!
//! A remote model cannot be pinned by sha256 (the host says so in the
//! report); what the protocol lets the adapter pin, it pins.
//!
//! Options (`[model.options]`; errors about one start with `option <key>:`):
//! `timeout_s` (a request, default 60), `connect_timeout_s` (10),
//! `retries` (3: on connection errors, timeouts, 429 and 5xx, with
//! exponential backoff from `backoff_ms` (200), honouring `Retry-After`;
//! each retry is a line on stderr), `concurrency` (requests in flight, 4),
//! `max_batch` (samples per request: 32 for OIP and `"$inputs"` templates,
//! 1 otherwise), `max_response_bytes` (64 MiB), `auth_env` / `auth_file`
//! (where the credential is: an environment variable's name or a file's
//! path, never the secret itself), `auth_header` ("Authorization"),
//! `auth_scheme` ("Bearer"; "" sends the bare value), `embedding_dim`
//! (checked against the metadata, or saves the probe request an API needs
//! to learn it), `input_shape` (one sample's shape: needed by an API, and
//! by OIP when the metadata leaves dimensions free), `model_version` (OIP);
//! for an API also `encoding` ("png" | "tensor"), `channels` (the order the
//! manifest feeds: "RGB" | "BGR", for png), `request`, `embedding_path`.

mod api;
mod client;
mod oip;
mod options;

use std::path::Path;

use zooaudit_plugin_sdk::{Descriptor, EmbeddingModel, ModelAdapter, Options, PluginError};

pub use options::{Endpoint, OpenOptions, Protocol};

/// The plugin's root module.
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> zooaudit_plugin_sdk::abi::PluginModRef {
    zooaudit_plugin_sdk::model_adapter_module::<HttpAdapter>()
}

/// The HTTP adapter.
pub struct HttpAdapter;

impl ModelAdapter for HttpAdapter {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "http".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "models behind an inference API: Open Inference Protocol v2 (KServe, Triton, MLServer) and plain JSON embedding APIs".into(),
            formats: Protocol::SCHEMES.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn open(path: &Path, options: &Options) -> Result<Box<dyn EmbeddingModel>, PluginError> {
        let source = path.to_string_lossy();
        let endpoint = Endpoint::parse(&source)?;
        let opts = OpenOptions::from_json(options, endpoint.protocol)?;
        let client = client::Client::new(&endpoint, &opts)?;
        Ok(match endpoint.protocol {
            Protocol::Oip => Box::new(oip::OipModel::open(client, &endpoint, &opts)?),
            Protocol::Api => Box::new(api::ApiModel::open(client, &endpoint, &opts)?),
        })
    }
}

use zooaudit_plugin_sdk::{model_error, option_error};

/// Every number of a (possibly nested) JSON array, row-major; `what` names
/// the array in the error.
fn flatten_numbers(v: &serde_json::Value, what: &str) -> Result<Vec<f32>, PluginError> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f32>, what: &str) -> Result<(), PluginError> {
        match v {
            serde_json::Value::Array(a) => a.iter().try_for_each(|x| walk(x, out, what)),
            serde_json::Value::Number(n) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                out.push(x as f32);
                Ok(())
            }
            other => Err(model_error(format!(
                "{what} holds {}, not a number",
                short(&other.to_string(), 40)
            ))),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out, what)?;
    Ok(out)
}

/// `s` cut to at most `max` characters, on one line.
fn short(s: &str, max: usize) -> String {
    let one: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let one = one.trim();
    if one.chars().count() <= max {
        one.to_string()
    } else {
        format!("{}…", one.chars().take(max).collect::<String>())
    }
}

/// Runs `request(first, count)` over `batch` samples in pieces of at most
/// `per_request`, with up to `concurrency` requests in flight, and joins
/// the answers in order. The first error wins.
fn in_pieces(
    batch: usize,
    per_request: usize,
    concurrency: usize,
    request: impl Fn(usize, usize) -> Result<Vec<f32>, PluginError> + Sync,
) -> Result<Vec<f32>, PluginError> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let per = per_request.max(1);
    let pieces: Vec<(usize, usize)> = (0..batch)
        .step_by(per)
        .map(|s| (s, per.min(batch - s)))
        .collect();
    if pieces.len() <= 1 || concurrency <= 1 {
        let mut out = Vec::new();
        for (s, n) in pieces {
            out.extend(request(s, n)?);
        }
        return Ok(out);
    }
    type Slot = Option<Result<Vec<f32>, PluginError>>;
    let results: Mutex<Vec<Slot>> = Mutex::new((0..pieces.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..concurrency.min(pieces.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= pieces.len() || failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let (s, n) = pieces[i];
                    let r = zooaudit_plugin_sdk::guard("a request", || request(s, n));
                    if r.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    if let Ok(mut slots) = results.lock() {
                        slots[i] = Some(r);
                    }
                }
            });
        }
    });
    let slots = results
        .into_inner()
        .map_err(|_| model_error("a request thread failed"))?;
    let mut out = Vec::with_capacity(batch);
    for slot in slots {
        match slot {
            Some(Ok(v)) => out.extend(v),
            Some(Err(e)) => return Err(e),
            None => return Err(model_error("a request was not run")),
        }
    }
    Ok(out)
}

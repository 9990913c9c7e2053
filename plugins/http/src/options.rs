//! The endpoint (from the manifest's `source`) and the adapter's options.

use std::time::Duration;

use zooaudit_plugin_sdk::{Options, PluginError};

use crate::{model_error, option_error};

/// Which protocol the endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// KServe / Open Inference Protocol v2 (JSON over HTTP).
    Oip,
    /// A plain JSON (or raw image) embedding API.
    Api,
}

impl Protocol {
    /// The `source` schemes this adapter opens.
    pub const SCHEMES: [&'static str; 4] = ["oip+http", "oip+https", "api+http", "api+https"];
}

/// A parsed `source`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub protocol: Protocol,
    /// The plain `http(s)://` URL, without a trailing slash.
    pub url: String,
}

impl Endpoint {
    pub fn parse(source: &str) -> Result<Endpoint, PluginError> {
        let (scheme, rest) = source.split_once("://").ok_or_else(|| {
            model_error(format!(
                "{} is not an endpoint: give oip+http(s)://HOST/v2/models/NAME or api+http(s)://HOST/PATH",
                zooaudit_formats::quote(source)
            ))
        })?;
        let (protocol, transport) = match scheme {
            "oip+http" => (Protocol::Oip, "http"),
            "oip+https" => (Protocol::Oip, "https"),
            "api+http" => (Protocol::Api, "http"),
            "api+https" => (Protocol::Api, "https"),
            other => {
                return Err(model_error(format!(
                    "scheme {} is not one of {}",
                    zooaudit_formats::quote(other),
                    Protocol::SCHEMES.join(", ")
                )));
            }
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
            return Err(model_error(format!(
                "{} has no host",
                zooaudit_formats::quote(source)
            )));
        }
        if protocol == Protocol::Oip && !rest.contains("/v2/models/") {
            return Err(model_error(format!(
                "{}: an Open Inference Protocol endpoint is HOST/v2/models/NAME",
                zooaudit_formats::quote(source)
            )));
        }
        Ok(Endpoint {
            protocol,
            url: format!("{transport}://{rest}"),
        })
    }
}

/// How an API request carries a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// A PNG image (raw bytes, or base64 inside a JSON template).
    Png,
    /// The preprocessed tensor as a JSON array.
    Tensor,
}

/// Where the credential comes from.
#[derive(Debug, Clone)]
pub struct Auth {
    pub header: String,
    /// The header's value (scheme + secret).
    pub value: String,
}

/// Parsed options.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    pub input_name: Option<String>,
    pub output_name: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub concurrency: usize,
    pub max_batch: Option<usize>,
    pub max_response_bytes: u64,
    pub auth: Option<Auth>,
    pub embedding_dim: Option<usize>,
    pub input_shape: Option<Vec<i64>>,
    pub model_version: Option<String>,
    pub encoding: Encoding,
    /// The tensor's channel order is BGR (png encoding swaps it back).
    pub bgr: bool,
    pub request: Option<serde_json::Value>,
    pub embedding_path: String,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            input_name: None,
            output_name: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retries: 3,
            backoff: Duration::from_millis(200),
            concurrency: 4,
            max_batch: None,
            max_response_bytes: 64 << 20,
            auth: None,
            embedding_dim: None,
            input_shape: None,
            model_version: None,
            encoding: Encoding::Png,
            bgr: false,
            request: None,
            embedding_path: "/embedding".into(),
        }
    }
}

/// Option keys that would put a secret into the manifest.
const SECRET_KEYS: [&str; 8] = [
    "token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "authorization",
    "bearer",
];

impl OpenOptions {
    /// Parses the JSON options for `protocol`; unknown keys are errors.
    pub fn from_json(o: &Options, protocol: Protocol) -> Result<Self, PluginError> {
        let mut opts = OpenOptions::default();
        let (mut auth_env, mut auth_file) = (None, None);
        let (mut auth_header, mut auth_scheme) =
            ("Authorization".to_string(), "Bearer".to_string());
        for (k, v) in o {
            let key = k.as_str();
            let api_only = matches!(key, "encoding" | "channels" | "request" | "embedding_path");
            if api_only && protocol == Protocol::Oip {
                return Err(option_error(key, "applies to api+http(s) endpoints only"));
            }
            if key == "model_version" && protocol == Protocol::Api {
                return Err(option_error(key, "applies to oip+http(s) endpoints only"));
            }
            match key {
                "input_name" => opts.input_name = Some(string(key, v)?),
                "output_name" => opts.output_name = Some(string(key, v)?),
                "timeout_s" => opts.timeout = seconds(key, v)?,
                "connect_timeout_s" => opts.connect_timeout = seconds(key, v)?,
                "retries" => opts.retries = count(key, v, 0, 20)? as u32,
                "backoff_ms" => opts.backoff = Duration::from_millis(count(key, v, 0, 60_000)?),
                "concurrency" => opts.concurrency = count(key, v, 1, 256)? as usize,
                "max_batch" => opts.max_batch = Some(count(key, v, 1, 65_536)? as usize),
                "max_response_bytes" => opts.max_response_bytes = count(key, v, 1024, 1 << 34)?,
                "embedding_dim" => opts.embedding_dim = Some(count(key, v, 1, 1 << 20)? as usize),
                "input_shape" => opts.input_shape = Some(shape(key, v)?),
                "model_version" => opts.model_version = Some(string(key, v)?),
                "auth_env" => auth_env = Some(string(key, v)?),
                "auth_file" => auth_file = Some(string(key, v)?),
                "auth_header" => auth_header = string(key, v)?,
                "auth_scheme" => auth_scheme = string(key, v)?,
                "encoding" => {
                    opts.encoding = match string(key, v)?.as_str() {
                        "png" => Encoding::Png,
                        "tensor" => Encoding::Tensor,
                        other => return Err(not_one_of(key, other, "png, tensor")),
                    }
                }
                "channels" => {
                    opts.bgr = match string(key, v)?.as_str() {
                        "RGB" => false,
                        "BGR" => true,
                        other => return Err(not_one_of(key, other, "RGB, BGR")),
                    }
                }
                "request" => opts.request = Some(request_template(key, v)?),
                "embedding_path" => opts.embedding_path = string(key, v)?,
                k if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) => {
                    return Err(option_error(
                        k,
                        "a secret must not be written into the manifest: name an environment variable with auth_env or a file with auth_file",
                    ));
                }
                _ => return Err(option_error(key, "unknown option for the http adapter")),
            }
        }
        opts.auth = read_auth(auth_env, auth_file, &auth_header, &auth_scheme)?;
        Ok(opts)
    }

    /// Samples per request.
    pub fn batch_for(&self, batched: bool) -> usize {
        self.max_batch.unwrap_or(if batched { 32 } else { 1 })
    }
}

fn read_auth(
    env: Option<String>,
    file: Option<String>,
    header: &str,
    scheme: &str,
) -> Result<Option<Auth>, PluginError> {
    let from = if file.is_some() {
        "auth_file"
    } else {
        "auth_env"
    };
    let secret = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(option_error(
                "auth_env",
                "give auth_env or auth_file, not both",
            ));
        }
        (Some(name), None) => match std::env::var(&name) {
            Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
            _ => {
                return Err(option_error(
                    "auth_env",
                    format!("environment variable {name} is not set"),
                ));
            }
        },
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| option_error("auth_file", format!("{path}: {e}")))?;
            let s = text.trim();
            if s.is_empty() || s.contains('\n') {
                return Err(option_error(
                    "auth_file",
                    format!("{path} must hold one non-empty line"),
                ));
            }
            s.to_string()
        }
        (None, None) => return Ok(None),
    };
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(option_error("auth_header", "must be an HTTP header name"));
    }
    let value = if scheme.is_empty() {
        secret
    } else {
        format!("{scheme} {secret}")
    };
    if value.bytes().any(|b| b.is_ascii_control()) {
        return Err(option_error(
            from,
            "the credential (or auth_scheme) holds control characters",
        ));
    }
    Ok(Some(Auth {
        header: header.to_string(),
        value,
    }))
}

fn string(k: &str, v: &serde_json::Value) -> Result<String, PluginError> {
    v.as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| option_error(k, "must be a non-empty string"))
}

fn count(k: &str, v: &serde_json::Value, min: u64, max: u64) -> Result<u64, PluginError> {
    v.as_u64()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| option_error(k, format!("must be an integer in {min}..={max}")))
}

fn seconds(k: &str, v: &serde_json::Value) -> Result<Duration, PluginError> {
    v.as_f64()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| option_error(k, "must be a number of seconds in (0, 86400]"))
}

fn shape(k: &str, v: &serde_json::Value) -> Result<Vec<i64>, PluginError> {
    let dims: Option<Vec<i64>> = v.as_array().and_then(|a| {
        a.iter()
            .map(|d| d.as_i64().filter(|d| (1..=16_384).contains(d)))
            .collect()
    });
    match dims {
        Some(d) if (1..=4).contains(&d.len()) => Ok(d),
        _ => Err(option_error(
            k,
            "must be one sample's shape, e.g. [3, 112, 112], each dimension in 1..=16384",
        )),
    }
}

fn not_one_of(k: &str, got: &str, allowed: &str) -> PluginError {
    option_error(
        k,
        format!("{} is not one of {allowed}", zooaudit_formats::quote(got)),
    )
}

/// The `request` template: a JSON object (or a string holding one) with
/// exactly one `"$input"` or `"$inputs"` placeholder.
fn request_template(k: &str, v: &serde_json::Value) -> Result<serde_json::Value, PluginError> {
    let t = match v {
        serde_json::Value::String(s) => {
            serde_json::from_str(s).map_err(|e| option_error(k, format!("is not JSON: {e}")))?
        }
        other => other.clone(),
    };
    let n = crate::api::placeholders(&t);
    if n.0 + n.1 != 1 {
        return Err(option_error(
            k,
            "must hold exactly one \"$input\" (one sample per request) or \"$inputs\" (a batch) string",
        ));
    }
    Ok(t)
}

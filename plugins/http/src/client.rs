//! One HTTP client per opened model: timeouts, the credential, bounded
//! retries with exponential backoff, a cap on answer sizes.

use std::io::Read;
use std::time::Duration;

use reqwest::blocking::{RequestBuilder, Response};
use zooaudit_plugin_sdk::PluginError;

use crate::options::{Auth, Endpoint, OpenOptions};
use crate::{model_error, short};

/// A request body.
pub enum Body {
    Json(Vec<u8>),
    Bytes { data: Vec<u8>, content_type: String },
}

/// The HTTP client of one model.
pub struct Client {
    http: reqwest::blocking::Client,
    auth: Option<Auth>,
    retries: u32,
    backoff: Duration,
    timeout: Duration,
    max_bytes: u64,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    message: String,
    retry: bool,
    /// The server's `Retry-After`, in seconds.
    after: Option<Duration>,
}

/// Longest wait between two attempts.
const MAX_WAIT: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(endpoint: &Endpoint, opts: &OpenOptions) -> Result<Client, PluginError> {
        let http = reqwest::blocking::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .timeout(opts.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("zooaudit-http/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| model_error(format!("{}: HTTP client: {e}", endpoint.url)))?;
        Ok(Client {
            http,
            auth: opts.auth.clone(),
            retries: opts.retries,
            backoff: opts.backoff,
            timeout: opts.timeout,
            max_bytes: opts.max_response_bytes,
        })
    }

    /// `GET url`, answered with JSON.
    pub fn get_json(&self, url: &str) -> Result<serde_json::Value, PluginError> {
        self.send("GET", url, || self.http.get(url))
    }

    /// `POST url` with `body`, answered with JSON.
    pub fn post_json(&self, url: &str, body: &Body) -> Result<serde_json::Value, PluginError> {
        self.send("POST", url, || {
            let r = self.http.post(url);
            match body {
                Body::Json(b) => r
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(b.clone()),
                Body::Bytes { data, content_type } => r
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .body(data.clone()),
            }
        })
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        make: impl Fn() -> RequestBuilder,
    ) -> Result<serde_json::Value, PluginError> {
        let what = format!("{method} {url}");
        let attempts = self.retries + 1;
        let mut attempt = 1;
        loop {
            let mut req = make().header(reqwest::header::ACCEPT, "application/json");
            if let Some(a) = &self.auth {
                req = req.header(a.header.as_str(), a.value.as_str());
            }
            let failure = match req.send() {
                Ok(resp) => match self.answer(resp) {
                    Ok(v) => return Ok(v),
                    Err(f) => f,
                },
                Err(e) => self.transport(&e),
            };
            if !failure.retry || attempt >= attempts {
                let tries = if attempt > 1 {
                    format!(" (after {attempt} attempts)")
                } else {
                    String::new()
                };
                return Err(model_error(format!("{what}: {}{tries}", failure.message)));
            }
            let wait = failure
                .after
                .unwrap_or_else(|| self.backoff.saturating_mul(1 << (attempt - 1).min(16)))
                .min(MAX_WAIT);
            // The host shows a plugin's stderr beside its own progress.
            eprintln!(
                "zooaudit: http: {what}: {}; retry {attempt}/{} in {:.1} s",
                failure.message,
                self.retries,
                wait.as_secs_f64()
            );
            std::thread::sleep(wait);
            attempt += 1;
        }
    }

    fn transport(&self, e: &reqwest::Error) -> Failure {
        let message = if e.is_timeout() {
            format!("no answer within {:.1} s", self.timeout.as_secs_f64())
        } else if e.is_connect() {
            format!("cannot connect ({})", root_cause(e))
        } else {
            root_cause(e)
        };
        Failure {
            message,
            retry: true,
            after: None,
        }
    }

    fn answer(&self, resp: Response) -> Result<serde_json::Value, Failure> {
        let status = resp.status();
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = self.read_body(resp)?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            let retry = status.as_u16() == 429 || status.is_server_error();
            return Err(Failure {
                message: format!("HTTP {status}: {}", short(&text, 160)),
                retry,
                after,
            });
        }
        serde_json::from_slice(&body).map_err(|e| Failure {
            message: format!(
                "the answer is not JSON ({e}): {}",
                short(&String::from_utf8_lossy(&body), 80)
            ),
            retry: false,
            after: None,
        })
    }

    fn read_body(&self, resp: Response) -> Result<Vec<u8>, Failure> {
        let mut body = Vec::new();
        let read = resp.take(self.max_bytes + 1).read_to_end(&mut body);
        match read {
            Ok(_) if body.len() as u64 > self.max_bytes => Err(Failure {
                message: format!(
                    "the answer is larger than max_response_bytes ({} bytes)",
                    self.max_bytes
                ),
                retry: false,
                after: None,
            }),
            Ok(_) => Ok(body),
            Err(e) => Err(Failure {
                message: format!("reading the answer: {e}"),
                retry: true,
                after: None,
            }),
        }
    }
}

/// The innermost cause of a transport error, on one line.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    short(&cur.to_string(), 160)
}

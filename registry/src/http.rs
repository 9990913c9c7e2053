//! `https://` (and `http://`) sources through `reqwest` with rustls.
//!
//! Connect and whole-request timeouts, a redirect limit (an `https://`
//! source is never redirected to plain HTTP), a size limit checked against
//! `Content-Length` before the body and against the bytes as they arrive.
//! The body goes to `<cache>/models/partial/<sha256 of the URL>.part`, held
//! under an exclusive lock; when a download breaks off, the part stays and
//! the next fetch asks the server for the rest (`Range`), starting over when
//! the server does not answer 206 for exactly that offset. The finished file
//! is hashed whole and only enters the cache when it matches the pin.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};

use reqwest::header::{CONTENT_RANGE, LOCATION, RANGE};
use sha2::{Digest, Sha256};

use crate::progress::Bar;
use crate::{Fetch, RegistryError, Resolved, extension_of, sha256_file};

/// A blocking client configured from the fetch options.
pub(crate) fn client(
    opts: &crate::FetchOptions,
    https_only: bool,
) -> Result<reqwest::blocking::Client, String> {
    reqwest::blocking::Client::builder()
        .user_agent(concat!("zooaudit/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(opts.connect_timeout)
        .timeout(opts.timeout)
        .redirect(reqwest::redirect::Policy::limited(opts.max_redirects))
        .https_only(https_only)
        .build()
        .map_err(|e| format!("cannot set up the HTTP client: {e}"))
}

/// One line for a reqwest error, with its innermost cause.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_redirect() {
        "too many redirects (a redirect loop?)".to_string()
    } else if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else if let Some(s) = e.status() {
        format!("HTTP {s}")
    } else if e.is_body() || e.is_decode() {
        "the connection broke off while reading the body".to_string()
    } else {
        "request failed".to_string()
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut last = None;
    while let Some(s) = src {
        last = Some(s.to_string());
        src = s.source();
    }
    if let Some(l) = last.filter(|l| !msg.contains(l.as_str())) {
        msg.push_str(&format!(" ({l})"));
    }
    msg
}

/// What a `Range: bytes=0-0` probe learns about a URL.
pub(crate) struct Probe {
    pub size: Option<u64>,
    pub commit: Option<String>,
}

/// Asks for the first byte of `url` (following at most the configured number
/// of redirects): the full size from `Content-Range` or `Content-Length`, and
/// the hub's `X-Repo-Commit`.
pub(crate) fn probe(
    client: &reqwest::blocking::Client,
    url: &str,
    token: Option<&str>,
) -> Result<Probe, String> {
    let mut req = client.get(url).header(RANGE, "bytes=0-0");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().map_err(|e| describe(&e))?;
    let status = resp.status();
    if !status.is_success() {
        let hint = resp
            .headers()
            .get("x-error-message")
            .and_then(|v| v.to_str().ok())
            .map(|m| format!(": {m}"))
            .unwrap_or_default();
        return Err(format!("HTTP {status}{hint}"));
    }
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let size = if status == reqwest::StatusCode::PARTIAL_CONTENT {
        header(CONTENT_RANGE.as_str())
            .and_then(|r| r.rsplit_once('/').and_then(|(_, t)| t.trim().parse().ok()))
    } else {
        resp.content_length()
    };
    Ok(Probe {
        size,
        commit: header("x-repo-commit"),
    })
}

pub(crate) fn fetch(f: &Fetch) -> Result<Resolved, RegistryError> {
    let url =
        reqwest::Url::parse(f.source_text.trim()).map_err(|e| f.bad(format!("not a URL: {e}")))?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err(f.bad("the URL has no host"));
    }
    let models = f.models_dir()?;
    let name = url
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_string))
        .unwrap_or_default();
    let ext = extension_of(&name);
    if let Some(hit) = f.cached(&models, &ext)? {
        return Ok(hit);
    }
    if f.opts.offline {
        return Err(f.offline_miss());
    }
    let partial_dir = models.join("partial");
    std::fs::create_dir_all(&partial_dir)
        .map_err(|e| f.bad(format!("{}: {e}", partial_dir.display())))?;
    let key = hex::encode(Sha256::digest(url.as_str().as_bytes()));
    let part_path = partial_dir.join(format!("{key}.part"));
    let mut part = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&part_path)
        .map_err(|e| f.bad(format!("{}: {e}", part_path.display())))?;
    // One writer per URL; a second fetch waits, then finds the cache filled.
    part.lock()
        .map_err(|e| f.bad(format!("{}: cannot lock: {e}", part_path.display())))?;
    if let Some(hit) = f.cached(&models, &ext)? {
        let _ = std::fs::remove_file(&part_path);
        return Ok(hit);
    }
    let client = client(f.opts, url.scheme() == "https").map_err(|m| f.bad(m))?;
    let total = download(
        &client,
        &url,
        &mut part,
        f.opts.max_bytes,
        f.opts.progress,
        &name,
    )
    .map_err(|m| {
        let empty = std::fs::metadata(&part_path).is_ok_and(|m| m.len() == 0);
        if m.starts_with("refused:") || empty {
            // Nothing worth resuming.
            let _ = std::fs::remove_file(&part_path);
        }
        f.bad(m.trim_start_matches("refused: "))
    })?;
    let sha = sha256_file(&part_path).map_err(|e| f.bad(e.to_string()))?;
    // Hand the finished part to the store as a temporary file: it is
    // renamed into the cache on a match and deleted on a mismatch.
    let file = part.try_clone().map_err(|e| f.bad(e.to_string()))?;
    drop(part);
    let path = tempfile::TempPath::try_from_path(&part_path).map_err(|e| f.bad(e.to_string()))?;
    let tmp = tempfile::NamedTempFile::from_parts(file, path);
    f.store(&models, &ext, tmp, sha, total, None)
}

/// Downloads `url` into `part`, resuming after what it holds. Returns the
/// file's full size. Errors starting with `refused:` mean the part is
/// useless (over the size limit, a server error before any byte).
fn download(
    client: &reqwest::blocking::Client,
    url: &reqwest::Url,
    part: &mut File,
    max: u64,
    progress: bool,
    name: &str,
) -> Result<u64, String> {
    let have = part.metadata().map_err(|e| e.to_string())?.len();
    let mut req = client.get(url.clone());
    if have > 0 {
        req = req.header(RANGE, format!("bytes={have}-"));
    }
    let mut resp = req.send().map_err(|e| describe(&e))?;
    let status = resp.status();
    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE && have > 0 {
        // The part may already be complete; the digest decides.
        return Ok(have);
    }
    if !status.is_success() {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|l| format!(" (to {l})"))
            .unwrap_or_default();
        return Err(format!("refused: HTTP {status}{loc}"));
    }
    let resumed = status == reqwest::StatusCode::PARTIAL_CONTENT
        && resp
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|r| r.trim().starts_with(&format!("bytes {have}-")));
    let start = if resumed { have } else { 0 };
    if !resumed {
        part.set_len(0).map_err(|e| e.to_string())?;
    }
    part.seek(SeekFrom::Start(start))
        .map_err(|e| e.to_string())?;
    let total = resp.content_length().map(|n| n + start);
    if let Some(t) = total
        && t > max
    {
        return Err(format!(
            "refused: the file is {t} bytes, over the limit of {max} bytes"
        ));
    }
    let bar = Bar::new(progress, total, name);
    bar.set_position(start);
    let mut got = start;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match resp.read(&mut buf) {
            Ok(n) => n,
            Err(e) => {
                part.flush().map_err(|e| e.to_string())?;
                return Err(format!(
                    "the connection broke off after {got}{} bytes ({e}); fetch again to resume",
                    total.map(|t| format!(" of {t}")).unwrap_or_default()
                ));
            }
        };
        if n == 0 {
            break;
        }
        got += n as u64;
        if got > max {
            return Err(format!(
                "refused: the file is over the limit of {max} bytes"
            ));
        }
        part.write_all(&buf[..n]).map_err(|e| e.to_string())?;
        bar.inc(n as u64);
    }
    part.sync_all().map_err(|e| e.to_string())?;
    if let Some(t) = total
        && got != t
    {
        return Err(format!(
            "truncated: got {got} of {t} bytes; fetch again to resume"
        ));
    }
    Ok(got)
}

//! A real HTTP/1.1 server on 127.0.0.1 for the tests: it speaks the parts of
//! the Hugging Face hub API that `hf-hub` uses and serves plain files, and
//! can misbehave on purpose (short bodies, redirect loops, errors).
//!
//! Hub routes for a repository `owner/name` at commit `C`, for each revision
//! `R` (branches, tags, and `C` itself):
//! - `GET /api/models/owner/name/revision/R` → `{"id", "sha": C, "siblings": [{"rfilename"}…]}`
//! - `GET /owner/name/resolve/R/<file>` → the bytes, with `ETag`,
//!   `X-Repo-Commit: C`, `Accept-Ranges`, `Content-Length`, and for `Range`
//!   requests 206 with `Content-Range` (or 416).
//!
//! Unknown paths answer 404 with `X-Error-Code: EntryNotFound`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// What one route answers.
#[derive(Clone)]
pub enum Reply {
    /// 200 with a JSON body.
    Json(String),
    /// A file with range support; `commit` goes to `X-Repo-Commit`.
    File {
        bytes: Arc<Vec<u8>>,
        etag: String,
        commit: Option<String>,
    },
    /// Declares `bytes.len()` as the length (honouring ranges) but sends
    /// only the first `send` bytes of the requested range, then closes; after
    /// `times` such answers it behaves like [`Reply::File`].
    /// Only answers longer than `send` bytes are cut short and counted.
    ShortBody {
        bytes: Arc<Vec<u8>>,
        send: usize,
        times: usize,
        served: Arc<AtomicUsize>,
        commit: Option<String>,
    },
    /// A redirect to this location.
    Redirect(String),
    /// This status with an empty body.
    Status(u16),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
}

/// The running server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    routes: Arc<Mutex<BTreeMap<String, Reply>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts on an ephemeral port of 127.0.0.1.
    pub fn start() -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let routes: Arc<Mutex<BTreeMap<String, Reply>>> = Arc::default();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (routes.clone(), seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, s) = (r.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &r, &s);
                });
            }
        });
        TestServer {
            addr,
            routes,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn route(&self, path: &str, reply: Reply) {
        self.routes
            .lock()
            .expect("routes")
            .insert(path.to_string(), reply);
    }

    /// A file served at `path` with range support.
    pub fn file(&self, path: &str, bytes: Vec<u8>) {
        let etag = format!("\"{}\"", crate::hex_sha256(&bytes));
        self.route(
            path,
            Reply::File {
                bytes: Arc::new(bytes),
                etag,
                commit: None,
            },
        );
    }

    /// A hub model repository `repo` at `commit`, reachable by each of
    /// `revisions` and by the commit itself, holding `files`.
    pub fn hub_repo(
        &self,
        repo: &str,
        commit: &str,
        revisions: &[&str],
        files: &[(&str, Vec<u8>)],
    ) {
        let siblings: Vec<String> = files
            .iter()
            .map(|(n, _)| format!("{{\"rfilename\":\"{n}\"}}"))
            .collect();
        let info = format!(
            "{{\"id\":\"{repo}\",\"modelId\":\"{repo}\",\"sha\":\"{commit}\",\"siblings\":[{}]}}",
            siblings.join(",")
        );
        let mut revs: Vec<&str> = revisions.to_vec();
        revs.push(commit);
        for rev in revs {
            self.route(
                &format!("/api/models/{repo}/revision/{rev}"),
                Reply::Json(info.clone()),
            );
            for (name, bytes) in files {
                self.route(
                    &format!("/{repo}/resolve/{rev}/{name}"),
                    Reply::File {
                        bytes: Arc::new(bytes.clone()),
                        etag: format!("\"{}\"", crate::hex_sha256(bytes)),
                        commit: Some(commit.to_string()),
                    },
                );
            }
        }
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    pub fn clear_seen(&self) {
        self.seen.lock().expect("seen").clear();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn range_of(range: Option<&str>, len: usize) -> Result<Option<(usize, usize)>, ()> {
    let Some(r) = range else { return Ok(None) };
    let spec = r.trim().strip_prefix("bytes=").ok_or(())?;
    let (a, b) = spec.split_once('-').ok_or(())?;
    let start: usize = a.trim().parse().map_err(|_| ())?;
    let end: usize = if b.trim().is_empty() {
        len.saturating_sub(1)
    } else {
        b.trim()
            .parse::<usize>()
            .map_err(|_| ())?
            .min(len.saturating_sub(1))
    };
    if start >= len || end < start {
        return Err(());
    }
    Ok(Some((start, end)))
}

fn serve(
    conn: TcpStream,
    routes: &Mutex<BTreeMap<String, Reply>>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        if let Some(n) = headers
            .get("content-length")
            .and_then(|n| n.parse::<u64>().ok())
        {
            std::io::copy(&mut (&mut reader).take(n), &mut std::io::sink())?;
        }
        let path = target.split('?').next().unwrap_or_default().to_string();
        let range = headers.get("range").cloned();
        seen.lock().expect("seen").push(Seen {
            method: method.clone(),
            path: path.clone(),
            range: range.clone(),
            authorization: headers.get("authorization").cloned(),
        });
        let reply = routes.lock().expect("routes").get(&path).cloned();
        let head_only = method == "HEAD";
        let keep = answer(&mut out, reply, range.as_deref(), head_only)?;
        if !keep {
            return Ok(());
        }
    }
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Status",
    }
}

/// Writes one answer; false when the connection must close.
fn answer(
    out: &mut TcpStream,
    reply: Option<Reply>,
    range: Option<&str>,
    head_only: bool,
) -> std::io::Result<bool> {
    let mut send = |code: u16,
                    extra: &[(String, String)],
                    body: &[u8],
                    declared: usize|
     -> std::io::Result<()> {
        let mut h = format!(
            "HTTP/1.1 {code} {}\r\nContent-Length: {declared}\r\n",
            status_text(code)
        );
        for (k, v) in extra {
            h.push_str(&format!("{k}: {v}\r\n"));
        }
        h.push_str("\r\n");
        out.write_all(h.as_bytes())?;
        if !head_only {
            out.write_all(body)?;
        }
        out.flush()
    };
    match reply {
        None => {
            send(
                404,
                &[
                    ("X-Error-Code".into(), "EntryNotFound".into()),
                    ("X-Error-Message".into(), "Entry not found".into()),
                ],
                b"",
                0,
            )?;
        }
        Some(Reply::Status(code)) => send(code, &[], b"", 0)?,
        Some(Reply::Json(body)) => send(
            200,
            &[("Content-Type".into(), "application/json".into())],
            body.as_bytes(),
            body.len(),
        )?,
        Some(Reply::Redirect(loc)) => send(302, &[("Location".into(), loc)], b"", 0)?,
        Some(Reply::File {
            bytes,
            etag,
            commit,
        }) => {
            let mut extra = vec![
                ("ETag".to_string(), etag),
                ("Accept-Ranges".into(), "bytes".into()),
            ];
            if let Some(c) = commit {
                extra.push(("X-Repo-Commit".into(), c));
            }
            match range_of(range, bytes.len()) {
                Err(()) => {
                    extra.push(("Content-Range".into(), format!("bytes */{}", bytes.len())));
                    send(416, &extra, b"", 0)?;
                }
                Ok(None) => send(200, &extra, &bytes, bytes.len())?,
                Ok(Some((a, b))) => {
                    extra.push((
                        "Content-Range".into(),
                        format!("bytes {a}-{b}/{}", bytes.len()),
                    ));
                    send(206, &extra, &bytes[a..=b], b - a + 1)?;
                }
            }
        }
        Some(Reply::ShortBody {
            bytes,
            send: n,
            times,
            served,
            commit,
        }) => {
            let etag = format!("\"{}\"", crate::hex_sha256(&bytes));
            let (a, b, code) = match range_of(range, bytes.len()) {
                Ok(Some((a, b))) => (a, b, 206),
                _ => (0, bytes.len() - 1, 200),
            };
            if b - a < n || served.fetch_add(1, Ordering::SeqCst) >= times {
                return answer(
                    out,
                    Some(Reply::File {
                        bytes,
                        etag,
                        commit,
                    }),
                    range,
                    head_only,
                );
            }
            let mut extra = vec![
                ("Accept-Ranges".to_string(), "bytes".to_string()),
                ("ETag".to_string(), etag),
            ];
            if let Some(c) = commit {
                extra.push(("X-Repo-Commit".into(), c));
            }
            if code == 206 {
                extra.push((
                    "Content-Range".into(),
                    format!("bytes {a}-{b}/{}", bytes.len()),
                ));
            }
            let body = &bytes[a..(a + n).min(b + 1)];
            send(code, &extra, body, b - a + 1)?;
            return Ok(false);
        }
    }
    Ok(true)
}

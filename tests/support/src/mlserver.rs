//! A real Open Inference Protocol v2 server: MLServer from PyPI with the
//! custom runtimes of `tests/servers/oip` (SFace on onnxruntime, dlib's
//! ResNet), started on a free port of 127.0.0.1 by `serve.sh`, which builds
//! its pinned venv (`.zooaudit/oip-venv`) the first time. Stopped (SIGTERM)
//! when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running MLServer.
pub struct MlServer {
    child: Child,
    port: u16,
    /// Lines MLServer printed (its log), collected in the background.
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl MlServer {
    /// Starts serving `models` (of `sface`, `dlib`, `dlib112`); waits until
    /// every one is ready (building the venv can take minutes the first
    /// time). Panics, saying why, when it cannot.
    pub fn start(models: &[&str]) -> MlServer {
        Self::start_with(models, &[])
    }

    /// [`MlServer::start`] with more environment for `serve.sh` (e.g.
    /// `ZOOAUDIT_OIP_THREADS`).
    pub fn start_with(models: &[&str], env: &[(&str, &str)]) -> MlServer {
        let script = crate::repo_root().join("tests/servers/oip/serve.sh");
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut child = Command::new("bash")
                .arg(&script)
                .arg(port.to_string())
                .args(models)
                .env(
                    "ZOOAUDIT_OIP_SFACE_MODEL",
                    crate::shared_zoo().join("models/sface_2021dec_int8bq.onnx"),
                )
                .envs(env.iter().copied())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
            let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
            let (tx, rx) = mpsc::channel();
            let out = child.stdout.take().unwrap();
            let err = child.stderr.take().unwrap();
            let (l1, l2) = (log.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if line.starts_with("ZOOAUDIT_OIP_READY") {
                        let _ = tx.send(());
                    }
                    l1.lock().unwrap().push(line);
                }
            });
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    l2.lock().unwrap().push(line);
                }
            });
            let deadline = std::time::Instant::now() + Duration::from_secs(900);
            loop {
                if rx.recv_timeout(Duration::from_millis(200)).is_ok() {
                    return MlServer { child, port, log };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!(
                        "serve.sh exited with {status}: {}",
                        log.lock()
                            .unwrap()
                            .iter()
                            .rev()
                            .take(15)
                            .rev()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "MLServer did not become ready in 15 minutes"
                );
            }
            // rc 3: the port was taken meanwhile; try another.
        }
        panic!("cannot start MLServer ({}): {last}", script.display());
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The manifest source of `model`: `oip+http://127.0.0.1:PORT/v2/models/MODEL`.
    pub fn source(&self, model: &str) -> String {
        format!("oip+http://127.0.0.1:{}/v2/models/{model}", self.port)
    }

    /// What the server logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

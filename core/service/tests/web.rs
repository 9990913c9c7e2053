//! The service over HTTP, on both registries: intake refusals (nothing
//! queued), submissions, Hugging Face webhooks from a loopback hub, the
//! read side, the badge, /metrics, and the dashboard in headless Chromium.

use std::sync::Arc;
use std::time::Duration;

use reqwest::blocking::Client;
use serde_json::{Value, json};
use tokio::sync::watch;
use zooaudit_auditdb::Db;
use zooaudit_testsupport as support;
use zooaudit_testsupport::hub::TestServer;
use zooaudit_testsupport::postgres::Postgres;

use super::{TestZoo, rt, runner, start_worker, wait_finished, worker_opts};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "t0ken-for-tests";
const SECRET: &str = "hook-secret";

struct Http {
    client: Client,
    base: String,
}

impl Http {
    fn post(
        &self,
        path: &str,
        ctype: &str,
        body: impl Into<Vec<u8>>,
        auth: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", ctype)
            .body(body.into());
        for (k, v) in auth {
            r = r.header(*k, *v);
        }
        let resp = r.send().unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn submit(&self, body: Value) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        self.post(
            "/v1/audits",
            "application/json",
            body.to_string(),
            &[("authorization", &auth)],
        )
    }

    fn hook(&self, body: &str, secret: Option<&str>) -> (u16, Value) {
        match secret {
            Some(s) => self.post(
                "/v1/hooks/huggingface",
                "application/json",
                body,
                &[("x-webhook-secret", s)],
            ),
            None => self.post("/v1/hooks/huggingface", "application/json", body, &[]),
        }
    }

    fn get(&self, path: &str) -> (u16, String, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, ctype, resp.text().unwrap())
    }
}

fn payload(repo: &str, scope: &str, sha: &str) -> String {
    json!({
        "event": {"action": "update", "scope": scope},
        "repo": {"type": "model", "name": repo, "id": "x", "private": false, "headSha": sha},
        "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "0".repeat(40), "newSha": sha}],
        "webhook": {"id": "w", "version": 3}
    })
    .to_string()
}

/// Zoo entries beside sface-00 and fp-00: `acme-sface` watching the
/// loopback hub's `acme/faces` (`*.onnx`: its `sface.onnx`, not its
/// README), and `broken-00`, whose
/// file is not a model (its audit fails).
const EXTRA: &str = "\n[[model]]\nmanifest = \"acme-sface.toml\"\nwatch = \"hf://acme/faces\"\nfile = \"*.onnx\"\n\n[[model]]\nmanifest = \"broken-00.toml\"\n";

fn extra_manifests(zoo: &TestZoo) {
    zoo.manifest("sface.toml", "acme-sface");
    let broken = zoo.path().join("broken.onnx");
    std::fs::write(&broken, b"not an onnx model").unwrap();
    let b = zoo.path().join(zoo.manifest("sface.toml", "broken-00"));
    let text: String = std::fs::read_to_string(&b)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .map(|l| {
            if l.starts_with("source") {
                format!("source = {:?}\n", broken.display().to_string())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&b, text).unwrap();
}

#[test]
fn the_service_over_http_intake_hooks_read_side_and_dashboard() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    for url in [
        dir.path().join("web.db").display().to_string(),
        pg.database("web"),
    ] {
        eprintln!("--- web on {url}");
        web_suite(&url);
    }
}

fn web_suite(url: &str) {
    let hub = TestServer::start();
    let model =
        std::fs::read(support::shared_zoo().join("models/sface_2021dec_int8bq.onnx")).unwrap();
    let model_sha = support::hex_sha256(&model);
    hub.hub_repo(
        "acme/faces",
        COMMIT,
        &["main"],
        &[("sface.onnx", model), ("README.md", b"# faces".to_vec())],
    );
    let zoo = TestZoo::new(1, EXTRA);
    extra_manifests(&zoo);
    let mut intake = zoo.intake();
    intake.max_attempts = 1;
    let digest = intake.audit_digest.clone();
    let tmp = tempfile::tempdir().unwrap();
    let mut fetch = zooaudit_registry::FetchOptions::from_env();
    fetch.hf_endpoint = Some(hub.url());
    fetch.hf_home = Some(tmp.path().join("hf"));
    fetch.cache_root = Some(tmp.path().join("cache"));
    let mut runner = runner(&zoo, fetch);
    let key = zooaudit_attest::SecretKey::generate().unwrap();
    runner.sign_key = Some(key);
    let rt = rt();
    let db = rt.block_on(async {
        let db = Db::connect(url, 4).await.unwrap();
        db.migrate().await.unwrap();
        db
    });
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let app = zooaudit_service::server::router(zooaudit_service::server::ServerConfig {
        db: db.clone(),
        intake,
        token: Some(TOKEN.into()),
        hook_secret: Some(SECRET.into()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut stop_server = stop_rx.clone();
    rt.spawn(zooaudit_service::server::serve(
        app,
        "127.0.0.1:0".parse().unwrap(),
        move |a| addr_tx.send(a).unwrap(),
        async move {
            let _ = stop_server.wait_for(|s| *s).await;
        },
    ));
    let addr = addr_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let http = Http {
        client: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap(),
        base: format!("http://{addr}"),
    };
    refusals(&http);
    let counts = rt.block_on(db.counts()).unwrap();
    assert_eq!(
        (counts.queued, counts.done, counts.failed),
        (0, 0, 0),
        "nothing queued by a refusal"
    );

    let (s, v) = http.submit(json!({"model": "sface-00"}));
    assert_eq!(s, 202, "{v}");
    let sface_id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        v["references"][0]["name"], "fp-00",
        "chosen by independence: {v}"
    );
    let (s, v) = http.submit(json!({"model": "sface-00"}));
    assert_eq!(
        (s, v["id"].as_str(), v["existing"].as_bool()),
        (200, Some(sface_id.as_str()), Some(true))
    );
    let (s, v) = http.submit(json!({"model": "broken-00"}));
    assert_eq!(s, 202, "{v}");
    let broken_id = v["id"].as_str().unwrap().to_string();

    let watched_id = hooks(&http);
    let counts = rt.block_on(db.counts()).unwrap();
    assert_eq!(counts.queued, 3, "{counts:?}");

    rt.block_on(async {
        let (tx, stop) = watch::channel(false);
        let mut opts = worker_opts("web-worker", &zoo.intake());
        opts.audit_digest = digest;
        let w = start_worker(url, Arc::new(runner), opts, stop).await;
        wait_finished(&db, 3, Duration::from_secs(600)).await;
        tx.send(true).unwrap();
        w.await.unwrap();
    });
    read_side(&http, &sface_id, &broken_id, &watched_id, &model_sha);
    dashboard(&http, tmp.path());
    stop_tx.send(true).unwrap();
}

fn refusals(http: &Http) {
    let (s, v) = http.post(
        "/v1/audits",
        "application/json",
        json!({"model": "sface-00"}).to_string(),
        &[],
    );
    assert_eq!(s, 401, "{v}");
    let (s, _) = http.post(
        "/v1/audits",
        "application/json",
        json!({"model": "sface-00"}).to_string(),
        &[("authorization", "Bearer wrong")],
    );
    assert_eq!(s, 401);
    let (s, v) = http.submit(json!({"model": "nope"}));
    assert_eq!(s, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no model named 'nope' (the zoo has: sface-00, fp-00"),
        "{v}"
    );
    let auth = format!("Bearer {TOKEN}");
    let a = [("authorization", auth.as_str())];
    let (s, v) = http.post("/v1/audits", "application/toml", "this is [not toml", &a);
    assert_eq!(s, 422);
    assert!(v["error"].as_str().unwrap().starts_with("manifest"), "{v}");
    let sface = std::fs::read_to_string(support::example_manifest("sface.toml")).unwrap();
    let unpinned: String = sface
        .lines()
        .filter(|l| !l.starts_with("sha256"))
        .map(|l| {
            if l.starts_with("source") {
                "source = \"hf://acme/faces/sface.onnx\"\n".to_string()
            } else if l.starts_with("name = \"sface") {
                "name = \"upload\"\n".to_string()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let (s, v) = http.post("/v1/audits", "application/toml", unpinned.clone(), &a);
    assert_eq!(s, 422);
    assert!(
        v["error"].as_str().unwrap().contains("must be pinned"),
        "{v}"
    );
    let local = unpinned.replace("hf://acme/faces/sface.onnx", "/etc/passwd");
    let (s, v) = http.post("/v1/audits", "application/toml", local, &a);
    assert_eq!(s, 422);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("must name a remote source"),
        "{v}"
    );
    let (s, _) = http.post("/v1/audits", "application/toml", vec![b'#'; 300 * 1024], &a);
    assert_eq!(s, 413, "a body over the limit");
    let (s, _) = http.post("/v1/audits", "image/png", "x", &a);
    assert_eq!(s, 415);
}

/// The webhook cases; the watched audit's id.
fn hooks(http: &Http) -> String {
    let good = payload("acme/faces", "repo.content", COMMIT);
    assert_eq!(http.hook(&good, None).0, 401);
    assert_eq!(http.hook(&good, Some("wrong")).0, 401);
    let (s, v) = http.hook("{not json", Some(SECRET));
    assert_eq!(s, 400);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed webhook payload"),
        "{v}"
    );
    let (s, v) = http.hook(&payload("acme/faces", "repo.config", COMMIT), Some(SECRET));
    assert_eq!(s, 200);
    assert!(
        v["ignored"].as_str().unwrap().contains("only repo.content"),
        "{v}"
    );
    let (s, v) = http.hook(
        &payload("someone/else", "repo.content", COMMIT),
        Some(SECRET),
    );
    assert_eq!(s, 200);
    assert!(
        v["ignored"].as_str().unwrap().contains("not watched"),
        "{v}"
    );
    let (s, v) = http.hook(&good, Some(SECRET));
    assert_eq!(s, 202, "{v}");
    let id = v["queued"][0]["id"].as_str().unwrap().to_string();
    let (s, v) = http.hook(&good, Some(SECRET));
    assert_eq!(s, 200, "a replay");
    assert_eq!(v["queued"].as_array().unwrap().len(), 0);
    assert_eq!(
        v["already_queued"][0]["id"].as_str(),
        Some(id.as_str()),
        "{v}"
    );
    id
}

fn read_side(http: &Http, sface_id: &str, broken_id: &str, watched_id: &str, model_sha: &str) {
    let (s, _, body) = http.get(&format!("/v1/audits/{sface_id}"));
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["state"].as_str(), v["verdict"].as_str()),
        (Some("done"), Some("no-backdoor-indicated"))
    );
    let names: Vec<&str> = v["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "attestation.dsse.json",
            "report.html",
            "report.json",
            "scores.csv",
            "summary.md"
        ]
    );
    let (s, ctype, html) = http.get(&format!("/v1/audits/{sface_id}/report.html"));
    assert_eq!((s, ctype.as_str()), (200, "text/html; charset=utf-8"));
    assert!(html.contains("<h1>no-backdoor-indicated</h1>"), "{html}");
    let (s, _, env) = http.get(&format!("/v1/audits/{sface_id}/attestation.dsse.json"));
    assert_eq!(s, 200);
    let env: Value = serde_json::from_str(&env).unwrap();
    assert_eq!(env["payloadType"], "application/vnd.in-toto+json");
    let (_, _, body) = http.get(&format!("/v1/audits/{broken_id}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "failed");
    let broken_error = v["error"].as_str().unwrap().to_string();
    assert!(
        broken_error.contains("broken.onnx") || broken_error.contains("broken-00"),
        "{broken_error}"
    );
    let (_, _, body) = http.get(&format!("/v1/audits/{watched_id}"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "done", "{v}");
    assert_eq!(v["candidate_revision"], COMMIT);
    assert_eq!(v["candidate_sha256"], model_sha);
    assert_eq!(
        v["candidate_source"],
        format!("hf://acme/faces@{COMMIT}/sface.onnx")
    );
    let (s, _, body) = http.get(&format!("/v1/models/{model_sha}"));
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        2,
        "sface-00 and acme-sface share the file"
    );
    assert_eq!(v["latest"][0]["verdict"], "no-backdoor-indicated");
    assert_eq!(http.get(&format!("/v1/models/{}", "0".repeat(64))).0, 404);
    let (s, ctype, svg) = http.get(&format!("/v1/badge/{model_sha}.svg"));
    assert_eq!((s, ctype.as_str()), (200, "image/svg+xml"));
    let doc = roxmltree::Document::parse(&svg).expect("the badge is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    assert!(svg.contains("no-backdoor-indicated 20"), "{svg}");
    let (_, _, metrics) = http.get("/metrics");
    for line in [
        "zooaudit_audits{state=\"done\"} 2",
        "zooaudit_audits{state=\"failed\"} 1",
        "zooaudit_queue_depth 0",
        "zooaudit_audit_duration_seconds_count 2",
        "zooaudit_webhook_deliveries{outcome=\"unauthorized\"} 2",
        "zooaudit_webhook_deliveries{outcome=\"queued\"} 1",
        "zooaudit_webhook_deliveries{outcome=\"replayed\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

fn dashboard(http: &Http, tmp: &std::path::Path) {
    let (s, ctype, page) = http.get("/");
    assert_eq!((s, ctype.as_str()), (200, "text/html; charset=utf-8"));
    assert!(page.contains("sface-00") && page.contains("broken-00"));
    let Some(dom) = support::browser::dump_dom(&format!("{}/", http.base), &tmp.join("profile"))
    else {
        return;
    };
    assert!(dom.contains("<h1>test zoo — zooaudit</h1>"), "{dom:.400}");
    assert!(dom.contains(">sface-00</a>") && dom.contains(">acme-sface</a>"));
    assert!(dom.contains("class=\"no-backdoor-indicated\""));
    assert!(dom.contains("<h2>Failed audits</h2>"));
    assert!(dom.contains(">broken-00</a>"));
    assert!(
        dom.contains("class=\"error\">") && dom.contains("broken"),
        "the failed job's error is shown"
    );
    assert!(dom.contains("web-worker"), "the worker is listed");
}

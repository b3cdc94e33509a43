//! Helpers for the sim tests: one `ecs-sim` process per test (killed on drop), an aws-sdk-ecs
//! client pointed at it, images pushed into the stack's registry, SSM parameters and secrets
//! seeded in moto, and bounded polling.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::config::{Credentials, Region};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::support::{stack, workspace_bin};

/// Time scale every sim test runs at: a 30 s health-check interval takes 1.5 s.
pub const SCALE: &str = "0.05";

/// A running `ecs-sim`; dropping it closes its stdin (it exits, killing its tasks) and reaps it.
pub struct Sim {
    pub url: String,
    pub child: Option<Child>,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Sim {
    /// Starts ecs-sim against the shared moto and registry.
    pub fn start() -> Sim {
        let st = stack();
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("ecs-sim.log");
        let mut child = Command::new(workspace_bin("ecs-sim"))
            .args(["--listen", "127.0.0.1:0", "--time-scale", SCALE, "--exit-on-stdin-close"])
            .args(["--aws-endpoint", &st.moto_url, "--registry-endpoint", &st.registry_url])
            .env("ECS_SIM_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn ecs-sim");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(15)).expect("ecs-sim printed its address");
        let url = line
            .trim()
            .strip_prefix("ecs-sim listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Sim { url, child: Some(child), log, _dir: dir }
    }

    pub fn client(&self, account: &str) -> Client {
        let conf = aws_sdk_ecs::config::Builder::new()
            .endpoint_url(&self.url)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(account, "secret", None, None, "test"))
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .behavior_version_latest()
            .build();
        Client::from_conf(conf)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// `GET /_sim/<path>` as JSON.
    pub async fn control(&self, path: &str) -> Value {
        reqwest::get(format!("{}/_sim/{path}", self.url)).await.expect("control endpoint").json().await.expect("json")
    }

    /// Production and test listener URLs of a service.
    pub async fn listeners(&self, service: &str) -> (String, Option<String>) {
        let v = self.control("services").await;
        let s = v["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["service"] == service))
            .unwrap_or_else(|| panic!("service {service} in {v}"));
        (
            s["productionUrl"].as_str().expect("production listener").to_string(),
            s["testUrl"].as_str().map(str::to_string),
        )
    }

    /// Pids of every task process the sim has not reaped.
    pub async fn live_pids(&self) -> Vec<u32> {
        let v = self.control("tasks").await;
        v["livePids"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_u64().map(|p| p as u32)).collect())
            .unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` every 50 ms until it returns Some, or panics after `limit` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

async fn upload_blob(http: &reqwest::Client, registry: &str, repo: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let resp = http.post(format!("{registry}/v2/{repo}/blobs/uploads/")).send().await.expect("start upload");
    assert_eq!(resp.status().as_u16(), 202, "start upload: {}", resp.status());
    let loc = resp.headers()["location"].to_str().expect("location").to_string();
    let loc = if loc.starts_with("http") { loc } else { format!("{registry}{loc}") };
    let sep = if loc.contains('?') { '&' } else { '?' };
    let resp = http
        .put(format!("{loc}{sep}digest={digest}"))
        .header("content-type", "application/octet-stream")
        .body(data.to_vec())
        .send()
        .await
        .expect("put blob");
    assert_eq!(resp.status().as_u16(), 201, "put blob: {}", resp.text().await.unwrap_or_default());
    digest
}

/// Pushes a tiny OCI image `repo:tag` into the stack's registry; returns its image reference.
pub async fn push_image(repo: &str, tag: &str) -> String {
    push_image_for(repo, tag, "amd64").await;
    format!("{}/{repo}:{tag}", stack().registry_host)
}

/// Pushes a tiny OCI image built for linux/`architecture` as `repo:tag`; returns the
/// manifest's digest and size (for an index that lists it).
pub async fn push_image_for(repo: &str, tag: &str, architecture: &str) -> (String, usize) {
    let st = stack();
    let http = reqwest::Client::new();
    let config =
        json!({"architecture": architecture, "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}})
            .to_string();
    let layer = format!("layer of {repo}:{tag}").into_bytes();
    let config_digest = upload_blob(&http, &st.registry_url, repo, config.as_bytes()).await;
    let layer_digest = upload_blob(&http, &st.registry_url, repo, &layer).await;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer.len()}],
    })
    .to_string();
    put_manifest(repo, tag, "application/vnd.oci.image.manifest.v1+json", &manifest).await;
    (sha256(manifest.as_bytes()), manifest.len())
}

/// PUTs a manifest or index under `reference` in the stack's registry.
pub async fn put_manifest(repo: &str, reference: &str, media_type: &str, body: &str) {
    let resp = reqwest::Client::new()
        .put(format!("{}/v2/{repo}/manifests/{reference}", stack().registry_url))
        .header("content-type", media_type)
        .body(body.to_string())
        .send()
        .await
        .expect("put manifest");
    assert_eq!(resp.status().as_u16(), 201, "put manifest: {}", resp.text().await.unwrap_or_default());
}

/// One moto JSON call as `account`: HTTP status and body, whatever they are.
pub async fn moto_call(account: &str, target: &str, body: Value) -> (u16, Value) {
    let st = stack();
    let service = match target.split('.').next().unwrap_or_default() {
        "AmazonSSM" => "ssm",
        "AmazonEC2ContainerRegistry_V20150921" => "ecr",
        "Logs_20140328" => "logs",
        "TrentService" => "kms",
        "AWSEvents" => "events",
        _ => "secretsmanager",
    };
    let resp = reqwest::Client::new()
        .post(format!("{}/", st.moto_url))
        .header("X-Amz-Target", target)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("x-moto-account-id", account)
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"),
        )
        .body(body.to_string())
        .send()
        .await
        .expect("moto call");
    (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
}

/// One moto JSON call as `account` that must succeed.
pub async fn moto(account: &str, target: &str, body: Value) -> Value {
    let (status, v) = moto_call(account, target, body).await;
    assert!((200..300).contains(&status), "{target}: {status} {v}");
    v
}

/// A test-friendly unique name.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

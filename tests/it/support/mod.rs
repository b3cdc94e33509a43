//! Test support shared by every area: the local stack (moto + docker-registry) started once
//! per test binary, a local GitHub OIDC issuer, per-test AWS account isolation, and a
//! `deployer` command preloaded with the stack's environment.

#![allow(dead_code)]

pub mod iam;
pub mod load;
pub mod oidc;
pub mod registry_proxy;
pub mod stack;
pub mod sts_proxy;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

pub use stack::stack;

/// A fresh 12-digit account id, so tests that run in parallel never see each other's
/// resources (no global `moto-api/reset` racing under a running test).
///
/// moto 5.2.5 picks the account of a request from (1) the `x-moto-account-id` header, or
/// (2) the access key, when it is one moto issued; a made-up key means 123456789012. So:
/// raw HTTP calls to moto send `x-moto-account-id: <account>`; SDK clients and `deployer`
/// use [`credentials_for`], keys of a role moto assumed in that account. (ecs-sim takes a
/// 12-digit access key as the account itself.)
pub fn unique_account() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{:012}", 100_000_000_000 + u64::from(std::process::id()) * 1000 + n)
}

/// Credentials moto maps to `account`.
#[derive(Debug, Clone)]
pub struct TestCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
}

pub fn credentials_for(account: &str) -> TestCredentials {
    static CACHE: OnceLock<Mutex<HashMap<String, TestCredentials>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(c) = cache.lock().expect("cache").get(account) {
        return c.clone();
    }
    let form = format!(
        "Action=AssumeRoleWithWebIdentity&Version=2011-06-15&RoleSessionName=test&WebIdentityToken=x&RoleArn=arn%3Aaws%3Aiam%3A%3A{account}%3Arole%2Ftest"
    );
    let url = format!("{}/", stack().moto_url);
    // A thread of its own, so this works from sync tests and from inside async ones alike.
    let body = std::thread::spawn(move || {
        runtime().block_on(async {
            reqwest::Client::new()
                .post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .expect("moto STS")
                .text()
                .await
                .expect("moto STS body")
        })
    })
    .join()
    .expect("moto STS thread");
    let field = |name: &str| {
        let open = format!("<{name}>");
        let start = body.find(&open).unwrap_or_else(|| panic!("no {name} in {body}")) + open.len();
        let end = body[start..].find('<').expect("closing tag") + start;
        body[start..end].to_string()
    };
    let creds = TestCredentials {
        access_key_id: field("AccessKeyId"),
        secret_access_key: field("SecretAccessKey"),
        session_token: field("SessionToken"),
    };
    cache.lock().expect("cache").insert(account.to_string(), creds.clone());
    creds
}

/// aws-sdk-ecs at `endpoint` (ecs-sim) with the credentials `deployer` uses for `account`,
/// so both see the same account's state.
pub fn ecs_client(endpoint: &str, account: &str) -> aws_sdk_ecs::Client {
    let creds = credentials_for(account);
    let conf = aws_sdk_ecs::config::Builder::new()
        .endpoint_url(endpoint)
        .region(aws_sdk_ecs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_ecs::config::Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            None,
            "test",
        ))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .behavior_version_latest()
        .build();
    aws_sdk_ecs::Client::from_conf(conf)
}

/// The repository root.
pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A binary built from another crate of the workspace (`ecs-sim`, `sim-app`). The README's
/// test command builds them with `cargo build --workspace --bins` before `cargo test`.
pub fn workspace_bin(name: &str) -> PathBuf {
    // target/debug/deps/it-HASH -> target/debug/NAME
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: run `cargo build --workspace --bins` before the tests", bin.display());
    bin
}

/// A runtime for the servers tests run in the background (the OIDC issuer, fake endpoints).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("test runtime")
    })
}

/// Serve an axum router on a free loopback port in the background; returns `http://127.0.0.1:PORT`.
/// Works from sync tests and from inside async ones alike.
pub fn serve(router: axum::Router) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    runtime().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// `deployer` with a clean environment pointed at the local stack as `account`: no GitHub or
/// AWS variables leak in from the machine running the tests.
pub fn deployer(account: &str) -> assert_cmd::Command {
    assert_cmd::Command::from_std(deployer_process(account))
}

/// The same as a plain `std::process::Command`, for runs a test signals or kills.
pub fn deployer_process(account: &str) -> std::process::Command {
    let stack = stack();
    let creds = credentials_for(account);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("deployer"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().to_string();
        if key.starts_with("GITHUB_")
            || key.starts_with("ACTIONS_")
            || key.starts_with("AWS_")
            || key.starts_with("DEPLOYER_")
            || key == "RUNNER_TEMP"
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("AWS_ENDPOINT_URL", &stack.moto_url)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", &creds.access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &creds.secret_access_key)
        .env("AWS_SESSION_TOKEN", &creds.session_token)
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("DEPLOYER_RETRY_BASE_MS", "20")
        .env("NO_COLOR", "1");
    cmd
}

/// Start `template` (its program, arguments and environment) as a child whose output is
/// captured, for a run the test signals.
pub fn spawn(template: &assert_cmd::Command) -> std::process::Child {
    let mut cmd = std::process::Command::new(template.get_program());
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(template.get_args()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd.spawn().expect("spawn deployer")
}

/// SIGTERM to a child, as a runner cancelling the job sends it.
pub fn sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

/// Everything a run printed, for "this never appears" assertions.
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

pub fn capture(cmd: &mut assert_cmd::Command) -> Captured {
    let out = cmd.output().expect("run deployer");
    Captured {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    }
}

impl std::fmt::Display for Captured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

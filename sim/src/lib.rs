//! ecs-sim: a local Amazon ECS control plane whose tasks are real local processes of the
//! `sim-app` sample app behind real loopback listeners. See README.md for what it models.
//!
//! The pieces: `api` speaks the ECS JSON 1.1 protocol, `model` holds the state, `engine` is the
//! scheduler loop (rolling updates in `rolling`, traffic-shifting strategies in `bluegreen`),
//! `tasks` supervises task processes, `resolve` resolves secrets and checks images, `logs` ships
//! awslogs output to CloudWatch Logs, `proxy` serves the listeners and `control` the `/_sim/*`
//! endpoints. Services under the CODE_DEPLOY or EXTERNAL controller run task sets (`tasksets`);
//! `codedeploy` is the CodeDeploy API and its blue/green deployments of CODE_DEPLOY services.

pub mod api;
pub mod bluegreen;
pub mod codedeploy;
pub mod control;
pub mod engine;
pub mod logs;
pub mod model;
pub mod proxy;
pub mod resolve;
pub mod rolling;
pub mod tasks;
pub mod tasksets;
pub mod throttle;
pub mod util;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use model::State;
use util::Scale;

/// Settings from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub time_scale: f64,
    pub aws_endpoint: Option<String>,
    pub registry_endpoint: Option<String>,
    pub app_bin: PathBuf,
    /// Enforce ECS's API throttling (`throttle`) from the start.
    pub throttle: bool,
}

/// The simulator: configuration, state, and the handles of what it started.
pub struct Sim {
    pub cfg: Config,
    pub scale: Scale,
    pub state: Mutex<State>,
    pub http: reqwest::Client,
    /// Pids of task processes not yet reaped.
    pub pids: Mutex<HashSet<u32>>,
    /// Listener server tasks per service ARN, aborted on delete/reset.
    pub listeners: Mutex<HashMap<String, Vec<tokio::task::AbortHandle>>>,
    /// Accounts of access keys moto issued, learned from moto's STS GetCallerIdentity.
    pub key_accounts: Mutex<HashMap<String, String>>,
    /// Access keys with an expiry (told through `/_sim/credentials`): after it, requests signed
    /// with them fail with ExpiredTokenException, as ECS answers an expired STS session.
    pub key_expiry: Mutex<HashMap<String, KeyUse>>,
    /// ECS's per-account API throttling and the log of every call.
    pub throttle: Mutex<throttle::Throttle>,
}

/// An access key the sim enforces an expiry on, and what it was used for.
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyUse {
    /// Epoch seconds.
    pub expires_at: f64,
    /// Accepted requests per operation.
    pub operations: std::collections::BTreeMap<String, u64>,
    /// Requests refused because the key had expired.
    pub rejected: u64,
}

impl Sim {
    pub fn new(cfg: Config) -> Sim {
        let http = reqwest::Client::builder()
            .no_proxy()
            // Keep-alive to task processes: a fresh connection per proxied request would leave
            // tens of thousands of sockets in TIME_WAIT under a load test.
            .pool_idle_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(32)
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        Sim {
            throttle: Mutex::new(throttle::Throttle::new(cfg.throttle)),
            scale: Scale(cfg.time_scale),
            cfg,
            state: Mutex::new(State::default()),
            http,
            pids: Mutex::new(HashSet::new()),
            listeners: Mutex::new(HashMap::new()),
            key_accounts: Mutex::new(HashMap::new()),
            key_expiry: Mutex::new(HashMap::new()),
        }
    }

    /// The account of a request: a 12-digit access key id is the account itself; a key moto
    /// issued (e.g. from AssumeRoleWithWebIdentity) is looked up once with moto's STS
    /// GetCallerIdentity; anything else is the default account.
    pub async fn request_ctx(&self, authorization: Option<&str>) -> util::Ctx {
        let mut ctx = util::Ctx::from_authorization(authorization);
        let Some(akid) = util::Ctx::access_key(authorization) else { return ctx };
        if akid == ctx.account {
            return ctx;
        }
        let Some(endpoint) = self.cfg.aws_endpoint.as_deref() else { return ctx };
        if let Some(a) = self.key_accounts.lock().unwrap_or_else(|e| e.into_inner()).get(&akid) {
            ctx.account = a.clone();
            return ctx;
        }
        let resp = self
            .http
            .post(endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header(
                "authorization",
                format!(
                    "AWS4-HMAC-SHA256 Credential={akid}/20260101/{}/sts/aws4_request, SignedHeaders=host, Signature=0",
                    ctx.region
                ),
            )
            .body("Action=GetCallerIdentity&Version=2011-06-15")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let text = match resp {
            Ok(r) if r.status().is_success() => r.text().await.unwrap_or_default(),
            _ => return ctx,
        };
        let account = text
            .split("<Account>")
            .nth(1)
            .and_then(|s| s.split('<').next())
            .filter(|a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()));
        if let Some(a) = account {
            self.key_accounts.lock().unwrap_or_else(|e| e.into_inner()).insert(akid, a.to_string());
            ctx.account = a.to_string();
        }
        ctx
    }

    pub fn throttle(&self) -> std::sync::MutexGuard<'_, throttle::Throttle> {
        self.throttle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a request signed with `authorization` may run `op`: false (and counted) when its
    /// access key has a known expiry that has passed; accepted requests are counted per key.
    pub fn credentials_valid(&self, authorization: Option<&str>, op: &str) -> bool {
        let Some(akid) = util::Ctx::access_key(authorization) else { return true };
        let mut keys = self.key_expiry.lock().unwrap_or_else(|e| e.into_inner());
        let Some(k) = keys.get_mut(&akid) else { return true };
        if util::now_epoch() >= k.expires_at {
            k.rejected += 1;
            return false;
        }
        *k.operations.entry(op.to_string()).or_default() += 1;
        true
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills every task process (SIGKILL) and waits, bounded, until all are reaped.
    pub async fn kill_all_tasks(&self) {
        let pids: Vec<u32> = self.pids.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect();
        for pid in &pids {
            tasks::signal(*pid, libc::SIGKILL);
        }
        for _ in 0..200 {
            if self.pids.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Clears all state: kills tasks, closes listeners.
    pub async fn reset(&self) {
        {
            let mut st = self.lock();
            for t in st.tasks.values_mut() {
                t.desired_status = "STOPPED".into();
            }
        }
        self.kill_all_tasks().await;
        for (_, hs) in self.listeners.lock().unwrap_or_else(|e| e.into_inner()).drain() {
            for h in hs {
                h.abort();
            }
        }
        *self.lock() = State::default();
    }
}

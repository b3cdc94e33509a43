//! Fleet deploys: one `deployer deploy` to many one-task services of one cluster on ecs-sim,
//! with ECS's API throttling enforced by the sim (per-account token buckets, the same
//! `ThrottlingException`), so the tests meet the limits a real account has. Calls are counted
//! at the sim (`GET /_sim/calls`), never taken from deployer's own report.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_ecs::Client;
use serde_json::{Value, json};

use crate::sim::common::{load_balancer, register, rolling_config};
use crate::sim::harness::{Sim, push_image, unique, wait_for};
use crate::support::{Captured, deployer_process, ecs_client, unique_account};

/// N one-task services `svc-00` … of cluster `fleet`, all running `v1`, steady.
struct Fleet {
    account: String,
    sim: Sim,
    ecs: Client,
    family: String,
    image: String,
    v1: String,
    services: Vec<String>,
}

const CLUSTER: &str = "fleet";

async fn fleet(n: usize, scale: &str) -> Fleet {
    let account = unique_account();
    let sim = {
        let scale = scale.to_string();
        tokio::task::spawn_blocking(move || Sim::start_with(&scale, &[])).await.expect("sim")
    };
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("fleet");
    let image = push_image(&family, "v1").await;
    ecs.create_cluster().cluster_name(CLUSTER).send().await.expect("create cluster");
    // No container health check: the target group's check is enough, and half the sim's work.
    let v1 = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], false).await;
    let services: Vec<String> = (0..n).map(|i| format!("svc-{i:02}")).collect();
    let creates = services.iter().map(|name| {
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(name)
            .task_definition(&v1)
            .desired_count(1)
            .load_balancers(load_balancer(&account, name))
            .deployment_configuration(rolling_config())
            .send()
    });
    for r in futures_util::future::join_all(creates).await {
        r.expect("create service");
    }
    let f = Fleet { account, sim, ecs, family, image, v1, services };
    f.wait_all_on(&f.v1.clone(), Duration::from_secs(90)).await;
    f
}

impl Fleet {
    /// Waits (throttling off, or within it: 10 services per call, every 300 ms) until every
    /// service runs `td` alone, rolled out, with its one task.
    async fn wait_all_on(&self, td: &str, limit: Duration) {
        wait_for(&format!("every service on {td}"), limit, || async {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for chunk in self.services.chunks(10) {
                let out = self.ecs.describe_services().cluster(CLUSTER).set_services(Some(chunk.to_vec())).send().await;
                let Ok(out) = out else { return None };
                let steady = out.services().iter().all(|s| {
                    let d = s.deployments();
                    d.len() == 1
                        && d[0].task_definition() == Some(td)
                        && d[0].rollout_state().map(|r| r.as_str()) == Some("COMPLETED")
                        && d[0].running_count() == 1
                });
                if !steady || out.services().len() != chunk.len() {
                    return None;
                }
            }
            Some(())
        })
        .await
    }

    async fn revision(&self, version: &str, env: &[(&str, &str)]) -> String {
        let mut all = vec![("SIM_VERSION", version)];
        all.extend_from_slice(env);
        register(&self.ecs, &self.family, &self.image, &all, &[], false).await
    }

    /// Counting starts from here; with `throttle`, ECS's buckets are enforced (full) from here.
    async fn start_counting(&self, throttle: bool) {
        let http = reqwest::Client::new();
        let r = http.delete(format!("{}/_sim/calls", self.sim.url)).send().await.expect("clear calls");
        assert!(r.status().is_success());
        let r = http
            .post(format!("{}/_sim/throttle", self.sim.url))
            .json(&json!({"enabled": throttle}))
            .send()
            .await
            .expect("throttle");
        assert!(r.status().is_success());
    }

    /// `GET /_sim/calls` (with the log of every call when `log`).
    async fn calls(&self, log: bool) -> Value {
        self.sim.control(if log { "calls?log=1" } else { "calls" }).await
    }

    /// `deployer --output json deploy --cluster fleet --service ALL --task-definition TD`,
    /// with `bin` instead of this build's deployer when given (the bench's peer).
    fn deploy(&self, bin: Option<&str>, td: &str, extra: &[&str]) -> std::process::Command {
        let template = deployer_process(&self.account);
        let mut cmd = std::process::Command::new(
            bin.map(std::path::PathBuf::from).unwrap_or_else(|| std::path::PathBuf::from(template.get_program())),
        );
        for (k, v) in template.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env("AWS_ENDPOINT_URL_ECS", &self.sim.url)
            .args(["--output", "json", "deploy", "--cluster", CLUSTER, "--service", &self.services.join(",")])
            .args(["--task-definition", td])
            .args(extra);
        cmd
    }

    async fn serving(&self, service: &str) -> Vec<String> {
        let (url, _) = self.sim.listeners(service).await;
        crate::sim::common::versions_at(&url, 2).await
    }
}

async fn run(mut cmd: std::process::Command) -> (Captured, Value, Duration) {
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("run deployer");
    let took = started.elapsed();
    let run = Captured {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code(),
    };
    let json: Value = serde_json::from_str(run.stdout.trim()).unwrap_or(Value::Null);
    (run, json, took)
}

async fn inject(f: &Fleet, fault: Value) {
    let resp = reqwest::Client::new().post(format!("{}/_sim/faults", f.sim.url)).json(&fault).send().await.unwrap();
    assert!(resp.status().is_success(), "{fault}");
}

fn by_service(json: &Value) -> BTreeMap<&str, &Value> {
    json["services"]
        .as_array()
        .map(|a| a.iter().map(|s| (s["service"].as_str().unwrap_or("?"), s)).collect())
        .unwrap_or_default()
}

fn op(calls: &Value, op: &str) -> u64 {
    calls["calls"][op].as_u64().unwrap_or(0)
}

/// The test deploys: fast polling (150 ms, as every sim test), a generous timeout.
fn fast(f: &Fleet, td: &str, extra: &[&str]) -> std::process::Command {
    let timeout: &[&str] = if extra.contains(&"--timeout") { &[] } else { &["--timeout", "90"] };
    let mut cmd = f.deploy(None, td, timeout);
    cmd.args(extra).env("DEPLOYER_POLL_MS", "150");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_services_go_live_within_ecs_api_limits_in_shared_rounds() {
    let f = fleet(40, crate::sim::harness::SCALE).await;
    let v2 = f.revision("v2", &[]).await;
    f.start_counting(true).await;
    let (out, json, _) = run(fast(&f, &v2, &[])).await;
    assert_eq!(out.code, Some(0), "{out}");
    let services = by_service(&json);
    assert_eq!(services.len(), 40, "every service accounted for: {json}");
    assert!(services.values().all(|s| s["outcome"] == "live" && s["result"] == "succeeded"), "{json}");
    for name in &f.services {
        assert_eq!(f.serving(name).await, ["v2", "v2"], "{name}");
    }

    let calls = f.calls(false).await;
    // Deployer's limiter kept every call inside ECS's buckets: the sim refused none.
    assert_eq!(calls["throttled"], json!({}), "ThrottlingException at the sim: {calls}");
    for (bucket, burst, rate, _) in BUCKETS {
        let peak = calls["peakPerSecond"][bucket].as_u64().unwrap_or(0) as f64;
        assert!(peak <= burst + rate, "{bucket}: {peak} calls in one second, ECS allows {}", burst + rate);
    }
    // Shared rounds: per round at most ceil(40/10) DescribeServices, ceil(40/20)
    // DescribeServiceDeployments, one ListTasks for the cluster, one DescribeTasks (≤ 100
    // tasks). Besides the rounds: the checks and the launcher's look, 4 DescribeServices each.
    let api = &json["api"];
    let rounds = api["rounds"].as_u64().unwrap();
    assert!(rounds >= 2, "{api}");
    let (ds, sd, lt, dt) = (
        op(&calls, "DescribeServices"),
        op(&calls, "DescribeServiceDeployments"),
        op(&calls, "ListTasks"),
        op(&calls, "DescribeTasks"),
    );
    assert!(ds >= 8 + rounds && ds <= 8 + 4 * rounds, "DescribeServices {ds} for {rounds} rounds");
    assert!(sd <= 2 * rounds, "DescribeServiceDeployments {sd} for {rounds} rounds");
    assert_eq!(lt, rounds, "one ListTasks per round for the cluster");
    assert!(dt <= rounds, "DescribeTasks {dt} for {rounds} rounds");
    assert_eq!(op(&calls, "UpdateService"), 40);
    assert_eq!(op(&calls, "ListServiceDeployments"), 0, "UpdateService names the service deployment");
    // What the deploy stage counted is what the sim received (besides the one
    // DescribeTaskDefinition that resolved --task-definition before it).
    let total: u64 = calls["calls"].as_object().unwrap().values().filter_map(Value::as_u64).sum::<u64>()
        - op(&calls, "DescribeTaskDefinition");
    let counted: u64 = api["calls"].as_object().unwrap().values().filter_map(Value::as_u64).sum();
    assert_eq!(counted, total, "{api}\n{calls}");
    assert!(api["round-calls"]["DescribeServices"].as_u64().unwrap() <= 4 * rounds, "{api}");
    // Every log line of the run names its service (or the cluster's rounds).
    for line in out.stderr.lines().filter(|l| l.contains("ECS:") || l.contains("gate") || l.contains("UpdateService")) {
        assert!(f.services.iter().any(|s| line.contains(s.as_str())), "a line without its service: {line}");
    }
}

/// svc-07 cannot move (minimumHealthyPercent = maximumPercent = 100 with one task: ECS may
/// neither start a new task nor stop the old one), so it times out while the others go live.
async fn stuck(f: &Fleet, name: &str) {
    let stuck = aws_sdk_ecs::types::DeploymentConfiguration::builder()
        .minimum_healthy_percent(100)
        .maximum_percent(100)
        .build();
    f.ecs.update_service().cluster(CLUSTER).service(name).deployment_configuration(stuck).send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn all_or_nothing_rolls_twenty_services_back_at_once_when_one_fails() {
    let f = fleet(20, crate::sim::harness::SCALE).await;
    stuck(&f, "svc-07").await;
    let v2 = f.revision("v2", &[]).await;
    f.start_counting(true).await;
    let (out, json, _) = run(fast(&f, &v2, &["--all-or-nothing", "--timeout", "12"])).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["exit-code"], 3);
    let services = by_service(&json);
    assert_eq!(services.len(), 20, "{json}");
    assert!(services["svc-07"]["failure"].as_str().unwrap().contains("timed out"), "{json}");
    for (name, s) in &services {
        assert_eq!(s["outcome"], "rolled-back", "{name}: {s}");
        assert_eq!(s["final-task-definition-arn"], f.v1.as_str(), "{name}");
        if *name != "svc-07" {
            assert_eq!(s["failure"], "--all-or-nothing: another service failed", "{name}");
        }
    }
    for name in &f.services {
        assert_eq!(f.serving(name).await, ["v1", "v1"], "{name}");
    }
    // Concurrent: every rollback began within moments of the failure, and all of them took
    // about as long as one, not twenty in a row.
    let at = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k}: {s}"));
    let started: Vec<u64> = services.values().map(|s| at(s, "rollback-started-at-ms")).collect();
    let finished: Vec<u64> = services.values().map(|s| at(s, "rollback-finished-at-ms")).collect();
    let longest = services.values().map(|s| at(s, "rollback-finished-at-ms") - at(s, "rollback-started-at-ms")).max();
    let summed: u64 =
        services.values().map(|s| at(s, "rollback-finished-at-ms") - at(s, "rollback-started-at-ms")).sum();
    let (first, last_start) = (*started.iter().min().unwrap(), *started.iter().max().unwrap());
    let span = finished.iter().max().unwrap() - first;
    eprintln!(
        "rollbacks: began within {} ms of each other, all done {span} ms after the first began; the longest alone {longest:?} ms, one after another {summed} ms",
        last_start - first
    );
    assert!(last_start - first < 2_000, "rollbacks began over {} ms", last_start - first);
    assert!(span <= longest.unwrap() + 2_000, "all rollbacks took {span} ms; the longest alone {longest:?} ms");
    assert!(span * 5 < summed, "all rollbacks took {span} ms; one after another {summed} ms");
    let calls = f.calls(false).await;
    assert_eq!(calls["throttled"], json!({}), "{calls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_all_or_nothing_the_failed_service_rolls_back_and_the_others_stay_live() {
    let f = fleet(20, crate::sim::harness::SCALE).await;
    stuck(&f, "svc-07").await;
    let v2 = f.revision("v2", &[]).await;
    f.start_counting(true).await;
    let (out, json, _) = run(fast(&f, &v2, &["--timeout", "12"])).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!((json["result"].as_str(), json["exit-code"].as_u64()), (Some("rolled-back"), Some(3)));
    let services = by_service(&json);
    assert_eq!(services.len(), 20, "{json}");
    for (name, s) in &services {
        let (outcome, serving) = if *name == "svc-07" { ("rolled-back", "v1") } else { ("live", "v2") };
        assert_eq!(s["outcome"], outcome, "{name}: {s}");
        assert_eq!(f.serving(name).await, [serving, serving], "{name}");
    }
    assert_eq!(f.calls(false).await["throttled"], json!({}));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_update_is_reported_with_its_reason_and_the_run_does_not_exit_0() {
    let f = fleet(10, crate::sim::harness::SCALE).await;
    let v2 = f.revision("v2", &[]).await;
    f.start_counting(true).await;
    inject(
        &f,
        json!({"operation": "UpdateService", "error": "AccessDeniedException", "count": 1,
        "message": "User is not authorized to perform ecs:UpdateService"}),
    )
    .await;
    let (out, json, _) = run(fast(&f, &v2, &[])).await;
    assert_ne!(out.code, Some(0), "{out}");
    assert_eq!(out.code, Some(4), "half deployed, nothing to roll back to by itself: a human must look");
    let services = by_service(&json);
    assert_eq!(services.len(), 10, "{json}");
    let refused: Vec<(&&str, &&Value)> = services.iter().filter(|(_, s)| s["outcome"] == "failed-to-start").collect();
    assert_eq!(refused.len(), 1, "{json}");
    let (name, s) = refused[0];
    let why = s["failure"].as_str().unwrap();
    assert!(why.contains("UpdateService") && why.contains("AccessDeniedException"), "{why}");
    assert!(why.contains("not authorized"), "{why}");
    assert!(s["state"].as_str().unwrap().starts_with("unchanged"), "{s}");
    assert_eq!(f.serving(name).await, ["v1", "v1"]);
    assert_eq!(services.values().filter(|s| s["outcome"] == "live").count(), 9);
    // The log names it, with its reason.
    assert!(
        out.stderr.lines().any(|l| l.contains(&format!("{name}: not deployed:")) && l.contains("AccessDenied")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_that_outlasts_the_backoff_never_counts_as_a_failed_check() {
    let f = fleet(2, crate::sim::harness::SCALE).await;
    let v2 = f.revision("v2", &[]).await;
    f.start_counting(true).await;
    // Once the deployments started: 40 ThrottlingExceptions in a row on DescribeServices,
    // more than deployer's own retries of one read (6 attempts) times the five failed
    // checks in a row that end a watch.
    let (sim_url, ecs) = (f.sim.url.clone(), f.ecs.clone());
    let injector = tokio::spawn(async move {
        wait_for("the v2 deployments to start", Duration::from_secs(20), || async {
            let d = ecs.describe_services().cluster(CLUSTER).services("svc-00").send().await.ok()?;
            (d.services().first()?.deployments().len() > 1).then_some(())
        })
        .await;
        reqwest::Client::new()
            .post(format!("{sim_url}/_sim/faults"))
            .json(&json!({"operation": "DescribeServices", "error": "ThrottlingException", "count": 40}))
            .send()
            .await
            .unwrap();
    });
    let mut cmd = fast(&f, &v2, &[]);
    // A read's backoff starts at its bucket's refill interval: make that short for the test.
    cmd.env("DEPLOYER_ECS_API_LIMITS", "DescribeServices=100/1000");
    let (out, json, _) = run(cmd).await;
    injector.await.unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stderr.contains("not counted as a failed check"), "{out}");
    assert!(json["api"]["throttled"]["DescribeServices"].as_u64().unwrap_or(0) >= 30, "{json}");
    assert!(by_service(&json).values().all(|s| s["outcome"] == "live"), "{json}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_service_takes_its_own_health_url_and_template_from_deployer_toml() {
    use crate::support::oidc::{Issuer, Job};
    let f = fleet(3, crate::sim::harness::SCALE).await;
    let (prod0, _) = f.sim.listeners("svc-00").await;
    let (prod1, _) = f.sim.listeners("svc-01").await;
    // svc-01's own health URL: its listener's /health, except that v2 reports itself down
    // (a check only this service has): only svc-01 fails its gate, and is healthy after the
    // rollback.
    let bad = crate::support::serve(axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let prod1 = prod1.clone();
            async move {
                let v: Value = match reqwest::get(format!("{prod1}/health")).await {
                    Ok(r) => r.json().await.unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                };
                match v["version"].as_str() {
                    Some("v1") => (axum::http::StatusCode::OK, "{\"status\":\"ok\"}"),
                    _ => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{\"status\":\"down\"}"),
                }
            }
        }),
    ));
    let dir = tempfile::tempdir().unwrap();
    let account = &f.account;
    std::fs::write(
        dir.path().join("deployer.toml"),
        format!(
            r#"region = "us-east-1"
[environments.production]
role-arn = "arn:aws:iam::{account}:role/deploy-prod"
cluster = "{CLUSTER}"
branches = ["release/*"]
task-definition = "taskdef.json"
[environments.production.services.svc-00]
health-url = "{prod0}/health"
[environments.production.services.svc-01]
health-url = ["{bad}/health"]
[environments.production.services.svc-02]
task-definition = "worker.json"
"#
        ),
    )
    .unwrap();
    let template = |version: &str| {
        json!({
            "family": f.family, "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
            "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": "placeholder", "essential": true,
                "portMappings": [{"containerPort": 8080}],
                "environment": [{"name": "SIM_VERSION", "value": version}]}]
        })
        .to_string()
    };
    std::fs::write(dir.path().join("taskdef.json"), template("v2")).unwrap();
    std::fs::write(dir.path().join("worker.json"), template("v2-worker")).unwrap();
    let image = push_image(&f.family, "v2").await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/2.0".into(), ..Job::default() });
    f.start_counting(true).await;
    let mut cmd = crate::support::deployer(&f.account);
    cmd.current_dir(dir.path())
        .envs(issuer.env())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/heads/release/2.0")
        .env("GITHUB_REPOSITORY", "octo-org/shop")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_OUTPUT", dir.path().join("outputs"))
        .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
        .env("AWS_ENDPOINT_URL_ECS", &f.sim.url)
        .env("DEPLOYER_POLL_MS", "150")
        .args(["--output", "json", "release", "--registry-endpoint", &crate::support::stack().registry_url])
        .args(["--image", &image, "--timeout", "60"]);
    let out = tokio::task::spawn_blocking(move || crate::support::capture(&mut cmd)).await.unwrap();
    assert_eq!(out.code, Some(3), "{out}");
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let services = by_service(&json["deploy"]);
    assert_eq!(services["svc-00"]["outcome"], "live", "{json}");
    assert_eq!(services["svc-02"]["outcome"], "live", "{json}");
    assert_eq!(services["svc-01"]["outcome"], "rolled-back", "{json}");
    let why = services["svc-01"]["failure"].as_str().unwrap();
    assert!(why.contains(&format!("{bad}/health failed 3 times in a row")), "{why}");
    // svc-02 runs a revision of its own template; the others share the release's.
    let td = |name: &str| services[name]["task-definition-arn"].as_str().unwrap().to_string();
    assert_eq!(td("svc-00"), td("svc-01"));
    assert_ne!(td("svc-00"), td("svc-02"));
    assert_eq!(json["task-definition-arn"], td("svc-00").as_str());
    assert_eq!(f.serving("svc-00").await, ["v2", "v2"]);
    assert_eq!(f.serving("svc-01").await, ["v1", "v1"]);
    assert_eq!(f.serving("svc-02").await, ["v2-worker", "v2-worker"]);
    // The summary's table has a row per service.
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    for name in ["svc-00", "svc-01", "svc-02"] {
        assert!(summary.contains(&format!("| `{name}` |")), "{summary}");
    }
}

/// ECS's documented buckets: (bucket, burst, refill per second, the operations sharing it).
const BUCKETS: [(&str, f64, f64, &[&str]); 5] = [
    ("DescribeServices", 100.0, 20.0, &["DescribeServices"]),
    ("UpdateService", 50.0, 5.0, &["UpdateService"]),
    ("ServiceDeployments", 50.0, 20.0, &["ListServiceDeployments", "DescribeServiceDeployments"]),
    ("Tasks", 100.0, 20.0, &["ListTasks", "DescribeTasks"]),
    ("DescribeTaskDefinition", 50.0, 20.0, &["DescribeTaskDefinition"]),
];

fn bucket_of(op: &str) -> Option<&'static str> {
    BUCKETS.iter().find(|(_, _, _, ops)| ops.contains(&op)).map(|(b, ..)| *b)
}

/// Replay a call log (`atMs`, `op`) against ECS's buckets: how many calls would be refused.
fn replay_refused(log: &[Value]) -> u64 {
    let mut tokens: BTreeMap<&str, (f64, u64)> = BUCKETS.iter().map(|(b, burst, ..)| (*b, (*burst, 0))).collect();
    let mut refused = 0;
    for c in log {
        let (Some(op), Some(at)) = (c["op"].as_str(), c["atMs"].as_u64()) else { continue };
        let Some(b) = bucket_of(op) else { continue };
        let (_, burst, rate, _) = BUCKETS.iter().find(|(n, ..)| *n == b).expect("bucket");
        let (t, last) = tokens.get_mut(b).expect("bucket");
        *t = (*t + (at - *last) as f64 / 1000.0 * rate).min(*burst);
        *last = at;
        if *t >= 1.0 {
            *t -= 1.0;
        } else {
            refused += 1;
        }
    }
    refused
}

/// The calls of one bucket in a `calls` map.
fn bucket_calls(calls: &Value, bucket: &str) -> u64 {
    let ops = BUCKETS.iter().find(|(b, ..)| *b == bucket).map(|(.., ops)| *ops).unwrap_or(&[]);
    ops.iter().map(|op| calls[*op].as_u64().unwrap_or(0)).sum()
}

/// One measured run of the bench.
struct Figures {
    n: usize,
    exit: Option<i32>,
    live: usize,
    wall: Duration,
    calls: u64,
    first_second: BTreeMap<&'static str, u64>,
    per_bucket: BTreeMap<&'static str, u64>,
    refused_replayed: u64,
    throttled_at_sim: u64,
    /// This build's own account of its rounds (`api` in the JSON), when it has one.
    rounds: Option<(u64, Value)>,
}

async fn measure(bin: Option<&str>, n: usize, throttle: bool) -> Figures {
    let f = fleet(n, "0.1").await;
    let v2 = f.revision("v2", &[]).await;
    f.start_counting(throttle).await;
    // Default polling (2 s growing to 10 s), as a user runs it.
    let mut cmd = f.deploy(bin, &v2, &["--timeout", "180"]);
    cmd.env_remove("DEPLOYER_POLL_MS");
    let (out, json, wall) = run(cmd).await;
    let calls = f.calls(true).await;
    let log = calls["log"].as_array().cloned().unwrap_or_default();
    let live = json["services"].as_array().map(|a| a.iter().filter(|s| s["result"] == "succeeded").count());
    let mut first_second = BTreeMap::new();
    let mut per_bucket = BTreeMap::new();
    for (b, ..) in BUCKETS {
        first_second.insert(b, bucket_calls(&calls["firstSecond"], b));
        per_bucket.insert(b, bucket_calls(&calls["calls"], b));
    }
    let throttled_at_sim =
        calls["throttled"].as_object().map(|m| m.values().filter_map(Value::as_u64).sum()).unwrap_or(0);
    if out.code != Some(0) {
        eprintln!("N={n} exit {:?}: {}", out.code, out.stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    Figures {
        n,
        exit: out.code,
        live: live.unwrap_or(0),
        wall,
        calls: log.len() as u64,
        first_second,
        per_bucket,
        refused_replayed: replay_refused(&log),
        throttled_at_sim,
        rounds: json["api"]["rounds"].as_u64().map(|r| (r, json["api"]["round-calls"].clone())),
    }
}

fn print(label: &str, f: &Figures) {
    let fs: u64 = f.first_second.values().sum();
    println!(
        "{label} N={:<3} exit {:?}, {}/{} live, wall {:.1} s, {} ECS calls ({:.1} per service), first second {} ({}), refused by a replay against ECS's buckets {} ({:.0} %), ThrottlingException at the sim {}",
        f.n,
        f.exit,
        f.live,
        f.n,
        f.wall.as_secs_f64(),
        f.calls,
        f.calls as f64 / f.n as f64,
        fs,
        f.first_second.iter().map(|(b, c)| format!("{b} {c}")).collect::<Vec<_>>().join(", "),
        f.refused_replayed,
        100.0 * f.refused_replayed as f64 / f.calls.max(1) as f64,
        f.throttled_at_sim,
    );
    if let Some((rounds, calls)) = &f.rounds {
        println!("{label} N={:<3} {rounds} rounds, their calls {calls}", f.n);
    }
}

/// The N = 200 projection: per bucket, a line through the N = 10 and N = 40 figures (calls in
/// the first second, calls over the run per second of wall time), against ECS's burst + rate
/// and rate. With `limited` (this build) what is sent is also capped by deployer's limiter
/// (90 % of each figure), so a demand over the budget waits instead of being refused.
fn project(label: &str, a: &Figures, b: &Figures, n: f64, limited: bool) {
    let line = |ya: f64, yb: f64| ya + (yb - ya) / (b.n - a.n) as f64 * (n - a.n as f64);
    for (bucket, burst, rate, _) in BUCKETS {
        let first = line(a.first_second[bucket] as f64, b.first_second[bucket] as f64).max(0.0);
        let per_s = |f: &Figures| f.per_bucket[bucket] as f64 / f.wall.as_secs_f64();
        let sustained = line(per_s(a), per_s(b)).max(0.0);
        if first == 0.0 && sustained == 0.0 {
            continue;
        }
        let (sent_first, sent_rate) =
            if limited { (first.min(0.9 * (burst + rate)), sustained.min(0.9 * rate)) } else { (first, sustained) };
        let over = sent_first > burst + rate || sent_rate > rate;
        let paced = if limited && (sent_first < first || sent_rate < sustained) {
            format!(" — asks {first:.0} / {sustained:.1}/s, the limiter paces the rest")
        } else {
            String::new()
        };
        println!(
            "{label} projected N={n}: {bucket:<22} first second {sent_first:>6.0} (ECS allows {:.0}), over the run {sent_rate:>6.1}/s (ECS refills {rate}/s){}{paced}",
            burst + rate,
            if over { "  OVER: refused by ECS" } else { "" },
        );
    }
    if limited {
        // The rounds' own formula at N: ceil(N/10) DescribeServices, ceil(N/20)
        // DescribeServiceDeployments, one ListTasks page per 100 tasks (old and new, one task
        // each), one DescribeTasks per 100 tasks not yet running healthy.
        let n = n as u64;
        let (ds, sd, lt, dt) = (n.div_ceil(10), n.div_ceil(20), (2 * n).div_ceil(100), n.div_ceil(100));
        println!(
            "{label} per round at N={n}: {ds} DescribeServices + {sd} DescribeServiceDeployments + {lt} ListTasks pages + ≤ {dt} DescribeTasks = {} calls; at the 2 s base interval {:.1} DescribeServices/s (ECS refills 20/s), {:.1} Tasks/s (20/s); {n} UpdateService: 45 at once, the rest at 4.5/s, the last {:.0} s after the first",
            ds + sd + lt + dt,
            ds as f64 / 2.0,
            (lt + dt) as f64 / 2.0,
            (n.saturating_sub(45)) as f64 / 4.5
        );
    }
}

/// bench/fleet.sh: calls per service, the first second, wall time at N = 1, 10, 40, this
/// build against the peer binary in `FLEET_PEER_BIN` (the deployer before the fleet work),
/// throttling off (what each asks of ECS) and on (what a real account lets through).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run bench/fleet.sh"]
async fn bench_fleet_calls_and_wall_time() {
    let peer = std::env::var("FLEET_PEER_BIN").ok().filter(|p| !p.is_empty());
    let sizes: Vec<usize> = std::env::var("FLEET_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 10, 40]);
    let mut bins: Vec<(&str, Option<&str>)> = vec![("deployer", None)];
    if let Some(p) = peer.as_deref() {
        bins.insert(0, ("peer", Some(p)));
    }
    for (label, bin) in bins {
        let mut free = Vec::new();
        for &n in &sizes {
            let f = measure(bin, n, false).await;
            print(&format!("{label} unthrottled"), &f);
            free.push(f);
        }
        if let (Some(a), Some(b)) = (free.iter().find(|f| f.n == 10), free.iter().find(|f| f.n == 40)) {
            project(label, a, b, 200.0, bin.is_none());
        }
        if let Some(&n) = sizes.iter().max() {
            let f = measure(bin, n, true).await;
            print(&format!("{label} throttled  "), &f);
        }
    }
}

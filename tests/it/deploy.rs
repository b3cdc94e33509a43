//! `deployer deploy` / `rollback` against ecs-sim (real sample-app processes behind real
//! loopback listeners), moto and docker-registry: success under load, every failure kind
//! rolled back with its diagnostics, cancellation, throttling, and a rollback that cannot
//! complete. Each test runs its own sim at `--time-scale 0.05` and its own account.

use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{DeploymentCircuitBreaker, DeploymentConfiguration};
use serde_json::{Value, json};

use crate::sim::common::{load_balancer, register, rolling_config, versions_at, wait_steady};
use crate::sim::harness::{Sim, push_image, unique};
use crate::support::load::{self, LoadOptions};
use crate::support::{Captured, capture, deployer, ecs_client, unique_account};

/// A service `web` of 2 tasks running `v1`, behind the sim's production listener.
struct App {
    account: String,
    sim: Sim,
    ecs: Client,
    image: String,
    family: String,
    v1: String,
    prod: String,
}

async fn app(health_check: bool, breaker_rollback: bool) -> App {
    app_with(health_check, breaker_rollback, 0).await
}

/// `grace`: the service's health-check grace period in (sim) seconds.
async fn app_with(health_check: bool, breaker_rollback: bool, grace: i32) -> App {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("shop");
    let image = push_image(&family, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let v1 = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], health_check).await;
    let config = if breaker_rollback {
        rolling_config()
    } else {
        DeploymentConfiguration::builder()
            .minimum_healthy_percent(100)
            .maximum_percent(200)
            .deployment_circuit_breaker(DeploymentCircuitBreaker::builder().enable(true).rollback(false).build())
            .build()
    };
    ecs.create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(&v1)
        .desired_count(2)
        .health_check_grace_period_seconds(grace)
        .load_balancers(load_balancer(&account, "web"))
        .deployment_configuration(config)
        .send()
        .await
        .expect("create service");
    wait_steady(&ecs, "main", "web", Duration::from_secs(30)).await;
    let (prod, _) = sim.listeners("web").await;
    App { account, sim, ecs, image, family, v1, prod }
}

impl App {
    async fn revision(&self, env: &[(&str, &str)], health_check: bool) -> String {
        let mut all = vec![("SIM_VERSION", "v2")];
        all.extend_from_slice(env);
        register(&self.ecs, &self.family, &self.image, &all, &[], health_check).await
    }

    /// `deployer --output json deploy --cluster main --task-definition TD` against the sim.
    fn deploy_to(&self, services: &str, task_definition: &str) -> assert_cmd::Command {
        let mut c = deployer(&self.account);
        c.env("AWS_ENDPOINT_URL_ECS", &self.sim.url).env("DEPLOYER_POLL_MS", "150").args([
            "--output",
            "json",
            "deploy",
            "--cluster",
            "main",
            "--service",
            services,
            "--task-definition",
            task_definition,
        ]);
        c
    }

    /// Deploy to `web`, gated on its production listener's /health.
    fn deploy(&self, task_definition: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut c = self.deploy_to("web", task_definition);
        c.args(["--health-url", &format!("{}/health", self.prod), "--timeout", "60"]).args(extra);
        c
    }

    async fn serving(&self) -> Vec<String> {
        versions_at(&self.prod, 6).await
    }
}

async fn run(mut cmd: assert_cmd::Command) -> (Captured, Value) {
    let run = tokio::task::spawn_blocking(move || capture(&mut cmd)).await.expect("deployer ran");
    let json: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    (run, json)
}

fn report(json: &Value) -> &Value {
    &json["services"][0]
}

fn load_opts() -> LoadOptions {
    LoadOptions { max_duration: Duration::from_secs(60), concurrency: 2, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_release_goes_live_with_zero_failed_requests() {
    let app = app(true, true).await;
    let v2 = app.revision(&[], true).await;
    let traffic = load::start(&app.prod, load_opts());
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = app.deploy(&v2, &["--bake", "1"]);
    cmd.env("GITHUB_OUTPUT", dir.path().join("out")).env("GITHUB_STEP_SUMMARY", dir.path().join("summary"));
    let (out, json) = run(cmd).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    let r = report(&json);
    assert_eq!(r["task-definition-arn"], v2.as_str());
    assert_eq!(r["previous-task-definition-arn"], app.v1.as_str());
    assert!(r["deployment-id"].as_str().is_some_and(|d| !d.is_empty()), "{r}");
    assert_eq!(app.serving().await, vec!["v2"; 6]);
    assert_eq!(traffic.failed, 0, "failed requests during the rollout: {:?}", traffic.failures);
    assert!(traffic.ok > 20 && traffic.saw("v2"), "{traffic:?}");
    let outputs = std::fs::read_to_string(dir.path().join("out")).unwrap();
    assert!(outputs.contains("result<<") && outputs.contains("\nsucceeded\n"), "{outputs}");
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    assert!(summary.contains("✅ succeeded") && summary.contains("healthy: the gate passed"), "{summary}");
    // Adaptive polling: far fewer calls than one per 150 ms across the whole deploy.
    assert!(r["polls"].as_u64().unwrap() < 200, "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_looping_release_is_rolled_back_and_v1_keeps_serving() {
    let app = app(true, true).await;
    // Exits 1 a moment after it starts (1 s at the sim's time scale): v1 still serves while
    // ECS keeps replacing the crashing tasks, so not one request may fail.
    let v2 = app.revision(&[("SIM_CRASH_AFTER", "1")], true).await;
    let traffic = load::start(&app.prod, load_opts());
    let (out, json) = run(app.deploy(&v2, &["--bake", "4"])).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    let r = report(&json);
    // Whichever came first, deployer's own check or ECS's circuit breaker, the report names
    // the crash: the stopped tasks with their exit codes.
    assert!(
        r["failure"].as_str().unwrap().contains("[EssentialContainerExited]: Essential container in task exited"),
        "{r}"
    );
    assert!(
        r["stopped-tasks"]
            .to_string()
            .contains("[EssentialContainerExited]: Essential container in task exited; container app exit code 1"),
        "{r}"
    );
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(app.serving().await, vec!["v1"; 6]);
    assert_eq!(traffic.failed, 0, "failed requests during deploy + rollback: {:?}", traffic.failures);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_container_health_checks_are_rolled_back() {
    let app = app(true, true).await;
    let v2 = app.revision(&[("SIM_HEALTH", "fail")], true).await;
    let (out, json) = run(app.deploy(&v2, &[])).await;
    assert_eq!(out.code, Some(3), "{out}");
    let r = report(&json);
    assert!(r["failure"].as_str().unwrap().contains("Task failed ELB health checks"), "{r}");
    assert!(r["stopped-tasks"].to_string().contains("health checks"), "{r}");
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_probe_only_failure_is_caught_when_ecs_thinks_all_is_well() {
    let app = app(false, true).await;
    // /health answers HTTP 200 (so the target group and ECS are happy) with
    // {"status":"degraded"}, which only deployer's probe reads.
    let v2 = app.revision(&[("SIM_HEALTH", "degraded")], false).await;
    let (out, json) = run(app.deploy(&v2, &[])).await;
    assert_eq!(out.code, Some(3), "{out}");
    let r = report(&json);
    assert!(r["failure"].as_str().unwrap().contains("failed 3 times in a row"), "{r}");
    assert!(r["failing-probe"].as_str().unwrap().contains("degraded"), "{r}");
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_secret_shows_resource_initialization_error_and_rolls_back() {
    let app = app(true, true).await;
    let missing = format!("arn:aws:ssm:us-east-1:{}:parameter/production/shop/missing", app.account);
    let v2 = register(
        &app.ecs,
        &app.family,
        &app.image,
        &[("SIM_VERSION", "v2")],
        &[("DB_PASSWORD", missing.as_str())],
        true,
    )
    .await;
    let (out, json) = run(app.deploy(&v2, &[])).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert!(report(&json)["stopped-tasks"].to_string().contains("ResourceInitializationError"), "{out}");
    assert!(out.stdout.contains("ResourceInitializationError") || out.stderr.contains("ResourceInitializationError"));
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn throttling_is_retried_and_the_deploy_still_completes() {
    let app = app(true, true).await;
    let v2 = app.revision(&[], true).await;
    for op in ["DescribeServices", "ListTasks", "UpdateService"] {
        let resp = reqwest::Client::new()
            .post(format!("{}/_sim/faults", app.sim.url))
            .json(&json!({"operation": op, "error": "ThrottlingException", "count": 3}))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }
    let (out, json) = run(app.deploy(&v2, &[])).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    assert_eq!(app.serving().await, vec!["v2"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_deploy_rolls_back_and_exits_130() {
    let app = app_with(true, true, 600).await;
    // Slow to start: the deploy is still in progress when the signal comes.
    let v2 = app.revision(&[("SIM_START_DELAY", "200")], true).await;
    let child = crate::support::spawn(&app.deploy(&v2, &[]));
    // Wait until the deployment exists, then signal.
    crate::sim::harness::wait_for("the v2 deployment to start", Duration::from_secs(20), || async {
        let s = crate::sim::common::describe(&app.ecs, "main", "web").await;
        (s.deployments().len() > 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    crate::support::sigterm(&child);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(report(&json)["cancelled"], true);
    assert_eq!(report(&json)["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollback_that_cannot_start_exits_4_and_says_what_state_the_service_is_in() {
    // No automatic rollback by ECS, and every way back refused: a human must look.
    let app = app(true, false).await;
    let v2 = app.revision(&[("SIM_CRASH_AFTER", "20")], true).await;
    let cmd = app.deploy(&v2, &["--bake", "4"]);
    let sim_url = app.sim.url.clone();
    let ecs = app.ecs.clone();
    let injector = tokio::spawn(async move {
        crate::sim::harness::wait_for("the v2 deployment to start", Duration::from_secs(20), || async {
            let s = crate::sim::common::describe(&ecs, "main", "web").await;
            (s.deployments().len() > 1).then_some(())
        })
        .await;
        for op in ["UpdateService", "StopServiceDeployment"] {
            reqwest::Client::new()
                .post(format!("{sim_url}/_sim/faults"))
                .json(&json!({"operation": op, "error": "AccessDeniedException", "count": 1000}))
                .send()
                .await
                .unwrap();
        }
    });
    let (out, json) = run(cmd).await;
    injector.await.unwrap();
    assert_eq!(out.code, Some(4), "{out}");
    assert_eq!(json["result"], "failed");
    let r = report(&json);
    assert!(r["rollback"].as_str().unwrap().contains("could not start"), "{r}");
    assert!(r["state"].as_str().is_some_and(|s| !s.is_empty()), "{r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_on_demand_returns_to_the_previous_revision() {
    let app = app(true, true).await;
    let v2 = app.revision(&[], true).await;
    let (out, _) = run(app.deploy(&v2, &[])).await;
    assert_eq!(out.code, Some(0), "{out}");
    let mut c = deployer(&app.account);
    c.env("AWS_ENDPOINT_URL_ECS", &app.sim.url).env("DEPLOYER_POLL_MS", "150").args([
        "--output",
        "json",
        "rollback",
        "--cluster",
        "main",
        "--service",
        "web",
    ]);
    let (out, json) = run(c).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["to"], app.v1.as_str());
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

/// bench/deploy.sh: detection latency and API calls, deployer's adaptive polling against a
/// fixed 15 s poll (what `aws ecs wait services-stable` does), on a sim at time scale 0.05.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "benchmark: run bench/deploy.sh"]
async fn bench_detection_latency_and_api_calls() {
    struct Figures {
        detect_ms: u64,
        crash_calls: u64,
        good_calls: u64,
        good_ms: u64,
    }
    async fn measure(poll: Option<(&str, &str)>) -> Figures {
        let with_poll = |mut c: assert_cmd::Command| {
            match poll {
                Some((initial, max)) => c.env("DEPLOYER_POLL_MS", initial).env("DEPLOYER_POLL_MAX_MS", max),
                None => c.env_remove("DEPLOYER_POLL_MS"),
            };
            c
        };
        let app = app(true, true).await;
        let good = app.revision(&[], true).await;
        let (out, json) = run(with_poll(app.deploy(&good, &[]))).await;
        assert_eq!(out.code, Some(0), "{out}");
        let r = report(&json);
        let good_calls = r["api-calls"].as_u64().unwrap();
        let good_ms = r["timeline"].as_array().unwrap().last().unwrap()["at-ms"].as_u64().unwrap();
        let bad =
            register(&app.ecs, &app.family, &app.image, &[("SIM_VERSION", "v3"), ("SIM_CRASH_AFTER", "1")], &[], true)
                .await;
        let (out, json) = run(with_poll(app.deploy(&bad, &[]))).await;
        assert_eq!(out.code, Some(3), "{out}");
        let r = report(&json);
        let signal = r["failure-signal-at-ms"].as_u64().unwrap_or_else(|| panic!("no failure signal time: {r}"));
        let rollback = r["rollback-started-at-ms"].as_u64().unwrap();
        Figures {
            detect_ms: rollback.saturating_sub(signal),
            crash_calls: r["api-calls"].as_u64().unwrap(),
            good_calls,
            good_ms,
        }
    }
    let ours = measure(None).await;
    let fixed = measure(Some(("15000", "15000"))).await;
    println!(
        "deployer (adaptive 2 s..10 s): failure seen by ECS -> rollback started: {} ms (goal <= 2 poll intervals = 4000 ms); API calls: good deploy {} in {} ms, crashing deploy {}",
        ours.detect_ms, ours.good_calls, ours.good_ms, ours.crash_calls
    );
    println!(
        "fixed 15 s poll (aws ecs wait services-stable's interval): {} ms; API calls: good deploy {} in {} ms, crashing deploy {}",
        fixed.detect_ms, fixed.good_calls, fixed.good_ms, fixed.crash_calls
    );
    println!(
        "ratio (fixed / deployer): detection {:.1}x slower, good deploy {:.1}x longer",
        fixed.detect_ms as f64 / ours.detect_ms.max(1) as f64,
        fixed.good_ms as f64 / ours.good_ms.max(1) as f64
    );
}

async fn add_service(app: &App, name: &str, config: DeploymentConfiguration) {
    app.ecs
        .create_service()
        .cluster("main")
        .service_name(name)
        .task_definition(&app.v1)
        .desired_count(2)
        .load_balancers(load_balancer(&app.account, name))
        .deployment_configuration(config)
        .send()
        .await
        .expect("create service");
    wait_steady(&app.ecs, "main", name, Duration::from_secs(30)).await;
}

fn deploy_many(app: &App, task_definition: &str, extra: &[&str]) -> assert_cmd::Command {
    let mut c = app.deploy_to("web,worker", task_definition);
    c.args(extra);
    c
}

async fn serving_of(app: &App, service: &str) -> Vec<String> {
    let (url, _) = app.sim.listeners(service).await;
    versions_at(&url, 4).await
}

#[tokio::test(flavor = "multi_thread")]
async fn several_services_deploy_in_parallel() {
    let app = app(true, true).await;
    add_service(&app, "worker", rolling_config()).await;
    let v2 = app.revision(&[], true).await;
    let (out, json) = run(deploy_many(&app, &v2, &[])).await;
    assert_eq!(out.code, Some(0), "{out}");
    let services: Vec<&str> =
        json["services"].as_array().unwrap().iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(services, ["web", "worker"]);
    assert_eq!(serving_of(&app, "web").await, vec!["v2"; 4]);
    assert_eq!(serving_of(&app, "worker").await, vec!["v2"; 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn all_or_nothing_rolls_back_every_service_when_one_fails() {
    let app = app(true, true).await;
    // minimumHealthyPercent = maximumPercent = 100: ECS can neither start nor stop a task, so
    // the worker's deployment never progresses and times out.
    let stuck = DeploymentConfiguration::builder().minimum_healthy_percent(100).maximum_percent(100).build();
    add_service(&app, "worker", stuck).await;
    let v2 = app.revision(&[], true).await;
    let (out, json) = run(deploy_many(&app, &v2, &["--all-or-nothing", "--timeout", "6"])).await;
    assert_eq!(out.code, Some(3), "{out}");
    let by_name =
        |name: &str| json["services"].as_array().unwrap().iter().find(|s| s["service"] == name).unwrap().clone();
    assert_eq!(by_name("worker")["result"], "rolled-back");
    assert!(by_name("worker")["failure"].as_str().unwrap().contains("timed out"), "{json}");
    assert_eq!(by_name("web")["result"], "rolled-back");
    assert_eq!(by_name("web")["failure"], "--all-or-nothing: another service failed");
    assert_eq!(serving_of(&app, "web").await, vec!["v1"; 4]);
    assert_eq!(serving_of(&app, "worker").await, vec!["v1"; 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_service_fails_the_run_before_anything_changes() {
    let app = app(true, true).await;
    let v2 = app.revision(&[], true).await;
    let (out, _) = run(deploy_many(&app, &v2, &[])).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("worker: service \"worker\" was not found in cluster \"main\""), "{out}");
    let s = crate::sim::common::describe(&app.ecs, "main", "web").await;
    assert_eq!(s.task_definition(), Some(app.v1.as_str()), "web must not have been touched");
}

/// `POST /_sim/faults`: the next `count` calls of `operation` fail with `error`, or (with
/// `effect`) meet something ECS does first.
async fn inject(app: &App, fault: Value) {
    let resp = reqwest::Client::new().post(format!("{}/_sim/faults", app.sim.url)).json(&fault).send().await.unwrap();
    assert!(resp.status().is_success(), "{fault}");
}

/// ECS API requests the sim received, per operation.
async fn calls(app: &App, operation: &str) -> u64 {
    app.sim.control("calls").await["calls"][operation].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_whose_update_is_refused_fails_the_run_while_the_other_goes_live() {
    let app = app(true, true).await;
    add_service(&app, "worker", rolling_config()).await;
    let v2 = app.revision(&[], true).await;
    // Both pass the checks; then the first UpdateService ECS sees is refused.
    inject(&app, json!({"operation": "UpdateService", "error": "AccessDeniedException", "count": 1})).await;
    let (out, json) = run(deploy_many(&app, &v2, &[])).await;
    // Half deployed and nothing to roll back to by itself: a human must look, never exit 0.
    assert_eq!(out.code, Some(4), "{out}");
    assert_eq!((json["result"].as_str(), json["exit-code"].as_u64()), (Some("failed"), Some(4)), "{json}");
    let services = json["services"].as_array().unwrap();
    assert_eq!(services.len(), 2, "every service has a report: {json}");
    let failed: Vec<&Value> = services.iter().filter(|s| s["result"] == "failed").collect();
    let live: Vec<&Value> = services.iter().filter(|s| s["result"] == "succeeded").collect();
    assert_eq!((failed.len(), live.len()), (1, 1), "{json}");
    let why = failed[0]["failure"].as_str().unwrap();
    assert!(why.contains("UpdateService") && why.contains("AccessDeniedException"), "{why}");
    assert!(failed[0]["state"].as_str().unwrap().starts_with("unchanged"), "{json}");
    let (refused, went_live) = (failed[0]["service"].as_str().unwrap(), live[0]["service"].as_str().unwrap());
    assert_eq!(serving_of(&app, refused).await, vec!["v1"; 4]);
    assert_eq!(serving_of(&app, went_live).await, vec!["v2"; 4]);
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_the_circuit_breaker_sends_no_update_and_reports_ecs_rollback() {
    let app = app(true, true).await;
    // Crashes 1 s (scaled) after it starts, before a task counts toward the rollout: deployer
    // sees the first crash while ECS's breaker (3 failures) has not tripped yet.
    let v2 = app.revision(&[("SIM_CRASH_AFTER", "20")], true).await;
    // The breaker trips just before deployer's StopServiceDeployment is handled, so the stop
    // meets ECS's own rollback: ConflictException, ROLLBACK_IN_PROGRESS.
    inject(&app, json!({"operation": "StopServiceDeployment", "effect": "circuit-breaker", "count": 1})).await;
    let (out, json) = run(app.deploy(&v2, &["--bake", "10"])).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    let r = report(&json);
    assert!(r["failure"].as_str().unwrap().contains("EssentialContainerExited"), "{r}");
    assert!(r["rollback"].as_str().unwrap().starts_with("ECS's own rollback"), "{r}");
    assert_eq!(calls(&app, "StopServiceDeployment").await, 1, "deployer tried to stop, and was refused");
    assert_eq!(calls(&app, "UpdateService").await, 1, "only the deploy's own update: deployer sent no rollback");
    assert!(r["timeline"].to_string().contains("rolled back via ECS's own rollback"), "{r}");
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_previous_deploys_events_stay_out_of_the_next_report() {
    let app = app(true, true).await;
    let v2 = app.revision(&[], true).await;
    let (out, _) = run(app.deploy(&v2, &[])).await;
    assert_eq!(out.code, Some(0), "{out}");
    // The v2 deployment's last words, said moments before the next deploy begins.
    let s = crate::sim::common::describe(&app.ecs, "main", "web").await;
    let v2_deployment = s.deployments()[0].id().unwrap().to_string();
    let earlier = format!("(deployment {v2_deployment}) deployment completed.");
    assert!(crate::sim::common::event_messages(&s).iter().any(|e| e.ends_with(&earlier)), "{s:?}");
    let v3 = app.revision(&[("SIM_CRASH_AFTER", "20")], true).await;
    let (out, json) = run(app.deploy(&v3, &[])).await;
    assert_eq!(out.code, Some(3), "{out}");
    let events: Vec<&str> = report(&json)["events"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
    assert!(!events.iter().any(|e| e.ends_with(&earlier)), "{events:#?}");
    assert!(events.first().is_some_and(|e| e.contains("has started")), "the deploy's first event: {events:#?}");
}

/// `deploy --task-definition FILE` checks the file against ECS's model before registering it,
/// as render/verify/register do: a lower-case `healthcheck` (which ECS would drop silently) is
/// refused with its path and a suggestion, nothing is registered and the service keeps v1.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_definition_file_with_a_typo_is_refused_before_it_is_registered() {
    let app = app(true, true).await;
    let described = app.ecs.describe_task_definition().task_definition(&app.v1).send().await.unwrap();
    let td = described.task_definition().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("typo.json");
    let mut body = json!({
        "family": app.family,
        "containerDefinitions": [{"name": "app", "image": app.image, "essential": true,
            "portMappings": [{"containerPort": 8080}],
            "environment": [{"name": "SIM_VERSION", "value": "v2"}],
            "healthcheck": {"command": ["CMD-SHELL", "true"], "interval": 5}}]
    });
    if let Some(mode) = td.network_mode() {
        body["networkMode"] = json!(mode.as_str());
    }
    std::fs::write(&file, body.to_string()).unwrap();
    let before = app.ecs.list_task_definitions().send().await.unwrap().task_definition_arns().len();
    let (out, json) = run(app.deploy(file.to_str().unwrap(), &[])).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("did you mean \"healthCheck\""), "{out}");
    assert_eq!(json["exit-code"], 1, "{json}");
    let after = app.ecs.list_task_definitions().send().await.unwrap().task_definition_arns().len();
    assert_eq!(after, before, "nothing may be registered");
    assert_eq!(app.serving().await, vec!["v1"; 6]);
}

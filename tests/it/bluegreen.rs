//! `deployer deploy --strategy blue-green|canary|linear` against ecs-sim: ECS's own lifecycle
//! stages, held by deployer's PAUSE hook at POST_TEST_TRAFFIC_SHIFT while it probes the test
//! listener, then watched through the production shift and bake. Production traffic comes
//! from a bounded loopback load generator; which revision answered is each response's
//! `SIM_VERSION`. Each test runs its own sim at `--time-scale 0.05` (a minute is 3 s).

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{AdvancedConfiguration, DeploymentController, DeploymentControllerType, LoadBalancer};
use serde_json::Value;

use crate::sim::common::{
    describe, load_balancer, register, rolling_config, service_deployments, versions_at, wait_steady,
};
use crate::sim::harness::{Sim, push_image, unique};
use crate::support::load::{self, LoadOptions, LoadReport};
use crate::support::{Captured, capture, deployer, ecs_client, unique_account};

fn advanced_lb(account: &str) -> LoadBalancer {
    let tg = |n: &str| format!("arn:aws:elasticloadbalancing:us-east-1:{account}:targetgroup/{n}/0123456789abcdef");
    let rule = |n: u32| format!("arn:aws:elasticloadbalancing:us-east-1:{account}:listener-rule/app/web/1/2/{n}");
    LoadBalancer::builder()
        .target_group_arn(tg("blue"))
        .container_name("app")
        .container_port(8080)
        .advanced_configuration(
            AdvancedConfiguration::builder()
                .alternate_target_group_arn(tg("green"))
                .production_listener_rule(rule(3))
                .test_listener_rule(rule(4))
                .role_arn(format!("arn:aws:iam::{account}:role/ecs-infrastructure"))
                .build(),
        )
        .build()
}

/// Service `web`: 2 tasks of `v1`, created as a rolling service (deployer sets the strategy).
struct App {
    account: String,
    sim: Sim,
    ecs: Client,
    image: String,
    family: String,
    v1: String,
    prod: String,
    test: Option<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Lb {
    Advanced,
    Plain,
    External,
}

async fn app(lb: Lb) -> App {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("bg");
    let image = push_image(&family, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let v1 = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], false).await;
    let mut create = ecs
        .create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(&v1)
        .desired_count(2)
        .load_balancers(if lb == Lb::Plain { load_balancer(&account, "web") } else { advanced_lb(&account) })
        .deployment_configuration(rolling_config());
    if lb == Lb::External {
        create = create.deployment_controller(
            DeploymentController::builder().r#type(DeploymentControllerType::External).build().expect("controller"),
        );
    }
    create.send().await.expect("create service");
    if lb != Lb::External {
        wait_steady(&ecs, "main", "web", Duration::from_secs(30)).await;
    }
    let (prod, test) = sim.listeners("web").await;
    App { account, sim, ecs, image, family, v1, prod, test }
}

impl App {
    async fn revision(&self, env: &[(&str, &str)]) -> String {
        let mut all = vec![("SIM_VERSION", "v2")];
        all.extend_from_slice(env);
        register(&self.ecs, &self.family, &self.image, &all, &[], false).await
    }

    fn deploy(&self, task_definition: &str, strategy: &str, extra: &[&str]) -> assert_cmd::Command {
        self.deploy_with(task_definition, strategy, true, extra)
    }

    /// `deployer --output json deploy --cluster main` to `services` against the sim.
    fn deploy_to(&self, services: &str, task_definition: &str, strategy: &str) -> assert_cmd::Command {
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
            "--strategy",
            strategy,
        ]);
        c
    }

    /// `deploy`, with or without the test listener's `--test-url`.
    fn deploy_with(
        &self,
        task_definition: &str,
        strategy: &str,
        test_url: bool,
        extra: &[&str],
    ) -> assert_cmd::Command {
        let mut c = self.deploy_to("web", task_definition, strategy);
        c.args(["--health-url", &format!("{}/health", self.prod), "--timeout", "60"]);
        if let Some(test) = self.test.as_ref().filter(|_| test_url) {
            c.args(["--test-url", &format!("{test}/health")]);
        }
        c.args(extra);
        c
    }

    fn load(&self) -> load::Load {
        load::start(
            &self.prod,
            LoadOptions { max_duration: Duration::from_secs(60), concurrency: 2, ..Default::default() },
        )
    }
}

pub(crate) async fn run(mut cmd: assert_cmd::Command) -> (Captured, Value) {
    let run = tokio::task::spawn_blocking(move || capture(&mut cmd)).await.expect("deployer ran");
    let json: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{run}"));
    (run, json)
}

pub(crate) fn report(json: &Value) -> &Value {
    &json["services"][0]
}

/// Production percentages to green as the report's traffic timeline shows them, without repeats.
pub(crate) fn production_steps(r: &Value) -> Vec<f64> {
    let mut out: Vec<f64> = Vec::new();
    for t in r["traffic"].as_array().into_iter().flatten() {
        let p = t["production-green-percent"].as_f64().unwrap();
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out
}

/// When (ms since the deploy began) production first reached each percentage.
pub(crate) fn production_at(r: &Value, percent: f64) -> Option<u64> {
    r["traffic"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["production-green-percent"].as_f64() == Some(percent))
        .and_then(|t| t["at-ms"].as_u64())
}

pub(crate) fn stages(r: &Value) -> Vec<String> {
    r["lifecycle"].as_array().into_iter().flatten().map(|s| s["stage"].as_str().unwrap().to_string()).collect()
}

pub(crate) fn versions(report: &LoadReport) -> BTreeSet<String> {
    report.versions.keys().cloned().collect()
}

/// The service's lifecycle hooks after the deploy: deployer's PAUSE hook must be gone.
async fn hooks_left(app: &App) -> usize {
    let s = describe(&app.ecs, "main", "web").await;
    s.deployment_configuration().map(|c| c.lifecycle_hooks().len()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_blue_green_release_shifts_production_with_zero_failed_requests() {
    let app = app(Lb::Advanced).await;
    let v2 = app.revision(&[]).await;
    let traffic = app.load();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = app.deploy(&v2, "blue-green", &["--bake", "60"]);
    cmd.env("GITHUB_STEP_SUMMARY", dir.path().join("summary"));
    let (out, json) = run(cmd).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    let r = report(&json);
    assert_eq!(r["strategy"], "BLUE_GREEN");
    assert_eq!(traffic.failed, 0, "failed production requests: {:?}", traffic.failures);
    assert!(traffic.saw("v1") && traffic.saw("v2"), "{:?}", traffic.versions);
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v2"; 6]);
    let st = stages(r);
    for s in ["SCALE_UP", "POST_TEST_TRAFFIC_SHIFT", "BAKE_TIME", "CLEAN_UP"] {
        assert!(st.iter().any(|x| x == s), "{s} missing from {st:?}");
    }
    // Test traffic on green while production stays on blue, then production all at once.
    let t = r["traffic"].as_array().unwrap();
    assert!(t.iter().any(|p| p["test-green-percent"] == 100.0 && p["production-green-percent"] == 0.0), "{t:?}");
    assert_eq!(production_steps(r).last(), Some(&100.0), "{t:?}");
    let timeline = r["timeline"].to_string();
    assert!(
        timeline.contains("test traffic gate passed") && timeline.contains("ContinueServiceDeployment(CONTINUE)"),
        "{timeline}"
    );
    // The bake: 1 min = 3 s at the sim's scale; blue stays up for it.
    let bake = r["lifecycle"].as_array().unwrap().iter().find(|s| s["stage"] == "BAKE_TIME").unwrap();
    assert!(bake["duration-ms"].as_u64().unwrap() >= 2500, "{bake}");
    assert_eq!(hooks_left(&app).await, 0, "deployer's PAUSE hook must not stay on the service");
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    println!(
        "good blue/green: {} production requests ({:?}), {} failed\n{summary}",
        traffic.ok, traffic.versions, traffic.failed
    );
    assert!(summary.contains("POST_TEST_TRAFFIC_SHIFT") && summary.contains("production → green"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_release_is_caught_on_the_test_listener_and_production_only_ever_serves_blue() {
    let app = app(Lb::Advanced).await;
    // /health answers 200 {"status":"degraded"}: the target group and ECS are happy, only a
    // probe that reads the body on the test listener sees it.
    let v2 = app.revision(&[("SIM_HEALTH", "degraded")]).await;
    let traffic = app.load();
    let (out, json) = run(app.deploy(&v2, "blue-green", &["--bake", "60"])).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    let r = report(&json);
    assert!(r["failure"].as_str().unwrap().contains("failed 3 times in a row"), "{r}");
    assert!(r["failing-probe"].as_str().unwrap().contains(app.test.as_deref().unwrap()), "{r}");
    assert!(r["rollback"].as_str().unwrap().contains("ContinueServiceDeployment(ROLLBACK)"), "{r}");
    assert_eq!(traffic.failed, 0, "{:?}", traffic.failures);
    assert_eq!(
        versions(&traffic),
        BTreeSet::from(["v1".to_string()]),
        "production served green: {:?}",
        traffic.versions
    );
    assert!(traffic.ok > 20, "{traffic:?}");
    assert!(production_steps(r).iter().all(|p| *p == 0.0), "{}", r["traffic"]);
    let held_at = r["lifecycle"].as_array().unwrap().iter().find(|s| s["stage"] == "POST_TEST_TRAFFIC_SHIFT").unwrap()
        ["started-ms"]
        .as_u64()
        .unwrap();
    let failed_at = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["what"].as_str().unwrap().starts_with("gate failed"))
        .unwrap()["at-ms"]
        .as_u64()
        .unwrap();
    println!(
        "test-listener catch: green held at {held_at} ms, gate failed at {failed_at} ms ({} ms on test traffic); production answers {:?}",
        failed_at - held_at,
        traffic.versions
    );
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v1"; 6]);
    assert_eq!(versions_at(app.test.as_deref().unwrap(), 6).await, vec!["v1"; 6]);
    let sd = service_deployments(&app.ecs, "main", "web").await;
    assert_eq!(sd[0].status().map(|s| s.as_str()), Some("ROLLBACK_SUCCESSFUL"));
    assert_eq!(hooks_left(&app).await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_that_fails_during_the_bake_is_rolled_back_to_blue() {
    let app = app(Lb::Advanced).await;
    // Healthy long enough to pass the test gate and take production, then exits (7 s).
    let v2 = app.revision(&[("SIM_CRASH_AFTER", "140")]).await;
    let traffic = app.load();
    let (out, json) = run(app.deploy(&v2, "blue-green", &["--bake", "240"])).await;
    let during = traffic.stop().await;
    assert_eq!(out.code, Some(3), "{out}");
    let r = report(&json);
    assert!(production_at(r, 100.0).is_some(), "production never shifted: {}", r["traffic"]);
    assert!(stages(r).iter().any(|s| s == "BAKE_TIME"), "{:?}", stages(r));
    assert!(r["failure"].as_str().unwrap().contains("EssentialContainerExited"), "{r}");
    assert!(r["rollback"].as_str().unwrap().contains("StopServiceDeployment(ROLLBACK)"), "{r}");
    assert_eq!(production_steps(r).last(), Some(&0.0), "{}", r["traffic"]);
    let detect =
        r["rollback-started-at-ms"].as_u64().unwrap().saturating_sub(r["failure-signal-at-ms"].as_u64().unwrap());
    println!(
        "bake failure: failure signal -> rollback started {detect} ms; production failures before detection: {}",
        during.failed
    );
    // Blue is still up during the bake: the rollback is instant and loses nothing afterwards.
    assert!(during.failed <= 5, "{:?}", during.failures);
    let after = load::run(&app.prod, LoadOptions { max_requests: 60, concurrency: 2, ..Default::default() }).await;
    assert_eq!((after.failed, versions(&after)), (0, BTreeSet::from(["v1".to_string()])), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn canary_shifts_the_configured_percentage_bakes_then_takes_all() {
    let app = app(Lb::Advanced).await;
    let v2 = app.revision(&[]).await;
    let traffic = app.load();
    let (out, json) =
        run(app.deploy(&v2, "canary", &["--canary-percent", "25", "--canary-bake", "60", "--bake", "0"])).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(0), "{out}");
    let r = report(&json);
    assert_eq!(r["strategy"], "CANARY");
    let steps: Vec<f64> = production_steps(r).into_iter().filter(|p| *p > 0.0).collect();
    assert_eq!(steps, [25.0, 100.0], "{}", r["traffic"]);
    let canary = production_at(r, 100.0).unwrap() - production_at(r, 25.0).unwrap();
    assert!(canary >= 2500, "the canary step must last its bake (3 s at this scale): {canary} ms");
    assert_eq!(traffic.failed, 0, "{:?}", traffic.failures);
    let (v1, v2n) =
        (traffic.versions.get("v1").copied().unwrap_or(0), traffic.versions.get("v2").copied().unwrap_or(0));
    assert!(v1 > 0 && v2n > 0, "{:?}", traffic.versions);
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v2"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn linear_steps_follow_the_configuration_and_a_failure_mid_way_rolls_back() {
    let app = app(Lb::Advanced).await;
    // Takes production at 25 %, then exits (7 s after start) during the steps.
    let v2 = app.revision(&[("SIM_CRASH_AFTER", "140")]).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        // Independent of deployer: the sim's own production weights, every 100 ms (bounded).
        let url = format!("{}/_sim/services", app.sim.url);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<f64> = Vec::new();
            for _ in 0..600 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                if let Ok(v) = reqwest::get(&url).await.and_then(|r| r.error_for_status()) {
                    let v: Value = v.json().await.unwrap_or_default();
                    let weights = v["services"][0]["productionWeights"].as_array().cloned().unwrap_or_default();
                    if weights.len() == 2 {
                        let green = weights[0]["weight"].as_f64().unwrap_or(0.0);
                        if seen.last() != Some(&green) {
                            seen.push(green);
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            seen
        })
    };
    let (out, json) =
        run(app.deploy(&v2, "linear", &["--linear-percent", "25", "--linear-bake", "60", "--bake", "0"])).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sampled: Vec<f64> = sampler.await.unwrap().into_iter().filter(|p| *p > 0.0).collect();
    assert_eq!(out.code, Some(3), "{out}");
    let r = report(&json);
    assert_eq!(r["strategy"], "LINEAR");
    println!("linear: traffic {}\ntimeline {:#}", r["traffic"], r["timeline"]);
    let steps: Vec<f64> = production_steps(r).into_iter().filter(|p| *p > 0.0).collect();
    assert!(!steps.is_empty() && steps.len() < 4, "failed mid-way: {}", r["traffic"]);
    assert_eq!(steps, [25.0, 50.0, 75.0][..steps.len()], "{}", r["traffic"]);
    assert_eq!(sampled, steps, "the sim's own production weights agree with the report");
    for w in steps.windows(2) {
        let gap = production_at(r, w[1]).unwrap() - production_at(r, w[0]).unwrap();
        assert!(gap >= 2500, "each step lasts its bake (3 s): {gap} ms between {w:?}");
    }
    assert_eq!(production_steps(r).last(), Some(&0.0), "{}", r["traffic"]);
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v1"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_advanced_configuration_it_exits_1_naming_the_fix_and_changes_nothing() {
    let app = app(Lb::Plain).await;
    let v2 = app.revision(&[]).await;
    let (out, json) = run(app.deploy(&v2, "blue-green", &[])).await;
    assert_eq!(out.code, Some(1), "{out}");
    let error = json["error"].as_str().unwrap_or_default().to_string() + &out.stderr;
    for want in [
        "has no advancedConfiguration",
        "alternateTargetGroupArn",
        "productionListenerRule",
        "roleArn",
        "nothing was changed",
    ] {
        assert!(error.contains(want), "{want} missing: {out}");
    }
    let s = describe(&app.ecs, "main", "web").await;
    assert_eq!(s.task_definition(), Some(app.v1.as_str()));
    assert_eq!(s.deployments().len(), 1);
    assert!(s.deployment_configuration().and_then(|c| c.strategy()).is_none_or(|s| s.as_str() == "ROLLING"));
    assert_eq!(service_deployments(&app.ecs, "main", "web").await.len(), 1, "only the create's deployment");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_external_controller_service_is_not_supported() {
    // CODE_DEPLOY services are deployed through CodeDeploy (tests/it/codedeploy.rs); a third
    // party's EXTERNAL controller is left to that party.
    let app = app(Lb::External).await;
    let v2 = app.revision(&[]).await;
    for strategy in ["blue-green", "rolling"] {
        let (out, _) = run(app.deploy(&v2, strategy, &[])).await;
        assert_eq!(out.code, Some(1), "{out}");
        assert!(
            out.stderr.contains("EXTERNAL deployment controller") && out.stderr.contains("is not supported"),
            "{out}"
        );
    }
    assert_eq!(describe(&app.ecs, "main", "web").await.task_definition(), Some(app.v1.as_str()));
}

/// The PAUSE hooks (deployer's kind: no target) of a service deployment's configuration.
fn pause_hooks(sd: &aws_sdk_ecs::types::ServiceDeployment) -> Vec<aws_sdk_ecs::types::DeploymentLifecycleHook> {
    let hooks = sd.deployment_configuration().map(|c| c.lifecycle_hooks().to_vec()).unwrap_or_default();
    hooks.into_iter().filter(|h| h.target_type().map(|t| t.as_str()) == Some("PAUSE")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_ecs_called_successful_whose_production_fails_goes_back_to_blue_unheld() {
    let app = app(Lb::Advanced).await;
    // 200 {"status":"degraded"}: ECS and the target group are happy. Without --test-url the
    // hold is released at once; deployer's production probes need 30 bad answers in a row, so
    // they fail only after ECS (bake 0) has called the deployment SUCCESSFUL and stopped blue.
    let v2 = app.revision(&[("SIM_HEALTH", "degraded")]).await;
    let (out, json) = run(app.deploy_with(&v2, "blue-green", false, &["--bake", "0", "--probe-failures", "30"])).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    let r = report(&json);
    assert!(r["failure"].as_str().unwrap().contains("failed 30 times in a row"), "{r}");
    let sds = service_deployments(&app.ecs, "main", "web").await;
    let ours =
        sds.iter().find(|sd| r["deployment-id"] == sd.service_deployment_arn().unwrap()).expect("our deployment");
    assert_eq!(
        ours.status().map(|s| s.as_str()),
        Some("SUCCESSFUL"),
        "ECS had finished the deployment before production failed: {}",
        r["timeline"]
    );
    // A finished deployment cannot be stopped: deployer sent the service back, with its own
    // hook removed in the same UpdateService, so the rollback deployment ran through.
    assert!(r["rollback"].as_str().unwrap().contains("UpdateService"), "{r}");
    let rollback = &sds[0];
    assert_ne!(rollback.service_deployment_arn(), ours.service_deployment_arn());
    assert_eq!(rollback.status().map(|s| s.as_str()), Some("SUCCESSFUL"), "{rollback:?}");
    assert!(pause_hooks(rollback).is_empty(), "the rollback deployment carried deployer's hook: {rollback:?}");
    assert!(
        rollback.lifecycle_hook_details().iter().all(|h| h.status().map(|s| s.as_str()) != Some("AWAITING_ACTION")),
        "{rollback:?}"
    );
    assert_eq!(hooks_left(&app).await, 0, "no deployer hook left on the service");
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v1"; 6]);
    let calls = app.sim.control("calls").await;
    assert_eq!(calls["calls"]["StopServiceDeployment"].as_u64().unwrap_or(0), 0, "deployer knew it was finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_services_whose_updates_are_both_refused_each_get_a_failed_report_and_exit_1() {
    let app = app(Lb::Advanced).await;
    app.ecs
        .create_service()
        .cluster("main")
        .service_name("worker")
        .task_definition(&app.v1)
        .desired_count(2)
        .load_balancers(advanced_lb(&app.account))
        .deployment_configuration(rolling_config())
        .send()
        .await
        .expect("create service");
    wait_steady(&app.ecs, "main", "worker", Duration::from_secs(30)).await;
    let v2 = app.revision(&[]).await;
    let fault = serde_json::json!({"operation": "UpdateService", "error": "AccessDeniedException", "count": 2});
    reqwest::Client::new().post(format!("{}/_sim/faults", app.sim.url)).json(&fault).send().await.unwrap();
    let (out, json) = run(app.deploy_to("web,worker", &v2, "blue-green")).await;
    // Nothing changed anywhere: a failure before any change, never exit 0.
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!((json["result"].as_str(), json["exit-code"].as_u64()), (Some("failed"), Some(1)), "{json}");
    let services = json["services"].as_array().unwrap();
    let names: Vec<&str> = services.iter().map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(names, ["web", "worker"], "{json}");
    for s in services {
        assert_eq!(s["result"], "failed", "{s}");
        assert!(s["failure"].as_str().unwrap().contains("AccessDeniedException"), "{s}");
        assert_eq!(s["strategy"], "BLUE_GREEN");
    }
    for name in ["web", "worker"] {
        let s = describe(&app.ecs, "main", name).await;
        assert_eq!(s.task_definition(), Some(app.v1.as_str()), "{name}");
        assert_eq!(service_deployments(&app.ecs, "main", name).await.len(), 1, "{name}: only the create's deployment");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_precondition_registers_nothing() {
    let app = app(Lb::Plain).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("taskdef.json");
    let td = serde_json::json!({
        "family": app.family,
        "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": app.image, "essential": true,
            "portMappings": [{"containerPort": 8080}],
            "environment": [{"name": "SIM_VERSION", "value": "v2"}]}]
    });
    std::fs::write(&file, td.to_string()).unwrap();
    let (out, _) = run(app.deploy(file.to_str().unwrap(), "blue-green", &[])).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("has no advancedConfiguration") && out.stderr.contains("nothing was changed"), "{out}");
    let latest = app.ecs.describe_task_definition().task_definition(&app.family).send().await.unwrap();
    let latest = latest.task_definition().unwrap();
    assert_eq!(latest.task_definition_arn(), Some(app.v1.as_str()), "the file was registered before the refusal");
    assert_eq!(describe(&app.ecs, "main", "web").await.task_definition(), Some(app.v1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn deployers_hold_times_out_to_rollback_when_the_runner_dies() {
    let app = app(Lb::Advanced).await;
    // Degraded on the test listener, with a failure threshold the gate never reaches: deployer
    // holds green on test traffic until it is killed.
    let v2 = app.revision(&[("SIM_HEALTH", "degraded")]).await;
    let template = app.deploy(&v2, "blue-green", &["--probe-failures", "100000"]);
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("deployer"));
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.args(template.get_args()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().expect("spawn deployer");
    let held = crate::sim::harness::wait_for("deployer's hold", Duration::from_secs(30), || async {
        let sds = service_deployments(&app.ecs, "main", "web").await;
        let sd = sds.into_iter().next()?;
        let awaiting =
            sd.lifecycle_hook_details().iter().any(|h| h.status().map(|s| s.as_str()) == Some("AWAITING_ACTION"));
        awaiting.then_some(sd)
    })
    .await;
    // The hook deployer sent: ROLLBACK after --timeout (60 s) plus 2 min, in whole minutes.
    let hooks = pause_hooks(&held);
    assert_eq!(hooks.len(), 1, "{held:?}");
    let timeout = hooks[0].timeout_configuration().expect("timeoutConfiguration in the UpdateService");
    assert_eq!(timeout.timeout_in_minutes(), Some(3));
    assert_eq!(timeout.action().map(|a| a.as_str()), Some("ROLLBACK"));
    // The runner dies without a signal: nobody answers the hold.
    child.kill().expect("SIGKILL deployer");
    let _ = child.wait();
    let arn = held.service_deployment_arn().unwrap().to_string();
    // 3 min at the sim's time scale is 9 s.
    let sd = crate::sim::harness::wait_for("ECS to roll back by itself", Duration::from_secs(40), || async {
        let sd = service_deployments(&app.ecs, "main", "web")
            .await
            .into_iter()
            .find(|sd| sd.service_deployment_arn() == Some(&arn))?;
        (sd.status().map(|s| s.as_str()) == Some("ROLLBACK_SUCCESSFUL")).then_some(sd)
    })
    .await;
    assert!(sd.lifecycle_hook_details().iter().any(|h| h.status().map(|s| s.as_str()) == Some("TIMED_OUT")), "{sd:?}");
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v1"; 6]);
}

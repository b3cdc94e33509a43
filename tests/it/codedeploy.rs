//! `deployer deploy` to a service under the CODE_DEPLOY deployment controller, against ecs-sim's
//! ECS and CodeDeploy (aws-sdk-codedeploy over `AWS_ENDPOINT_URL_CODEDEPLOY`): the same driver
//! and gate as the native strategies, through CodeDeploy's lifecycle — green held Ready on the
//! test listener until `--test-url` answered well, ContinueDeployment(READY_WAIT), production
//! gated after rerouting, StopDeployment with rollback on failure. Production traffic comes
//! from the bounded loopback load generator; which revision answered is each response's
//! `SIM_VERSION`. Each test runs its own sim at `--time-scale 0.05` (a minute is 3 s).

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_codedeploy::types::{
    ComputePlatform, DeploymentStatus, DeploymentWaitType, TimeBasedCanary, TrafficRoutingConfig, TrafficRoutingType,
};
use aws_sdk_ecs::Client;
use serde_json::Value;

use crate::bluegreen::{production_at, production_steps, report, run, stages, versions};
use crate::sim::codedeploy::{
    GroupSettings, code_deploy_service, codedeploy_client, create_group, deployment, wait_status, wait_task_set_steady,
};
use crate::sim::common::{register, versions_at};
use crate::sim::harness::{Sim, push_image, unique};
use crate::support::load::{self, LoadOptions};
use crate::support::oidc::{Issuer, Job};
use crate::support::{deployer, ecs_client, stack, unique_account};

/// Service `web` of 2 tasks of `v1` under CODE_DEPLOY, and its CodeDeploy group `app`/`dg`.
struct App {
    account: String,
    sim: Sim,
    ecs: Client,
    cd: aws_sdk_codedeploy::Client,
    image: String,
    family: String,
    v1: String,
    prod: String,
    test: String,
}

async fn app(group: Option<GroupSettings>) -> App {
    let account = unique_account();
    let sim = Sim::start();
    let (ecs, cd) = (ecs_client(&sim.url, &account), codedeploy_client(&sim.url, &account));
    let family = unique("cd");
    let image = push_image(&family, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let v1 = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], false).await;
    code_deploy_service(&ecs, &account, "web", &v1, 2).await;
    if let Some(g) = group {
        create_group(&cd, &account, "app", "dg", "web", &g).await;
    }
    let (prod, test) = sim.listeners("web").await;
    App { account, sim, ecs, cd, image, family, v1, prod, test: test.expect("a test listener") }
}

impl App {
    async fn revision(&self, env: &[(&str, &str)]) -> String {
        let mut all = vec![("SIM_VERSION", "v2")];
        all.extend_from_slice(env);
        register(&self.ecs, &self.family, &self.image, &all, &[], false).await
    }

    /// `deployer --output json deploy` of `task_definition` to `web`, probing production (and
    /// the test listener with `test_url`).
    fn deploy(&self, task_definition: &str, test_url: bool, extra: &[&str]) -> assert_cmd::Command {
        let mut c = deployer(&self.account);
        c.env("AWS_ENDPOINT_URL_ECS", &self.sim.url)
            .env("AWS_ENDPOINT_URL_CODEDEPLOY", format!("{}/codedeploy", self.sim.url))
            .env("DEPLOYER_POLL_MS", "150")
            .args(["--output", "json", "deploy", "--cluster", "main", "--service", "web"])
            .args(["--task-definition", task_definition, "--timeout", "60"])
            .args(["--health-url", &format!("{}/health", self.prod)]);
        if test_url {
            c.args(["--test-url", &format!("{}/health", self.test)]);
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

    /// Every CodeDeploy deployment of the group, newest first.
    async fn deployments(&self) -> Vec<String> {
        let out = self.cd.list_deployments().application_name("app").deployment_group_name("dg").send().await;
        out.expect("list deployments").deployments().to_vec()
    }
}

fn timeline(r: &Value) -> String {
    r["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["what"].as_str().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_release_through_codedeploy_shifts_production_with_zero_failed_requests() {
    let app = app(Some(GroupSettings::default())).await;
    let v2 = app.revision(&[]).await;
    let traffic = app.load();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = app.deploy(&v2, true, &["--bake", "1"]);
    cmd.env("GITHUB_STEP_SUMMARY", dir.path().join("summary"));
    let (out, json) = run(cmd).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    let r = report(&json);
    assert_eq!(r["strategy"], "CODE_DEPLOY");
    assert_eq!(traffic.failed, 0, "failed production requests: {:?}", traffic.failures);
    assert!(traffic.saw("v1") && traffic.saw("v2"), "{:?}", traffic.versions);
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v2"; 6]);
    let id = r["deployment-id"].as_str().unwrap().to_string();
    assert!(id.starts_with("d-"), "{r}");
    let st = stages(r);
    for s in ["Install", "AllowTestTraffic", "Ready", "AllowTraffic", "AfterAllowTraffic", "TerminationWait"] {
        assert!(st.iter().any(|x| x == s), "{s} missing from {st:?}");
    }
    let t = r["traffic"].as_array().unwrap();
    assert!(t.iter().any(|p| p["test-green-percent"] == 100.0 && p["production-green-percent"] == 0.0), "{t:?}");
    assert_eq!(production_steps(r).last(), Some(&100.0), "{t:?}");
    let lines = timeline(r);
    for want in [
        format!("CreateDeployment {id} (app/dg").as_str(),
        "held Ready on test traffic up to 60 min",
        "test traffic gate passed",
        "ContinueDeployment(READY_WAIT)",
        "termination wait (5 min)",
    ] {
        assert!(lines.contains(want), "{want} missing from\n{lines}");
    }
    // Reported, not waited for: blue is still kept; ending the wait deletes it.
    let d = deployment(&app.cd, &id).await;
    assert!(d.instance_termination_wait_time_started() && d.status() == Some(&DeploymentStatus::InProgress), "{d:?}");
    let ended =
        app.cd.continue_deployment().deployment_id(&id).deployment_wait_type(DeploymentWaitType::TerminationWait);
    ended.send().await.expect("end the termination wait");
    wait_status(&app.cd, &id, DeploymentStatus::Succeeded, Duration::from_secs(10)).await;
    let s = wait_task_set_steady(&app.ecs, "web", Duration::from_secs(20)).await;
    assert_eq!(s.task_definition(), Some(v2.as_str()));
    let summary = std::fs::read_to_string(dir.path().join("summary")).unwrap();
    println!(
        "good CodeDeploy release: {} production requests ({:?}), {} failed, {} API calls\n{summary}",
        traffic.ok, traffic.versions, traffic.failed, r["api-calls"]
    );
    assert!(summary.contains("| Ready |") && summary.contains("production → green"), "{summary}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_green_is_caught_on_the_test_listener_and_production_never_serves_it() {
    let app = app(Some(GroupSettings::default())).await;
    // /health answers 200 {"status":"degraded"}: the target group, ECS and CodeDeploy are
    // happy; only a probe that reads the body on the test listener sees it.
    let v2 = app.revision(&[("SIM_HEALTH", "degraded")]).await;
    let traffic = app.load();
    let (out, json) = run(app.deploy(&v2, true, &["--bake", "1"])).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    let r = report(&json);
    assert!(r["failure"].as_str().unwrap().contains("failed 3 times in a row"), "{r}");
    assert!(r["failing-probe"].as_str().unwrap().contains(&app.test), "{r}");
    assert!(r["rollback"].as_str().unwrap().contains("StopDeployment(autoRollbackEnabled=true)"), "{r}");
    assert_eq!(traffic.failed, 0, "{:?}", traffic.failures);
    assert_eq!(
        versions(&traffic),
        BTreeSet::from(["v1".to_string()]),
        "production served green: {:?}",
        traffic.versions
    );
    assert!(traffic.ok > 20, "{traffic:?}");
    assert!(production_steps(r).iter().all(|p| *p == 0.0), "{}", r["traffic"]);
    let ready = r["lifecycle"].as_array().unwrap().iter().find(|s| s["stage"] == "Ready").expect("held Ready");
    let held_at = ready["started-ms"].as_u64().unwrap();
    let failed_at =
        r["timeline"].as_array().unwrap().iter().find(|s| s["what"].as_str().unwrap().starts_with("gate failed"));
    let failed_at = failed_at.unwrap()["at-ms"].as_u64().unwrap();
    println!(
        "CodeDeploy test-listener catch: green held Ready at {held_at} ms, gate failed at {failed_at} ms ({} ms on test traffic); production answers {:?}",
        failed_at - held_at,
        traffic.versions
    );
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    let id = r["deployment-id"].as_str().unwrap();
    let d = deployment(&app.cd, id).await;
    assert_eq!(d.status(), Some(&DeploymentStatus::Stopped));
    let rollback = d.rollback_info().and_then(|i| i.rollback_deployment_id()).expect("a rollback deployment");
    let lines = timeline(r);
    assert!(lines.contains(&format!("CodeDeploy deployment {id} Stopped")), "{lines}");
    assert!(lines.contains(&format!("rollback deployment {rollback} Succeeded")), "{lines}");
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v1"; 6]);
    assert_eq!(versions_at(&app.test, 6).await, vec!["v1"; 6]);
    let s = wait_task_set_steady(&app.ecs, "web", Duration::from_secs(20)).await;
    assert_eq!(s.task_definition(), Some(app.v1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn green_failing_after_rerouting_is_stopped_with_rollback_and_blue_serves() {
    let app = app(Some(GroupSettings::default())).await;
    // Healthy long enough to pass the test gate and take production, then exits (7 s after
    // it started) while deployer bakes and CodeDeploy keeps blue for its termination wait.
    let v2 = app.revision(&[("SIM_CRASH_AFTER", "140")]).await;
    let traffic = app.load();
    let (out, json) = run(app.deploy(&v2, true, &["--bake", "15"])).await;
    let during = traffic.stop().await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    let r = report(&json);
    assert!(production_at(r, 100.0).is_some(), "production never shifted: {}", r["traffic"]);
    assert!(r["failure"].as_str().unwrap().contains("EssentialContainerExited"), "{r}");
    assert!(r["rollback"].as_str().unwrap().contains("StopDeployment(autoRollbackEnabled=true)"), "{r}");
    assert!(timeline(r).contains("gate failed with production traffic on green"), "{}", timeline(r));
    assert_eq!(production_steps(r).last(), Some(&0.0), "{}", r["traffic"]);
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    let detect =
        r["rollback-started-at-ms"].as_u64().unwrap().saturating_sub(r["failure-signal-at-ms"].as_u64().unwrap());
    println!(
        "CodeDeploy failure after rerouting: failure signal -> rollback started {detect} ms; production failures before detection: {}",
        during.failed
    );
    // Blue was kept for the termination wait: the rollback is instant and loses nothing after.
    assert!(during.failed <= 5, "{:?}", during.failures);
    let after = load::run(&app.prod, LoadOptions { max_requests: 60, concurrency: 2, ..Default::default() }).await;
    assert_eq!((after.failed, versions(&after)), (0, BTreeSet::from(["v1".to_string()])), "{after:?}");
    let d = deployment(&app.cd, r["deployment-id"].as_str().unwrap()).await;
    assert_eq!(d.status(), Some(&DeploymentStatus::Stopped));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_group_that_does_not_wait_before_rerouting_is_still_gated_on_production_and_rolled_back() {
    let group = GroupSettings { ready_wait_minutes: None, test_route: false, ..GroupSettings::default() };
    let app = app(Some(group)).await;
    let v2 = app.revision(&[("SIM_HEALTH", "degraded")]).await;
    let traffic = app.load();
    let (out, json) = run(app.deploy(&v2, false, &["--bake", "1"])).await;
    let during = traffic.stop().await;
    assert_eq!(out.code, Some(3), "{out}");
    let r = report(&json);
    let lines = timeline(r);
    assert!(lines.contains("no wait before rerouting") && lines.contains("reroutes without waiting"), "{lines}");
    assert!(!lines.contains("ContinueDeployment(READY_WAIT)"), "{lines}");
    assert!(!stages(r).iter().any(|s| s == "Ready"), "{:?}", stages(r));
    assert!(production_at(r, 100.0).is_some(), "{}", r["traffic"]);
    assert!(r["failing-probe"].as_str().unwrap().contains(&app.prod), "{r}");
    assert!(r["rollback"].as_str().unwrap().contains("StopDeployment(autoRollbackEnabled=true)"), "{r}");
    assert_eq!(r["final-task-definition-arn"], app.v1.as_str());
    assert_eq!(during.failed, 0, "{:?}", during.failures);
    let after = load::run(&app.prod, LoadOptions { max_requests: 60, concurrency: 2, ..Default::default() }).await;
    assert_eq!((after.failed, versions(&after)), (0, BTreeSet::from(["v1".to_string()])), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployment_config_is_passed_through_and_the_termination_wait_is_awaited_when_asked() {
    let group = GroupSettings { termination_wait_minutes: 1, ..GroupSettings::default() };
    let app = app(Some(group)).await;
    app.cd
        .create_deployment_config()
        .deployment_config_name("canary-half")
        .compute_platform(ComputePlatform::Ecs)
        .traffic_routing_config(
            TrafficRoutingConfig::builder()
                .r#type(TrafficRoutingType::TimeBasedCanary)
                .time_based_canary(TimeBasedCanary::builder().canary_percentage(50).canary_interval(1).build())
                .build(),
        )
        .send()
        .await
        .expect("create deployment config");
    let v2 = app.revision(&[]).await;
    let traffic = app.load();
    let extra = ["--bake", "0", "--codedeploy-deployment-config", "canary-half", "--codedeploy-wait-for-termination"];
    let (out, json) = run(app.deploy(&v2, true, &extra)).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(0), "{out}");
    let r = report(&json);
    let steps: Vec<f64> = production_steps(r).into_iter().filter(|p| *p > 0.0).collect();
    assert_eq!(steps, [50.0, 100.0], "{}", r["traffic"]);
    let canary = production_at(r, 100.0).unwrap() - production_at(r, 50.0).unwrap();
    assert!(canary >= 2500, "the canary step lasts its interval (3 s at this scale): {canary} ms");
    let d = deployment(&app.cd, r["deployment-id"].as_str().unwrap()).await;
    assert_eq!(d.deployment_config_name(), Some("canary-half"));
    assert_eq!(d.status(), Some(&DeploymentStatus::Succeeded), "waited for the termination wait");
    assert!(timeline(r).contains("waiting: CodeDeploy's termination wait to end (1 min"), "{}", timeline(r));
    assert_eq!(traffic.failed, 0, "{:?}", traffic.failures);
    let s = wait_task_set_steady(&app.ecs, "web", Duration::from_secs(20)).await;
    assert_eq!(s.task_definition(), Some(v2.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deployment_group_is_found_from_the_service_and_never_guessed() {
    let app = app(None).await;
    let v2 = app.revision(&[]).await;
    // No group deploys the service: exit 1 naming the console's default names and the flags.
    let (out, json) = run(app.deploy(&v2, true, &[])).await;
    assert_eq!(out.code, Some(1), "{out}");
    let error = json["error"].as_str().unwrap_or_default().to_string() + &out.stderr;
    for want in ["web: it uses the CODE_DEPLOY deployment controller", "AppECS-main-web", "--codedeploy-application"] {
        assert!(error.contains(want), "{want} missing: {out}");
    }
    // Two applications' groups deploy it: refused, both named, nothing deployed.
    for app_name in ["app", "other"] {
        create_group(&app.cd, &app.account, app_name, "dg", "web", &GroupSettings::default()).await;
    }
    let (out, json) = run(app.deploy(&v2, true, &[])).await;
    assert_eq!(out.code, Some(1), "{out}");
    let error = json["error"].as_str().unwrap_or_default().to_string() + &out.stderr;
    assert!(error.contains("2 CodeDeploy deployment groups deploy main/web (app/dg, other/dg)"), "{out}");
    assert!(app.deployments().await.is_empty(), "nothing deployed");
    // An unknown deployment configuration is refused before anything changes too.
    let named = ["--codedeploy-application", "other", "--codedeploy-deployment-group", "dg"];
    let (out, json) =
        run(app.deploy(&v2, false, &[&named[..], &["--codedeploy-deployment-config", "Nope"]].concat())).await;
    assert_eq!(out.code, Some(1), "{out}");
    let error = json["error"].as_str().unwrap_or_default().to_string() + &out.stderr;
    assert!(error.contains("GetDeploymentConfig") && error.contains("Nope"), "{out}");
    assert!(app.deployments().await.is_empty(), "nothing deployed");
    // Named, it deploys.
    let extra = ["--codedeploy-application", "other", "--codedeploy-deployment-group", "dg", "--bake", "0"];
    let (out, json) = run(app.deploy(&v2, false, &extra)).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(timeline(report(&json)).contains("(other/dg,"), "{}", timeline(report(&json)));
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v2"; 6]);
}

#[tokio::test(flavor = "multi_thread")]
async fn deployer_rollback_sends_a_codedeploy_service_back_through_a_codedeploy_deployment() {
    let group = GroupSettings { termination_wait_minutes: 0, ..GroupSettings::default() };
    let app = app(Some(group)).await;
    let v2 = app.revision(&[]).await;
    let (out, _) = run(app.deploy(&v2, true, &["--bake", "0"])).await;
    assert_eq!(out.code, Some(0), "{out}");
    wait_task_set_steady(&app.ecs, "web", Duration::from_secs(20)).await;
    let mut back = deployer(&app.account);
    back.env("AWS_ENDPOINT_URL_ECS", &app.sim.url)
        .env("AWS_ENDPOINT_URL_CODEDEPLOY", format!("{}/codedeploy", app.sim.url))
        .env("DEPLOYER_POLL_MS", "150")
        .args(["--output", "json", "rollback", "--cluster", "main", "--service", "web"]);
    let (out, json) = run(back).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!((json["healthy"].as_bool(), json["to"].as_str()), (Some(true), Some(app.v1.as_str())), "{json}");
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v1"; 6]);
    assert_eq!(app.deployments().await.len(), 2, "the release and the redeploy of v1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_reaches_a_codedeploy_service_with_the_deployer_toml_keys() {
    // Two groups deploy the service: only deployer.toml's keys tell them apart.
    let app = app(Some(GroupSettings::default())).await;
    create_group(&app.cd, &app.account, "other", "dg", "web", &GroupSettings::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (account, prod, test) = (&app.account, &app.prod, &app.test);
    let toml = format!(
        r#"app = "shop"
region = "us-east-1"
[environments.production]
role-arn = "arn:aws:iam::{account}:role/deploy-prod"
cluster = "main"
service = "web"
branches = ["release/*"]
health-url = ["{prod}/health"]
test-url = ["{test}/health"]
bake = 0
task-definition = "taskdef.json"
codedeploy-application = "app"
codedeploy-deployment-group = "dg"
"#
    );
    std::fs::write(dir.path().join("deployer.toml"), toml).unwrap();
    let taskdef = serde_json::json!({
        "family": app.family,
        "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
        "containerDefinitions": [{"name": "app", "image": "placeholder", "essential": true,
            "portMappings": [{"containerPort": 8080}],
            "environment": [{"name": "SIM_VERSION", "value": "v2"}]}]
    });
    std::fs::write(dir.path().join("taskdef.json"), taskdef.to_string()).unwrap();
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/2.0".into(), ..Job::default() });
    let image = push_image(&app.family, "v2").await;
    let mut c = deployer(&app.account);
    c.current_dir(dir.path())
        .envs(issuer.env())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", "refs/heads/release/2.0")
        .env("GITHUB_REPOSITORY", "octo-org/shop")
        .env("GITHUB_RUN_ID", "4343")
        .env("GITHUB_OUTPUT", dir.path().join("outputs"))
        .env("GITHUB_STEP_SUMMARY", dir.path().join("summary.md"))
        .env("AWS_ENDPOINT_URL_ECS", &app.sim.url)
        .env("AWS_ENDPOINT_URL_CODEDEPLOY", format!("{}/codedeploy", app.sim.url))
        .env("DEPLOYER_POLL_MS", "150")
        .args(["--output", "json", "release", "--registry-endpoint", &stack().registry_url, "--image", &image]);
    let traffic = app.load();
    let (out, json) = run(c).await;
    let traffic = traffic.stop().await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    let id = json["deployment-id"].as_str().unwrap_or_default();
    assert!(id.starts_with("d-"), "the release's deployment id is CodeDeploy's: {json}");
    let outputs = std::fs::read_to_string(dir.path().join("outputs")).unwrap();
    assert!(outputs.contains(id), "{outputs}");
    assert!(app.deployments().await.contains(&id.to_string()), "deployed through app/dg");
    let lines = timeline(&json["deploy"]["services"][0]);
    assert!(lines.contains("(app/dg,") && lines.contains("test traffic gate passed"), "{lines}");
    assert_eq!(traffic.failed, 0, "{:?}", traffic.failures);
    assert_eq!(versions_at(&app.prod, 6).await, vec!["v2"; 6]);
    let summary = std::fs::read_to_string(dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("code-deploy"), "the release summary names the strategy taken: {summary}");
}

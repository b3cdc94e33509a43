//! `deployer run-task` and `release`'s pre-deploy stage against ecs-sim (the task is a real
//! sim-app process told by its command how to end), moto's CloudWatch Logs (the sim's awslogs
//! driver writes there) and docker-registry: success with the service's placement, a failing
//! migration with its exit code and log lines, a timeout, SIGTERM, and a release that stops
//! before the deploy with the service untouched.

use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerDefinition, KeyValuePair, LaunchType, LogConfiguration, LogDriver,
    NetworkConfiguration,
};
use serde_json::{Value, json};

use crate::release::{outputs, release, run, setup};
use crate::sim::common::{describe, describe_task, wait_steady};
use crate::sim::harness::{Sim, moto, push_image, unique, wait_for};
use crate::support::oidc::{Issuer, Job};
use crate::support::{Captured, capture, deployer, ecs_client, sigterm, spawn, unique_account};

/// A Fargate service `web` of one task in cluster `main`, whose container logs with awslogs.
struct App {
    account: String,
    sim: Sim,
    ecs: Client,
    td: String,
    group: String,
}

fn awslogs(group: &str, create: bool) -> LogConfiguration {
    let mut log = LogConfiguration::builder()
        .log_driver(LogDriver::Awslogs)
        .options("awslogs-group", group)
        .options("awslogs-region", "us-east-1")
        .options("awslogs-stream-prefix", "shop");
    if create {
        log = log.options("awslogs-create-group", "true");
    }
    log.build().expect("log configuration")
}

async fn app_with_logs(create_group: bool) -> App {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("migrate");
    let image = push_image(&family, "v1").await;
    let group = format!("/ecs/{family}");
    ecs.create_cluster().cluster_name("main").send().await.expect("cluster");
    let container = ContainerDefinition::builder()
        .name("app")
        .image(&image)
        .essential(true)
        .environment(KeyValuePair::builder().name("SIM_VERSION").value("v1").build())
        .log_configuration(awslogs(&group, create_group))
        .build();
    let td = ecs
        .register_task_definition()
        .family(&family)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(container)
        .send()
        .await
        .expect("register")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .expect("arn")
        .to_string();
    App { account, sim, ecs, td, group }
}

async fn app() -> App {
    let app = app_with_logs(true).await;
    let network = AwsVpcConfiguration::builder()
        .subnets("subnet-0abc")
        .security_groups("sg-0def")
        .assign_public_ip(AssignPublicIp::Disabled)
        .build()
        .expect("awsvpc");
    app.ecs
        .create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(&app.td)
        .desired_count(1)
        .launch_type(LaunchType::Fargate)
        .platform_version("1.4.0")
        .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
        .send()
        .await
        .expect("service");
    wait_steady(&app.ecs, "main", "web", Duration::from_secs(30)).await;
    app
}

impl App {
    fn run_task(&self, output: &str, extra: &[&str]) -> assert_cmd::Command {
        let mut c = deployer(&self.account);
        c.env("AWS_ENDPOINT_URL_ECS", &self.sim.url)
            .env("DEPLOYER_POLL_MS", "100")
            .args(["--output", output, "run-task", "--cluster", "main", "--service", "web"])
            .args(extra);
        c
    }

    /// The sim's record of a task: the RunTask request it came from.
    async fn sim_task(&self, arn: &str) -> Value {
        let v = self.sim.control("tasks").await;
        v["tasks"].as_array().and_then(|a| a.iter().find(|t| t["taskArn"] == arn)).cloned().expect("task in the sim")
    }
}

async fn run_json(mut cmd: assert_cmd::Command) -> (Captured, Value) {
    let out = tokio::task::spawn_blocking(move || capture(&mut cmd)).await.expect("deployer ran");
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    (out, json)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_exits_0_succeeds_with_the_services_placement_and_the_command_override() {
    let app = app().await;
    let (out, json) = run_json(app.run_task("json", &["--", "bin/migrate", "say=migrated", "exit=0"])).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    assert_eq!(json["task-definition-arn"], app.td.as_str(), "the service's current revision");
    assert_eq!(json["containers"], json!([{"name": "app", "essential": true, "exit-code": 0, "reason": null}]));
    let arn = json["task-arn"].as_str().unwrap();
    let sim_task = app.sim_task(arn).await;
    assert_eq!(sim_task["startedBy"], "deployer");
    let run = &sim_task["runTask"];
    assert_eq!(
        run["networkConfiguration"],
        json!({"awsvpcConfiguration": {"subnets": ["subnet-0abc"], "securityGroups": ["sg-0def"], "assignPublicIp": "DISABLED"}})
    );
    assert_eq!((run["launchType"].as_str(), run["platformVersion"].as_str()), (Some("FARGATE"), Some("1.4.0")));
    let task = describe_task(&app.ecs, "main", arn).await;
    let over = &task.overrides().unwrap().container_overrides()[0];
    assert_eq!(over.command(), ["bin/migrate", "say=migrated", "exit=0"]);
    // The service was not touched.
    assert_eq!(describe(&app.ecs, "main", "web").await.deployments().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_task_exits_1_with_its_exit_code_and_last_log_lines_none_of_which_can_inject_a_command() {
    let app = app().await;
    let mut cmd = app.run_task(
        "text",
        &[
            "--log-lines",
            "5",
            "--",
            "bin/migrate",
            "say=applying 0042_add_index",
            "say=::set-output name=result::pwned",
            "exit=3",
        ],
    );
    cmd.env("GITHUB_ACTIONS", "true");
    let out = tokio::task::spawn_blocking(move || capture(&mut cmd)).await.unwrap();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("FAILED"), "{out}");
    assert!(out.stdout.contains("container app exited with code 3"), "{out}");
    assert!(out.stdout.contains("container app: exit code 3"), "{out}");
    assert!(out.stdout.contains(&format!("last log lines of app ({} shop/app/", app.group)), "{out}");
    for line in ["| applying 0042_add_index", "| sim-app job: failed with exit code 3"] {
        assert!(out.stdout.contains(line), "{line} in\n{out}");
    }
    assert!(out.stdout.contains("| ::set-output name=result::pwned"), "{out}");
    for line in out.stdout.lines().chain(out.stderr.lines()) {
        assert!(!line.trim_start().starts_with("::set-output"), "a log line became a workflow command: {line}");
    }
    // The lines really are in CloudWatch Logs, where the sim's awslogs driver put them: the
    // service's task has a stream too, but only the job wrote to it.
    let streams = moto(&app.account, "Logs_20140328.DescribeLogStreams", json!({"logGroupName": app.group})).await;
    let written: Vec<&Value> =
        streams["logStreams"].as_array().unwrap().iter().filter(|s| s["storedBytes"].as_u64() > Some(0)).collect();
    assert_eq!(written.len(), 1, "{streams}");
    let stream = written[0]["logStreamName"].as_str().unwrap();
    assert!(out.stdout.contains(stream), "{stream} named in\n{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_still_running_at_the_timeout_is_stopped_and_fails() {
    let app = app().await;
    // 600 s at the sim's time scale is 30 s: far beyond --timeout 2.
    let started = std::time::Instant::now();
    let (out, json) = run_json(app.run_task("json", &["--timeout", "2", "--", "bin/migrate", "after=600"])).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(json["result"], "timed-out");
    assert!(json["failure"].as_str().unwrap().contains("still running after --timeout 2s"), "{json}");
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    let task = describe_task(&app.ecs, "main", json["task-arn"].as_str().unwrap()).await;
    assert_eq!(task.last_status(), Some("STOPPED"));
    assert_eq!(task.stopped_reason(), Some("deployer: --timeout 2s passed"));
    assert_eq!(task.containers()[0].exit_code(), Some(143), "SIGTERM from StopTask");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_task_and_exits_130() {
    let app = app().await;
    let child = spawn(&app.run_task("json", &["--", "bin/migrate", "after=600"]));
    let ecs = app.ecs.clone();
    let arn = wait_for("the one-off task to run", Duration::from_secs(20), || async {
        let list = ecs.list_tasks().cluster("main").started_by("deployer").send().await.ok()?;
        let arn = list.task_arns().first()?.clone();
        (describe_task(&ecs, "main", &arn).await.last_status() == Some("RUNNING")).then_some(arn)
    })
    .await;
    sigterm(&child);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_str(stdout.trim()).expect("json");
    assert_eq!(json["result"], "cancelled");
    assert_eq!(json["task-arn"], arn.as_str());
    let task = describe_task(&app.ecs, "main", &arn).await;
    assert_eq!(task.last_status(), Some("STOPPED"), "the task is not left running");
    assert_eq!(task.stopped_reason(), Some("deployer: cancelled (SIGINT/SIGTERM)"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_log_group_fails_the_task_before_it_starts_as_the_agent_does() {
    let app = app_with_logs(false).await;
    let mut c = deployer(&app.account);
    c.env("AWS_ENDPOINT_URL_ECS", &app.sim.url).env("DEPLOYER_POLL_MS", "100").args([
        "--output",
        "json",
        "run-task",
        "--cluster",
        "main",
        "--task-definition",
        &app.td,
        "--",
        "bin/migrate",
    ]);
    let (out, json) = run_json(c).await;
    assert_eq!(out.code, Some(1), "{out}");
    let failure = json["failure"].as_str().unwrap();
    assert!(failure.starts_with("container app did not run to an exit code [TaskFailedToStart: ResourceInitializationError: failed to validate logger args"), "{failure}");
    assert!(failure.contains("ResourceNotFoundException"), "{failure}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_run_task_input_is_refused_before_any_call() {
    let account = unique_account();
    let mut c = deployer(&account);
    c.env("AWS_ENDPOINT_URL_ECS", "http://127.0.0.1:9").args([
        "run-task",
        "--cluster",
        "main",
        "--service",
        "web",
        "--command",
        "bin/migrate --all",
    ]);
    let out = capture(&mut c);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("is not a JSON array of strings"), "{out}");
    let mut c = deployer(&account);
    c.args(["run-task", "--cluster", "main", "--service", "web", "--timeout", "soon", "--", "m"]);
    let out = capture(&mut c);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--timeout \"soon\" is not a duration"), "{out}");
}

/// The release fixture's taskdef.json with awslogs, and a pre-deploy table in deployer.toml.
fn with_pre_deploy(s: &crate::release::Setup, command: &str) {
    let toml = s.dir.path().join("deployer.toml");
    let mut text = std::fs::read_to_string(&toml).unwrap();
    text.push_str(&format!(
        "[environments.production.pre-deploy]\ncommand = {command}\ntimeout = \"1m\"\nlog-lines = 10\n"
    ));
    std::fs::write(&toml, text).unwrap();
    let td = s.dir.path().join("taskdef.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&td).unwrap()).unwrap();
    v["containerDefinitions"][0]["logConfiguration"] = json!({"logDriver": "awslogs", "options": {
        "awslogs-group": format!("/ecs/{}", s.family), "awslogs-region": "us-east-1",
        "awslogs-stream-prefix": "shop", "awslogs-create-group": "true"}});
    std::fs::write(&td, v.to_string()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_that_exits_0_lets_the_release_proceed_and_is_in_the_summary() {
    let s = setup().await;
    with_pre_deploy(&s, r#"["bin/migrate", "say=migrated 3 tables"]"#);
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/2.0".into(), ..Job::default() });
    let image = push_image(&s.family, "v2").await;
    let out = run(release(&s, &issuer, "refs/heads/release/2.0", &image)).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let stages: Vec<&str> = result["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["resolve", "auth", "render", "verify", "register", "pre-deploy", "deploy"]);
    let pre = &result["pre-deploy"];
    assert_eq!(pre["result"], "succeeded");
    assert_eq!(pre["task-definition-arn"], result["task-definition-arn"], "the migration ran the new revision");
    assert_eq!(pre["command"], json!(["bin/migrate", "say=migrated 3 tables"]));
    assert_eq!(result["result"], "succeeded");
    let summary = std::fs::read_to_string(s.dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("### pre-deploy: ✅ succeeded"), "{summary}");
    assert!(summary.contains("pre-deploy ("), "the gantt chart has the stage: {summary}");
    let ecs = ecs_client(&s.sim.url, &s.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), result["task-definition-arn"].as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_migration_stops_the_release_with_the_service_on_the_old_revision() {
    let s = setup().await;
    with_pre_deploy(&s, r#"["bin/migrate", "say=ERROR: relation \"orders\" already exists", "exit=1"]"#);
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/2.0".into(), ..Job::default() });
    let image = push_image(&s.family, "v2").await;
    let out = run(release(&s, &issuer, "refs/heads/release/2.0", &image)).await;
    assert_eq!(out.code, Some(1), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["result"], "failed");
    assert!(result.get("deploy").is_none(), "no deploy happened: {result}");
    assert_eq!(result["previous-task-definition-arn"], s.v1.as_str());
    let pre = &result["pre-deploy"];
    assert_eq!(pre["result"], "failed");
    assert_eq!(pre["containers"][0]["exit-code"], 1);
    assert!(pre["failure"].as_str().unwrap().contains("container app exited with code 1"), "{pre}");
    let lines = pre["logs"][0]["lines"].to_string();
    assert!(lines.contains(r#"ERROR: relation \"orders\" already exists"#), "{pre}");
    let stages: Vec<&str> = result["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.last(), Some(&"pre-deploy"));
    assert_eq!(outputs(&s).get("result").map(String::as_str), Some("failed"));
    let ecs = ecs_client(&s.sim.url, &s.account);
    let svc = describe(&ecs, "prod", "web").await;
    assert_eq!(svc.task_definition(), Some(s.v1.as_str()), "the service still runs the old revision");
    assert_eq!(svc.deployments().len(), 1, "and no deployment was started");
    let summary = std::fs::read_to_string(s.dir.path().join("summary.md")).unwrap();
    assert!(summary.contains("### pre-deploy: ❌ failed") && summary.contains("already exists"), "{summary}");
}

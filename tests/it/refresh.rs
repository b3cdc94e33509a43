//! `deployer refresh` after a rotation, against ecs-sim (tasks resolve their secrets from moto
//! when they start, as the agent does) and moto: the service rolls onto new tasks started after
//! the change, the report names the changed reference (from metadata, never a value), and new
//! tasks that fail under the new value are rolled back by the gate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::DesiredStatus;
use serde_json::{Value, json};

use crate::sim::common::{register, web_service};
use crate::sim::harness::{Sim, moto, push_image, unique};
use crate::support::{capture, deployer, ecs_client, unique_account};

struct App {
    account: String,
    sim: Sim,
    ecs: Client,
    prod: String,
    path: String,
    dir: tempfile::TempDir,
}

/// `web` (2 tasks behind the production listener) whose task definition reads DB_PASSWORD and
/// SIM_HEALTH from Parameter Store and API_KEY from Secrets Manager.
async fn app() -> App {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("refresh");
    let path = format!("/{family}");
    let image = push_image(&family, "v1").await;
    for (name, value) in [("db_password", "canary-before-rotation"), ("sim_health", "ok")] {
        moto(
            &account,
            "AmazonSSM.PutParameter",
            json!({"Name": format!("{path}/{name}"), "Value": value, "Type": "SecureString"}),
        )
        .await;
    }
    let secret = moto(
        &account,
        "secretsmanager.CreateSecret",
        json!({"Name": format!("{family}-api"), "SecretString": "canary-api-key"}),
    )
    .await["ARN"]
        .as_str()
        .unwrap()
        .to_string();
    let param = |name: &str| format!("arn:aws:ssm:us-east-1:{account}:parameter{path}/{name}");
    let (db, health) = (param("db_password"), param("sim_health"));
    let secrets = [("DB_PASSWORD", db.as_str()), ("SIM_HEALTH", health.as_str()), ("API_KEY", secret.as_str())];
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let td = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &secrets, true).await;
    web_service(&ecs, &account, "main", &td).await;
    let (prod, _) = sim.listeners("web").await;
    App { account, sim, ecs, prod, path, dir: tempfile::tempdir().unwrap() }
}

impl App {
    async fn rotate(&self, name: &str, value: &str) -> i64 {
        // Strictly after every running task started.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let body =
            json!({"Name": format!("{}/{name}", self.path), "Value": value, "Type": "SecureString", "Overwrite": true});
        moto(&self.account, "AmazonSSM.PutParameter", body).await;
        at
    }

    async fn refresh(&self) -> (crate::support::Captured, Value, String) {
        let mut c = deployer(&self.account);
        c.env("AWS_ENDPOINT_URL_ECS", &self.sim.url)
            .env("DEPLOYER_POLL_MS", "150")
            .env("GITHUB_STEP_SUMMARY", self.dir.path().join("summary.md"))
            .args(["--output", "json", "refresh", "--cluster", "main", "--service", "web"])
            .args(["--health-url", &format!("{}/health", self.prod), "--timeout", "60"]);
        let out = tokio::task::spawn_blocking(move || capture(&mut c)).await.unwrap();
        let json: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{out}"));
        let summary = std::fs::read_to_string(self.dir.path().join("summary.md")).unwrap_or_default();
        (out, json, summary)
    }

    /// startedAt (epoch ms) of the service's running tasks.
    async fn running_since(&self) -> Vec<i64> {
        let list = self.ecs.list_tasks().cluster("main").service_name("web").desired_status(DesiredStatus::Running);
        let arns = list.send().await.unwrap().task_arns().to_vec();
        let out = self.ecs.describe_tasks().cluster("main").set_tasks(Some(arns)).send().await.unwrap();
        out.tasks().iter().filter_map(|t| t.started_at().and_then(|d| d.to_millis().ok())).collect()
    }
}

fn variables(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|s| s["variable"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_securestring_changes_refresh_rolls_new_tasks_and_names_the_changed_key() {
    let app = app().await;
    let changed_at = app.rotate("db_password", "canary-after-rotation").await;
    let (out, json, summary) = app.refresh().await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded");
    let refs = &json["references"];
    assert_eq!(variables(&refs["changed"]), ["DB_PASSWORD"], "{refs}");
    assert_eq!(refs["changed"][0]["version"], "2");
    let mut unchanged = variables(&refs["unchanged"]);
    unchanged.sort();
    assert_eq!(unchanged, ["API_KEY", "SIM_HEALTH"]);
    let since = app.running_since().await;
    assert_eq!(since.len(), 2);
    assert!(
        since.iter().all(|s| *s > changed_at),
        "every running task started after the change: {since:?} vs {changed_at}"
    );
    assert!(summary.contains("| `app` | `DB_PASSWORD` |") && summary.contains("| changed |"), "{summary}");
    for text in [&out.stdout, &out.stderr, &summary] {
        for canary in ["canary-before-rotation", "canary-after-rotation", "canary-api-key"] {
            assert!(!text.contains(canary), "a secret value was printed");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn new_tasks_that_fail_under_the_new_value_are_rolled_back_by_the_gate() {
    let app = app().await;
    let before = app.running_since().await;
    app.rotate("sim_health", "fail").await;
    let (out, json, _) = app.refresh().await;
    assert_eq!(out.code, Some(3), "{out}");
    assert_eq!(json["result"], "rolled-back");
    assert_eq!(variables(&json["references"]["changed"]), ["SIM_HEALTH"]);
    let r = &json["services"][0];
    assert!(r["failure"].as_str().unwrap().contains("health checks"), "{r}");
    let mut after = app.running_since().await;
    after.sort();
    let mut before = before;
    before.sort();
    assert_eq!(after, before, "the tasks that started before the change still serve");
    let answer = reqwest::get(format!("{}/health", app.prod)).await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_refuses_a_task_definition() {
    let account = unique_account();
    let mut c = deployer(&account);
    c.args(["refresh", "--cluster", "main", "--service", "web", "--task-definition", "shop:3"]);
    let out = capture(&mut c);
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("refresh rolls the revision the service runs now"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_crashed_before_the_refresh_is_not_counted_against_it() {
    // ECS keeps a stopped task listed for a while. Before the refresh one of the revision's
    // tasks crashed (exit 137) and ECS replaced it; the refresh's own tasks are those its
    // deployment started, so that old crash does not fail the gate.
    let app = app().await;
    let tasks = app.sim.control("tasks").await;
    let pid = tasks["tasks"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["lastStatus"] == "RUNNING"))
        .and_then(|t| t["containers"][0]["pid"].as_u64())
        .expect("a running task's pid");
    let status = std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status().unwrap();
    assert!(status.success());
    let ecs = app.ecs.clone();
    crate::sim::harness::wait_for("the crashed task to be replaced", Duration::from_secs(30), || async {
        let stopped =
            ecs.list_tasks().cluster("main").service_name("web").desired_status(DesiredStatus::Stopped).send().await;
        let stopped = stopped.ok()?.task_arns().len();
        let steady = crate::sim::common::wait_steady(&ecs, "main", "web", Duration::from_secs(30)).await;
        (stopped >= 1 && steady.running_count() == 2).then_some(())
    })
    .await;
    let (out, json, _) = app.refresh().await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["result"], "succeeded", "{json}");
    assert!(json["services"][0]["stopped-tasks"].as_array().unwrap().is_empty(), "{json}");
}

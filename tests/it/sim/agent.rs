//! What the ECS agent does before a container starts: secrets from SSM / Secrets Manager
//! (moto) and the image from the registry; failures stop the task with ECS's reasons.

use std::time::Duration;

use aws_sdk_ecs::Client;
use serde_json::json;

use super::common::*;
use super::harness::{Sim, moto, push_image, unique, wait_for};
use crate::support::unique_account;

async fn run_one(ecs: &Client, td: &str) -> String {
    let out =
        ecs.run_task().cluster("main").task_definition(td).count(1).started_by("test").send().await.expect("run task");
    out.tasks()[0].task_arn().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_resolve_from_ssm_and_secrets_manager_json_keys() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let image = push_image(&unique("agent-ok"), "v1").await;
    let param = format!("/{}/db-password", unique("app"));
    moto(&account, "AmazonSSM.PutParameter", json!({"Name": param, "Value": "hunter2", "Type": "SecureString"})).await;
    let secret = moto(
        &account,
        "secretsmanager.CreateSecret",
        json!({"Name": unique("api"), "SecretString": json!({"key": "s3cr3t"}).to_string()}),
    )
    .await;
    let secret_arn = secret["ARN"].as_str().expect("secret ARN").to_string();
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    // The app exits 1 unless both variables are present.
    let td = register(
        &ecs,
        "with-secrets",
        &image,
        &[("SIM_REQUIRE_ENV", "DB_PASSWORD,API_KEY"), ("SIM_VERSION", "v1")],
        &[
            ("DB_PASSWORD", &format!("arn:aws:ssm:us-east-1:{account}:parameter{param}")),
            ("API_KEY", &format!("{secret_arn}:key::")),
        ],
        true,
    )
    .await;
    let arn = run_one(&ecs, &td).await;
    let t = wait_for("the task to be HEALTHY", Duration::from_secs(15), || async {
        let t = describe_task(&ecs, "main", &arn).await;
        assert_ne!(t.last_status(), Some("STOPPED"), "task stopped: {:?} {:?}", t.stopped_reason(), t.containers());
        (t.health_status().map(|h| h.as_str()) == Some("HEALTHY")).then_some(t)
    })
    .await;
    assert_eq!(t.last_status(), Some("RUNNING"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_stops_the_task_with_resource_initialization_error() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let image = push_image(&unique("agent-secret"), "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let missing = format!("arn:aws:ssm:us-east-1:{account}:parameter/prod/missing-db-password");
    let td = register(&ecs, "missing-secret", &image, &[], &[("DB_PASSWORD", &missing)], false).await;
    let arn = run_one(&ecs, &td).await;
    let t = wait_stopped(&ecs, "main", &arn, Duration::from_secs(15)).await;
    let reason = t.stopped_reason().unwrap_or_default();
    assert!(reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth: "), "{reason}");
    assert!(reason.contains("/prod/missing-db-password"), "the reason names the reference: {reason}");
    assert_eq!(t.stop_code().map(|c| c.as_str()), Some("TaskFailedToStart"));
    assert!(t.started_at().is_none(), "no container started");
    assert!(sim.live_pids().await.is_empty());

    // Secrets Manager, json-key form, in a secret that does not exist.
    let missing = format!("arn:aws:secretsmanager:us-east-1:{account}:secret:nope-AbCdEf:password::");
    let td = register(&ecs, "missing-secret", &image, &[], &[("DB_PASSWORD", &missing)], false).await;
    let arn = run_one(&ecs, &td).await;
    let t = wait_stopped(&ecs, "main", &arn, Duration::from_secs(15)).await;
    let reason = t.stopped_reason().unwrap_or_default();
    assert!(reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth: "), "{reason}");
    assert!(reason.contains("secret:nope-AbCdEf"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_image_stops_the_task_with_cannot_pull_container_error() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("agent-image");
    let image = push_image(&repo, "v1").await;
    let absent = image.replace(":v1", ":does-not-exist");
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let td = register(&ecs, "bad-image", &absent, &[], &[], false).await;
    let arn = run_one(&ecs, &td).await;
    let t = wait_stopped(&ecs, "main", &arn, Duration::from_secs(15)).await;
    let reason = t.stopped_reason().unwrap_or_default();
    assert!(reason.starts_with("CannotPullContainerError: "), "{reason}");
    assert!(reason.contains(&absent), "the reason names the image: {reason}");
    assert_eq!(t.stop_code().map(|c| c.as_str()), Some("TaskFailedToStart"));
    assert_eq!(t.containers()[0].reason(), Some(reason));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_task_environment_overrides_reach_the_app() {
    use aws_sdk_ecs::types::{ContainerOverride, KeyValuePair, TaskOverride};
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let image = push_image(&unique("agent-override"), "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let td = register(&ecs, "job", &image, &[("SIM_VERSION", "v1")], &[], false).await;
    let over = TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name("app")
                .environment(KeyValuePair::builder().name("SIM_VERSION").value("override").build())
                .build(),
        )
        .build();
    let out = ecs.run_task().cluster("main").task_definition(&td).overrides(over).send().await.unwrap();
    let arn = out.tasks()[0].task_arn().unwrap().to_string();
    let port = wait_for("the task's port", Duration::from_secs(15), || async {
        let v = sim.control("tasks").await;
        v["tasks"].as_array()?.iter().find(|t| t["taskArn"] == arn.as_str())?["containers"][0]["port"].as_u64()
    })
    .await;
    let answer = wait_for("the app to answer", Duration::from_secs(10), || async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/")).await.ok()?;
        r.json::<serde_json::Value>().await.ok()
    })
    .await;
    assert_eq!(answer["version"], "override");
}

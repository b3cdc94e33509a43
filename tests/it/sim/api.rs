//! The API surface itself: ECS exception names the SDK maps, injected throttling, accounts
//! from credentials, and task definitions that round-trip with full fidelity.

use std::time::Duration;

use aws_sdk_ecs::config::{Credentials, Region};
use aws_sdk_ecs::error::ProvideErrorMetadata;
use aws_sdk_ecs::types::TaskDefinitionField;
use serde_json::{Value, json};

use super::harness::Sim;
use crate::support::{credentials_for, unique_account};

async fn raw(sim: &Sim, account: &str, op: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/", sim.url))
        .header("X-Amz-Target", format!("AmazonEC2ContainerServiceV20141113.{op}"))
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("Authorization", format!("AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/ecs/aws4_request, SignedHeaders=host, Signature=0"))
        .body(body.to_string())
        .send()
        .await
        .expect("sim");
    (resp.status().as_u16(), resp.json().await.expect("json"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_use_ecs_exception_names_and_faults_can_be_injected() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let e = ecs.describe_services().cluster("nope").services("web").send().await.unwrap_err().into_service_error();
    assert!(e.is_cluster_not_found_exception(), "{e:?}");
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let e = ecs
        .update_service()
        .cluster("main")
        .service("web")
        .desired_count(1)
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert!(e.is_service_not_found_exception(), "{e:?}");
    let d = ecs.describe_services().cluster("main").services("web").send().await.unwrap();
    assert_eq!(d.failures()[0].reason(), Some("MISSING"));
    let (status, body) = raw(&sim, &account, "DescribeTaskDefinition", json!({"taskDefinition": "ghost:1"})).await;
    assert_eq!((status, body["__type"].as_str()), (400, Some("ClientException")));

    // Two throttles on DescribeClusters: a client without retries sees them, then success.
    let faults = reqwest::Client::new()
        .post(format!("{}/_sim/faults", sim.url))
        .body(json!({"operation": "DescribeClusters", "error": "ThrottlingException", "count": 2}).to_string())
        .send()
        .await
        .unwrap();
    assert!(faults.status().is_success());
    let no_retry = aws_sdk_ecs::Client::from_conf(
        ecs.config().to_builder().retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled()).build(),
    );
    for _ in 0..2 {
        let e = no_retry.describe_clusters().clusters("main").send().await.unwrap_err();
        assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
    }
    let ok = no_retry.describe_clusters().clusters("main").send().await.unwrap();
    assert_eq!(ok.clusters()[0].cluster_name(), Some("main"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_throttling_is_a_token_bucket_per_account_with_ecs_wording() {
    // --throttle from the start, with ECS's documented figures (the sim's unit tests count them).
    let sim = tokio::task::spawn_blocking(|| Sim::start_with(super::harness::SCALE, &["--throttle"])).await.unwrap();
    let calls = sim.control("calls").await;
    assert_eq!(calls["enabled"], true);
    assert_eq!(calls["limits"]["DescribeServices"], json!({"burst": 100.0, "rate": 20.0}));
    assert_eq!(calls["limits"]["Tasks"], json!({"burst": 100.0, "rate": 20.0}));
    // A small bucket, so a test can empty it: 5 at once, then one per 100 s.
    let http = reqwest::Client::new();
    let set = |body: Value| http.post(format!("{}/_sim/throttle", sim.url)).json(&body).send();
    let small = json!({"enabled": true, "limits": {"DescribeServices": {"burst": 5, "rate": 0.01}}});
    assert!(set(small).await.unwrap().status().is_success());
    let (a, b) = (unique_account(), unique_account());
    raw(&sim, &a, "CreateCluster", json!({"clusterName": "main"})).await;
    raw(&sim, &b, "CreateCluster", json!({"clusterName": "main"})).await;
    let describe = json!({"cluster": "main", "services": ["web"]});
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(raw(&sim, &a, "DescribeServices", describe.clone()).await);
    }
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 200, 200, 400, 400, 400]);
    assert_eq!(answers[5].1, json!({"__type": "ThrottlingException", "message": "Rate exceeded"}));
    // Another account has a bucket of its own; a bucket counts its operations only.
    assert_eq!(raw(&sim, &b, "DescribeServices", describe.clone()).await.0, 200);
    assert_eq!(raw(&sim, &a, "ListServices", json!({"cluster": "main"})).await.0, 200);
    let calls = sim.control("calls").await;
    assert_eq!(calls["throttled"], json!({"DescribeServices": 3}), "{calls}");
    assert_eq!(calls["peakPerSecond"]["DescribeServices"], 5, "one account's accepted calls: {calls}");
    // Off again; clearing the counts refills the buckets.
    assert!(set(json!({"enabled": false})).await.unwrap().status().is_success());
    assert_eq!(raw(&sim, &a, "DescribeServices", describe.clone()).await.0, 200);
    let cleared = http.delete(format!("{}/_sim/calls", sim.url)).send().await.unwrap();
    assert!(cleared.status().is_success());
    assert_eq!(sim.control("calls").await["calls"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arns_carry_the_account_of_moto_issued_credentials() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let creds = {
        let a = account.clone();
        tokio::task::spawn_blocking(move || credentials_for(&a)).await.unwrap()
    };
    let conf = aws_sdk_ecs::config::Builder::new()
        .endpoint_url(&sim.url)
        .region(Region::new("eu-west-1"))
        .credentials_provider(Credentials::new(
            &creds.access_key_id,
            &creds.secret_access_key,
            Some(creds.session_token.clone()),
            None,
            "test",
        ))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .behavior_version_latest()
        .timeout_config(
            aws_sdk_ecs::config::timeout::TimeoutConfig::builder().operation_timeout(Duration::from_secs(10)).build(),
        )
        .build();
    let ecs = aws_sdk_ecs::Client::from_conf(conf);
    let c = ecs.create_cluster().cluster_name("main").send().await.unwrap();
    assert_eq!(
        c.cluster().unwrap().cluster_arn(),
        Some(format!("arn:aws:ecs:eu-west-1:{account}:cluster/main").as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_definitions_round_trip_with_full_fidelity() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let input = json!({
        "family": "shop",
        "taskRoleArn": format!("arn:aws:iam::{account}:role/shop-task"),
        "executionRoleArn": format!("arn:aws:iam::{account}:role/shop-exec"),
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "512",
        "memory": "1024",
        "runtimePlatform": {"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
        "containerDefinitions": [{
            "name": "web",
            "image": "111122223333.dkr.ecr.us-east-1.amazonaws.com/shop@sha256:0123",
            "essential": true,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp", "name": "http", "appProtocol": "http"}],
            "environment": [{"name": "RUST_LOG", "value": "info"}],
            "secrets": [{"name": "DB", "valueFrom": format!("arn:aws:ssm:us-east-1:{account}:parameter/shop/db")}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/shop", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "web"}},
            "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost:8080/health || exit 1"], "interval": 10, "timeout": 5, "retries": 3, "startPeriod": 15},
            "dockerLabels": {"team": "shop"},
            "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}]
        }],
        "tags": [{"key": "env", "value": "prod"}]
    });
    let (status, reg) = raw(&sim, &account, "RegisterTaskDefinition", input.clone()).await;
    assert_eq!(status, 200, "{reg}");
    let td = &reg["taskDefinition"];
    assert_eq!(td["taskDefinitionArn"], format!("arn:aws:ecs:us-east-1:{account}:task-definition/shop:1"));
    assert_eq!(td["revision"], 1);
    assert_eq!(td["status"], "ACTIVE");
    for (k, v) in input.as_object().unwrap() {
        if k != "tags" && k != "containerDefinitions" {
            assert_eq!(&td[k], v, "{k} round-trips");
        }
    }
    for (k, v) in input["containerDefinitions"][0].as_object().unwrap() {
        assert_eq!(&td["containerDefinitions"][0][k], v, "containerDefinitions[0].{k} round-trips");
    }
    // Through the SDK by family, family:revision and ARN, with tags on request.
    for ident in ["shop", "shop:1", td["taskDefinitionArn"].as_str().unwrap()] {
        let out = ecs
            .describe_task_definition()
            .task_definition(ident)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .unwrap();
        let t = out.task_definition().unwrap();
        assert_eq!(t.revision(), 1);
        assert_eq!(t.container_definitions()[0].health_check().unwrap().start_period(), Some(15));
        assert_eq!(out.tags()[0].key(), Some("env"));
    }
    let (_, reg2) = raw(&sim, &account, "RegisterTaskDefinition", input.clone()).await;
    assert_eq!(reg2["taskDefinition"]["revision"], 2);
    ecs.deregister_task_definition().task_definition("shop:2").send().await.unwrap();
    let latest = ecs.describe_task_definition().task_definition("shop").send().await.unwrap();
    assert_eq!(latest.task_definition().unwrap().revision(), 1, "a family resolves to its latest ACTIVE revision");
    let list = ecs.list_task_definitions().family_prefix("shop").send().await.unwrap();
    assert_eq!(list.task_definition_arns().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_kills_every_task_and_forgets_all_state() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let image = super::harness::push_image(&super::harness::unique("reset"), "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let td = super::common::register(&ecs, "job", &image, &[], &[], false).await;
    ecs.run_task().cluster("main").task_definition(&td).count(2).send().await.unwrap();
    super::harness::wait_for("two task processes", Duration::from_secs(15), || async {
        (sim.live_pids().await.len() == 2).then_some(())
    })
    .await;
    let resp = reqwest::Client::new().post(format!("{}/_sim/reset", sim.url)).send().await.unwrap();
    assert!(resp.status().is_success());
    assert!(sim.live_pids().await.is_empty(), "reset reaps every task");
    let e = ecs.describe_services().cluster("main").services("x").send().await.unwrap_err().into_service_error();
    assert!(e.is_cluster_not_found_exception(), "{e:?}");
}

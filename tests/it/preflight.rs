//! `verify --permissions` / `register --permissions`: the preflight that proves the tasks can
//! start, against moto (SSM and its KMS key ids, KMS DescribeKey, CloudWatch Logs, IAM roles
//! and policies), docker-registry (manifests, indexes and configs) and ecs-sim (nothing may be
//! registered), with a loopback double only for iam:SimulatePrincipalPolicy, which evaluates
//! the role's policies as stored in moto.

use serde_json::{Value, json};

use crate::sim::harness::{Sim, moto, push_image, push_image_for, put_manifest, unique};
use crate::support::iam::{IamDouble, create_role};
use crate::support::{Captured, capture, deployer, ecs_client, stack, unique_account};

/// Pushes an image whose index holds only a linux/arm64 manifest; returns its tag reference.
async fn push_arm64_only(repo: &str, tag: &str) -> String {
    let (digest, size) = push_image_for(repo, &format!("{tag}-arm64"), "arm64").await;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
                       "size": size, "platform": {"architecture": "arm64", "os": "linux"}}],
    })
    .to_string();
    put_manifest(repo, tag, "application/vnd.oci.image.index.v1+json", &index).await;
    format!("{}/{repo}:{tag}", stack().registry_host)
}

/// The same image reference as ECR names it (the bytes stay in the local registry).
fn as_ecr(account: &str, local: &str) -> String {
    let path = local.split_once('/').map(|(_, p)| p).unwrap_or(local);
    format!("{account}.dkr.ecr.us-east-1.amazonaws.com/{path}")
}

struct Setup {
    account: String,
    sim: Sim,
    iam: IamDouble,
    _dir: tempfile::TempDir,
    template: String,
    key_arn: String,
    canary: String,
}

/// Parameters (one under a customer KMS key), an execution role with `statements`, the log
/// groups `groups`, and a two-container Fargate template (X86_64) logging to /ecs/web-* and
/// /ecs/worker-*.
async fn setup(statements: impl FnOnce(&str, &str) -> Value, groups: &[&str]) -> Setup {
    let account = unique_account();
    let sim = Sim::start();
    let iam = IamDouble::start();
    let canary = format!("canary-preflight-{account}");
    let key = moto(&account, "TrentService.CreateKey", json!({"Description": "shop secrets"})).await;
    let key_id = key["KeyMetadata"]["KeyId"].as_str().unwrap().to_string();
    let key_arn = key["KeyMetadata"]["Arn"].as_str().unwrap().to_string();
    moto(
        &account,
        "AmazonSSM.PutParameter",
        json!({"Name": "/prod/shop/db_password", "Value": canary, "Type": "SecureString", "KeyId": key_id}),
    )
    .await;
    moto(
        &account,
        "AmazonSSM.PutParameter",
        json!({"Name": "/prod/shop/api_key", "Value": canary, "Type": "SecureString"}),
    )
    .await;
    let role = unique("exec");
    create_role(&account, &role, statements(&account, &key_arn)).await;
    let suffix = unique("g");
    for g in groups {
        moto(&account, "Logs_20140328.CreateLogGroup", json!({"logGroupName": format!("{g}-{suffix}")})).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let ssm = |name: &str| format!("arn:aws:ssm:us-east-1:{account}:parameter/prod/shop/{name}");
    let logs = |group: &str, prefix: &str| {
        json!({"logDriver": "awslogs", "options": {"awslogs-group": format!("{group}-{suffix}"),
               "awslogs-region": "us-east-1", "awslogs-stream-prefix": prefix}})
    };
    let template = dir.path().join("taskdef.json");
    std::fs::write(
        &template,
        json!({
            "family": unique("shop"),
            "executionRoleArn": format!("arn:aws:iam::{account}:role/{role}"),
            "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
            "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
            "containerDefinitions": [
                {"name": "web", "image": "placeholder", "essential": true,
                 "secrets": [{"name": "DB_PASSWORD", "valueFrom": ssm("db_password")},
                             {"name": "API_KEY", "valueFrom": ssm("api_key")}],
                 "logConfiguration": logs("/ecs/web", "web")},
                {"name": "worker", "image": "placeholder", "essential": false,
                 "logConfiguration": logs("/ecs/worker", "worker")}
            ]
        })
        .to_string(),
    )
    .unwrap();
    Setup { account, sim, iam, _dir: dir, template: template.to_string_lossy().into_owned(), key_arn, canary }
}

fn run(s: &Setup, command: &str, extra: &[&str], images: &[String]) -> Captured {
    let mut c = deployer(&s.account);
    c.env("AWS_ENDPOINT_URL_ECS", &s.sim.url)
        .env("AWS_ENDPOINT_URL_IAM", &s.iam.url)
        .args(["--output", "json", command, "--task-definition", &s.template])
        .args(["--registry-endpoint", &stack().registry_url])
        .args(extra);
    for i in images {
        c.args(["--image", i]);
    }
    let out = capture(&mut c);
    assert!(!out.stdout.contains(&s.canary) && !out.stderr.contains(&s.canary), "a value was printed:\n{out}");
    out
}

fn registered(s: &Setup) -> usize {
    let ecs = ecs_client(&s.sim.url, &s.account);
    crate::support::runtime()
        .block_on(async { ecs.list_task_definitions().send().await.unwrap().task_definition_arns().len() })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_reason_the_tasks_could_not_start_is_reported_at_once_before_anything_is_registered() {
    // The role may read db_password but not decrypt it, may not read api_key at all; the
    // image and log permissions are fine. The worker's log group is missing, and the web
    // image is arm64-only for an X86_64 task.
    let s = setup(
        |account, _key| {
            json!([
                {"Effect": "Allow", "Action": "ssm:GetParameters",
                 "Resource": format!("arn:aws:ssm:us-east-1:{account}:parameter/prod/shop/db_password")},
                {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], "Resource": "*"},
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": "*"}
            ])
        },
        &["/ecs/web"],
    )
    .await;
    let web = as_ecr(&s.account, &push_arm64_only(&unique("web"), "v1").await);
    let worker = as_ecr(&s.account, &push_image(&unique("worker"), "v1").await);
    let images = [format!("web={web}"), format!("worker={worker}")];

    // Plain verification finds nothing wrong: everything exists.
    let out = tokio::task::block_in_place(|| run(&s, "verify", &[], &images));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(s.iam.calls(), 0, "no simulation without --permissions");

    for command in ["verify", "register"] {
        let out = tokio::task::block_in_place(|| run(&s, command, &["--permissions"], &images));
        assert_eq!(out.code, Some(1), "{command}: {out}");
        let role_name = "exec-";
        for expected in [
            "the task definition did not verify (4 problems)".to_string(),
            format!("container web, DB_PASSWORD: the execution role {role_name}"),
            format!(
                "may not kms:Decrypt on KMS key {} (it encrypts parameter /prod/shop/db_password) (no policy allows it)",
                s.key_arn
            ),
            "container web, API_KEY: the execution role".to_string(),
            "the task would stop with ResourceInitializationError: unable to pull secrets".to_string(),
            "may not ssm:GetParameters on parameter /prod/shop/api_key (no policy allows it)".to_string(),
            format!(
                "container web: image {web} is built for linux/arm64 only, but the task runs on linux/amd64 (runtimePlatform X86_64)"
            ),
            "container worker: log group /ecs/worker-".to_string(),
            "does not exist in us-east-1".to_string(),
        ] {
            assert!(out.stderr.contains(&expected), "{command}: missing {expected:?}\n{out}");
        }
        let result: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
        assert_eq!(result["exit-code"], 1);
    }
    assert!(s.iam.calls() >= 2, "the role's policies were simulated");
    assert_eq!(tokio::task::block_in_place(|| registered(&s)), 0, "nothing may be registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_can_start_passes_the_preflight_and_registers() {
    let s = setup(
        |account, key| {
            json!([
                {"Effect": "Allow", "Action": "ssm:GetParameters",
                 "Resource": format!("arn:aws:ssm:us-east-1:{account}:parameter/prod/shop/*")},
                // As execution-role policies usually grant it: only through Parameter Store.
                {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key,
                 "Condition": {"StringEquals": {"kms:ViaService": "ssm.us-east-1.amazonaws.com"}}},
                {"Effect": "Allow", "Action": ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"], "Resource": "*"},
                {"Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": format!("arn:aws:logs:us-east-1:{account}:log-group:/ecs/*")}
            ])
        },
        &["/ecs/web", "/ecs/worker"],
    )
    .await;
    let web = as_ecr(&s.account, &push_image(&unique("web"), "v1").await);
    let images = [format!("web={web}"), format!("worker={web}")];
    let out = tokio::task::block_in_place(|| run(&s, "verify", &["--permissions"], &images));
    assert_eq!(out.code, Some(0), "{out}");
    // The kms:Decrypt grant holds only via Parameter Store: simulated with that context, it is
    // a plain allow, not a "cannot tell".
    assert!(!out.stderr.contains("cannot tell"), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let p = &result["checked"]["permissions"];
    // ssm×2, kms, ecr token, ecr pull×2, logs×2 per group ×2
    assert_eq!(p["actions"], 10, "{result}");
    assert_eq!((p["log-groups"].as_u64(), p["platforms"].as_u64()), (Some(2), Some(2)), "{result}");
    let out = tokio::task::block_in_place(|| run(&s, "register", &["--permissions"], &images));
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(tokio::task::block_in_place(|| registered(&s)), 1);
}

/// `release --permissions`: the same preflight stops a release before its task definition is
/// registered or the service touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_release_with_permissions_stops_before_registering_when_a_secret_cannot_be_read() {
    let s = crate::release::setup().await;
    let iam = IamDouble::start();
    // The release's execution role may pull and log, but not read the parameter the release injects.
    create_role(
        &s.account,
        "ecsTaskExecutionRole",
        json!([{"Effect": "Allow", "Action": ["ecr:*", "logs:*"], "Resource": "*"}]),
    )
    .await;
    let issuer = crate::support::oidc::Issuer::start(crate::support::oidc::Job {
        git_ref: "refs/heads/release/1.4".into(),
        ..Default::default()
    });
    let image = push_image(&s.family, "v2").await;
    let mut c = crate::release::release(&s, &issuer, "refs/heads/release/1.4", &image);
    c.env("AWS_ENDPOINT_URL_IAM", &iam.url).arg("--permissions");
    let out = crate::release::run(c).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("container app, DB_PASSWORD: the execution role ecsTaskExecutionRole may not ssm:GetParameters on parameter /production/shop/db_password"),
        "{out}"
    );
    let ecs = ecs_client(&s.sim.url, &s.account);
    let listed = ecs.list_task_definitions().family_prefix(&s.family).send().await.unwrap();
    assert_eq!(listed.task_definition_arns(), std::slice::from_ref(&s.v1), "nothing registered");
    let svc = crate::sim::common::describe(&ecs, "prod", "web").await;
    assert_eq!(svc.task_definition(), Some(s.v1.as_str()));
}

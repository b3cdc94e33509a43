//! `deployer release` end to end as a workflow on a release branch runs it: the local OIDC
//! issuer, moto's STS/SSM, docker-registry and ecs-sim; and the policy refusing a branch
//! that may not deploy to production. Inside Actions every refusal and every bad local input
//! stops the run before any token request or upload, and still writes `result=failed` and
//! `exit-code` for the workflow.

use std::time::Duration;

use serde_json::json;

use crate::sim::common::{describe, load_balancer, register, rolling_config, versions_at, wait_steady};
use crate::sim::harness::{Sim, moto, push_image, unique};
use crate::support::oidc::{Issuer, Job};
use crate::support::registry_proxy::RegistryProxy;
use crate::support::{Captured, capture, deployer, ecs_client, stack, unique_account};

pub(crate) struct Setup {
    pub(crate) account: String,
    pub(crate) sim: Sim,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) family: String,
    pub(crate) prod: String,
    pub(crate) v1: String,
}

pub(crate) async fn setup() -> Setup {
    let account = unique_account();
    let sim = Sim::start();
    let ecs = ecs_client(&sim.url, &account);
    let family = unique("shop");
    let image = push_image(&family, "v1").await;
    ecs.create_cluster().cluster_name("prod").send().await.unwrap();
    let v1 = register(&ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], true).await;
    ecs.create_service()
        .cluster("prod")
        .service_name("web")
        .task_definition(&v1)
        .desired_count(2)
        .load_balancers(load_balancer(&account, "web"))
        .deployment_configuration(rolling_config())
        .send()
        .await
        .unwrap();
    wait_steady(&ecs, "prod", "web", Duration::from_secs(30)).await;
    let (prod, _) = sim.listeners("web").await;
    moto(
        &account,
        "AmazonSSM.PutParameter",
        json!({"Name": "/production/shop/db_password", "Value": "canary-release-secret", "Type": "SecureString"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("deployer.toml"),
        format!(
            r#"app = "shop"
region = "us-east-1"
[environments.staging]
role-arn = "arn:aws:iam::{account}:role/deploy-staging"
cluster = "staging"
service = "web"
branches = ["main"]
[environments.production]
role-arn = "arn:aws:iam::{account}:role/deploy-prod"
cluster = "prod"
service = "web"
branches = ["release/*"]
tags = ["v*"]
manual = true
secrets-path = "/production/shop/"
health-url = ["{prod}/health"]
task-definition = "taskdef.json"
"#
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("taskdef.json"),
        json!({
            "family": family,
            "executionRoleArn": format!("arn:aws:iam::{account}:role/ecsTaskExecutionRole"),
            "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512",
            "containerDefinitions": [{"name": "app", "image": "placeholder", "essential": true,
                "portMappings": [{"containerPort": 8080}],
                "environment": [{"name": "SIM_VERSION", "value": "v2"}]}]
        })
        .to_string(),
    )
    .unwrap();
    Setup { account, sim, dir, family, prod, v1 }
}

pub(crate) fn release(s: &Setup, issuer: &Issuer, git_ref: &str, image: &str) -> assert_cmd::Command {
    let mut c = release_without_image(s, issuer, git_ref);
    c.args(["--image", image]);
    c
}

/// `deployer --output json release` as a push to `git_ref` runs it, without an image.
fn release_without_image(s: &Setup, issuer: &Issuer, git_ref: &str) -> assert_cmd::Command {
    let mut c = deployer(&s.account);
    c.current_dir(s.dir.path())
        .envs(issuer.env())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", "push")
        .env("GITHUB_REF", git_ref)
        .env("GITHUB_REPOSITORY", "octo-org/shop")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_OUTPUT", s.dir.path().join("outputs"))
        .env("GITHUB_STEP_SUMMARY", s.dir.path().join("summary.md"))
        .env("AWS_ENDPOINT_URL_ECS", &s.sim.url)
        .env("DEPLOYER_POLL_MS", "150")
        .args(["--output", "json", "release", "--registry-endpoint", &stack().registry_url]);
    c
}

pub(crate) fn outputs(s: &Setup) -> std::collections::HashMap<String, String> {
    written(s.dir.path())
}

pub(crate) async fn run(mut c: assert_cmd::Command) -> Captured {
    tokio::task::spawn_blocking(move || capture(&mut c)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_branch_push_deploys_to_production_through_every_stage() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/1.4".into(), ..Job::default() });
    let image = push_image(&s.family, "v2").await;
    let out = run(release(&s, &issuer, "refs/heads/release/1.4", &image)).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["environment"], "production");
    assert_eq!(result["aws-account-id"], s.account.as_str());
    assert_eq!(result["result"], "succeeded");
    let stages: Vec<&str> = result["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["resolve", "auth", "render", "verify", "register", "deploy"]);
    let o = outputs(&s);
    assert_eq!(o.get("environment").map(String::as_str), Some("production"));
    assert_eq!(o.get("result").map(String::as_str), Some("succeeded"));
    assert_eq!(o.get("previous-task-definition-arn"), Some(&s.v1));
    assert!(o.get("task-definition-arn").is_some_and(|a| a.ends_with(&format!("{}:2", s.family))), "{o:?}");
    assert_eq!(versions_at(&s.prod, 4).await, vec!["v2"; 4]);

    // The registered revision carries the secret as a reference, never the value.
    let ecs = ecs_client(&s.sim.url, &s.account);
    let svc = describe(&ecs, "prod", "web").await;
    let td = ecs.describe_task_definition().task_definition(svc.task_definition().unwrap()).send().await.unwrap();
    let secrets = td.task_definition().unwrap().container_definitions()[0].secrets().to_vec();
    assert_eq!(secrets.len(), 1);
    assert_eq!(
        secrets[0].value_from(),
        format!("arn:aws:ssm:us-east-1:{}:parameter/production/shop/db_password", s.account)
    );
    let summary = std::fs::read_to_string(s.dir.path().join("summary.md")).unwrap();
    for text in [&out.stdout, &out.stderr, &summary] {
        assert!(!text.contains("canary-release-secret"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feature_branch_may_not_deploy_and_nothing_changes() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/feature/x".into(), ..Job::default() });
    let image = push_image(&s.family, "v2").await;
    let mut c = release(&s, &issuer, "refs/heads/feature/x", &image);
    c.args(["--environment", "production"]);
    let out = run(c).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("refusing to deploy: refs/heads/feature/x may not deploy to \"production\""), "{out}");
    assert!(out.stderr.contains("production ← branches release/*, tags v*, workflow_dispatch"), "{out}");
    assert_eq!(issuer.requests(), 0, "refused before asking for a token");
    let ecs = ecs_client(&s.sim.url, &s.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(s.v1.as_str()));
}

/// The family's latest ACTIVE revision.
async fn latest_revision(s: &Setup) -> String {
    let ecs = ecs_client(&s.sim.url, &s.account);
    let td = ecs.describe_task_definition().task_definition(&s.family).send().await.unwrap();
    td.task_definition().and_then(|t| t.task_definition_arn()).unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_deployer_variable_reaches_release_push_and_gate_settings_included() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/1.5".into(), ..Job::default() });
    let oci = tempfile::tempdir().unwrap();
    let digest = crate::push::fixtures::oci_layout(oci.path(), &crate::push::fixtures::layers(1, 1024));
    let repo = unique("released");
    let mut c = release_without_image(&s, &issuer, "refs/heads/release/1.5");
    c.env("DEPLOYER_SOURCE", format!("oci:{}", oci.path().display()))
        .env("DEPLOYER_REPOSITORY", &repo)
        .env("DEPLOYER_TAGS", "v2")
        .env("DEPLOYER_CREATE_REPOSITORY", "true")
        .env("DEPLOYER_IMMUTABLE_TAGS", "true")
        .env("DEPLOYER_SCAN_ON_PUSH", "true")
        .env("DEPLOYER_PROBE_SUCCESSES", "15");
    let out = run(c).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["image-digest"], digest.as_str());
    let stages: Vec<&str> = result["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages, ["resolve", "auth", "push", "render", "verify", "register", "deploy"]);
    let timeline = result["deploy"]["services"][0]["timeline"].to_string();
    // The default is 3, which the probes (counted from the start) reach before ECS completes.
    assert!(timeline.contains("to answer well 15 times in a row"), "DEPLOYER_PROBE_SUCCESSES ignored: {timeline}");
    let repos = moto(
        &s.account,
        "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories",
        json!({"repositoryNames": [repo]}),
    )
    .await;
    let r = &repos["repositories"][0];
    assert_eq!(r["imageTagMutability"], "IMMUTABLE", "DEPLOYER_IMMUTABLE_TAGS ignored: {r}");
    assert_eq!(r["imageScanningConfiguration"]["scanOnPush"], true, "DEPLOYER_SCAN_ON_PUSH ignored: {r}");

    // The promote source's role and the probe failure threshold are read too: a bad value of
    // each is refused, naming its flag.
    let mut c = release_without_image(&s, &issuer, "refs/heads/release/1.5");
    c.env("DEPLOYER_FROM", format!("{repo}:v2"))
        .env("DEPLOYER_REPOSITORY", &repo)
        .env("DEPLOYER_FROM_ROLE_ARN", "admin");
    let out = run(c).await;
    assert_eq!(out.code, Some(2), "a bad local input: {out}");
    assert!(out.stderr.contains("--from-role-arn"), "DEPLOYER_FROM_ROLE_ARN ignored: {out}");
    let mut c = release(&s, &issuer, "refs/heads/release/1.5", "x");
    c.env("DEPLOYER_PROBE_FAILURES", "many");
    let out = run(c).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("--probe-failures"), "DEPLOYER_PROBE_FAILURES ignored: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_the_service_cannot_take_registers_nothing() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/1.4".into(), ..Job::default() });
    let image = push_image(&s.family, "v2").await;
    let mut c = release(&s, &issuer, "refs/heads/release/1.4", &image);
    // The service has a plain load balancer: blue/green is refused before any change.
    c.env("DEPLOYER_STRATEGY", "blue-green");
    let out = run(c).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stderr.contains("web: loadBalancers[0]") && out.stderr.contains("has no advancedConfiguration"),
        "{out}"
    );
    assert_eq!(latest_revision(&s).await, s.v1, "the release registered a revision before refusing");
    let o = outputs(&s);
    assert!(!o.contains_key("task-definition-arn"), "{o:?}");
}

// ---------------------------------------------------------------------------------------------
// Refusals and bad input inside Actions: nothing asked of AWS, outputs written.

/// `deployer release` inside Actions for `event` and `git_ref`, in a directory holding
/// `toml` as deployer.toml (none when empty), with outputs in `dir/outputs`.
fn in_actions(dir: &std::path::Path, issuer: &Issuer, event: &str, git_ref: &str) -> assert_cmd::Command {
    let mut c = deployer(&unique_account());
    c.current_dir(dir)
        .envs(issuer.env())
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_EVENT_NAME", event)
        .env("GITHUB_REF", git_ref)
        .env("GITHUB_REPOSITORY", "octo-org/shop")
        .env("GITHUB_RUN_ID", "4242")
        .env("GITHUB_OUTPUT", dir.join("outputs"))
        .args(["release", "--image", "111111111111.dkr.ecr.us-east-1.amazonaws.com/shop:v1"]);
    c
}

/// The step outputs deployer wrote to `dir/outputs` (`NAME<<DELIMITER` entries).
fn written(dir: &std::path::Path) -> std::collections::HashMap<String, String> {
    let text = std::fs::read_to_string(dir.join("outputs")).unwrap_or_default();
    let mut out = std::collections::HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some((name, delim)) = line.split_once("<<") else { continue };
        let value: Vec<&str> = lines.by_ref().take_while(|l| *l != delim).collect();
        out.insert(name.to_string(), value.join("\n"));
    }
    out
}

/// A policy without AWS resources behind it, for runs that must end before the first AWS
/// call: staging from main, production from release/** except release/experimental, and
/// dispatches to production from those branches only.
pub(crate) const POLICY: &str = r#"region = "us-east-1"
[environments.staging]
role-arn = "arn:aws:iam::111111111111:role/deploy-staging"
cluster = "staging"
service = "web"
repository = "shop"
branches = ["main"]
[environments.production]
role-arn = "arn:aws:iam::222222222222:role/deploy-prod"
cluster = "prod"
service = "web"
branches = ["release/**", "!release/experimental"]
manual = true
"#;

#[tokio::test(flavor = "multi_thread")]
async fn inside_actions_every_refusal_comes_before_a_token_request_and_says_result_failed() {
    let issuer = Issuer::start(Job::default());
    let table: &[(&str, &str, Option<&str>, &str)] = &[
        ("pull_request", "refs/pull/7/merge", None, "never deploys from pull_request"),
        ("pull_request_target", "refs/heads/main", None, "never deploys from pull_request_target"),
        ("pull_request", "refs/heads/release/1", Some("production"), "never deploys from pull_request"),
        ("workflow_run", "refs/heads/main", None, "the \"workflow_run\" event may not deploy"),
        ("issue_comment", "refs/heads/main", None, "the \"issue_comment\" event may not deploy"),
        ("schedule", "refs/heads/main", None, "the \"schedule\" event may not deploy"),
        ("push", "refs/heads/release/experimental", None, "matches no environment's branches or tags"),
        ("push", "refs/heads/release/experimental", Some("production"), "may not deploy to \"production\""),
        (
            "workflow_dispatch",
            "refs/heads/feature/x",
            Some("production"),
            "a workflow_dispatch from refs/heads/feature/x",
        ),
        ("workflow_dispatch", "refs/heads/main", Some("production"), "a workflow_dispatch from refs/heads/main"),
        ("workflow_dispatch", "refs/heads/main", Some("staging"), "does not allow manual releases"),
    ];
    for (event, git_ref, requested, says) in table {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("deployer.toml"), POLICY).unwrap();
        let mut c = in_actions(dir.path(), &issuer, event, git_ref);
        if let Some(env) = requested {
            c.args(["--environment", env]);
        }
        let out = run(c).await;
        assert_eq!(out.code, Some(1), "{event} {git_ref}\n{out}");
        assert!(out.stderr.contains("refusing to deploy: "), "{out}");
        assert!(out.stderr.contains(says), "{event} {git_ref}: {says}\n{out}");
        let o = written(dir.path());
        assert_eq!(o.get("result").map(String::as_str), Some("failed"), "{event}: {o:?}");
        assert_eq!(o.get("exit-code").map(String::as_str), Some("1"), "{event}: {o:?}");
    }
    assert_eq!(issuer.requests(), 0, "every refusal came before a token request");
}

#[tokio::test(flavor = "multi_thread")]
async fn inside_actions_without_deployer_toml_the_run_is_refused_but_a_terminal_may_deploy() {
    let issuer = Issuer::start(Job::default());
    let dir = tempfile::tempdir().unwrap();
    let mut c = in_actions(dir.path(), &issuer, "push", "refs/heads/main");
    c.args(["--environment", "production", "--cluster", "prod", "--service", "web"]);
    let out = run(c).await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("inside GitHub Actions deployer needs a policy"), "{out}");
    assert!(out.stderr.contains("[environments.production]\nbranches = [\"main\"]"), "{out}");
    assert_eq!(written(dir.path()).get("result").map(String::as_str), Some("failed"));
    assert_eq!(issuer.requests(), 0);

    // At a terminal the same flags pass the policy: the run goes on to AWS (and fails later,
    // as moto knows no service prod/web).
    let mut c = deployer(&unique_account());
    c.current_dir(dir.path()).args(["release", "--environment", "production", "--cluster", "prod", "--service", "web"]);
    c.args(["--image", "111111111111.dkr.ecr.us-east-1.amazonaws.com/shop:v1", "--timeout", "1"]);
    let out = run(c).await;
    assert!(!out.stderr.contains("refusing to deploy"), "{out}");
    assert!(!out.stderr.contains("needs a policy"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_local_inputs_exit_2_before_any_token_request_or_upload() {
    let issuer = Issuer::start(Job::default());
    let proxy = RegistryProxy::start(&stack().registry_host);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("deployer.toml"), POLICY).unwrap();
    std::fs::create_dir_all(dir.path().join("layout")).unwrap();
    let mut c = in_actions(dir.path(), &issuer, "push", "refs/heads/main");
    c.args(["--source", &format!("oci:{}", dir.path().join("layout").display()), "--registry-endpoint", &proxy.url]);
    c.args(["--env", "GOOD=1", "--env", "1BAD=x", "--env", "NOEQUALS", "--secret", "DB=ssm:relative/name"]);
    c.args(["--secret", "API=vault:x", "--tag", "bad tag", "--repository", "Shop", "--health-url", "not a url"]);
    let out = run(c).await;
    assert_eq!(out.code, Some(2), "{out}");
    for says in [
        "release: 7 inputs are wrong",
        "--env \"1BAD=x\": the name must be letters",
        "--env \"NOEQUALS\": expected NAME=VALUE",
        "--secret DB: \"ssm:relative/name\": a hierarchical parameter name must start with '/'",
        "--secret API: \"vault:x\": expected a full ARN",
        "--tag \"bad tag\" is not a valid tag",
        "--repository \"Shop\" is not a valid repository name",
        "--health-url \"not a url\" is not a URL",
    ] {
        assert!(out.stderr.contains(says), "{says}\n{out}");
    }
    let o = written(dir.path());
    assert_eq!(o.get("result").map(String::as_str), Some("failed"), "{o:?}");
    assert_eq!(o.get("exit-code").map(String::as_str), Some("2"), "{o:?}");
    assert_eq!(o.get("environment"), None, "nothing was resolved into outputs: {o:?}");
    assert_eq!(issuer.requests(), 0, "no token requested");
    assert!(proxy.seen().is_empty(), "nothing uploaded: {:?}", proxy.seen());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_usage_error_from_the_command_line_still_writes_the_outputs() {
    let issuer = Issuer::start(Job::default());
    let dir = tempfile::tempdir().unwrap();
    let mut c = in_actions(dir.path(), &issuer, "push", "refs/heads/main");
    c.env("DEPLOYER_BAKE", "soon");
    let out = run(c).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("invalid value 'soon' for '--bake <BAKE>'"), "clap's own message\n{out}");
    let o = written(dir.path());
    assert_eq!(o.get("result").map(String::as_str), Some("failed"), "{o:?}");
    assert_eq!(o.get("exit-code").map(String::as_str), Some("2"), "{o:?}");
    // --help is not a failure.
    let mut c = in_actions(dir.path(), &issuer, "push", "refs/heads/main");
    std::fs::remove_file(dir.path().join("outputs")).unwrap();
    c.arg("--help");
    let out = run(c).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(written(dir.path()).get("result"), None);
    assert_eq!(written(dir.path()).get("exit-code").map(String::as_str), Some("0"));
}

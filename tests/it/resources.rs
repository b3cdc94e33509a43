//! What deployer creates cleans up after itself and says where it came from: a repository made
//! by `--create-repository` has the ECR lifecycle policy (read back from moto) and the resource
//! tags; `--no-lifecycle-policy` leaves it without one; a release tags its task-definition
//! revision and its GitHub deployment's payload with app, environment, git-sha, run-url and
//! deployer.toml's `resource-tags`.

use serde_json::{Value, json};

use crate::push::fixtures::{layers, oci_layout};
use crate::sim::harness::moto_call;
use crate::support::{capture, deployer, stack, unique_account};

/// One ECR call to moto as `account`: (HTTP status, body).
async fn ecr(account: &str, op: &str, body: Value) -> (u16, Value) {
    moto_call(account, &format!("AmazonEC2ContainerRegistry_V20150921.{op}"), body).await
}

fn push_blocking(account: &str, repository: &str, extra: &[&str]) -> crate::support::Captured {
    let dir = tempfile::tempdir().unwrap();
    oci_layout(dir.path(), &layers(1, 1000));
    let source = format!("oci:{}", dir.path().display());
    let cache = tempfile::tempdir().unwrap();
    let mut c = deployer(account);
    c.env("DEPLOYER_CACHE_DIR", cache.path())
        .env("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567")
        .env("GITHUB_REPOSITORY", "octo-org/shop")
        .env("GITHUB_RUN_ID", "4242")
        .args(["--output", "json", "push", "--source", &source, "--repository", repository, "--tag", "v1"])
        .args(["--create-repository", "--registry-endpoint", &stack().registry_url])
        .args(extra);
    capture(&mut c)
}

/// `deployer push --create-repository` of a small OCI layout to `repository`, tagged v1.
async fn push(account: &str, repository: &str, extra: &[&str]) -> crate::support::Captured {
    let (account, repository) = (account.to_string(), repository.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        push_blocking(&account, &repository, &extra)
    })
    .await
    .expect("push ran")
}

async fn tags_of(account: &str, repository: &str) -> Value {
    let (_, repos) = ecr(account, "DescribeRepositories", json!({"repositoryNames": [repository]})).await;
    let arn = repos["repositories"][0]["repositoryArn"].as_str().unwrap().to_string();
    let (status, tags) = ecr(account, "ListTagsForResource", json!({"resourceArn": arn})).await;
    assert_eq!(status, 200, "{tags}");
    let mut pairs: Vec<(String, String)> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["Key"].as_str().unwrap().to_string(), t["Value"].as_str().unwrap().to_string()))
        .collect();
    pairs.sort();
    json!(pairs)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_created_repository_has_the_lifecycle_policy_and_the_tags() {
    let account = unique_account();
    let repository = crate::sim::harness::unique("it/lifecycle");
    let out = push(&account, &repository, &["--keep-images", "20", "--resource-tag", "team=payments"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let (status, policy) = ecr(&account, "GetLifecyclePolicy", json!({"repositoryName": repository})).await;
    assert_eq!(status, 200, "{policy}");
    let rules: Value = serde_json::from_str(policy["lifecyclePolicyText"].as_str().unwrap()).unwrap();
    assert_eq!(
        rules["rules"][0]["selection"],
        json!({"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 14})
    );
    assert_eq!(
        rules["rules"][1]["selection"],
        json!({"tagStatus": "tagged", "tagPatternList": ["*"], "countType": "imageCountMoreThan", "countNumber": 20})
    );
    assert_eq!(
        tags_of(&account, &repository).await,
        json!([
            ["git-sha", "0123456789abcdef0123456789abcdef01234567"],
            ["run-url", "https://github.com/octo-org/shop/actions/runs/4242"],
            ["team", "payments"],
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn no_lifecycle_policy_means_none_and_bad_tags_are_refused_before_anything_is_created() {
    let account = unique_account();
    let repository = crate::sim::harness::unique("it/nopolicy");
    let out = push(&account, &repository, &["--no-lifecycle-policy"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let (status, body) = ecr(&account, "GetLifecyclePolicy", json!({"repositoryName": repository})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["__type"].as_str().unwrap().contains("LifecyclePolicyNotFoundException"), "{body}");

    let other = crate::sim::harness::unique("it/badtag");
    let out = push(&account, &other, &["--resource-tag", "aws:team=x"]).await;
    assert_eq!(out.code, Some(2), "{out}");
    assert!(out.stderr.contains("resource tag \"aws:team\": the aws: prefix is reserved"), "{out}");
    let (status, _) = ecr(&account, "DescribeRepositories", json!({"repositoryNames": [other]})).await;
    assert_eq!(status, 400, "the repository was not created");
}

/// The tags of the revision a release registered, as a JSON object.
async fn revision_tags(s: &crate::release::Setup, result: &Value) -> Value {
    let ecs = crate::support::ecs_client(&s.sim.url, &s.account);
    let td = ecs
        .describe_task_definition()
        .task_definition(result["task-definition-arn"].as_str().unwrap())
        .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
        .send()
        .await
        .unwrap();
    let tags = td.tags().iter().map(|t| (t.key().unwrap().to_string(), Value::String(t.value().unwrap().to_string())));
    Value::Object(tags.collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_tags_its_revision_and_its_github_deployment() {
    use crate::release::{release, run, setup};
    use crate::support::oidc::{Issuer, Job};
    let s = setup().await;
    let toml = s.dir.path().join("deployer.toml");
    let text = format!("resource-tags = {{ team = \"payments\" }}\n{}", std::fs::read_to_string(&toml).unwrap());
    std::fs::write(&toml, text).unwrap();
    let github = crate::workflows::FakeGithub::start();
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/4.0".into(), ..Job::default() });
    let image = crate::sim::harness::push_image(&s.family, "v2").await;
    let mut c = release(&s, &issuer, "refs/heads/release/4.0", &image);
    c.env("GITHUB_SHA", "89abcdef89abcdef89abcdef89abcdef89abcdef")
        .env("GITHUB_TOKEN", "ghs_fake")
        .args(["--github-api-url", &github.url]);
    let out = run(c).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let want = json!({
        "app": "shop",
        "environment": "production",
        "git-sha": "89abcdef89abcdef89abcdef89abcdef89abcdef",
        "run-url": "https://github.com/octo-org/shop/actions/runs/4242",
        "team": "payments",
    });
    assert_eq!(revision_tags(&s, &result).await, want);
    let created =
        github.requests().into_iter().find(|(m, p, _, _)| m == "POST" && p.ends_with("/deployments")).unwrap();
    assert_eq!(created.2["payload"]["tags"], want, "{:?}", created.2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stage_variables_the_action_sets_reach_release() {
    // action.yml maps `resource-tags`, `keep-revisions` and `update-scheduled-tasks` to these
    // variables; the pre-deploy flags read theirs too.
    use crate::release::{release, run, setup};
    use crate::support::oidc::{Issuer, Job};
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/4.1".into(), ..Job::default() });
    let image = crate::sim::harness::push_image(&s.family, "v2").await;
    let mut c = release(&s, &issuer, "refs/heads/release/4.1", &image);
    c.env("DEPLOYER_RESOURCE_TAGS", "team=payments,tier=web")
        .env("DEPLOYER_KEEP_REVISIONS", "1")
        .env("DEPLOYER_UPDATE_SCHEDULED_TASKS", "true")
        .env("DEPLOYER_PRE_DEPLOY_COMMAND", r#"["bin/migrate", "say=ok"]"#)
        .env("DEPLOYER_PRE_DEPLOY_TIMEOUT", "1m");
    let out = run(c).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["pre-deploy"]["command"], json!(["bin/migrate", "say=ok"]), "{result}");
    assert_eq!(result["after-deploy"]["revisions"]["keep"], 1, "{result}");
    assert!(result["after-deploy"]["scheduled-tasks"]["moved"].is_array(), "{result}");
    let tags = revision_tags(&s, &result).await;
    assert_eq!((tags["team"].as_str(), tags["tier"].as_str()), (Some("payments"), Some("web")), "{tags}");
    assert_eq!(tags["environment"], "production", "{tags}");
}

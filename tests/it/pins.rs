//! Releases that pin their configuration, end to end on the local stack: the release JSON and
//! the GitHub Deployment payload list each parameter's version and each secret's version id;
//! `--pin-secrets` registers Secrets Manager references pinned to that version id (and ecs-sim
//! starts tasks from them); `deployer rollback` warns, naming the keys, about what changed
//! after the revision it goes back to was registered. No value is ever printed.

use serde_json::{Value, json};

use crate::release::{Setup, release, run, setup};
use crate::sim::harness::{moto, push_image};
use crate::support::oidc::{Issuer, Job};
use crate::support::{capture, deployer, ecs_client};
use crate::workflows::FakeGithub;

const CANARY: &str = "canary-pinned-value";

fn release_with_refs(
    s: &Setup,
    issuer: &Issuer,
    image: &str,
    token_arn: &str,
    github: &FakeGithub,
) -> assert_cmd::Command {
    let mut c = release(s, issuer, "refs/heads/release/2.0", image);
    c.env("GITHUB_TOKEN", "ghs_test_token")
        .env("DEPLOYER_GITHUB_API_URL", &github.url)
        .env("GITHUB_SHA", "4f0e6c5b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f")
        .args(["--pin-secrets", "--secret", "API_KEY=secretsmanager:/shop/api:key"])
        .args(["--secret", &format!("TOKEN={token_arn}:token:AWSCURRENT:")]);
    c
}

async fn value_froms(s: &Setup, arn: &str) -> Vec<(String, String)> {
    let ecs = ecs_client(&s.sim.url, &s.account);
    let td = ecs.describe_task_definition().task_definition(arn).send().await.unwrap();
    td.task_definition().unwrap().container_definitions()[0]
        .secrets()
        .iter()
        .map(|x| (x.name().to_string(), x.value_from().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_records_versions_pins_secrets_and_rollback_warns_about_what_changed() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/2.0".into(), ..Job::default() });
    let github = FakeGithub::start();
    let secret = moto(
        &s.account,
        "secretsmanager.CreateSecret",
        json!({"Name": "/shop/api", "SecretString": json!({"key": CANARY, "token": CANARY}).to_string()}),
    )
    .await;
    let secret_arn = secret["ARN"].as_str().unwrap().to_string();
    let v1 = secret["VersionId"].as_str().unwrap().to_string();

    // Release 1: the record carries versions, the secret reference is pinned to v1.
    let image = push_image(&s.family, "v2").await;
    let out = run(release_with_refs(&s, &issuer, &image, &secret_arn, &github)).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert!(!out.stdout.contains(CANARY) && !out.stderr.contains(CANARY), "a value was printed:\n{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let config: Vec<(String, String, String, Value, bool)> = result["configuration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["source"].as_str().unwrap().to_string(),
                c["reference"].as_str().unwrap().to_string(),
                c["version"].clone(),
                c["pinned"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        config,
        [
            ("DB_PASSWORD".into(), "ssm".into(), "/production/shop/db_password".into(), json!("1"), false),
            ("API_KEY".into(), "secretsmanager".into(), "/shop/api".into(), json!(v1), true),
            ("TOKEN".into(), "secretsmanager".into(), "/shop/api".into(), json!(v1), false),
        ],
        "{result}"
    );
    let rev2 = result["task-definition-arn"].as_str().unwrap().to_string();
    let registered = value_froms(&s, &rev2).await;
    assert!(registered.contains(&("API_KEY".into(), format!("{secret_arn}:key::{v1}"))), "{registered:?}");
    assert!(registered.contains(&("TOKEN".into(), format!("{secret_arn}:token:AWSCURRENT:"))), "{registered:?}");
    let create = github
        .requests()
        .into_iter()
        .find(|(m, p, _, _)| m == "POST" && p.ends_with("/deployments"))
        .expect("a GitHub deployment was created");
    assert_eq!(create.2["payload"]["configuration"], result["configuration"], "the payload carries the record");

    // Release 2, then the parameter and the secret change.
    let image = push_image(&s.family, "v3").await;
    let out = run(release_with_refs(&s, &issuer, &image, &secret_arn, &github)).await;
    assert_eq!(out.code, Some(0), "{out}");
    moto(
        &s.account,
        "AmazonSSM.PutParameter",
        json!({"Name": "/production/shop/db_password", "Value": format!("{CANARY}-rotated"), "Type": "SecureString", "Overwrite": true}),
    )
    .await;
    moto(
        &s.account,
        "secretsmanager.PutSecretValue",
        json!({"SecretId": "/shop/api", "SecretString": json!({"key": format!("{CANARY}-2"), "token": format!("{CANARY}-2")}).to_string()}),
    )
    .await;

    // Rollback to release 1's revision warns about DB_PASSWORD and TOKEN; API_KEY is pinned to v1.
    let mut c = deployer(&s.account);
    c.env("AWS_ENDPOINT_URL_ECS", &s.sim.url).env("DEPLOYER_POLL_MS", "150").args([
        "--output",
        "json",
        "rollback",
        "--cluster",
        "prod",
        "--service",
        "web",
    ]);
    let out = tokio::task::spawn_blocking(move || capture(&mut c)).await.unwrap();
    assert_eq!(out.code, Some(0), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["to"], rev2.as_str());
    let warnings: Vec<&str> = result["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    let rev2_name = rev2.rsplit('/').next().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert!(
        warnings[0].starts_with(&format!(
            "DB_PASSWORD (container app): parameter /production/shop/db_password changed after {rev2_name} was registered (now version 2"
        )),
        "{warnings:#?}"
    );
    assert!(warnings[1].starts_with("TOKEN (container app): secret /shop/api's current version ("), "{warnings:#?}");
    assert!(out.stderr.contains("warning: DB_PASSWORD (container app)"), "{out}");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(CANARY), "a value was printed:\n{out}");
    }
}

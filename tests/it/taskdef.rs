//! Task definitions end to end: render / verify / diff / register against moto (SSM, Secrets
//! Manager) and ecs-sim (ECS), the canary that must never be printed (`params import` included), the
//! realistic fixtures that must round-trip, and the bad inputs that must fail clearly.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::sim::harness::{Sim, moto};
use crate::support::{Captured, capture, deployer, ecs_client, repo_root, runtime, unique_account};

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures/taskdefs").join(name)
}

/// `deployer` for `account` with ECS pointed at `sim`.
fn cmd(account: &str, sim: &Sim) -> assert_cmd::Command {
    let mut c = deployer(account);
    c.env("AWS_ENDPOINT_URL_ECS", &sim.url);
    c
}

fn ok(run: Captured) -> Captured {
    assert_eq!(run.code, Some(0), "{run}");
    run
}

fn failed(run: Captured, expected: &[&str]) {
    assert_eq!(run.code, Some(1), "{run}");
    for e in expected {
        assert!(run.stderr.contains(e), "missing {e:?}:\n{run}");
    }
}

/// Parameters and a JSON secret holding `canary`, as a user's configuration guide lays them out.
fn seed(account: &str, canary: &str) -> String {
    runtime().block_on(async {
        for (name, kind) in [
            ("/production/shop/db_password", "SecureString"),
            ("/production/shop/api_key", "SecureString"),
            ("/production/shop/feature_flags", "String"),
            ("/production/shop/nested/deeper", "SecureString"),
        ] {
            moto(account, "AmazonSSM.PutParameter", json!({"Name": name, "Value": canary, "Type": kind})).await;
        }
        let secret = moto(
            account,
            "secretsmanager.CreateSecret",
            json!({"Name": "/shop/production/database-credentials",
                   "SecretString": json!({"DB_USERNAME": "shop", "DB_PASSWORD": canary}).to_string()}),
        )
        .await;
        secret["ARN"].as_str().expect("secret ARN").to_string()
    })
}

fn ecs(sim: &Sim, account: &str) -> aws_sdk_ecs::Client {
    ecs_client(&sim.url, account)
}

fn describe(sim: &Sim, account: &str, family: &str) -> Value {
    runtime().block_on(async {
        let client = ecs(sim, account);
        let out = client.describe_task_definition().task_definition(family).send().await.expect("describe");
        let td = out.task_definition().expect("task definition");
        let secrets: Vec<(String, String)> = td
            .container_definitions()
            .iter()
            .flat_map(|c| c.secrets().iter().map(|s| (s.name().to_string(), s.value_from().to_string())))
            .collect();
        let env: Vec<(String, String)> = td
            .container_definitions()
            .iter()
            .flat_map(|c| {
                c.environment()
                    .iter()
                    .map(|e| (e.name().unwrap_or("").to_string(), e.value().unwrap_or("").to_string()))
            })
            .collect();
        json!({"secrets": secrets, "environment": env, "revision": td.revision()})
    })
}

#[test]
fn secrets_path_and_a_json_secret_key_register_exactly_the_expected_references() {
    let account = unique_account();
    let sim = Sim::start();
    let secret_arn = seed(&account, &format!("canary-{account}"));
    let run = ok(capture(cmd(&account, &sim).args([
        "--output",
        "json",
        "register",
        "--task-definition",
        fixture("fargate-web.json").to_str().unwrap(),
        "--secrets-path",
        "/production/shop/",
        "--secret",
        "DB_USERNAME=secretsmanager:/shop/production/database-credentials:DB_USERNAME",
        "--secret",
        "API_KEY=ssm:/production/shop/feature_flags",
        "--env",
        "RUST_LOG=debug",
        "--env",
        "RELEASE=1.4.3",
    ])));
    let result: Value = serde_json::from_str(&run.stdout).expect("json");
    assert!(result["task-definition-arn"].as_str().unwrap().ends_with(":task-definition/shop-web:1"), "{result}");
    assert_eq!(result["verified"], true);

    let ssm = |name: &str| format!("arn:aws:ssm:us-east-1:{account}:parameter{name}");
    let registered = describe(&sim, &account, "shop-web");
    assert_eq!(
        registered["secrets"],
        json!([
            // --secrets-path: one level, sorted; --secret API_KEY overrides the path's api_key
            ["API_KEY", ssm("/production/shop/feature_flags")],
            ["DB_PASSWORD", ssm("/production/shop/db_password")],
            ["FEATURE_FLAGS", ssm("/production/shop/feature_flags")],
            ["DB_USERNAME", format!("{secret_arn}:DB_USERNAME::")],
        ])
    );
    assert_eq!(registered["environment"], json!([["PORT", "8080"], ["RUST_LOG", "debug"], ["RELEASE", "1.4.3"]]));
}

#[test]
fn no_output_of_any_command_contains_a_secret_value() {
    let account = unique_account();
    let sim = Sim::start();
    let canary = format!("canary-never-print-{account}");
    seed(&account, &canary);
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("summary.md");
    let env_file = dir.path().join("app.env");
    std::fs::write(&env_file, format!("DB_PASSWORD={canary}\nAPI_TOKEN='{canary}'\nPLAIN=x\n")).unwrap();
    let template = fixture("fargate-web.json");
    let td_args = [
        "--task-definition",
        template.to_str().unwrap(),
        "--secrets-path",
        "/production/shop",
        "--secret",
        "DB_PASSWORD_JSON=secretsmanager:/shop/production/database-credentials:DB_PASSWORD",
    ];
    let mut runs = Vec::new();
    for command in ["render", "verify", "diff", "register", "diff"] {
        for output in ["text", "json"] {
            let mut c = cmd(&account, &sim);
            c.env("GITHUB_STEP_SUMMARY", &summary).args(["--output", output, command]).args(td_args);
            runs.push((format!("{command} --output {output}"), capture(&mut c)));
        }
    }
    for args in [vec!["--dry-run"], vec![], vec!["--overwrite"], vec!["--overwrite", "--dry-run"]] {
        let mut c = cmd(&account, &sim);
        c.args(["params", "import", env_file.to_str().unwrap(), "--path", "/production/shop/"]).args(&args);
        runs.push((format!("params import {args:?}"), capture(&mut c)));
    }
    for (what, run) in &runs {
        assert!(run.code == Some(0), "{what}: {run}");
        assert!(!run.stdout.contains(&canary) && !run.stderr.contains(&canary), "{what} printed the canary:\n{run}");
    }
    let summary_text = std::fs::read_to_string(&summary).unwrap_or_default();
    assert!(summary_text.contains("```diff"), "the diff reached the summary");
    assert!(!summary_text.contains(&canary));
}

/// Fields the fixtures hold must come back from ECS unchanged.
#[test]
fn realistic_task_definitions_round_trip_without_losing_a_field() {
    let account = unique_account();
    let sim = Sim::start();
    let mut names: Vec<String> = std::fs::read_dir(repo_root().join("tests/fixtures/taskdefs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 6, "{names:?}");
    for name in names {
        let path = fixture(&name);
        let original =
            deployer::taskdef::template::TaskDefinition::parse(&std::fs::read_to_string(&path).unwrap(), &name)
                .unwrap();
        let family = original.family().to_string();
        ok(capture(cmd(&account, &sim).args(["register", "--no-verify", "--task-definition", path.to_str().unwrap()])));
        // `render` of the registered revision prints it as ECS describes it, read-only fields stripped.
        let run = ok(capture(cmd(&account, &sim).args(["render", "--task-definition", &format!("{family}:1")])));
        let back: Value = serde_json::from_str(&run.stdout).expect("json");
        let normalize = deployer::taskdef::diff::normalize;
        assert_eq!(normalize(&back), normalize(&original.to_json()), "{name} changed on the way through ECS");
        // And the diff against what is registered is empty.
        let run =
            ok(capture(cmd(&account, &sim).args(["diff", "--exit-code", "--task-definition", path.to_str().unwrap()])));
        assert!(run.stdout.starts_with("no change"), "{name}: {run}");
    }
}

#[test]
fn diff_shows_the_change_and_exit_code_flags_it() {
    let account = unique_account();
    let sim = Sim::start();
    let path = fixture("healthcheck-ulimits.json");
    ok(capture(cmd(&account, &sim).args(["register", "--no-verify", "--task-definition", path.to_str().unwrap()])));
    let image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop/search:8.16.0";
    let run = capture(cmd(&account, &sim).args([
        "--output",
        "json",
        "diff",
        "--exit-code",
        "--task-definition",
        path.to_str().unwrap(),
        "--image",
        image,
    ]));
    assert_eq!(run.code, Some(1), "{run}");
    let result: Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(result["changed"], true);
    assert_eq!((result["lines-added"].as_u64(), result["lines-removed"].as_u64()), (Some(1), Some(1)), "{result}");
    assert_eq!(result["current"], "search:1");
    assert!(result["diff"].as_str().unwrap().contains(&format!("+      \"image\": \"{image}\"")), "{result}");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn bad_input_fails_clearly_and_registers_nothing() {
    let account = unique_account();
    let sim = Sim::start();
    seed(&account, "irrelevant");
    let dir = tempfile::tempdir().unwrap();
    let malformed = write(
        dir.path(),
        "bad.json",
        "{\n  \"family\": \"web\",\n  \"containerDefinitions\": [\n    {\"name\": \"app\",}\n  ]\n}\n",
    );
    let no_role = write(
        dir.path(),
        "no-role.json",
        r#"{"family": "web", "containerDefinitions": [{"name": "app", "image": "x"}, {"name": "log", "image": "y"}]}"#,
    );
    let template = fixture("fargate-web.json");
    let template = template.to_str().unwrap();
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["--task-definition", &malformed], vec![format!("{malformed}:4:20: not valid JSON: trailing comma")]),
        (vec!["--task-definition", "/nonexistent/td.json"], vec!["/nonexistent/td.json: no such file".into()]),
        (
            vec!["--task-definition", template, "--container", "api", "--env", "A=1"],
            vec!["no container named \"api\" in the task definition; it has: web".into()],
        ),
        (
            vec!["--task-definition", template, "--secret", "DB=arn:aws:ssm:us-east-1:12345:parameter/x"],
            vec!["--secret DB:".into(), "12 digits".into()],
        ),
        (vec!["--task-definition", template, "--secrets-path", ""], vec!["--secrets-path \"\": empty".into()]),
        (
            vec!["--task-definition", template, "--secrets-path", "/production/nothing-here/"],
            vec!["--secrets-path /production/nothing-here/: no parameters directly under it".into()],
        ),
        (
            vec!["--task-definition", template, "--env", "DB=1", "--secret", "DB=ssm:/production/shop/db_password"],
            vec!["DB is given both as --env and as --secret".into()],
        ),
        (
            vec!["--task-definition", template, "--secret", "PORT=ssm:/production/shop/db_password"],
            vec!["container web: PORT is both an environment variable and a secret".into()],
        ),
        (
            vec![
                "--task-definition",
                &no_role,
                "--container",
                "app",
                "--secret",
                "DB=ssm:/production/shop/db_password",
            ],
            vec!["container (task): secrets are used but executionRoleArn is not set".into()],
        ),
        (
            vec![
                "--task-definition",
                template,
                "--secret",
                "MISSING=ssm:/production/shop/missing",
                "--secret",
                "GONE=secretsmanager:/shop/production/gone",
            ],
            vec!["--secret GONE: Secrets Manager has no secret \"/shop/production/gone\"".into()],
        ),
        (
            vec!["--task-definition", template, "--secret", "MISSING=ssm:/production/shop/missing"],
            vec![format!(
                "container web, MISSING: parameter /production/shop/missing does not exist in account {account} (us-east-1)"
            )],
        ),
    ];
    for (args, expected) in cases {
        let run = capture(cmd(&account, &sim).arg("register").args(&args));
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        failed(run, &expected);
    }
    let listed = runtime().block_on(async { ecs(&sim, &account).list_task_definitions().send().await.unwrap() });
    assert!(listed.task_definition_arns().is_empty(), "nothing may be registered: {listed:?}");
}

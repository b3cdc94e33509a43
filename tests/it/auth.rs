//! `deployer auth` end to end: the local OIDC issuer, moto's STS, and the runner files.
//! Every test reads everything the run printed and checks that no credential leaks.

use std::collections::HashMap;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

use crate::support::oidc::{Issuer, Job};
use crate::support::{Captured, capture, deployer, unique_account};

/// The `NAME<<DELIM … DELIM` entries of a runner file.
fn read_runner_file(path: &std::path::Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = HashMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let (name, delim) = line.split_once("<<").expect("delimited entry");
        let mut value = Vec::new();
        for l in lines.by_ref() {
            if l == delim {
                break;
            }
            value.push(l);
        }
        out.insert(name.to_string(), value.join("\n"));
    }
    out
}

/// `secret` appears nowhere in the run's output except inside `::add-mask::` lines.
fn assert_never_printed(run: &Captured, secret: &str, what: &str) {
    for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
        for line in text.lines().filter(|l| !l.starts_with("::add-mask::")) {
            assert!(!line.contains(secret), "{what} leaked on {stream}: {line}");
        }
    }
}

struct ActionsJob {
    dir: tempfile::TempDir,
}

impl ActionsJob {
    fn new() -> Self {
        ActionsJob { dir: tempfile::tempdir().expect("tempdir") }
    }
    fn file(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
    fn apply(&self, cmd: &mut assert_cmd::Command) {
        cmd.env("GITHUB_ACTIONS", "true")
            .env("GITHUB_ENV", self.file("env"))
            .env("GITHUB_OUTPUT", self.file("output"))
            .env("GITHUB_STEP_SUMMARY", self.file("summary"))
            .env("GITHUB_REPOSITORY", "octo-org/shop")
            .env("GITHUB_RUN_ID", "9876543210");
    }
}

#[test]
fn oidc_credentials_are_exported_masked_and_never_printed() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    let job = ActionsJob::new();
    let mut cmd = deployer(&account);
    job.apply(&mut cmd);
    cmd.envs(issuer.env()).args([
        "auth",
        "--role-arn",
        &format!("arn:aws:iam::{account}:role/deploy"),
        "--export",
        "github-env",
    ]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(0), "{run}");

    let env = read_runner_file(&job.file("env"));
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"] {
        let value = env.get(name).unwrap_or_else(|| panic!("{name} not exported: {env:?}"));
        assert!(value.len() >= 16, "{name} looks empty");
        assert!(run.stdout.lines().any(|l| l == format!("::add-mask::{value}")), "{name} was not masked:\n{run}");
        assert_never_printed(&run, value, name);
    }
    assert_eq!(env.get("AWS_REGION").map(String::as_str), Some("us-east-1"));
    // The masks come before anything else deployer prints on stdout.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let first_other = lines.iter().position(|l| !l.starts_with("::add-mask::"));
    let last_mask = lines.iter().rposition(|l| l.starts_with("::add-mask::"));
    assert!(last_mask < first_other, "a line was printed before the masks:\n{run}");
    // The role's account, and nothing of the OIDC exchange leaked.
    assert_eq!(read_runner_file(&job.file("output")).get("aws-account-id"), Some(&account));
    assert_eq!(issuer.issued().len(), 1);
    assert_never_printed(&run, &issuer.issued()[0], "the OIDC token");
    assert_never_printed(&run, &issuer.request_token, "the OIDC request token");
    assert!(run.stdout.contains("assumed-role/deploy/deployer-octo-org-shop-9876543210"), "{run}");
}

#[test]
fn json_output_names_account_role_and_expiration_without_secrets() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    let job = ActionsJob::new();
    let role = format!("arn:aws:iam::{account}:role/deploy");
    let mut cmd = deployer(&account);
    job.apply(&mut cmd);
    cmd.envs(issuer.env()).args(["--output", "json", "auth", "--role-arn", &role, "--export", "none"]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let result: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}\n{run}"));
    assert_eq!(result["aws-account-id"], account.as_str());
    assert_eq!(result["role-arn"], role.as_str());
    assert!(result["expiration"].as_str().is_some_and(|e| e.starts_with("20")), "{result}");
    assert_eq!(result["source"], "github-oidc");
    assert!(result.get("credentials").is_none(), "{result}");
    // Masks went to stderr so stdout stays one JSON object; nothing was exported.
    assert!(run.stderr.contains("::add-mask::"), "{run}");
    assert!(!job.file("env").exists());

    // --export json is the one way to get the credentials on stdout.
    let mut cmd = deployer(&account);
    cmd.envs(issuer.env()).args(["--output", "json", "auth", "--role-arn", &role, "--export", "json"]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let result: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert!(result["credentials"]["secret-access-key"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn missing_oidc_variables_inside_actions_explain_the_permission() {
    let account = unique_account();
    let job = ActionsJob::new();
    let mut cmd = deployer(&account);
    job.apply(&mut cmd);
    cmd.args(["auth", "--role-arn", &format!("arn:aws:iam::{account}:role/deploy")]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("permissions: id-token: write"), "{run}");
    assert!(run.stderr.contains("forks"), "{run}");
    assert!(run.stdout.starts_with("::error::no GitHub OIDC token"), "{run}");
}

#[test]
fn a_rejected_request_token_is_reported_without_retrying() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    let mut cmd = deployer(&account);
    cmd.env("ACTIONS_ID_TOKEN_REQUEST_URL", &issuer.token_url)
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "stale-request-token-canary")
        .args(["auth", "--role-arn", &format!("arn:aws:iam::{account}:role/deploy")]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("rejected the request token (HTTP 401)"), "{run}");
    assert_eq!(issuer.requests(), 1, "a 401 must not be retried");
    assert_never_printed(&run, "stale-request-token-canary", "the request token");
}

#[test]
fn an_oidc_endpoint_that_stays_down_fails_after_five_attempts() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    issuer.fail_next(1000);
    let mut cmd = deployer(&account);
    cmd.envs(issuer.env()).args(["auth", "--role-arn", &format!("arn:aws:iam::{account}:role/deploy")]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("did not give a token after 5 attempts: HTTP 503"), "{run}");
    assert_eq!(issuer.requests(), 5);

    // Nothing listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cmd = deployer(&account);
    cmd.env("ACTIONS_ID_TOKEN_REQUEST_URL", format!("http://{closed}/token?api-version=2.0"))
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "x")
        .args(["auth", "--role-arn", &format!("arn:aws:iam::{account}:role/deploy")]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("after 5 attempts: connection failed"), "{run}");
}

#[test]
fn a_flaky_oidc_endpoint_is_retried_until_it_answers() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    issuer.fail_next(2);
    let mut cmd = deployer(&account);
    cmd.envs(issuer.env()).args(["auth", "--role-arn", &format!("arn:aws:iam::{account}:role/deploy")]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(issuer.requests(), 3);
}

/// STS that denies every call, as AWS does when the trust policy does not match.
fn denying_sts() -> String {
    const DENIED: &str = r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>Not authorized to perform sts:AssumeRoleWithWebIdentity</Message></Error><RequestId>denied-1</RequestId></ErrorResponse>"#;
    crate::support::serve(
        Router::new().route("/", post(|| async { (StatusCode::FORBIDDEN, [("content-type", "text/xml")], DENIED) })),
    )
}

#[test]
fn access_denied_shows_the_claims_and_the_condition_that_would_match() {
    let account = unique_account();
    let issuer = Issuer::start(Job { environment: Some("production".into()), immutable_ids: true, ..Job::default() });
    let mut cmd = deployer(&account);
    cmd.envs(issuer.env()).env("AWS_ENDPOINT_URL_STS", denying_sts()).args([
        "auth",
        "--role-arn",
        &format!("arn:aws:iam::{account}:role/deploy"),
    ]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(1), "{run}");
    for expected in [
        "STS denied AssumeRoleWithWebIdentity",
        "AccessDenied: Not authorized",
        "sub:              repo:octo-org@4242/shop@777777:environment:production",
        "aud:              sts.amazonaws.com",
        "repository:       octo-org/shop",
        "ref:              refs/heads/main",
        "environment:      production",
        "job_workflow_ref: octo-org/shop/.github/workflows/deploy.yml@refs/heads/main",
        r#""token.actions.githubusercontent.com:sub": "repo:octo-org@4242/shop@777777:environment:production""#,
        "GitHub Environment `production`",
    ] {
        assert!(run.stderr.contains(expected), "missing {expected:?}:\n{run}");
    }
    assert_never_printed(&run, &issuer.issued()[0], "the OIDC token");
}

#[test]
fn a_bad_role_arn_is_refused_before_any_network_call() {
    let account = unique_account();
    let issuer = Issuer::start(Job::default());
    for (flag, value) in
        [("--role-arn", "arn:aws:iam::12345:role/deploy"), ("--chain-role-arn", "arn:aws:iam::123456789012:user/x")]
    {
        let mut cmd = deployer(&account);
        cmd.envs(issuer.env()).arg("auth");
        if flag != "--role-arn" {
            cmd.args(["--role-arn", &format!("arn:aws:iam::{account}:role/deploy")]);
        }
        cmd.args([flag, value]);
        let run = capture(&mut cmd);
        assert_eq!(run.code, Some(1), "{run}");
        assert!(run.stderr.contains(&format!("{flag} {value:?} is not an IAM role ARN")), "{run}");
    }
    assert_eq!(issuer.requests(), 0);
}

#[test]
fn outside_actions_the_default_chain_is_used_and_roles_can_be_chained() {
    let account = unique_account();
    let run = capture(deployer(&account).args(["--output", "json", "auth"]));
    assert_eq!(run.code, Some(0), "{run}");
    let result: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(result["source"], "default-chain");
    assert_eq!(result["aws-account-id"], account.as_str());
    assert!(!run.stdout.contains("::add-mask::"), "no workflow commands outside Actions");

    // OIDC into one account, then sts:AssumeRole into another.
    let issuer = Issuer::start(Job::default());
    let target = unique_account();
    let chain = format!("arn:aws:iam::{target}:role/deploy-prod");
    let mut cmd = deployer(&account);
    cmd.envs(issuer.env()).args([
        "--output",
        "json",
        "auth",
        "--role-arn",
        &format!("arn:aws:iam::{account}:role/ci"),
        "--chain-role-arn",
        &chain,
        "--allowed-account-ids",
        &target,
    ]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(0), "{run}");
    let result: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(result["aws-account-id"], target.as_str());
    assert_eq!(result["role-arn"], chain.as_str());

    // The same credentials outside the allowed accounts are refused.
    let mut cmd = deployer(&account);
    cmd.envs(issuer.env()).args([
        "auth",
        "--role-arn",
        &format!("arn:aws:iam::{account}:role/ci"),
        "--allowed-account-ids",
        "999999999999",
    ]);
    let run = capture(&mut cmd);
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr.contains(&format!("account {account}, which is not in --allowed-account-ids (999999999999)")),
        "{run}"
    );
}

#[test]
fn shell_export_prints_quoted_exports_for_eval() {
    let account = unique_account();
    let run = capture(deployer(&account).args(["auth", "--export", "shell"]));
    assert_eq!(run.code, Some(0), "{run}");
    let names: Vec<&str> =
        run.stdout.lines().filter_map(|l| l.strip_prefix("export ")?.split_once('=').map(|(n, _)| n)).collect();
    assert_eq!(
        names,
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION"]
    );
    assert!(run.stdout.lines().all(|l| l.starts_with("export ") && l.ends_with('\'')), "{run}");
}

#[test]
fn usage_errors_exit_2() {
    let run = capture(deployer(&unique_account()).args(["auth", "--export", "sideways"]));
    assert_eq!(run.code, Some(2), "{run}");
}

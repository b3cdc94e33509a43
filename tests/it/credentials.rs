//! Deploys that outlive their credentials. STS runs on a time-scaled clock (a proxy in front of
//! moto, `support::sts_proxy`): a 900 s session lasts a few seconds, and ecs-sim refuses each
//! key once it has expired, as ECS does. A release through the local OIDC issuer then renews
//! its session (and the chained role) mid-deploy and completes, or rolls back with fresh
//! credentials; a renewal that fails ends in a named state; credentials that cannot be renewed
//! are checked against `--timeout` before anything changes; and every STS retry presents a
//! token that is not about to expire.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::release::{Setup, release, run, setup};
use crate::sim::common::describe;
use crate::sim::harness::{Sim, push_image};
use crate::support::oidc::{Issuer, Job};
use crate::support::sts_proxy::StsProxy;
use crate::support::{Captured, capture, deployer, ecs_client, unique_account};

/// A 900 s session lasts 3 s.
const SCALE: f64 = 3.0 / 900.0;

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// What ecs-sim saw per access key: (expires at, operations, rejected).
async fn sim_keys(sim: &Sim) -> Vec<(String, f64, Value, u64)> {
    let v = sim.control("credentials").await;
    v["credentials"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, u)| {
                    (
                        k.clone(),
                        u["expiresAt"].as_f64().unwrap_or(0.0),
                        u["operations"].clone(),
                        u["rejected"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn scaled_release(s: &Setup, issuer: &Issuer, sts: &StsProxy, image: &str) -> assert_cmd::Command {
    let mut c = release(s, issuer, "refs/heads/release/3.0", image);
    c.env("AWS_ENDPOINT_URL_STS", &sts.url).args(["--duration", "900"]);
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sim_refuses_a_key_after_its_expiry() {
    let sim = Sim::start();
    let account = unique_account();
    let ecs = sim.client(&account);
    for (expires_at, ok) in [(now() + 60.0, true), (now() - 1.0, false)] {
        reqwest::Client::new()
            .post(format!("{}/_sim/credentials", sim.url))
            .json(&json!({"accessKeyId": account, "expiresAt": expires_at}))
            .send()
            .await
            .unwrap();
        let out = ecs.list_clusters().send().await;
        match (ok, out) {
            (true, Ok(_)) => {}
            (false, Err(e)) => {
                assert_eq!(aws_sdk_ecs::error::ProvideErrorMetadata::code(&e), Some("ExpiredTokenException"), "{e:?}")
            }
            (ok, out) => panic!("expected ok={ok}, got {out:?}"),
        }
    }
    let keys = sim_keys(&sim).await;
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0].2["ListClusters"], 1);
    assert!(keys[0].3 >= 1, "{keys:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_that_expires_mid_deploy_is_renewed_with_its_chained_role_and_the_deploy_completes() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/3.0".into(), ..Job::default() });
    // GitHub's tokens live minutes; these expire within the 60 s margin, so every session
    // (the first and each renewal) asks the runner for a fresh token.
    issuer.set_token_lifetime(30);
    let sts = StsProxy::start(SCALE, Some(&s.sim.url));
    let image = push_image(&s.family, "v2").await;
    let mut c = scaled_release(&s, &issuer, &sts, &image);
    c.args(["--bake", "8", "--chain-role-arn", &format!("arn:aws:iam::{}:role/deploy-chained", s.account)]);
    let started = Instant::now();
    let out = run(c).await;
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(took > Duration::from_secs(6), "the deploy outlived two sessions ({took:?})");

    let issued = sts.issued();
    let web: Vec<_> = issued.iter().filter(|(a, _, _)| a == "AssumeRoleWithWebIdentity").collect();
    let chained: Vec<_> = issued.iter().filter(|(a, _, _)| a == "AssumeRole").collect();
    assert!(web.len() >= 3, "renewed at least twice: {issued:?}");
    assert_eq!(web.len(), chained.len(), "each renewal assumes the chained role again: {issued:?}");
    let tokens = sts.tokens();
    assert_eq!(tokens.len(), web.len());
    let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
    assert_eq!(distinct.len(), tokens.len(), "a fresh OIDC token for every session");
    assert_eq!(issuer.requests(), tokens.len());

    // ECS calls went out under several chained sessions, and none was refused as expired.
    let keys = sim_keys(&s.sim).await;
    let used: Vec<_> = keys.iter().filter(|(_, _, ops, _)| ops.as_object().is_some_and(|o| !o.is_empty())).collect();
    assert!(used.len() >= 3, "{keys:?}");
    assert_eq!(keys.iter().map(|k| k.3).sum::<u64>(), 0, "a request was signed with an expired key: {keys:?}");
    for (key, _, _, _) in &used {
        assert!(chained.iter().any(|(_, k, _)| k == key), "ECS was called with the chained role's keys only");
    }
    let first_expiry = chained.first().map(|c| c.2).unwrap();
    assert!(first_expiry < now(), "the first session ended during the deploy");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_release_found_after_the_first_session_expired_is_rolled_back_with_fresh_credentials() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/3.0".into(), ..Job::default() });
    let sts = StsProxy::start(SCALE, Some(&s.sim.url));
    let image = push_image(&s.family, "v2").await;
    // The new tasks crash 4 s (80 s scaled) after they start, during the bake: long after the
    // first 3 s session has ended.
    let mut c = scaled_release(&s, &issuer, &sts, &image);
    c.args(["--env", "SIM_CRASH_AFTER=80", "--bake", "8"]);
    let out = run(c).await;
    assert_eq!(out.code, Some(3), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["result"], "rolled-back");
    let report = &result["deploy"]["services"][0];
    let rollback_at = report["rollback-started-at-ms"].as_f64().expect("a rollback started") / 1000.0;

    let issued = sts.issued();
    assert!(issued.len() >= 2, "renewed: {issued:?}");
    assert!(rollback_at > issued[0].2, "the rollback began after the first session ended: {issued:?} {report}");
    let keys = sim_keys(&s.sim).await;
    assert_eq!(keys.iter().map(|k| k.3).sum::<u64>(), 0, "no call was signed with an expired key: {keys:?}");
    let ecs = ecs_client(&s.sim.url, &s.account);
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(s.v1.as_str()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_that_fails_while_a_deploy_is_in_flight_ends_in_a_named_state() {
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/3.0".into(), ..Job::default() });
    let sts = StsProxy::start(SCALE, Some(&s.sim.url));
    sts.fail_after(1);
    let image = push_image(&s.family, "v2").await;
    let mut c = scaled_release(&s, &issuer, &sts, &image);
    c.args(["--bake", "10"]);
    let out = run(c).await;
    assert_eq!(out.code, Some(4), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(result["result"], "failed");
    let report = &result["deploy"]["services"][0];
    assert!(report["state"].as_str().is_some_and(|st| st.contains("may still run")), "{report}");
    assert!(report["failure"].as_str().is_some_and(|f| f.contains("ECS to answer")), "{report}");
    assert!(out.stderr.contains("renewing the AWS session failed"), "{out}");
    assert!(sts.web_identity_calls() > 1, "renewal was attempted");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_beyond_credentials_that_cannot_be_renewed_is_refused_before_any_change() {
    // `deployer auth` exports a 15-minute session (and when it ends); a later `deploy` with
    // those keys cannot renew them, so a 30-minute --timeout is refused up front.
    let s = setup().await;
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/3.0".into(), ..Job::default() });
    let sts = StsProxy::start(1.0, None);
    let mut c = deployer(&s.account);
    c.envs(issuer.env()).env("GITHUB_ACTIONS", "true").env("AWS_ENDPOINT_URL_STS", &sts.url).args([
        "--output",
        "json",
        "auth",
        "--role-arn",
        &format!("arn:aws:iam::{}:role/deploy", s.account),
        "--duration",
        "900",
        "--export",
        "shell",
    ]);
    let exported = capture(&mut c);
    assert_eq!(exported.code, Some(0), "{exported}");
    let vars: Vec<(String, String)> = exported
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect();
    assert!(vars.iter().any(|(k, _)| k == "AWS_CREDENTIAL_EXPIRATION"), "{exported}");

    let image = push_image(&s.family, "v2").await;
    let ecs = ecs_client(&s.sim.url, &s.account);
    let v2 = crate::sim::common::register(&ecs, &s.family, &image, &[("SIM_VERSION", "v2")], &[], true).await;
    let deploy = |timeout: &str| {
        let mut c = deployer(&s.account);
        c.envs(vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("AWS_ENDPOINT_URL_ECS", &s.sim.url)
            .env("DEPLOYER_POLL_MS", "150")
            .args(["deploy", "--cluster", "prod", "--service", "web", "--task-definition", &v2, "--timeout", timeout]);
        c
    };
    let out: Captured = tokio::task::spawn_blocking({
        let mut c = deploy("1800");
        move || capture(&mut c)
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(1), "{out}");
    for expected in [
        "the AWS credentials end at",
        "and cannot be renewed: they come from AWS_ACCESS_KEY_ID",
        "--timeout 1800 may need them for up to 65 min",
        "lower --timeout",
    ] {
        assert!(out.stderr.contains(expected), "missing {expected:?}\n{out}");
    }
    assert_eq!(describe(&ecs, "prod", "web").await.task_definition(), Some(s.v1.as_str()), "nothing changed");
    // A timeout that fits goes ahead.
    let out = tokio::task::spawn_blocking({
        let mut c = deploy("240");
        move || capture(&mut c)
    })
    .await
    .unwrap();
    assert_eq!(out.code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_sts_retry_presents_a_token_that_is_not_about_to_expire() {
    let account = unique_account();
    for (lifetime, fresh_tokens) in [(30, 3), (600, 1)] {
        let issuer = Issuer::start(Job::default());
        issuer.set_token_lifetime(lifetime);
        let sts = StsProxy::start(1.0, None);
        sts.fail_first(2);
        let mut c = deployer(&account);
        c.envs(issuer.env()).env("GITHUB_ACTIONS", "true").env("AWS_ENDPOINT_URL_STS", &sts.url).args([
            "auth",
            "--role-arn",
            &format!("arn:aws:iam::{account}:role/deploy"),
            "--export",
            "none",
        ]);
        let out = tokio::task::spawn_blocking(move || capture(&mut c)).await.unwrap();
        assert_eq!(out.code, Some(0), "{out}");
        let tokens = sts.tokens();
        assert_eq!(tokens.len(), 3, "two IDPCommunicationErrors, then success");
        let distinct: std::collections::BTreeSet<_> = tokens.iter().collect();
        assert_eq!(distinct.len(), fresh_tokens, "token lifetime {lifetime} s");
        assert_eq!(issuer.requests(), fresh_tokens);
    }
}

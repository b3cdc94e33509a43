//! Scheduled tasks follow the service (`--update-scheduled-tasks`) against ecs-sim and moto's
//! EventBridge and EventBridge Scheduler: a rule and a schedule running the family are moved to
//! the new revision when the deploy succeeds (every other field kept), left alone when it is
//! rolled back, and pointed back by `deployer rollback --update-scheduled-tasks`.

use serde_json::{Value, json};

use crate::revisions::{Family, run};
use crate::sim::harness::{moto, unique};
use crate::support::stack;

/// A raw EventBridge Scheduler (REST JSON) call to moto as `account`.
async fn scheduler(account: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", stack().moto_url))
        .header("x-moto-account-id", account)
        .header(
            "Authorization",
            format!("AWS4-HMAC-SHA256 Credential={account}/20260101/us-east-1/scheduler/aws4_request, SignedHeaders=host, Signature=0"),
        );
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.expect("moto scheduler");
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{path}: {status} {v}");
    v
}

struct Scheduled {
    rule: String,
    schedule: String,
    latest_rule: String,
}

/// A rule and a schedule running `td` on cluster `main`, and a rule running the family's latest.
async fn schedule(f: &Family, td: &str) -> Scheduled {
    let cluster = format!("arn:aws:ecs:us-east-1:{}:cluster/main", f.account);
    let role = format!("arn:aws:iam::{}:role/ecsEventsRole", f.account);
    let network = json!({"awsvpcConfiguration": {"Subnets": ["subnet-0abc"], "AssignPublicIp": "DISABLED"}});
    let (rule, latest_rule, name) = (unique("nightly"), unique("latest"), unique("report"));
    for (r, target_td) in [
        (&rule, td.to_string()),
        (&latest_rule, format!("arn:aws:ecs:us-east-1:{}:task-definition/{}", f.account, f.family)),
    ] {
        moto(&f.account, "AWSEvents.PutRule", json!({"Name": r, "ScheduleExpression": "cron(0 3 * * ? *)"})).await;
        moto(
            &f.account,
            "AWSEvents.PutTargets",
            json!({"Rule": r, "Targets": [{"Id": "migrate", "Arn": cluster, "RoleArn": role, "Input": "{\"containerOverrides\":[]}",
                "EcsParameters": {"TaskDefinitionArn": target_td, "TaskCount": 1, "LaunchType": "FARGATE", "NetworkConfiguration": network}}]}),
        )
        .await;
    }
    scheduler(
        &f.account,
        reqwest::Method::POST,
        &format!("/schedules/{name}"),
        Some(json!({
            "ScheduleExpression": "rate(1 hour)", "ScheduleExpressionTimezone": "Europe/Paris",
            "Description": "hourly report", "FlexibleTimeWindow": {"Mode": "OFF"},
            "Target": {"Arn": cluster, "RoleArn": role, "EcsParameters": {"TaskDefinitionArn": td, "TaskCount": 1}},
        })),
    )
    .await;
    Scheduled { rule, schedule: name, latest_rule }
}

impl Scheduled {
    async fn rule_target(&self, f: &Family, rule: &str) -> Value {
        let v = moto(&f.account, "AWSEvents.ListTargetsByRule", json!({"Rule": rule})).await;
        v["Targets"][0].clone()
    }

    /// (the rule's, the schedule's) task definition.
    async fn targets(&self, f: &Family) -> (String, String) {
        let rule = self.rule_target(f, &self.rule).await;
        let s = scheduler(&f.account, reqwest::Method::GET, &format!("/schedules/{}", self.schedule), None).await;
        (
            rule["EcsParameters"]["TaskDefinitionArn"].as_str().unwrap().to_string(),
            s["Target"]["EcsParameters"]["TaskDefinitionArn"].as_str().unwrap().to_string(),
        )
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_and_a_schedule_follow_a_successful_deploy_and_keep_their_other_settings() {
    let f = Family::start().await;
    let v1 = f.revision("v1").await;
    f.service("main", "web", &v1).await;
    let s = schedule(&f, &v1).await;
    let v2 = f.revision("v2").await;
    let (out, json) = f.deploy(&v2, &["--update-scheduled-tasks"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    let moved = json["after-deploy"]["scheduled-tasks"]["moved"].as_array().unwrap().clone();
    assert_eq!(moved.len(), 2, "{json}");
    assert!(moved.iter().all(|m| m["from"] == v1.as_str() && m["to"] == v2.as_str()), "{json}");
    assert_eq!(s.targets(&f).await, (v2.clone(), v2.clone()));
    // Everything else of the rule's target and of the schedule is as it was.
    let rule = s.rule_target(&f, &s.rule).await;
    assert_eq!(rule["EcsParameters"]["NetworkConfiguration"]["awsvpcConfiguration"]["Subnets"], json!(["subnet-0abc"]));
    assert_eq!((rule["Id"].as_str(), rule["EcsParameters"]["LaunchType"].as_str()), (Some("migrate"), Some("FARGATE")));
    assert_eq!(rule["Input"], "{\"containerOverrides\":[]}");
    let sch = scheduler(&f.account, reqwest::Method::GET, &format!("/schedules/{}", s.schedule), None).await;
    assert_eq!(
        (sch["Description"].as_str(), sch["ScheduleExpressionTimezone"].as_str(), sch["ScheduleExpression"].as_str()),
        (Some("hourly report"), Some("Europe/Paris"), Some("rate(1 hour)"))
    );
    // A rule running the family's latest revision already follows it and is not touched.
    let latest = s.rule_target(&f, &s.latest_rule).await;
    assert!(latest["EcsParameters"]["TaskDefinitionArn"].as_str().unwrap().ends_with(&format!("/{}", f.family)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rolled_back_deploy_leaves_them_and_rollback_points_them_back() {
    let f = Family::start().await;
    let v1 = f.revision("v1").await;
    f.service("main", "web", &v1).await;
    let s = schedule(&f, &v1).await;
    let v2 = f.revision("v2").await;
    let (out, _) = f.deploy(&v2, &["--update-scheduled-tasks"]).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(s.targets(&f).await, (v2.clone(), v2.clone()));

    // v3 crashes: the gate fails, ECS rolls back, the scheduled tasks stay on v2.
    let bad = crate::sim::common::register(&f.ecs, &f.family, &f.image, &[("SIM_CRASH_AFTER", "1")], &[], false).await;
    let (out, json) = f.deploy(&bad, &["--update-scheduled-tasks"]).await;
    assert_eq!(out.code, Some(3), "{out}");
    assert!(json.get("after-deploy").is_none(), "nothing moved after a failed deploy: {json}");
    assert_eq!(s.targets(&f).await, (v2.clone(), v2.clone()));

    // Rolling back to v1 by hand takes them along.
    let (out, json) = run(f.deployer(&[
        "rollback",
        "--cluster",
        "main",
        "--service",
        "web",
        "--to",
        &v1,
        "--update-scheduled-tasks",
    ]))
    .await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["scheduled-tasks"]["moved"].as_array().map(Vec::len), Some(2), "{json}");
    assert_eq!(s.targets(&f).await, (v1.clone(), v1));
}

#[tokio::test(flavor = "multi_thread")]
async fn release_takes_update_scheduled_tasks_and_keep_revisions_from_deployer_toml() {
    use crate::release::{release, run, setup};
    use crate::support::oidc::{Issuer, Job};
    let s = setup().await;
    let toml = s.dir.path().join("deployer.toml");
    let text = std::fs::read_to_string(&toml).unwrap() + "update-scheduled-tasks = true\nkeep-revisions = 1\n";
    std::fs::write(&toml, text).unwrap();
    let cluster = format!("arn:aws:ecs:us-east-1:{}:cluster/prod", s.account);
    moto(&s.account, "AWSEvents.PutRule", json!({"Name": "nightly", "ScheduleExpression": "rate(1 day)"})).await;
    let target = json!({"Id": "t", "Arn": cluster, "EcsParameters": {"TaskDefinitionArn": s.v1, "TaskCount": 1}});
    moto(&s.account, "AWSEvents.PutTargets", json!({"Rule": "nightly", "Targets": [target]})).await;
    // Two revisions nobody uses, between the live one and the release's.
    let ecs = crate::support::ecs_client(&s.sim.url, &s.account);
    let image = crate::sim::harness::push_image(&s.family, "v2").await;
    for v in ["unused-a", "unused-b"] {
        crate::sim::common::register(&ecs, &s.family, &image, &[("SIM_VERSION", v)], &[], false).await;
    }
    let issuer = Issuer::start(Job { git_ref: "refs/heads/release/3.0".into(), ..Job::default() });
    let out = run(release(&s, &issuer, "refs/heads/release/3.0", &image)).await;
    assert_eq!(out.code, Some(0), "{out}");
    let result: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let new = result["task-definition-arn"].as_str().unwrap();
    assert!(new.ends_with(":4"), "{new}");
    let after = &result["after-deploy"];
    assert_eq!(after["scheduled-tasks"]["moved"][0]["to"], new, "{after}");
    let rule = moto(&s.account, "AWSEvents.ListTargetsByRule", json!({"Rule": "nightly"})).await;
    assert_eq!(rule["Targets"][0]["EcsParameters"]["TaskDefinitionArn"], new);
    let gone: Vec<&str> =
        after["revisions"]["deregistered"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(gone.len(), 2, "{after}");
    assert!(gone.iter().all(|a| a.ends_with(":2") || a.ends_with(":3")), "{after}");
    let stages: Vec<&str> = result["stages"].as_array().unwrap().iter().map(|s| s["stage"].as_str().unwrap()).collect();
    assert_eq!(stages.last(), Some(&"after-deploy"));
}

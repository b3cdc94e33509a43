//! `--keep-revisions N` and `deployer revisions` against ecs-sim and moto's EventBridge: after
//! five releases exactly the newest N revisions stay ACTIVE, plus any a service (in any
//! cluster) or a scheduled rule still runs; the live revision is never deregistered, even when
//! newer undeployed revisions exist.

use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::TaskDefinitionStatus;
use serde_json::{Value, json};

use crate::sim::common::{describe, register, rolling_config, wait_steady};
use crate::sim::harness::{Sim, moto, push_image, unique};
use crate::support::{Captured, capture, deployer, ecs_client, unique_account};

pub(crate) struct Family {
    pub account: String,
    pub sim: Sim,
    pub ecs: Client,
    pub family: String,
    pub image: String,
}

impl Family {
    pub async fn start() -> Family {
        let account = unique_account();
        let sim = Sim::start();
        let ecs = ecs_client(&sim.url, &account);
        let family = unique("cleanup");
        let image = push_image(&family, "v1").await;
        Family { account, sim, ecs, family, image }
    }

    pub async fn revision(&self, version: &str) -> String {
        register(&self.ecs, &self.family, &self.image, &[("SIM_VERSION", version)], &[], false).await
    }

    /// A service of one task (no load balancer, no health check: quick to roll).
    pub async fn service(&self, cluster: &str, name: &str, td: &str) {
        self.ecs.create_cluster().cluster_name(cluster).send().await.expect("cluster");
        self.ecs
            .create_service()
            .cluster(cluster)
            .service_name(name)
            .task_definition(td)
            .desired_count(1)
            .deployment_configuration(rolling_config())
            .send()
            .await
            .expect("service");
        wait_steady(&self.ecs, cluster, name, Duration::from_secs(30)).await;
    }

    pub fn deployer(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = deployer(&self.account);
        c.env("AWS_ENDPOINT_URL_ECS", &self.sim.url)
            .env("DEPLOYER_POLL_MS", "100")
            .args(["--output", "json"])
            .args(args);
        c
    }

    /// `deployer deploy` of `td` to main/web, with `extra` flags.
    pub async fn deploy(&self, td: &str, extra: &[&str]) -> (Captured, Value) {
        let mut args = vec!["deploy", "--cluster", "main", "--service", "web", "--task-definition", td];
        args.extend_from_slice(extra);
        run(self.deployer(&args)).await
    }

    pub async fn active(&self) -> Vec<i64> {
        let out = self
            .ecs
            .list_task_definitions()
            .family_prefix(&self.family)
            .status(TaskDefinitionStatus::Active)
            .send()
            .await
            .expect("list");
        let mut revs: Vec<i64> =
            out.task_definition_arns().iter().map(|a| a.rsplit(':').next().unwrap().parse().unwrap()).collect();
        revs.sort_unstable_by(|a, b| b.cmp(a));
        revs
    }
}

pub(crate) async fn run(mut cmd: assert_cmd::Command) -> (Captured, Value) {
    let out = tokio::task::spawn_blocking(move || capture(&mut cmd)).await.expect("deployer ran");
    let json: Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}:\n{out}"));
    (out, json)
}

#[tokio::test(flavor = "multi_thread")]
async fn keep_revisions_2_after_five_releases_keeps_the_newest_two_and_those_in_use() {
    let f = Family::start().await;
    let v1 = f.revision("v1").await;
    f.service("main", "web", &v1).await;
    // Another cluster's service runs revision 2 for good, and a nightly rule revision 1.
    let v2 = f.revision("v2").await;
    f.service("batch", "worker", &v2).await;
    let cluster = format!("arn:aws:ecs:us-east-1:{}:cluster/batch", f.account);
    moto(&f.account, "AWSEvents.PutRule", json!({"Name": "nightly", "ScheduleExpression": "rate(1 day)"})).await;
    let target = json!({"Id": "t", "Arn": cluster, "EcsParameters": {"TaskDefinitionArn": v1, "TaskCount": 1}});
    moto(&f.account, "AWSEvents.PutTargets", json!({"Rule": "nightly", "Targets": [target]})).await;
    let mut last = Value::Null;
    for version in ["v2", "v3", "v4", "v5"] {
        let td = if version == "v2" { v2.clone() } else { f.revision(version).await };
        let (out, json) = f.deploy(&td, &["--keep-revisions", "2"]).await;
        assert_eq!(out.code, Some(0), "{out}");
        last = json;
    }
    assert_eq!(
        f.active().await,
        [5, 4, 2, 1],
        "newest two (5 live, 4 its rollback target) + 2 (batch/worker) + 1 (rule)"
    );
    let cleanup = &last["after-deploy"]["revisions"];
    assert_eq!(cleanup["keep"], 2);
    let rows = cleanup["revisions"].as_array().unwrap();
    let by_rev = |r: i64| rows.iter().find(|row| row["revision"] == r).cloned().unwrap_or(Value::Null);
    assert_eq!(by_rev(2)["action"], "keep-in-use", "{cleanup}");
    assert_eq!(by_rev(2)["by"], serde_json::json!(["live: batch/worker"]));
    assert_eq!(by_rev(1)["by"], serde_json::json!(["rule nightly (target t)"]), "{cleanup}");
    assert_eq!(by_rev(3)["action"], "deregister", "{cleanup}");
    assert!(by_rev(5)["used-by"].to_string().contains("live: main/web"), "{cleanup}");
    assert_eq!(describe(&f.ecs, "main", "web").await.task_definition().unwrap().rsplit(':').next(), Some("5"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_revision_survives_even_when_newer_ones_exist_and_dry_run_changes_nothing() {
    let f = Family::start().await;
    let v1 = f.revision("v1").await;
    f.service("main", "web", &v1).await;
    for v in ["v2", "v3", "v4"] {
        f.revision(v).await;
    }
    // The listing says which one is live.
    let (out, json) = run(f.deployer(&["revisions", "--cluster", "main", "--service", "web"])).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["family"], f.family.as_str());
    let revs: Vec<i64> =
        json["revisions"].as_array().unwrap().iter().map(|r| r["revision"].as_i64().unwrap()).collect();
    assert_eq!(revs, [4, 3, 2, 1]);
    assert_eq!(json["revisions"][3]["used-by"], serde_json::json!(["live: main/web"]));

    let (out, json) = run(f.deployer(&["revisions", "--family", &f.family, "--keep", "1", "--dry-run"])).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(json["deregistered"].as_array().unwrap().len(), 2, "{json}");
    assert_eq!(f.active().await, [4, 3, 2, 1], "a dry run deregisters nothing");

    let (out, _) = run(f.deployer(&["revisions", "--family", &f.family, "--keep", "1"])).await;
    assert_eq!(out.code, Some(0), "{out}");
    assert_eq!(f.active().await, [4, 1], "4 is the newest, 1 is live");
}

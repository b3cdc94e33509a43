//! ECS-native BLUE_GREEN: a PAUSE lifecycle hook holds the deployment after the test traffic
//! shift (test listener on green, production on blue); ContinueServiceDeployment shifts
//! production; StopServiceDeployment ROLLBACK returns production to blue — all under load
//! without a failed request. Also a CANARY deployment to SUCCESSFUL.

use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    AdvancedConfiguration, CanaryConfiguration, DeploymentConfiguration, DeploymentLifecycleHook,
    DeploymentLifecycleHookStage, DeploymentLifecycleHookTargetType, DeploymentStrategy, LoadBalancer,
    ServiceDeployment, StopServiceDeploymentStopType,
};

use super::common::*;
use super::harness::{Sim, push_image, unique, wait_for};
use super::load::{self, LoadOptions};
use crate::support::unique_account;

fn blue_green_lb(account: &str) -> LoadBalancer {
    let tg = |n: &str| format!("arn:aws:elasticloadbalancing:us-east-1:{account}:targetgroup/{n}/0123456789abcdef");
    LoadBalancer::builder()
        .target_group_arn(tg("blue"))
        .container_name("app")
        .container_port(8080)
        .advanced_configuration(
            AdvancedConfiguration::builder()
                .alternate_target_group_arn(tg("green"))
                .production_listener_rule(format!(
                    "arn:aws:elasticloadbalancing:us-east-1:{account}:listener-rule/app/web/1/2/3"
                ))
                .test_listener_rule(format!(
                    "arn:aws:elasticloadbalancing:us-east-1:{account}:listener-rule/app/web/1/2/4"
                ))
                .role_arn(format!("arn:aws:iam::{account}:role/ecs-infrastructure"))
                .build(),
        )
        .build()
}

/// Service `web` of 2 tasks of `blue` behind a blue/green load balancer, steady.
async fn create_web(ecs: &Client, account: &str, blue: &str, config: DeploymentConfiguration) {
    ecs.create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(blue)
        .desired_count(2)
        .load_balancers(blue_green_lb(account))
        .deployment_configuration(config)
        .send()
        .await
        .expect("create service");
    wait_steady(ecs, "main", "web", Duration::from_secs(20)).await;
}

async fn current_sd(ecs: &Client, service: &str) -> ServiceDeployment {
    service_deployments(ecs, "main", service).await.into_iter().next().expect("a service deployment")
}

fn stage(sd: &ServiceDeployment) -> &str {
    sd.lifecycle_stage().map(|s| s.as_str()).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_pause_hook_continue_then_rollback_keeps_production_serving() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("bluegreen");
    let v1 = push_image(&repo, "v1").await;
    let v2 = push_image(&repo, "v2").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let blue = register(&ecs, "web", &v1, &[("SIM_VERSION", "v1")], &[], false).await;
    let config = DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::BlueGreen)
        .bake_time_in_minutes(1) // 3 s at --time-scale 0.05
        .lifecycle_hooks(
            DeploymentLifecycleHook::builder()
                .target_type(DeploymentLifecycleHookTargetType::Pause)
                .lifecycle_stages(DeploymentLifecycleHookStage::PostTestTrafficShift)
                .build(),
        )
        .build();
    create_web(&ecs, &account, &blue, config).await;
    let (prod, test) = sim.listeners("web").await;
    let test = test.expect("a test listener");
    assert_eq!(versions_at(&prod, 4).await, vec!["v1"; 4]);
    assert_eq!(versions_at(&test, 4).await, vec!["v1"; 4]);

    let load =
        load::start(&prod, LoadOptions { max_duration: Duration::from_secs(40), concurrency: 3, ..Default::default() });
    let green = register(&ecs, "web", &v2, &[("SIM_VERSION", "v2")], &[], false).await;
    ecs.update_service().cluster("main").service("web").task_definition(&green).send().await.expect("update service");

    // Held by the PAUSE hook after the test traffic shift.
    let sd = wait_for("the deployment to pause at POST_TEST_TRAFFIC_SHIFT", Duration::from_secs(20), || async {
        let sd = current_sd(&ecs, "web").await;
        let held = stage(&sd) == "POST_TEST_TRAFFIC_SHIFT"
            && sd.lifecycle_hook_details().iter().any(|h| h.status().map(|s| s.as_str()) == Some("AWAITING_ACTION"));
        held.then_some(sd)
    })
    .await;
    assert_eq!(sd.status().map(|s| s.as_str()), Some("IN_PROGRESS"));
    assert_eq!(versions_at(&test, 6).await, vec!["v2"; 6], "test listener serves green");
    assert_eq!(versions_at(&prod, 6).await, vec!["v1"; 6], "production still serves blue");
    tokio::time::sleep(Duration::from_secs(1)).await; // longer than the scaled bake time
    let sd = current_sd(&ecs, "web").await;
    assert_eq!(stage(&sd), "POST_TEST_TRAFFIC_SHIFT", "a PAUSE hook holds until ContinueServiceDeployment");
    let target = sd.target_service_revision().unwrap();
    assert_eq!(target.requested_test_traffic_weight(), Some(100.0));
    assert_eq!(target.requested_production_traffic_weight(), Some(0.0));

    // Continue: production shifts to green; blue stays up during the bake time.
    let hook_id = sd.lifecycle_hook_details()[0].hook_id().unwrap().to_string();
    let sd_arn = sd.service_deployment_arn().unwrap().to_string();
    ecs.continue_service_deployment().service_deployment_arn(&sd_arn).hook_id(&hook_id).send().await.expect("continue");
    wait_for("production to serve green", Duration::from_secs(10), || async {
        (versions_at(&prod, 4).await == vec!["v2"; 4]).then_some(())
    })
    .await;
    let sd = current_sd(&ecs, "web").await;
    assert!(matches!(stage(&sd), "POST_PRODUCTION_TRAFFIC_SHIFT" | "BAKE_TIME"), "still baking: {sd:?}");

    // Roll back during the bake: production returns to blue at once.
    ecs.stop_service_deployment()
        .service_deployment_arn(&sd_arn)
        .stop_type(StopServiceDeploymentStopType::Rollback)
        .send()
        .await
        .expect("stop service deployment");
    wait_for("production to serve blue again", Duration::from_secs(5), || async {
        (versions_at(&prod, 6).await == vec!["v1"; 6]).then_some(())
    })
    .await;
    let sd = wait_for("ROLLBACK_SUCCESSFUL", Duration::from_secs(20), || async {
        let sd = current_sd(&ecs, "web").await;
        (sd.status().map(|s| s.as_str()) == Some("ROLLBACK_SUCCESSFUL")).then_some(sd)
    })
    .await;
    let s = wait_steady(&ecs, "main", "web", Duration::from_secs(20)).await;
    let report = load.stop().await;

    assert_eq!(report.failed, 0, "failed requests on production: {:?}", report.failures);
    assert!(report.saw("v1") && report.saw("v2"), "{:?}", report.versions);
    assert_eq!(s.task_definition(), Some(blue.as_str()));
    assert_eq!(versions_at(&prod, 6).await, vec!["v1"; 6]);
    assert_eq!(versions_at(&test, 6).await, vec!["v1"; 6]);
    assert!(sd.rollback().and_then(|r| r.service_revision_arn()).is_some(), "{sd:?}");
    let events = event_messages(&s);
    assert!(events.iter().any(|e| e.starts_with("(service web) rolling back to deployment ecs-svc/")), "{events:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_deployment_shifts_in_steps_and_succeeds() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("canary");
    let v1 = push_image(&repo, "v1").await;
    let v2 = push_image(&repo, "v2").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let blue = register(&ecs, "web", &v1, &[("SIM_VERSION", "v1")], &[], false).await;
    let config = DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::Canary)
        .bake_time_in_minutes(0)
        .canary_configuration(
            CanaryConfiguration::builder().canary_percent(50.0).canary_bake_time_in_minutes(1).build(),
        )
        .build();
    ecs.create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(&blue)
        .desired_count(1)
        .load_balancers(blue_green_lb(&account))
        .deployment_configuration(config)
        .send()
        .await
        .expect("create service");
    wait_steady(&ecs, "main", "web", Duration::from_secs(20)).await;
    let (prod, _) = sim.listeners("web").await;
    let green = register(&ecs, "web", &v2, &[("SIM_VERSION", "v2")], &[], false).await;
    let load =
        load::start(&prod, LoadOptions { max_duration: Duration::from_secs(30), concurrency: 2, ..Default::default() });
    ecs.update_service().cluster("main").service("web").task_definition(&green).send().await.expect("update service");
    let sd = wait_for("the canary step", Duration::from_secs(20), || async {
        let sd = current_sd(&ecs, "web").await;
        let w = sd.target_service_revision().and_then(|r| r.requested_production_traffic_weight());
        (w == Some(50.0)).then_some(sd)
    })
    .await;
    assert_eq!(stage(&sd), "PRODUCTION_TRAFFIC_SHIFT");
    let sd = wait_for("SUCCESSFUL", Duration::from_secs(20), || async {
        let sd = current_sd(&ecs, "web").await;
        (sd.status().map(|s| s.as_str()) == Some("SUCCESSFUL")).then_some(sd)
    })
    .await;
    let report = load.stop().await;
    assert_eq!(report.failed, 0, "{:?}", report.failures);
    assert!(report.saw("v1") && report.saw("v2"), "{:?}", report.versions);
    assert!(sd.finished_at().is_some());
    let s = wait_steady(&ecs, "main", "web", Duration::from_secs(10)).await;
    assert_eq!(s.task_definition(), Some(green.as_str()));
    assert_eq!(versions_at(&prod, 4).await, vec!["v2"; 4]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_hook_nobody_answers_times_out_and_rolls_back_by_itself() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("hooktimeout");
    let v1 = push_image(&repo, "v1").await;
    let v2 = push_image(&repo, "v2").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let blue = register(&ecs, "web", &v1, &[("SIM_VERSION", "v1")], &[], false).await;
    // One minute (3 s at --time-scale 0.05), then ROLLBACK: what an abandoned hold comes to.
    let timeout = aws_sdk_ecs::types::DeploymentLifecycleHookTimeoutConfiguration::builder()
        .timeout_in_minutes(1)
        .action(aws_sdk_ecs::types::DeploymentLifecycleHookAction::Rollback)
        .build();
    let config = DeploymentConfiguration::builder()
        .strategy(DeploymentStrategy::BlueGreen)
        .lifecycle_hooks(
            DeploymentLifecycleHook::builder()
                .target_type(DeploymentLifecycleHookTargetType::Pause)
                .lifecycle_stages(DeploymentLifecycleHookStage::PostTestTrafficShift)
                .timeout_configuration(timeout)
                .build(),
        )
        .build();
    create_web(&ecs, &account, &blue, config).await;
    let (prod, _) = sim.listeners("web").await;
    let green = register(&ecs, "web", &v2, &[("SIM_VERSION", "v2")], &[], false).await;
    ecs.update_service().cluster("main").service("web").task_definition(&green).send().await.expect("update service");
    let held = wait_for("the hold at POST_TEST_TRAFFIC_SHIFT", Duration::from_secs(20), || async {
        let sd = current_sd(&ecs, "web").await;
        (stage(&sd) == "POST_TEST_TRAFFIC_SHIFT").then_some(std::time::Instant::now())
    })
    .await;
    let sd = wait_for("the hook to time out and ECS to roll back", Duration::from_secs(20), || async {
        let sd = current_sd(&ecs, "web").await;
        (sd.status().map(|s| s.as_str()) == Some("ROLLBACK_SUCCESSFUL")).then_some(sd)
    })
    .await;
    assert!(held.elapsed() >= Duration::from_millis(2500), "held for its timeout first: {:?}", held.elapsed());
    let hook = &sd.lifecycle_hook_details()[0];
    assert_eq!(hook.status().map(|s| s.as_str()), Some("TIMED_OUT"), "{sd:?}");
    assert!(sd.status_reason().is_some_and(|r| r.contains("timed out")), "{sd:?}");
    let s = wait_steady(&ecs, "main", "web", Duration::from_secs(20)).await;
    assert_eq!(s.task_definition(), Some(blue.as_str()));
    assert_eq!(versions_at(&prod, 6).await, vec!["v1"; 6]);
}

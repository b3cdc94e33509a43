//! Rolling updates: a good release rolls out under load without a failed request; a crashing
//! release trips the circuit breaker at its documented threshold and rolls back.

use std::time::Duration;

use super::common::*;
use super::harness::{Sim, push_image, unique, wait_for};
use super::load::{self, LoadOptions};
use crate::support::unique_account;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_rolling_update_completes_with_zero_failed_requests() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("rolling-good");
    let v1 = push_image(&repo, "v1").await;
    let v2 = push_image(&repo, "v2").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let td1 = register(&ecs, "web", &v1, &[("SIM_VERSION", "v1")], &[], true).await;
    ecs.create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(&td1)
        .desired_count(2)
        .load_balancers(load_balancer(&account, "web"))
        .deployment_configuration(rolling_config())
        .send()
        .await
        .expect("create service");
    wait_steady(&ecs, "main", "web", Duration::from_secs(20)).await;
    let (prod, _) = sim.listeners("web").await;
    assert_eq!(versions_at(&prod, 4).await, vec!["v1"; 4]);

    let load =
        load::start(&prod, LoadOptions { max_duration: Duration::from_secs(30), concurrency: 3, ..Default::default() });
    let td2 = register(&ecs, "web", &v2, &[("SIM_VERSION", "v2")], &[], true).await;
    let update_at = aws_sdk_ecs::primitives::DateTime::from(std::time::SystemTime::now());
    assert!(td2.ends_with("task-definition/web:2"), "{td2}");
    ecs.update_service().cluster("main").service("web").task_definition("web:2").send().await.expect("update service");
    let s = wait_for("the v2 deployment to complete", Duration::from_secs(30), || async {
        let s = describe(&ecs, "main", "web").await;
        let done = s.deployments().len() == 1
            && s.deployments()[0].task_definition() == Some(td2.as_str())
            && s.deployments()[0].rollout_state().map(|r| r.as_str()) == Some("COMPLETED")
            && s.running_count() == 2;
        done.then_some(s)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = load.stop().await;

    assert_eq!(report.failed, 0, "failed requests during the rollout: {:?}", report.failures);
    assert!(report.ok > 50, "too few requests to mean anything: {report:?}");
    assert!(report.saw("v1") && report.saw("v2"), "both revisions answered during the rollout: {:?}", report.versions);
    assert_eq!(versions_at(&prod, 4).await, vec!["v2"; 4]);

    let d = &s.deployments()[0];
    assert_eq!(d.failed_tasks(), 0);
    assert_eq!(d.rollout_state_reason(), Some(format!("ECS deployment {} completed.", d.id().unwrap()).as_str()));
    let events = event_messages(&s);
    assert!(events[0] == "(service web) has reached a steady state.", "{events:#?}");
    assert!(events.iter().any(|e| e.starts_with("(service web) has started 2 tasks: (task ")), "{events:#?}");
    let stopped_events: Vec<&String> = events.iter().filter(|e| e.starts_with("(service web) has stopped ")).collect();
    assert!(!stopped_events.is_empty(), "{events:#?}");
    assert!(stopped_events.iter().all(|e| e.contains(" running tasks: (task ")), "{events:#?}");
    assert!(events.iter().any(|e| e.starts_with("(service web) has begun draining connections on ")), "{events:#?}");
    // The old tasks were stopped by the scheduler, not by failures.
    let stopped =
        ecs.list_tasks().cluster("main").service_name("web").desired_status("STOPPED".into()).send().await.unwrap();
    assert_eq!(stopped.task_arns().len(), 2);
    for arn in stopped.task_arns() {
        let t = describe_task(&ecs, "main", arn).await;
        assert_eq!(t.stop_code().map(|c| c.as_str()), Some("ServiceSchedulerInitiated"));
        assert!(
            t.stopped_reason().unwrap_or("").starts_with("Scaling activity initiated by (deployment ecs-svc/"),
            "{t:?}"
        );
    }
    let sds = service_deployments(&ecs, "main", "web").await;
    assert_eq!(sds.len(), 2);
    assert_eq!(sds[0].status().map(|s| s.as_str()), Some("SUCCESSFUL"));
    assert_eq!(sds[0].target_service_revision().map(|r| r.requested_task_count()), Some(2));
    let recent = ecs
        .list_service_deployments()
        .cluster("main")
        .service("web")
        .created_at(aws_sdk_ecs::types::CreatedAt::builder().after(update_at).build())
        .send()
        .await
        .unwrap();
    assert_eq!(recent.service_deployments().len(), 1, "createdAt.after filters");
    assert_eq!(recent.service_deployments()[0].service_deployment_arn(), sds[0].service_deployment_arn());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_revision_trips_the_circuit_breaker_and_rolls_back() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("rolling-crash");
    let v1 = push_image(&repo, "v1").await;
    let v2 = push_image(&repo, "v2").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let td1 = register(&ecs, "api", &v1, &[("SIM_VERSION", "v1")], &[], false).await;
    ecs.create_service()
        .cluster("main")
        .service_name("api")
        .task_definition(&td1)
        .desired_count(2)
        .deployment_configuration(rolling_config())
        .send()
        .await
        .expect("create service");
    let before = wait_steady(&ecs, "main", "api", Duration::from_secs(20)).await;
    let good_id = before.deployments()[0].id().unwrap().to_string();

    // Crashes 2 s (scaled: 100 ms) after starting.
    let td2 = register(&ecs, "api", &v2, &[("SIM_VERSION", "v2"), ("SIM_CRASH_AFTER", "2")], &[], false).await;
    let up =
        ecs.update_service().cluster("main").service("api").task_definition(&td2).send().await.expect("update service");
    let bad_id = up.service().unwrap().deployments()[0].id().unwrap().to_string();
    assert_ne!(bad_id, good_id);

    let sd = wait_for("the rollback to succeed", Duration::from_secs(30), || async {
        let sds = service_deployments(&ecs, "main", "api").await;
        sds.into_iter().find(|sd| sd.status().map(|s| s.as_str()) == Some("ROLLBACK_SUCCESSFUL"))
    })
    .await;
    assert_eq!(
        sd.deployment_circuit_breaker().map(|b| b.threshold()),
        Some(3),
        "threshold for desired 2 is max(3, ceil(0.5*2))"
    );
    assert!(sd.deployment_circuit_breaker().map(|b| b.failure_count()).unwrap_or(0) >= 3, "{sd:?}");
    assert_eq!(sd.target_service_revision().map(|r| r.requested_task_count()), Some(2));
    assert!(sd.rollback().and_then(|r| r.reason()).unwrap_or("").contains("circuit breaker"), "{sd:?}");

    let s = wait_steady(&ecs, "main", "api", Duration::from_secs(20)).await;
    assert_eq!(s.task_definition(), Some(td1.as_str()), "service is back on the last completed revision");
    let events = event_messages(&s);
    let failed_event = format!("(service api) (deployment {bad_id}) deployment failed: tasks failed to start.");
    let rollback_event = format!("(service api) rolling back to deployment {good_id}.");
    let fi = events.iter().position(|e| *e == failed_event).unwrap_or_else(|| panic!("{failed_event} in {events:#?}"));
    let ri =
        events.iter().position(|e| *e == rollback_event).unwrap_or_else(|| panic!("{rollback_event} in {events:#?}"));
    assert!(ri < fi, "rollback is announced after the failure (events are newest first)");
    assert_eq!(events[0], "(service api) has reached a steady state.");

    // The failed revision's tasks: essential container exits, and the breaker tripped at the
    // threshold: three failures before the rollback, no v2 task started after it.
    let rollback_at = s.events()[ri].created_at().unwrap().as_secs_f64();
    let stopped =
        ecs.list_tasks().cluster("main").started_by(&bad_id).desired_status("STOPPED".into()).send().await.unwrap();
    let mut failures_before = 0;
    for arn in stopped.task_arns() {
        let t = describe_task(&ecs, "main", arn).await;
        assert!(t.created_at().unwrap().as_secs_f64() <= rollback_at, "no v2 task starts after the rollback");
        if t.stop_code().map(|c| c.as_str()) == Some("EssentialContainerExited") {
            assert_eq!(t.stopped_reason(), Some("Essential container in task exited"));
            assert_eq!(t.containers()[0].exit_code(), Some(1));
            if t.stopped_at().unwrap().as_secs_f64() <= rollback_at {
                failures_before += 1;
            }
        }
    }
    assert!(
        (3..=4).contains(&failures_before),
        "breaker trips at the 3rd failure (a 4th may race it): {failures_before}"
    );
    // v1 never went away (minimumHealthyPercent 100) and serves on.
    let running = ecs.list_tasks().cluster("main").service_name("api").send().await.unwrap();
    assert_eq!(running.task_arns().len(), 2);
    for arn in running.task_arns() {
        assert_eq!(describe_task(&ecs, "main", arn).await.task_definition_arn(), Some(td1.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_container_health_checks_stop_tasks_and_fail_without_rollback() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = sim.client(&account);
    let repo = unique("rolling-unhealthy");
    let v1 = push_image(&repo, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let td1 = register(&ecs, "worker", &v1, &[("SIM_VERSION", "v1")], &[], true).await;
    let no_rollback = aws_sdk_ecs::types::DeploymentConfiguration::builder()
        .minimum_healthy_percent(100)
        .maximum_percent(200)
        .deployment_circuit_breaker(
            aws_sdk_ecs::types::DeploymentCircuitBreaker::builder().enable(true).rollback(false).build(),
        )
        .build();
    ecs.create_service()
        .cluster("main")
        .service_name("worker")
        .task_definition(&td1)
        .desired_count(1)
        .deployment_configuration(no_rollback)
        .send()
        .await
        .expect("create service");
    wait_steady(&ecs, "main", "worker", Duration::from_secs(20)).await;
    let td2 = register(&ecs, "worker", &v1, &[("SIM_VERSION", "v2"), ("SIM_HEALTH", "fail")], &[], true).await;
    ecs.update_service().cluster("main").service("worker").task_definition(&td2).send().await.expect("update service");
    let s = wait_for("the deployment to fail", Duration::from_secs(30), || async {
        let s = describe(&ecs, "main", "worker").await;
        let failed = s.deployments().iter().find(|d| d.rollout_state().map(|r| r.as_str()) == Some("FAILED")).cloned();
        failed.map(|d| (s, d))
    })
    .await;
    let (s, d) = s;
    assert_eq!(d.task_definition(), Some(td2.as_str()));
    assert_eq!(d.rollout_state_reason(), Some("ECS deployment circuit breaker: tasks failed to start."));
    assert_eq!(d.failed_tasks(), 3);
    assert_eq!(s.task_definition(), Some(td2.as_str()), "no rollback was asked for");
    let stopped = ecs
        .list_tasks()
        .cluster("main")
        .started_by(d.id().unwrap())
        .desired_status("STOPPED".into())
        .send()
        .await
        .unwrap();
    assert!(stopped.task_arns().len() >= 3);
    let t = describe_task(&ecs, "main", &stopped.task_arns()[0]).await;
    assert_eq!(t.stopped_reason(), Some("Task failed container health checks"));
    assert_eq!(t.containers()[0].health_status().map(|h| h.as_str()), Some("UNHEALTHY"));
    let sds = service_deployments(&ecs, "main", "worker").await;
    assert_eq!(sds[0].status().map(|s| s.as_str()), Some("STOPPED"));
    // The old revision keeps serving: minimumHealthyPercent 100 never let it go.
    let running = ecs.list_tasks().cluster("main").service_name("worker").send().await.unwrap();
    let tds: Vec<String> = {
        let mut v = Vec::new();
        for arn in running.task_arns() {
            v.push(describe_task(&ecs, "main", arn).await.task_definition_arn().unwrap_or_default().to_string());
        }
        v
    };
    assert!(tds.contains(&td1), "{tds:?}");
}

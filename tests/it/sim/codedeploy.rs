//! ecs-sim's task sets and CodeDeploy, driven through aws-sdk-ecs and aws-sdk-codedeploy only
//! (no deployer code): the task set API of an EXTERNAL service; a CODE_DEPLOY service's
//! blue/green deployment through CodeDeploy's lifecycle events — held Ready on test traffic,
//! continued, production shifted, the termination wait ended — and StopDeployment's rollback,
//! all under load without a failed production request. The setup helpers are shared with
//! deployer's own CodeDeploy tests (`tests/it/codedeploy.rs`).

use std::time::Duration;

use aws_sdk_codedeploy::types::{
    AutoRollbackConfiguration, AutoRollbackEvent, BlueGreenDeploymentConfiguration, BlueInstanceTerminationOption,
    ComputePlatform, DeploymentOption, DeploymentReadyAction, DeploymentReadyOption, DeploymentStatus, DeploymentStyle,
    DeploymentType, DeploymentWaitType, EcsService, InstanceAction, LoadBalancerInfo, RevisionLocation,
    RevisionLocationType, TargetGroupInfo, TargetGroupPairInfo, TrafficRoute,
};
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{DeploymentController, DeploymentControllerType, Scale, ScaleUnit, Service};

use super::common::{load_balancer, register, versions_at};
use super::harness::{Sim, push_image, unique, wait_for};
use super::load::{self, LoadOptions};
use crate::support::{credentials_for, ecs_client, unique_account};

/// aws-sdk-codedeploy pointed at the sim's CodeDeploy endpoint, as `account`.
pub fn codedeploy_client(sim_url: &str, account: &str) -> aws_sdk_codedeploy::Client {
    let creds = credentials_for(account);
    let conf = aws_sdk_codedeploy::config::Builder::new()
        .endpoint_url(format!("{sim_url}/codedeploy"))
        .region(aws_sdk_codedeploy::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_codedeploy::config::Credentials::new(
            creds.access_key_id,
            creds.secret_access_key,
            Some(creds.session_token),
            None,
            "test",
        ))
        .http_client(aws_smithy_http_client::Builder::new().build_http())
        .behavior_version_latest()
        .build();
    aws_sdk_codedeploy::Client::from_conf(conf)
}

/// Creates service `name` in cluster `main` under the CODE_DEPLOY controller, `desired` tasks
/// of `task_definition` behind target group `blue`, and waits until its task set is steady.
pub async fn code_deploy_service(ecs: &Client, account: &str, name: &str, task_definition: &str, desired: i32) {
    ecs.create_service()
        .cluster("main")
        .service_name(name)
        .task_definition(task_definition)
        .desired_count(desired)
        .load_balancers(load_balancer(account, "blue"))
        .deployment_controller(
            DeploymentController::builder().r#type(DeploymentControllerType::CodeDeploy).build().expect("controller"),
        )
        .send()
        .await
        .expect("create service");
    wait_task_set_steady(ecs, name, Duration::from_secs(30)).await;
}

/// Waits until the service runs one task set, PRIMARY and STEADY_STATE, with its desired count.
pub async fn wait_task_set_steady(ecs: &Client, service: &str, limit: Duration) -> Service {
    wait_for(&format!("{service}'s one task set to be steady"), limit, || async {
        let out = ecs.describe_services().cluster("main").services(service).send().await.expect("describe");
        let s = out.services().first().cloned()?;
        let sets = s.task_sets();
        let steady = sets.len() == 1
            && sets[0].status() == Some("PRIMARY")
            && sets[0].stability_status().map(|x| x.as_str()) == Some("STEADY_STATE")
            && sets[0].running_count() == s.desired_count();
        steady.then_some(s)
    })
    .await
}

/// How a test's deployment group behaves.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    /// `deploymentReadyOption` STOP_DEPLOYMENT with this wait (minutes); `None`:
    /// CONTINUE_DEPLOYMENT (reroute without waiting).
    pub ready_wait_minutes: Option<i32>,
    pub termination_wait_minutes: i32,
    pub test_route: bool,
    pub auto_rollback: bool,
    pub config: Option<String>,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            ready_wait_minutes: Some(60),
            termination_wait_minutes: 5,
            test_route: true,
            auto_rollback: true,
            config: None,
        }
    }
}

/// Application `app` (ECS) and deployment group `group` for `main`/`service`.
pub async fn create_group(
    cd: &aws_sdk_codedeploy::Client,
    account: &str,
    app: &str,
    group: &str,
    service: &str,
    g: &GroupSettings,
) {
    if cd.get_application().application_name(app).send().await.is_err() {
        cd.create_application()
            .application_name(app)
            .compute_platform(ComputePlatform::Ecs)
            .send()
            .await
            .expect("create application");
    }
    let listener = |n: u32| format!("arn:aws:elasticloadbalancing:us-east-1:{account}:listener/app/web/1/{n}");
    let mut pair = TargetGroupPairInfo::builder()
        .target_groups(TargetGroupInfo::builder().name("blue").build())
        .target_groups(TargetGroupInfo::builder().name("green").build())
        .prod_traffic_route(TrafficRoute::builder().listener_arns(listener(1)).build());
    if g.test_route {
        pair = pair.test_traffic_route(TrafficRoute::builder().listener_arns(listener(2)).build());
    }
    let ready = match g.ready_wait_minutes {
        Some(m) => DeploymentReadyOption::builder()
            .action_on_timeout(DeploymentReadyAction::StopDeployment)
            .wait_time_in_minutes(m)
            .build(),
        None => DeploymentReadyOption::builder().action_on_timeout(DeploymentReadyAction::ContinueDeployment).build(),
    };
    let mut req = cd
        .create_deployment_group()
        .application_name(app)
        .deployment_group_name(group)
        .service_role_arn(format!("arn:aws:iam::{account}:role/codedeploy-ecs"))
        .deployment_style(
            DeploymentStyle::builder()
                .deployment_type(DeploymentType::BlueGreen)
                .deployment_option(DeploymentOption::WithTrafficControl)
                .build(),
        )
        .blue_green_deployment_configuration(
            BlueGreenDeploymentConfiguration::builder()
                .deployment_ready_option(ready)
                .terminate_blue_instances_on_deployment_success(
                    BlueInstanceTerminationOption::builder()
                        .action(InstanceAction::Terminate)
                        .termination_wait_time_in_minutes(g.termination_wait_minutes)
                        .build(),
                )
                .build(),
        )
        .load_balancer_info(LoadBalancerInfo::builder().target_group_pair_info_list(pair.build()).build())
        .ecs_services(EcsService::builder().cluster_name("main").service_name(service).build())
        .auto_rollback_configuration(
            AutoRollbackConfiguration::builder()
                .enabled(g.auto_rollback)
                .events(AutoRollbackEvent::DeploymentFailure)
                .events(AutoRollbackEvent::DeploymentStopOnRequest)
                .build(),
        );
    if let Some(c) = &g.config {
        req = req.deployment_config_name(c);
    }
    req.send().await.expect("create deployment group");
}

/// A JSON AppSpec deploying `task_definition` with container `app` on port 8080.
pub fn appspec(task_definition: &str) -> String {
    serde_json::json!({
        "version": 0.0,
        "Resources": [{"TargetService": {"Type": "AWS::ECS::Service", "Properties": {
            "TaskDefinition": task_definition,
            "LoadBalancerInfo": {"ContainerName": "app", "ContainerPort": 8080}
        }}}]
    })
    .to_string()
}

pub async fn deployment(cd: &aws_sdk_codedeploy::Client, id: &str) -> aws_sdk_codedeploy::types::DeploymentInfo {
    cd.get_deployment().deployment_id(id).send().await.expect("get deployment").deployment_info().cloned().unwrap()
}

pub async fn ecs_target(cd: &aws_sdk_codedeploy::Client, id: &str) -> aws_sdk_codedeploy::types::EcsTarget {
    let targets = cd.list_deployment_targets().deployment_id(id).send().await.expect("list targets");
    let target = targets.target_ids().first().cloned().expect("one target");
    let out = cd.get_deployment_target().deployment_id(id).target_id(target).send().await.expect("get target");
    out.deployment_target().and_then(|t| t.ecs_target()).cloned().expect("an ECS target")
}

pub async fn wait_status(
    cd: &aws_sdk_codedeploy::Client,
    id: &str,
    status: DeploymentStatus,
    limit: Duration,
) -> aws_sdk_codedeploy::types::DeploymentInfo {
    wait_for(&format!("deployment {id} to be {status:?}"), limit, || async {
        let d = deployment(cd, id).await;
        (d.status() == Some(&status)).then_some(d)
    })
    .await
}

/// CreateDeployment of `task_definition` to `app`/`dg`, not sent yet.
fn create_request(
    cd: &aws_sdk_codedeploy::Client,
    task_definition: &str,
) -> aws_sdk_codedeploy::operation::create_deployment::builders::CreateDeploymentFluentBuilder {
    let content = aws_sdk_codedeploy::types::AppSpecContent::builder().content(appspec(task_definition)).build();
    cd.create_deployment().application_name("app").deployment_group_name("dg").revision(
        RevisionLocation::builder()
            .revision_type(RevisionLocationType::AppSpecContent)
            .app_spec_content(content)
            .build(),
    )
}

async fn create_deployment(cd: &aws_sdk_codedeploy::Client, task_definition: &str) -> String {
    let out = create_request(cd, task_definition).send().await.expect("create deployment");
    out.deployment_id().expect("id").to_string()
}

fn event_statuses(t: &aws_sdk_codedeploy::types::EcsTarget) -> Vec<(String, String)> {
    t.lifecycle_events()
        .iter()
        .map(|e| {
            (
                e.lifecycle_event_name().unwrap_or_default().to_string(),
                e.status().map(|s| s.as_str()).unwrap_or("").into(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_service_runs_the_task_sets_its_controller_creates() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let ecs = ecs_client(&sim.url, &account);
    let repo = unique("tasksets");
    let image = push_image(&repo, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let v1 = register(&ecs, &repo, &image, &[("SIM_VERSION", "v1")], &[], false).await;
    let v2 = register(&ecs, &repo, &image, &[("SIM_VERSION", "v2")], &[], false).await;
    ecs.create_service()
        .cluster("main")
        .service_name("ext")
        .desired_count(2)
        .task_definition(&v1)
        .deployment_controller(
            DeploymentController::builder().r#type(DeploymentControllerType::External).build().unwrap(),
        )
        .send()
        .await
        .expect("create service");
    let s = ecs.describe_services().cluster("main").services("ext").send().await.unwrap();
    assert!(s.services()[0].task_sets().is_empty() && s.services()[0].deployments().is_empty(), "{s:?}");

    let a = ecs.create_task_set().cluster("main").service("ext").task_definition(&v1).external_id("blue").send().await;
    let a = a.expect("create task set").task_set().cloned().unwrap();
    assert_eq!(a.status(), Some("PRIMARY"), "the first task set is primary");
    let half = Scale::builder().unit(ScaleUnit::Percent).value(50.0).build();
    let b = ecs.create_task_set().cluster("main").service("ext").task_definition(&v2).scale(half).send().await;
    let b = b.expect("create task set").task_set().cloned().unwrap();
    assert_eq!((b.status(), b.computed_desired_count()), (Some("ACTIVE"), 1));
    let running = |want: [i32; 2]| {
        let ecs = ecs.clone();
        let ids = [a.id().unwrap().to_string(), b.id().unwrap().to_string()];
        async move {
            let out = ecs.describe_task_sets().cluster("main").service("ext").send().await.ok()?;
            let count = |id: &str| out.task_sets().iter().find(|t| t.id() == Some(id)).map(|t| t.running_count());
            (count(&ids[0]) == Some(want[0]) && count(&ids[1]) == Some(want[1])).then_some(())
        }
    };
    wait_for("2 + 1 running tasks", Duration::from_secs(20), || running([2, 1])).await;

    let out = ecs.update_service_primary_task_set().cluster("main").service("ext").primary_task_set(b.id().unwrap());
    assert_eq!(out.send().await.expect("promote").task_set().unwrap().status(), Some("PRIMARY"));
    let s = ecs.describe_services().cluster("main").services("ext").send().await.unwrap();
    assert_eq!(s.services()[0].task_definition(), Some(v2.as_str()), "the primary task set's revision");
    let e = ecs.delete_task_set().cluster("main").service("ext").task_set(b.id().unwrap()).send().await.unwrap_err();
    assert!(format!("{:?}", e.into_service_error()).contains("primary task set"));
    let gone = ecs.delete_task_set().cluster("main").service("ext").task_set(a.id().unwrap()).send().await;
    assert_eq!(gone.expect("delete").task_set().unwrap().status(), Some("DRAINING"));
    wait_for("the deleted task set to drain away", Duration::from_secs(20), || async {
        let out = ecs.describe_task_sets().cluster("main").service("ext").send().await.ok()?;
        (out.task_sets().len() == 1).then_some(())
    })
    .await;
    let e = ecs.update_service().cluster("main").service("ext").task_definition(&v1).send().await.unwrap_err();
    assert!(format!("{:?}", e.into_service_error()).contains("EXTERNAL deployment controller"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_codedeploy_blue_green_walks_its_lifecycle_events_then_stop_rolls_back() {
    let sim = tokio::task::spawn_blocking(Sim::start).await.unwrap();
    let account = unique_account();
    let (ecs, cd) = (ecs_client(&sim.url, &account), codedeploy_client(&sim.url, &account));
    let repo = unique("codedeploy");
    let image = push_image(&repo, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.unwrap();
    let v1 = register(&ecs, &repo, &image, &[("SIM_VERSION", "v1")], &[], false).await;
    let v2 = register(&ecs, &repo, &image, &[("SIM_VERSION", "v2")], &[], false).await;
    let v3 = register(&ecs, &repo, &image, &[("SIM_VERSION", "v3")], &[], false).await;
    code_deploy_service(&ecs, &account, "web", &v1, 2).await;
    let e = ecs.update_service().cluster("main").service("web").task_definition(&v2).send().await.unwrap_err();
    assert!(format!("{:?}", e.into_service_error()).contains("Use AWS CodeDeploy to trigger a new deployment"));
    create_group(&cd, &account, "app", "dg", "web", &GroupSettings::default()).await;
    let (prod, test) = sim.listeners("web").await;
    let test = test.expect("a CODE_DEPLOY service has a test listener");
    let traffic =
        load::start(&prod, LoadOptions { max_duration: Duration::from_secs(60), concurrency: 2, ..Default::default() });

    let id = create_deployment(&cd, &v2).await;
    let busy = create_request(&cd, &v3).send().await.unwrap_err();
    assert!(format!("{:?}", busy.into_service_error()).contains("already has an active Deployment"));
    wait_status(&cd, &id, DeploymentStatus::Ready, Duration::from_secs(30)).await;
    let t = ecs_target(&cd, &id).await;
    assert_eq!(t.target_id(), Some("main:web"));
    let events = event_statuses(&t);
    assert_eq!(events.len(), 8, "{events:?}");
    assert!(events[..5].iter().all(|(_, s)| s == "Succeeded") && events[5..].iter().all(|(_, s)| s == "Pending"));
    let green = t.task_sets_info().iter().find(|s| s.task_set_label().map(|l| l.as_str()) == Some("Green")).unwrap();
    assert_eq!((green.traffic_weight(), green.status()), (0.0, Some("ACTIVE")));
    assert_eq!(green.target_group().and_then(|g| g.name()), Some("green"));
    assert_eq!(versions_at(&test, 6).await, vec!["v2"; 6], "test listener on green while Ready");
    assert_eq!(versions_at(&prod, 6).await, vec!["v1"; 6], "production on blue while Ready");
    let e = cd.continue_deployment().deployment_id(&id).deployment_wait_type(DeploymentWaitType::TerminationWait);
    assert!(format!("{:?}", e.send().await.unwrap_err().into_service_error()).contains("not waiting"));

    cd.continue_deployment()
        .deployment_id(&id)
        .deployment_wait_type(DeploymentWaitType::ReadyWait)
        .send()
        .await
        .unwrap();
    let d = wait_for("the termination wait", Duration::from_secs(20), || async {
        let d = deployment(&cd, &id).await;
        d.instance_termination_wait_time_started().then_some(d)
    })
    .await;
    assert_eq!(d.status(), Some(&DeploymentStatus::InProgress), "blue is kept for the termination wait");
    assert_eq!(versions_at(&prod, 6).await, vec!["v2"; 6]);
    let s = ecs.describe_services().cluster("main").services("web").send().await.unwrap();
    let s = &s.services()[0];
    assert_eq!((s.task_definition(), s.task_sets().len()), (Some(v2.as_str()), 2), "green PRIMARY, blue kept");
    assert!(event_statuses(&ecs_target(&cd, &id).await).iter().all(|(_, s)| s == "Succeeded"));
    cd.continue_deployment()
        .deployment_id(&id)
        .deployment_wait_type(DeploymentWaitType::TerminationWait)
        .send()
        .await
        .unwrap();
    wait_status(&cd, &id, DeploymentStatus::Succeeded, Duration::from_secs(10)).await;
    wait_task_set_steady(&ecs, "web", Duration::from_secs(20)).await;

    // The next deployment is stopped with rollback while held: production never leaves v2.
    let id = create_deployment(&cd, &v3).await;
    wait_status(&cd, &id, DeploymentStatus::Ready, Duration::from_secs(30)).await;
    assert_eq!(versions_at(&test, 4).await, vec!["v3"; 4]);
    cd.stop_deployment().deployment_id(&id).auto_rollback_enabled(true).send().await.expect("stop");
    let d = wait_status(&cd, &id, DeploymentStatus::Stopped, Duration::from_secs(10)).await;
    let rollback =
        d.rollback_info().and_then(|r| r.rollback_deployment_id()).expect("a rollback deployment").to_string();
    let r = wait_status(&cd, &rollback, DeploymentStatus::Succeeded, Duration::from_secs(20)).await;
    assert_eq!(r.creator().map(|c| c.as_str()), Some("codeDeployRollback"));
    let s = wait_task_set_steady(&ecs, "web", Duration::from_secs(20)).await;
    assert_eq!(s.task_definition(), Some(v2.as_str()));
    assert_eq!(versions_at(&test, 4).await, vec!["v2"; 4]);
    let report = traffic.stop().await;
    assert_eq!(report.failed, 0, "failed production requests: {:?}", report.failures);
    assert!(report.saw("v1") && report.saw("v2") && !report.saw("v3"), "{:?}", report.versions);
}

//! Shared setup of the sim tests: task definitions, services and waiting for their states.

use std::time::Duration;

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    ContainerDefinition, DeploymentCircuitBreaker, DeploymentConfiguration, HealthCheck, KeyValuePair, LoadBalancer,
    Secret, Service, ServiceDeployment, Task,
};

use super::harness::wait_for;

/// Registers a one-container task definition running sim-app with `env` and `secrets`.
pub async fn register(
    ecs: &Client,
    family: &str,
    image: &str,
    env: &[(&str, &str)],
    secrets: &[(&str, &str)],
    health: bool,
) -> String {
    let mut c = ContainerDefinition::builder().name("app").image(image).essential(true);
    for (k, v) in env {
        c = c.environment(KeyValuePair::builder().name(*k).value(*v).build());
    }
    for (k, v) in secrets {
        c = c.secrets(Secret::builder().name(*k).value_from(*v).build().expect("secret"));
    }
    if health {
        c = c.health_check(
            HealthCheck::builder()
                .command("CMD-SHELL")
                .command("curl -f http://localhost:8080/health || exit 1")
                .interval(5)
                .timeout(2)
                .retries(2)
                .start_period(0)
                .build()
                .expect("health check"),
        );
    }
    let out = ecs
        .register_task_definition()
        .family(family)
        .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
        .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .container_definitions(c.build())
        .send()
        .await
        .expect("register task definition");
    out.task_definition().and_then(|t| t.task_definition_arn()).expect("arn").to_string()
}

pub fn load_balancer(account: &str, name: &str) -> LoadBalancer {
    LoadBalancer::builder()
        .target_group_arn(format!(
            "arn:aws:elasticloadbalancing:us-east-1:{account}:targetgroup/{name}/0123456789abcdef"
        ))
        .container_name("app")
        .container_port(8080)
        .build()
}

pub fn rolling_config() -> DeploymentConfiguration {
    DeploymentConfiguration::builder()
        .minimum_healthy_percent(100)
        .maximum_percent(200)
        .deployment_circuit_breaker(DeploymentCircuitBreaker::builder().enable(true).rollback(true).build())
        .build()
}

/// Service `web` of 2 tasks of `td` in `cluster` behind a load balancer, rolling with the
/// circuit breaker; returns once it is steady.
pub async fn web_service(ecs: &Client, account: &str, cluster: &str, td: &str) -> Service {
    ecs.create_service()
        .cluster(cluster)
        .service_name("web")
        .task_definition(td)
        .desired_count(2)
        .load_balancers(load_balancer(account, "web"))
        .deployment_configuration(rolling_config())
        .send()
        .await
        .expect("create service");
    wait_steady(ecs, cluster, "web", Duration::from_secs(30)).await
}

pub async fn describe(ecs: &Client, cluster: &str, service: &str) -> Service {
    let out = ecs.describe_services().cluster(cluster).services(service).send().await.expect("describe services");
    out.services().first().cloned().expect("service")
}

/// Waits until the primary deployment is COMPLETED, alone, with `desired` running tasks.
pub async fn wait_steady(ecs: &Client, cluster: &str, service: &str, limit: Duration) -> Service {
    wait_for(&format!("{service} to reach a steady state"), limit, || async {
        let s = describe(ecs, cluster, service).await;
        let d = s.deployments();
        let steady = d.len() == 1
            && d[0].rollout_state().map(|r| r.as_str()) == Some("COMPLETED")
            && d[0].running_count() == s.desired_count();
        steady.then_some(s)
    })
    .await
}

/// A steady service `web` in a new cluster `main`: `desired` sim-app tasks of a family named
/// after `prefix` running `v1`, behind a load balancer. Returns (family, image, v1's ARN).
pub async fn steady_web_service(ecs: &Client, account: &str, prefix: &str, desired: i32) -> (String, String, String) {
    let family = super::harness::unique(prefix);
    let image = super::harness::push_image(&family, "v1").await;
    ecs.create_cluster().cluster_name("main").send().await.expect("create cluster");
    let v1 = register(ecs, &family, &image, &[("SIM_VERSION", "v1")], &[], false).await;
    ecs.create_service()
        .cluster("main")
        .service_name("web")
        .task_definition(&v1)
        .desired_count(desired)
        .load_balancers(load_balancer(account, "web"))
        .send()
        .await
        .expect("create service");
    wait_steady(ecs, "main", "web", Duration::from_secs(30)).await;
    (family, image, v1)
}

pub async fn describe_task(ecs: &Client, cluster: &str, arn: &str) -> Task {
    let out = ecs.describe_tasks().cluster(cluster).tasks(arn).send().await.expect("describe tasks");
    out.tasks().first().cloned().expect("task")
}

/// Waits until a task is STOPPED and returns it.
pub async fn wait_stopped(ecs: &Client, cluster: &str, arn: &str, limit: Duration) -> Task {
    wait_for("task to stop", limit, || async {
        let t = describe_task(ecs, cluster, arn).await;
        (t.last_status() == Some("STOPPED")).then_some(t)
    })
    .await
}

pub async fn service_deployments(ecs: &Client, cluster: &str, service: &str) -> Vec<ServiceDeployment> {
    let list = ecs
        .list_service_deployments()
        .cluster(cluster)
        .service(service)
        .send()
        .await
        .expect("list service deployments");
    let arns: Vec<String> =
        list.service_deployments().iter().filter_map(|b| b.service_deployment_arn().map(str::to_string)).collect();
    if arns.is_empty() {
        return Vec::new();
    }
    let out = ecs
        .describe_service_deployments()
        .set_service_deployment_arns(Some(arns))
        .send()
        .await
        .expect("describe service deployments");
    out.service_deployments().to_vec()
}

pub fn event_messages(s: &Service) -> Vec<String> {
    s.events().iter().filter_map(|e| e.message().map(str::to_string)).collect()
}

/// All answers of a few GETs to `url` (versions), to see which revision a listener serves.
pub async fn versions_at(url: &str, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for _ in 0..n {
        let v: serde_json::Value = client.get(url).send().await.expect("listener").json().await.expect("json");
        out.push(v["version"].as_str().unwrap_or("?").to_string());
    }
    out
}

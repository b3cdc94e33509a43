//! The ECS side of a one-off task: read the service's placement (network configuration, launch
//! type or capacity provider strategy, platform version), RunTask with `startedBy = deployer`
//! and the command/environment overrides, poll DescribeTasks at the deploy's adaptive pace
//! until STOPPED, and StopTask on `--timeout` or SIGINT/SIGTERM (then wait, bounded, for
//! STOPPED so the run ends in a known state). The verdict itself is `super::failure`.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{
    CapacityProviderStrategyItem, ContainerDefinition, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, Task, TaskOverride,
};

use super::{ContainerExit, RunResult, RunTaskError, RunTaskReport, TaskEnd, failure, logs};
use crate::deploy::Cancel;
use crate::deploy::watch::{Pacing, describe_service};

/// Who started the task, as ListTasks(startedBy) and the console show it.
pub const STARTED_BY: &str = "deployer";

/// Where and how a service's tasks run; a one-off task gets the same.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    pub launch_type: Option<LaunchType>,
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    pub platform_version: Option<String>,
    pub network_configuration: Option<NetworkConfiguration>,
}

fn api<E>(op: &'static str, e: aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> RunTaskError
where
    E: std::error::Error + aws_sdk_ecs::error::ProvideErrorMetadata + 'static,
{
    RunTaskError::Api { op, message: crate::aws::auth::sdk_message(&e) }
}

impl Placement {
    /// The service's placement and the task definition it runs now.
    pub async fn of_service(ecs: &Client, cluster: &str, service: &str) -> Result<(Placement, String), RunTaskError> {
        let (svc, view) =
            describe_service(ecs, cluster, service).await.map_err(|e| RunTaskError::Input(e.to_string()))?;
        let strategy = svc.capacity_provider_strategy().to_vec();
        // A launch type and a capacity provider strategy exclude each other in RunTask.
        let launch_type =
            svc.launch_type().filter(|l| strategy.is_empty() && LaunchType::values().contains(&l.as_str())).cloned();
        let placement = Placement {
            launch_type,
            capacity_provider_strategy: strategy,
            platform_version: svc.platform_version().filter(|p| !p.is_empty()).map(str::to_string),
            network_configuration: svc.network_configuration().cloned(),
        };
        Ok((placement, view.task_definition))
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub cluster: String,
    /// ARN, family or family:revision.
    pub task_definition: String,
    /// The container the command and environment apply to (optional with one container).
    pub container: Option<String>,
    /// Empty: the task definition's own command.
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub placement: Placement,
    pub timeout: Duration,
    /// Last awslogs lines to show on failure (0: none).
    pub log_lines: usize,
}

/// The container overrides go to: the named one, else the only one.
fn target_container(defs: &[ContainerDefinition], wanted: Option<&str>, td: &str) -> Result<String, RunTaskError> {
    let names: Vec<&str> = defs.iter().filter_map(|d| d.name()).collect();
    match wanted {
        Some(w) if names.contains(&w) => Ok(w.to_string()),
        Some(w) => Err(RunTaskError::Input(format!(
            "container {w:?} is not in {td} (its containers: {}); fix --container / pre-deploy.container",
            names.join(", ")
        ))),
        None if names.len() == 1 => Ok(names[0].to_string()),
        None => Err(RunTaskError::Input(format!(
            "{td} has {} containers ({}): name the one to run the command in with --container / pre-deploy.container",
            names.len(),
            names.join(", ")
        ))),
    }
}

fn task_end(task: &Task, defs: &[ContainerDefinition]) -> TaskEnd {
    let essential =
        |name: &str| defs.iter().find(|d| d.name() == Some(name)).is_none_or(|d| d.essential().unwrap_or(true));
    TaskEnd {
        last_status: task.last_status().unwrap_or_default().to_string(),
        stop_code: task.stop_code().map(|c| c.as_str().to_string()),
        stopped_reason: task.stopped_reason().map(str::to_string),
        containers: task
            .containers()
            .iter()
            .map(|c| {
                let name = c.name().unwrap_or_default().to_string();
                ContainerExit {
                    essential: essential(&name),
                    name,
                    exit_code: c.exit_code(),
                    reason: c.reason().map(str::to_string),
                }
            })
            .collect(),
    }
}

/// Run the task and wait for its end. Errors are failures before anything ran (bad input,
/// RunTask refused); once the task exists the result is a report.
pub async fn run(
    ecs: &Client,
    config: &SdkConfig,
    req: &Request,
    cancel: &Cancel,
) -> Result<RunTaskReport, RunTaskError> {
    let started = Instant::now();
    let td = ecs
        .describe_task_definition()
        .task_definition(&req.task_definition)
        .send()
        .await
        .map_err(|e| api("DescribeTaskDefinition", e))?;
    let td = td
        .task_definition()
        .ok_or_else(|| RunTaskError::Input(format!("task definition {:?} was not found", req.task_definition)))?;
    let td_arn = td.task_definition_arn().unwrap_or(&req.task_definition).to_string();
    let defs = td.container_definitions().to_vec();
    let overriding = !req.command.is_empty() || !req.env.is_empty();
    let container = if overriding || req.container.is_some() {
        target_container(&defs, req.container.as_deref(), &td_arn)?
    } else {
        defs.iter().find(|d| d.essential().unwrap_or(true)).and_then(|d| d.name()).unwrap_or_default().to_string()
    };

    let mut call = ecs
        .run_task()
        .cluster(&req.cluster)
        .task_definition(&td_arn)
        .count(1)
        .started_by(STARTED_BY)
        .set_launch_type(req.placement.launch_type.clone())
        .set_platform_version(req.placement.platform_version.clone())
        .set_network_configuration(req.placement.network_configuration.clone());
    if !req.placement.capacity_provider_strategy.is_empty() {
        call = call.set_capacity_provider_strategy(Some(req.placement.capacity_provider_strategy.clone()));
    }
    if overriding {
        let mut o = ContainerOverride::builder().name(&container);
        if !req.command.is_empty() {
            o = o.set_command(Some(req.command.clone()));
        }
        for (k, v) in &req.env {
            o = o.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        call = call.overrides(TaskOverride::builder().container_overrides(o.build()).build());
    }
    let out = call.send().await.map_err(|e| api("RunTask", e))?;
    let Some(task_arn) = out.tasks().first().and_then(|t| t.task_arn()).map(str::to_string) else {
        let reasons: Vec<String> = out
            .failures()
            .iter()
            .map(|f| format!("{} ({})", f.reason().unwrap_or("unknown"), f.detail().unwrap_or("no detail")))
            .collect();
        return Err(RunTaskError::NotStarted(if reasons.is_empty() {
            "no task and no reason".into()
        } else {
            reasons.join("; ")
        }));
    };
    tracing::info!(
        "started task {task_arn} of {td_arn}: {}",
        if req.command.is_empty() { "its own command".to_string() } else { req.command.join(" ") }
    );

    let mut report = RunTaskReport {
        cluster: req.cluster.clone(),
        task_definition_arn: td_arn,
        task_arn: task_arn.clone(),
        container,
        command: req.command.clone(),
        result: RunResult::Succeeded,
        failure: None,
        stop_code: None,
        stopped_reason: None,
        containers: Vec::new(),
        logs: Vec::new(),
        duration_ms: 0,
        polls: 0,
    };
    let (end, stopped_by_us) = wait(ecs, req, &task_arn, &defs, cancel, started, &mut report).await;
    report.duration_ms = started.elapsed().as_millis() as u64;
    report.stop_code = end.stop_code.clone();
    report.stopped_reason = end.stopped_reason.clone();
    report.containers = end.containers.clone();
    match stopped_by_us {
        Some(result) => {
            report.result = result;
            report.failure.get_or_insert_with(|| match result {
                RunResult::Cancelled => "cancelled (SIGINT/SIGTERM): deployer stopped the task".into(),
                _ => format!("still running after --timeout {}s: deployer stopped the task", req.timeout.as_secs()),
            });
        }
        None => {
            report.failure = failure(&end);
            report.result = if report.failure.is_some() { RunResult::Failed } else { RunResult::Succeeded };
        }
    }
    if !report.succeeded() && req.log_lines > 0 {
        let task_id = task_arn.rsplit('/').next().unwrap_or(&task_arn);
        for src in defs.iter().filter_map(|d| logs::source(d, task_id)) {
            report.logs.push(logs::tail(config, &src, req.log_lines).await);
        }
    }
    Ok(report)
}

/// Poll until STOPPED. Returns the task as last seen and, when deployer stopped it, why.
async fn wait(
    ecs: &Client,
    req: &Request,
    task_arn: &str,
    defs: &[ContainerDefinition],
    cancel: &Cancel,
    started: Instant,
    report: &mut RunTaskReport,
) -> (TaskEnd, Option<RunResult>) {
    let mut pacing = Pacing::from_env();
    let mut last = TaskEnd::default();
    let mut errors = 0;
    let mut stopped_by_us: Option<(RunResult, Instant)> = None;
    loop {
        match describe(ecs, &req.cluster, task_arn).await {
            Ok(task) => {
                errors = 0;
                report.polls += 1;
                let now = task_end(&task, defs);
                let changed = now != last;
                last = now;
                if last.last_status == "STOPPED" {
                    return (last, stopped_by_us.map(|(r, _)| r));
                }
                if stopped_by_us.is_none() {
                    let why = if cancel.is_cancelled() {
                        Some((RunResult::Cancelled, "deployer: cancelled (SIGINT/SIGTERM)".to_string()))
                    } else if started.elapsed() >= req.timeout {
                        Some((RunResult::TimedOut, format!("deployer: --timeout {}s passed", req.timeout.as_secs())))
                    } else {
                        None
                    };
                    if let Some((result, reason)) = why {
                        tracing::warn!("stopping task {task_arn}: {reason}");
                        if let Err(e) =
                            ecs.stop_task().cluster(&req.cluster).task(task_arn).reason(&reason).send().await
                        {
                            report.failure =
                                Some(format!("{reason}, but StopTask failed: {}", crate::aws::auth::sdk_message(&e)));
                            return (last, Some(result));
                        }
                        stopped_by_us = Some((result, Instant::now()));
                    }
                }
                if let Some((result, at)) = stopped_by_us {
                    // ECS sends SIGTERM, then SIGKILL after the stop timeout (30 s by default).
                    if at.elapsed() > Duration::from_secs(120) {
                        report.failure = Some(format!(
                            "deployer stopped the task, but it was still {} two minutes later",
                            last.last_status
                        ));
                        return (last, Some(result));
                    }
                    tokio::time::sleep(pacing.initial).await;
                    continue;
                }
                let wait =
                    pacing.next(changed).min(req.timeout.saturating_sub(started.elapsed()) + Duration::from_millis(50));
                cancel.sleep(wait).await;
            }
            Err(e) => {
                errors += 1;
                tracing::warn!("observing task {task_arn} failed ({errors} in a row): {e}");
                if errors >= 5 {
                    report.failure = Some(format!("lost sight of the task: {e}"));
                    return (last, Some(RunResult::Failed));
                }
                tokio::time::sleep(pacing.next(false)).await;
            }
        }
    }
}

async fn describe(ecs: &Client, cluster: &str, task_arn: &str) -> Result<Task, RunTaskError> {
    let out =
        ecs.describe_tasks().cluster(cluster).tasks(task_arn).send().await.map_err(|e| api("DescribeTasks", e))?;
    out.tasks().first().cloned().ok_or_else(|| RunTaskError::Api {
        op: "DescribeTasks",
        message: format!(
            "task {task_arn} is missing ({})",
            out.failures().first().and_then(|f| f.reason()).unwrap_or("no reason given")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_go_to_the_named_or_the_only_container() {
        let defs = |names: &[&str]| -> Vec<ContainerDefinition> {
            names.iter().map(|n| ContainerDefinition::builder().name(*n).build()).collect()
        };
        assert_eq!(target_container(&defs(&["web"]), None, "td").unwrap(), "web");
        assert_eq!(target_container(&defs(&["web", "log"]), Some("web"), "td").unwrap(), "web");
        let err = target_container(&defs(&["web", "log"]), None, "td").unwrap_err().to_string();
        assert!(err.contains("td has 2 containers (web, log): name the one"), "{err}");
        let err = target_container(&defs(&["web"]), Some("wbe"), "td").unwrap_err().to_string();
        assert!(err.contains("container \"wbe\" is not in td (its containers: web)"), "{err}");
    }
}

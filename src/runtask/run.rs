//! The ECS side of a one-off task: RunTask of a revision with a service's placement (network
//! configuration, launch type or capacity provider strategy, platform version, read by the
//! caller as a `view::Placement`), `startedBy = deployer` and the command/environment
//! overrides; poll DescribeTasks at the deploy's adaptive pace until STOPPED, and StopTask on
//! the time limit or SIGINT/SIGTERM (then wait, bounded, for STOPPED so the run ends in a known
//! state). The verdict itself is `super::failure`; failed tasks' last awslogs lines come from
//! `aws::logs`.

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{ContainerDefinition, ContainerOverride, KeyValuePair, Task, TaskOverride};

use super::report::RunTaskReport;
use super::{ContainerExit, RunResult, RunTaskError, TaskEnd, TaskSpec, failure};
use crate::aws::logs;
use crate::deploy::Cancel;
use crate::deploy::plan::Poll;
use crate::deploy::view::{Placement, TaskStatus, TaskView};

/// Who started the task, as ListTasks(startedBy) and the console show it.
pub const STARTED_BY: &str = "deployer";

/// What to run, where.
#[derive(Debug, Clone)]
pub struct Request {
    pub cluster: String,
    /// ARN, family or family:revision.
    pub task_definition: String,
    pub spec: TaskSpec,
    pub placement: Placement,
    pub poll: Poll,
}

fn api<E>(op: &'static str, e: aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> RunTaskError
where
    E: std::error::Error + aws_sdk_ecs::error::ProvideErrorMetadata + 'static,
{
    RunTaskError::Api { op, message: crate::aws::auth::sdk_message(&e) }
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

/// The container the report names: where the overrides go, else the first essential one.
fn container_for(spec: &TaskSpec, defs: &[ContainerDefinition], td: &str) -> Result<String, RunTaskError> {
    let overriding = !spec.command.is_empty() || !spec.env.is_empty();
    if overriding || spec.container.is_some() {
        return target_container(defs, spec.container.as_deref(), td);
    }
    let first = defs.iter().find(|d| d.essential().unwrap_or(true)).and_then(|d| d.name());
    Ok(first.unwrap_or_default().to_string())
}

fn task_end(task: &Task, defs: &[ContainerDefinition]) -> TaskEnd {
    let essential =
        |name: &str| defs.iter().find(|d| d.name() == Some(name)).is_none_or(|d| d.essential().unwrap_or(true));
    let view = TaskView::from_sdk(task);
    TaskEnd {
        stop_code: view.stop_code.as_ref().map(|c| c.as_str().to_string()),
        stopped_reason: view.stopped_reason,
        containers: view
            .containers
            .into_iter()
            .map(|c| ContainerExit {
                essential: essential(&c.name),
                name: c.name,
                exit_code: c.exit_code,
                reason: c.reason,
            })
            .collect(),
    }
}

/// The revision's ARN and its container definitions.
async fn describe_definition(ecs: &Client, spec: &str) -> Result<(String, Vec<ContainerDefinition>), RunTaskError> {
    let out = ecs
        .describe_task_definition()
        .task_definition(spec)
        .send()
        .await
        .map_err(|e| api("DescribeTaskDefinition", e))?;
    let td =
        out.task_definition().ok_or_else(|| RunTaskError::Input(format!("task definition {spec:?} was not found")))?;
    Ok((td.task_definition_arn().unwrap_or(spec).to_string(), td.container_definitions().to_vec()))
}

/// RunTask of `td_arn` with the placement and the overrides; the new task's ARN.
async fn start(ecs: &Client, req: &Request, td_arn: &str, container: &str) -> Result<String, RunTaskError> {
    let (spec, placement) = (&req.spec, &req.placement);
    let mut call = ecs
        .run_task()
        .cluster(&req.cluster)
        .task_definition(td_arn)
        .count(1)
        .started_by(STARTED_BY)
        .set_launch_type(placement.launch_type.clone())
        .set_platform_version(placement.platform_version.clone())
        .set_network_configuration(placement.network_configuration.clone());
    if !placement.capacity_provider_strategy.is_empty() {
        call = call.set_capacity_provider_strategy(Some(placement.capacity_provider_strategy.clone()));
    }
    if !spec.command.is_empty() || !spec.env.is_empty() {
        let mut o = ContainerOverride::builder().name(container);
        if !spec.command.is_empty() {
            o = o.set_command(Some(spec.command.clone()));
        }
        for (k, v) in &spec.env {
            o = o.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        call = call.overrides(TaskOverride::builder().container_overrides(o.build()).build());
    }
    let out = call.send().await.map_err(|e| api("RunTask", e))?;
    if let Some(arn) = out.tasks().first().and_then(|t| t.task_arn()) {
        return Ok(arn.to_string());
    }
    let reasons: Vec<String> = out
        .failures()
        .iter()
        .map(|f| format!("{} ({})", f.reason().unwrap_or("unknown"), f.detail().unwrap_or("no detail")))
        .collect();
    let why = if reasons.is_empty() { "no task and no reason".to_string() } else { reasons.join("; ") };
    Err(RunTaskError::NotStarted(why))
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
    let (td_arn, defs) = describe_definition(ecs, &req.task_definition).await?;
    let container = container_for(&req.spec, &defs, &td_arn)?;
    let task_arn = start(ecs, req, &td_arn, &container).await?;
    let command = &req.spec.command;
    let what = if command.is_empty() { "its own command".to_string() } else { command.join(" ") };
    tracing::info!("started task {task_arn} of {td_arn}: {what}");
    let mut report = RunTaskReport {
        cluster: req.cluster.clone(),
        task_definition_arn: td_arn,
        task_arn: task_arn.clone(),
        container,
        command: command.clone(),
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
    judge(&mut report, end, stopped_by_us, req.spec.timeout);
    if !report.succeeded() && req.spec.log_lines > 0 {
        let task_id = task_arn.rsplit('/').next().unwrap_or(&task_arn);
        for src in defs.iter().filter_map(|d| logs::source(d, task_id)) {
            report.logs.push(logs::tail(config, &src, req.spec.log_lines).await);
        }
    }
    Ok(report)
}

/// The result: deployer's stop (time limit, cancel) decides it, else the containers' exits.
fn judge(report: &mut RunTaskReport, end: TaskEnd, stopped_by_us: Option<RunResult>, timeout: Duration) {
    match stopped_by_us {
        Some(result) => {
            report.result = result;
            report.failure.get_or_insert_with(|| match result {
                RunResult::Cancelled => "cancelled (SIGINT/SIGTERM): deployer stopped the task".into(),
                _ => format!("still running after --timeout {}s: deployer stopped the task", timeout.as_secs()),
            });
        }
        None => {
            report.failure = failure(&end);
            report.result = if report.failure.is_some() { RunResult::Failed } else { RunResult::Succeeded };
        }
    }
    report.stop_code = end.stop_code;
    report.stopped_reason = end.stopped_reason;
    report.containers = end.containers;
}

/// Why deployer must stop the task now, if it must: a cancel, or the time limit.
fn due_stop(cancel: &Cancel, started: Instant, timeout: Duration) -> Option<(RunResult, String)> {
    if cancel.is_cancelled() {
        return Some((RunResult::Cancelled, "deployer: cancelled (SIGINT/SIGTERM)".to_string()));
    }
    (started.elapsed() >= timeout)
        .then(|| (RunResult::TimedOut, format!("deployer: --timeout {}s passed", timeout.as_secs())))
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
    let mut pacing = req.poll.pacing();
    let (mut last, mut last_end, mut errors) = (None::<TaskView>, TaskEnd::default(), 0);
    let mut ours: Option<(RunResult, Instant)> = None;
    loop {
        let task = match describe(ecs, &req.cluster, task_arn).await {
            Ok(task) => task,
            Err(e) => {
                errors += 1;
                tracing::warn!("observing task {task_arn} failed ({errors} in a row): {e}");
                if errors >= 5 {
                    report.failure = Some(format!("lost sight of the task: {e}"));
                    return (last_end, Some(ours.map_or(RunResult::Failed, |(r, _)| r)));
                }
                tokio::time::sleep(pacing.next(false)).await;
                continue;
            }
        };
        errors = 0;
        report.polls += 1;
        let view = TaskView::from_sdk(&task);
        let changed = last.as_ref() != Some(&view);
        last_end = task_end(&task, defs);
        if view.status == TaskStatus::Stopped {
            return (last_end, ours.map(|(r, _)| r));
        }
        last = Some(view);
        if ours.is_none()
            && let Some((result, reason)) = due_stop(cancel, started, req.spec.timeout)
        {
            tracing::warn!("stopping task {task_arn}: {reason}");
            if let Err(e) = ecs.stop_task().cluster(&req.cluster).task(task_arn).reason(&reason).send().await {
                report.failure = Some(format!("{reason}, but StopTask failed: {}", crate::aws::auth::sdk_message(&e)));
                return (last_end, Some(result));
            }
            ours = Some((result, Instant::now()));
        }
        match ours {
            // ECS sends SIGTERM, then SIGKILL after the stop timeout (30 s by default).
            Some((result, at)) if at.elapsed() > Duration::from_secs(120) => {
                let status = last.as_ref().map(|t| t.status.as_str()).unwrap_or_default();
                report.failure =
                    Some(format!("deployer stopped the task, but it was still {status} two minutes later"));
                return (last_end, Some(result));
            }
            Some(_) => tokio::time::sleep(req.poll.initial).await,
            None => {
                let left = req.spec.timeout.saturating_sub(started.elapsed()) + Duration::from_millis(50);
                cancel.sleep(pacing.next(changed).min(left)).await;
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

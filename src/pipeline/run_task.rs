//! The one-off task stage: `deployer run-task`, and `release`'s pre-deploy stage (after
//! register, before the deploy: the new revision's migrations with the service's placement).
//! Runs the task (`runtask::run`), writes its step summary section, and returns its report;
//! an error means the task never ran.

use super::Session;
use crate::deploy::Cancel;
use crate::deploy::ecs::Ecs;
use crate::deploy::plan::Poll;
use crate::deploy::view::Placement;
use crate::error::{Error, Result};
use crate::github::runner::Runner;
use crate::runtask::TaskSpec;
use crate::runtask::report::{RunTaskReport, summary};
use crate::runtask::run::{self, Request};

/// Where a one-off task runs: the cluster, and the service whose placement (and, without a
/// revision given, whose current revision) it takes.
pub struct Site<'a> {
    pub cluster: &'a str,
    pub service: Option<&'a str>,
    pub poll: Poll,
}

/// The service's placement and the revision it runs; no service: the default placement.
async fn placement(session: &Session, site: &Site<'_>) -> Result<(Placement, Option<String>)> {
    let Some(service) = site.service else { return Ok((Placement::default(), None)) };
    let client = aws_sdk_ecs::Client::new(&session.config);
    let view = Ecs::new(&client)
        .describe_service(site.cluster, service)
        .await
        .map_err(|e| Error::Input(format!("{service}: {e}")))?;
    Ok((view.placement, Some(view.task_definition)))
}

/// Run `spec` of `task_definition` (default: the service's current revision) at `site`; the
/// step summary section is titled `title` (`run-task`, `pre-deploy`). Returns the report and
/// the revision the service runs (untouched).
pub async fn run_task(
    session: &Session,
    site: &Site<'_>,
    task_definition: Option<&str>,
    spec: &TaskSpec,
    title: &str,
    runner: &Runner,
    cancel: &Cancel,
) -> Result<(RunTaskReport, Option<String>)> {
    let (placement, current) = placement(session, site).await?;
    let task_definition = task_definition.map(str::to_string).or_else(|| current.clone()).ok_or_else(|| {
        Error::Usage("run-task needs --service (its placement and current revision) or --task-definition".into())
    })?;
    let req =
        Request { cluster: site.cluster.to_string(), task_definition, spec: spec.clone(), placement, poll: site.poll };
    runner.group(&format!("{title}: {}", spec.command.join(" ")));
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let report = run::run(&ecs, &session.config, &req, cancel).await;
    runner.end_group();
    let report = report?;
    runner.summary(&summary(title, &report))?;
    Ok((report, current))
}

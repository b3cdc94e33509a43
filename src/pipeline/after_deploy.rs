//! The after-deploy stage, run only when every service deployed successfully (`deploy` and
//! `release`): scheduled tasks moved to the new revision (`--update-scheduled-tasks`), then
//! old revisions deregistered (`--keep-revisions N`), so the cleanup sees the schedules on the
//! new revision. `rollback --update-scheduled-tasks` moves the schedules back with the same
//! code. Nothing here can fail a deploy that already succeeded: problems are reported and
//! annotated, and anything uncertain keeps revisions rather than deregistering them.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::Session;
use super::plan::AfterDeployPlan;
use crate::deploy::report::{DeployRun, Outcome};
use crate::github::runner::{Level, Runner};
use crate::revisions::{Cleanup, Users, family_revision, scan};
use crate::schedules::ScheduleReport;

/// What the stage did.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AfterDeploy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_tasks: Option<ScheduleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revisions: Option<Cleanup>,
}

impl AfterDeploy {
    pub fn is_empty(&self) -> bool {
        self.revisions.is_none() && self.scheduled_tasks.is_none()
    }
}

impl fmt::Display for AfterDeploy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schedules = self.scheduled_tasks.as_ref().map(|s| s.to_string());
        let revisions = self.revisions.as_ref().map(|c| c.to_string());
        let parts: Vec<String> = [schedules, revisions].into_iter().flatten().collect();
        f.write_str(&parts.join("\n"))
    }
}

/// Revisions a rollback or a running service still needs, from the deploy's own reports.
fn protected(run: &DeployRun, task_definition: &str) -> Users {
    let mut users = Users::new();
    for r in &run.services {
        let name = format!("{}/{}", r.cluster, r.service);
        users.entry(task_definition.to_string()).or_default().push(format!("live: {name}"));
        if !r.previous_task_definition_arn.is_empty() {
            users.entry(r.previous_task_definition_arn.clone()).or_default().push(format!("rollback target: {name}"));
        }
    }
    users
}

/// A text block of the step summary.
fn summary_block(runner: &Runner, title: &str, text: &str) {
    let md = format!("\n### {title}\n\n```text\n{}\n```\n", text.replace("```", "'''"));
    runner.summary(&md).unwrap_or_else(|e| tracing::warn!("step summary: {e}"));
}

/// After a deploy: nothing unless every service succeeded.
pub async fn run(
    session: &Session,
    plan: &AfterDeployPlan,
    deployed: &DeployRun,
    task_definition: &str,
    runner: &Runner,
) -> AfterDeploy {
    let mut out = AfterDeploy::default();
    if deployed.result != Outcome::Succeeded || deployed.services.is_empty() {
        return out;
    }
    if plan.update_scheduled_tasks {
        let clusters: BTreeSet<&str> = deployed.services.iter().map(|r| r.cluster.as_str()).collect();
        let mut report = ScheduleReport::default();
        for cluster in clusters {
            let r = move_scheduled_tasks(session, cluster, task_definition, runner).await;
            report.moved.extend(r.moved);
            report.errors.extend(r.errors);
        }
        out.scheduled_tasks = Some(report);
    }
    if let Some(keep) = plan.keep_revisions {
        let family = family_revision(task_definition).map(|(f, _)| f).unwrap_or_default();
        let cleanup = clean(session, &family, keep as usize, protected(deployed, task_definition)).await;
        for e in &cleanup.errors {
            runner.annotate(Level::Warning, &format!("revision cleanup: {e}"), None);
        }
        if let Some(why) = &cleanup.skipped {
            runner.annotate(Level::Warning, &format!("revision cleanup skipped: {why}"), None);
        }
        summary_block(runner, "revisions", &cleanup.to_string());
        out.revisions = Some(cleanup);
    }
    out
}

/// Gather every user of the family's revisions, then clean up; any failure to look keeps all.
async fn clean(session: &Session, family: &str, keep: usize, mut users: Users) -> Cleanup {
    let ecs = aws_sdk_ecs::Client::new(&session.config);
    let skipped = |why: String| Cleanup {
        family: family.to_string(),
        keep: Some(keep),
        skipped: Some(why),
        ..Cleanup::default()
    };
    match scan::all_users(&ecs, &session.config, family).await {
        Ok(u) => scan::merge(&mut users, u),
        Err(e) => return skipped(format!("cannot tell which revisions are in use ({e}); every revision kept")),
    }
    match scan::cleanup(&ecs, family, keep, &users, false).await {
        Ok(c) => c,
        Err(e) => skipped(format!("{e}; every revision kept")),
    }
}

/// `arn:aws:ecs:REGION:ACCOUNT:cluster/NAME` for a cluster name (an ARN stays as it is).
pub fn cluster_arn(session: &Session, cluster: &str) -> String {
    if cluster.starts_with("arn:") {
        return cluster.to_string();
    }
    let partition = crate::taskdef::refs::partition_of(&session.region);
    format!("arn:{partition}:ecs:{}:{}:cluster/{cluster}", session.region, session.account)
}

/// Point the family's scheduled tasks on `cluster` at `to` (deploy: the new revision;
/// rollback: the one rolled back to).
pub async fn move_scheduled_tasks(session: &Session, cluster: &str, to: &str, runner: &Runner) -> ScheduleReport {
    let cluster_arn = cluster_arn(session, cluster);
    let family = family_revision(to).map(|(f, _)| f).unwrap_or_default();
    let report = match crate::schedules::aws::discover(&session.config, std::slice::from_ref(&cluster_arn)).await {
        Ok(found) => {
            let moves = crate::schedules::plan(&found.scheduled, &cluster_arn, &family, to);
            crate::schedules::aws::apply(&session.config, &found, &moves).await
        }
        Err(e) => ScheduleReport {
            errors: vec![format!("cannot list the scheduled tasks: {e}")],
            ..ScheduleReport::default()
        },
    };
    for e in &report.errors {
        runner.annotate(Level::Warning, &format!("scheduled tasks: {e}"), None);
    }
    summary_block(runner, "scheduled tasks", &report.to_string());
    report
}

//! Scheduled tasks follow the service (`--update-scheduled-tasks`): EventBridge rules and
//! EventBridge Scheduler schedules whose ECS target runs the family being deployed on the
//! service's cluster are pointed at the new revision after the deploy succeeded (and
//! `deployer rollback --update-scheduled-tasks` points them back). A failed deploy leaves them
//! as they were. This file decides (pure); `aws` finds the targets and rewrites them.
//!
//! A target naming the family without a revision runs the latest ACTIVE revision already and
//! is left alone. Only the default event bus is searched: schedule expressions live there.

pub mod aws;

use std::fmt;

use serde::Serialize;

use crate::revisions::{Users, family_revision};

/// Where a scheduled task is defined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    /// An EventBridge rule's target.
    Rule { rule: String, target_id: String },
    /// An EventBridge Scheduler schedule.
    Schedule { group: String, name: String },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Rule { rule, target_id } => write!(f, "rule {rule} (target {target_id})"),
            Source::Schedule { group, name } => write!(f, "schedule {group}/{name}"),
        }
    }
}

/// One ECS target of a rule or schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    pub source: Source,
    pub cluster_arn: String,
    pub task_definition_arn: String,
}

/// A target pointed from one revision to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Move {
    #[serde(flatten)]
    pub source: Source,
    pub from: String,
    pub to: String,
}

/// The targets of `family` on `cluster_arn` that do not run `to` yet: each becomes a move.
/// Targets without a revision (the family's latest) and other families are left out.
pub fn plan(found: &[Scheduled], cluster_arn: &str, family: &str, to: &str) -> Vec<Move> {
    found
        .iter()
        .filter(|s| s.cluster_arn == cluster_arn && s.task_definition_arn != to)
        .filter(|s| family_revision(&s.task_definition_arn).is_some_and(|(f, _)| f == family))
        .map(|s| Move { source: s.source.clone(), from: s.task_definition_arn.clone(), to: to.to_string() })
        .collect()
}

/// Which revisions scheduled targets run (full ARNs), for the revision cleanup.
pub fn users(found: &[Scheduled]) -> Users {
    let mut users = Users::new();
    for s in found {
        users.entry(s.task_definition_arn.clone()).or_default().push(s.source.to_string());
    }
    users
}

/// What `--update-scheduled-tasks` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ScheduleReport {
    pub moved: Vec<Move>,
    /// Rules or schedules that could not be changed, with the reason (ECS tasks keep the old
    /// revision there).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

impl fmt::Display for ScheduleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "scheduled tasks:")?;
        if self.moved.is_empty() && self.errors.is_empty() {
            write!(f, " none to move")?;
        }
        for m in &self.moved {
            write!(f, "\n  {}: {} → {}", m.source, short(&m.from), short(&m.to))?;
        }
        for e in &self.errors {
            write!(f, "\n  error: {e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = "arn:aws:ecs:us-east-1:111122223333:cluster/prod";

    fn td(family_rev: &str) -> String {
        format!("arn:aws:ecs:us-east-1:111122223333:task-definition/{family_rev}")
    }

    fn rule(name: &str, cluster: &str, td_arn: String) -> Scheduled {
        Scheduled {
            source: Source::Rule { rule: name.into(), target_id: "t1".into() },
            cluster_arn: cluster.into(),
            task_definition_arn: td_arn,
        }
    }

    #[test]
    fn only_pinned_targets_of_the_family_on_the_cluster_move() {
        let found = vec![
            rule("nightly", CLUSTER, td("shop:3")),
            rule("hourly", CLUSTER, td("shop:5")),
            rule("latest", CLUSTER, td("shop")),
            rule("other-family", CLUSTER, td("shop-worker:3")),
            rule("other-cluster", "arn:aws:ecs:us-east-1:111122223333:cluster/batch", td("shop:3")),
            Scheduled {
                source: Source::Schedule { group: "default".into(), name: "report".into() },
                cluster_arn: CLUSTER.into(),
                task_definition_arn: td("shop:1"),
            },
        ];
        let moves = plan(&found, CLUSTER, "shop", &td("shop:5"));
        let names: Vec<String> = moves.iter().map(|m| m.source.to_string()).collect();
        assert_eq!(names, ["rule nightly (target t1)", "schedule default/report"]);
        assert!(moves.iter().all(|m| m.to == td("shop:5")));
        assert_eq!(moves[1].from, td("shop:1"));
        let users = users(&found);
        assert_eq!(users[&td("shop:3")], ["rule nightly (target t1)", "rule other-cluster (target t1)"]);
    }
}

//! EventBridge and EventBridge Scheduler I/O for scheduled tasks: find the ECS targets on
//! given clusters (ListRuleNamesByTarget → ListTargetsByRule on the default bus; ListSchedules
//! → GetSchedule), and rewrite a target's task definition (PutTargets with the rule's target
//! as read, changed only in `EcsParameters.TaskDefinitionArn`; UpdateSchedule with every field
//! of the schedule as read, since UpdateSchedule replaces the whole schedule).

use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::Target as RuleTarget;
use aws_sdk_scheduler::operation::get_schedule::GetScheduleOutput;

use super::{Move, ScheduleReport, Scheduled, Source};

/// The rule targets and schedules found, as read (to write them back changed).
#[derive(Debug, Default)]
pub struct Found {
    pub scheduled: Vec<Scheduled>,
    rules: Vec<(String, RuleTarget)>,
    schedules: Vec<GetScheduleOutput>,
}

/// Pages of a list call, bounded.
const MAX_PAGES: usize = 1000;

/// Every EventBridge rule target and Scheduler schedule that runs an ECS task on one of
/// `clusters` (cluster ARNs).
pub async fn discover(config: &SdkConfig, clusters: &[String]) -> Result<Found, String> {
    let mut found = Found::default();
    let events = aws_sdk_eventbridge::Client::new(config);
    for cluster in clusters {
        rule_targets(&events, cluster, &mut found).await?;
    }
    schedules(&aws_sdk_scheduler::Client::new(config), clusters, &mut found).await?;
    Ok(found)
}

/// The ECS targets on `cluster` of the default bus's rules (ListRuleNamesByTarget, then
/// ListTargetsByRule of each).
async fn rule_targets(events: &aws_sdk_eventbridge::Client, cluster: &str, found: &mut Found) -> Result<(), String> {
    let mut rules = Vec::new();
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let out = events
            .list_rule_names_by_target()
            .target_arn(cluster)
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("EventBridge ListRuleNamesByTarget: {}", crate::aws::auth::sdk_message(&e)))?;
        rules.extend(out.rule_names().iter().cloned());
        token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    for rule in rules {
        let mut token = None;
        for _ in 0..MAX_PAGES {
            let out =
                events.list_targets_by_rule().rule(&rule).set_next_token(token).send().await.map_err(|e| {
                    format!("EventBridge ListTargetsByRule {rule}: {}", crate::aws::auth::sdk_message(&e))
                })?;
            for t in out.targets().iter().filter(|t| t.arn() == cluster) {
                let Some(ecs) = t.ecs_parameters() else { continue };
                found.scheduled.push(Scheduled {
                    source: Source::Rule { rule: rule.clone(), target_id: t.id().to_string() },
                    cluster_arn: cluster.to_string(),
                    task_definition_arn: ecs.task_definition_arn().to_string(),
                });
                found.rules.push((rule.clone(), t.clone()));
            }
            token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                break;
            }
        }
    }
    Ok(())
}

/// The Scheduler schedules whose ECS target is one of `clusters` (ListSchedules, then
/// GetSchedule of each: the list does not carry the task definition).
async fn schedules(
    scheduler: &aws_sdk_scheduler::Client,
    clusters: &[String],
    found: &mut Found,
) -> Result<(), String> {
    let mut token = None;
    for _ in 0..MAX_PAGES {
        let out = scheduler
            .list_schedules()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| format!("Scheduler ListSchedules: {}", crate::aws::auth::sdk_message(&e)))?;
        for s in out.schedules() {
            if !s.target().is_some_and(|t| clusters.iter().any(|c| c == t.arn())) {
                continue;
            }
            let (Some(name), group) = (s.name(), s.group_name().unwrap_or("default")) else { continue };
            let full =
                scheduler.get_schedule().name(name).group_name(group).send().await.map_err(|e| {
                    format!("Scheduler GetSchedule {group}/{name}: {}", crate::aws::auth::sdk_message(&e))
                })?;
            let Some(ecs) = full.target().and_then(|t| t.ecs_parameters()) else { continue };
            found.scheduled.push(Scheduled {
                source: Source::Schedule { group: group.to_string(), name: name.to_string() },
                cluster_arn: full.target().map(|t| t.arn().to_string()).unwrap_or_default(),
                task_definition_arn: ecs.task_definition_arn().to_string(),
            });
            found.schedules.push(full);
        }
        token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    Ok(())
}

/// Rewrite each moved target; every change that failed is reported, none stops the others.
pub async fn apply(config: &SdkConfig, found: &Found, moves: &[Move]) -> ScheduleReport {
    let mut report = ScheduleReport::default();
    let events = aws_sdk_eventbridge::Client::new(config);
    let scheduler = aws_sdk_scheduler::Client::new(config);
    for m in moves {
        let outcome = match &m.source {
            Source::Rule { rule, target_id } => {
                let Some((_, target)) = found.rules.iter().find(|(r, t)| r == rule && t.id() == target_id) else {
                    continue;
                };
                put_target(&events, rule, target, &m.to).await
            }
            Source::Schedule { group, name } => {
                let Some(s) = found.schedules.iter().find(|s| s.name() == Some(name) && s.group_name() == Some(group))
                else {
                    continue;
                };
                update_schedule(&scheduler, s, &m.to).await
            }
        };
        match outcome {
            Ok(()) => {
                tracing::info!("{}: now runs {}", m.source, m.to);
                report.moved.push(m.clone());
            }
            Err(e) => report.errors.push(format!("{}: {e}", m.source)),
        }
    }
    report
}

async fn put_target(
    events: &aws_sdk_eventbridge::Client,
    rule: &str,
    target: &RuleTarget,
    to: &str,
) -> Result<(), String> {
    let mut target = target.clone();
    if let Some(ecs) = target.ecs_parameters.as_mut() {
        ecs.task_definition_arn = to.to_string();
    }
    let out = events
        .put_targets()
        .rule(rule)
        .targets(target)
        .send()
        .await
        .map_err(|e| format!("PutTargets: {}", crate::aws::auth::sdk_message(&e)))?;
    match out.failed_entries().first() {
        Some(f) if out.failed_entry_count() > 0 => Err(format!(
            "PutTargets: {}: {}",
            f.error_code().unwrap_or("error"),
            f.error_message().unwrap_or("no message")
        )),
        _ => Ok(()),
    }
}

async fn update_schedule(scheduler: &aws_sdk_scheduler::Client, s: &GetScheduleOutput, to: &str) -> Result<(), String> {
    let mut target = s.target().cloned().ok_or("the schedule has no target")?;
    if let Some(ecs) = target.ecs_parameters.as_mut() {
        ecs.task_definition_arn = to.to_string();
    }
    scheduler
        .update_schedule()
        .name(s.name().unwrap_or_default())
        .set_group_name(s.group_name().map(str::to_string))
        .set_schedule_expression(s.schedule_expression().map(str::to_string))
        .set_schedule_expression_timezone(s.schedule_expression_timezone().map(str::to_string))
        .set_start_date(s.start_date().cloned())
        .set_end_date(s.end_date().cloned())
        .set_description(s.description().map(str::to_string))
        .set_state(s.state().cloned())
        .set_kms_key_arn(s.kms_key_arn().map(str::to_string))
        .set_flexible_time_window(s.flexible_time_window().cloned())
        .set_action_after_completion(s.action_after_completion().cloned())
        .target(target)
        .send()
        .await
        .map_err(|e| format!("UpdateSchedule: {}", crate::aws::auth::sdk_message(&e)))?;
    Ok(())
}

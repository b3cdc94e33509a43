//! The ECS side of a revision cleanup: a family's ACTIVE revisions (ListTaskDefinitions,
//! paged), which of them the region's services run (ListClusters → ListServices →
//! DescribeServices, ten at a time; every deployment counts, not only the primary), and the
//! deregistration. Scheduled targets come from `crate::schedules`.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::types::{SortOrder, TaskDefinitionStatus};

use super::{Cleanup, Decision, Users, decide, family_revision};

#[derive(Debug, thiserror::Error)]
#[error("ECS {op} failed: {message}")]
pub struct ScanError {
    pub op: &'static str,
    pub message: String,
}

fn api<E>(op: &'static str, e: aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::http::Response>) -> ScanError
where
    E: std::error::Error + aws_sdk_ecs::error::ProvideErrorMetadata + 'static,
{
    ScanError { op, message: crate::aws::auth::sdk_message(&e) }
}

/// Every ACTIVE revision of exactly `family` (the API filters by prefix).
pub async fn active_revisions(ecs: &Client, family: &str) -> Result<Vec<String>, ScanError> {
    let mut pages = ecs
        .list_task_definitions()
        .family_prefix(family)
        .status(TaskDefinitionStatus::Active)
        .sort(SortOrder::Desc)
        .into_paginator()
        .send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| api("ListTaskDefinitions", e))?;
        arns.extend(
            page.task_definition_arns()
                .iter()
                .filter(|a| family_revision(a).is_some_and(|(f, _)| f == family))
                .cloned(),
        );
    }
    Ok(arns)
}

/// Every cluster of the region (ARNs).
pub async fn cluster_arns(ecs: &Client) -> Result<Vec<String>, ScanError> {
    let mut arns = Vec::new();
    let mut pages = ecs.list_clusters().into_paginator().send();
    while let Some(page) = pages.next().await {
        arns.extend(page.map_err(|e| api("ListClusters", e))?.cluster_arns().iter().cloned());
    }
    Ok(arns)
}

/// Which revisions of `family` the services of `clusters` run: `live: CLUSTER/SERVICE` for
/// the primary deployment, `deploying: …` for the others.
pub async fn service_users(ecs: &Client, clusters: &[String], family: &str) -> Result<Users, ScanError> {
    let mut users = Users::new();
    for cluster in clusters {
        let cluster_name = cluster.rsplit('/').next().unwrap_or(cluster);
        let mut services = ecs.list_services().cluster(cluster).into_paginator().send();
        let mut arns = Vec::new();
        while let Some(page) = services.next().await {
            arns.extend(page.map_err(|e| api("ListServices", e))?.service_arns().iter().cloned());
        }
        for chunk in arns.chunks(10) {
            let out = ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| api("DescribeServices", e))?;
            for svc in out.services() {
                let name = format!("{cluster_name}/{}", svc.service_name().unwrap_or_default());
                for d in svc.deployments() {
                    let Some(td) = d.task_definition() else { continue };
                    if family_revision(td).is_none_or(|(f, _)| f != family) {
                        continue;
                    }
                    let role = if d.status() == Some("PRIMARY") { "live" } else { "deploying" };
                    users.entry(td.to_string()).or_default().push(format!("{role}: {name}"));
                }
            }
        }
    }
    Ok(users)
}

/// Everything that uses a revision of `family` in the region: services of every cluster, and
/// the scheduled tasks (EventBridge rules, Scheduler schedules) on those clusters. An error
/// means it cannot be told, and nothing may be deregistered.
pub async fn all_users(ecs: &Client, config: &aws_config::SdkConfig, family: &str) -> Result<Users, String> {
    let clusters = cluster_arns(ecs).await.map_err(|e| e.to_string())?;
    let mut users = service_users(ecs, &clusters, family).await.map_err(|e| e.to_string())?;
    let scheduled = crate::schedules::aws::discover(config, &clusters).await?;
    merge(&mut users, crate::schedules::users(&scheduled.scheduled));
    Ok(users)
}

/// Add `more` to `users`.
pub fn merge(users: &mut Users, more: Users) {
    for (arn, by) in more {
        let entry = users.entry(arn).or_default();
        for b in by {
            if !entry.contains(&b) {
                entry.push(b);
            }
        }
    }
}

/// Decide, and (unless `dry_run`) deregister what nothing uses beyond the newest `keep`.
/// `users` must already hold everything that uses a revision.
pub async fn cleanup(
    ecs: &Client,
    family: &str,
    keep: usize,
    users: &Users,
    dry_run: bool,
) -> Result<Cleanup, ScanError> {
    let active = active_revisions(ecs, family).await?;
    let revisions = decide(&active, keep, users);
    let mut result = Cleanup { family: family.to_string(), keep: Some(keep), dry_run, revisions, ..Cleanup::default() };
    for row in result.revisions.iter().filter(|r| r.decision == Decision::Deregister) {
        if dry_run {
            result.deregistered.push(row.task_definition_arn.clone());
            continue;
        }
        match ecs.deregister_task_definition().task_definition(&row.task_definition_arn).send().await {
            Ok(_) => {
                tracing::info!("deregistered {}", row.task_definition_arn);
                result.deregistered.push(row.task_definition_arn.clone());
            }
            Err(e) => result.errors.push(format!("{}: {}", row.task_definition_arn, crate::aws::auth::sdk_message(&e))),
        }
    }
    Ok(result)
}

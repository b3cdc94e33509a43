//! What a redeploy of the running revision (`refresh`, `deploy --force-new-deployment`) reports
//! before it rolls: which parameters and secrets the revision references changed since the
//! oldest running task started. Reads metadata only — DescribeParameters (10 names a call) and
//! DescribeSecret — and the running tasks' `startedAt`; the judgement is `crate::refresh`.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterStringFilter;

use super::Session;
use crate::deploy::driver::Checked;
use crate::deploy::ecs::Ecs;
use crate::error::{Error, Result};
use crate::refresh::{self, Meta, Reference, SecretsReport};
use crate::taskdef::refs::{Target, parse_value_from};

/// The one revision every checked service runs (a refresh rolls that revision again).
pub fn current_revision(checked: &[Checked]) -> Result<String> {
    let mut revisions = checked.iter().map(|c| c.previous.as_str());
    let first = revisions.next().ok_or_else(|| Error::Usage("no service to refresh: pass --service".into()))?;
    match revisions.find(|r| *r != first) {
        Some(other) => Err(Error::Usage(format!(
            "the services run different revisions ({first} and {other}); refresh them one at a time"
        ))),
        None => Ok(first.to_string()),
    }
}

/// The references of `task_definition`, judged against the oldest running task's start.
pub async fn what_changed(
    session: &Session,
    ecs: &Ecs<'_>,
    cluster: &str,
    checked: &[Checked],
    task_definition: &str,
) -> Result<SecretsReport> {
    let client = aws_sdk_ecs::Client::new(&session.config);
    let td = client.describe_task_definition().task_definition(task_definition).send().await.map_err(|e| {
        Error::Input(format!("ECS DescribeTaskDefinition {task_definition}: {}", crate::aws::auth::sdk_message(&e)))
    })?;
    let refs = td.task_definition().map(refresh::references).unwrap_or_default();
    let mut oldest: Option<u64> = None;
    for c in checked {
        let tasks = ecs
            .tasks_of(cluster, &c.service, task_definition, None)
            .await
            .map_err(|e| Error::Input(format!("{}: {e}", c.service)))?;
        for at in tasks.iter().filter(|t| t.running()).filter_map(|t| t.started_at_ms) {
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
    }
    let metas = metadata(&session.config, &refs).await;
    Ok(refresh::judge(&refs, &metas, oldest.map(|ms| ms as i64)))
}

/// DescribeParameters / DescribeSecret for every reference (by `refresh::lookup_key`).
async fn metadata(config: &SdkConfig, refs: &[Reference]) -> BTreeMap<String, Result<Meta, String>> {
    let mut out = BTreeMap::new();
    let mut names = Vec::new();
    for r in refs {
        match parse_value_from(&r.value_from) {
            Ok(Target::Parameter { name, .. }) if !names.contains(&name) => names.push(name),
            Ok(Target::Secret { id, region, .. }) if !out.contains_key(&format!("secretsmanager:{id}")) => {
                let result = secret_meta(config, &id, &region).await;
                out.insert(format!("secretsmanager:{id}"), result);
            }
            _ => {}
        }
    }
    let ssm = aws_sdk_ssm::Client::new(config);
    for chunk in names.chunks(10) {
        let found = parameter_metas(&ssm, chunk).await;
        for name in chunk {
            let meta = match &found {
                Err(e) => Err(e.clone()),
                Ok(found) => found.get(name).cloned().ok_or_else(|| format!("parameter {name} was not found")),
            };
            out.insert(format!("ssm:{name}"), meta);
        }
    }
    out
}

/// LastModifiedDate and Version of up to 10 parameters, by name.
async fn parameter_metas(ssm: &aws_sdk_ssm::Client, names: &[String]) -> Result<BTreeMap<String, Meta>, String> {
    let filter = ParameterStringFilter::builder()
        .key("Name")
        .option("Equals")
        .set_values(Some(names.to_vec()))
        .build()
        .map_err(|e| e.to_string())?;
    let mut found = BTreeMap::new();
    let mut pages = ssm.describe_parameters().parameter_filters(filter).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page =
            page.map_err(|e| format!("SSM DescribeParameters: {}", aws_sdk_ssm::error::DisplayErrorContext(&e)))?;
        for p in page.parameters() {
            let (Some(name), Some(at)) = (p.name(), p.last_modified_date()) else { continue };
            let meta = Meta { changed_ms: at.to_millis().unwrap_or_default(), version: Some(p.version().to_string()) };
            found.insert(name.to_string(), meta);
        }
    }
    Ok(found)
}

async fn secret_meta(config: &SdkConfig, id: &str, region: &str) -> Result<Meta, String> {
    let config = config.to_builder().region(aws_config::Region::new(region.to_string())).build();
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let out = sm
        .describe_secret()
        .secret_id(id)
        .send()
        .await
        .map_err(|e| format!("Secrets Manager DescribeSecret: {}", crate::aws::auth::sdk_message(&e)))?;
    let at = out.last_changed_date().or(out.created_date()).ok_or("DescribeSecret gave no LastChangedDate")?;
    let current = out
        .version_ids_to_stages()
        .and_then(|m| m.iter().find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT")).map(|(id, _)| id.clone()));
    Ok(Meta { changed_ms: at.to_millis().unwrap_or_default(), version: current })
}

//! Verification before anything is registered: every secret reference exists (Parameter
//! Store and Secrets Manager *metadata* only — never a value), references are well-formed and
//! in the session's account and region, an execution role is set when secrets are used, and
//! each image given with `--image` exists in its registry. All problems are collected and
//! reported together, each naming its container and variable.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterStringFilter;

use super::refs::{Target, parse_value_from};
use super::template::TaskDefinition;
use crate::image_ref::ImageRef;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub container: String,
    pub variable: Option<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.variable {
            Some(v) => write!(f, "container {}, {v}: {}", self.container, self.message),
            None => write!(f, "container {}: {}", self.container, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the task definition did not verify ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct VerifyError(pub Vec<Problem>);

/// What was checked, for the result.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Checked {
    pub parameters: usize,
    pub secrets: usize,
    pub images: usize,
}

pub struct Context<'a> {
    pub config: &'a SdkConfig,
    pub account: &'a str,
    pub region: &'a str,
    /// Where registry HTTP goes instead of the image's host (the local stack).
    pub registry_endpoint: Option<&'a str>,
    pub http: &'a reqwest::Client,
}

pub async fn verify(
    ctx: &Context<'_>,
    td: &TaskDefinition,
    images: &[(String, String)],
) -> Result<Checked, VerifyError> {
    let mut problems = Vec::new();
    // parameter name -> users; secret id -> users
    let mut parameters: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut secrets: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let mut any_secret = false;
    for c in td.containers() {
        let container = c.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
        // Container secrets, and the log driver's secretOptions (e.g. a FireLens API key).
        let log_secrets = c.get("logConfiguration").and_then(|l| l.get("secretOptions")).and_then(|v| v.as_array());
        let entries = c.get("secrets").and_then(|v| v.as_array()).into_iter().flatten();
        for s in entries.chain(log_secrets.into_iter().flatten()) {
            any_secret = true;
            let variable = s.get("name").and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let problem =
                |message: String| Problem { container: container.clone(), variable: Some(variable.clone()), message };
            let Some(value_from) = s.get("valueFrom").and_then(|v| v.as_str()) else {
                problems.push(problem("no valueFrom".into()));
                continue;
            };
            let target = match parse_value_from(value_from) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(problem(e.to_string()));
                    continue;
                }
            };
            let (region, account) = match &target {
                Target::Parameter { region, account, .. } => (region.as_deref(), account.as_deref()),
                Target::Secret { region, account, .. } => (Some(region.as_str()), Some(account.as_str())),
            };
            if let Some(r) = region.filter(|r| *r != ctx.region) {
                problems.push(problem(format!(
                    "{value_from} is in region {r}, the deployment is in {}; tasks read secrets from their own region — copy it or fix the ARN",
                    ctx.region
                )));
                continue;
            }
            if let Some(a) = account.filter(|a| *a != ctx.account) {
                problems.push(problem(format!(
                    "{value_from} is in account {a}, the deployment is in {}; deployer verifies same-account references only — fix the ARN",
                    ctx.account
                )));
                continue;
            }
            match target {
                Target::Parameter { name, .. } => {
                    parameters.entry(name).or_default().push((container.clone(), variable))
                }
                Target::Secret { id, .. } => secrets.entry(id).or_default().push((container.clone(), variable)),
            }
        }
    }
    if any_secret && td.body.get("executionRoleArn").and_then(|v| v.as_str()).is_none_or(str::is_empty) {
        problems.push(Problem {
            container: "(task)".into(),
            variable: None,
            message: "secrets are used but executionRoleArn is not set: the ECS agent needs an execution role with ssm:GetParameters / secretsmanager:GetSecretValue to inject them".into(),
        });
    }

    let missing_params = missing_parameters(ctx.config, parameters.keys().cloned().collect()).await;
    match missing_params {
        Ok(missing) => {
            for name in missing {
                for (container, variable) in &parameters[&name] {
                    problems.push(Problem {
                        container: container.clone(),
                        variable: Some(variable.clone()),
                        message: format!(
                            "parameter {name} does not exist in account {} ({}); create it (deployer params import) or fix the reference",
                            ctx.account, ctx.region
                        ),
                    });
                }
            }
        }
        Err(e) => problems.push(Problem { container: "(task)".into(), variable: None, message: e }),
    }
    let sm = aws_sdk_secretsmanager::Client::new(ctx.config);
    for (id, users) in &secrets {
        if let Err(e) = sm.describe_secret().secret_id(id).send().await {
            let message = match aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&e) {
                Some("ResourceNotFoundException") => {
                    format!(
                        "secret {id} does not exist in account {} ({}); create it or fix the reference",
                        ctx.account, ctx.region
                    )
                }
                _ => format!("cannot describe secret {id}: {}", aws_sdk_secretsmanager::error::DisplayErrorContext(&e)),
            };
            for (container, variable) in users {
                problems.push(Problem {
                    container: container.clone(),
                    variable: Some(variable.clone()),
                    message: message.clone(),
                });
            }
        }
    }
    for (container, uri) in images {
        if let Err(message) = check_image(ctx, uri).await {
            problems.push(Problem { container: container.clone(), variable: None, message });
        }
    }
    if problems.is_empty() {
        Ok(Checked { parameters: parameters.len(), secrets: secrets.len(), images: images.len() })
    } else {
        Err(VerifyError(problems))
    }
}

/// The names among `names` that Parameter Store does not hold (DescribeParameters: metadata).
async fn missing_parameters(config: &SdkConfig, names: Vec<String>) -> Result<BTreeSet<String>, String> {
    let ssm = aws_sdk_ssm::Client::new(config);
    let mut missing: BTreeSet<String> = names.iter().cloned().collect();
    for chunk in names.chunks(10) {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .set_values(Some(chunk.to_vec()))
            .build()
            .map_err(|e| e.to_string())?;
        let mut pages = ssm.describe_parameters().parameter_filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page =
                page.map_err(|e| format!("cannot list parameters: {}", aws_sdk_ssm::error::DisplayErrorContext(&e)))?;
            for p in page.parameters() {
                if let Some(n) = p.name() {
                    missing.remove(n);
                }
            }
        }
    }
    Ok(missing)
}

async fn check_image(ctx: &Context<'_>, uri: &str) -> Result<(), String> {
    let image = ImageRef::parse(uri).map_err(|e| e.to_string())?;
    let reference = image.reference();
    if let Some(endpoint) = ctx.registry_endpoint {
        let url = format!("{}/v2/{}/manifests/{reference}", endpoint.trim_end_matches('/'), image.repository);
        let resp =
            ctx.http.head(&url).header("accept", crate::image_ref::MANIFEST_ACCEPT).send().await.map_err(|e| {
                format!("cannot reach the registry at {endpoint}: {}", crate::github::oidc::without_url(&e))
            })?;
        return match resp.status().as_u16() {
            200 => Ok(()),
            404 => Err(format!("image {uri} does not exist in the registry (push it first)")),
            s => Err(format!("the registry answered HTTP {s} for {uri}")),
        };
    }
    if !image.is_ecr() {
        tracing::info!("not checking {uri}: only ECR images are verified");
        return Ok(());
    }
    let ecr = aws_sdk_ecr::Client::new(ctx.config);
    let id = match &image.digest {
        Some(d) => aws_sdk_ecr::types::ImageIdentifier::builder().image_digest(d).build(),
        None => aws_sdk_ecr::types::ImageIdentifier::builder().image_tag(reference).build(),
    };
    let out = ecr
        .batch_get_image()
        .repository_name(&image.repository)
        .set_registry_id(image.ecr_account())
        .image_ids(id)
        .send()
        .await
        .map_err(|e| format!("cannot look up {uri} in ECR: {}", aws_sdk_ecr::error::DisplayErrorContext(&e)))?;
    if out.images().is_empty() {
        Err(format!("image {uri} does not exist in ECR (push it first, or fix the digest)"))
    } else {
        Ok(())
    }
}

//! Verification before anything is registered: every secret reference exists (Parameter
//! Store and Secrets Manager *metadata* only — never a value), references are well-formed and
//! in the session's account and region, an execution role is set when secrets are used, and
//! each image given with `--image` exists in its registry; with `--permissions`, the
//! preflight of `permissions` too. All problems are collected and reported together, each
//! naming its container and variable.

use std::collections::{BTreeMap, BTreeSet};

use aws_config::SdkConfig;

use super::metadata;
use super::permissions::{self, Preflighted};
use super::refs::Target;
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
    /// With `--permissions`: what the preflight checked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Preflighted>,
}

pub struct Context<'a> {
    pub config: &'a SdkConfig,
    pub account: &'a str,
    pub region: &'a str,
    /// Where registry HTTP goes instead of the image's host (the local stack).
    pub registry_endpoint: Option<&'a str>,
    pub http: &'a reqwest::Client,
    /// Also run the permission preflight (`--permissions`).
    pub permissions: bool,
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
    let refs = metadata::references(td);
    for r in &refs {
        let problem =
            |message: String| Problem { container: r.container.clone(), variable: Some(r.variable.clone()), message };
        let target = match &r.target {
            Ok(t) => t,
            Err(e) if r.value_from.is_empty() => {
                problems.push(problem(e.reason.clone()));
                continue;
            }
            Err(e) => {
                problems.push(problem(e.to_string()));
                continue;
            }
        };
        let value_from = &r.value_from;
        let (region, account) = match target {
            Target::Parameter { region, account, .. } => (region.as_deref(), account.as_deref()),
            Target::Secret { region, account, .. } => (Some(region.as_str()), Some(account.as_str())),
        };
        if let Some(reg) = region.filter(|reg| *reg != ctx.region) {
            problems.push(problem(format!(
                "{value_from} is in region {reg}, the deployment is in {}; tasks read secrets from their own region — copy it or fix the ARN",
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
                parameters.entry(name.clone()).or_default().push((r.container.clone(), r.variable.clone()))
            }
            Target::Secret { id, .. } => {
                secrets.entry(id.clone()).or_default().push((r.container.clone(), r.variable.clone()))
            }
        }
    }
    if !refs.is_empty() && td.body.get("executionRoleArn").and_then(|v| v.as_str()).is_none_or(str::is_empty) {
        problems.push(Problem {
            container: "(task)".into(),
            variable: None,
            message: "secrets are used but executionRoleArn is not set: the ECS agent needs an execution role with ssm:GetParameters / secretsmanager:GetSecretValue to inject them".into(),
        });
    }

    let names: Vec<String> = parameters.keys().cloned().collect();
    let ids: Vec<String> = secrets.keys().cloned().collect();
    let meta = metadata::fetch(ctx.config, &names, &ids).await;
    match &meta.parameters_error {
        None => {
            for (name, users) in parameters.iter().filter(|(n, _)| !meta.parameters.contains_key(*n)) {
                for (container, variable) in users {
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
        Some(e) => problems.push(Problem { container: "(task)".into(), variable: None, message: e.clone() }),
    }
    for (id, users) in &secrets {
        let message = match meta.secrets.get(id) {
            Some(Ok(Some(_))) => continue,
            Some(Ok(None)) | None => format!(
                "secret {id} does not exist in account {} ({}); create it or fix the reference",
                ctx.account, ctx.region
            ),
            Some(Err(e)) => e.clone(),
        };
        for (container, variable) in users {
            problems.push(Problem {
                container: container.clone(),
                variable: Some(variable.clone()),
                message: message.clone(),
            });
        }
    }
    let mut missing_images = BTreeSet::new();
    for (container, uri) in images {
        if let Err(message) = check_image(ctx, uri).await {
            problems.push(Problem { container: container.clone(), variable: None, message });
            missing_images.insert(uri.clone());
        }
    }
    let permissions = if ctx.permissions {
        let (done, found) = permissions::check(ctx, td, &refs, &meta, &missing_images).await;
        problems.extend(found);
        Some(done)
    } else {
        None
    };
    if problems.is_empty() {
        Ok(Checked { parameters: parameters.len(), secrets: secrets.len(), images: images.len(), permissions })
    } else {
        Err(VerifyError(problems))
    }
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

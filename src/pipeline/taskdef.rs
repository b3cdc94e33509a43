//! The task-definition stage: load the template (a JSON file, a registered revision, or the
//! service's current definition), expand secret references, render, check it against ECS's
//! model (and pin secrets with `--pin-secrets`), add the plan's resource tags; then diff it
//! against what runs, verify every reference it needs (metadata only; with `--permissions`,
//! that the tasks can start), and
//! register it. Flags are checked before any network call.

use super::Session;
use super::plan::TaskDefPlan;
use crate::aws::ecs_json::EcsJson;
use crate::error::{Error, Result};
use crate::taskdef::diff::{self, Diff};
use crate::taskdef::ecs::{self, Registered};
use crate::taskdef::refs::{RefSpec, parse_ref};
use crate::taskdef::render::{RenderRequest, parse_image, parse_pair, render};
use crate::taskdef::resolve::{Scope, resolve};
use crate::taskdef::template::TaskDefinition;
use crate::taskdef::verify::{self, Checked, Context};
use crate::taskdef::{pins, schema};

/// A rendered task definition and where it came from.
pub struct Rendered {
    pub template_label: String,
    pub rendered: TaskDefinition,
    /// (container, image URI) given with --image, for verification.
    pub images: Vec<(String, String)>,
}

type Inputs = (Vec<(Option<String>, String)>, Vec<(String, String)>, Vec<(String, RefSpec)>);

/// The flags' values, parsed: images, env pairs, secret references.
fn parse_inputs(plan: &TaskDefPlan) -> Result<Inputs> {
    let r = &plan.render;
    let images: Vec<(Option<String>, String)> = r.images.iter().map(|i| parse_image(i)).collect::<Result<_, _>>()?;
    let env = r.env.iter().map(|e| parse_pair("--env", e)).collect::<Result<Vec<_>, _>>()?;
    let secrets: Vec<(String, RefSpec)> = r
        .secrets
        .iter()
        .map(|s| {
            let (name, reference) = parse_pair("--secret", s)?;
            let spec = parse_ref(&reference).map_err(|e| Error::Input(format!("--secret {name}: {e}")))?;
            Ok((name, spec))
        })
        .collect::<Result<_>>()?;
    if let Some(dupe) = env.iter().find(|(n, _)| secrets.iter().any(|(s, _)| s == n)) {
        return Err(Error::Input(format!(
            "{} is given both as --env and as --secret; keep one (a secret should never also be a plain variable)",
            dupe.0
        )));
    }
    Ok((images, env, secrets))
}

/// Everything before the command-specific step: flags checked first (no network on bad
/// input), then the template loaded and references expanded.
pub async fn prepare(session: &Session, plan: &TaskDefPlan) -> Result<Rendered> {
    let (images, env, secrets) = parse_inputs(plan)?;
    let ecs = EcsJson::new(&session.config);
    let (template, template_label) = load_template(session, &ecs, plan).await?;
    let scope = Scope { config: &session.config, account: &session.account, region: &session.region };
    let secrets = resolve(&scope, plan.render.secrets_path.as_deref(), &secrets).await?;
    let request = RenderRequest {
        container: plan.render.container.clone(),
        images,
        env,
        secrets,
        exclusive_env: plan.render.exclusive_env,
    };
    let mut rendered = render(&template, &request)?;
    schema::enforce(&rendered.body, &template_label, plan.render.allow_unknown_fields)?;
    if plan.render.pin_secrets {
        let (pinned, n) = pins::pin_secrets(&session.config, &rendered).await?;
        tracing::info!("pinned {n} Secrets Manager reference(s) to their current version id");
        rendered = pinned;
    }
    // The plan's tags over the template's of the same key, so the diff shows what registers.
    crate::tags::apply_to_taskdef(&mut rendered.body, &plan.tags);
    // Name the container of each --image for verification messages.
    let names = rendered.container_names();
    let images = request
        .images
        .iter()
        .map(|(c, uri)| {
            let container = c.clone().or_else(|| plan.render.container.clone()).or_else(|| names.first().cloned());
            (container.unwrap_or_default(), uri.clone())
        })
        .collect();
    Ok(Rendered { template_label, rendered, images })
}

/// A template FILE named by --task-definition, when it is one.
fn read_file(spec: &str) -> Result<Option<TaskDefinition>> {
    let path = std::path::Path::new(spec);
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Input(format!("--task-definition {spec}: cannot read it: {e}")))?;
    Ok(Some(TaskDefinition::parse(&text, spec)?))
}

async fn load_template(session: &Session, ecs: &EcsJson, plan: &TaskDefPlan) -> Result<(TaskDefinition, String)> {
    match (&plan.task_definition, &plan.service) {
        (Some(spec), _) => {
            if let Some(td) = read_file(spec)? {
                return Ok((td, spec.clone()));
            }
            if spec.ends_with(".json") || spec.contains('/') && !spec.starts_with("arn:") {
                return Err(Error::Input(format!(
                    "--task-definition {spec}: no such file (give a JSON file, family[:revision], or an ARN)"
                )));
            }
            let (td, id) = ecs::describe(ecs, spec).await?;
            Ok((td, format!("{}:{}", id.family, id.revision)))
        }
        (None, Some(service)) => {
            let arn = ecs::service_task_definition(&session.config, cluster(plan)?, service).await?;
            let (td, id) = ecs::describe(ecs, &arn).await?;
            Ok((td, format!("{}:{} (service {service})", id.family, id.revision)))
        }
        (None, None) => Err(Error::Usage(
            "give --task-definition FILE|family[:revision]|ARN, or --service (with --cluster) to start from what the service runs".into(),
        )),
    }
}

fn cluster(plan: &TaskDefPlan) -> Result<&str> {
    plan.cluster.as_deref().ok_or_else(|| Error::Usage("--service needs --cluster".into()))
}

/// The diff of the rendered definition against the service's current one (with a service),
/// else the family's latest revision; against nothing when neither exists yet.
pub async fn diff_against_current(session: &Session, plan: &TaskDefPlan, rendered: &Rendered) -> Result<Diff> {
    let ecs = EcsJson::new(&session.config);
    let baseline = match &plan.service {
        Some(service) => ecs::service_task_definition(&session.config, cluster(plan)?, service).await?,
        None => rendered.rendered.family().to_string(),
    };
    let current = match ecs::describe(&ecs, &baseline).await {
        Ok((td, id)) => Some((td.to_json(), format!("{}:{}", id.family, id.revision))),
        Err(ecs::EcsError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let (current_json, label) = match &current {
        Some((v, l)) => (Some(v), l.clone()),
        None => (None, "(nothing registered)".to_string()),
    };
    Ok(diff::diff(current_json, &label, &rendered.rendered.to_json(), "rendered"))
}

/// Verify every reference the rendered definition needs (as `verify` and `register` do).
pub async fn verify_rendered(session: &Session, plan: &TaskDefPlan, rendered: &Rendered) -> Result<Checked> {
    let http = super::http_client()?;
    let ctx = Context {
        config: &session.config,
        account: &session.account,
        region: &session.region,
        registry_endpoint: plan.registry_endpoint.as_deref(),
        http: &http,
        permissions: plan.permissions,
    };
    Ok(verify::verify(&ctx, &rendered.rendered, &rendered.images).await?)
}

pub async fn register(session: &Session, rendered: &Rendered) -> Result<Registered> {
    Ok(ecs::register(&EcsJson::new(&session.config), &rendered.rendered).await?)
}

/// A task definition ARN from `--task-definition`: a file is checked against ECS's model
/// (`allow_unknown`: unknown members as warnings) and registered, a family or
/// family:revision is looked up (so a deploy can match ECS's deployments by ARN).
pub async fn task_definition_arn(session: &Session, spec: &str, allow_unknown: bool) -> Result<String> {
    let client = EcsJson::new(&session.config);
    if let Some(td) = read_file(spec)? {
        schema::enforce(&td.body, spec, allow_unknown)?;
        return Ok(ecs::register(&client, &td).await?.task_definition_arn);
    }
    Ok(ecs::describe(&client, spec).await?.1.task_definition_arn)
}

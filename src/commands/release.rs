//! `deployer release`: resolve the environment (deployer.toml's policy), merge the flags over
//! its settings (`config::merge_release`), check every local input, build the typed plan (the
//! pre-deploy task, the after-deploy housekeeping and the resource tags included), run the
//! pipeline (`pipeline::release`), print. Refusals and bad input stop the run before any token
//! is requested.

use super::plan;
use crate::cli::{GlobalArgs, ReleaseArgs};
use crate::config::{Config, merge_release};
use crate::deploy::Cancel;
use crate::deploy::plan::ServiceGate;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::pipeline::plan::{GithubPlan, ImagePlan, ReleasePlan, TaskDefPlan};
use crate::pipeline::release::{self, Laps};

pub async fn run(args: &ReleaseArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let laps = Laps::start();
    let config = Config::load(&args.config, args.config.as_os_str() != "deployer.toml")?;
    let trigger = crate::resolve::trigger_from_env(args.environment.clone());
    let name =
        crate::resolve::environment(&config, &trigger).map_err(|r| Error::Input(format!("refusing to deploy: {r}")))?;
    let env = config.environments.get(&name).cloned().unwrap_or_default();
    let (merged, region) = merge_release(args, global.region.as_deref(), &env, &config);
    check_local_inputs(&merged, region.as_deref())?;
    let plan = release_plan(&merged, region, (&name, config.app.as_deref()), printer)?;
    printer.runner.set_output("environment", &name)?;
    let mut laps = laps;
    laps.lap("resolve", 0);
    let result = release::run(plan, &printer.runner, &Cancel::on_signals(), laps).await?;
    printer.result(&result);
    Ok(result.exit)
}

/// Every local input checked before any AWS call or upload, all problems reported together
/// as one usage error (exit 2): env names, secret references, images, tags, the repository,
/// the image source's syntax, URLs, role ARNs, session and traffic settings. The validators
/// are the stages' own; this only runs them early, so a typo never leaves a pushed image
/// behind.
pub fn check_local_inputs(m: &ReleaseArgs, region: Option<&str>) -> Result<()> {
    use crate::taskdef::{refs, render};
    let mut problems: Vec<String> = Vec::new();
    let mut note = |r: std::result::Result<(), String>| {
        if let Err(e) = r {
            problems.push(e);
        }
    };
    let r = &m.render;
    for pair in &r.env {
        note(render::parse_pair("--env", pair).map(drop).map_err(|e| e.to_string()));
    }
    for pair in &r.secrets {
        note(match render::parse_pair("--secret", pair) {
            Ok((name, reference)) => refs::parse_ref(&reference).map(drop).map_err(|e| format!("--secret {name}: {e}")),
            Err(e) => Err(e.to_string()),
        });
    }
    if let Some(path) = &r.secrets_path
        && !(path.starts_with('/') && path.len() > 1 && !path.contains("//"))
    {
        note(Err(format!("--secrets-path {path:?}: a Parameter Store path such as /production/shop/")));
    }
    for image in &r.images {
        note(render::parse_image(image).map(drop).map_err(|e| e.to_string()));
    }
    for tag in &m.target.tags {
        note(crate::image::check_tag(tag).map_err(|e| e.to_string()));
    }
    if let Some(repository) = &m.repository {
        note(crate::image::check_repository("--repository", repository).map_err(|e| e.to_string()));
    }
    if let Some(source) = &m.source {
        note(crate::image::source::SourceSpec::parse(source).map(drop).map_err(|e| e.to_string()));
    }
    if let Some(from) = &m.from {
        note(crate::image::promote::SourceRef::parse(from).map(drop).map_err(|e| e.to_string()));
    }
    if let Some(role) = &m.promote.from_role_arn {
        note(crate::aws::auth::check_role_arn("--from-role-arn", role).map(drop).map_err(|e| e.to_string()));
    }
    note(crate::pipeline::image::concurrency(m.upload.concurrency).map(drop).map_err(|e| e.to_string()));
    // SERVICE=URL is that service's own URL (deployer.toml's per-service URLs join them).
    let (health, own_health) = plan::split_urls(&m.gate.health_urls, &m.services);
    let (test, own_test) = plan::split_urls(&m.gate.traffic.test_urls, &m.services);
    let own: Vec<(&str, String)> = own_health
        .into_values()
        .flatten()
        .map(|u| ("--health-url", u))
        .chain(own_test.into_values().flatten().map(|u| ("--test-url", u)))
        .chain(m.service_settings.values().flat_map(|s| s.health_url.to_vec()).map(|u| ("health-url", u)))
        .chain(m.service_settings.values().flat_map(|s| s.test_url.to_vec()).map(|u| ("test-url", u)))
        .collect();
    let urls = health.iter().map(|u| ("--health-url", u));
    let urls = urls.chain(test.iter().map(|u| ("--test-url", u)));
    let urls = urls.chain(own.iter().map(|(f, u)| (*f, u)));
    let urls = urls.chain(m.environment_url.iter().map(|u| ("--environment-url", u)));
    let urls = urls.chain(m.target.registry_endpoint.iter().map(|u| ("--registry-endpoint", u)));
    let urls = urls.chain(m.github_api_url.iter().map(|u| ("--github-api-url", u)));
    for (flag, url) in urls {
        note(match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
            Ok(_) => Err(format!("{flag} {url:?}: use an http(s) URL with a host")),
            Err(e) => Err(format!("{flag} {url:?} is not a URL: {e}")),
        });
    }
    note(plan::shift_settings(&m.gate).validate());
    note(plan::codedeploy_settings(&m.gate).validate());
    note(plan::pre_deploy_spec(&m.pre_deploy).map(drop).map_err(|e| e.to_string()));
    note(plan::resource_tags(&m.resources.resource_tags, None, None).map(drop).map_err(|e| e.to_string()));
    note(plan::create_options(&m.upload, &m.resources, &[]).map(drop).map_err(|e| e.to_string()));
    note(plan::auth_request(&m.auth, region.map(str::to_string)).map(drop).map_err(|e| e.to_string()));
    match problems.as_slice() {
        [] => Ok(()),
        [one] => Err(Error::Usage(format!("release: {one}"))),
        many => Err(Error::Usage(format!("release: {} inputs are wrong:\n  - {}", many.len(), many.join("\n  - ")))),
    }
}

/// The typed plan of the merged flags; what is still missing is a usage error naming the flag
/// and the deployer.toml key. `(env, app)`: the environment and deployer.toml's `app`.
fn release_plan(
    m: &ReleaseArgs,
    region: Option<String>,
    (env, app): (&str, Option<&str>),
    printer: &Printer,
) -> Result<ReleasePlan> {
    let missing = |what: &str, key: &str| {
        Error::Usage(format!(
            "release needs {what}: pass --{key} or set `{key}` for environment {env:?} in deployer.toml"
        ))
    };
    let cluster = m.cluster.clone().ok_or_else(|| missing("a cluster", "cluster"))?;
    if m.services.is_empty() {
        return Err(missing("a service", "service"));
    }
    let tags = plan::resource_tags(&m.resources.resource_tags, app, Some(env))?;
    let image = image_plan(m, env, &tags)?;
    let auth = plan::auth_request(&m.auth, region)?;
    let auth_source = plan::auth_source(printer.runner.in_actions(), auth.role.is_some())?;
    let taskdef = TaskDefPlan {
        task_definition: m.task_definition.clone(),
        cluster: Some(cluster.clone()),
        service: m.services.first().cloned(),
        render: m.render.clone(),
        registry_endpoint: m.target.registry_endpoint.clone(),
        permissions: m.permissions,
        tags,
    };
    let mut deploy = plan::deploy_plan(&cluster, &m.services, &m.gate)?;
    let mut service_taskdefs = std::collections::BTreeMap::new();
    for (name, own) in m.service_settings.iter().filter(|(name, _)| m.services.contains(name)) {
        let gate = ServiceGate {
            health_urls: Some(own.health_url.to_vec()).filter(|u| !u.is_empty()),
            test_urls: Some(own.test_url.to_vec()).filter(|u| !u.is_empty()),
        };
        if gate != ServiceGate::default() {
            deploy.per_service.insert(name.clone(), gate);
        }
        if own.task_definition.is_some() || own.container.is_some() {
            let mut td = taskdef.clone();
            td.service = Some(name.clone());
            td.task_definition = own.task_definition.clone().or(td.task_definition);
            td.render.container = own.container.clone().or(td.render.container);
            service_taskdefs.insert(name.clone(), td);
        }
    }
    deploy.validate().map_err(Error::Usage)?;
    Ok(ReleasePlan {
        environment: env.to_string(),
        auth,
        auth_source,
        image,
        taskdef,
        service_taskdefs,
        pre_deploy: plan::pre_deploy_spec(&m.pre_deploy)?,
        deploy,
        after: plan::after_deploy_plan(&m.after),
        github: GithubPlan {
            token: m
                .github_token
                .clone()
                .or_else(|| std::env::var("GITHUB_TOKEN").ok().map(crate::secret::Secret::from)),
            api_url: m.github_api_url.clone(),
            environment_url: m.environment_url.clone(),
        },
    })
}

/// Where the image comes from: pushed (`--source`), promoted (`--from`), or given (`--image`).
fn image_plan(m: &ReleaseArgs, env: &str, tags: &[(String, String)]) -> Result<ImagePlan> {
    if m.source.is_none() && m.from.is_none() {
        return Ok(ImagePlan::Given);
    }
    let repository = m.repository.as_deref().ok_or_else(|| {
        Error::Usage(format!(
            "--source/--from need a repository: pass --repository or set `repository` for environment {env:?}"
        ))
    })?;
    Ok(match (&m.source, &m.from) {
        (Some(s), _) => {
            let create = plan::create_options(&m.upload, &m.resources, tags)?;
            ImagePlan::Push(plan::push_request(s, repository, &m.target, &m.upload, create))
        }
        (None, Some(f)) => ImagePlan::Promote(plan::promote_request(f, &m.promote, repository, &m.target)),
        (None, None) => ImagePlan::Given,
    })
}

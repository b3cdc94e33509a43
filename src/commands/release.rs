//! `deployer release`: resolve → auth → push or promote → render → verify → register →
//! deploy, in one call — what the action runs. Flags override deployer.toml's environment;
//! every stage's result lands in the final JSON, the step outputs and the summary.

use std::fmt;
use std::time::Instant;

use serde::Serialize;

use crate::cli::{AuthArgs, DeployArgs, ExportMode, GlobalArgs, ReleaseArgs, RenderArgs, Strategy, TaskDefArgs};
use crate::commands::deploy::{DeployResult, deploy_services, publish};
use crate::commands::taskdef::{self, Session};
use crate::config::{Config, Environment};
use crate::deploy::rolling::Outcome;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::output::Printer;
use crate::resolve;
use crate::taskdef::ecs;

/// Flags and the environment's settings merged: everything the stages need.
#[derive(Debug)]
pub struct Plan {
    pub environment: String,
    pub region: Option<String>,
    pub auth: AuthArgs,
    pub taskdef: TaskDefArgs,
    pub deploy: DeployArgs,
    pub repository: Option<String>,
}

fn strategy(name: &str) -> Option<Strategy> {
    match name {
        "rolling" => Some(Strategy::Rolling),
        "blue-green" => Some(Strategy::BlueGreen),
        "canary" => Some(Strategy::Canary),
        "linear" => Some(Strategy::Linear),
        _ => None,
    }
}

/// Merge flags over the environment's settings and check that nothing required is missing.
pub fn plan(args: &ReleaseArgs, global: &GlobalArgs, name: &str, env: &Environment, config: &Config) -> Result<Plan> {
    let or_vec = |flag: &Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag.clone() };
    let missing = |what: &str, key: &str| {
        Error::Usage(format!(
            "release needs {what}: pass --{key} or set `{key}` for environment {name:?} in deployer.toml"
        ))
    };
    let cluster =
        args.cluster.clone().or_else(|| env.cluster.clone()).ok_or_else(|| missing("a cluster", "cluster"))?;
    let services = or_vec(&args.services, env.service.to_vec());
    if services.is_empty() {
        return Err(missing("a service", "service"));
    }
    let mut env_pairs: Vec<String> = env.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env_pairs.extend(args.render.env.iter().cloned());
    let mut secret_pairs: Vec<String> = env.secrets.iter().map(|(k, v)| format!("{k}={v}")).collect();
    secret_pairs.extend(args.render.secrets.iter().cloned());
    let strategy = match (&args.strategy, &env.strategy) {
        (Some(s), _) => *s,
        (None, Some(s)) => strategy(s).ok_or_else(|| Error::Usage(format!("unknown strategy {s:?}")))?,
        (None, None) => Strategy::Rolling,
    };
    Ok(Plan {
        environment: name.to_string(),
        region: global.region.clone().or_else(|| env.region.clone()).or_else(|| config.region.clone()),
        auth: AuthArgs {
            role_arn: args.role_arn.clone().or_else(|| env.role_arn.clone()),
            audience: args.audience.clone(),
            session_name: args.session_name.clone(),
            duration: args.duration,
            chain_role_arn: args.chain_role_arn.clone().or_else(|| env.chain_role_arn.clone()),
            allowed_account_ids: or_vec(&args.allowed_account_ids, env.allowed_account_ids.clone()),
            export: Some(ExportMode::None),
        },
        taskdef: TaskDefArgs {
            task_definition: args.task_definition.clone().or_else(|| env.task_definition.clone()),
            cluster: Some(cluster.clone()),
            service: Some(services[0].clone()),
            render: RenderArgs {
                container: args.render.container.clone().or_else(|| env.container.clone()),
                images: args.render.images.clone(),
                env: env_pairs,
                secrets: secret_pairs,
                secrets_path: args.render.secrets_path.clone().or_else(|| env.secrets_path.clone()),
                exclusive_env: args.render.exclusive_env,
                allow_unknown_fields: args.render.allow_unknown_fields,
                pin_secrets: args.render.pin_secrets,
            },
            registry_endpoint: args.registry_endpoint.clone(),
            no_verify: false,
            permissions: args.permissions,
            exit_code: false,
        },
        deploy: DeployArgs {
            cluster,
            services,
            task_definition: String::new(),
            strategy,
            health_urls: or_vec(&args.health_urls, env.health_url.to_vec()),
            bake: args.bake.or(env.bake),
            timeout: args.timeout.or(env.timeout).unwrap_or(1800),
            no_rollback: args.no_rollback,
            all_or_nothing: args.all_or_nothing,
            probe_successes: 3,
            probe_failures: 3,
            traffic: crate::cli::TrafficArgs {
                test_urls: or_vec(&args.traffic.test_urls, env.test_url.to_vec()),
                ..args.traffic.clone()
            },
        },
        repository: args.repository.clone().or_else(|| env.repository.clone()),
    })
}

/// Every local input checked before any AWS call or upload, all problems reported together
/// as one usage error (exit 2): env names, secret references, images, tags, the repository,
/// the image source's syntax, URLs, role ARNs and session settings. The validators are the
/// stages' own; this only runs them early, so a typo never leaves a pushed image behind.
pub fn check_local_inputs(args: &ReleaseArgs, plan: &Plan) -> Result<()> {
    use crate::taskdef::{refs, render};
    let mut problems: Vec<String> = Vec::new();
    let mut note = |r: std::result::Result<(), String>| {
        if let Err(e) = r {
            problems.push(e);
        }
    };
    let render = &plan.taskdef.render;
    for pair in &render.env {
        note(render::parse_pair("--env", pair).map(drop).map_err(|e| e.to_string()));
    }
    for pair in &render.secrets {
        note(match render::parse_pair("--secret", pair) {
            Ok((name, reference)) => refs::parse_ref(&reference).map(drop).map_err(|e| format!("--secret {name}: {e}")),
            Err(e) => Err(e.to_string()),
        });
    }
    if let Some(path) = &render.secrets_path
        && !(path.starts_with('/') && path.len() > 1 && !path.contains("//"))
    {
        note(Err(format!("--secrets-path {path:?}: a Parameter Store path such as /production/shop/")));
    }
    for image in &render.images {
        note(render::parse_image(image).map(drop).map_err(|e| e.to_string()));
    }
    for tag in &args.tags {
        note(crate::image::check_tag(tag).map_err(|e| e.to_string()));
    }
    if let Some(repository) = &plan.repository {
        note(crate::image::check_repository("--repository", repository).map_err(|e| e.to_string()));
    }
    if let Some(source) = &args.source {
        note(crate::image::source::SourceSpec::parse(source).map(drop).map_err(|e| e.to_string()));
    }
    if let Some(from) = &args.from {
        note(crate::image::promote::SourceRef::parse(from).map(drop).map_err(|e| e.to_string()));
    }
    note(crate::commands::push::concurrency(args.concurrency).map(drop).map_err(|e| e.to_string()));
    let urls = plan.deploy.health_urls.iter().map(|u| ("--health-url", u));
    let urls = urls.chain(plan.deploy.traffic.test_urls.iter().map(|u| ("--test-url", u)));
    let urls = urls.chain(args.environment_url.iter().map(|u| ("--environment-url", u)));
    let urls = urls.chain(args.registry_endpoint.iter().map(|u| ("--registry-endpoint", u)));
    let urls = urls.chain(args.github_api_url.iter().map(|u| ("--github-api-url", u)));
    for (flag, url) in urls {
        note(match reqwest::Url::parse(url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
            Ok(_) => Err(format!("{flag} {url:?}: use an http(s) URL with a host")),
            Err(e) => Err(format!("{flag} {url:?} is not a URL: {e}")),
        });
    }
    let global = GlobalArgs { output: crate::cli::OutputFormat::Text, region: plan.region.clone(), verbose: 0 };
    note(crate::commands::auth::request(&plan.auth, &global).map(drop).map_err(|e| e.to_string()));
    match problems.as_slice() {
        [] => Ok(()),
        [one] => Err(Error::Usage(format!("release: {one}"))),
        many => Err(Error::Usage(format!("release: {} inputs are wrong:\n  - {}", many.len(), many.join("\n  - ")))),
    }
}

/// The release as the action's outputs name it (DESIGN.md section 3), plus each stage.
#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ReleaseResult {
    pub environment: String,
    pub aws_account_id: String,
    pub image_uri: Option<String>,
    pub image_digest: Option<String>,
    pub task_definition_arn: String,
    pub previous_task_definition_arn: String,
    pub deployment_id: String,
    pub result: &'static str,
    pub stages: Vec<StageTime>,
    /// The version of each parameter and secret the task definition references (never a value).
    pub configuration: Vec<crate::taskdef::pins::ConfigVersion>,
    pub deploy: DeployResult,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct StageTime {
    pub stage: &'static str,
    pub ms: u64,
}

impl fmt::Display for ReleaseResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "environment {} (account {}): {}", self.environment, self.aws_account_id, self.result)?;
        if let Some(uri) = &self.image_uri {
            writeln!(f, "  image: {uri}")?;
        }
        let stages: Vec<String> =
            self.stages.iter().map(|s| format!("{} {:.1}s", s.stage, s.ms as f64 / 1000.0)).collect();
        writeln!(f, "  stages: {}", stages.join(" → "))?;
        write!(f, "{}", self.deploy)
    }
}

fn result_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "succeeded",
        Outcome::RolledBack => "rolled-back",
        Outcome::Failed => "failed",
    }
}

/// The image to put into the task definition, from push/promote or --image.
pub struct Published {
    pub uri: String,
    pub digest: String,
}

pub async fn run(args: &ReleaseArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let mut stages = Vec::new();
    let mut clock = Instant::now();
    let mut lap = |stage: &'static str, stages: &mut Vec<StageTime>| {
        stages.push(StageTime { stage, ms: clock.elapsed().as_millis() as u64 });
        clock = Instant::now();
    };

    // resolve: which environment, and is this run allowed to deploy there?
    let config = crate::config::Config::load(&args.config, args.config.as_os_str() != "deployer.toml")?;
    let trigger = resolve::trigger_from_env(args.environment.clone());
    let name = resolve::environment(&config, &trigger).map_err(|r| Error::Input(format!("refusing to deploy: {r}")))?;
    let env = config.environments.get(&name).cloned().unwrap_or_default();
    let mut plan = plan(args, global, &name, &env, &config)?;
    check_local_inputs(args, &plan)?;
    printer.runner.set_output("environment", &name)?;
    lap("resolve", &mut stages);

    // auth
    let global = GlobalArgs { output: global.output, region: plan.region.clone(), verbose: global.verbose };
    let session = crate::commands::auth::session(&plan.auth, &global, printer).await?;
    printer.runner.set_output("aws-account-id", &session.account_id)?;
    let td_session =
        Session { config: session.config.clone(), account: session.account_id.clone(), region: session.region() };
    let timeout = std::time::Duration::from_secs(plan.deploy.timeout);
    session
        .reach
        .check(std::time::SystemTime::now(), crate::aws::refresh::deploy_budget(timeout), timeout)
        .map_err(Error::Input)?;
    lap("auth", &mut stages);

    // push or promote
    let published = crate::commands::release_image::publish(args, &plan, &td_session, printer).await?;
    if let Some(p) = &published {
        printer.runner.set_output("image-uri", &p.uri)?;
        printer.runner.set_output("image-digest", &p.digest)?;
        let target = match &plan.taskdef.render.container {
            Some(c) => format!("{c}={}", p.uri),
            None => p.uri.clone(),
        };
        plan.taskdef.render.images.insert(0, target);
        lap("push", &mut stages);
    }

    // render + verify + register
    let rendered = taskdef::prepare(&td_session, &plan.taskdef).await?;
    let diff = taskdef::diff_against_current(&td_session, &plan.taskdef, &rendered).await?;
    printer.runner.summary(&diff.markdown())?;
    lap("render", &mut stages);
    taskdef::verify_rendered(&td_session, &plan.taskdef, &rendered).await?;
    let configuration = crate::taskdef::pins::configuration(&td_session.config, &rendered.rendered).await;
    lap("verify", &mut stages);
    let registered = ecs::register(&crate::aws::ecs_json::EcsJson::new(&td_session.config), &rendered.rendered).await?;
    printer.runner.set_output("task-definition-arn", &registered.task_definition_arn)?;
    lap("register", &mut stages);

    // the GitHub Deployment records the deploy from here on (best effort, never fails the release)
    let github =
        github_deployment(args, &plan, published.as_ref(), &registered.task_definition_arn, &configuration, printer)
            .await;

    // deploy
    plan.deploy.task_definition = registered.task_definition_arn.clone();
    let deployed = match deploy_services(&td_session, &plan.deploy, &registered.task_definition_arn, printer).await {
        Ok(d) => d,
        Err(e) => {
            github.finish(false, &e.to_string()).await;
            return Err(e);
        }
    };
    publish(printer, &deployed)?;
    github.finish(deployed.result == Outcome::Succeeded, result_name(deployed.result)).await;
    if let Some(id) = github.id() {
        printer.runner.set_output("github-deployment-id", &id.to_string())?;
    }
    lap("deploy", &mut stages);

    let first = deployed.services.first();
    let result = ReleaseResult {
        environment: name,
        aws_account_id: session.account_id.clone(),
        image_uri: published.as_ref().map(|p| p.uri.clone()),
        image_digest: published.as_ref().map(|p| p.digest.clone()),
        task_definition_arn: registered.task_definition_arn,
        previous_task_definition_arn: first.map(|r| r.previous_task_definition_arn.clone()).unwrap_or_default(),
        deployment_id: first.and_then(|r| r.deployment_id.clone()).unwrap_or_default(),
        result: result_name(deployed.result),
        stages,
        configuration,
        deploy: deployed,
    };
    let exit = result.deploy.exit();
    printer.runner.summary(&crate::report::release_summary(&crate::report::ReleaseSummary {
        environment: &result.environment,
        image_uri: result.image_uri.as_deref(),
        image_digest: result.image_digest.as_deref(),
        task_definition_arn: &result.task_definition_arn,
        previous_task_definition_arn: &result.previous_task_definition_arn,
        strategy: strategy_name(plan.deploy.strategy),
        result: result.result,
        stages: result.stages.iter().map(|s| (s.stage, s.ms)).collect(),
    }))?;
    printer.result(&result);
    Ok(exit)
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::Rolling => "rolling",
        Strategy::BlueGreen => "blue-green",
        Strategy::Canary => "canary",
        Strategy::Linear => "linear",
    }
}

/// Start the GitHub Deployment for this release: token from --github-token /
/// DEPLOYER_GITHUB_TOKEN, else GITHUB_TOKEN; the environment URL from --environment-url, else
/// the first health URL.
async fn github_deployment<'a>(
    args: &ReleaseArgs,
    plan: &Plan,
    published: Option<&Published>,
    task_definition_arn: &str,
    configuration: &[crate::taskdef::pins::ConfigVersion],
    printer: &'a Printer,
) -> crate::github::deployments::Recorder<'a> {
    let token =
        args.github_token.clone().or_else(|| std::env::var("GITHUB_TOKEN").ok().map(crate::secret::Secret::from));
    let environment_url = args.environment_url.clone().or_else(|| plan.deploy.health_urls.first().cloned());
    let payload = serde_json::json!({
        "image-uri": published.map(|p| p.uri.as_str()),
        "image-digest": published.map(|p| p.digest.as_str()),
        "task-definition-arn": task_definition_arn,
        "services": plan.deploy.services,
        "cluster": plan.deploy.cluster,
        "configuration": configuration,
    });
    crate::github::deployments::Recorder::start(
        &printer.runner,
        token,
        args.github_api_url.clone(),
        &plan.environment,
        environment_url,
        &payload,
    )
    .await
}

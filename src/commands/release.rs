//! `deployer release`: resolve the environment (deployer.toml's policy), merge the flags over
//! its settings (`config::merge_release`), build the typed plan, run the pipeline
//! (`pipeline::release`), print. Refusals happen before any token is requested.

use super::plan;
use crate::cli::{GlobalArgs, ReleaseArgs};
use crate::config::{Config, merge_release};
use crate::deploy::Cancel;
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
    let plan = release_plan(&merged, region, &name, printer)?;
    printer.runner.set_output("environment", &name)?;
    let mut laps = laps;
    laps.lap("resolve", 0);
    let result = release::run(plan, &printer.runner, &Cancel::on_signals(), laps).await?;
    printer.result(&result);
    Ok(result.deploy.exit)
}

/// The typed plan of the merged flags; what is still missing is a usage error naming the flag
/// and the deployer.toml key.
fn release_plan(m: &ReleaseArgs, region: Option<String>, env: &str, printer: &Printer) -> Result<ReleasePlan> {
    let missing = |what: &str, key: &str| {
        Error::Usage(format!(
            "release needs {what}: pass --{key} or set `{key}` for environment {env:?} in deployer.toml"
        ))
    };
    let cluster = m.cluster.clone().ok_or_else(|| missing("a cluster", "cluster"))?;
    if m.services.is_empty() {
        return Err(missing("a service", "service"));
    }
    let image = match (&m.source, &m.from) {
        (None, None) => ImagePlan::Given,
        (source, from) => {
            let repository = m.repository.as_deref().ok_or_else(|| {
                Error::Usage(format!(
                    "--source/--from need a repository: pass --repository or set `repository` for environment {env:?}"
                ))
            })?;
            match (source, from) {
                (Some(s), _) => ImagePlan::Push(plan::push_request(s, repository, &m.target, &m.upload)),
                (None, Some(f)) => ImagePlan::Promote(plan::promote_request(f, &m.promote, repository, &m.target)),
                (None, None) => ImagePlan::Given,
            }
        }
    };
    let auth = plan::auth_request(&m.auth, region)?;
    let auth_source = plan::auth_source(printer.runner.in_actions(), auth.role.is_some())?;
    Ok(ReleasePlan {
        environment: env.to_string(),
        auth,
        auth_source,
        image,
        taskdef: TaskDefPlan {
            task_definition: m.task_definition.clone(),
            cluster: Some(cluster.clone()),
            service: m.services.first().cloned(),
            render: m.render.clone(),
            registry_endpoint: m.target.registry_endpoint.clone(),
        },
        deploy: plan::deploy_plan(&cluster, &m.services, &m.gate)?,
        github: GithubPlan {
            token: m.github_token.clone().or_else(|| std::env::var("GITHUB_TOKEN").ok()),
            api_url: m.github_api_url.clone(),
            environment_url: m.environment_url.clone(),
        },
    })
}

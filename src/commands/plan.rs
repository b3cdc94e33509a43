//! Building the stages' typed requests from the flag groups, shared by the single commands and
//! `release`, so a flag means the same everywhere. Settings the logic must not read from the
//! process environment mid-way are read here, at the edge (`DEPLOYER_POLL_MS`,
//! `DEPLOYER_POLL_MAX_MS`, `GITHUB_REPOSITORY`/`GITHUB_RUN_ID` for session names, the layer
//! cache directory, `GITHUB_SHA`/`GITHUB_SERVER_URL` for resource tags).

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;

use crate::aws::auth::{self, AuthRequest, Source};
use crate::aws::clients::{self, BaseCredentials};
use crate::aws::limiter::Limits;
use crate::cli::{
    AfterDeployArgs, AuthArgs, GateArgs, ImageTargetArgs, OneOffArgs, OneOffFlags, PreDeployFlags, PromoteSourceArgs,
    ResourceArgs, TaskDefArgs, UploadArgs,
};
use crate::deploy::plan::{CodeDeploySettings, DeployPlan, GateConfig, Poll, ServiceGate, ShiftSettings, minutes};
use crate::error::{Error, Result};
use crate::github::oidc::{OidcError, TokenEndpoint};
use crate::image::ecr::CreateOptions;
use crate::image::source::Cache;
use crate::pipeline::plan::{AfterDeployPlan, PromoteRequest, PushRequest, TaskDefPlan};
use crate::runtask::{DEFAULT_TIMEOUT, TaskSpec, parse_duration};
use crate::taskdef::render::parse_pair;

/// Validate the auth flags into a request; no network call happens here.
pub fn auth_request(args: &AuthArgs, region: Option<String>) -> Result<AuthRequest> {
    let role = args.role_arn.as_deref().map(|arn| auth::check_role_arn("--role-arn", arn)).transpose()?;
    let chain_role =
        args.chain_role_arn.as_deref().map(|arn| auth::check_role_arn("--chain-role-arn", arn)).transpose()?;
    let session_name = match &args.session_name {
        Some(name) => {
            auth::check_session_name(name)?;
            name.clone()
        }
        None => default_session_name(),
    };
    auth::check_duration(args.duration)?;
    for id in &args.allowed_account_ids {
        if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::Usage(format!("--allowed-account-ids: {id:?} is not a 12-digit account id")));
        }
    }
    Ok(AuthRequest {
        role,
        chain_role,
        session_name,
        duration_seconds: args.duration,
        audience: args.audience.clone(),
        allowed_account_ids: args.allowed_account_ids.clone(),
        region,
    })
}

/// `deployer-<owner>-<repo>-<run id>` from the job's GITHUB_REPOSITORY and GITHUB_RUN_ID.
fn default_session_name() -> String {
    let var = |name: &str| std::env::var(name).ok();
    auth::default_session_name(var("GITHUB_REPOSITORY").as_deref(), var("GITHUB_RUN_ID").as_deref())
}

/// Inside Actions an OIDC endpoint is expected when a role is given; outside, the default
/// chain serves (and assumes `--role-arn` with sts:AssumeRole when given).
pub fn auth_source(in_actions: bool, role_given: bool) -> Result<Source> {
    match TokenEndpoint::from_env()? {
        Some(endpoint) => Ok(Source::GithubOidc(endpoint)),
        None if in_actions && role_given => Err(OidcError::NotAvailable.into()),
        None => Ok(Source::DefaultChain),
    }
}

/// The default credential chain's configuration (push and promote at a terminal, or with
/// credentials a previous step exported).
pub async fn default_config(region: Option<&str>) -> Result<SdkConfig> {
    clients::load(region, BaseCredentials::DefaultChain).await.map_err(|e| Error::Input(e.to_string()))
}

/// The poll interval's bounds: `DEPLOYER_POLL_MS` / `DEPLOYER_POLL_MAX_MS` (tests against a
/// fast sim, the bench), else 2 s growing to 10 s.
pub fn poll_from_env() -> Poll {
    let ms = |var: &str| std::env::var(var).ok().and_then(|v| v.parse::<u64>().ok());
    Poll::from_millis(ms("DEPLOYER_POLL_MS"), ms("DEPLOYER_POLL_MAX_MS"))
}

/// The traffic-shift settings of `gate`: ECS takes minutes, deployer seconds (rounded up).
pub fn shift_settings(gate: &GateArgs) -> ShiftSettings {
    let t = &gate.traffic;
    ShiftSettings {
        bake_minutes: gate.bake.map(minutes),
        canary_percent: t.canary_percent,
        canary_bake_minutes: t.canary_bake.map(minutes),
        linear_percent: t.linear_percent,
        linear_bake_minutes: t.linear_bake.map(minutes),
    }
}

/// The ECS API budget: 90% of ECS's documented figures, with `--ecs-api-limits` entries
/// (BUCKET=BURST/RATE) over them.
pub fn api_limits(spec: Option<&str>) -> std::result::Result<Limits, String> {
    match spec {
        Some(spec) => Limits::default().with_spec(spec),
        None => Ok(Limits::default()),
    }
}

/// `--health-url` / `--test-url` values: `SERVICE=URL` (SERVICE one of `services`) is that
/// service's own; any other value is every service's.
pub fn split_urls(values: &[String], services: &[String]) -> (Vec<String>, BTreeMap<String, Vec<String>>) {
    let mut all = Vec::new();
    let mut own: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in values {
        match v.split_once('=') {
            Some((name, url)) if services.iter().any(|s| s == name) => {
                own.entry(name.to_string()).or_default().push(url.to_string())
            }
            _ => all.push(v.clone()),
        }
    }
    (all, own)
}

/// The CodeDeploy settings of `gate` (services under the CODE_DEPLOY controller).
pub fn codedeploy_settings(gate: &GateArgs) -> CodeDeploySettings {
    let c = &gate.codedeploy;
    CodeDeploySettings {
        application: c.codedeploy_application.clone(),
        deployment_group: c.codedeploy_deployment_group.clone(),
        deployment_config: c.codedeploy_deployment_config.clone(),
        wait_for_termination: c.codedeploy_wait_for_termination,
    }
}

/// The deploy plan of `gate` for `services` of `cluster`; bad values are usage errors.
pub fn deploy_plan(cluster: &str, services: &[String], gate: &GateArgs) -> Result<DeployPlan> {
    let t = &gate.traffic;
    let (health_urls, own_health) = split_urls(&gate.health_urls, services);
    let (test_urls, own_test) = split_urls(&t.test_urls, services);
    let mut per_service: BTreeMap<String, ServiceGate> = BTreeMap::new();
    for (name, urls) in own_health {
        per_service.entry(name).or_default().health_urls = Some(urls);
    }
    for (name, urls) in own_test {
        per_service.entry(name).or_default().test_urls = Some(urls);
    }
    let plan = DeployPlan {
        cluster: cluster.to_string(),
        services: services.to_vec(),
        strategy: gate.strategy.unwrap_or_default(),
        gate: GateConfig {
            bake: Duration::from_secs(gate.bake.unwrap_or(0)),
            timeout: Duration::from_secs(gate.timeout.unwrap_or(1800)),
            probe_successes: gate.probe_successes.max(1),
            probe_failures: gate.probe_failures.max(1),
            health_urls,
            test_urls,
        },
        per_service,
        shift: shift_settings(gate),
        codedeploy: codedeploy_settings(gate),
        no_rollback: gate.no_rollback,
        all_or_nothing: gate.all_or_nothing,
        poll: poll_from_env(),
        api_limits: api_limits(gate.ecs_api_limits.as_deref()).map_err(Error::Usage)?,
    };
    plan.validate().map_err(Error::Usage)?;
    Ok(plan)
}

/// The tags of what this run creates: app and environment (release), git-sha and run-url
/// (the job's variables, read here), then `--resource-tag` pairs. A bad tag is a usage error.
pub fn resource_tags(flags: &[String], app: Option<&str>, environment: Option<&str>) -> Result<Vec<(String, String)>> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    crate::tags::from_flags(flags, app, environment, &var).map_err(|e| Error::Usage(e.to_string()))
}

/// What `--create-repository` creates: mutability, scanning, `tags`, and the lifecycle policy
/// the flags (over deployer.toml's) ask for. `None` without `--create-repository`.
pub fn create_options(
    upload: &UploadArgs,
    resources: &ResourceArgs,
    tags: &[(String, String)],
) -> Result<Option<CreateOptions>> {
    let flags = crate::lifecycle_policy::Flags {
        off: resources.no_lifecycle_policy,
        keep_images: resources.keep_images,
        expire_untagged_days: resources.expire_untagged_days,
    };
    let policy = crate::lifecycle_policy::resolve(flags).map_err(Error::Usage)?;
    Ok(upload.create_repository.then(|| CreateOptions {
        immutable: upload.immutable_tags,
        scan_on_push: upload.scan_on_push,
        tags: tags.to_vec(),
        lifecycle_policy: policy.map(|p| p.text()),
    }))
}

pub fn push_request(
    source: &str,
    repository: &str,
    target: &ImageTargetArgs,
    upload: &UploadArgs,
    create: Option<CreateOptions>,
) -> PushRequest {
    PushRequest {
        source: source.to_string(),
        repository: repository.to_string(),
        tags: target.tags.clone(),
        registry_endpoint: target.registry_endpoint.clone(),
        create,
        concurrency: upload.concurrency,
        cache: Cache::from_env(),
    }
}

pub fn promote_request(
    from: &str,
    source: &PromoteSourceArgs,
    repository: &str,
    target: &ImageTargetArgs,
) -> PromoteRequest {
    PromoteRequest {
        from: from.to_string(),
        from_registry: source.from_registry.clone(),
        from_role_arn: source.from_role_arn.clone(),
        from_registry_endpoint: source.from_registry_endpoint.clone(),
        session_name: default_session_name(),
        repository: repository.to_string(),
        tags: target.tags.clone(),
        registry_endpoint: target.registry_endpoint.clone(),
    }
}

/// The task-definition commands' plan; `register` tags the revision with git-sha and run-url
/// when run in a workflow (`release` adds app, environment and the user's tags).
pub fn taskdef_plan(args: &TaskDefArgs) -> Result<TaskDefPlan> {
    Ok(TaskDefPlan {
        task_definition: args.task_definition.clone(),
        cluster: args.cluster.clone(),
        service: args.service.clone(),
        render: args.render.clone(),
        registry_endpoint: args.registry_endpoint.clone(),
        permissions: args.permissions,
        tags: resource_tags(&[], None, None)?,
    })
}

/// A one-off task's spec from its flag group (`trailing`: a command given after `--`). Bad
/// values are usage errors naming the flag.
pub fn task_spec<N: OneOffFlags>(args: &OneOffArgs<N>, trailing: &[String]) -> Result<TaskSpec> {
    let command = match (&args.command, trailing) {
        (Some(_), [_, ..]) => {
            return Err(Error::Usage(format!("give the command either with --{} or after `--`, not both", N::COMMAND)));
        }
        (Some(c), []) => c.0.clone(),
        (None, argv) => argv.to_vec(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for pair in &args.env {
        let (name, value) = parse_pair(N::ENV_FLAG, pair).map_err(|e| Error::Usage(e.to_string()))?;
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    let timeout = match &args.timeout {
        Some(t) => parse_duration(t).map_err(|e| Error::Usage(format!("--{} {e}", N::TIMEOUT)))?,
        None => DEFAULT_TIMEOUT,
    };
    Ok(TaskSpec { command, container: args.container.clone(), env, timeout, log_lines: args.log_lines.unwrap_or(0) })
}

/// `release`'s pre-deploy task; `None` when no command is set (other settings alone are a
/// mistake, refused).
pub fn pre_deploy_spec(args: &OneOffArgs<PreDeployFlags>) -> Result<Option<TaskSpec>> {
    if args.command.is_none() {
        let stray = args.container.is_some() || args.timeout.is_some() || args.log_lines.is_some();
        if stray || !args.env.is_empty() {
            return Err(Error::Usage(
                "--pre-deploy-container/-env/-timeout/-log-lines need a pre-deploy command (--pre-deploy-command or \
                 pre-deploy.command in deployer.toml)"
                    .into(),
            ));
        }
        return Ok(None);
    }
    task_spec(args, &[]).map(Some)
}

pub fn after_deploy_plan(args: &AfterDeployArgs) -> AfterDeployPlan {
    AfterDeployPlan { update_scheduled_tasks: args.update_scheduled_tasks, keep_revisions: args.keep_revisions }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_off_flags_become_a_spec_and_stray_pre_deploy_flags_are_refused() {
        use crate::cli::RunTaskFlags;
        let cmd = |s: &str| Some(s.parse::<crate::runtask::TaskCommand>().unwrap());
        let run_task = OneOffArgs::<RunTaskFlags> {
            env: vec!["A=1".into(), "B=2".into(), "A=3".into()],
            timeout: Some("2m".into()),
            ..Default::default()
        };
        let spec = task_spec(&run_task, &["bin/migrate".into()]).unwrap();
        assert_eq!(spec.command, ["bin/migrate"]);
        assert_eq!(spec.env, [("B".to_string(), "2".to_string()), ("A".to_string(), "3".to_string())], "the last wins");
        assert_eq!((spec.timeout, spec.log_lines), (std::time::Duration::from_secs(120), 0));
        let both = OneOffArgs::<RunTaskFlags> { command: cmd(r#"["m"]"#), ..Default::default() };
        assert!(task_spec(&both, &["m".into()]).unwrap_err().to_string().contains("--command or after `--`"));
        let soon = OneOffArgs::<PreDeployFlags> {
            command: cmd(r#"["m"]"#),
            timeout: Some("soon".into()),
            ..Default::default()
        };
        assert!(pre_deploy_spec(&soon).unwrap_err().to_string().starts_with("--pre-deploy-timeout \"soon\" is not"));
        assert_eq!(pre_deploy_spec(&OneOffArgs::default()).unwrap(), None);
        let stray = OneOffArgs::<PreDeployFlags> { timeout: Some("1m".into()), ..Default::default() };
        assert!(pre_deploy_spec(&stray).unwrap_err().to_string().contains("need a pre-deploy command"));
        let full = OneOffArgs::<PreDeployFlags> { command: cmd(r#"["bin/migrate"]"#), ..Default::default() };
        let spec = pre_deploy_spec(&full).unwrap().unwrap();
        assert_eq!((spec.command, spec.timeout), (vec!["bin/migrate".to_string()], DEFAULT_TIMEOUT));
    }

    #[test]
    fn a_url_prefixed_with_a_service_is_that_services_own() {
        let services = ["web".to_string(), "api".to_string()];
        let values = [
            "http://all/health".to_string(),
            "api=http://api/health".to_string(),
            "http://q/?a=b".to_string(),
            "other=http://x/".to_string(),
        ];
        let (all, own) = split_urls(&values, &services);
        assert_eq!(all, ["http://all/health", "http://q/?a=b", "other=http://x/"]);
        assert_eq!(own["api"], ["http://api/health"]);
        assert!(!own.contains_key("web"));
    }
}

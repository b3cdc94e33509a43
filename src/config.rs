//! `deployer.toml`: per-environment settings (role, cluster, services, which refs may deploy
//! where), read strictly — an unknown key is an error naming its line, not a silent typo.
//! Flags override the file: `merge_release` fills every release flag left empty from the
//! environment's entry, so the rest of `release` sees one set of flags. An environment's
//! services may be a name, a list, or a table with each service's own health and test URLs,
//! task-definition template and container (`[environments.X.services.NAME]`); a flag given
//! on the command line wins over every service's own value.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::cli::ReleaseArgs;
use crate::deploy::plan::Strategy;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read it: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {}", source.to_string().trim_end())]
    Parse {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{file}: environment {env:?}: {reason}")]
    Invalid { file: String, env: String, reason: String },
}

/// One string or a list of them (`service = "web"` or `service = ["web", "worker"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// One service's own settings (`[environments.X.services.NAME]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServiceSettings {
    #[serde(default)]
    pub health_url: OneOrMany,
    #[serde(default)]
    pub test_url: OneOrMany,
    /// Its task-definition template (a JSON file, family[:revision] or ARN).
    pub task_definition: Option<String>,
    /// The container of its template that gets the image.
    pub container: Option<String>,
}

/// An environment's services: `service = "web"`, `services = ["web", "worker"]`, or a table
/// of them with their own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Services {
    #[default]
    None,
    Names(Vec<String>),
    Table(BTreeMap<String, ServiceSettings>),
}

impl Services {
    pub fn names(&self) -> Vec<String> {
        match self {
            Services::None => Vec::new(),
            Services::Names(n) => n.clone(),
            Services::Table(t) => t.keys().cloned().collect(),
        }
    }

    /// The services with settings of their own.
    pub fn settings(&self) -> BTreeMap<String, ServiceSettings> {
        match self {
            Services::Table(t) => t.clone(),
            _ => BTreeMap::new(),
        }
    }
}

impl<'de> Deserialize<'de> for Services {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Services;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a service name, a list of names, or a table of services with their settings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Services, E> {
                Ok(Services::Names(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Services, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(Services::Names(names))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Services, A::Error> {
                let mut table = BTreeMap::new();
                while let Some((name, settings)) = map.next_entry::<String, ServiceSettings>()? {
                    table.insert(name, settings);
                }
                Ok(Services::Table(table))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Environment {
    pub role_arn: Option<String>,
    pub chain_role_arn: Option<String>,
    #[serde(default)]
    pub allowed_account_ids: Vec<String>,
    pub region: Option<String>,
    pub cluster: Option<String>,
    #[serde(default, alias = "services")]
    pub service: Services,
    /// Branch patterns (GitHub's filter syntax: `main`, `release/**`, `!release/old`) whose
    /// pushes may deploy here.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Tag patterns (`v*`) whose pushes or releases may deploy here.
    #[serde(default)]
    pub tags: Vec<String>,
    /// `workflow_dispatch` may target this environment (from `manual-branches`, else
    /// `branches`, or from `tags`).
    #[serde(default)]
    pub manual: bool,
    /// The branches a `workflow_dispatch` may come from, instead of `branches`.
    pub manual_branches: Option<Vec<String>>,
    /// Events besides push, workflow_dispatch and release that may deploy here (e.g.
    /// `schedule`); pull_request events never can.
    #[serde(default)]
    pub events: Vec<String>,
    pub strategy: Option<Strategy>,
    #[serde(default)]
    pub health_url: OneOrMany,
    /// Test-listener URLs probed before production traffic shifts (blue-green, canary, linear).
    #[serde(default)]
    pub test_url: OneOrMany,
    pub bake: Option<u64>,
    pub timeout: Option<u64>,
    /// Services under the CODE_DEPLOY controller: the CodeDeploy application, deployment
    /// group and deployment configuration (found from the service / the group's when absent).
    pub codedeploy_application: Option<String>,
    pub codedeploy_deployment_group: Option<String>,
    pub codedeploy_deployment_config: Option<String>,
    pub repository: Option<String>,
    pub task_definition: Option<String>,
    pub container: Option<String>,
    pub secrets_path: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
    /// A one-off task of the new revision run before the deploy (migrations).
    pub pre_deploy: Option<crate::runtask::PreDeployConfig>,
    /// After a successful deploy, move scheduled tasks of the family to the new revision.
    pub update_scheduled_tasks: Option<bool>,
    /// After a successful deploy, deregister unused revisions beyond the newest N.
    pub keep_revisions: Option<u32>,
    /// Tags on what deployer creates here, over the top level's.
    #[serde(default)]
    pub resource_tags: BTreeMap<String, String>,
    /// The lifecycle policy of a repository `--create-repository` creates (`false`: none).
    pub lifecycle_policy: Option<crate::lifecycle_policy::LifecycleSetting>,
    /// Prove before registering that the tasks can start (`--permissions`).
    pub permissions: Option<bool>,
    /// Register Secrets Manager references pinned to their current version id (`--pin-secrets`).
    pub pin_secrets: Option<bool>,
    /// Let members ECS's model does not know through as warnings (`--allow-unknown-fields`).
    pub allow_unknown_fields: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    pub app: Option<String>,
    pub region: Option<String>,
    /// Tags on everything deployer creates or registers (cost allocation).
    #[serde(default)]
    pub resource_tags: BTreeMap<String, String>,
    #[serde(default)]
    pub environments: BTreeMap<String, Environment>,
    #[serde(default)]
    pub params: Params,
}

/// `[params]`: settings of `params import`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Params {
    /// Keys (or wildcards such as `FEATURE_*`) stored as String instead of SecureString.
    #[serde(default)]
    pub plain: Vec<String>,
}

impl Config {
    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|source| ConfigError::Parse { file: file.to_string(), source })?;
        for (name, env) in &config.environments {
            let invalid = |reason: String| ConfigError::Invalid { file: file.to_string(), env: name.clone(), reason };
            check_policy(env).map_err(invalid)?;
            check_stages(env, &config.resource_tags).map_err(invalid)?;
        }
        Ok(config)
    }

    /// Read `path`; a missing file is an empty config only when `required` is false (the
    /// default path), so a typo in `--config` is still an error.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Config::parse(&text, &file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read { file, source }),
        }
    }
}

/// The release flags with every one left empty taken from `env` (the flag wins when both are
/// given; `env` and `secrets` pairs are the file's first, then the flags', so a flag's pair
/// overrides a file's of the same name). Returns the merged flags and the region: the
/// global flag, else the environment's, else the file's.
pub fn merge_release(
    args: &ReleaseArgs,
    region: Option<&str>,
    env: &Environment,
    config: &Config,
) -> (ReleaseArgs, Option<String>) {
    let or_vec = |flag: &Vec<String>, file: Vec<String>| if flag.is_empty() { file } else { flag.clone() };
    let pairs = |file: &BTreeMap<String, String>, flags: &[String]| {
        file.iter().map(|(k, v)| format!("{k}={v}")).chain(flags.iter().cloned()).collect::<Vec<_>>()
    };
    let mut m = args.clone();
    m.auth.role_arn = args.auth.role_arn.clone().or_else(|| env.role_arn.clone());
    m.auth.chain_role_arn = args.auth.chain_role_arn.clone().or_else(|| env.chain_role_arn.clone());
    m.auth.allowed_account_ids = or_vec(&args.auth.allowed_account_ids, env.allowed_account_ids.clone());
    m.repository = args.repository.clone().or_else(|| env.repository.clone());
    m.task_definition = args.task_definition.clone().or_else(|| env.task_definition.clone());
    m.render.container = args.render.container.clone().or_else(|| env.container.clone());
    m.render.secrets_path = args.render.secrets_path.clone().or_else(|| env.secrets_path.clone());
    m.render.env = pairs(&env.env, &args.render.env);
    m.render.secrets = pairs(&env.secrets, &args.render.secrets);
    m.cluster = args.cluster.clone().or_else(|| env.cluster.clone());
    m.services = or_vec(&args.services, env.service.names());
    // Each service's own settings, except where a flag set the value for every service.
    m.service_settings = env
        .service
        .settings()
        .into_iter()
        .map(|(name, mut own)| {
            if !args.gate.health_urls.is_empty() {
                own.health_url = OneOrMany::None;
            }
            if !args.gate.traffic.test_urls.is_empty() {
                own.test_url = OneOrMany::None;
            }
            if args.task_definition.is_some() {
                own.task_definition = None;
            }
            if args.render.container.is_some() {
                own.container = None;
            }
            (name, own)
        })
        .collect();
    m.gate.strategy = args.gate.strategy.or(env.strategy);
    m.gate.health_urls = or_vec(&args.gate.health_urls, env.health_url.to_vec());
    m.gate.traffic.test_urls = or_vec(&args.gate.traffic.test_urls, env.test_url.to_vec());
    m.gate.bake = args.gate.bake.or(env.bake);
    m.gate.timeout = args.gate.timeout.or(env.timeout);
    let (cd, flags) = (&mut m.gate.codedeploy, &args.gate.codedeploy);
    cd.codedeploy_application = flags.codedeploy_application.clone().or_else(|| env.codedeploy_application.clone());
    cd.codedeploy_deployment_group =
        flags.codedeploy_deployment_group.clone().or_else(|| env.codedeploy_deployment_group.clone());
    cd.codedeploy_deployment_config =
        flags.codedeploy_deployment_config.clone().or_else(|| env.codedeploy_deployment_config.clone());
    // A switch given as a flag stays on; the file can only turn one on.
    m.permissions = args.permissions || env.permissions == Some(true);
    m.render.pin_secrets = args.render.pin_secrets || env.pin_secrets == Some(true);
    m.render.allow_unknown_fields = args.render.allow_unknown_fields || env.allow_unknown_fields == Some(true);
    merge_stages(&mut m, args, env, config);
    let region = region.map(str::to_string).or_else(|| env.region.clone()).or_else(|| config.region.clone());
    (m, region)
}

/// The keys of the stages around the deploy: the pre-deploy task, the after-deploy
/// housekeeping, the resource tags (the file's top level, then the environment's, then the
/// flags', so a flag's tag wins) and a created repository's lifecycle policy.
fn merge_stages(m: &mut ReleaseArgs, args: &ReleaseArgs, env: &Environment, config: &Config) {
    if let Some(file) = &env.pre_deploy {
        let (flags, p) = (&args.pre_deploy, &mut m.pre_deploy);
        p.command = flags.command.clone().or_else(|| Some(crate::runtask::TaskCommand(file.command.clone())));
        p.container = flags.container.clone().or_else(|| file.container.clone());
        p.env = file.env.iter().map(|(k, v)| format!("{k}={v}")).chain(flags.env.iter().cloned()).collect();
        p.timeout = flags.timeout.clone().or_else(|| file.timeout.as_ref().map(|t| t.as_flag()));
        p.log_lines = flags.log_lines.or(file.log_lines);
    }
    m.after.update_scheduled_tasks = args.after.update_scheduled_tasks || env.update_scheduled_tasks == Some(true);
    m.after.keep_revisions = args.after.keep_revisions.or(env.keep_revisions);
    let file_tags = config.resource_tags.iter().chain(&env.resource_tags);
    let tags = file_tags.map(|(k, v)| format!("{k}={v}")).chain(args.resources.resource_tags.iter().cloned());
    m.resources.resource_tags = tags.collect();
    if let Some(setting) = &env.lifecycle_policy {
        let r = &args.resources;
        let flags = crate::lifecycle_policy::Flags {
            off: r.no_lifecycle_policy,
            keep_images: r.keep_images,
            expire_untagged_days: r.expire_untagged_days,
        };
        let merged = setting.under(flags);
        m.resources.no_lifecycle_policy = merged.off;
        m.resources.keep_images = merged.keep_images;
        m.resources.expire_untagged_days = merged.expire_untagged_days;
    }
}

/// The stage keys of one environment that can be wrong in the file itself.
fn check_stages(env: &Environment, top_tags: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(p) = &env.pre_deploy {
        p.check()?;
    }
    if env.keep_revisions == Some(0) {
        return Err("keep-revisions must be at least 1 (the live revision is always kept)".into());
    }
    for (k, v) in top_tags.iter().chain(&env.resource_tags) {
        crate::tags::check(k, v).map_err(|e| format!("resource-tags: {e}"))?;
    }
    Ok(())
}

/// The policy keys of one environment: patterns that compile, events that can deploy.
fn check_policy(env: &Environment) -> Result<(), String> {
    for (key, patterns) in [
        ("branches", Some(&env.branches)),
        ("tags", Some(&env.tags)),
        ("manual-branches", env.manual_branches.as_ref()),
    ] {
        if let Some(patterns) = patterns {
            crate::resolve::check_patterns(patterns).map_err(|e| format!("{key}: {e}"))?;
        }
    }
    if env.manual_branches.is_some() && !env.manual {
        return Err("manual-branches only applies with `manual = true`".into());
    }
    for event in &env.events {
        if crate::resolve::is_pull_request_event(event) {
            return Err(format!(
                "events: {event:?} can never deploy (pull requests run code that is not merged, a fork's included)"
            ));
        }
        if event.is_empty() || !event.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(format!("events: {event:?} is not a GitHub event name (e.g. schedule, workflow_run)"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
app = "shop"
region = "eu-west-1"
[environments.staging]
role-arn = "arn:aws:iam::111111111111:role/deploy-staging"
cluster = "staging"
service = "web"
branches = ["main"]
secrets-path = "/staging/shop/"
[environments.production]
role-arn = "arn:aws:iam::222222222222:role/deploy-prod"
cluster = "prod"
service = ["web", "worker"]
branches = ["release/*"]
tags = ["v*"]
manual = true
strategy = "blue-green"
health-url = ["https://shop.example.com/health"]
"#;

    #[test]
    fn the_design_example_parses() {
        let c = Config::parse(EXAMPLE, "deployer.toml").unwrap();
        assert_eq!(c.app.as_deref(), Some("shop"));
        let prod = &c.environments["production"];
        assert_eq!(prod.service.names(), ["web", "worker"]);
        assert!(prod.manual);
        assert_eq!(prod.health_url.to_vec(), ["https://shop.example.com/health"]);
        assert_eq!(c.environments["staging"].service.names(), ["web"]);
    }

    #[test]
    fn mistakes_name_the_file_and_line() {
        let typo = "[environments.prod]\nclustr = \"x\"\n";
        let err = Config::parse(typo, "deployer.toml").unwrap_err().to_string();
        assert!(err.starts_with("deployer.toml: TOML parse error at line 2, column 1"), "{err}");
        assert!(err.contains("unknown field `clustr`"), "{err}");
        let bad = "[environments.prod]\nstrategy = \"yolo\"\n";
        let err = Config::parse(bad, "d.toml").unwrap_err().to_string();
        assert!(err.starts_with("d.toml: TOML parse error at line 2, column 12"), "{err}");
        assert!(
            err.contains("unknown variant `yolo`, expected one of `rolling`, `blue-green`, `canary`, `linear`"),
            "{err}"
        );
        let good = Config::parse("[environments.prod]\nstrategy = \"blue-green\"\n", "d.toml").unwrap();
        assert_eq!(good.environments["prod"].strategy, Some(Strategy::BlueGreen));
        let glob = "[environments.prod]\nbranches = [\"release/[\"]\n";
        assert!(Config::parse(glob, "d.toml").unwrap_err().to_string().contains("branches: pattern \"release/[\""));
        assert!(Config::load(Path::new("/nonexistent/deployer.toml"), false).unwrap().environments.is_empty());
        assert!(Config::load(Path::new("/nonexistent/deployer.toml"), true).is_err());
    }

    #[test]
    fn the_policy_keys_are_checked() {
        let ok = "[environments.qa]\nbranches = [\"qa\"]\nmanual = true\nmanual-branches = [\"main\"]\nevents = [\"schedule\"]\n";
        let c = Config::parse(ok, "d.toml").unwrap();
        assert_eq!(c.environments["qa"].manual_branches.as_deref(), Some(&["main".to_string()][..]));
        assert_eq!(c.environments["qa"].events, ["schedule"]);
        for (text, want) in [
            ("events = [\"pull_request\"]", "events: \"pull_request\" can never deploy"),
            ("events = [\"pull_request_target\"]", "events: \"pull_request_target\" can never deploy"),
            ("events = [\"Push now\"]", "is not a GitHub event name"),
            ("manual-branches = [\"main\"]", "manual-branches only applies with `manual = true`"),
            ("branches = [\"!main\"]", "branches: pattern \"!main\": a list with `!` patterns needs"),
            ("tags = [\"v[\"]", "tags: pattern \"v[\""),
            ("manual = true\nmanual-branches = [\"[]\"]", "manual-branches: pattern \"[]\""),
        ] {
            let err = Config::parse(&format!("[environments.prod]\n{text}\n"), "d.toml").unwrap_err().to_string();
            assert!(err.starts_with("d.toml: environment \"prod\": "), "{err}");
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    const FLEET: &str = r#"
[environments.production]
cluster = "prod"
health-url = "https://shop.example.com/health"
task-definition = "shop"
[environments.production.services.web]
health-url = ["https://web.example.com/health"]
[environments.production.services.worker]
task-definition = "taskdefs/worker.json"
container = "worker"
[environments.production.services.api]
"#;

    #[test]
    fn each_service_can_have_its_own_urls_template_and_container() {
        use clap::Parser;
        let c = Config::parse(FLEET, "deployer.toml").unwrap();
        let prod = &c.environments["production"];
        assert_eq!(prod.service.names(), ["api", "web", "worker"]);
        let own = prod.service.settings();
        assert_eq!(own["web"].health_url.to_vec(), ["https://web.example.com/health"]);
        assert_eq!(own["worker"].container.as_deref(), Some("worker"));
        assert_eq!(own["api"], ServiceSettings::default());
        let parse = |args: &[&str]| {
            let cli = crate::cli::Cli::parse_from([&["deployer", "release"][..], args].concat());
            let crate::cli::Command::Release(args) = cli.command else { panic!("release") };
            merge_release(&args, None, prod, &c).0
        };
        let m = parse(&[]);
        assert_eq!(m.services, ["api", "web", "worker"]);
        assert_eq!(m.gate.health_urls, ["https://shop.example.com/health"], "the environment's, for the others");
        assert_eq!(m.service_settings["web"].health_url.to_vec(), ["https://web.example.com/health"]);
        assert_eq!(m.service_settings["worker"].task_definition.as_deref(), Some("taskdefs/worker.json"));
        // A flag sets the value for every service.
        let m = parse(&["--health-url", "https://flag/health", "--task-definition", "other"]);
        assert!(m.service_settings["web"].health_url.to_vec().is_empty());
        assert_eq!(m.service_settings["worker"].task_definition, None);
        assert_eq!(m.service_settings["worker"].container.as_deref(), Some("worker"));
        // A typo inside a service's table names its line.
        let typo = "[environments.p.services.web]\nhelth-url = \"x\"\n";
        let err = Config::parse(typo, "d.toml").unwrap_err().to_string();
        assert!(err.contains("unknown field `helth-url`"), "{err}");
        assert!(err.contains("line 1") || err.contains("line 2"), "{err}");
    }

    #[test]
    fn flags_win_and_the_file_fills_what_they_leave_empty() {
        use clap::Parser;
        let c = Config::parse(EXAMPLE, "deployer.toml").unwrap();
        let prod = &c.environments["production"];
        let cli = crate::cli::Cli::parse_from([
            "deployer",
            "release",
            "--cluster",
            "other",
            "--env",
            "A=flag",
            "--probe-failures",
            "7",
        ]);
        let crate::cli::Command::Release(args) = cli.command else { panic!("release") };
        let (m, region) = merge_release(&args, None, prod, &c);
        assert_eq!(m.cluster.as_deref(), Some("other"), "the flag wins");
        assert_eq!(m.services, ["web", "worker"], "the file fills");
        assert_eq!(m.gate.strategy, Some(Strategy::BlueGreen));
        assert_eq!(m.gate.health_urls, ["https://shop.example.com/health"]);
        assert_eq!(m.gate.probe_failures, 7, "flags the file does not know pass through");
        assert_eq!(m.render.env, ["A=flag"]);
        assert_eq!(m.auth.role_arn.as_deref(), Some("arn:aws:iam::222222222222:role/deploy-prod"));
        assert_eq!(region.as_deref(), Some("eu-west-1"), "the file's top level");
        let (_, region) = merge_release(&args, Some("us-east-2"), prod, &c);
        assert_eq!(region.as_deref(), Some("us-east-2"), "the global flag first");
    }

    #[test]
    fn the_codedeploy_keys_fill_what_the_flags_leave_empty() {
        use clap::Parser;
        let text = "[environments.prod]\ncodedeploy-application = \"AppECS-main-web\"\n\
                    codedeploy-deployment-group = \"DgpECS-main-web\"\n\
                    codedeploy-deployment-config = \"CodeDeployDefault.ECSAllAtOnce\"\n";
        let c = Config::parse(text, "deployer.toml").unwrap();
        let prod = &c.environments["prod"];
        let cli = crate::cli::Cli::parse_from(["deployer", "release", "--codedeploy-deployment-group", "flag-dg"]);
        let crate::cli::Command::Release(args) = cli.command else { panic!("release") };
        let (m, _) = merge_release(&args, None, prod, &c);
        let cd = &m.gate.codedeploy;
        assert_eq!(cd.codedeploy_application.as_deref(), Some("AppECS-main-web"), "the file fills");
        assert_eq!(cd.codedeploy_deployment_group.as_deref(), Some("flag-dg"), "the flag wins");
        assert_eq!(cd.codedeploy_deployment_config.as_deref(), Some("CodeDeployDefault.ECSAllAtOnce"));
        let typo = Config::parse("[environments.prod]\ncodedeploy-app = \"x\"\n", "d.toml").unwrap_err();
        assert!(typo.to_string().contains("unknown field `codedeploy-app`"), "{typo}");
    }

    #[test]
    fn the_stage_keys_merge_under_the_flags() {
        use clap::Parser;
        let text = r#"
resource-tags = { team = "shop", tier = "web" }
[environments.prod]
pre-deploy = { command = ["bin/migrate"], container = "web", timeout = "2m", env = { A = "file" }, log-lines = 5 }
update-scheduled-tasks = true
keep-revisions = 3
resource-tags = { tier = "api" }
lifecycle-policy = { keep-images = 50 }
"#;
        let c = Config::parse(text, "d.toml").unwrap();
        let env = &c.environments["prod"];
        let parse = |extra: &[&str]| {
            let cli = crate::cli::Cli::parse_from([&["deployer", "release"][..], extra].concat());
            let crate::cli::Command::Release(args) = cli.command else { panic!("release") };
            merge_release(&args, None, env, &c).0
        };
        let m = parse(&[]);
        let p = &m.pre_deploy;
        assert_eq!(p.command.as_ref().map(|c| c.0.clone()), Some(vec!["bin/migrate".to_string()]));
        assert_eq!((p.container.as_deref(), p.timeout.as_deref(), p.log_lines), (Some("web"), Some("2m"), Some(5)));
        assert_eq!(p.env, ["A=file"]);
        assert!(m.after.update_scheduled_tasks);
        assert_eq!(m.after.keep_revisions, Some(3));
        assert_eq!(
            m.resources.resource_tags,
            ["team=shop", "tier=web", "tier=api"],
            "the environment's after the top's"
        );
        assert_eq!((m.resources.keep_images, m.resources.no_lifecycle_policy), (Some(50), false));
        let m = parse(&[
            "--pre-deploy-command",
            r#"["bin/seed"]"#,
            "--pre-deploy-timeout",
            "30",
            "--keep-revisions",
            "9",
            "--resource-tag",
            "tier=flag",
            "--no-lifecycle-policy",
        ]);
        assert_eq!(m.pre_deploy.command.map(|c| c.0), Some(vec!["bin/seed".to_string()]));
        assert_eq!((m.pre_deploy.timeout.as_deref(), m.pre_deploy.container.as_deref()), (Some("30"), Some("web")));
        assert_eq!(m.after.keep_revisions, Some(9));
        assert_eq!(m.resources.resource_tags.last().map(String::as_str), Some("tier=flag"));
        assert_eq!((m.resources.keep_images, m.resources.no_lifecycle_policy), (None, true), "the flag turns it off");
        for (bad, why) in [
            ("pre-deploy = { command = [] }", "pre-deploy.command is empty"),
            ("pre-deploy = { command = [\"m\"], timeout = \"soon\" }", "pre-deploy.timeout \"soon\" is not a duration"),
            ("keep-revisions = 0", "keep-revisions must be at least 1"),
            ("resource-tags = { app = \"x\" }", "resource-tags: resource tag \"app\": deployer sets this tag itself"),
        ] {
            let err = Config::parse(&format!("[environments.prod]\n{bad}\n"), "d.toml").unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn the_verification_switches_come_from_the_file_or_the_flags() {
        use clap::Parser;
        let parse = |toml: &str, extra: &[&str]| {
            let c = Config::parse(&format!("[environments.prod]\n{toml}\n"), "d.toml").unwrap();
            let cli = crate::cli::Cli::parse_from([&["deployer", "release"][..], extra].concat());
            let crate::cli::Command::Release(args) = cli.command else { panic!("release") };
            let m = merge_release(&args, None, &c.environments["prod"], &c).0;
            (m.permissions, m.render.pin_secrets, m.render.allow_unknown_fields)
        };
        let on = "permissions = true\npin-secrets = true\nallow-unknown-fields = true";
        let off = "permissions = false\npin-secrets = false\nallow-unknown-fields = false";
        let flags = ["--permissions", "--pin-secrets", "--allow-unknown-fields"];
        assert_eq!(parse("", &[]), (false, false, false), "off unless asked");
        assert_eq!(parse(on, &[]), (true, true, true), "the file turns them on");
        assert_eq!(parse(off, &flags), (true, true, true), "a flag stays on");
        assert_eq!(parse("", &["--pin-secrets"]), (false, true, false));
    }
}

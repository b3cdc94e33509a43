//! Command-line definitions, and nothing else: every flag of DESIGN.md section 3 is declared
//! here once, with its `DEPLOYER_<FLAG>` environment fallback. Commands read these structs;
//! they never look at `std::env::args` themselves.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::deploy::plan::Strategy;
pub use crate::runtask::TaskCommand;

/// Take a container image from a workflow to a healthy Amazon ECS service.
#[derive(Debug, Parser)]
#[command(name = "deployer", version, about, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// How results are printed on stdout: human text, or one JSON object (logs stay on stderr).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text, env = "DEPLOYER_OUTPUT")]
    pub output: OutputFormat,
    /// AWS region; falls back to AWS_REGION / the profile's region.
    #[arg(long, global = true, env = "DEPLOYER_REGION")]
    pub region: Option<String>,
    /// More log detail on stderr (-v debug, -vv trace of deployer's own modules).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trade the job's GitHub OIDC token (or the default credential chain) for AWS credentials.
    Auth(AuthCommandArgs),
    /// Push an image (OCI layout, docker archive, docker daemon) to ECR.
    Push(PushArgs),
    /// Copy an existing image to another repository or registry without rebuilding it.
    Promote(PromoteArgs),
    /// Print the task definition that would be registered.
    Render(TaskDefArgs),
    /// Show how the rendered task definition differs from the service's current one.
    Diff(TaskDefArgs),
    /// Check that every secret reference, role and image the task definition needs exists.
    Verify(TaskDefArgs),
    /// Register the rendered task definition and print its ARN.
    Register(TaskDefArgs),
    /// Roll an ECS service forward to a task definition, gated on health.
    Deploy(DeployArgs),
    /// Roll an ECS service back to its previous (or a given) task definition.
    Rollback(RollbackArgs),
    /// Roll the service's current revision again under the gate (secrets rotated, parameters
    /// changed), naming what changed since its tasks started: `deploy --force-new-deployment`.
    Refresh(DeployArgs),
    /// resolve + auth + push/promote + render + verify + register + pre-deploy + deploy in one call.
    Release(Box<ReleaseArgs>),
    /// Manage Parameter Store values.
    #[command(subcommand)]
    Params(ParamsCommand),
    /// Run a one-off task (a migration) of a revision with a service's network settings;
    /// succeed only when every essential container exits 0.
    RunTask(RunTaskArgs),
    /// List a family's ACTIVE revisions and what uses each; with --keep, deregister old unused ones.
    Revisions(RevisionsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportMode {
    /// Append to $GITHUB_ENV, masking every credential first.
    GithubEnv,
    /// Print `export NAME=value` lines on stdout.
    Shell,
    /// Include the credentials in the JSON result.
    Json,
    /// Keep the credentials inside the process.
    None,
}

/// How to get AWS credentials: `auth` and `release`.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// IAM role to assume with the OIDC token (or with the default chain outside Actions).
    #[arg(long, env = "DEPLOYER_ROLE_ARN")]
    pub role_arn: Option<String>,
    /// Audience requested for the OIDC token.
    #[arg(long, default_value = "sts.amazonaws.com", env = "DEPLOYER_AUDIENCE")]
    pub audience: String,
    /// Role session name (default: built from GITHUB_REPOSITORY and GITHUB_RUN_ID).
    #[arg(long, env = "DEPLOYER_SESSION_NAME")]
    pub session_name: Option<String>,
    /// Session duration in seconds (900 to 43200).
    #[arg(long, default_value_t = 3600, env = "DEPLOYER_DURATION")]
    pub duration: u32,
    /// A second role assumed with the first role's credentials (sts:AssumeRole).
    #[arg(long, env = "DEPLOYER_CHAIN_ROLE_ARN")]
    pub chain_role_arn: Option<String>,
    /// Comma-separated account ids the final credentials must belong to.
    #[arg(long, value_delimiter = ',', env = "DEPLOYER_ALLOWED_ACCOUNT_IDS")]
    pub allowed_account_ids: Vec<String>,
}

#[derive(Debug, Args)]
pub struct AuthCommandArgs {
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Where the credentials go (default: github-env inside Actions, none outside).
    #[arg(long, value_enum, env = "DEPLOYER_EXPORT")]
    pub export: Option<ExportMode>,
}

/// Where an image goes: `push`, `promote` and `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct ImageTargetArgs {
    /// A tag for the image in the repository (repeatable, or comma-separated).
    #[arg(long = "tag", env = "DEPLOYER_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Where blob and manifest HTTP goes instead of the registry ECR reports (also where
    /// `--image` digests are checked).
    #[arg(long, env = "DEPLOYER_REGISTRY_ENDPOINT")]
    pub registry_endpoint: Option<String>,
}

/// How a push uploads, and the repository it creates when asked: `push` and `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct UploadArgs {
    #[arg(long, env = "DEPLOYER_CREATE_REPOSITORY")]
    pub create_repository: bool,
    /// With --create-repository: make the new repository's tags immutable.
    #[arg(long, env = "DEPLOYER_IMMUTABLE_TAGS")]
    pub immutable_tags: bool,
    /// With --create-repository: turn on scan-on-push for the new repository.
    #[arg(long, env = "DEPLOYER_SCAN_ON_PUSH")]
    pub scan_on_push: bool,
    /// Parallel blob uploads (default 4, measured with bench/push.sh).
    #[arg(long, env = "DEPLOYER_CONCURRENCY")]
    pub concurrency: Option<usize>,
}

/// What deployer puts on what it creates: tags (repositories, `release`'s task-definition
/// revisions and GitHub deployment), and a created repository's lifecycle policy: `push` and
/// `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct ResourceArgs {
    /// KEY=VALUE tag on what deployer creates or registers, besides app, environment, git-sha
    /// and run-url (repeatable, or comma-separated).
    #[arg(long = "resource-tag", env = "DEPLOYER_RESOURCE_TAGS", value_delimiter = ',')]
    pub resource_tags: Vec<String>,
    /// With --create-repository: no lifecycle policy on the new repository.
    #[arg(long, env = "DEPLOYER_NO_LIFECYCLE_POLICY")]
    pub no_lifecycle_policy: bool,
    /// With --create-repository: the lifecycle policy keeps the newest N tagged images (default 30).
    #[arg(long, env = "DEPLOYER_KEEP_IMAGES")]
    pub keep_images: Option<u32>,
    /// With --create-repository: the lifecycle policy expires untagged images after D days (default 14).
    #[arg(long, env = "DEPLOYER_EXPIRE_UNTAGGED_DAYS")]
    pub expire_untagged_days: Option<u32>,
}

/// Where a promoted image is read from: `promote` and `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct PromoteSourceArgs {
    /// The source registry when it is not the destination's (a host or URL).
    #[arg(long, env = "DEPLOYER_FROM_REGISTRY")]
    pub from_registry: Option<String>,
    /// A role (assumed with the current credentials) whose ECR token reads the source registry.
    #[arg(long, env = "DEPLOYER_FROM_ROLE_ARN")]
    pub from_role_arn: Option<String>,
    /// Where the source ECR registry's HTTP goes instead of its own host (as --registry-endpoint
    /// does for the destination).
    #[arg(long, env = "DEPLOYER_FROM_REGISTRY_ENDPOINT")]
    pub from_registry_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// oci:DIR[:ref] | docker-archive:FILE | docker:IMAGE
    #[arg(long, env = "DEPLOYER_SOURCE")]
    pub source: String,
    #[arg(long, env = "DEPLOYER_REPOSITORY")]
    pub repository: String,
    #[command(flatten)]
    pub target: ImageTargetArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    #[command(flatten)]
    pub resources: ResourceArgs,
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// REPO:TAG or REPO@DIGEST
    #[arg(long, env = "DEPLOYER_FROM")]
    pub from: String,
    #[command(flatten)]
    pub source: PromoteSourceArgs,
    #[arg(long, env = "DEPLOYER_REPOSITORY")]
    pub repository: String,
    #[command(flatten)]
    pub target: ImageTargetArgs,
}

/// What `render` puts into a template; shared by the task-definition commands and `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct RenderArgs {
    /// The container --env/--secret (and a bare --image) apply to; optional with one container.
    #[arg(long, env = "DEPLOYER_CONTAINER")]
    pub container: Option<String>,
    /// CONTAINER=URI, or URI for the --container / only container (repeatable).
    #[arg(long = "image", env = "DEPLOYER_IMAGES", value_delimiter = ',')]
    pub images: Vec<String>,
    /// NAME=VALUE environment variable, added or replaced (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// NAME=REF: a full ARN, ssm:/path/name, or secretsmanager:NAME[:json-key] (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Add every Parameter Store parameter directly under this path as a secret named after
    /// its last segment, upper-cased.
    #[arg(long, env = "DEPLOYER_SECRETS_PATH")]
    pub secrets_path: Option<String>,
    /// Drop environment variables that no --env names.
    #[arg(long, env = "DEPLOYER_EXCLUSIVE_ENV")]
    pub exclusive_env: bool,
    /// Let members and enum values that ECS's model (as vendored in deployer) does not know
    /// through, as warnings; wrong types and ranges are still refused.
    #[arg(long, env = "DEPLOYER_ALLOW_UNKNOWN_FIELDS")]
    pub allow_unknown_fields: bool,
    /// Register Secrets Manager references pinned to the secret's current version id
    /// (`ARN:json-key::VERSION-ID`), so a later rotation does not change what this revision reads.
    #[arg(long, env = "DEPLOYER_PIN_SECRETS")]
    pub pin_secrets: bool,
}

#[derive(Debug, Args)]
pub struct TaskDefArgs {
    /// The template: a JSON FILE (AWS CLI format), or family[:revision] / ARN in ECS.
    /// Without it, the current task definition of --service is the template.
    #[arg(long, env = "DEPLOYER_TASK_DEFINITION")]
    pub task_definition: Option<String>,
    /// Cluster of --service.
    #[arg(long, env = "DEPLOYER_CLUSTER")]
    pub cluster: Option<String>,
    /// The service whose current task definition is the template (when no
    /// --task-definition) and the baseline of `diff`.
    #[arg(long, env = "DEPLOYER_SERVICE")]
    pub service: Option<String>,
    #[command(flatten)]
    pub render: RenderArgs,
    /// Where registry HTTP goes to check --image digests (instead of ECR's API).
    #[arg(long, env = "DEPLOYER_REGISTRY_ENDPOINT")]
    pub registry_endpoint: Option<String>,
    /// `register`: skip verification.
    #[arg(long)]
    pub no_verify: bool,
    /// `verify`, `register`: also prove the tasks can start — the execution role may read
    /// each secret and its KMS key, pull each image and write its logs (IAM policy
    /// simulation), each awslogs group exists, each image is built for the task's platform.
    #[arg(long, env = "DEPLOYER_PERMISSIONS")]
    pub permissions: bool,
    /// `diff`: exit 1 when there are differences.
    #[arg(long)]
    pub exit_code: bool,
}

/// How a deploy is gated and settled: `deploy` and `release`. Those also in deployer.toml
/// (strategy, health-url, test-url, bake, timeout) have no default here, so the file applies
/// when the flag is absent.
#[derive(Debug, Clone, Default, Args)]
pub struct GateArgs {
    /// rolling (default) | blue-green | canary | linear
    #[arg(long, value_enum, env = "DEPLOYER_STRATEGY")]
    pub strategy: Option<Strategy>,
    /// A URL that must answer 2xx (JSON `status` ok/healthy) before the deploy counts as healthy;
    /// SERVICE=URL makes it that service's own (the others keep the plain ones).
    #[arg(long = "health-url", env = "DEPLOYER_HEALTH_URL", value_delimiter = ',')]
    pub health_urls: Vec<String>,
    /// Seconds the new revision must stay healthy after ECS completes, before success.
    #[arg(long, env = "DEPLOYER_BAKE")]
    pub bake: Option<u64>,
    /// Seconds before the deploy counts as failed (and is rolled back); default 1800.
    #[arg(long, env = "DEPLOYER_TIMEOUT")]
    pub timeout: Option<u64>,
    /// On failure leave the service as it is (exit 4) instead of rolling back.
    #[arg(long, env = "DEPLOYER_NO_ROLLBACK")]
    pub no_rollback: bool,
    /// With several --service: when one fails, roll back all of them.
    #[arg(long, env = "DEPLOYER_ALL_OR_NOTHING")]
    pub all_or_nothing: bool,
    /// Consecutive good probe answers the gate needs per URL.
    #[arg(long, default_value_t = 3, env = "DEPLOYER_PROBE_SUCCESSES")]
    pub probe_successes: u32,
    /// Consecutive bad probe answers (one URL) that fail the gate.
    #[arg(long, default_value_t = 3, env = "DEPLOYER_PROBE_FAILURES")]
    pub probe_failures: u32,
    /// ECS API budget, per bucket: BUCKET=BURST/RATE,... (e.g. UpdateService=20/2). Default:
    /// 90% of ECS's documented limits (DescribeServices 100/20, UpdateService 50/5,
    /// ServiceDeployments 50/20, Tasks 100/20, DescribeTaskDefinition 50/20).
    #[arg(long, env = "DEPLOYER_ECS_API_LIMITS")]
    pub ecs_api_limits: Option<String>,
    #[command(flatten)]
    pub traffic: TrafficArgs,
    #[command(flatten)]
    pub codedeploy: CodeDeployArgs,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    #[arg(long, env = "DEPLOYER_CLUSTER")]
    pub cluster: String,
    /// The service to roll forward; repeat (or comma-separate) to deploy several in parallel.
    #[arg(long = "service", required = true, env = "DEPLOYER_SERVICE", value_delimiter = ',')]
    pub services: Vec<String>,
    /// A task definition ARN or family:revision, or a JSON FILE to register first (after
    /// every service passed its checks). Not with --force-new-deployment / refresh.
    #[arg(long, env = "DEPLOYER_TASK_DEFINITION")]
    pub task_definition: Option<String>,
    /// Roll the services' current revision again, so new tasks read rotated secrets and
    /// changed parameters; the report names what changed since the running tasks started.
    #[arg(long, env = "DEPLOYER_FORCE_NEW_DEPLOYMENT")]
    pub force_new_deployment: bool,
    /// A --task-definition FILE: let members and enum values that ECS's model (as vendored in
    /// deployer) does not know through, as warnings; wrong types and ranges are still refused.
    #[arg(long, env = "DEPLOYER_ALLOW_UNKNOWN_FIELDS")]
    pub allow_unknown_fields: bool,
    #[command(flatten)]
    pub gate: GateArgs,
    #[command(flatten)]
    pub after: AfterDeployArgs,
}

/// Housekeeping after every service deployed successfully: `deploy` and `release`.
#[derive(Debug, Clone, Default, Args)]
pub struct AfterDeployArgs {
    /// Point EventBridge rules and Scheduler schedules that run this task definition family
    /// on the service's cluster at the new revision.
    #[arg(long, env = "DEPLOYER_UPDATE_SCHEDULED_TASKS")]
    pub update_scheduled_tasks: bool,
    /// Deregister ACTIVE revisions of the family beyond the newest N, except any that a
    /// service, a scheduled task or a rollback still needs.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), env = "DEPLOYER_KEEP_REVISIONS")]
    pub keep_revisions: Option<u32>,
}

/// Blue/green, canary and linear settings (ignored by --strategy rolling).
#[derive(Debug, Clone, Default, Args)]
pub struct TrafficArgs {
    /// A URL on the test listener (green only, before production shifts) that must answer
    /// well before deployer lets ECS shift production traffic; repeatable; SERVICE=URL makes
    /// it that service's own.
    #[arg(long = "test-url", env = "DEPLOYER_TEST_URL", value_delimiter = ',')]
    pub test_urls: Vec<String>,
    /// --strategy canary: percent of production traffic the canary step gets (ECS default 5).
    #[arg(long, env = "DEPLOYER_CANARY_PERCENT")]
    pub canary_percent: Option<f64>,
    /// --strategy canary: seconds between the canary step and 100% (whole minutes to ECS, rounded up).
    #[arg(long, env = "DEPLOYER_CANARY_BAKE")]
    pub canary_bake: Option<u64>,
    /// --strategy linear: percent of production traffic added each step (ECS default 10).
    #[arg(long, env = "DEPLOYER_LINEAR_PERCENT")]
    pub linear_percent: Option<f64>,
    /// --strategy linear: seconds between steps (whole minutes to ECS, rounded up).
    #[arg(long, env = "DEPLOYER_LINEAR_BAKE")]
    pub linear_bake: Option<u64>,
}

/// Services under the CODE_DEPLOY deployment controller are deployed through CodeDeploy
/// (whatever --strategy says); these settings apply to them only.
#[derive(Debug, Clone, Default, Args)]
pub struct CodeDeployArgs {
    /// The CodeDeploy application (default: found from the service: the one ECS application
    /// whose deployment group names it).
    #[arg(long, env = "DEPLOYER_CODEDEPLOY_APPLICATION")]
    pub codedeploy_application: Option<String>,
    /// The CodeDeploy deployment group (default: the one that names the service).
    #[arg(long, env = "DEPLOYER_CODEDEPLOY_DEPLOYMENT_GROUP")]
    pub codedeploy_deployment_group: Option<String>,
    /// The deployment configuration, e.g. CodeDeployDefault.ECSCanary10Percent5Minutes
    /// (default: the deployment group's).
    #[arg(long, env = "DEPLOYER_CODEDEPLOY_DEPLOYMENT_CONFIG")]
    pub codedeploy_deployment_config: Option<String>,
    /// Wait for CodeDeploy's termination wait (the original task set kept after the traffic
    /// shift) to end, gating production all along; by default it is reported, not waited for.
    #[arg(long, env = "DEPLOYER_CODEDEPLOY_WAIT_FOR_TERMINATION")]
    pub codedeploy_wait_for_termination: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[arg(long, env = "DEPLOYER_CLUSTER")]
    pub cluster: String,
    #[arg(long, env = "DEPLOYER_SERVICE")]
    pub service: String,
    #[arg(long, env = "DEPLOYER_TO")]
    pub to: Option<String>,
    /// Once the service is healthy again, point the family's scheduled tasks on the cluster
    /// back at the revision rolled back to.
    #[arg(long, env = "DEPLOYER_UPDATE_SCHEDULED_TASKS")]
    pub update_scheduled_tasks: bool,
}

/// `release`: every stage in one call, built from the same flag groups as the single
/// commands, so every `DEPLOYER_*` works here too. Each flag overrides the environment's
/// entry in deployer.toml.
#[derive(Debug, Clone, Args)]
pub struct ReleaseArgs {
    /// The environment (deployer.toml); inside Actions the event and the file's policy decide
    /// whether this run may deploy there.
    #[arg(long, env = "DEPLOYER_ENVIRONMENT")]
    pub environment: Option<String>,
    #[arg(long, default_value = "deployer.toml", env = "DEPLOYER_CONFIG")]
    pub config: PathBuf,

    #[command(flatten)]
    pub auth: AuthArgs,

    // image: push a built image (--source), promote an existing one (--from), or use --image as is
    /// Push this image: oci:DIR[:ref] | docker-archive:FILE | docker:IMAGE
    #[arg(long, env = "DEPLOYER_SOURCE", conflicts_with = "from")]
    pub source: Option<String>,
    /// Promote this existing image (REPO:TAG or REPO@DIGEST) without rebuilding.
    #[arg(long, env = "DEPLOYER_FROM")]
    pub from: Option<String>,
    #[command(flatten)]
    pub promote: PromoteSourceArgs,
    #[arg(long, env = "DEPLOYER_REPOSITORY")]
    pub repository: Option<String>,
    #[command(flatten)]
    pub target: ImageTargetArgs,
    #[command(flatten)]
    pub upload: UploadArgs,
    #[command(flatten)]
    pub resources: ResourceArgs,

    // task definition
    #[arg(long, env = "DEPLOYER_TASK_DEFINITION")]
    pub task_definition: Option<String>,
    /// Verify the execution role's permissions, log groups and image platform before registering.
    #[arg(long, env = "DEPLOYER_PERMISSIONS")]
    pub permissions: bool,
    /// Without --source/--from, --image carries the image to deploy.
    #[command(flatten)]
    pub render: RenderArgs,

    // deploy
    #[arg(long, env = "DEPLOYER_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long = "service", env = "DEPLOYER_SERVICE", value_delimiter = ',')]
    pub services: Vec<String>,
    #[command(flatten)]
    pub gate: GateArgs,
    /// A one-off task of the new revision (migrations) after register and before the deploy.
    #[command(flatten)]
    pub pre_deploy: OneOffArgs<PreDeployFlags>,
    #[command(flatten)]
    pub after: AfterDeployArgs,

    // GitHub Deployments
    /// Token for GitHub Deployments (falls back to GITHUB_TOKEN); without one they are skipped.
    #[arg(long, env = "DEPLOYER_GITHUB_TOKEN", hide_env_values = true)]
    pub github_token: Option<crate::secret::Secret>,
    /// The REST API base (falls back to GITHUB_API_URL, then https://api.github.com).
    #[arg(long, env = "DEPLOYER_GITHUB_API_URL")]
    pub github_api_url: Option<String>,
    /// The deployed app's URL for the GitHub deployment (default: the first --health-url).
    #[arg(long, env = "DEPLOYER_ENVIRONMENT_URL")]
    pub environment_url: Option<String>,

    /// Each service's own settings from deployer.toml (`[environments.X.services.NAME]`),
    /// filled by `config::merge_release`; no flag.
    #[arg(skip)]
    pub service_settings: std::collections::BTreeMap<String, crate::config::ServiceSettings>,
}

/// The flag names of a one-off task's settings, per command: `run-task` names them plainly
/// (`--timeout`), `release` after the stage they configure (`--pre-deploy-timeout`).
pub trait OneOffFlags: Clone + std::fmt::Debug + Default + Send + Sync + 'static {
    const COMMAND: &'static str;
    const COMMAND_ENV: &'static str;
    const CONTAINER: &'static str;
    const CONTAINER_ENV: &'static str;
    const ENV: &'static str;
    /// `--` and ENV, for messages.
    const ENV_FLAG: &'static str;
    const TIMEOUT: &'static str;
    const TIMEOUT_ENV: &'static str;
    const LOG_LINES: &'static str;
    const LOG_LINES_ENV: &'static str;
}

/// `run-task`'s names: `--command`, `--container`, `--env`, `--timeout`, `--log-lines`.
#[derive(Debug, Clone, Default)]
pub struct RunTaskFlags;

impl OneOffFlags for RunTaskFlags {
    const COMMAND: &'static str = "command";
    const COMMAND_ENV: &'static str = "DEPLOYER_COMMAND";
    const CONTAINER: &'static str = "container";
    const CONTAINER_ENV: &'static str = "DEPLOYER_CONTAINER";
    const ENV: &'static str = "env";
    const ENV_FLAG: &'static str = "--env";
    const TIMEOUT: &'static str = "timeout";
    const TIMEOUT_ENV: &'static str = "DEPLOYER_TIMEOUT";
    const LOG_LINES: &'static str = "log-lines";
    const LOG_LINES_ENV: &'static str = "DEPLOYER_LOG_LINES";
}

/// `release`'s names: `--pre-deploy-command`, `--pre-deploy-container`, ... (deployer.toml:
/// `pre-deploy = { command = [...], container = "...", env = {...}, timeout = "...", log-lines = N }`).
#[derive(Debug, Clone, Default)]
pub struct PreDeployFlags;

impl OneOffFlags for PreDeployFlags {
    const COMMAND: &'static str = "pre-deploy-command";
    const COMMAND_ENV: &'static str = "DEPLOYER_PRE_DEPLOY_COMMAND";
    const CONTAINER: &'static str = "pre-deploy-container";
    const CONTAINER_ENV: &'static str = "DEPLOYER_PRE_DEPLOY_CONTAINER";
    const ENV: &'static str = "pre-deploy-env";
    const ENV_FLAG: &'static str = "--pre-deploy-env";
    const TIMEOUT: &'static str = "pre-deploy-timeout";
    const TIMEOUT_ENV: &'static str = "DEPLOYER_PRE_DEPLOY_TIMEOUT";
    const LOG_LINES: &'static str = "pre-deploy-log-lines";
    const LOG_LINES_ENV: &'static str = "DEPLOYER_PRE_DEPLOY_LOG_LINES";
}

/// A one-off task's command and limits, declared once for `run-task` and `release`'s
/// pre-deploy stage; `N` names the flags.
#[derive(Debug, Clone, Default, Args)]
pub struct OneOffArgs<N: OneOffFlags> {
    /// The command as a JSON array, e.g. '["bin/migrate","--all"]' (never split by a shell).
    #[arg(id = N::COMMAND, long = N::COMMAND, env = N::COMMAND_ENV, value_name = "JSON")]
    pub command: Option<TaskCommand>,
    /// The container the command and environment apply to (optional with one container).
    #[arg(id = N::CONTAINER, long = N::CONTAINER, env = N::CONTAINER_ENV)]
    pub container: Option<String>,
    /// NAME=VALUE added to that container's environment (repeatable).
    #[arg(id = N::ENV, long = N::ENV, value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// How long it may run before deployer stops it: seconds, or 90s / 10m / 1h (default 10m).
    #[arg(id = N::TIMEOUT, long = N::TIMEOUT, env = N::TIMEOUT_ENV)]
    pub timeout: Option<String>,
    /// On failure, show the last N lines each awslogs container wrote (needs logs:GetLogEvents).
    #[arg(id = N::LOG_LINES, long = N::LOG_LINES, env = N::LOG_LINES_ENV)]
    pub log_lines: Option<usize>,
    #[arg(skip)]
    pub names: std::marker::PhantomData<N>,
}

/// `run-task`: a one-off task, e.g. `deployer run-task --cluster prod --service web -- bin/migrate`.
#[derive(Debug, Args)]
pub struct RunTaskArgs {
    #[arg(long, env = "DEPLOYER_CLUSTER")]
    pub cluster: String,
    /// The service whose network configuration, launch type or capacity provider strategy and
    /// platform version the task gets; its current revision runs unless --task-definition.
    #[arg(long, env = "DEPLOYER_SERVICE")]
    pub service: Option<String>,
    /// ARN or family[:revision] (default: the --service's current revision).
    #[arg(long, env = "DEPLOYER_TASK_DEFINITION")]
    pub task_definition: Option<String>,
    #[command(flatten)]
    pub task: OneOffArgs<RunTaskFlags>,
    /// The command, after `--` (instead of --command).
    #[arg(id = "argv", value_name = "COMMAND", last = true)]
    pub argv: Vec<String>,
}

/// `revisions`: what each ACTIVE revision of a family is used by; `--keep N` cleans up.
#[derive(Debug, Args)]
pub struct RevisionsArgs {
    /// The task definition family (default: the --service's).
    #[arg(long, env = "DEPLOYER_FAMILY")]
    pub family: Option<String>,
    #[arg(long, env = "DEPLOYER_CLUSTER")]
    pub cluster: Option<String>,
    #[arg(long, env = "DEPLOYER_SERVICE")]
    pub service: Option<String>,
    /// Deregister ACTIVE revisions beyond the newest N that nothing uses.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
    /// With --keep: say what would be deregistered, change nothing.
    #[arg(long, requires = "keep")]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum ParamsCommand {
    /// Load a .env file into Parameter Store: values taken literally, SecureString unless named plain.
    ///
    /// Each KEY=VALUE becomes the parameter PATH + key in lower case (DB_PASSWORD →
    /// /production/shop/db_password), a SecureString unless --plain or deployer.toml's
    /// `[params] plain` names it. An existing SecureString is never turned into a String, keys
    /// that differ only in case are refused, and every check runs before the first write, so a
    /// refusal writes nothing. Idempotent: unchanged parameters are left alone; changed ones
    /// are replaced only with --overwrite. Values are never printed.
    ///
    /// The file follows Docker Compose's .env syntax, without substitution: `KEY=VALUE` per
    /// line, optional `export `, `#` comment lines; unquoted values are trimmed and a ` #`
    /// starts a comment; 'single quotes' are literal (\' is a quote); "double quotes" know the
    /// escapes \n \r \t \" \\ \$; quoted values may span lines. `$VAR`, `${VAR}`, `$$` and
    /// `$(...)` are NEVER expanded: the value is stored as written, and each key whose unquoted
    /// or double-quoted value holds one is listed as a warning. A KEY without `=` is an error
    /// (nothing is read from the environment). A key set twice keeps its last value (with a
    /// warning). At most 1 MiB and 10,000 lines; values of 1 to 4096 bytes (Parameter Store's
    /// standard tier).
    #[command(verbatim_doc_comment)]
    Import(ParamsImportArgs),
}

#[derive(Debug, Args)]
pub struct ParamsImportArgs {
    /// The .env file (a pipe such as <(sops -d .env) works too).
    pub file: PathBuf,
    /// Parameter Store hierarchy, e.g. /production/shop/ (DB_PASSWORD → /production/shop/db_password).
    #[arg(long, env = "DEPLOYER_PARAMS_PATH")]
    pub path: String,
    /// Store keys matching this name or wildcard as String instead of SecureString (the whole key,
    /// case-insensitive, `*` any run, `?` one character: LOG_LEVEL, FEATURE_*); repeatable.
    #[arg(long = "plain", value_name = "KEY|GLOB", env = "DEPLOYER_PLAIN", value_delimiter = ',')]
    pub plain: Vec<String>,
    /// KMS key (id, ARN or alias/NAME) that encrypts the SecureString parameters; default: the
    /// account's aws/ssm key.
    #[arg(long, env = "DEPLOYER_KMS_KEY_ID")]
    pub kms_key_id: Option<String>,
    /// Replace parameters whose value or type differs (otherwise they are reported and kept).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the plan (never a value) and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// deployer.toml, read for `[params] plain`; a missing default file is fine.
    #[arg(long, default_value = "deployer.toml", env = "DEPLOYER_CONFIG")]
    pub config: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_github_token_stays_out_of_debug_output() {
        let cli = Cli::try_parse_from(["deployer", "release", "--github-token", "ghp_canary_token"]).unwrap();
        let Command::Release(args) = &cli.command else { panic!("{cli:?}") };
        assert_eq!(args.github_token.as_ref().map(|t| t.expose()), Some("ghp_canary_token"));
        let shown = format!("{cli:?} {cli:#?}");
        assert!(
            !shown.contains("ghp_canary_token") && shown.contains("github_token: Some(Secret(<redacted>))"),
            "{shown}"
        );
    }
}

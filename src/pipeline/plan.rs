//! The release's typed plan: one request per stage, built by `commands::release` from the
//! flags merged over deployer.toml (`config::merge_release`), validated before anything
//! runs. The single commands build the same requests from the same flag groups.

use crate::aws::auth::{AuthRequest, Source};
use crate::cli::RenderArgs;
use crate::deploy::plan::DeployPlan;
use crate::image::ecr::CreateOptions;
use crate::image::source::Cache;
use crate::runtask::TaskSpec;

/// `push`: a built image into ECR.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// oci:DIR[:ref] | docker-archive:FILE | docker:IMAGE
    pub source: String,
    pub repository: String,
    pub tags: Vec<String>,
    pub registry_endpoint: Option<String>,
    pub create: Option<CreateOptions>,
    pub concurrency: Option<usize>,
    /// Where compressed layers are cached between pushes.
    pub cache: Cache,
}

/// `promote`: an image already in a registry, retagged or copied without rebuilding.
#[derive(Debug, Clone)]
pub struct PromoteRequest {
    /// REPO:TAG or REPO@DIGEST
    pub from: String,
    pub from_registry: Option<String>,
    pub from_role_arn: Option<String>,
    /// Where the source ECR registry's HTTP goes instead of its own host.
    pub from_registry_endpoint: Option<String>,
    /// The session name when `from_role_arn` is assumed.
    pub session_name: String,
    pub repository: String,
    pub tags: Vec<String>,
    pub registry_endpoint: Option<String>,
}

/// Where the release's image comes from.
#[derive(Debug, Clone)]
pub enum ImagePlan {
    /// `--image` names it; nothing to push.
    Given,
    Push(PushRequest),
    Promote(PromoteRequest),
}

/// Render, diff, verify, register: the template and what goes into it.
#[derive(Debug, Clone, Default)]
pub struct TaskDefPlan {
    /// A JSON FILE, family[:revision] or ARN; without it, `service`'s current definition.
    pub task_definition: Option<String>,
    pub cluster: Option<String>,
    pub service: Option<String>,
    pub render: RenderArgs,
    /// Where registry HTTP goes to check image digests (instead of ECR's API).
    pub registry_endpoint: Option<String>,
    /// Verification also runs the preflight that the tasks can start (`--permissions`).
    pub permissions: bool,
    /// Tags of the registered revision (app, environment, git-sha, run-url, the user's).
    pub tags: Vec<(String, String)>,
}

/// Housekeeping after every service deployed successfully.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AfterDeployPlan {
    /// Point the family's scheduled tasks on the cluster at the new revision.
    pub update_scheduled_tasks: bool,
    /// Deregister unused ACTIVE revisions beyond the newest N.
    pub keep_revisions: Option<u32>,
}

/// Recording the release as a GitHub Deployment (best effort).
#[derive(Debug, Clone, Default)]
pub struct GithubPlan {
    pub token: Option<crate::secret::Secret>,
    pub api_url: Option<String>,
    pub environment_url: Option<String>,
}

/// Everything `release` does, decided before it starts.
#[derive(Debug)]
pub struct ReleasePlan {
    pub environment: String,
    pub auth: AuthRequest,
    pub auth_source: Source,
    pub image: ImagePlan,
    pub taskdef: TaskDefPlan,
    /// A one-off task of the new revision (migrations) after register, before the deploy.
    pub pre_deploy: Option<TaskSpec>,
    pub deploy: DeployPlan,
    pub after: AfterDeployPlan,
    pub github: GithubPlan,
}

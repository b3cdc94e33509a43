//! GitHub Deployments for a release: one deployment per run (ref = the commit, the environment,
//! a payload naming the image digest and task definition), its statuses `in_progress` →
//! `success` / `failure` with links to the run, and the environment's earlier successful
//! deployments marked `inactive` once this one succeeds — so the repository's Environments page
//! shows what runs where. The token is a [`Secret`] (redacted in `Debug`/`Display`), masked
//! before the first call.
//!
//! Through octocrab (rustls on ring, no aws-lc), against `GITHUB_API_URL`. GitHub is the
//! record, not the deploy: every call here is best-effort, and a failure is a warning, never a
//! failed release. Without a token the whole thing is skipped with a notice.

use octocrab::Octocrab;
use serde::Serialize;
use serde_json::{Value, json};

use crate::secret::Secret;

/// Where and as whom to record deployments, read from the job's environment.
#[derive(Debug, Clone)]
pub struct Context {
    pub api_url: String,
    /// `owner/repo`
    pub repository: String,
    /// The commit deployed (`GITHUB_SHA`).
    pub sha: String,
    /// The run's page, for `log_url`.
    pub run_url: Option<String>,
}

impl Context {
    /// `GITHUB_API_URL` (default api.github.com), `GITHUB_REPOSITORY`, `GITHUB_SHA`, and the run
    /// URL from `GITHUB_SERVER_URL` / `GITHUB_RUN_ID` / `GITHUB_RUN_ATTEMPT`. `None` when the
    /// repository or commit is unknown (not inside Actions).
    pub fn from_env(api_url: Option<String>) -> Option<Context> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let repository = var("GITHUB_REPOSITORY")?;
        let sha = var("GITHUB_SHA")?;
        let api_url = api_url.or_else(|| var("GITHUB_API_URL")).unwrap_or_else(|| "https://api.github.com".into());
        let run_url = var("GITHUB_RUN_ID").map(|id| {
            let server = var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
            match var("GITHUB_RUN_ATTEMPT") {
                Some(attempt) if attempt != "1" => {
                    format!("{server}/{repository}/actions/runs/{id}/attempts/{attempt}")
                }
                _ => format!("{server}/{repository}/actions/runs/{id}"),
            }
        });
        Some(Context { api_url: api_url.trim_end_matches('/').to_string(), repository, sha, run_url })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("GitHub Deployments: {0}")]
pub struct DeploymentsError(String);

fn err(what: &str, e: octocrab::Error) -> DeploymentsError {
    // octocrab's Display of a GitHub error carries GitHub's message; never the token.
    let detail = match &e {
        octocrab::Error::GitHub { source, .. } => format!("{} ({})", source.message, source.status_code),
        other => other.to_string(),
    };
    DeploymentsError(format!("{what}: {detail}"))
}

/// A deployment status (`state` is one of GitHub's: in_progress, success, failure, inactive, …).
#[derive(Debug, Clone, Serialize)]
pub struct Status<'a> {
    pub state: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_url: Option<&'a str>,
    pub description: String,
    /// deployer marks earlier deployments inactive itself (GitHub's automatic marking skips
    /// production environments), so GitHub's own is off.
    pub auto_inactive: bool,
}

/// The request body of `POST /repos/{owner}/{repo}/deployments`.
pub fn deployment_body(ctx: &Context, environment: &str, payload: &Value, description: &str) -> Value {
    json!({
        "ref": ctx.sha,
        "environment": environment,
        "payload": payload,
        "auto_merge": false,
        "required_contexts": [],
        "description": description,
        "production_environment": environment == "production",
        "transient_environment": false,
    })
}

pub struct Deployments {
    client: Octocrab,
    pub ctx: Context,
}

impl Deployments {
    pub fn new(ctx: Context, token: &Secret) -> Result<Deployments, DeploymentsError> {
        let client = Octocrab::builder()
            .base_uri(ctx.api_url.as_str())
            .map_err(|e| err(&format!("API URL {:?}", ctx.api_url), e))?
            // octocrab keeps it in its own secrecy::SecretString.
            .personal_token(token.expose().to_string())
            .build()
            .map_err(|e| err("cannot build the client", e))?;
        Ok(Deployments { client, ctx })
    }

    fn repo_route(&self, rest: &str) -> String {
        format!("/repos/{}{rest}", self.ctx.repository)
    }

    /// Create the deployment; returns its id.
    pub async fn create(&self, environment: &str, payload: &Value, description: &str) -> Result<u64, DeploymentsError> {
        let body = deployment_body(&self.ctx, environment, payload, description);
        let created: Value = self
            .client
            .post(self.repo_route("/deployments"), Some(&body))
            .await
            .map_err(|e| err("create deployment", e))?;
        created["id"].as_u64().ok_or_else(|| {
            // 202: GitHub wanted to merge first (cannot happen with auto_merge false) or similar.
            DeploymentsError(format!(
                "create deployment: no id in the answer: {}",
                created["message"].as_str().unwrap_or("?")
            ))
        })
    }

    pub async fn status(&self, id: u64, status: &Status<'_>) -> Result<(), DeploymentsError> {
        let _: Value = self
            .client
            .post(self.repo_route(&format!("/deployments/{id}/statuses")), Some(status))
            .await
            .map_err(|e| err(&format!("set deployment {id} {}", status.state), e))?;
        Ok(())
    }

    /// Mark the environment's other deployments whose latest status is `success` as
    /// `inactive` (the newest 100); returns how many.
    pub async fn deactivate_previous(&self, environment: &str, keep: u64) -> Result<usize, DeploymentsError> {
        #[derive(Serialize)]
        struct ListQuery<'a> {
            environment: &'a str,
            per_page: u32,
        }
        let list: Vec<Value> = self
            .client
            .get(self.repo_route("/deployments"), Some(&ListQuery { environment, per_page: 100 }))
            .await
            .map_err(|e| err("list deployments", e))?;
        let mut marked = 0;
        for id in list.iter().filter_map(|d| d["id"].as_u64()).filter(|id| *id != keep) {
            #[derive(Serialize)]
            struct Page {
                per_page: u32,
            }
            let statuses: Vec<Value> = self
                .client
                .get(self.repo_route(&format!("/deployments/{id}/statuses")), Some(&Page { per_page: 1 }))
                .await
                .map_err(|e| err(&format!("statuses of deployment {id}"), e))?;
            if statuses.first().and_then(|s| s["state"].as_str()) == Some("success") {
                let status = Status {
                    state: "inactive",
                    log_url: self.ctx.run_url.as_deref(),
                    environment_url: None,
                    description: "superseded by a newer deployment".into(),
                    auto_inactive: false,
                };
                self.status(id, &status).await?;
                marked += 1;
            }
        }
        Ok(marked)
    }
}

/// The release's use of all this: start a deployment once the task definition is registered,
/// finish it after the deploy. Problems become warnings; no token means a notice and nothing else.
pub struct Recorder<'a> {
    runner: &'a crate::github::runner::Runner,
    active: Option<(Deployments, u64)>,
    environment: String,
    environment_url: Option<String>,
}

impl<'a> Recorder<'a> {
    /// `token` is masked before anything else happens.
    pub async fn start(
        runner: &'a crate::github::runner::Runner,
        token: Option<Secret>,
        api_url: Option<String>,
        environment: &str,
        environment_url: Option<String>,
        payload: &Value,
    ) -> Recorder<'a> {
        use crate::github::runner::Level;
        let mut rec = Recorder { runner, active: None, environment: environment.to_string(), environment_url };
        let Some(token) = token.filter(|t| !t.is_blank()) else {
            if runner.in_actions() {
                runner.annotate(
                    Level::Notice,
                    "no GitHub token (github-token input, DEPLOYER_GITHUB_TOKEN or GITHUB_TOKEN): GitHub Deployments skipped",
                    None,
                );
            }
            return rec;
        };
        runner.mask(token.expose());
        let Some(ctx) = Context::from_env(api_url) else {
            runner.annotate(Level::Notice, "GITHUB_REPOSITORY/GITHUB_SHA unknown: GitHub Deployments skipped", None);
            return rec;
        };
        let started = async {
            let d = Deployments::new(ctx, &token)?;
            let id = d.create(environment, payload, &format!("deployer release to {environment}")).await?;
            let status = Status {
                state: "in_progress",
                log_url: d.ctx.run_url.as_deref(),
                environment_url: rec.environment_url.as_deref(),
                description: "deploying".into(),
                auto_inactive: false,
            };
            d.status(id, &status).await?;
            Ok::<_, DeploymentsError>((d, id))
        };
        match started.await {
            Ok(active) => {
                tracing::info!("GitHub deployment {} created for {environment}", active.1);
                rec.active = Some(active);
            }
            Err(e) => runner.annotate(Level::Warning, &e.to_string(), None),
        }
        rec
    }

    /// The GitHub deployment id, when one was created.
    pub fn id(&self) -> Option<u64> {
        self.active.as_ref().map(|(_, id)| *id)
    }

    /// `success` (and the environment's earlier deployments become inactive) or `failure`.
    pub async fn finish(&self, succeeded: bool, description: &str) {
        let Some((d, id)) = &self.active else { return };
        let status = Status {
            state: if succeeded { "success" } else { "failure" },
            log_url: d.ctx.run_url.as_deref(),
            environment_url: self.environment_url.as_deref(),
            description: description.chars().take(140).collect(),
            auto_inactive: false,
        };
        let done = async {
            d.status(*id, &status).await?;
            if succeeded {
                d.deactivate_previous(&self.environment, *id).await?;
            }
            Ok::<_, DeploymentsError>(())
        };
        if let Err(e) = done.await {
            self.runner.annotate(crate::github::runner::Level::Warning, &e.to_string(), None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deployment_body_never_merges_and_waits_for_no_checks() {
        let ctx = Context { api_url: "http://x".into(), repository: "o/r".into(), sha: "abc".into(), run_url: None };
        let body = deployment_body(&ctx, "production", &json!({"image-digest": "sha256:1"}), "d");
        assert_eq!(body["ref"], "abc");
        assert_eq!(body["auto_merge"], false);
        assert_eq!(body["required_contexts"], json!([]));
        assert_eq!(body["payload"]["image-digest"], "sha256:1");
        assert_eq!(body["production_environment"], true);
    }
}

//! The `resolve` stage: which environment a run may deploy to, from the GitHub event (or a
//! terminal) and `deployer.toml`. A pure policy over plain data, table-tested:
//! - pull requests never deploy;
//! - `workflow_dispatch` only targets environments with `manual = true`;
//! - pushes and releases deploy where the ref matches the environment's `branches`/`tags`;
//! - at a terminal, the named environment (maintainers choose).
//!
//! A refusal lists what would have been allowed.

use globset::GlobMatcher;

use crate::config::Config;

/// How this run was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// `push`, `workflow_dispatch`, `release`, `pull_request`, … or `terminal` outside Actions.
    pub event: String,
    /// `refs/heads/B`, `refs/tags/T`, `refs/pull/N/merge`.
    pub git_ref: Option<String>,
    /// `--environment`, or the dispatch input `environment`.
    pub requested: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}\n  allowed: {}", if allowed.is_empty() { "nothing (add environments to deployer.toml)".to_string() } else { allowed.join("; ") })]
pub struct Refusal {
    pub reason: String,
    pub allowed: Vec<String>,
}

/// GitHub's branch-filter globbing: `*` stays within a path segment, `**` crosses them.
pub fn glob(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(globset::GlobBuilder::new(pattern).literal_separator(true).build()?.compile_matcher())
}

fn matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| glob(p).is_ok_and(|g| g.is_match(name)))
}

/// What each environment accepts, for refusals.
fn allowed(config: &Config) -> Vec<String> {
    config
        .environments
        .iter()
        .map(|(name, env)| {
            let mut from = Vec::new();
            if !env.branches.is_empty() {
                from.push(format!("branches {}", env.branches.join(", ")));
            }
            if !env.tags.is_empty() {
                from.push(format!("tags {}", env.tags.join(", ")));
            }
            if env.manual {
                from.push("workflow_dispatch".into());
            }
            if from.is_empty() {
                from.push("a terminal only".into());
            }
            format!("{name} ← {}", from.join(", "))
        })
        .collect()
}

/// Decide the environment, or refuse.
pub fn environment(config: &Config, trigger: &Trigger) -> Result<String, Refusal> {
    let refuse = |reason: String| Refusal { reason, allowed: allowed(config) };
    if config.environments.is_empty() {
        // No policy file: flags alone describe the target; the name is informational.
        return Ok(trigger.requested.clone().unwrap_or_else(|| "default".into()));
    }
    if let Some(name) = &trigger.requested
        && !config.environments.contains_key(name)
    {
        return Err(refuse(format!("environment {name:?} is not in deployer.toml")));
    }
    match trigger.event.as_str() {
        "pull_request" | "pull_request_target" => Err(refuse(
            "deployer does not deploy from pull requests; merge first, then deploy from the branch or tag".into(),
        )),
        "workflow_dispatch" => {
            let Some(name) = &trigger.requested else {
                return Err(refuse("workflow_dispatch needs an `environment` input (or --environment)".into()));
            };
            if config.environments[name].manual {
                Ok(name.clone())
            } else {
                Err(refuse(format!("environment {name:?} does not allow manual releases (set `manual = true`)")))
            }
        }
        "terminal" => match (&trigger.requested, config.environments.len()) {
            (Some(name), _) => Ok(name.clone()),
            (None, 1) => Ok(config.environments.keys().next().cloned().unwrap_or_default()),
            (None, _) => Err(refuse("several environments are configured: pass --environment".into())),
        },
        _ => {
            let Some(git_ref) = &trigger.git_ref else {
                return Err(refuse(format!("the {} event carries no git ref to check", trigger.event)));
            };
            let fits = |env: &crate::config::Environment| match (
                git_ref.strip_prefix("refs/heads/"),
                git_ref.strip_prefix("refs/tags/"),
            ) {
                (Some(branch), _) => matches(&env.branches, branch),
                (_, Some(tag)) => matches(&env.tags, tag),
                _ => false,
            };
            if let Some(name) = &trigger.requested {
                return if fits(&config.environments[name]) {
                    Ok(name.clone())
                } else {
                    Err(refuse(format!("{git_ref} may not deploy to {name:?}")))
                };
            }
            let candidates: Vec<&String> =
                config.environments.iter().filter(|(_, e)| fits(e)).map(|(n, _)| n).collect();
            match candidates.as_slice() {
                [one] => Ok((*one).clone()),
                [] => Err(refuse(format!("{git_ref} matches no environment's branches or tags"))),
                many => Err(refuse(format!(
                    "{git_ref} matches several environments ({}); pass --environment",
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ))),
            }
        }
    }
}

/// The trigger of this process: GitHub's variables inside Actions, `terminal` outside.
pub fn trigger_from_env(requested: Option<String>) -> Trigger {
    let in_actions = std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true");
    if !in_actions {
        return Trigger { event: "terminal".into(), git_ref: None, requested };
    }
    let event = std::env::var("GITHUB_EVENT_NAME").unwrap_or_default();
    let dispatch_input = || -> Option<String> {
        let path = std::env::var("GITHUB_EVENT_PATH").ok()?;
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
        v["inputs"]["environment"].as_str().map(str::to_string)
    };
    let requested = requested.or_else(|| if event == "workflow_dispatch" { dispatch_input() } else { None });
    Trigger { event, git_ref: std::env::var("GITHUB_REF").ok().filter(|r| !r.is_empty()), requested }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            r#"
[environments.staging]
branches = ["main"]
[environments.production]
branches = ["release/*"]
tags = ["v*"]
manual = true
[environments.sandbox]
"#,
            "t",
        )
        .unwrap()
    }

    fn t(event: &str, git_ref: Option<&str>, requested: Option<&str>) -> Trigger {
        Trigger { event: event.into(), git_ref: git_ref.map(Into::into), requested: requested.map(Into::into) }
    }

    #[test]
    fn the_policy_table() {
        let c = config();
        let ok = |e: &str| Ok::<String, String>(e.into());
        let table: Vec<(Trigger, Result<String, String>)> = vec![
            (t("push", Some("refs/heads/main"), None), ok("staging")),
            (t("push", Some("refs/heads/release/1.2"), None), ok("production")),
            (t("push", Some("refs/heads/release/1.2/hotfix"), None), Err("matches no environment".into())),
            (t("push", Some("refs/tags/v1.4.0"), None), ok("production")),
            (t("release", Some("refs/tags/v2.0.0"), None), ok("production")),
            (
                t("push", Some("refs/heads/feature/x"), Some("production")),
                Err("refs/heads/feature/x may not deploy to \"production\"".into()),
            ),
            (t("push", Some("refs/heads/feature/x"), None), Err("matches no environment's branches or tags".into())),
            (
                t("pull_request", Some("refs/pull/7/merge"), Some("staging")),
                Err("does not deploy from pull requests".into()),
            ),
            (t("workflow_dispatch", Some("refs/heads/main"), Some("production")), ok("production")),
            (
                t("workflow_dispatch", Some("refs/heads/main"), Some("staging")),
                Err("does not allow manual releases".into()),
            ),
            (t("workflow_dispatch", Some("refs/heads/main"), None), Err("needs an `environment` input".into())),
            (t("push", Some("refs/heads/main"), Some("nope")), Err("\"nope\" is not in deployer.toml".into())),
            (t("terminal", None, Some("sandbox")), ok("sandbox")),
            (t("terminal", None, None), Err("pass --environment".into())),
            (t("schedule", None, None), Err("carries no git ref".into())),
        ];
        for (trigger, want) in table {
            let got = environment(&c, &trigger).map_err(|r| r.to_string());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{trigger:?}"),
                (Err(g), Err(w)) => assert!(g.contains(w.as_str()), "{trigger:?}: {g}"),
                _ => panic!("{trigger:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn refusals_list_what_is_allowed() {
        let err = environment(&config(), &t("push", Some("refs/heads/feature/x"), None)).unwrap_err().to_string();
        assert!(err.contains("production ← branches release/*, tags v*, workflow_dispatch"), "{err}");
        assert!(err.contains("staging ← branches main"), "{err}");
        assert!(err.contains("sandbox ← a terminal only"), "{err}");
    }

    #[test]
    fn without_a_config_flags_decide() {
        assert_eq!(environment(&Config::default(), &t("push", Some("refs/heads/x"), None)), Ok("default".into()));
    }
}

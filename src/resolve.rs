//! The `resolve` stage: which environment a run may deploy to, from the GitHub event (or a
//! terminal) and `deployer.toml`. A pure policy over plain data, table-tested. It fails
//! closed:
//! - inside Actions a run without a policy (no deployer.toml, or one naming no environment) is
//!   refused, with the minimal file to add;
//! - events are an allow-list: `push`, `workflow_dispatch` and `release`, plus whatever an
//!   environment names in `events = [...]` (e.g. `schedule`); `pull_request*` never deploys,
//!   whatever the file says;
//! - refs are matched with GitHub's filter syntax ([`Filter`]: `*`, `**`, `?`, `+`, `[]`, `\`,
//!   `!` negation, last match wins) against the environment's `branches` / `tags`;
//! - `workflow_dispatch` only targets environments with `manual = true`, and only from the
//!   branches they list (`manual-branches`, else `branches`) or their `tags`;
//! - at a terminal, the named environment (maintainers choose); without a file, flags alone.
//!
//! A refusal says why and lists what each environment accepts. It happens before any token
//! is requested.

use regex::Regex;

use crate::config::{Config, Environment};

/// Events that may deploy without an environment naming them.
pub const DEFAULT_EVENTS: [&str; 3] = ["push", "workflow_dispatch", "release"];

/// `pull_request`, `pull_request_target`, `pull_request_review`, …: code that is not merged
/// yet (and, for forks, not trusted) never deploys.
pub fn is_pull_request_event(event: &str) -> bool {
    event.starts_with("pull_request")
}

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
#[error("{reason}{}", if allowed.is_empty() { String::new() } else { format!("\n  allowed: {}", allowed.join("; ")) })]
pub struct Refusal {
    pub reason: String,
    pub allowed: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// GitHub's filter patterns (workflow syntax, "Filter pattern cheat sheet").

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// One compiled pattern: a full-match regex and whether it excludes (`!`).
#[derive(Debug, Clone)]
struct Pattern {
    negated: bool,
    regex: Regex,
}

/// A list of branch or tag patterns as GitHub evaluates them: every pattern is tried in
/// order and the last one that matches decides (`!` excludes, anything else includes); a
/// name no pattern matches is not included.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    patterns: Vec<Pattern>,
}

impl Filter {
    pub fn compile(patterns: &[String]) -> Result<Filter, PatternError> {
        let patterns = patterns.iter().map(|p| compile_pattern(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(Filter { patterns })
    }

    pub fn matches(&self, name: &str) -> bool {
        let mut included = false;
        for p in &self.patterns {
            if p.regex.is_match(name) {
                included = !p.negated;
            }
        }
        included
    }
}

/// Check a list of patterns as deployer.toml gives them: each compiles, and a list with
/// `!` patterns also has a positive one (GitHub's rule; a list of exclusions only would
/// match nothing).
pub fn check_patterns(patterns: &[String]) -> Result<(), PatternError> {
    Filter::compile(patterns)?;
    if !patterns.is_empty() && patterns.iter().all(|p| p.starts_with('!')) {
        return Err(PatternError {
            pattern: patterns.join(", "),
            reason: "a list with `!` patterns needs at least one pattern without `!` (exclusions alone match nothing)"
                .into(),
        });
    }
    Ok(())
}

/// Translate one GitHub filter pattern to an anchored regex:
/// `*` any characters but `/`; `**` any characters; `**/` any leading directories (or none);
/// `?` zero or one and `+` one or more of the preceding character or class; `[..]` one of
/// the listed characters or ranges (a-z, A-Z, 0-9); `\x` a literal x; a leading `!` negates.
fn compile_pattern(raw: &str) -> Result<Pattern, PatternError> {
    let err = |reason: &str| PatternError { pattern: raw.to_string(), reason: reason.to_string() };
    let (negated, body) = match raw.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if body.is_empty() {
        return Err(err("empty pattern"));
    }
    let chars: Vec<char> = body.chars().collect();
    let mut re = String::from("^");
    // Whether `?`/`+` may apply to what came last (a character or a class, not a wildcard
    // or another quantifier).
    let mut quantifiable = false;
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    if chars.get(i + 2) == Some(&'/') {
                        re.push_str("(?:.+/)?");
                        i += 3;
                    } else {
                        re.push_str(".*");
                        i += 2;
                    }
                } else {
                    re.push_str("[^/]*");
                    i += 1;
                }
                quantifiable = false;
            }
            c @ ('?' | '+') => {
                if quantifiable {
                    re.push(c);
                    quantifiable = false;
                } else {
                    re.push_str(&regex::escape(&c.to_string()));
                    quantifiable = true;
                }
                i += 1;
            }
            '[' => {
                let close = chars[i + 1..].iter().position(|&c| c == ']').map(|p| p + i + 1);
                let Some(close) = close else {
                    return Err(err("`[` without a closing `]`"));
                };
                let class = &chars[i + 1..close];
                if class.is_empty() {
                    return Err(err("empty brackets `[]`"));
                }
                re.push('[');
                let mut j = 0;
                while j < class.len() {
                    let c = class[j];
                    if !c.is_ascii_alphanumeric() {
                        return Err(err("brackets may only hold letters, digits and ranges a-z, A-Z, 0-9"));
                    }
                    if class.get(j + 1) == Some(&'-') && j + 2 < class.len() {
                        let end = class[j + 2];
                        let same_kind = (c.is_ascii_lowercase() && end.is_ascii_lowercase())
                            || (c.is_ascii_uppercase() && end.is_ascii_uppercase())
                            || (c.is_ascii_digit() && end.is_ascii_digit());
                        if !same_kind || c > end {
                            return Err(err("a range in brackets is one of a-z, A-Z or 0-9 (or a part of one)"));
                        }
                        re.push(c);
                        re.push('-');
                        re.push(end);
                        j += 3;
                    } else {
                        re.push(c);
                        j += 1;
                    }
                }
                re.push(']');
                i = close + 1;
                quantifiable = true;
            }
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    return Err(err("a trailing `\\` escapes nothing"));
                };
                re.push_str(&regex::escape(&next.to_string()));
                i += 2;
                quantifiable = true;
            }
            c => {
                re.push_str(&regex::escape(&c.to_string()));
                i += 1;
                quantifiable = true;
            }
        }
    }
    re.push('$');
    let regex = Regex::new(&re).map_err(|e| err(&format!("cannot be compiled ({e})")))?;
    Ok(Pattern { negated, regex })
}

fn matches(patterns: &[String], name: &str) -> bool {
    // deployer.toml's patterns were checked when it was read; a pattern that still fails
    // to compile matches nothing (fail closed).
    Filter::compile(patterns).is_ok_and(|f| f.matches(name))
}

// ---------------------------------------------------------------------------------------------
// The policy.

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
                match &env.manual_branches {
                    Some(b) => from.push(format!("workflow_dispatch from {}", b.join(", "))),
                    None => from.push("workflow_dispatch".into()),
                }
            }
            if !env.events.is_empty() {
                from.push(format!("events {}", env.events.join(", ")));
            }
            if from.is_empty() {
                from.push("a terminal only".into());
            }
            format!("{name} ← {}", from.join(", "))
        })
        .collect()
}

/// The smallest deployer.toml that gives a run a policy, for the refusal without one.
fn minimal_file(trigger: &Trigger) -> String {
    let name = trigger.requested.as_deref().filter(|n| is_plain_name(n)).unwrap_or("production");
    format!(
        "[environments.{name}]\nbranches = [\"main\"]   # pushes to main may deploy here (GitHub's filter patterns)\n# tags = [\"v*\"]       # and tags\n# manual = true        # and workflow_dispatch from these branches\n# cluster, service, role-arn, ... (or pass them as inputs)"
    )
}

fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Whether `env` accepts `event` (before looking at the ref).
fn accepts_event(env: &Environment, event: &str) -> bool {
    !is_pull_request_event(event) && (DEFAULT_EVENTS.contains(&event) || env.events.iter().any(|e| e == event))
}

/// Whether the ref of a push / release / listed event may deploy to `env`.
fn ref_fits(env: &Environment, git_ref: &str) -> bool {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        matches(&env.branches, branch)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        matches(&env.tags, tag)
    } else {
        false
    }
}

/// Whether a `workflow_dispatch` from `git_ref` may target `env` (which has `manual = true`):
/// branches from `manual-branches` when given, else from `branches`; tags from `tags`.
fn dispatch_fits(env: &Environment, git_ref: &str) -> bool {
    if let Some(branch) = git_ref.strip_prefix("refs/heads/") {
        matches(env.manual_branches.as_ref().unwrap_or(&env.branches), branch)
    } else if let Some(tag) = git_ref.strip_prefix("refs/tags/") {
        matches(&env.tags, tag)
    } else {
        false
    }
}

/// Decide the environment, or refuse.
pub fn environment(config: &Config, trigger: &Trigger) -> Result<String, Refusal> {
    let refuse = |reason: String| Refusal { reason, allowed: allowed(config) };
    if trigger.event == "terminal" {
        return at_a_terminal(config, trigger).map_err(refuse);
    }
    // Inside Actions from here on: no policy, no deploy.
    if config.environments.is_empty() {
        return Err(Refusal {
            reason: format!(
                "inside GitHub Actions deployer needs a policy saying which refs may deploy where, and there is none \
                 (no deployer.toml, or it names no environment). Add deployer.toml to the repository (or point the \
                 `config` input at one), at least:\n\n{}\n",
                minimal_file(trigger)
            ),
            allowed: Vec::new(),
        });
    }
    if let Some(name) = &trigger.requested
        && !config.environments.contains_key(name)
    {
        return Err(refuse(format!("environment {name:?} is not in deployer.toml")));
    }
    let event = trigger.event.as_str();
    if is_pull_request_event(event) {
        return Err(refuse(format!(
            "deployer never deploys from {event} (the code is not merged, and a fork's code is not trusted); \
             merge first, then deploy from the branch or tag"
        )));
    }
    let Some(git_ref) = trigger.git_ref.as_deref() else {
        return Err(refuse(format!("the {event} event carries no git ref (GITHUB_REF) to check")));
    };
    if event == "workflow_dispatch" {
        let Some(name) = &trigger.requested else {
            return Err(refuse("workflow_dispatch needs an `environment` input (or --environment)".into()));
        };
        let env = &config.environments[name];
        if !env.manual {
            return Err(refuse(format!("environment {name:?} does not allow manual releases (set `manual = true`)")));
        }
        if !dispatch_fits(env, git_ref) {
            let from = if env.manual_branches.is_some() { "manual-branches" } else { "branches" };
            return Err(refuse(format!(
                "a workflow_dispatch from {git_ref} may not deploy to {name:?} (not in its `{from}`/`tags`)"
            )));
        }
        return Ok(name.clone());
    }
    if !config.environments.values().any(|e| accepts_event(e, event)) {
        return Err(refuse(format!(
            "the {event:?} event may not deploy: deployer deploys on {}; an environment must name any other event in \
             `events = [...]`",
            DEFAULT_EVENTS.join(", ")
        )));
    }
    if let Some(name) = &trigger.requested {
        let env = &config.environments[name];
        return if !accepts_event(env, event) {
            Err(refuse(format!("environment {name:?} does not accept the {event:?} event (add it to its `events`)")))
        } else if ref_fits(env, git_ref) {
            Ok(name.clone())
        } else {
            Err(refuse(format!("{git_ref} may not deploy to {name:?}")))
        };
    }
    let candidates: Vec<&String> = config
        .environments
        .iter()
        .filter(|(_, e)| accepts_event(e, event) && ref_fits(e, git_ref))
        .map(|(n, _)| n)
        .collect();
    match candidates.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(refuse(format!("{git_ref} ({event}) matches no environment's branches or tags"))),
        many => Err(refuse(format!(
            "{git_ref} matches several environments ({}); pass --environment",
            many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// Outside Actions a maintainer chooses; without a file the flags alone describe the target.
fn at_a_terminal(config: &Config, trigger: &Trigger) -> Result<String, String> {
    match (&trigger.requested, config.environments.len()) {
        (Some(name), 0) => Ok(name.clone()),
        (None, 0) => Ok("default".into()),
        (Some(name), _) if config.environments.contains_key(name) => Ok(name.clone()),
        (Some(name), _) => Err(format!("environment {name:?} is not in deployer.toml")),
        (None, 1) => Ok(config.environments.keys().next().cloned().unwrap_or_default()),
        (None, _) => Err("several environments are configured: pass --environment".into()),
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
branches = ["release/**", "!release/experimental", "!release/**-alpha"]
tags = ["v*"]
manual = true
[environments.qa]
branches = ["qa"]
manual = true
manual-branches = ["main", "hotfix/*"]
events = ["schedule", "workflow_run"]
[environments.sandbox]
"#,
            "t",
        )
        .unwrap()
    }

    fn t(event: &str, git_ref: Option<&str>, requested: Option<&str>) -> Trigger {
        Trigger { event: event.into(), git_ref: git_ref.map(Into::into), requested: requested.map(Into::into) }
    }

    fn check(c: &Config, table: Vec<(Trigger, Result<&str, &str>)>) {
        for (trigger, want) in table {
            let got = environment(c, &trigger).map_err(|r| r.to_string());
            match (&got, &want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{trigger:?}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{trigger:?}: {g}"),
                _ => panic!("{trigger:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_policy_table() {
        let main = Some("refs/heads/main");
        check(
            &config(),
            vec![
                (t("push", main, None), Ok("staging")),
                (t("push", Some("refs/heads/release/1.2"), None), Ok("production")),
                (t("push", Some("refs/heads/release/1.2/hotfix"), None), Ok("production")),
                (t("push", Some("refs/tags/v1.4.0"), None), Ok("production")),
                (t("release", Some("refs/tags/v2.0.0"), None), Ok("production")),
                (
                    t("push", Some("refs/heads/feature/x"), Some("production")),
                    Err("refs/heads/feature/x may not deploy to \"production\""),
                ),
                (t("push", Some("refs/heads/feature/x"), None), Err("matches no environment's branches or tags")),
                (t("push", main, Some("nope")), Err("\"nope\" is not in deployer.toml")),
                (t("push", Some("refs/pull/7/merge"), None), Err("matches no environment")),
                (t("terminal", None, Some("sandbox")), Ok("sandbox")),
                (t("terminal", None, None), Err("pass --environment")),
                (t("terminal", None, Some("nope")), Err("\"nope\" is not in deployer.toml")),
            ],
        );
    }

    #[test]
    fn negation_is_honoured_and_the_last_match_wins() {
        let c = config();
        check(
            &c,
            vec![
                (t("push", Some("refs/heads/release/experimental"), None), Err("matches no environment")),
                (
                    t("push", Some("refs/heads/release/experimental"), Some("production")),
                    Err("may not deploy to \"production\""),
                ),
                (t("push", Some("refs/heads/release/2.0-alpha"), None), Err("matches no environment")),
                (t("push", Some("refs/heads/release/beta/3-alpha"), None), Err("matches no environment")),
                (t("push", Some("refs/heads/release/experimental-2"), None), Ok("production")),
                (t("push", Some("refs/heads/release/10"), None), Ok("production")),
            ],
        );
    }

    #[test]
    fn pull_requests_never_deploy_whatever_the_file_says() {
        let mut c = config();
        // A file that names them anyway (Config::parse refuses this; a hand-built one cannot sneak it in).
        c.environments.get_mut("production").unwrap().events =
            vec!["pull_request".into(), "pull_request_target".into(), "pull_request_review".into()];
        for event in ["pull_request", "pull_request_target", "pull_request_review", "pull_request_review_comment"] {
            for requested in [None, Some("production"), Some("staging")] {
                for r in ["refs/pull/7/merge", "refs/heads/main", "refs/heads/release/1"] {
                    let got = environment(&c, &t(event, Some(r), requested)).unwrap_err().to_string();
                    assert!(got.contains(&format!("never deploys from {event}")), "{event} {r} {requested:?}: {got}");
                }
            }
        }
    }

    #[test]
    fn events_are_an_allow_list() {
        let c = config();
        check(
            &c,
            vec![
                // Fork PRs can start these; nobody named them for staging/production.
                (t("workflow_run", Some("refs/heads/main"), None), Err("no environment's branches or tags")),
                (
                    t("workflow_run", Some("refs/heads/main"), Some("staging")),
                    Err("\"staging\" does not accept the \"workflow_run\" event"),
                ),
                (t("issue_comment", Some("refs/heads/main"), None), Err("the \"issue_comment\" event may not deploy")),
                (
                    t("issue_comment", Some("refs/heads/main"), Some("production")),
                    Err("the \"issue_comment\" event may not deploy"),
                ),
                (
                    t("schedule", Some("refs/heads/main"), Some("staging")),
                    Err("does not accept the \"schedule\" event"),
                ),
                (
                    t("schedule", Some("refs/heads/main"), Some("production")),
                    Err("does not accept the \"schedule\" event"),
                ),
                (t("merge_group", Some("refs/heads/main"), None), Err("the \"merge_group\" event may not deploy")),
                (t("", Some("refs/heads/main"), None), Err("the \"\" event may not deploy")),
                // qa names schedule and workflow_run, and its branch matches.
                (t("schedule", Some("refs/heads/qa"), None), Ok("qa")),
                (t("schedule", Some("refs/heads/qa"), Some("qa")), Ok("qa")),
                (t("schedule", Some("refs/heads/main"), Some("qa")), Err("refs/heads/main may not deploy to \"qa\"")),
                (t("workflow_run", Some("refs/heads/qa"), None), Ok("qa")),
                (t("schedule", None, None), Err("carries no git ref")),
            ],
        );
    }

    #[test]
    fn workflow_dispatch_honours_the_environments_branches() {
        let c = config();
        check(
            &c,
            vec![
                (t("workflow_dispatch", Some("refs/heads/release/1.4"), Some("production")), Ok("production")),
                (t("workflow_dispatch", Some("refs/tags/v1.4.0"), Some("production")), Ok("production")),
                (
                    t("workflow_dispatch", Some("refs/heads/feature/x"), Some("production")),
                    Err(
                        "a workflow_dispatch from refs/heads/feature/x may not deploy to \"production\" (not in its `branches`",
                    ),
                ),
                (
                    t("workflow_dispatch", Some("refs/heads/main"), Some("production")),
                    Err("may not deploy to \"production\""),
                ),
                (
                    t("workflow_dispatch", Some("refs/heads/release/experimental"), Some("production")),
                    Err("may not deploy"),
                ),
                // manual-branches replaces branches for dispatches.
                (t("workflow_dispatch", Some("refs/heads/main"), Some("qa")), Ok("qa")),
                (t("workflow_dispatch", Some("refs/heads/hotfix/1"), Some("qa")), Ok("qa")),
                (t("workflow_dispatch", Some("refs/heads/qa"), Some("qa")), Err("(not in its `manual-branches`")),
                (
                    t("workflow_dispatch", Some("refs/heads/main"), Some("staging")),
                    Err("does not allow manual releases"),
                ),
                (t("workflow_dispatch", Some("refs/heads/main"), None), Err("needs an `environment` input")),
                (t("workflow_dispatch", None, Some("production")), Err("carries no git ref")),
            ],
        );
    }

    #[test]
    fn inside_actions_no_policy_is_refused_with_the_file_to_add() {
        for event in ["push", "workflow_dispatch", "release", "pull_request"] {
            let err = environment(&Config::default(), &t(event, Some("refs/heads/main"), Some("production")))
                .unwrap_err()
                .to_string();
            assert!(err.contains("inside GitHub Actions deployer needs a policy"), "{err}");
            assert!(err.contains("[environments.production]\nbranches = [\"main\"]"), "{err}");
            assert!(!err.contains("allowed:"), "{err}");
        }
        // A name that is not a TOML bare key is not echoed into the example.
        let err = environment(&Config::default(), &t("push", Some("refs/heads/main"), Some("a]\nx")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[environments.production]"), "{err}");
    }

    #[test]
    fn at_a_terminal_flags_work_without_a_file() {
        let none = Config::default();
        assert_eq!(environment(&none, &t("terminal", None, None)), Ok("default".into()));
        assert_eq!(environment(&none, &t("terminal", None, Some("production"))), Ok("production".into()));
        let one = Config::parse("[environments.prod]\n", "t").unwrap();
        assert_eq!(environment(&one, &t("terminal", None, None)), Ok("prod".into()));
    }

    #[test]
    fn refusals_list_what_is_allowed() {
        let err = environment(&config(), &t("push", Some("refs/heads/feature/x"), None)).unwrap_err().to_string();
        assert!(
            err.contains(
                "production ← branches release/**, !release/experimental, !release/**-alpha, tags v*, workflow_dispatch"
            ),
            "{err}"
        );
        assert!(
            err.contains("qa ← branches qa, workflow_dispatch from main, hotfix/*, events schedule, workflow_run"),
            "{err}"
        );
        assert!(err.contains("staging ← branches main"), "{err}");
        assert!(err.contains("sandbox ← a terminal only"), "{err}");
    }

    fn filter(patterns: &[&str]) -> Filter {
        Filter::compile(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// GitHub's "Patterns to match branches and tags" cheat sheet, row by row, plus names
    /// each pattern must not match.
    #[test]
    fn the_filter_cheat_sheet() {
        let table: &[(&[&str], &[&str], &[&str])] = &[
            (
                &["feature/*"],
                &["feature/my-branch", "feature/your-branch"],
                &["feature/beta-a/my-branch", "feature", "xfeature/a"],
            ),
            (
                &["feature/**"],
                &["feature/beta-a/my-branch", "feature/your-branch", "feature/mona/the/octocat"],
                &["feature", "features/x"],
            ),
            (
                &["main", "releases/mona-the-octocat"],
                &["main", "releases/mona-the-octocat"],
                &["mainx", "releases/mona"],
            ),
            (&["*"], &["main", "releases"], &["releases/1", "feature/x"]),
            (&["**"], &["all/the/branches", "every/tag", "main"], &[]),
            (&["*feature"], &["mona-feature", "feature", "ver-10-feature"], &["feature-x", "a/feature"]),
            (&["v2*"], &["v2", "v2.0", "v2.9"], &["v1.0", "v2/x", "xv2"]),
            (&["v[12].[0-9]+.[0-9]+"], &["v1.10.1", "v2.0.0"], &["v3.0.0", "v1.x.1", "v1.0", "v1.0.0-rc1", "v1a0b0"]),
            // `?` and `+` quantify the preceding character; `.` is literal.
            (&["v1.?0"], &["v1.0", "v10"], &["v1x0", "v1..0"]),
            (&["rc+"], &["rc", "rcc"], &["r", "rcx"]),
            (&["*.jsx?"], &["page.js", "page.jsx"], &["page.jsxx", "dir/page.js"]),
            // `**/` matches any leading directories, or none.
            (&["**/hotfix"], &["hotfix", "a/hotfix", "a/b/hotfix"], &["ahotfix"]),
            (&["release/**/final"], &["release/final", "release/1/final", "release/1/2/final"], &["release/1final"]),
            // Escapes and literals that are regex syntax.
            (&["\\!file"], &["!file"], &["file"]),
            (&["a\\*b"], &["a*b"], &["axb"]),
            (&["a(b)|c$"], &["a(b)|c$"], &["ab", "c"]),
            (&["?x"], &["?x"], &["x"]),
            // Negation: `!` excludes what earlier patterns included; the last match wins.
            (
                &["releases/**", "!releases/**-alpha"],
                &["releases/10", "releases/beta/mona"],
                &["releases/10-alpha", "releases/beta/3-alpha"],
            ),
            (&["*.md", "!README.md", "README*"], &["hello.md", "README.md", "README.doc"], &["docs/hello.md"]),
            (&["!main", "**"], &["main", "x/y"], &[]),
        ];
        for (patterns, yes, no) in table {
            let f = filter(patterns);
            for name in *yes {
                assert!(f.matches(name), "{patterns:?} should match {name:?}");
            }
            for name in *no {
                assert!(!f.matches(name), "{patterns:?} should not match {name:?}");
            }
        }
    }

    #[test]
    fn bad_patterns_are_errors_not_panics() {
        for bad in ["", "!", "[", "[]", "v[1-", "[a-Z]", "[9-0]", "[a.b]", "x\\", "[!a]"] {
            assert!(Filter::compile(&[bad.to_string()]).is_err(), "{bad:?}");
        }
        let only_negations = ["!main".to_string(), "!release/*".to_string()];
        assert!(
            check_patterns(&only_negations).unwrap_err().to_string().contains("needs at least one pattern without")
        );
        assert!(check_patterns(&["main".to_string(), "!x".to_string()]).is_ok());
        assert!(check_patterns(&[]).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn patterns_never_panic(p in ".{0,24}", name in "[a-z/.+?*!-]{0,16}") {
            if let Ok(f) = Filter::compile(&[p]) {
                let _ = f.matches(&name);
            }
        }
    }
}

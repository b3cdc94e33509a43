//! Resource tags for cost allocation and provenance, on everything deployer creates or
//! registers (ECR repositories, task-definition revisions, the GitHub deployment's payload):
//! `app`, `environment`, `git-sha`, `run-url`, plus the user's `resource-tags` from
//! deployer.toml and `--resource-tag KEY=VALUE`. Pure: the job's variables come in through a
//! function the edge passes.
//!
//! The job's environment is hostile input: values taken from it are cut down to the characters
//! and length AWS accepts rather than trusted; user tags that break AWS's rules are refused with
//! the rule named.

use std::collections::BTreeMap;

/// The keys deployer sets itself; a user tag may not redefine them.
pub const STANDARD_KEYS: [&str; 4] = ["app", "environment", "git-sha", "run-url"];
/// ECS and ECR take at most 50 tags per resource.
pub const MAX_TAGS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("resource tag {key:?}: {reason}")]
pub struct TagError {
    pub key: String,
    pub reason: String,
}

/// Characters AWS allows in tag keys and values: letters, digits, spaces and `_ . : / = + - @`.
fn allowed(c: char) -> bool {
    c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c)
}

/// A value from the environment made acceptable: disallowed characters dropped, at most 256.
pub fn sanitize(value: &str) -> String {
    value.chars().filter(|c| allowed(*c)).take(256).collect()
}

/// A user tag, checked against AWS's rules.
pub fn check(key: &str, value: &str) -> Result<(), TagError> {
    let bad = |reason: &str| TagError { key: key.to_string(), reason: reason.to_string() };
    if key.is_empty() || key.chars().count() > 128 {
        return Err(bad("keys are 1 to 128 characters"));
    }
    if value.chars().count() > 256 {
        return Err(bad("values are at most 256 characters"));
    }
    if !key.chars().chain(value.chars()).all(allowed) {
        return Err(bad("keys and values hold only letters, digits, spaces and _ . : / = + - @"));
    }
    if key.contains('=') {
        return Err(bad("deployer reads tags as KEY=VALUE, so keys hold no ="));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(bad("the aws: prefix is reserved for AWS"));
    }
    if STANDARD_KEYS.contains(&key) {
        return Err(bad("deployer sets this tag itself"));
    }
    Ok(())
}

/// `KEY=VALUE` of `--resource-tag`.
pub fn parse_flag(input: &str) -> Result<(String, String), TagError> {
    let (k, v) = input
        .split_once('=')
        .ok_or_else(|| TagError { key: input.to_string(), reason: "expected KEY=VALUE".into() })?;
    check(k, v)?;
    Ok((k.to_string(), v.to_string()))
}

/// The tags of one run: the standard ones, then `--resource-tag` pairs (deployer.toml's come
/// first among them, so a flag's pair of the same key wins). `var` reads the job's variables.
pub fn from_flags(
    flags: &[String],
    app: Option<&str>,
    environment: Option<&str>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, TagError> {
    let mut user = BTreeMap::new();
    for f in flags {
        let (k, v) = parse_flag(f)?;
        user.insert(k, v);
    }
    resource_tags(app, environment, &user, var)
}

/// The run's page, from the Actions variables: `$GITHUB_SERVER_URL/$GITHUB_REPOSITORY/actions/runs/$GITHUB_RUN_ID`.
pub fn run_url(var: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let server = var("GITHUB_SERVER_URL").unwrap_or_else(|| "https://github.com".into());
    let (repo, run) = (var("GITHUB_REPOSITORY")?, var("GITHUB_RUN_ID")?);
    Some(format!("{}/{repo}/actions/runs/{run}", server.trim_end_matches('/')))
}

/// The tags of one release: the standard ones (those known), then the user's. `var` reads
/// the process environment (a parameter, so tests need not set it).
pub fn resource_tags(
    app: Option<&str>,
    environment: Option<&str>,
    user: &BTreeMap<String, String>,
    var: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, TagError> {
    let mut tags: Vec<(String, String)> = Vec::new();
    let mut push = |k: &str, v: Option<String>| {
        if let Some(v) = v.map(|v| sanitize(&v)).filter(|v| !v.is_empty()) {
            tags.push((k.to_string(), v));
        }
    };
    push("app", app.map(str::to_string));
    push("environment", environment.map(str::to_string));
    push("git-sha", var("GITHUB_SHA"));
    push("run-url", run_url(var));
    for (k, v) in user {
        check(k, v)?;
        tags.push((k.clone(), v.clone()));
    }
    if tags.len() > MAX_TAGS {
        return Err(TagError { key: "(all)".into(), reason: format!("{} tags; AWS allows {MAX_TAGS}", tags.len()) });
    }
    Ok(tags)
}

/// Merge `tags` into a task definition's `tags` (ECS's `[{"key","value"}]`): ours replace
/// the template's of the same key, the template's others stay.
pub fn apply_to_taskdef(body: &mut serde_json::Map<String, serde_json::Value>, tags: &[(String, String)]) {
    if tags.is_empty() {
        return;
    }
    let mut merged: Vec<serde_json::Value> = body
        .get("tags")
        .and_then(|t| t.as_array())
        .map(|a| {
            a.iter()
                .filter(|t| !tags.iter().any(|(k, _)| t.get("key").and_then(|v| v.as_str()) == Some(k)))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    merged.extend(tags.iter().map(|(k, v)| serde_json::json!({"key": k, "value": v})));
    body.insert("tags".into(), serde_json::Value::Array(merged));
}

/// As a JSON object, for the GitHub deployment's payload.
pub fn as_object(tags: &[(String, String)]) -> serde_json::Value {
    serde_json::Value::Object(tags.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_standard_tags_come_from_the_release_and_the_job() {
        let job = env(&[("GITHUB_SHA", "0123abcd"), ("GITHUB_REPOSITORY", "octo-org/shop"), ("GITHUB_RUN_ID", "4242")]);
        let user = BTreeMap::from([("team".to_string(), "payments".to_string())]);
        let tags = resource_tags(Some("shop"), Some("production"), &user, &job).unwrap();
        assert_eq!(
            tags,
            [
                ("app", "shop"),
                ("environment", "production"),
                ("git-sha", "0123abcd"),
                ("run-url", "https://github.com/octo-org/shop/actions/runs/4242"),
                ("team", "payments"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        // At a terminal there is no run and no sha: those tags are left out.
        let none = resource_tags(Some("shop"), None, &BTreeMap::new(), &env(&[])).unwrap();
        assert_eq!(none, [("app".to_string(), "shop".to_string())]);
    }

    #[test]
    fn hostile_job_values_are_cut_down_and_bad_user_tags_refused() {
        let job = env(&[
            ("GITHUB_SHA", "abc\n::set-output name=x::y<script>"),
            ("GITHUB_REPOSITORY", "o/r"),
            ("GITHUB_RUN_ID", "1"),
        ]);
        let tags = resource_tags(None, None, &BTreeMap::new(), &job).unwrap();
        assert_eq!(tags[0], ("git-sha".to_string(), "abc::set-output name=x::yscript".to_string()));
        assert_eq!(sanitize(&"x".repeat(300)).len(), 256);
        for (k, v, why) in [
            ("aws:team", "x", "reserved"),
            ("app", "x", "sets this tag itself"),
            ("", "x", "1 to 128"),
            ("team", "a\"b", "only letters"),
            ("team", &"v".repeat(257), "at most 256"),
        ] {
            let err = check(k, v).unwrap_err().to_string();
            assert!(err.contains(why), "{k}={v}: {err}");
        }
        assert_eq!(parse_flag("cost-center=42").unwrap(), ("cost-center".into(), "42".into()));
        assert_eq!(parse_flag("k=a=b").unwrap(), ("k".into(), "a=b".into()), "values may hold =");
        assert!(check("a=b", "c").unwrap_err().to_string().contains("keys hold no ="));
        let flags = ["team=a".to_string(), "team=b".to_string()];
        let tags = from_flags(&flags, Some("shop"), None, &env(&[])).unwrap();
        assert_eq!(
            tags,
            [("app", "shop"), ("team", "b")].map(|(k, v)| (k.to_string(), v.to_string())),
            "the last wins"
        );
        assert!(parse_flag("novalue").unwrap_err().to_string().contains("KEY=VALUE"));
        let many: BTreeMap<String, String> = (0..50).map(|i| (format!("k{i}"), "v".to_string())).collect();
        assert!(resource_tags(Some("shop"), None, &many, &env(&[])).unwrap_err().to_string().contains("51 tags"));
    }

    #[test]
    fn ours_replace_the_templates_tags_of_the_same_key_only() {
        let mut body =
            json!({"family": "shop", "tags": [{"key": "git-sha", "value": "old"}, {"key": "team", "value": "a"}]});
        let tags = vec![("git-sha".to_string(), "new".to_string()), ("app".to_string(), "shop".to_string())];
        apply_to_taskdef(body.as_object_mut().unwrap(), &tags);
        assert_eq!(
            body["tags"],
            json!([{"key": "team", "value": "a"}, {"key": "git-sha", "value": "new"}, {"key": "app", "value": "shop"}])
        );
        assert_eq!(as_object(&tags), json!({"git-sha": "new", "app": "shop"}));
    }
}

//! Releases that pin their configuration: which version of each SSM parameter and Secrets
//! Manager secret a task definition reads (the release record), Secrets Manager references
//! pinned to the current version id (`--pin-secrets`: `ARN:json-key::VERSION-ID`), and the
//! warning `deployer rollback` gives when what a revision references changed after it was
//! registered — rolling back the task definition does not roll back a parameter. Metadata
//! only (DescribeParameters, DescribeSecret, ListSecretVersionIds): never a value.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use serde_json::Value;

use super::metadata::{self, Metadata, Reference, format_epoch};
use super::refs::Target;
use super::template::TaskDefinition;

/// One reference's version, for the release record.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ConfigVersion {
    pub container: String,
    /// The variable (or log option) the value lands in.
    pub name: String,
    /// `ssm` or `secretsmanager`.
    pub source: &'static str,
    /// The parameter name, or the secret's name.
    pub reference: String,
    /// The parameter's version number, or the secret's version id.
    pub version: Option<String>,
    /// The version is fixed in the task definition (a pinned secret), so a later change does
    /// not reach tasks of this revision.
    pub pinned: bool,
    pub last_changed: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("--pin-secrets: cannot pin {} reference{}:\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct PinError(pub Vec<String>);

/// The `json-key`, `version-stage` and `version-id` parts of a Secrets Manager `valueFrom`
/// (`arn:…:secret:NAME[:json-key[:version-stage[:version-id]]]`), and the ARN before them.
fn secret_parts(value_from: &str) -> Option<(&str, [&str; 3])> {
    let at = value_from.find(":secret:")? + ":secret:".len();
    let rest = &value_from[at..];
    let mut parts = rest.splitn(4, ':');
    let name = parts.next()?;
    let extra = [parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or("")];
    Some((&value_from[..at + name.len()], extra))
}

/// The version id a `valueFrom` is pinned to, if any.
pub fn pinned_version(value_from: &str) -> Option<&str> {
    secret_parts(value_from).map(|(_, p)| p[2]).filter(|v| !v.is_empty())
}

/// `valueFrom` pinned to `version_id`; `None` when it already names a stage or a version
/// (the template's choice wins).
pub fn pinned_value_from(value_from: &str, version_id: &str) -> Option<String> {
    let (arn, [key, stage, version]) = secret_parts(value_from)?;
    if !stage.is_empty() || !version.is_empty() {
        return None;
    }
    Some(format!("{arn}:{key}::{version_id}"))
}

/// Rewrite every unpinned Secrets Manager reference (container `secrets` and log-driver
/// `secretOptions`) to the secret's AWSCURRENT version id. Returns how many were pinned.
pub fn pin(td: &TaskDefinition, meta: &Metadata) -> Result<(TaskDefinition, usize), PinError> {
    let mut out = td.clone();
    let mut problems = Vec::new();
    let mut pinned = 0;
    let Some(Value::Array(containers)) = out.body.get_mut("containerDefinitions") else { return Ok((out, 0)) };
    for c in containers.iter_mut() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        let mut lists: Vec<&mut Vec<Value>> = Vec::new();
        let Some(obj) = c.as_object_mut() else { continue };
        let (secrets, log) = split_two(obj);
        lists.extend(secrets);
        lists.extend(log);
        for entry in lists.into_iter().flatten() {
            let variable = entry.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
            let Some(value_from) = entry.get("valueFrom").and_then(Value::as_str).map(str::to_string) else { continue };
            let Ok(Target::Secret { id, .. }) = super::refs::parse_value_from(&value_from) else { continue };
            let current = match meta.secrets.get(&id) {
                Some(Ok(Some(s))) => s.current_version_id.clone(),
                Some(Err(e)) => {
                    problems.push(format!("container {name}, {variable}: {e}"));
                    continue;
                }
                _ => {
                    problems.push(format!("container {name}, {variable}: secret {id} does not exist"));
                    continue;
                }
            };
            let Some(version) = current else {
                problems.push(format!("container {name}, {variable}: secret {id} has no AWSCURRENT version to pin"));
                continue;
            };
            if let Some(p) = pinned_value_from(&value_from, &version) {
                entry["valueFrom"] = Value::String(p);
                pinned += 1;
            }
        }
    }
    if problems.is_empty() { Ok((out, pinned)) } else { Err(PinError(problems)) }
}

/// The container's `secrets` list and its log driver's `secretOptions`, both mutable.
fn split_two(obj: &mut serde_json::Map<String, Value>) -> (Option<&mut Vec<Value>>, Option<&mut Vec<Value>>) {
    let mut secrets = None;
    let mut log = None;
    for (k, v) in obj.iter_mut() {
        match k.as_str() {
            "secrets" => secrets = v.as_array_mut(),
            "logConfiguration" => log = v.get_mut("secretOptions").and_then(Value::as_array_mut),
            _ => {}
        }
    }
    (secrets, log)
}

/// The release record: each reference with the version tasks of this revision read.
pub fn record(refs: &[Reference], meta: &Metadata) -> Vec<ConfigVersion> {
    let mut out = Vec::new();
    for r in refs {
        let entry = |source, reference: String, version: Option<String>, pinned, last_changed| ConfigVersion {
            container: r.container.clone(),
            name: r.variable.clone(),
            source,
            reference,
            version,
            pinned,
            last_changed,
        };
        match &r.target {
            Ok(Target::Parameter { name, .. }) => {
                let p = meta.parameters.get(name);
                out.push(entry(
                    "ssm",
                    name.clone(),
                    p.map(|p| p.version.to_string()),
                    false,
                    p.and_then(|p| p.last_modified.clone()),
                ));
            }
            Ok(Target::Secret { id, .. }) => {
                let s = match meta.secrets.get(id) {
                    Some(Ok(Some(s))) => Some(s),
                    _ => None,
                };
                let reference = s.map(|s| s.name.clone()).unwrap_or_else(|| id.clone());
                match pinned_version(&r.value_from) {
                    Some(v) => out.push(entry("secretsmanager", reference, Some(v.to_string()), true, None)),
                    None => out.push(entry(
                        "secretsmanager",
                        reference,
                        s.and_then(|s| s.current_version_id.clone()),
                        false,
                        s.and_then(|s| s.last_changed.clone()),
                    )),
                }
            }
            Err(_) => {}
        }
    }
    out
}

/// What a secret's versions look like now (ListSecretVersionIds, deprecated ones included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretVersions {
    /// When the AWSCURRENT version was created (epoch seconds).
    pub current_created: Option<f64>,
    pub ids: Vec<String>,
}

/// Warnings for `deployer rollback`: each reference of the revision it goes back to whose
/// value changed after that revision was registered (`registered_at`, epoch seconds).
pub fn changed_since(
    refs: &[Reference],
    meta: &Metadata,
    versions: &BTreeMap<String, SecretVersions>,
    registered_at: f64,
    revision: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in refs {
        let who = format!("{} (container {})", r.variable, r.container);
        match &r.target {
            Ok(Target::Parameter { name, .. }) => {
                let Some(p) = meta.parameters.get(name) else {
                    out.push(format!(
                        "{who}: parameter {name} no longer exists; the rolled-back tasks will fail to start"
                    ));
                    continue;
                };
                if p.last_modified_epoch.is_some_and(|m| m > registered_at) {
                    out.push(format!(
                        "{who}: parameter {name} changed after {revision} was registered (now version {}, modified {}); the rolled-back tasks read its current value, not the one {revision} was released with",
                        p.version,
                        p.last_modified.as_deref().unwrap_or("?")
                    ));
                }
            }
            Ok(Target::Secret { id, .. }) => {
                let Some(Ok(Some(s))) = meta.secrets.get(id) else {
                    out.push(format!("{who}: secret {id} no longer exists; the rolled-back tasks will fail to start"));
                    continue;
                };
                let v = versions.get(id).cloned().unwrap_or_default();
                match pinned_version(&r.value_from) {
                    Some(pinned) if !v.ids.is_empty() && !v.ids.iter().any(|i| i == pinned) => out.push(format!(
                        "{who}: secret {} no longer has the version {pinned} that {revision} is pinned to; the rolled-back tasks will fail to start",
                        s.name
                    )),
                    Some(_) => {}
                    None => {
                        let changed = v.current_created.or(s.last_changed_epoch);
                        if changed.is_some_and(|c| c > registered_at) {
                            out.push(format!(
                                "{who}: secret {}'s current version ({}) was created after {revision} was registered{}; the rolled-back tasks read it, not the value {revision} was released with (--pin-secrets pins releases to a version)",
                                s.name,
                                s.current_version_id.as_deref().unwrap_or("?"),
                                v.current_created.and_then(format_epoch).map(|t| format!(" ({t})")).unwrap_or_default()
                            ));
                        }
                    }
                }
            }
            Err(_) => {}
        }
    }
    out
}

/// `--pin-secrets`: look up each secret (DescribeSecret) and pin its references.
pub async fn pin_secrets(config: &SdkConfig, td: &TaskDefinition) -> Result<(TaskDefinition, usize), PinError> {
    let refs = metadata::references(td);
    let (_, secrets) = metadata::targets(&refs);
    let meta = metadata::fetch(config, &[], &secrets).await;
    pin(td, &meta)
}

/// The release record of `td` (metadata calls only).
pub async fn configuration(config: &SdkConfig, td: &TaskDefinition) -> Vec<ConfigVersion> {
    let refs = metadata::references(td);
    let (params, secrets) = metadata::targets(&refs);
    let meta = metadata::fetch(config, &params, &secrets).await;
    if let Some(e) = &meta.parameters_error {
        tracing::warn!("the release record has no parameter versions: {e}");
    }
    record(&refs, &meta)
}

/// The rollback warnings for `td`, registered at `registered_at`, named `revision`.
pub async fn rollback_warnings(
    config: &SdkConfig,
    td: &TaskDefinition,
    registered_at: f64,
    revision: &str,
) -> Vec<String> {
    let refs = metadata::references(td);
    let (params, secrets) = metadata::targets(&refs);
    let meta = metadata::fetch(config, &params, &secrets).await;
    let mut warnings = Vec::new();
    if let Some(e) = &meta.parameters_error {
        warnings.push(format!("cannot tell whether parameters changed since {revision}: {e}"));
    }
    let sm = aws_sdk_secretsmanager::Client::new(config);
    let mut versions = BTreeMap::new();
    for id in &secrets {
        let Some(Ok(Some(_))) = meta.secrets.get(id) else { continue };
        let mut found = SecretVersions::default();
        let mut pages = sm.list_secret_version_ids().secret_id(id).include_deprecated(true).into_paginator().send();
        while let Some(page) = pages.next().await {
            let Ok(page) = page else { break };
            for v in page.versions() {
                let Some(vid) = v.version_id() else { continue };
                found.ids.push(vid.to_string());
                if v.version_stages().iter().any(|s| s == "AWSCURRENT") {
                    found.current_created = v.created_date().map(|d| d.as_secs_f64());
                }
            }
        }
        versions.insert(id.clone(), found);
    }
    warnings.extend(changed_since(&refs, &meta, &versions, registered_at, revision));
    warnings
}

/// After `deployer rollback` to `to`: describe it and warn (annotations, also returned)
/// about every referenced parameter or secret that changed after it was registered.
pub async fn warn_after_rollback(config: &SdkConfig, to: &str, runner: &crate::github::runner::Runner) -> Vec<String> {
    let ecs = crate::aws::ecs_json::EcsJson::new(config);
    let (td, registered) = match super::ecs::describe(&ecs, to).await {
        Ok(found) => found,
        Err(e) => {
            let w = format!("cannot tell whether {to}'s parameters and secrets changed since it was registered: {e}");
            runner.annotate(crate::github::runner::Level::Warning, &w, None);
            return vec![w];
        }
    };
    let Some(at) = registered.registered_at else { return Vec::new() };
    let revision = format!("{}:{}", registered.family, registered.revision);
    let warnings = rollback_warnings(config, &td, at, &revision).await;
    for w in &warnings {
        runner.annotate(crate::github::runner::Level::Warning, w, None);
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::taskdef::metadata::{ParameterMeta, SecretMeta, references};
    use serde_json::json;

    const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111111111111:secret:api-AbCdEf";

    #[test]
    fn value_froms_are_pinned_unless_they_name_a_stage_or_version() {
        let table = [
            (SECRET.to_string(), Some(format!("{SECRET}:::v2"))),
            (format!("{SECRET}:password::"), Some(format!("{SECRET}:password::v2"))),
            (format!("{SECRET}:password"), Some(format!("{SECRET}:password::v2"))),
            (format!("{SECRET}:password:AWSPREVIOUS:"), None),
            (format!("{SECRET}:password::v1"), None),
            ("arn:aws:ssm:us-east-1:111111111111:parameter/x".to_string(), None),
        ];
        for (input, want) in table {
            assert_eq!(pinned_value_from(&input, "v2"), want, "{input}");
        }
        assert_eq!(pinned_version(&format!("{SECRET}:k::v1")), Some("v1"));
        assert_eq!(pinned_version(&format!("{SECRET}:k::")), None);
    }

    fn sample() -> (TaskDefinition, Metadata) {
        let td = TaskDefinition::from_value(
            json!({"family": "f", "containerDefinitions": [{"name": "web",
                "secrets": [{"name": "DB", "valueFrom": "/prod/db"},
                            {"name": "API", "valueFrom": format!("{SECRET}:key::")},
                            {"name": "OLD", "valueFrom": format!("{SECRET}:key::v0")}],
                "logConfiguration": {"logDriver": "awsfirelens", "secretOptions": [{"name": "apikey", "valueFrom": SECRET}]}}]}),
            "t",
        )
        .unwrap();
        let mut meta = Metadata::default();
        meta.parameters.insert(
            "/prod/db".into(),
            ParameterMeta {
                name: "/prod/db".into(),
                kind: "SecureString".into(),
                version: 4,
                last_modified: Some("2026-01-02T00:00:00Z".into()),
                last_modified_epoch: Some(2000.0),
                key_id: None,
            },
        );
        meta.secrets.insert(
            SECRET.into(),
            Ok(Some(SecretMeta {
                arn: SECRET.into(),
                name: "api".into(),
                current_version_id: Some("v2".into()),
                versions: Default::default(),
                last_changed: None,
                last_changed_epoch: Some(1500.0),
                kms_key_id: None,
            })),
        );
        (td, meta)
    }

    #[test]
    fn pinning_rewrites_secrets_and_log_options_and_keeps_explicit_versions() {
        let (td, meta) = sample();
        let (pinned, n) = pin(&td, &meta).unwrap();
        assert_eq!(n, 2);
        let c = &pinned.body["containerDefinitions"][0];
        assert_eq!(c["secrets"][0]["valueFrom"], "/prod/db");
        assert_eq!(c["secrets"][1]["valueFrom"], format!("{SECRET}:key::v2"));
        assert_eq!(c["secrets"][2]["valueFrom"], format!("{SECRET}:key::v0"));
        assert_eq!(c["logConfiguration"]["secretOptions"][0]["valueFrom"], format!("{SECRET}:::v2"));
        let mut missing = meta;
        missing.secrets.insert(SECRET.into(), Ok(None));
        let err = pin(&td, &missing).unwrap_err().to_string();
        assert!(err.contains("container web, API: secret") && err.contains("does not exist"), "{err}");
    }

    #[test]
    fn the_record_lists_versions_and_what_is_pinned() {
        let (td, meta) = sample();
        let rec = record(&references(&td), &meta);
        let flat: Vec<(&str, &str, Option<&str>, bool)> =
            rec.iter().map(|c| (c.name.as_str(), c.source, c.version.as_deref(), c.pinned)).collect();
        assert_eq!(
            flat,
            [
                ("DB", "ssm", Some("4"), false),
                ("API", "secretsmanager", Some("v2"), false),
                ("OLD", "secretsmanager", Some("v0"), true),
                ("apikey", "secretsmanager", Some("v2"), false)
            ]
        );
    }

    #[test]
    fn rollback_warns_about_what_changed_after_registration() {
        let (td, meta) = sample();
        let refs = references(&td);
        let mut versions = BTreeMap::new();
        versions.insert(
            SECRET.to_string(),
            SecretVersions { current_created: Some(2500.0), ids: vec!["v1".into(), "v2".into()] },
        );
        // Registered at 1000: the parameter (2000) and the secret's current version (2500) are newer;
        // OLD is pinned to v0, which is gone.
        let w = changed_since(&refs, &meta, &versions, 1000.0, "f:3");
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(
            w[0].starts_with("DB (container web): parameter /prod/db changed after f:3 was registered (now version 4"),
            "{}",
            w[0]
        );
        assert!(
            w[1].starts_with("API (container web): secret api's current version (v2) was created after f:3"),
            "{}",
            w[1]
        );
        assert!(w[2].contains("OLD (container web): secret api no longer has the version v0"), "{}", w[2]);
        // Registered at 3000: nothing changed since, and a pin to an existing version is quiet.
        versions.get_mut(SECRET).unwrap().ids.push("v0".into());
        assert_eq!(changed_since(&refs, &meta, &versions, 3000.0, "f:3"), Vec::<String>::new());
    }
}

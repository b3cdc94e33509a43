//! The secret references a task definition carries, and their *metadata*: DescribeParameters
//! (type, KMS key, version, last change) and DescribeSecret (KMS key, the version id labelled
//! AWSCURRENT, last change). Verification, the permission preflight, pinning, the release
//! record and the rollback warning all read this; none of them ever reads a value.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterStringFilter;
use serde_json::Value;

use super::refs::{RefError, Target, parse_value_from};
use super::template::TaskDefinition;

/// One `valueFrom` in the task definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub container: String,
    /// The variable (secret name), `secretOptions` name, or `repositoryCredentials`.
    pub variable: String,
    pub value_from: String,
    pub target: Result<Target, RefError>,
}

/// Every reference, in container order: `secrets`, the log driver's `secretOptions`, and
/// `repositoryCredentials.credentialsParameter` (a private registry's login, a secret too).
pub fn references(td: &TaskDefinition) -> Vec<Reference> {
    let mut out = Vec::new();
    for c in td.containers() {
        let container = c.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
        let log_secrets = c.get("logConfiguration").and_then(|l| l.get("secretOptions")).and_then(Value::as_array);
        let entries = c.get("secrets").and_then(Value::as_array).into_iter().flatten();
        for s in entries.chain(log_secrets.into_iter().flatten()) {
            let variable = s.get("name").and_then(Value::as_str).unwrap_or("?").to_string();
            let value_from = s.get("valueFrom").and_then(Value::as_str).unwrap_or_default().to_string();
            out.push(reference(&container, variable, value_from));
        }
        if let Some(p) =
            c.get("repositoryCredentials").and_then(|r| r.get("credentialsParameter")).and_then(Value::as_str)
        {
            out.push(reference(&container, "repositoryCredentials".into(), p.to_string()));
        }
    }
    out
}

fn reference(container: &str, variable: String, value_from: String) -> Reference {
    let target = if value_from.is_empty() {
        Err(RefError { input: String::new(), reason: "no valueFrom".into() })
    } else {
        parse_value_from(&value_from)
    };
    Reference { container: container.to_string(), variable, value_from, target }
}

/// A Parameter Store parameter's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ParameterMeta {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: i64,
    /// RFC 3339.
    pub last_modified: Option<String>,
    #[serde(skip)]
    pub last_modified_epoch: Option<f64>,
    /// The KMS key of a SecureString (`alias/aws/ssm` when the default).
    #[serde(skip)]
    pub key_id: Option<String>,
}

/// A Secrets Manager secret's metadata.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SecretMeta {
    pub arn: String,
    pub name: String,
    /// The version labelled AWSCURRENT: what an unpinned reference reads.
    pub current_version_id: Option<String>,
    /// Version id → its staging labels.
    #[serde(skip)]
    pub versions: BTreeMap<String, Vec<String>>,
    pub last_changed: Option<String>,
    #[serde(skip)]
    pub last_changed_epoch: Option<f64>,
    /// None: the account's default key (`aws/secretsmanager`).
    #[serde(skip)]
    pub kms_key_id: Option<String>,
}

/// What Parameter Store and Secrets Manager said about the references.
#[derive(Debug, Default)]
pub struct Metadata {
    /// Parameters that exist, by name.
    pub parameters: BTreeMap<String, ParameterMeta>,
    /// DescribeParameters failed as a whole.
    pub parameters_error: Option<String>,
    /// By secret id (ARN without a JSON-key suffix): Ok(None) when it does not exist.
    pub secrets: BTreeMap<String, Result<Option<SecretMeta>, String>>,
}

/// Epoch seconds as RFC 3339 (whole seconds).
pub fn format_epoch(secs: f64) -> Option<String> {
    aws_sdk_ssm::primitives::DateTime::from_secs(secs.floor() as i64)
        .fmt(aws_sdk_ssm::primitives::DateTimeFormat::DateTime)
        .ok()
}

/// Look up every parameter name and secret id (metadata only).
pub async fn fetch(config: &SdkConfig, parameter_names: &[String], secret_ids: &[String]) -> Metadata {
    let mut meta = Metadata::default();
    match describe_parameters(config, parameter_names).await {
        Ok(found) => meta.parameters = found,
        Err(e) => meta.parameters_error = Some(e),
    }
    let sm = aws_sdk_secretsmanager::Client::new(config);
    for id in secret_ids {
        let answer = match sm.describe_secret().secret_id(id).send().await {
            Ok(out) => {
                let versions: BTreeMap<String, Vec<String>> =
                    out.version_ids_to_stages().cloned().unwrap_or_default().into_iter().collect();
                let current = versions
                    .iter()
                    .find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT"))
                    .map(|(v, _)| v.clone());
                let changed = out.last_changed_date().or(out.created_date()).map(|d| d.as_secs_f64());
                Ok(Some(SecretMeta {
                    arn: out.arn().unwrap_or(id).to_string(),
                    name: out.name().unwrap_or_default().to_string(),
                    current_version_id: current,
                    versions,
                    last_changed: changed.and_then(format_epoch),
                    last_changed_epoch: changed,
                    kms_key_id: out.kms_key_id().map(str::to_string),
                }))
            }
            Err(e) => match aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&e) {
                Some("ResourceNotFoundException") => Ok(None),
                _ => Err(format!("cannot describe secret {id}: {}", crate::aws::auth::sdk_message(&e))),
            },
        };
        meta.secrets.insert(id.clone(), answer);
    }
    meta
}

/// DescribeParameters for `names`, ten at a time: the ones that exist.
async fn describe_parameters(config: &SdkConfig, names: &[String]) -> Result<BTreeMap<String, ParameterMeta>, String> {
    let ssm = aws_sdk_ssm::Client::new(config);
    let mut found = BTreeMap::new();
    for chunk in names.chunks(10) {
        let filter = ParameterStringFilter::builder()
            .key("Name")
            .option("Equals")
            .set_values(Some(chunk.to_vec()))
            .build()
            .map_err(|e| e.to_string())?;
        let mut pages = ssm.describe_parameters().parameter_filters(filter).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| format!("cannot list parameters: {}", crate::aws::auth::sdk_message(&e)))?;
            for p in page.parameters() {
                let Some(name) = p.name() else { continue };
                let modified = p.last_modified_date().map(|d| d.as_secs_f64());
                found.insert(
                    name.to_string(),
                    ParameterMeta {
                        name: name.to_string(),
                        kind: p.r#type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                        version: p.version(),
                        last_modified: modified.and_then(format_epoch),
                        last_modified_epoch: modified,
                        key_id: p.key_id().map(str::to_string),
                    },
                );
            }
        }
    }
    Ok(found)
}

/// The parameter names and secret ids among `refs` (deduplicated, sorted), skipping the ones
/// that did not parse.
pub fn targets(refs: &[Reference]) -> (Vec<String>, Vec<String>) {
    let mut params = std::collections::BTreeSet::new();
    let mut secrets = std::collections::BTreeSet::new();
    for r in refs {
        match &r.target {
            Ok(Target::Parameter { name, .. }) => {
                params.insert(name.clone());
            }
            Ok(Target::Secret { id, .. }) => {
                secrets.insert(id.clone());
            }
            Err(_) => {}
        }
    }
    (params.into_iter().collect(), secrets.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_come_from_secrets_log_options_and_registry_credentials() {
        let td = TaskDefinition::from_value(
            json!({"family": "f", "containerDefinitions": [
                {"name": "app", "secrets": [{"name": "DB", "valueFrom": "/prod/db"}],
                 "repositoryCredentials": {"credentialsParameter": "arn:aws:secretsmanager:us-east-1:111111111111:secret:hub-AbCdEf"}},
                {"name": "log", "logConfiguration": {"logDriver": "awsfirelens",
                    "secretOptions": [{"name": "apikey", "valueFrom": "arn:aws:ssm:us-east-1:111111111111:parameter/log/key"}]}},
                {"name": "bad", "secrets": [{"name": "X"}]}
            ]}),
            "t",
        )
        .unwrap();
        let refs = references(&td);
        let seen: Vec<(&str, &str, bool)> =
            refs.iter().map(|r| (r.container.as_str(), r.variable.as_str(), r.target.is_ok())).collect();
        assert_eq!(
            seen,
            [("app", "DB", true), ("app", "repositoryCredentials", true), ("log", "apikey", true), ("bad", "X", false)]
        );
        let (params, secrets) = targets(&refs);
        assert_eq!(params, ["/log/key", "/prod/db"]);
        assert_eq!(secrets, ["arn:aws:secretsmanager:us-east-1:111111111111:secret:hub-AbCdEf"]);
    }
}

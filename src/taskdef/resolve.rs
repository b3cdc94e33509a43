//! Expanding secret references to the `valueFrom` ARNs ECS wants, with metadata calls only:
//! DescribeParameters for `--secrets-path`, DescribeSecret for `secretsmanager:NAME`.
//! No value is ever read here.

use aws_config::SdkConfig;
use aws_sdk_ssm::types::ParameterStringFilter;

use super::refs::{RefSpec, ssm_arn, with_json_key};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("--secrets-path {path:?}: {reason}")]
    BadPath { path: String, reason: &'static str },
    #[error(
        "--secrets-path {path}: no parameters directly under it in account {account} ({region}); import them (deployer params import FILE --path {path}) or fix the path"
    )]
    NothingUnderPath { path: String, account: String, region: String },
    #[error(
        "--secret {name}: Secrets Manager has no secret {secret:?} in account {account} ({region}); create it or fix the name"
    )]
    SecretNotFound { name: String, secret: String, account: String, region: String },
    #[error("{what}: {message}")]
    Api { what: String, message: String },
}

pub struct Scope<'a> {
    pub config: &'a SdkConfig,
    pub account: &'a str,
    pub region: &'a str,
}

/// `--secrets-path` entries first (NAME = upper-cased last segment), then `--secret`s, which
/// override a path entry of the same name.
pub async fn resolve(
    scope: &Scope<'_>,
    secrets_path: Option<&str>,
    secrets: &[(String, RefSpec)],
) -> Result<Vec<(String, String)>, ResolveError> {
    let mut out: Vec<(String, String)> = Vec::new();
    if let Some(path) = secrets_path {
        for (name, arn) in under_path(scope, path).await? {
            out.push((name, arn));
        }
    }
    for (name, spec) in secrets {
        let value_from = match spec {
            RefSpec::Arn(_) => arn_text(spec),
            RefSpec::Ssm(param) => ssm_arn(scope.region, scope.account, param),
            RefSpec::SecretsManager { name: secret, json_key } => {
                let arn = secret_arn(scope, name, secret).await?;
                with_json_key(&arn, json_key.as_deref())
            }
        };
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(existing) => existing.1 = value_from,
            None => out.push((name.clone(), value_from)),
        }
    }
    Ok(out)
}

fn arn_text(spec: &RefSpec) -> String {
    match spec {
        RefSpec::Arn(a) => format!("arn:{}:{}:{}:{}:{}", a.partition, a.service, a.region, a.account, a.resource),
        _ => String::new(),
    }
}

async fn under_path(scope: &Scope<'_>, path: &str) -> Result<Vec<(String, String)>, ResolveError> {
    let bad = |reason| ResolveError::BadPath { path: path.to_string(), reason };
    if path.trim().is_empty() {
        return Err(bad("empty; give a Parameter Store hierarchy such as /production/shop/"));
    }
    if !path.starts_with('/') {
        return Err(bad("must start with '/', e.g. /production/shop/"));
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(bad("'/' alone would take every parameter of the account; name the hierarchy"));
    }
    let filter = ParameterStringFilter::builder()
        .key("Path")
        .option("OneLevel")
        .values(trimmed)
        .build()
        .map_err(|e| ResolveError::Api { what: "DescribeParameters".into(), message: e.to_string() })?;
    let ssm = aws_sdk_ssm::Client::new(scope.config);
    let mut pages = ssm.describe_parameters().parameter_filters(filter).into_paginator().send();
    let mut found = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| ResolveError::Api {
            what: format!("--secrets-path {path}: DescribeParameters"),
            message: aws_sdk_ssm::error::DisplayErrorContext(&e).to_string(),
        })?;
        for p in page.parameters() {
            let Some(name) = p.name() else { continue };
            let var = name.rsplit('/').next().unwrap_or(name).to_uppercase().replace(['-', '.'], "_");
            found.push((var, ssm_arn(scope.region, scope.account, name)));
        }
    }
    if found.is_empty() {
        return Err(ResolveError::NothingUnderPath {
            path: format!("{trimmed}/"),
            account: scope.account.to_string(),
            region: scope.region.to_string(),
        });
    }
    found.sort();
    Ok(found)
}

async fn secret_arn(scope: &Scope<'_>, var: &str, secret: &str) -> Result<String, ResolveError> {
    let out = aws_sdk_secretsmanager::Client::new(scope.config).describe_secret().secret_id(secret).send().await;
    match out {
        Ok(o) => o.arn().map(str::to_string).ok_or_else(|| ResolveError::Api {
            what: format!("--secret {var}"),
            message: "DescribeSecret returned no ARN".into(),
        }),
        Err(e)
            if aws_sdk_secretsmanager::error::ProvideErrorMetadata::code(&e) == Some("ResourceNotFoundException") =>
        {
            Err(ResolveError::SecretNotFound {
                name: var.to_string(),
                secret: secret.to_string(),
                account: scope.account.to_string(),
                region: scope.region.to_string(),
            })
        }
        Err(e) => Err(ResolveError::Api {
            what: format!("--secret {var}: DescribeSecret {secret}"),
            message: aws_sdk_secretsmanager::error::DisplayErrorContext(&e).to_string(),
        }),
    }
}

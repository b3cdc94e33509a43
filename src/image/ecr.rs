//! The ECR control plane as push and promote need it: the repository (checked, or created with
//! `--create-repository`) and the registry credential from `GetAuthorizationToken`. The token is
//! a credential: it is masked in Actions and never logged or printed.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use base64::Engine as _;

use super::ImageError;
use crate::aws::auth::sdk_message;

/// A repository as ECR describes it.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com/<name>`
    pub uri: String,
    pub registry_id: String,
    pub immutable: bool,
}

/// What `--create-repository` creates.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub immutable: bool,
    pub scan_on_push: bool,
    /// Tags of the new repository.
    pub tags: Vec<(String, String)>,
    /// The lifecycle policy document to put on the new repository.
    pub lifecycle_policy: Option<String>,
}

/// The repository, created when missing and `create` is given; otherwise a clear error.
pub async fn repository(
    client: &Client,
    sts: &aws_sdk_sts::Client,
    name: &str,
    create: Option<CreateOptions>,
) -> Result<Repository, ImageError> {
    match client.describe_repositories().repository_names(name).send().await {
        Ok(out) => {
            let r = out
                .repositories()
                .first()
                .ok_or_else(|| ImageError::Ecr(format!("DescribeRepositories returned nothing for {name}")))?;
            Ok(to_repository(name, r))
        }
        Err(e) if e.as_service_error().is_some_and(|s| s.is_repository_not_found_exception()) => {
            let Some(opts) = create else {
                let (account, region) = whoami(sts, client).await;
                return Err(ImageError::Ecr(format!(
                    "repository {name} does not exist in account {account}, region {region}: create it (Terraform, `aws ecr create-repository --repository-name {name}`) or pass --create-repository"
                )));
            };
            let out = client
                .create_repository()
                .repository_name(name)
                .image_tag_mutability(if opts.immutable {
                    ImageTagMutability::Immutable
                } else {
                    ImageTagMutability::Mutable
                })
                .image_scanning_configuration(
                    ImageScanningConfiguration::builder().scan_on_push(opts.scan_on_push).build(),
                )
                .set_tags(tags(&opts.tags))
                .send()
                .await
                .map_err(|e| ImageError::Ecr(format!("cannot create repository {name}: {}", sdk_message(&e))))?;
            let r =
                out.repository().ok_or_else(|| ImageError::Ecr("CreateRepository returned no repository".into()))?;
            tracing::info!(
                "created repository {name} ({})",
                if opts.immutable { "immutable tags" } else { "mutable tags" }
            );
            if let Some(policy) = &opts.lifecycle_policy {
                client
                    .put_lifecycle_policy()
                    .repository_name(name)
                    .lifecycle_policy_text(policy)
                    .send()
                    .await
                    .map_err(|e| {
                        ImageError::Ecr(format!(
                            "created repository {name}, but its lifecycle policy was refused: {}",
                            sdk_message(&e)
                        ))
                    })?;
                tracing::info!("repository {name}: lifecycle policy set");
            }
            Ok(to_repository(name, r))
        }
        Err(e) => Err(ImageError::Ecr(format!("cannot describe repository {name}: {}", sdk_message(&e)))),
    }
}

fn tags(tags: &[(String, String)]) -> Option<Vec<aws_sdk_ecr::types::Tag>> {
    let tags: Vec<_> =
        tags.iter().filter_map(|(k, v)| aws_sdk_ecr::types::Tag::builder().key(k).value(v).build().ok()).collect();
    (!tags.is_empty()).then_some(tags)
}

fn to_repository(name: &str, r: &aws_sdk_ecr::types::Repository) -> Repository {
    Repository {
        name: name.to_string(),
        uri: r.repository_uri().unwrap_or_default().to_string(),
        registry_id: r.registry_id().unwrap_or_default().to_string(),
        immutable: r.image_tag_mutability() == Some(&ImageTagMutability::Immutable),
    }
}

async fn whoami(sts: &aws_sdk_sts::Client, ecr: &Client) -> (String, String) {
    let account = match sts.get_caller_identity().send().await {
        Ok(out) => out.account().unwrap_or("?").to_string(),
        Err(_) => "(unknown)".to_string(),
    };
    let region = ecr.config().region().map(|r| r.to_string()).unwrap_or_default();
    (account, region)
}

/// A registry credential: the `Authorization` header value and where ECR says the registry is.
pub struct Token {
    pub header: String,
    pub proxy_endpoint: String,
    /// The secrets to mask (the token and the password inside it).
    pub secrets: Vec<String>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("proxy_endpoint", &self.proxy_endpoint).finish_non_exhaustive()
    }
}

pub async fn token(client: &Client, registry_id: Option<&str>) -> Result<Token, ImageError> {
    let mut req = client.get_authorization_token();
    if let Some(id) = registry_id {
        #[allow(deprecated)]
        {
            req = req.registry_ids(id);
        }
    }
    let out = req
        .send()
        .await
        .map_err(|e| ImageError::Ecr(format!("ecr:GetAuthorizationToken failed: {}", sdk_message(&e))))?;
    let data = out
        .authorization_data()
        .first()
        .ok_or_else(|| ImageError::Ecr("ecr:GetAuthorizationToken returned no authorization data".into()))?;
    let token = data.authorization_token().unwrap_or_default().to_string();
    let mut secrets = vec![token.clone()];
    if let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(&token)
        && let Ok(plain) = String::from_utf8(plain)
        && let Some((_, password)) = plain.split_once(':')
    {
        secrets.push(password.to_string());
    }
    Ok(Token {
        header: format!("Basic {token}"),
        proxy_endpoint: data.proxy_endpoint().unwrap_or_default().to_string(),
        secrets,
    })
}

/// `<account>.dkr.ecr.<region>.amazonaws.com` → account, for a registry host that is ECR.
pub fn ecr_account(host: &str) -> Option<&str> {
    let host = host.trim_start_matches("https://").trim_start_matches("http://");
    let (account, rest) = host.split_once('.')?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) && rest.starts_with("dkr.ecr."))
        .then_some(account)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecr_hosts_are_recognised() {
        assert_eq!(ecr_account("123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Some("123456789012"));
        assert_eq!(ecr_account("https://123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Some("123456789012"));
        assert_eq!(ecr_account("127.0.0.1:5000"), None);
        assert_eq!(ecr_account("ghcr.io"), None);
    }
}

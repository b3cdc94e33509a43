//! The ECR control plane as push and promote need it: the repository (checked, or created with
//! `--create-repository`), the registry credential from `GetAuthorizationToken`, and where that
//! credential may go ([`registry_base`]). The token is a credential: it is held as a
//! [`Secret`], masked in Actions, and never logged or printed. It goes to a real ECR host over
//! https (the one notion of that is [`EcrHost`]) or to the `--registry-endpoint` the user named,
//! nowhere else.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::types::{ImageScanningConfiguration, ImageTagMutability};
use base64::Engine as _;

use super::ImageError;
use super::registry::Secret;
use crate::aws::auth::sdk_message;
use crate::image_ref::EcrHost;

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
/// `Debug` shows only the endpoint.
#[derive(Debug)]
pub struct Token {
    pub header: Secret,
    pub proxy_endpoint: String,
    /// The secrets to mask (the token and the password inside it).
    pub secrets: Vec<Secret>,
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
    let mut secrets = vec![Secret::new(token.clone())];
    if let Ok(plain) = base64::engine::general_purpose::STANDARD.decode(&token)
        && let Ok(plain) = String::from_utf8(plain)
        && let Some((_, password)) = plain.split_once(':')
    {
        secrets.push(Secret::new(password.to_string()));
    }
    Ok(Token {
        header: Secret::new(format!("Basic {token}")),
        proxy_endpoint: data.proxy_endpoint().unwrap_or_default().to_string(),
        secrets,
    })
}

/// A registry address taken apart: the scheme (`https` when none was written) and
/// `host[:port]` (the port only when it is not the scheme's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub scheme: String,
    pub host: String,
    /// `scheme://host[:port]`
    pub url: String,
}

impl Address {
    /// `what` names the input in errors (`--registry-endpoint`, `--from`, …).
    pub fn parse(what: &str, input: &str) -> Result<Address, ImageError> {
        let trimmed = input.trim_end_matches('/');
        let with_scheme = if trimmed.contains("://") { trimmed.to_string() } else { format!("https://{trimmed}") };
        let bad = |why: &str| ImageError::Input(format!("{what} {input:?} is not a registry address ({why})"));
        let url = reqwest::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("use https://HOST[:PORT]"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials do not belong in the address"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        Ok(Address { scheme: url.scheme().to_string(), url: format!("{}://{host}", url.scheme()), host })
    }

    /// The ECR registry this is, when it is one over https; an error for an address named like
    /// ECR that is not one, or ECR over plain http.
    pub fn ecr(&self, what: &str) -> Result<Option<EcrHost>, ImageError> {
        if EcrHost::looks_like(&self.host) {
            return Err(ImageError::Trust(format!(
                "{what}: {} is named like an Amazon ECR registry but is not one (ECR registries are <account>.dkr.ecr.<region>.amazonaws.com[.cn], or <account>.dkr-ecr.<region>.on.aws); deployer sends no ECR credential there and refuses to use it — check the host for a typo",
                self.host
            )));
        }
        match EcrHost::parse(&self.host) {
            Some(_) if self.scheme != "https" => Err(ImageError::Trust(format!(
                "{what}: {} is Amazon ECR, which is reached over https only; drop the {}:// prefix",
                self.host, self.scheme
            ))),
            ecr => Ok(ecr),
        }
    }
}

/// An explicit endpoint (`flag`) that stands in for an ECR registry: any address but a
/// look-alike of ECR or ECR over http. Returns it without a trailing slash.
pub fn check_endpoint(flag: &str, endpoint: &str) -> Result<String, ImageError> {
    Address::parse(flag, endpoint)?.ecr(flag)?;
    Ok(endpoint.trim_end_matches('/').to_string())
}

/// Where push sends blobs, manifests and the ECR token: the `--registry-endpoint` the user
/// named (explicitly, so anywhere but a look-alike of ECR or ECR over http), else the registry
/// `GetAuthorizationToken` reported, which must be a real ECR host over https.
pub fn registry_base(proxy_endpoint: &str, registry_endpoint: Option<&str>) -> Result<String, ImageError> {
    if let Some(endpoint) = registry_endpoint {
        return check_endpoint("--registry-endpoint", endpoint);
    }
    if proxy_endpoint.is_empty() {
        return Err(ImageError::Ecr(
            "ecr:GetAuthorizationToken returned no proxyEndpoint; pass --registry-endpoint".into(),
        ));
    }
    let refuse = || {
        ImageError::Trust(format!(
            "ecr:GetAuthorizationToken named {proxy_endpoint} as the registry, which is not an Amazon ECR host over https; deployer sends the ECR token only to ECR, or to a --registry-endpoint you name"
        ))
    };
    let a = Address::parse("the proxyEndpoint", proxy_endpoint).map_err(|_| refuse())?;
    match a.ecr("the proxyEndpoint") {
        Ok(Some(_)) if a.scheme == "https" => Ok(a.url),
        _ => Err(refuse()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_goes_to_ecr_or_to_the_named_endpoint_only() {
        let ecr = "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com";
        let table: [(&str, Option<&str>, Result<&str, &str>); 11] = [
            (ecr, None, Ok(ecr)),
            (
                "https://123456789012.dkr-ecr.eu-west-1.on.aws",
                None,
                Ok("https://123456789012.dkr-ecr.eu-west-1.on.aws"),
            ),
            (ecr, Some("http://127.0.0.1:5000/"), Ok("http://127.0.0.1:5000")),
            (ecr, Some("https://registry.internal:8443"), Ok("https://registry.internal:8443")),
            ("http://123456789012.dkr.ecr.eu-west-1.amazonaws.com", None, Err("not an Amazon ECR host over https")),
            ("https://123456789012.dkr.ecr.attacker.test", None, Err("not an Amazon ECR host over https")),
            ("https://registry.example.com", None, Err("not an Amazon ECR host over https")),
            ("", None, Err("no proxyEndpoint")),
            (ecr, Some("http://123456789012.dkr.ecr.attacker.test:8080"), Err("named like an Amazon ECR registry")),
            (ecr, Some("http://123456789012.dkr.ecr.eu-west-1.amazonaws.com"), Err("https only")),
            (ecr, Some("ftp://x"), Err("not a registry address")),
        ];
        for (proxy, endpoint, want) in table {
            let got = registry_base(proxy, endpoint);
            match want {
                Ok(base) => assert_eq!(got.unwrap(), base, "{proxy} {endpoint:?}"),
                Err(part) => {
                    let msg = got.expect_err("refused").to_string();
                    assert!(msg.contains(part), "{proxy} {endpoint:?}: {msg}");
                }
            }
        }
    }

    #[test]
    fn addresses_are_taken_apart() {
        let a = Address::parse("--from", "127.0.0.1:5000").unwrap();
        assert_eq!(
            (a.scheme.as_str(), a.host.as_str(), a.url.as_str()),
            ("https", "127.0.0.1:5000", "https://127.0.0.1:5000")
        );
        let a = Address::parse("--from", "http://Registry.Example:80/").unwrap();
        assert_eq!((a.host.as_str(), a.url.as_str()), ("registry.example", "http://registry.example"));
        assert!(Address::parse("--from", "https://user:pw@host").is_err());
        assert!(Address::parse("--from", "").is_err());
        assert!(Address::parse("--from", "https://a b").is_err());
    }

    #[test]
    fn tokens_never_show_in_debug_output() {
        let t = Token {
            header: Secret::new("Basic QVdTOnNlY3JldA=="),
            proxy_endpoint: "https://123456789012.dkr.ecr.eu-west-1.amazonaws.com".into(),
            secrets: vec![Secret::new("hunter2")],
        };
        let shown = format!("{t:?} {}", t.header);
        assert!(!shown.contains("QVdT") && !shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("dkr.ecr"), "{shown}");
    }
}

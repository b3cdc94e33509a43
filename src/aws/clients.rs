//! The one place an `SdkConfig` is built: region, HTTPS client (rustls + ring), retries and
//! credentials. Endpoint overrides come from the standard environment (`AWS_ENDPOINT_URL`,
//! `AWS_ENDPOINT_URL_<SERVICE>`), which aws-config reads itself.

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls;

/// Where the first credentials come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseCredentials {
    /// aws-config's default chain: environment, profile, SSO, container, IMDS.
    DefaultChain,
    /// None at all: for AssumeRoleWithWebIdentity, which is unsigned. Avoids probing IMDS.
    Anonymous,
}

#[derive(Debug, thiserror::Error)]
#[error("no AWS region is set: pass --region, set AWS_REGION, or set `region` in deployer.toml or your AWS profile")]
pub struct NoRegion;

/// Load the base configuration. `region` (a flag or config value) wins over the environment.
pub async fn load(region: Option<&str>, credentials: BaseCredentials) -> Result<SdkConfig, NoRegion> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        // rustls with ring, no aws-lc.
        .http_client(
            aws_smithy_http_client::Builder::new()
                .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
                .build_https(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(5));
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    if credentials == BaseCredentials::Anonymous {
        loader = loader.no_credentials();
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err(NoRegion);
    }
    Ok(config)
}

/// The same configuration with fixed credentials (an assumed role's).
pub fn with_credentials(base: &SdkConfig, credentials: Credentials) -> SdkConfig {
    base.to_builder().credentials_provider(SharedCredentialsProvider::new(credentials)).build()
}

/// The same configuration with a credentials provider (one that renews a session).
pub fn with_provider(base: &SdkConfig, provider: impl ProvideCredentials + 'static) -> SdkConfig {
    base.to_builder().credentials_provider(SharedCredentialsProvider::new(provider)).build()
}

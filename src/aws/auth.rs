//! The `auth` stage: GitHub OIDC token (or the default credential chain) → AWS credentials,
//! optionally chained into a second role, checked against the allowed accounts.
//! Input checks (role ARN, session name, duration) are pure functions that run before any
//! network call; STS failures are explained in terms of the token's claims. Every credential
//! is `::add-mask::`ed the moment it is obtained (in Actions), before anything can print it;
//! `Credentials`' own `Debug` redacts the secret key and session token. Assumed sessions are
//! renewed before they end by `refresh::Refreshing` (renewals are masked the same way).

use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::primitives::DateTime;

use crate::aws::clients;
use crate::aws::refresh::{Reach, Refreshing, Renewal, TokenSource};
use crate::github::oidc::{self, IdToken, OidcError, TokenEndpoint};
use crate::retry::{self, Attempt, Backoff};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{flag} {value:?} is not an IAM role ARN: {reason}.\n  expected: arn:aws:iam::123456789012:role/NAME")]
    BadRoleArn { flag: &'static str, value: String, reason: String },
    #[error(
        "--duration {0} is out of range: STS accepts 900 to 43200 seconds (and no more than the role's maximum session duration)"
    )]
    BadDuration(u32),
    #[error("--session-name {value:?} is not usable: {reason} (2 to 64 characters of letters, digits and +=,.@_-)")]
    BadSessionName { value: String, reason: &'static str },
    #[error("a GitHub OIDC token is available but no role to assume: pass --role-arn (or `role-arn` in deployer.toml)")]
    RoleRequired,
    #[error(transparent)]
    NoRegion(#[from] clients::NoRegion),
    #[error(transparent)]
    Oidc(#[from] OidcError),
    #[error(
        "STS denied {action} for {role_arn}: {message}\n\
         The OIDC token this job presented carries:\n{claims}\n\
         The role's trust policy must allow this job, e.g. a condition such as:\n{condition}"
    )]
    AccessDenied { action: &'static str, role_arn: String, message: String, claims: String, condition: String },
    #[error(
        "STS denied {action} for {role_arn}: {message}\n  the credentials in use ({caller}) may not assume this role: check its trust policy and their sts:AssumeRole permission"
    )]
    ChainDenied { action: &'static str, role_arn: String, message: String, caller: String },
    #[error("STS {action} failed for {role_arn}: {message}")]
    Sts { action: &'static str, role_arn: String, message: String },
    #[error(
        "no AWS credentials were found: {0}\n  fix: inside GitHub Actions pass --role-arn with `permissions: id-token: write`; at a terminal log in (aws sso login / AWS_PROFILE / AWS_ACCESS_KEY_ID)"
    )]
    NoCredentials(String),
    #[error(
        "the credentials belong to account {account}, which is not in --allowed-account-ids ({allowed}); refusing to use them"
    )]
    AccountNotAllowed { account: String, allowed: String },
}

/// A role ARN that passed [`check_role_arn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    pub arn: String,
    pub account: String,
}

/// Validate an IAM role ARN without any network call.
pub fn check_role_arn(flag: &'static str, value: &str) -> Result<RoleArn, AuthError> {
    let bad = |reason: &str| AuthError::BadRoleArn { flag, value: value.to_string(), reason: reason.to_string() };
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    let [arn, partition, service, region, account, resource] = parts[..] else {
        return Err(bad("it does not have the six ':'-separated parts of an ARN"));
    };
    if arn != "arn" {
        return Err(bad("it does not start with `arn:`"));
    }
    if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") && !partition.starts_with("aws-iso") {
        return Err(bad(&format!("unknown partition `{partition}`")));
    }
    if service != "iam" {
        return Err(bad(&format!("the service is `{service}`, not `iam`")));
    }
    if !region.is_empty() {
        return Err(bad("IAM ARNs have no region (expected `iam::`)"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(&format!("the account id `{account}` is not 12 digits")));
    }
    let Some(path_and_name) = resource.strip_prefix("role/") else {
        return Err(bad("the resource is not `role/NAME`"));
    };
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name.len() > 64 {
        return Err(bad("the role name must be 1 to 64 characters"));
    }
    if !path_and_name.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-/".contains(c)) {
        return Err(bad("the role name may only hold letters, digits and +=,.@_-"));
    }
    Ok(RoleArn { arn: value.to_string(), account: account.to_string() })
}

fn session_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || "+=,.@_-".contains(c)
}

/// The default session name: `deployer-<owner>-<repo>-<run id>`, made legal for STS
/// (2 to 64 characters of `[\w+=,.@-]`).
pub fn default_session_name(repository: Option<&str>, run_id: Option<&str>) -> String {
    let mut raw = String::from("deployer");
    for part in [repository, run_id].into_iter().flatten() {
        raw.push('-');
        raw.push_str(part);
    }
    sanitize_session_name(&raw)
}

pub fn sanitize_session_name(raw: &str) -> String {
    let mut name: String = raw.chars().map(|c| if session_char_ok(c) { c } else { '-' }).collect();
    // Keep the end (the run id) when too long: it is what tells sessions apart.
    if name.len() > 64 {
        name = name[name.len() - 64..].to_string();
    }
    while name.len() < 2 {
        name.push('_');
    }
    name
}

pub fn check_session_name(value: &str) -> Result<(), AuthError> {
    let bad = |reason| AuthError::BadSessionName { value: value.to_string(), reason };
    if value.len() < 2 || value.len() > 64 {
        return Err(bad("its length is outside 2 to 64"));
    }
    if !value.chars().all(session_char_ok) {
        return Err(bad("it holds a character STS refuses"));
    }
    Ok(())
}

pub fn check_duration(seconds: u32) -> Result<(), AuthError> {
    if (900..=43200).contains(&seconds) { Ok(()) } else { Err(AuthError::BadDuration(seconds)) }
}

/// What the caller asked for, already validated.
#[derive(Debug, Clone)]
pub struct AuthRequest {
    pub role: Option<RoleArn>,
    pub chain_role: Option<RoleArn>,
    pub session_name: String,
    pub duration_seconds: u32,
    pub audience: String,
    pub allowed_account_ids: Vec<String>,
    pub region: Option<String>,
}

/// Where the first credentials come from.
#[derive(Debug)]
pub enum Source {
    /// The runner's OIDC token endpoint.
    GithubOidc(TokenEndpoint),
    /// aws-config's default chain (a maintainer's profile, SSO, environment).
    DefaultChain,
}

/// Credentials ready for use, and who they belong to.
#[derive(Debug, Clone)]
pub struct Session {
    pub config: SdkConfig,
    pub credentials: Credentials,
    pub account_id: String,
    pub caller_arn: String,
    /// The role whose credentials these are (the chained one when chaining).
    pub role_arn: Option<String>,
    pub source: &'static str,
    /// How long the credentials can last when deployer cannot renew them.
    pub reach: Reach,
    /// The provider renewing an assumed session (none: the default chain renews itself).
    pub refreshing: Option<Refreshing>,
}

impl Session {
    pub fn region(&self) -> String {
        self.config.region().map(|r| r.to_string()).unwrap_or_default()
    }

    pub fn expiration(&self) -> Option<String> {
        self.credentials.expiry().map(format_time)
    }
}

pub fn format_time(t: SystemTime) -> String {
    DateTime::from(t).fmt(aws_sdk_sts::primitives::DateTimeFormat::DateTime).unwrap_or_default()
}

/// Run the whole exchange. Assumed sessions are served by a [`Refreshing`] provider that
/// renews them before they end, so every client built from the session's config outlives them.
pub async fn authenticate(req: &AuthRequest, source: Source, http: &reqwest::Client) -> Result<Session, AuthError> {
    let (base, renewal, source_name) = match source {
        Source::GithubOidc(endpoint) => {
            req.role.as_ref().ok_or(AuthError::RoleRequired)?;
            let base = clients::load(req.region.as_deref(), clients::BaseCredentials::Anonymous).await?;
            let tokens = TokenSource::new(endpoint, http.clone(), &req.audience);
            (base, Renewal::Oidc(std::sync::Arc::new(tokens)), "github-oidc")
        }
        Source::DefaultChain => {
            let base = clients::load(req.region.as_deref(), clients::BaseCredentials::DefaultChain).await?;
            let provider = base
                .credentials_provider()
                .ok_or_else(|| AuthError::NoCredentials("the default chain is empty".into()))?;
            (base, Renewal::DefaultChain(provider), "default-chain")
        }
    };
    let creds = exchange(&base, &renewal, req).await?;
    let role_arn = req.chain_role.as_ref().or(req.role.as_ref()).map(|r| r.arn.clone());
    let oidc = matches!(renewal, Renewal::Oidc(_));
    // The default chain without a role renews itself (SSO, profiles, instance roles).
    let (config, refreshing) = if oidc || role_arn.is_some() {
        let provider = Refreshing::new(base.clone(), req.clone(), renewal, creds.clone());
        (clients::with_provider(&base, provider.clone()), Some(provider))
    } else {
        (base.clone(), None)
    };
    let reach = if oidc { Reach::renewable() } else { Reach::from_env(|k| std::env::var(k).ok()) };
    let (account_id, caller_arn) = caller_identity(&config, role_arn.as_deref()).await?;
    if !req.allowed_account_ids.is_empty() && !req.allowed_account_ids.contains(&account_id) {
        return Err(AuthError::AccountNotAllowed { account: account_id, allowed: req.allowed_account_ids.join(", ") });
    }
    Ok(Session { config, credentials: creds, account_id, caller_arn, role_arn, source: source_name, reach, refreshing })
}

/// One session: the first credentials (OIDC token or default chain, then the role), then the
/// chained role. [`Refreshing`] calls this again to renew.
pub(crate) async fn exchange(base: &SdkConfig, renewal: &Renewal, req: &AuthRequest) -> Result<Credentials, AuthError> {
    let first = match renewal {
        Renewal::Oidc(tokens) => {
            let role = req.role.as_ref().ok_or(AuthError::RoleRequired)?;
            assume_with_web_identity(base, role, tokens, req).await?
        }
        Renewal::DefaultChain(provider) => {
            let creds = provider
                .provide_credentials()
                .await
                .map_err(|e| AuthError::NoCredentials(DisplayErrorContext(&e).to_string()))?;
            mask(&creds);
            match &req.role {
                Some(role) => assume_role(&clients::with_credentials(base, creds), role, req).await?,
                None => creds,
            }
        }
    };
    match &req.chain_role {
        Some(chain) => assume_role(&clients::with_credentials(base, first), chain, req).await,
        None => Ok(first),
    }
}

/// The account and ARN the configuration's credentials belong to (GetCallerIdentity).
pub async fn caller_identity(config: &SdkConfig, role_arn: Option<&str>) -> Result<(String, String), AuthError> {
    let identity = aws_sdk_sts::Client::new(config).get_caller_identity().send().await.map_err(|e| AuthError::Sts {
        action: "GetCallerIdentity",
        role_arn: role_arn.unwrap_or("(default chain)").to_string(),
        message: sdk_message(&e),
    })?;
    Ok((identity.account().unwrap_or_default().to_string(), identity.arn().unwrap_or_default().to_string()))
}

/// What STS asks callers to retry: IDPCommunicationError, throttling, 5xx, and the transport.
fn retryable<E: ProvideErrorMetadata>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> bool {
    match e {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(s) => {
            s.raw().status().as_u16() >= 500
                || matches!(
                    e.code(),
                    Some("IDPCommunicationError" | "Throttling" | "ThrottlingException" | "RequestLimitExceeded")
                )
        }
        _ => false,
    }
}

/// Why one AssumeRoleWithWebIdentity attempt failed.
enum WebIdentityFailure {
    Token(OidcError),
    Sts(Box<WebIdentityError>, IdToken),
}

type WebIdentityError = SdkError<
    aws_sdk_sts::operation::assume_role_with_web_identity::AssumeRoleWithWebIdentityError,
    aws_smithy_runtime_api::http::Response,
>;

async fn assume_with_web_identity(
    base: &SdkConfig,
    role: &RoleArn,
    tokens: &TokenSource,
    req: &AuthRequest,
) -> Result<Credentials, AuthError> {
    const ACTION: &str = "AssumeRoleWithWebIdentity";
    // deployer retries this call itself, not the SDK (which would resend the same token):
    // each attempt takes a token with more than a minute left, so a retry after a long wait
    // presents a fresh one, and a token STS calls expired is replaced before the next attempt.
    let sts = aws_sdk_sts::Client::from_conf(
        aws_sdk_sts::config::Builder::from(base).retry_config(aws_config::retry::RetryConfig::disabled()).build(),
    );
    let result = retry::retry(Backoff::default(), |_| {
        let sts = sts.clone();
        async move {
            let token = match tokens.token().await {
                Ok(t) => t,
                Err(e) => return Attempt::Fatal(WebIdentityFailure::Token(e)),
            };
            let call = sts
                .assume_role_with_web_identity()
                .role_arn(&role.arn)
                .role_session_name(&req.session_name)
                .duration_seconds(req.duration_seconds as i32)
                .web_identity_token(token.expose())
                .send();
            match call.await {
                Ok(out) => Attempt::Done(out),
                Err(e) if retryable(&e) => Attempt::Retry(WebIdentityFailure::Sts(Box::new(e), token)),
                Err(e) if e.code() == Some("ExpiredTokenException") => {
                    tokens.discard().await;
                    Attempt::Retry(WebIdentityFailure::Sts(Box::new(e), token))
                }
                Err(e) => Attempt::Fatal(WebIdentityFailure::Sts(Box::new(e), token)),
            }
        }
    })
    .await;
    let out = result.map_err(|(failure, _)| match failure {
        WebIdentityFailure::Token(e) => AuthError::Oidc(e),
        WebIdentityFailure::Sts(e, token) => {
            let message = sdk_message(e.as_ref());
            if e.code() == Some("AccessDenied") {
                let claims = token.claims();
                AuthError::AccessDenied {
                    action: ACTION,
                    role_arn: role.arn.clone(),
                    message,
                    claims: match &claims {
                        Ok(c) => oidc::describe_claims(c),
                        Err(err) => format!("  (cannot read the token's claims: {err})"),
                    },
                    condition: claims.map(|c| oidc::trust_condition(&c)).unwrap_or_default(),
                }
            } else {
                AuthError::Sts { action: ACTION, role_arn: role.arn.clone(), message }
            }
        }
    })?;
    to_credentials(out.credentials(), ACTION, &role.arn)
}

async fn assume_role(config: &SdkConfig, role: &RoleArn, req: &AuthRequest) -> Result<Credentials, AuthError> {
    const ACTION: &str = "AssumeRole";
    let out = aws_sdk_sts::Client::new(config)
        .assume_role()
        .role_arn(&role.arn)
        .role_session_name(&req.session_name)
        .duration_seconds(req.duration_seconds as i32)
        .send()
        .await
        .map_err(|e| {
            let message = sdk_message(&e);
            if e.code() == Some("AccessDenied") {
                AuthError::ChainDenied {
                    action: ACTION,
                    role_arn: role.arn.clone(),
                    message,
                    caller: "the first role's session".into(),
                }
            } else {
                AuthError::Sts { action: ACTION, role_arn: role.arn.clone(), message }
            }
        })?;
    to_credentials(out.credentials(), ACTION, &role.arn)
}

fn to_credentials(
    creds: Option<&aws_sdk_sts::types::Credentials>,
    action: &'static str,
    role_arn: &str,
) -> Result<Credentials, AuthError> {
    let c = creds.ok_or_else(|| AuthError::Sts {
        action,
        role_arn: role_arn.to_string(),
        message: "the answer held no credentials".into(),
    })?;
    let creds = Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        SystemTime::try_from(*c.expiration()).ok(),
        "deployer",
    );
    mask(&creds);
    Ok(creds)
}

/// Ask the runner to hide every part of `creds` (a no-op outside Actions).
fn mask(creds: &Credentials) {
    let runner = crate::github::runner::Runner::current();
    runner.mask(creds.access_key_id());
    runner.mask(creds.secret_access_key());
    if let Some(token) = creds.session_token() {
        runner.mask(token);
    }
}

/// An SDK error as one line: the service's code and message, or the transport failure.
pub fn sdk_message<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (err.code(), err.message()) {
        (Some(code), Some(msg)) => format!("{code}: {msg}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(err).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_arns_are_checked_before_any_call() {
        let ok = [
            ("arn:aws:iam::123456789012:role/deploy", "123456789012"),
            ("arn:aws:iam::123456789012:role/path/to/deploy-prod_1", "123456789012"),
            ("arn:aws-cn:iam::210987654321:role/x", "210987654321"),
            ("arn:aws-us-gov:iam::210987654321:role/a+b=c,d.e@f", "210987654321"),
        ];
        for (arn, account) in ok {
            assert_eq!(check_role_arn("--role-arn", arn).unwrap().account, account, "{arn}");
        }
        let bad = [
            ("", "six"),
            ("deploy", "six"),
            ("arn:aws:iam::12345678901:role/deploy", "12 digits"),
            ("arn:aws:iam::1234567890123:role/deploy", "12 digits"),
            ("arn:aws:iam::12345678901a:role/deploy", "12 digits"),
            ("arn:aws:sts::123456789012:role/deploy", "not `iam`"),
            ("arn:aws:iam:us-east-1:123456789012:role/deploy", "no region"),
            ("arn:aws:iam::123456789012:user/deploy", "role/NAME"),
            ("arn:aws:iam::123456789012:role/", "1 to 64"),
            ("arn:aws:iam::123456789012:role/has space", "letters"),
            ("arn:gcp:iam::123456789012:role/x", "partition"),
            ("urn:aws:iam::123456789012:role/x", "arn:"),
        ];
        for (arn, why) in bad {
            let err = check_role_arn("--role-arn", arn).unwrap_err().to_string();
            assert!(err.contains(why) && err.contains("--role-arn"), "{arn}: {err}");
        }
    }

    #[test]
    fn session_names_are_sanitised_to_sts_rules() {
        let table = [
            (Some("octo/shop"), Some("123456"), "deployer-octo-shop-123456"),
            (None, None, "deployer"),
            (Some("o r/ü"), None, "deployer-o-r--"),
        ];
        for (repo, run, want) in table {
            let got = default_session_name(repo, run);
            assert_eq!(got, want);
            check_session_name(&got).unwrap();
        }
        let long = default_session_name(Some(&"x".repeat(100)), Some("987654321"));
        assert_eq!(long.len(), 64);
        assert!(long.ends_with("-987654321"));
        check_session_name(&long).unwrap();
        assert_eq!(sanitize_session_name(""), "__");
        assert_eq!(sanitize_session_name("a"), "a_");
        for bad in ["a", &"b".repeat(65), "has space", "semi;colon"] {
            assert!(check_session_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_follow_sts_limits() {
        for ok in [900, 3600, 43200] {
            check_duration(ok).unwrap();
        }
        for bad in [0, 899, 43201] {
            assert!(check_duration(bad).is_err());
        }
    }
}

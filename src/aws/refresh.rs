//! Credentials that last the whole deploy. An STS session from GitHub OIDC lasts an hour by
//! default, and a long bake, canary or hold outlasts it (the official deploy action fails at
//! 60 minutes whatever it was told to wait). [`Refreshing`] is the credentials provider every
//! client of a run shares: a fifth of the session's lifetime before it ends (at most 5
//! minutes) it renews the session the way it was made — a fresh OIDC token and
//! AssumeRoleWithWebIdentity again, the chained role again; outside Actions, the default chain
//! again and AssumeRole. A renewal that fails keeps serving the credentials it has while they
//! are valid (a deployment in flight can still roll back with them) and is retried; once they
//! have expired, AWS calls fail and the deploy reports the state it left (exit 4).
//!
//! [`TokenSource`] hands each STS attempt a token with more than a minute left, so retries
//! never present a token that expired while they waited. [`Reach`] says how long credentials
//! that cannot be renewed last, for the check that a `--timeout` fits before anything changes.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use tokio::sync::Mutex;

use super::auth::{AuthError, AuthRequest};
use crate::github::oidc::{IdToken, OidcError, TokenEndpoint};
use crate::retry::Backoff;

/// A token with less than this left is replaced before it is sent to STS.
pub const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// How long before the end of a session of `lifetime` it is renewed: a fifth, at most 5 min.
pub fn renew_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).min(Duration::from_secs(300))
}

/// Whether credentials issued at `issued` and expiring at `expiry` should be renewed at `now`.
pub fn renewal_due(now: SystemTime, issued: SystemTime, expiry: Option<SystemTime>) -> bool {
    let Some(expiry) = expiry else { return false };
    let lifetime = expiry.duration_since(issued).unwrap_or_default();
    match expiry.duration_since(now) {
        Ok(left) => left <= renew_margin(lifetime),
        Err(_) => true,
    }
}

/// After a failed renewal, how long to keep using the current credentials before trying again.
pub fn retry_gap(lifetime: Duration) -> Duration {
    (lifetime / 50).clamp(Duration::from_millis(100), Duration::from_secs(15))
}

/// A token expiring at `exp` (epoch seconds) is still worth sending at `now`.
pub fn token_fresh(exp: Option<u64>, now: SystemTime) -> bool {
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    exp.is_none_or(|e| Duration::from_secs(e) > now + TOKEN_MARGIN)
}

/// The runner's OIDC tokens: the last one while it has more than [`TOKEN_MARGIN`] left.
pub struct TokenSource {
    endpoint: TokenEndpoint,
    http: reqwest::Client,
    audience: String,
    current: Mutex<Option<IdToken>>,
    fetched: std::sync::atomic::AtomicU32,
}

impl TokenSource {
    pub fn new(endpoint: TokenEndpoint, http: reqwest::Client, audience: &str) -> Self {
        TokenSource {
            endpoint,
            http,
            audience: audience.to_string(),
            current: Mutex::new(None),
            fetched: Default::default(),
        }
    }

    /// A token that will not expire within a minute: the last one, or a new one.
    pub async fn token(&self) -> Result<IdToken, OidcError> {
        let mut current = self.current.lock().await;
        if let Some(t) = current.as_ref()
            && token_fresh(t.claims().ok().and_then(|c| c.exp), SystemTime::now())
        {
            return Ok(t.clone());
        }
        let fresh = self.endpoint.fetch(&self.http, &self.audience, Backoff::default()).await?;
        self.fetched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some(fresh.clone());
        Ok(fresh)
    }

    /// Forget the last token (STS said it expired): the next [`token`](Self::token) fetches one.
    pub async fn discard(&self) {
        *self.current.lock().await = None;
    }

    /// Tokens fetched so far.
    pub fn fetched(&self) -> u32 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// How a session is made, and made again.
#[derive(Clone)]
pub enum Renewal {
    /// GitHub OIDC → AssumeRoleWithWebIdentity (→ the chained role).
    Oidc(Arc<TokenSource>),
    /// aws-config's default chain (→ AssumeRole → the chained role).
    DefaultChain(SharedCredentialsProvider),
}

/// The credentials provider that renews an STS session before it ends.
#[derive(Clone)]
pub struct Refreshing {
    inner: Arc<Inner>,
}

struct Inner {
    base: SdkConfig,
    req: AuthRequest,
    renewal: Renewal,
    state: Mutex<State>,
}

struct State {
    current: Credentials,
    issued: SystemTime,
    last_failure: Option<SystemTime>,
    renewals: u32,
}

impl std::fmt::Debug for Refreshing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Refreshing(<credentials redacted>)")
    }
}

impl Refreshing {
    pub fn new(base: SdkConfig, req: AuthRequest, renewal: Renewal, first: Credentials) -> Self {
        Refreshing {
            inner: Arc::new(Inner {
                base,
                req,
                renewal,
                state: Mutex::new(State { current: first, issued: SystemTime::now(), last_failure: None, renewals: 0 }),
            }),
        }
    }

    /// Sessions made after the first.
    pub async fn renewals(&self) -> u32 {
        self.inner.state.lock().await.renewals
    }

    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        let mut st = self.inner.state.lock().await;
        let now = SystemTime::now();
        let expiry = st.current.expiry();
        if !renewal_due(now, st.issued, expiry) {
            return Ok(st.current.clone());
        }
        let valid = expiry.is_none_or(|x| x > now);
        let lifetime = expiry.and_then(|x| x.duration_since(st.issued).ok()).unwrap_or_default();
        if valid && st.last_failure.is_some_and(|at| now.duration_since(at).unwrap_or_default() < retry_gap(lifetime)) {
            return Ok(st.current.clone());
        }
        match super::auth::exchange(&self.inner.base, &self.inner.renewal, &self.inner.req).await {
            Ok(fresh) => {
                // Masked already: every STS answer is, the moment it arrives.
                st.renewals += 1;
                tracing::info!(
                    "renewed the AWS session before it expired (renewal {}; the new one ends {})",
                    st.renewals,
                    fresh.expiry().map(super::auth::format_time).unwrap_or_else(|| "never".into())
                );
                st.current = fresh.clone();
                st.issued = now;
                st.last_failure = None;
                Ok(fresh)
            }
            Err(e) => {
                st.last_failure = Some(now);
                let until = expiry.map(super::auth::format_time).unwrap_or_default();
                if valid {
                    tracing::warn!("renewing the AWS session failed ({e}); the current one stays in use until {until}");
                    Ok(st.current.clone())
                } else {
                    tracing::error!("renewing the AWS session failed ({e}); it expired at {until}");
                    Err(CredentialsError::provider_error(RenewalFailed { until, cause: e }))
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the AWS session expired at {until} and could not be renewed: {cause}")]
pub struct RenewalFailed {
    until: String,
    cause: AuthError,
}

impl ProvideCredentials for Refreshing {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

/// How long the credentials of a run can last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// When they end for good; `None`: renewed as needed (or no end is known).
    pub until: Option<SystemTime>,
    /// Where they come from, for the message.
    pub source: String,
}

impl Reach {
    /// deployer renews them (OIDC, or a role it assumes with credentials that renew themselves).
    pub fn renewable() -> Reach {
        Reach { until: None, source: "renewed by deployer".into() }
    }

    /// Credentials from `AWS_ACCESS_KEY_ID` cannot be renewed; `AWS_CREDENTIAL_EXPIRATION`
    /// (RFC 3339, as `aws configure export-credentials` and `deployer auth --export` write it)
    /// says when they end. Other sources of the default chain (SSO, profiles, containers,
    /// instance roles) renew themselves.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Reach {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        if set("AWS_ACCESS_KEY_ID").is_none() {
            return Reach { until: None, source: "the default credential chain".into() };
        }
        let until = set("AWS_CREDENTIAL_EXPIRATION").and_then(|v| {
            aws_sdk_sts::primitives::DateTime::from_str(v.trim(), aws_sdk_sts::primitives::DateTimeFormat::DateTime)
                .ok()
                .and_then(|d| SystemTime::try_from(d).ok())
        });
        Reach {
            until,
            source: "AWS_ACCESS_KEY_ID (with AWS_CREDENTIAL_EXPIRATION), which deployer cannot renew".into(),
        }
    }

    /// Refuse, before anything changes, a deploy that may need the credentials for `needed`
    /// when they end sooner and cannot be renewed.
    pub fn check(&self, now: SystemTime, needed: Duration, timeout: Duration) -> Result<(), String> {
        let Some(until) = self.until else { return Ok(()) };
        let left = until.duration_since(now).unwrap_or_default();
        if left >= needed {
            return Ok(());
        }
        Err(format!(
            "the AWS credentials end at {} (in {}) and cannot be renewed: they come from {}. A deploy with --timeout {} may need them for up to {} (waiting for a deployment in progress, the gate, and a rollback). Fix: let deployer assume the role itself (--role-arn with GitHub OIDC, or a profile), export credentials that last longer (--duration), or lower --timeout",
            super::auth::format_time(until),
            minutes(left),
            self.source,
            timeout.as_secs(),
            minutes(needed),
        ))
    }
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 { format!("{s} s") } else { format!("{} min", s / 60) }
}

/// The longest a deploy with `timeout` can need AWS credentials: waiting for a deployment in
/// progress (at most 5 min), the gate, and the rollback after it (each bounded by the timeout).
pub fn deploy_budget(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(300)) + timeout + timeout.max(Duration::from_secs(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn sessions_are_renewed_a_fifth_before_their_end_and_at_most_five_minutes_early() {
        let hour = 3600;
        let table = [
            // (issued, expiry, now, due)
            (0, Some(hour), 3000, false),
            (0, Some(hour), 3300, true), // 5 min left
            (0, Some(900), 700, false),
            (0, Some(900), 721, true), // 15-min session: 3 min early
            (0, Some(10), 7, false),
            (0, Some(10), 8, true), // a time-scaled 10 s session: 2 s early
            (0, Some(10), 11, true),
            (0, None, 99_999, false),
        ];
        for (issued, expiry, now, due) in table {
            assert_eq!(renewal_due(at(now), at(issued), expiry.map(at)), due, "{issued} {expiry:?} {now}");
        }
        assert_eq!(retry_gap(Duration::from_secs(3600)), Duration::from_secs(15));
        assert_eq!(retry_gap(Duration::from_secs(2)), Duration::from_millis(100));
    }

    #[test]
    fn tokens_within_a_minute_of_expiry_are_replaced() {
        assert!(token_fresh(Some(1000), at(900)));
        assert!(!token_fresh(Some(1000), at(940)));
        assert!(!token_fresh(Some(1000), at(2000)));
        assert!(token_fresh(None, at(2000)), "no exp claim: STS decides");
    }

    #[test]
    fn the_timeout_must_fit_in_credentials_that_cannot_be_renewed() {
        let env = |expiration: Option<&'static str>| {
            move |k: &str| match k {
                "AWS_ACCESS_KEY_ID" => Some("AKIA".to_string()),
                "AWS_CREDENTIAL_EXPIRATION" => expiration.map(str::to_string),
                _ => None,
            }
        };
        let reach = Reach::from_env(env(Some("2026-01-01T01:00:00Z")));
        let now = SystemTime::try_from(
            aws_sdk_sts::primitives::DateTime::from_str(
                "2026-01-01T00:00:00Z",
                aws_sdk_sts::primitives::DateTimeFormat::DateTime,
            )
            .unwrap(),
        )
        .unwrap();
        let t = Duration::from_secs(1800);
        assert_eq!(deploy_budget(t), Duration::from_secs(300 + 1800 + 1800));
        let err = reach.check(now, deploy_budget(t), t).unwrap_err();
        assert!(
            err.starts_with("the AWS credentials end at 2026-01-01T01:00:00Z (in 60 min) and cannot be renewed"),
            "{err}"
        );
        assert!(err.contains("--timeout 1800 may need them for up to 65 min"), "{err}");
        let t = Duration::from_secs(900);
        reach.check(now, deploy_budget(t), t).unwrap();
        // Unknown end, other sources, or renewable: nothing to check.
        assert_eq!(Reach::from_env(env(None)).until, None);
        assert_eq!(Reach::from_env(|_| None).until, None);
        Reach::renewable().check(now, Duration::from_secs(999_999), t).unwrap();
    }
}

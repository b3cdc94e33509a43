//! GitHub's OIDC token: fetching it from the runner's token endpoint
//! (`ACTIONS_ID_TOKEN_REQUEST_URL` + `ACTIONS_ID_TOKEN_REQUEST_TOKEN`), and reading its claims
//! without verification, so that an AccessDenied from STS can say which trust-policy
//! condition would match this job. The token itself is never printed: it lives in a
//! [`Secret`] and is `::add-mask::`ed the moment it arrives.

use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use crate::github::runner::Runner;
use crate::retry::{self, Attempt, Backoff};
use crate::secret::Secret;

#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    #[error(
        "no GitHub OIDC token is available to this job: ACTIONS_ID_TOKEN_REQUEST_URL and \
         ACTIONS_ID_TOKEN_REQUEST_TOKEN are not set.\n  fix: give the job `permissions: id-token: write` \
         (a `permissions:` block that omits it removes it).\n  note: pull requests from forks never get \
         an OIDC token; deploy from a push, a release or a workflow_dispatch instead."
    )]
    NotAvailable,
    #[error(
        "the OIDC token endpoint {endpoint} rejected the request token (HTTP {status}); the job's \
         ACTIONS_ID_TOKEN_REQUEST_TOKEN is wrong or expired. Do not set it by hand: the runner provides \
         it when the job has `permissions: id-token: write`."
    )]
    Rejected { endpoint: String, status: u16 },
    #[error("the OIDC token endpoint {endpoint} did not give a token after {attempts} attempts: {last}")]
    Unreachable { endpoint: String, attempts: u32, last: String },
    #[error("ACTIONS_ID_TOKEN_REQUEST_URL is not a URL ({reason})")]
    BadUrl { reason: String },
    #[error("the OIDC token is not a JWT: {0}")]
    Malformed(String),
}

/// Where to ask for a token, from the runner's environment.
#[derive(Clone)]
pub struct TokenEndpoint {
    url: reqwest::Url,
    request_token: Secret,
}

impl fmt::Debug for TokenEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenEndpoint")
            .field("url", &redacted_url(&self.url))
            .field("request_token", &"<redacted>")
            .finish()
    }
}

impl TokenEndpoint {
    /// `None` when the runner provides no endpoint (outside Actions, or no `id-token: write`).
    pub fn from_env() -> Result<Option<Self>, OidcError> {
        let (Some(url), Some(token)) = (
            std::env::var("ACTIONS_ID_TOKEN_REQUEST_URL").ok().filter(|v| !v.is_empty()),
            std::env::var("ACTIONS_ID_TOKEN_REQUEST_TOKEN").ok().filter(|v| !v.is_empty()),
        ) else {
            return Ok(None);
        };
        Self::new(&url, token).map(Some)
    }

    pub fn new(url: &str, request_token: impl Into<Secret>) -> Result<Self, OidcError> {
        let url = reqwest::Url::parse(url).map_err(|e| OidcError::BadUrl { reason: e.to_string() })?;
        Ok(TokenEndpoint { url, request_token: request_token.into() })
    }

    /// Fetch a token for `audience`, retrying 5xx, 429 and connection failures with backoff.
    pub async fn fetch(&self, http: &reqwest::Client, audience: &str, policy: Backoff) -> Result<IdToken, OidcError> {
        let mut url = self.url.clone();
        url.query_pairs_mut().append_pair("audience", audience);
        let endpoint = redacted_url(&self.url);
        let result = retry::retry(policy, |attempt| {
            let req = http
                .get(url.clone())
                .bearer_auth(self.request_token.expose())
                .header(reqwest::header::ACCEPT, "application/json");
            let endpoint = endpoint.clone();
            async move {
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::debug!("OIDC token request attempt {attempt} failed: {e}");
                        return Attempt::Retry(OidcError::Unreachable {
                            endpoint,
                            attempts: attempt,
                            last: without_url(&e),
                        });
                    }
                };
                let status = resp.status();
                if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
                    return Attempt::Fatal(OidcError::Rejected { endpoint, status: status.as_u16() });
                }
                if !status.is_success() {
                    let err = OidcError::Unreachable { endpoint, attempts: attempt, last: format!("HTTP {status}") };
                    return if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                        Attempt::Retry(err)
                    } else {
                        Attempt::Fatal(err)
                    };
                }
                #[derive(Deserialize)]
                struct Body {
                    value: String,
                }
                match resp.json::<Body>().await {
                    Ok(body) => {
                        // Masked before anything else can print it.
                        Runner::current().mask(&body.value);
                        Attempt::Done(IdToken::new(body.value))
                    }
                    Err(e) => Attempt::Retry(OidcError::Unreachable {
                        endpoint,
                        attempts: attempt,
                        last: format!("unreadable answer: {}", without_url(&e)),
                    }),
                }
            }
        })
        .await;
        result.map_err(|(err, attempts)| match err {
            OidcError::Unreachable { endpoint, last, .. } => OidcError::Unreachable { endpoint, attempts, last },
            other => other,
        })
    }
}

/// The URL without its query (which may carry run identifiers), for messages.
fn redacted_url(url: &reqwest::Url) -> String {
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{}://{}{port}{}", url.scheme(), url.host_str().unwrap_or("?"), url.path())
}

/// A reqwest error described without its URL (whose query we keep out of logs).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_decode() {
        "unreadable body"
    } else {
        "request failed"
    }
    .to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A GitHub OIDC JWT. `Debug` shows `IdToken(Secret(<redacted>))`; nothing prints it.
#[derive(Clone, Debug)]
pub struct IdToken(Secret);

impl IdToken {
    pub fn new(jwt: String) -> Self {
        IdToken(Secret::new(jwt))
    }

    /// The raw JWT, for the STS call only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The payload's claims, decoded without verifying the signature (STS verifies it).
    pub fn claims(&self) -> Result<Claims, OidcError> {
        decode_claims(self.0.expose())
    }
}

/// The claims deployer reports. All but `sub` are optional: other issuers omit them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub iss: Option<String>,
    pub repository: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    pub environment: Option<String>,
    pub job_workflow_ref: Option<String>,
    pub event_name: Option<String>,
    /// Expiry (epoch seconds), so a token about to expire is replaced before STS sees it.
    #[serde(default, deserialize_with = "numeric_date")]
    pub exp: Option<u64>,
}

/// A JWT NumericDate: an integer or a fractional number of seconds (read as whole seconds).
fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = Option::<serde_json::Number>::deserialize(d)?;
    Ok(v.and_then(|n| n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))))
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

pub fn decode_claims(jwt: &str) -> Result<Claims, OidcError> {
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(OidcError::Malformed("expected three dot-separated parts".into()));
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| OidcError::Malformed(format!("payload is not base64url: {e}")))?;
    serde_json::from_slice(&bytes).map_err(|e| OidcError::Malformed(format!("payload is not a claims object: {e}")))
}

/// A `sub` claim taken apart (DESIGN.md section 6 lists the forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub owner: String,
    pub owner_id: Option<String>,
    pub repo: String,
    pub repo_id: Option<String>,
    pub context: SubjectContext,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubjectContext {
    Environment(String),
    Branch(String),
    Tag(String),
    /// Another ref (e.g. `refs/pull/1/merge`).
    Ref(String),
    PullRequest,
    /// A customised subject (`repo:O/R:job_workflow_ref:...` and the like).
    Other(String),
}

impl Subject {
    pub fn parse(sub: &str) -> Option<Subject> {
        let rest = sub.strip_prefix("repo:")?;
        let (repo_part, context) = rest.split_once(':')?;
        let (owner_part, name_part) = repo_part.split_once('/')?;
        let split_id = |s: &str| match s.split_once('@') {
            Some((name, id)) => (name.to_string(), Some(id.to_string())),
            None => (s.to_string(), None),
        };
        let (owner, owner_id) = split_id(owner_part);
        let (repo, repo_id) = split_id(name_part);
        if owner.is_empty() || repo.is_empty() {
            return None;
        }
        let context = if let Some(env) = context.strip_prefix("environment:") {
            SubjectContext::Environment(env.to_string())
        } else if let Some(r) = context.strip_prefix("ref:") {
            if let Some(b) = r.strip_prefix("refs/heads/") {
                SubjectContext::Branch(b.to_string())
            } else if let Some(t) = r.strip_prefix("refs/tags/") {
                SubjectContext::Tag(t.to_string())
            } else {
                SubjectContext::Ref(r.to_string())
            }
        } else if context == "pull_request" {
            SubjectContext::PullRequest
        } else {
            SubjectContext::Other(context.to_string())
        };
        Some(Subject { owner, owner_id, repo, repo_id, context })
    }
}

/// The trust-policy condition that would let exactly this job assume the role, plus a
/// human note on what it matches.
pub fn trust_condition(claims: &Claims) -> String {
    let aud = claims.aud.first().map(String::as_str).unwrap_or("sts.amazonaws.com");
    let condition = serde_json::json!({
        "StringEquals": {
            "token.actions.githubusercontent.com:aud": aud,
            "token.actions.githubusercontent.com:sub": claims.sub,
        }
    });
    let what = match Subject::parse(&claims.sub).map(|s| s.context) {
        Some(SubjectContext::Environment(e)) => format!("jobs that use the GitHub Environment `{e}`"),
        Some(SubjectContext::Branch(b)) => format!("jobs on branch `{b}` that use no GitHub Environment"),
        Some(SubjectContext::Tag(t)) => format!("jobs on tag `{t}` that use no GitHub Environment"),
        Some(SubjectContext::PullRequest) => "pull_request jobs (think twice before trusting these)".to_string(),
        Some(SubjectContext::Ref(r)) => format!("jobs on ref `{r}`"),
        Some(SubjectContext::Other(_)) | None => "this customised subject".to_string(),
    };
    format!(
        "{}\n  (matches {what}; use StringLike with `*` to widen it)",
        serde_json::to_string_pretty(&condition).unwrap_or_default()
    )
}

/// The claims an AccessDenied report shows, one per line.
pub fn describe_claims(claims: &Claims) -> String {
    let field = |v: &Option<String>| v.clone().unwrap_or_else(|| "(absent)".to_string());
    format!(
        "  sub:              {}\n  aud:              {}\n  repository:       {}\n  ref:              {}\n  environment:      {}\n  job_workflow_ref: {}",
        claims.sub,
        if claims.aud.is_empty() { "(absent)".to_string() } else { claims.aud.join(", ") },
        field(&claims.repository),
        field(&claims.git_ref),
        field(&claims.environment),
        field(&claims.job_workflow_ref),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: serde_json::Value) -> String {
        let enc = |v: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.{}", enc(br#"{"alg":"RS256","typ":"JWT"}"#), enc(payload.to_string().as_bytes()), enc(b"sig"))
    }

    #[test]
    fn subjects_of_every_documented_form_parse() {
        let s = |owner: &str, owner_id: Option<&str>, repo: &str, repo_id: Option<&str>, context| Subject {
            owner: owner.into(),
            owner_id: owner_id.map(Into::into),
            repo: repo.into(),
            repo_id: repo_id.map(Into::into),
            context,
        };
        let table = [
            (
                "repo:octo/shop:environment:production",
                Some(s("octo", None, "shop", None, SubjectContext::Environment("production".into()))),
            ),
            (
                "repo:octo/shop:ref:refs/heads/release/1.2",
                Some(s("octo", None, "shop", None, SubjectContext::Branch("release/1.2".into()))),
            ),
            (
                "repo:octo/shop:ref:refs/tags/v1.0.0",
                Some(s("octo", None, "shop", None, SubjectContext::Tag("v1.0.0".into()))),
            ),
            (
                "repo:octo/shop:ref:refs/pull/7/merge",
                Some(s("octo", None, "shop", None, SubjectContext::Ref("refs/pull/7/merge".into()))),
            ),
            ("repo:octo/shop:pull_request", Some(s("octo", None, "shop", None, SubjectContext::PullRequest))),
            (
                "repo:octo@1234/shop@98765:environment:prod",
                Some(s("octo", Some("1234"), "shop", Some("98765"), SubjectContext::Environment("prod".into()))),
            ),
            (
                "repo:octo@1/shop@2:ref:refs/heads/main",
                Some(s("octo", Some("1"), "shop", Some("2"), SubjectContext::Branch("main".into()))),
            ),
            (
                "repo:octo/shop:job_workflow_ref:octo/ci/.github/workflows/d.yml@refs/heads/main",
                Some(s(
                    "octo",
                    None,
                    "shop",
                    None,
                    SubjectContext::Other("job_workflow_ref:octo/ci/.github/workflows/d.yml@refs/heads/main".into()),
                )),
            ),
            ("octo/shop:ref:refs/heads/main", None),
            ("repo:octo:ref:refs/heads/main", None),
            ("repo:/shop:pull_request", None),
            ("", None),
        ];
        for (sub, want) in table {
            assert_eq!(Subject::parse(sub), want, "{sub}");
        }
    }

    #[test]
    fn claims_decode_with_string_or_array_audience() {
        let token = jwt(serde_json::json!({
            "sub": "repo:octo/shop:environment:production", "aud": "sts.amazonaws.com",
            "repository": "octo/shop", "ref": "refs/heads/main", "environment": "production",
            "job_workflow_ref": "octo/shop/.github/workflows/deploy.yml@refs/heads/main"
        }));
        let claims = decode_claims(&token).unwrap();
        assert_eq!(claims.aud, vec!["sts.amazonaws.com"]);
        assert_eq!(claims.environment.as_deref(), Some("production"));
        assert_eq!(claims.git_ref.as_deref(), Some("refs/heads/main"));
        let many = decode_claims(&jwt(serde_json::json!({"sub": "x", "aud": ["a", "b"]}))).unwrap();
        assert_eq!(many.aud, vec!["a", "b"]);
    }

    #[test]
    fn malformed_tokens_are_errors_not_panics() {
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "a.!!!.c",
            &format!("a.{}.c", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b"[1]")),
        ] {
            assert!(decode_claims(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_expiry_is_read_as_whole_seconds() {
        let enc = |v: &str| format!("h.{}.s", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v));
        assert_eq!(decode_claims(&enc(r#"{"sub":"s","exp":1700000000}"#)).unwrap().exp, Some(1_700_000_000));
        assert_eq!(decode_claims(&enc(r#"{"sub":"s","exp":1700000000.7}"#)).unwrap().exp, Some(1_700_000_000));
        assert_eq!(decode_claims(&enc(r#"{"sub":"s"}"#)).unwrap().exp, None);
    }

    #[test]
    fn trust_condition_names_the_exact_subject_and_audience() {
        let claims = Claims {
            sub: "repo:octo@1/shop@2:ref:refs/heads/release/1.2".into(),
            aud: vec!["sts.amazonaws.com".into()],
            ..Claims::default()
        };
        let text = trust_condition(&claims);
        assert!(
            text.contains(
                r#""token.actions.githubusercontent.com:sub": "repo:octo@1/shop@2:ref:refs/heads/release/1.2""#
            ),
            "{text}"
        );
        assert!(text.contains(r#""token.actions.githubusercontent.com:aud": "sts.amazonaws.com""#), "{text}");
        assert!(text.contains("branch `release/1.2`"), "{text}");
        let env = Claims { sub: "repo:o/r:environment:production".into(), ..Claims::default() };
        assert!(trust_condition(&env).contains("GitHub Environment `production`"));
    }

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let t = IdToken::new("secret.jwt.value".into());
        assert_eq!(format!("{t:?}"), "IdToken(Secret(<redacted>))");
        let e = TokenEndpoint::new("http://127.0.0.1:1/token?api-version=2.0&x=1", "reqtok".to_string()).unwrap();
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("reqtok") && !dbg.contains("x=1"), "{dbg}");
    }
}

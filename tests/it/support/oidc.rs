//! A local GitHub OIDC issuer: the runner's token endpoint (`GET ?audience=` with
//! `Authorization: Bearer <request token>` → `{"value": JWT}`) issuing RS256 JWTs with
//! GitHub's claims, plus its discovery document and JWKS. Tests choose the job's context
//! (ref, environment, event, immutable-id subjects) and can make the endpoint fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::signature::{SignatureEncoding, Signer};
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use sha2::Sha256;

/// The job the token describes.
#[derive(Debug, Clone)]
pub struct Job {
    pub repository: String,
    pub git_ref: String,
    pub environment: Option<String>,
    pub event_name: String,
    /// `repo:O@ID/R@ID:…` subjects (repositories created after 2026-07-15).
    pub immutable_ids: bool,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            repository: "octo-org/shop".into(),
            git_ref: "refs/heads/main".into(),
            environment: None,
            event_name: "push".into(),
            immutable_ids: false,
        }
    }
}

impl Job {
    pub fn subject(&self) -> String {
        let (owner, repo) = self.repository.split_once('/').expect("owner/repo");
        let repo_part =
            if self.immutable_ids { format!("{owner}@4242/{repo}@777777") } else { format!("{owner}/{repo}") };
        let context = match (&self.environment, self.event_name.as_str()) {
            (Some(env), _) => format!("environment:{env}"),
            (None, "pull_request") => "pull_request".to_string(),
            (None, _) => format!("ref:{}", self.git_ref),
        };
        format!("repo:{repo_part}:{context}")
    }
}

struct Inner {
    job: Job,
    request_token: String,
    base_url: OnceLock<String>,
    /// Answer 503 to this many requests before serving tokens.
    fail_next: AtomicUsize,
    requests: AtomicUsize,
    issued: Mutex<Vec<String>>,
    /// Seconds from issue to `exp` (GitHub's tokens: a few minutes).
    lifetime: std::sync::atomic::AtomicU64,
}

pub struct Issuer {
    inner: Arc<Inner>,
    /// `ACTIONS_ID_TOKEN_REQUEST_URL`
    pub token_url: String,
    /// `ACTIONS_ID_TOKEN_REQUEST_TOKEN`
    pub request_token: String,
}

fn key() -> &'static rsa::RsaPrivateKey {
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("RSA key"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Issuer {
    pub fn start(job: Job) -> Issuer {
        let request_token = format!("reqtok-{}", super::unique_account());
        let inner = Arc::new(Inner {
            job,
            request_token: request_token.clone(),
            base_url: OnceLock::new(),
            fail_next: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            issued: Mutex::new(Vec::new()),
            lifetime: std::sync::atomic::AtomicU64::new(300),
        });
        let router = Router::new()
            .route("/token", get(token))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/.well-known/jwks", get(jwks))
            .with_state(inner.clone());
        let base = super::serve(router);
        let _ = inner.base_url.set(base.clone());
        Issuer { token_url: format!("{base}/token?api-version=2.0"), request_token, inner }
    }

    /// Make the next `n` token requests fail with 503.
    pub fn fail_next(&self, n: usize) {
        self.inner.fail_next.store(n, Ordering::SeqCst);
    }

    /// Tokens issued from now on expire `seconds` after they are issued.
    pub fn set_token_lifetime(&self, seconds: u64) {
        self.inner.lifetime.store(seconds, Ordering::SeqCst);
    }

    /// Token requests received, failed ones included.
    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::SeqCst)
    }

    /// Every JWT handed out so far.
    pub fn issued(&self) -> Vec<String> {
        self.inner.issued.lock().expect("issued").clone()
    }

    /// The runner variables a job with `id-token: write` sees.
    pub fn env(&self) -> [(&'static str, String); 2] {
        [
            ("ACTIONS_ID_TOKEN_REQUEST_URL", self.token_url.clone()),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", self.request_token.clone()),
        ]
    }

    /// A signed token for `audience`, without going through HTTP (for unit-style checks).
    pub fn mint(&self, audience: &str) -> String {
        mint(&self.inner, audience)
    }
}

fn mint(inner: &Inner, audience: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let job = &inner.job;
    let (owner, _) = job.repository.split_once('/').expect("owner/repo");
    let workflow_ref = format!("{}/.github/workflows/deploy.yml@{}", job.repository, job.git_ref);
    let mut claims = json!({
        "jti": format!("jti-{now}-{}", inner.requests.load(Ordering::SeqCst)),
        "sub": job.subject(),
        "aud": audience,
        "ref": job.git_ref,
        "sha": "4f0e6c5b1a2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f",
        "repository": job.repository,
        "repository_owner": owner,
        "repository_owner_id": "4242",
        "repository_id": "777777",
        "repository_visibility": "private",
        "run_id": "9876543210",
        "run_number": "17",
        "run_attempt": "1",
        "actor": "octocat",
        "actor_id": "1",
        "workflow": "deploy",
        "workflow_ref": workflow_ref,
        "job_workflow_ref": workflow_ref,
        "event_name": job.event_name,
        "ref_type": if job.git_ref.starts_with("refs/tags/") { "tag" } else { "branch" },
        "ref_protected": "false",
        "runner_environment": "github-hosted",
        "iss": inner.base_url.get().cloned().unwrap_or_default(),
        "iat": now, "nbf": now - 5, "exp": now + inner.lifetime.load(Ordering::SeqCst),
    });
    if let Some(env) = &job.environment {
        claims["environment"] = Value::String(env.clone());
    }
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "local-test-key"});
    let signing_input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
    let signature = SigningKey::<Sha256>::new(key().clone()).sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&signature.to_bytes()))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    audience: Option<String>,
}

async fn token(State(inner): State<Arc<Inner>>, Query(q): Query<TokenQuery>, headers: HeaderMap) -> Response {
    inner.requests.fetch_add(1, Ordering::SeqCst);
    if inner.fail_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
    }
    let expected = format!("Bearer {}", inner.request_token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, Json(json!({"message": "Bad credentials"}))).into_response();
    }
    let jwt = mint(&inner, q.audience.as_deref().unwrap_or("https://github.com/octo-org"));
    inner.issued.lock().expect("issued").push(jwt.clone());
    Json(json!({"count": 1, "value": jwt})).into_response()
}

async fn discovery(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let base = inner.base_url.get().cloned().unwrap_or_default();
    Json(json!({
        "issuer": base,
        "jwks_uri": format!("{base}/.well-known/jwks"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "claims_supported": ["sub", "aud", "ref", "repository", "environment", "job_workflow_ref"],
    }))
}

async fn jwks() -> Json<Value> {
    let public = key().to_public_key();
    Json(json!({"keys": [{
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": "local-test-key",
        "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be()),
    }]}))
}

//! STS on a time-scaled clock: a loopback proxy in front of moto's STS. Every call goes to
//! moto; the answers of AssumeRoleWithWebIdentity and AssumeRole get an `Expiration` of now +
//! `DurationSeconds × scale` (moto's minimum duration is 900 s; scaled, a session lasts a few
//! seconds), and each issued access key's expiry is told to ecs-sim (`/_sim/credentials`),
//! which then refuses it with ExpiredTokenException — so a deploy really outlives its session.
//! Tests can make AssumeRoleWithWebIdentity fail (IDPCommunicationError) for the first N
//! calls, or for every call after M successes, and read which tokens and keys went through.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::stack;

#[derive(Default)]
struct Inner {
    scale: f64,
    sim_url: Option<String>,
    fail_first: usize,
    fail_after: Option<usize>,
    /// Web identity tokens presented, one per AssumeRoleWithWebIdentity call (failed ones too).
    tokens: Vec<String>,
    /// (action, access key id, expires at epoch seconds) of each issued session, in order.
    issued: Vec<(String, String, f64)>,
    web_identity_calls: usize,
    web_identity_ok: usize,
}

#[derive(Clone)]
pub struct StsProxy {
    /// `AWS_ENDPOINT_URL_STS` for deployer.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl StsProxy {
    /// Sessions last `DurationSeconds × scale`; their keys expire in `sim_url`'s ecs-sim.
    pub fn start(scale: f64, sim_url: Option<&str>) -> StsProxy {
        let inner = Arc::new(Mutex::new(Inner { scale, sim_url: sim_url.map(str::to_string), ..Inner::default() }));
        let router = Router::new().route("/", post(handle)).with_state(inner.clone());
        StsProxy { url: super::serve(router), inner }
    }

    /// The next `n` AssumeRoleWithWebIdentity calls fail with IDPCommunicationError.
    pub fn fail_first(&self, n: usize) {
        self.inner.lock().expect("sts proxy").fail_first = n;
    }

    /// After `n` successful AssumeRoleWithWebIdentity calls, every further one fails.
    pub fn fail_after(&self, n: usize) {
        self.inner.lock().expect("sts proxy").fail_after = Some(n);
    }

    pub fn tokens(&self) -> Vec<String> {
        self.inner.lock().expect("sts proxy").tokens.clone()
    }

    /// (action, access key id, expiry) of every session issued, in order.
    pub fn issued(&self) -> Vec<(String, String, f64)> {
        self.inner.lock().expect("sts proxy").issued.clone()
    }

    pub fn web_identity_calls(&self) -> usize {
        self.inner.lock().expect("sts proxy").web_identity_calls
    }
}

fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn sts_error(code: &str, message: &str) -> Response {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>test</RequestId></ErrorResponse>"
    );
    (StatusCode::BAD_REQUEST, [("content-type", "text/xml")], body).into_response()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<(usize, usize, &'a str)> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some((start, end, &text[start..end]))
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let action = get("Action").unwrap_or_default();
    if action == "AssumeRoleWithWebIdentity" {
        let mut st = inner.lock().expect("sts proxy");
        st.web_identity_calls += 1;
        st.tokens.push(get("WebIdentityToken").unwrap_or_default());
        if st.fail_first > 0 {
            st.fail_first -= 1;
            return sts_error("IDPCommunicationError", "the identity provider could not be reached (injected)");
        }
        if st.fail_after.is_some_and(|n| st.web_identity_ok >= n) {
            return sts_error("IDPCommunicationError", "the identity provider is down (injected)");
        }
        st.web_identity_ok += 1;
    }
    let mut req = reqwest::Client::new().post(format!("{}/", stack().moto_url)).body(body.clone());
    for (name, value) in &headers {
        if !matches!(name.as_str(), "host" | "content-length") {
            req = req.header(name, value);
        }
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = resp.status();
    let mut text = resp.text().await.unwrap_or_default();
    if status.is_success() && (action == "AssumeRoleWithWebIdentity" || action == "AssumeRole") {
        let (scale, sim_url) = {
            let st = inner.lock().expect("sts proxy");
            (st.scale, st.sim_url.clone())
        };
        let duration: f64 = get("DurationSeconds").and_then(|d| d.parse().ok()).unwrap_or(3600.0);
        let expires_at = now() + duration * scale;
        let stamp = aws_sdk_ecs::primitives::DateTime::from_secs_f64(expires_at)
            .fmt(aws_sdk_ecs::primitives::DateTimeFormat::DateTime)
            .expect("timestamp");
        if let Some((start, end, _)) = between(&text, "<Expiration>", "</Expiration>") {
            text.replace_range(start..end, &stamp);
        }
        let key = between(&text, "<AccessKeyId>", "</AccessKeyId>").map(|(_, _, k)| k.to_string()).unwrap_or_default();
        if let Some(sim) = sim_url {
            reqwest::Client::new()
                .post(format!("{sim}/_sim/credentials"))
                .json(&serde_json::json!({"accessKeyId": key, "expiresAt": expires_at}))
                .send()
                .await
                .expect("tell ecs-sim the key's expiry");
        }
        inner.lock().expect("sts proxy").issued.push((action.clone(), key, expires_at));
    }
    (status, [("content-type", "text/xml")], text).into_response()
}

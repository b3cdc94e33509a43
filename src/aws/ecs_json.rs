//! ECS task definitions as raw JSON (the JSON 1.1 protocol, SigV4-signed).
//!
//! The SDK's typed model cannot be built from, or printed as, the AWS CLI's JSON, and a
//! hand-written mapping of the ~150 task-definition fields would drop whatever it forgot. So
//! RegisterTaskDefinition and DescribeTaskDefinition go over the wire as the JSON the user
//! wrote and the CLI shows: nothing is lost in between. Everything else uses aws-sdk-ecs.

use aws_config::SdkConfig;
use aws_credential_types::provider::ProvideCredentials;
use serde_json::Value;

use crate::retry::{Attempt, Backoff, retry};

#[derive(Debug, thiserror::Error)]
pub enum EcsJsonError {
    #[error("ECS {op} failed: {code}: {message}")]
    Service { op: String, code: String, message: String },
    #[error("ECS {op} could not be reached at {endpoint}: {message}")]
    Transport { op: String, endpoint: String, message: String },
    #[error("no AWS credentials for ECS: {0}")]
    Credentials(String),
    #[error("cannot sign the ECS request: {0}")]
    Signing(String),
}

impl EcsJsonError {
    pub fn code(&self) -> Option<&str> {
        match self {
            EcsJsonError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// A minimal ECS JSON client sharing the SdkConfig's region, credentials and endpoint.
pub struct EcsJson {
    http: reqwest::Client,
    endpoint: String,
    region: String,
    config: SdkConfig,
}

/// `AWS_ENDPOINT_URL_ECS`, then `AWS_ENDPOINT_URL` (via the config), then the public endpoint.
fn endpoint(config: &SdkConfig, region: &str) -> String {
    let suffix = if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" };
    super::raw::endpoint(config, "ECS", format!("https://ecs.{region}.{suffix}"))
}

impl EcsJson {
    pub fn new(config: &SdkConfig) -> Self {
        let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        EcsJson {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            endpoint: endpoint(config, &region),
            region,
            config: config.clone(),
        }
    }

    /// Call `op` with `body`, retrying throttling and 5xx with backoff.
    pub async fn call(&self, op: &str, body: &Value) -> Result<Value, EcsJsonError> {
        let payload = serde_json::to_vec(body).map_err(|e| EcsJsonError::Signing(e.to_string()))?;
        let provider =
            self.config.credentials_provider().ok_or_else(|| EcsJsonError::Credentials("none configured".into()))?;
        let creds = provider.provide_credentials().await.map_err(|e| EcsJsonError::Credentials(e.to_string()))?;
        let target = format!("AmazonEC2ContainerServiceV20141113.{op}");
        let result = retry(Backoff::default(), |_| {
            let payload = payload.clone();
            let creds = creds.clone();
            let target = target.clone();
            async move {
                let headers = [("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target.as_str())];
                let signed =
                    match super::raw::sign_headers(&creds, &self.region, "ecs", &self.endpoint, &headers, &payload) {
                        Ok(s) => s,
                        Err(e) => return Attempt::Fatal(EcsJsonError::Signing(e)),
                    };
                let mut req = self.http.post(&self.endpoint).body(payload.clone());
                for (name, value) in headers.iter().copied() {
                    req = req.header(name, value);
                }
                for (name, value) in &signed {
                    req = req.header(name.as_str(), value.as_str());
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Attempt::Retry(EcsJsonError::Transport {
                            op: op.to_string(),
                            endpoint: self.endpoint.clone(),
                            message: crate::github::oidc::without_url(&e),
                        });
                    }
                };
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if status.is_success() {
                    return Attempt::Done(value);
                }
                let code = value["__type"]
                    .as_str()
                    .map(|t| t.rsplit('#').next().unwrap_or(t).to_string())
                    .unwrap_or_else(|| format!("HTTP {status}"));
                let message = value["message"]
                    .as_str()
                    .or_else(|| value["Message"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(300).collect());
                let err = EcsJsonError::Service { op: op.to_string(), code: code.clone(), message };
                if status.is_server_error() || code.contains("Throttling") || code == "TooManyRequestsException" {
                    Attempt::Retry(err)
                } else {
                    Attempt::Fatal(err)
                }
            }
        })
        .await;
        result.map_err(|(e, _)| e)
    }
}

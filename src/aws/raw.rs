//! Raw SigV4-signed AWS calls: the JSON 1.1 protocol (ECS task definitions as written,
//! CloudWatch Logs DescribeLogGroups, KMS DescribeKey) and the Query protocol (IAM
//! SimulatePrincipalPolicy). An SDK crate per service would cost more build time
//! than these three calls are worth (aws-sdk-iam alone is one of the largest). Endpoints follow
//! the standard environment (`AWS_ENDPOINT_URL_<SERVICE>`, then `AWS_ENDPOINT_URL`).

use std::time::SystemTime;

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use serde_json::Value;

use crate::retry::{Attempt, Backoff, retry};

#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("{service} {op} failed: {code}: {message}")]
    Service { service: &'static str, op: String, code: String, message: String },
    #[error("{service} {op} could not be reached at {endpoint}: {message}")]
    Transport { service: &'static str, op: String, endpoint: String, message: String },
    #[error("no AWS credentials for {0}: {1}")]
    Credentials(&'static str, String),
    #[error("cannot sign the {0} request: {1}")]
    Signing(&'static str, String),
}

impl RawError {
    pub fn code(&self) -> Option<&str> {
        match self {
            RawError::Service { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// The SigV4 headers (authorization, x-amz-date, x-amz-security-token) for one request.
fn sign_headers(
    creds: &Credentials,
    region: &str,
    service: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<(String, String)>, String> {
    let identity = creds.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let signable = SignableRequest::new("POST", url, headers.iter().copied(), SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let instructions = sign(signable, &params).map_err(|e| e.to_string())?.into_parts().0;
    Ok(instructions.headers().map(|(n, v)| (n.to_string(), v.to_string())).collect())
}

/// `AWS_ENDPOINT_URL_<ENV_NAME>`, then `AWS_ENDPOINT_URL` (via the config), then `default`.
fn endpoint(config: &SdkConfig, env_name: &str, default: String) -> String {
    if let Some(url) = std::env::var(format!("AWS_ENDPOINT_URL_{env_name}")).ok().filter(|v| !v.is_empty()) {
        return url;
    }
    if let Some(url) = config.endpoint_url() {
        return url.to_string();
    }
    default
}

fn dns_suffix(region: &str) -> &'static str {
    if region.starts_with("cn-") { "amazonaws.com.cn" } else { "amazonaws.com" }
}

/// One AWS service spoken raw.
pub struct RawClient {
    http: reqwest::Client,
    config: SdkConfig,
    service: &'static str,
    /// The SigV4 signing name.
    signing_name: &'static str,
    endpoint: String,
    region: String,
}

impl RawClient {
    fn new(config: &SdkConfig, service: &'static str, signing_name: &'static str, env_name: &str) -> Self {
        let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        let default = format!("https://{signing_name}.{region}.{}", dns_suffix(&region));
        RawClient {
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(60))
                .build()
                .unwrap_or_else(|_| reqwest::Client::new()),
            endpoint: endpoint(config, env_name, default),
            config: config.clone(),
            service,
            signing_name,
            region,
        }
    }

    /// ECS (JSON 1.1, `AmazonEC2ContainerServiceV20141113.<Op>`), for task definitions as written.
    pub fn ecs(config: &SdkConfig) -> Self {
        Self::new(config, "ECS", "ecs", "ECS")
    }

    /// CloudWatch Logs (JSON 1.1, `Logs_20140328.<Op>`).
    pub fn logs(config: &SdkConfig) -> Self {
        Self::new(config, "CloudWatch Logs", "logs", "CLOUDWATCH_LOGS")
    }

    /// KMS (JSON 1.1, `TrentService.<Op>`).
    pub fn kms(config: &SdkConfig) -> Self {
        Self::new(config, "KMS", "kms", "KMS")
    }

    /// IAM (Query, global: signed for us-east-1 in the aws partition).
    pub fn iam(config: &SdkConfig) -> Self {
        let mut c = Self::new(config, "IAM", "iam", "IAM");
        let (region, default) = match c.region.as_str() {
            r if r.starts_with("cn-") => ("cn-north-1", "https://iam.cn-north-1.amazonaws.com.cn"),
            r if r.starts_with("us-gov-") => ("us-gov-west-1", "https://iam.us-gov.amazonaws.com"),
            _ => ("us-east-1", "https://iam.amazonaws.com"),
        };
        c.region = region.to_string();
        c.endpoint = endpoint(config, "IAM", default.to_string());
        c
    }

    async fn credentials(&self) -> Result<Credentials, RawError> {
        let provider = self
            .config
            .credentials_provider()
            .ok_or_else(|| RawError::Credentials(self.service, "none configured".into()))?;
        provider.provide_credentials().await.map_err(|e| RawError::Credentials(self.service, e.to_string()))
    }

    /// POST `body` with `headers`, retrying throttling, 5xx and transport failures.
    async fn post(
        &self,
        op: &str,
        content_type: &str,
        target: Option<&str>,
        body: Vec<u8>,
    ) -> Result<String, RawError> {
        let creds = self.credentials().await?;
        let result = retry(Backoff::default(), |_| {
            let creds = creds.clone();
            let body = body.clone();
            async move {
                let mut headers = vec![("content-type", content_type)];
                if let Some(t) = target {
                    headers.push(("x-amz-target", t));
                }
                let signed =
                    match sign_headers(&creds, &self.region, self.signing_name, &self.endpoint, &headers, &body) {
                        Ok(s) => s,
                        Err(e) => return Attempt::Fatal(RawError::Signing(self.service, e)),
                    };
                let mut req = self.http.post(&self.endpoint).body(body);
                for (n, v) in &headers {
                    req = req.header(*n, *v);
                }
                for (n, v) in &signed {
                    req = req.header(n.as_str(), v.as_str());
                }
                let resp = match req.send().await {
                    Ok(r) => r,
                    Err(e) => {
                        return Attempt::Retry(RawError::Transport {
                            service: self.service,
                            op: op.to_string(),
                            endpoint: self.endpoint.clone(),
                            message: crate::github::oidc::without_url(&e),
                        });
                    }
                };
                let status = resp.status();
                let text = resp.text().await.unwrap_or_default();
                if status.is_success() {
                    return Attempt::Done(text);
                }
                let (code, message) = error_of(&text, status.as_u16());
                let err = RawError::Service { service: self.service, op: op.to_string(), code: code.clone(), message };
                if status.is_server_error() || code.contains("Throttl") || code == "TooManyRequestsException" {
                    Attempt::Retry(err)
                } else {
                    Attempt::Fatal(err)
                }
            }
        })
        .await;
        result.map_err(|(e, _)| e)
    }

    /// A JSON 1.1 call (`target_prefix.op`).
    pub async fn json(&self, target_prefix: &str, op: &str, body: &Value) -> Result<Value, RawError> {
        let target = format!("{target_prefix}.{op}");
        let text = self.post(op, "application/x-amz-json-1.1", Some(&target), body.to_string().into_bytes()).await?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// A Query-protocol call; returns the XML answer.
    pub async fn query(&self, action: &str, version: &str, params: &[(String, String)]) -> Result<String, RawError> {
        let body = {
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action).append_pair("Version", version);
            for (k, v) in params {
                form.append_pair(k, v);
            }
            form.finish()
        };
        self.post(action, "application/x-www-form-urlencoded; charset=utf-8", None, body.into_bytes()).await
    }
}

/// The error code and message of a JSON (`__type`, `message`) or XML (`<Code>`, `<Message>`) answer.
fn error_of(text: &str, status: u16) -> (String, String) {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        let code = v["__type"].as_str().map(|t| t.rsplit('#').next().unwrap_or(t).to_string());
        let message = v["message"].as_str().or_else(|| v["Message"].as_str()).map(str::to_string);
        if let Some(code) = code {
            return (code, message.unwrap_or_default());
        }
    }
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find("</")? + start;
        Some(text[start..end].to_string())
    };
    match tag("Code") {
        Some(code) => (code, tag("Message").unwrap_or_default()),
        None => (format!("HTTP {status}"), text.chars().take(300).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_read_from_json_and_xml_answers() {
        assert_eq!(
            error_of(r#"{"__type":"com.amazonaws#ResourceNotFoundException","message":"no"}"#, 400),
            ("ResourceNotFoundException".into(), "no".into())
        );
        assert_eq!(
            error_of(
                "<ErrorResponse><Error><Code>AccessDenied</Code><Message>not you</Message></Error></ErrorResponse>",
                403
            ),
            ("AccessDenied".into(), "not you".into())
        );
        assert_eq!(error_of("oops", 502), ("HTTP 502".into(), "oops".into()));
    }
}

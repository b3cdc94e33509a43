//! A small OCI distribution API client: blob HEAD / upload / mount / GET, manifest HEAD / GET /
//! PUT. Every call retries 5xx, 429 and transport failures with jittered backoff
//! ([`crate::retry`]); a 401 refreshes the credential once (the ECR token expires after 12 h).
//! Blob uploads are monolithic (POST, then one streaming PUT with a Content-Length), which ECR
//! accepts for any size; each retry starts a fresh upload session, as ECR requires. The
//! credential is never logged.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::sync::RwLock;

use super::{ImageError, MANIFEST_ACCEPT};
use crate::retry::{Attempt, Backoff, retry};

/// Produces a fresh `Authorization` header value (e.g. `Basic …` from ECR).
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<String, ImageError>> + Send>> + Send + Sync>;

pub struct Registry {
    http: reqwest::Client,
    /// `https://host` or `http://127.0.0.1:PORT`, no trailing slash.
    base: String,
    auth: RwLock<Option<String>>,
    refresh: Option<Refresh>,
    pub backoff: Backoff,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("base", &self.base).field("auth", &"<redacted>").finish()
    }
}

/// How one attempt failed.
#[derive(Debug)]
enum Fail {
    Retry(String),
    Unauthorized(String),
    Fatal(ImageError),
}

pub struct BlobBody {
    pub len: u64,
    pub body: reqwest::Body,
}

/// The answer to a manifest GET.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
}

impl Registry {
    pub fn new(base: &str, auth: Option<String>, refresh: Option<Refresh>) -> Result<Self, ImageError> {
        let base = normalize_base(base)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A stalled transfer is retried rather than waited on for ever.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            // Large streaming bodies: HTTP/1.1, one upload per connection, as docker and skopeo do.
            .http1_only()
            .build()
            .map_err(|e| ImageError::Registry(format!("cannot build an HTTP client: {e}")))?;
        Ok(Registry { http, base, auth: RwLock::new(auth), refresh, backoff: Backoff::default() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An upload `Location`, absolute or relative.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            self.url(location)
        }
    }

    async fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url);
        if let Some(a) = self.auth.read().await.as_ref() {
            rb = rb.header(AUTHORIZATION, a.as_str());
        }
        rb
    }

    /// Run `op` with retries; a 401 refreshes the credential (once per call) and retries.
    async fn with_retries<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, ImageError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Fail>>,
    {
        let refreshed = std::sync::atomic::AtomicBool::new(false);
        let refreshed = &refreshed;
        let result = retry(self.backoff, |attempt| {
            let fut = op();
            async move {
                match fut.await {
                    Ok(v) => Attempt::Done(v),
                    Err(Fail::Retry(msg)) => {
                        tracing::debug!("{what}: attempt {attempt} failed: {msg}");
                        Attempt::Retry(ImageError::Registry(format!("{what}: {msg}")))
                    }
                    Err(Fail::Unauthorized(msg))
                        if self.refresh.is_some() && !refreshed.swap(true, std::sync::atomic::Ordering::Relaxed) =>
                    {
                        let refresh = self.refresh.as_ref().expect("checked");
                        match refresh().await {
                            Ok(header) => {
                                *self.auth.write().await = Some(header);
                                Attempt::Retry(ImageError::Registry(format!("{what}: {msg}")))
                            }
                            Err(e) => Attempt::Fatal(e),
                        }
                    }
                    Err(Fail::Unauthorized(msg)) => Attempt::Fatal(ImageError::Registry(format!(
                        "{what}: the registry refused the credentials ({msg}); check the role has ecr:GetAuthorizationToken and the repository policy allows it"
                    ))),
                    Err(Fail::Fatal(e)) => Attempt::Fatal(e),
                }
            }
        })
        .await;
        result.map_err(|(e, attempts)| match e {
            ImageError::Registry(m) if attempts > 1 => ImageError::Registry(format!("{m} (after {attempts} attempts)")),
            e => e,
        })
    }

    /// Whether the repository has the blob (HEAD).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> Result<bool, ImageError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        self.with_retries(&format!("HEAD blob {digest}"), || async {
            let resp = self.request(Method::HEAD, &url).await.send().await.map_err(transport)?;
            match resp.status() {
                s if s.is_success() => Ok(true),
                StatusCode::NOT_FOUND => Ok(false),
                s => Err(classify(s, String::new(), &url)),
            }
        })
        .await
    }

    /// Upload a blob in one streaming PUT, each attempt in a fresh upload session. `open`
    /// gives the body anew for each attempt.
    pub async fn upload_blob<F, Fut>(&self, repo: &str, digest: &str, size: u64, open: F) -> Result<(), ImageError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<BlobBody, ImageError>>,
    {
        let start_url = self.url(&format!("/v2/{repo}/blobs/uploads/"));
        self.with_retries(&format!("upload blob {digest}"), || async {
            let location = self.start_upload(&start_url).await?;
            let sep = if location.contains('?') { '&' } else { '?' };
            let put_url = format!("{location}{sep}digest={digest}");
            let body = open().await.map_err(Fail::Fatal)?;
            if body.len != size {
                return Err(Fail::Fatal(ImageError::Source(format!("blob {digest} is {} bytes, expected {size}", body.len))));
            }
            let resp = self
                .request(Method::PUT, &put_url)
                .await
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body.body)
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            if status == StatusCode::CREATED || status == StatusCode::NO_CONTENT || status == StatusCode::ACCEPTED {
                check_reported_digest(resp.headers(), digest)?;
                return Ok(());
            }
            let text = resp.text().await.unwrap_or_default();
            if status == StatusCode::BAD_REQUEST && text.contains("DIGEST_INVALID") {
                return Err(Fail::Fatal(ImageError::Registry(format!(
                    "the registry computed a different digest for blob {digest}: the source bytes do not match their digest"
                ))));
            }
            Err(classify(status, text, &put_url))
        })
        .await
    }

    async fn start_upload(&self, url: &str) -> Result<String, Fail> {
        let resp = self.request(Method::POST, url).await.header(CONTENT_LENGTH, 0).send().await.map_err(transport)?;
        let status = resp.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::CREATED {
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| Fail::Retry(format!("{status} without a Location header from POST {url}")))?;
            return Ok(self.absolute(loc));
        }
        let text = resp.text().await.unwrap_or_default();
        Err(classify(status, text, url))
    }

    /// Cross-repository mount. True when mounted (201); false when the registry opened an
    /// ordinary upload instead (202), which is cancelled.
    pub async fn mount_blob(&self, to: &str, digest: &str, from: &str) -> Result<bool, ImageError> {
        let url = self.url(&format!("/v2/{to}/blobs/uploads/?mount={digest}&from={from}"));
        self.with_retries(&format!("mount blob {digest}"), || async {
            let resp =
                self.request(Method::POST, &url).await.header(CONTENT_LENGTH, 0).send().await.map_err(transport)?;
            match resp.status() {
                StatusCode::CREATED => Ok(true),
                StatusCode::ACCEPTED => {
                    if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()) {
                        let cancel = self.absolute(loc);
                        let _ = self.request(Method::DELETE, &cancel).await.send().await;
                    }
                    Ok(false)
                }
                s => Err(classify(s, resp.text().await.unwrap_or_default(), &url)),
            }
        })
        .await
    }

    /// Start a blob GET; the caller streams the body. Retries until headers arrive.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> Result<reqwest::Response, ImageError> {
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        self.with_retries(&format!("GET blob {digest}"), || async {
            let resp = self.request(Method::GET, &url).await.send().await.map_err(transport)?;
            match resp.status() {
                s if s.is_success() => Ok(resp),
                StatusCode::NOT_FOUND => {
                    Err(Fail::Fatal(ImageError::Registry(format!("blob {digest} does not exist in {repo}"))))
                }
                s => Err(classify(s, resp.text().await.unwrap_or_default(), &url)),
            }
        })
        .await
    }

    /// The digest a manifest reference (tag or digest) resolves to, or None when absent.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> Result<Option<String>, ImageError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.with_retries(&format!("HEAD manifest {repo}:{reference}"), || async {
            let resp = self
                .request(Method::HEAD, &url)
                .await
                .header(ACCEPT, MANIFEST_ACCEPT)
                .send()
                .await
                .map_err(transport)?;
            match resp.status() {
                s if s.is_success() => Ok(resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .or_else(|| Some(String::new()))),
                StatusCode::NOT_FOUND => Ok(None),
                s => Err(classify(s, String::new(), &url)),
            }
        })
        .await
    }

    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Result<FetchedManifest, ImageError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.with_retries(&format!("GET manifest {repo}:{reference}"), || async {
            let resp = self
                .request(Method::GET, &url)
                .await
                .header(ACCEPT, MANIFEST_ACCEPT)
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            if status == StatusCode::NOT_FOUND {
                return Err(Fail::Fatal(ImageError::Input(format!(
                    "{reference} does not exist in repository {repo} at {}",
                    self.base
                ))));
            }
            if !status.is_success() {
                return Err(classify(status, resp.text().await.unwrap_or_default(), &url));
            }
            let media_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
                .unwrap_or_default();
            let bytes = resp.bytes().await.map_err(transport)?;
            let digest = format!("sha256:{}", super::sha256_hex(&bytes));
            if reference.starts_with("sha256:") && reference != digest {
                return Err(Fail::Retry(format!("manifest bytes hash to {digest}, not {reference}")));
            }
            let doc = super::ManifestDoc::parse(&bytes, &format!("{repo}:{reference}")).map_err(Fail::Fatal)?;
            let media_type = doc
                .kind(Some(&media_type).filter(|m| m.contains("manifest") || m.contains("index")).map(|s| s.as_str()));
            Ok(FetchedManifest { media_type, digest, bytes })
        })
        .await
    }

    /// PUT a manifest under a tag or its digest; returns the digest the registry reports.
    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &Bytes,
    ) -> Result<String, ImageError> {
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        self.with_retries(&format!("PUT manifest {repo}:{reference}"), || async {
            let resp = self
                .request(Method::PUT, &url)
                .await
                .header(CONTENT_TYPE, media_type)
                .body(bytes.clone())
                .send()
                .await
                .map_err(transport)?;
            let status = resp.status();
            if status.is_success() {
                return Ok(resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string());
            }
            let text = resp.text().await.unwrap_or_default();
            if text.contains("TAG_INVALID") || text.contains("ImageTagAlreadyExists") {
                return Err(Fail::Fatal(ImageError::Registry(format!("TAG_INVALID: {}", short(&text)))));
            }
            if text.contains("BLOB_UNKNOWN") {
                return Err(Fail::Fatal(ImageError::Registry(format!(
                    "the registry refused manifest {repo}:{reference}: a blob it references is missing ({})",
                    short(&text)
                ))));
            }
            Err(classify(status, text, &url))
        })
        .await
    }
}

fn normalize_base(base: &str) -> Result<String, ImageError> {
    let base = base.trim_end_matches('/');
    let base = if base.starts_with("http://") || base.starts_with("https://") {
        base.to_string()
    } else {
        format!("https://{base}")
    };
    reqwest::Url::parse(&base)
        .map_err(|e| ImageError::Input(format!("registry endpoint {base:?} is not a URL: {e}")))?;
    Ok(base)
}

fn short(text: &str) -> String {
    let t = text.trim();
    if t.len() > 300 {
        format!("{}…", &t[..t.char_indices().nth(300).map_or(t.len(), |(i, _)| i)])
    } else {
        t.to_string()
    }
}

fn transport(e: reqwest::Error) -> Fail {
    // Connection refused/reset, timeouts, a body cut short: all worth another try.
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    Fail::Retry(msg)
}

fn classify(status: StatusCode, body: String, url: &str) -> Fail {
    let path = url.split('?').next().unwrap_or(url);
    let msg = format!(
        "{status} from {path}{}",
        if body.trim().is_empty() { String::new() } else { format!(": {}", short(&body)) }
    );
    if status == StatusCode::UNAUTHORIZED {
        Fail::Unauthorized(msg)
    } else if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        Fail::Retry(msg)
    } else {
        Fail::Fatal(ImageError::Registry(msg))
    }
}

fn check_reported_digest(headers: &HeaderMap, ours: &str) -> Result<(), Fail> {
    match headers.get("docker-content-digest").map(HeaderValue::to_str) {
        Some(Ok(reported)) if reported != ours => Err(Fail::Fatal(ImageError::Registry(format!(
            "the registry stored blob {ours} as {reported}: the bytes sent do not match their digest"
        )))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_are_normalised() {
        assert_eq!(normalize_base("http://127.0.0.1:5000/").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(
            normalize_base("123456789012.dkr.ecr.us-east-1.amazonaws.com").unwrap(),
            "https://123456789012.dkr.ecr.us-east-1.amazonaws.com"
        );
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(classify(StatusCode::SERVICE_UNAVAILABLE, String::new(), "u"), Fail::Retry(_)));
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, String::new(), "u"), Fail::Retry(_)));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, String::new(), "u"), Fail::Unauthorized(_)));
        assert!(matches!(classify(StatusCode::BAD_REQUEST, String::new(), "u"), Fail::Fatal(_)));
    }
}

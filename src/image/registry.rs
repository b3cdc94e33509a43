//! A small OCI distribution API client: blob HEAD / upload / mount / GET, manifest HEAD / GET /
//! PUT. Every call retries 5xx, 429 and transport failures with jittered backoff
//! ([`crate::retry`]); a 401 refreshes the credential once (the ECR token expires after 12 h).
//! Blob uploads are monolithic (POST, then one streaming PUT with a Content-Length), which ECR
//! accepts for any size; each retry starts a fresh upload session, as ECR requires. A body
//! whose bytes fail their digest on the way ([`BlobBody::refused`]) ends the upload for good.
//!
//! The credential is bound to the registry's origin (scheme, host and port of its base URL):
//! it is attached only to requests for that origin, an upload `Location` on another origin is
//! refused, and a redirect elsewhere is followed without it (reqwest drops `Authorization` when
//! the host or port changes; a redirect from https to http is refused). It is held as a
//! [`Secret`] (the crate's one credential type), never logged, printed or debug-formatted.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::sync::RwLock;

use super::{ImageError, MANIFEST_ACCEPT};
use crate::retry::{Attempt, Backoff, retry};
pub use crate::secret::Secret;

/// Produces a fresh `Authorization` header value (e.g. `Basic …` from ECR).
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<Secret, ImageError>> + Send>> + Send + Sync>;

pub struct Registry {
    http: reqwest::Client,
    /// `https://host` or `http://127.0.0.1:PORT`, no trailing slash.
    base: String,
    /// `base` parsed: the origin the credential is bound to.
    base_url: reqwest::Url,
    auth: RwLock<Option<Secret>>,
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
    /// Set (with the reason) when the body's bytes failed their digest on the way: the stream
    /// then ended with an error before its last byte, and the upload must not be retried.
    pub refused: Arc<OnceLock<String>>,
}

/// The answer to a manifest GET.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub media_type: String,
    pub digest: String,
    pub bytes: Bytes,
}

impl Registry {
    /// A client for the registry at `base`; `auth` (and what `refresh` gives) is sent to that
    /// origin only. Callers decide whether `base` may have the credential at all
    /// (`ecr::registry_base`, `promote::plan_source`).
    pub fn new(base: &str, auth: Option<Secret>, refresh: Option<Refresh>) -> Result<Self, ImageError> {
        let base = normalize_base(base)?;
        let base_url = reqwest::Url::parse(&base)
            .map_err(|e| ImageError::Input(format!("registry endpoint {base:?} is not a URL: {e}")))?;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let downgrade =
                    attempt.url().scheme() == "http" && attempt.previous().iter().any(|u| u.scheme() == "https");
                if attempt.previous().len() > 5 {
                    attempt.error("more than 5 redirects")
                } else if downgrade {
                    let to = attempt.url().host_str().unwrap_or_default().to_string();
                    attempt.error(format!("refused a redirect from https to http://{to}"))
                } else {
                    // reqwest drops Authorization when the host or port changes.
                    attempt.follow()
                }
            }))
            .connect_timeout(Duration::from_secs(10))
            // A stalled transfer is retried rather than waited on for ever.
            .read_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            // Large streaming bodies: HTTP/1.1, one upload per connection, as docker and skopeo do.
            .http1_only()
            .build()
            .map_err(|e| ImageError::Registry(format!("cannot build an HTTP client: {e}")))?;
        Ok(Registry { http, base, base_url, auth: RwLock::new(auth), refresh, backoff: Backoff::default() })
    }

    /// Whether `url` is on the origin the credential is bound to.
    fn same_origin(&self, url: &str) -> bool {
        reqwest::Url::parse(url).is_ok_and(|u| u.origin() == self.base_url.origin())
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// An upload `Location`, absolute or relative; one on another origin is refused, since the
    /// blob and the credential go to this registry only.
    fn absolute(&self, location: &str) -> Result<String, Fail> {
        if !(location.starts_with("http://") || location.starts_with("https://")) {
            let sep = if location.starts_with('/') { "" } else { "/" };
            return Ok(format!("{}{sep}{location}", self.base));
        }
        if self.same_origin(location) {
            return Ok(location.to_string());
        }
        let other = reqwest::Url::parse(location).map_or_else(
            |_| short(location),
            |u| {
                format!(
                    "{}://{}{}",
                    u.scheme(),
                    u.host_str().unwrap_or_default(),
                    u.port().map(|p| format!(":{p}")).unwrap_or_default()
                )
            },
        );
        Err(Fail::Fatal(ImageError::Trust(format!(
            "the registry at {} answered with an upload location on another host, {other}; deployer sends blobs and the registry credential only to {}, so it stopped (if the registry really hands uploads to another host, point --registry-endpoint at it)",
            self.base, self.base
        ))))
    }

    /// A request with the credential attached when `url` is on the registry's own origin.
    async fn request(&self, method: Method, url: &str) -> reqwest::RequestBuilder {
        let mut rb = self.http.request(method, url);
        if self.same_origin(url)
            && let Some(a) = self.auth.read().await.as_ref()
            && let Ok(mut value) = HeaderValue::from_str(a.expose())
        {
            value.set_sensitive(true);
            rb = rb.header(AUTHORIZATION, value);
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
            let refused = body.refused.clone();
            let sent = self
                .request(Method::PUT, &put_url)
                .await
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(CONTENT_LENGTH, size)
                .body(body.body)
                .send()
                .await;
            // A body that failed its digest is final, whatever the registry made of the rest.
            if let Some(why) = refused.get() {
                return Err(Fail::Fatal(ImageError::Integrity(why.clone())));
            }
            let resp = sent.map_err(transport)?;
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
            return self.absolute(loc);
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
                    if let Some(loc) = resp.headers().get(LOCATION).and_then(|v| v.to_str().ok())
                        && let Ok(cancel) = self.absolute(loc)
                    {
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
    fn the_credential_stays_on_the_registry_origin() {
        let r = Registry::new("http://127.0.0.1:5000/", Some(Secret::new("Basic x")), None).unwrap();
        assert!(r.same_origin("http://127.0.0.1:5000/v2/a/blobs/uploads/1?x=y"));
        for other in [
            "http://127.0.0.1:5001/v2/",
            "https://127.0.0.1:5000/v2/",
            "http://localhost:5000/v2/",
            "http://123456789012.dkr.ecr.attacker.test:5000/v2/",
            "not a url",
        ] {
            assert!(!r.same_origin(other), "{other}");
        }
        assert_eq!(r.absolute("/v2/a/blobs/uploads/1").unwrap(), "http://127.0.0.1:5000/v2/a/blobs/uploads/1");
        assert_eq!(r.absolute("http://127.0.0.1:5000/v2/u").unwrap(), "http://127.0.0.1:5000/v2/u");
        match r.absolute("http://123456789012.dkr.ecr.attacker.test:8080/v2/a/blobs/uploads/1?_state=x") {
            Err(Fail::Fatal(e)) => {
                let msg = e.to_string();
                assert!(msg.contains("http://123456789012.dkr.ecr.attacker.test:8080"), "{msg}");
                assert!(!msg.contains("_state"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(format!("{:?} {}", Secret::new("Basic x"), Secret::new("y")), "Secret(<redacted>) <redacted>");
        assert!(!format!("{r:?}").contains("Basic x"));
    }

    #[test]
    fn statuses_are_classified() {
        assert!(matches!(classify(StatusCode::SERVICE_UNAVAILABLE, String::new(), "u"), Fail::Retry(_)));
        assert!(matches!(classify(StatusCode::TOO_MANY_REQUESTS, String::new(), "u"), Fail::Retry(_)));
        assert!(matches!(classify(StatusCode::UNAUTHORIZED, String::new(), "u"), Fail::Unauthorized(_)));
        assert!(matches!(classify(StatusCode::BAD_REQUEST, String::new(), "u"), Fail::Fatal(_)));
    }
}

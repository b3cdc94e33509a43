//! Probing a health URL: good is a 2xx answer whose JSON body, when it has a `status`, says
//! ok/healthy/up/pass. The body is hostile input: only its first 200 characters are kept, for
//! the report, and an error never carries the URL's query (which may hold a token).

use std::time::Duration;

use super::gate::Probe;

/// GET `url` once, with a 5 s limit.
pub async fn probe(http: &reqwest::Client, url: &str) -> Probe {
    match http.get(url).timeout(Duration::from_secs(5)).send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap_or_default();
            let detail: String = body.chars().take(200).collect();
            let ok = (200..300).contains(&status) && body_says_ok(&body);
            Probe { url: url.to_string(), ok, status: Some(status), detail }
        }
        Err(e) => Probe { url: url.to_string(), ok: false, status: None, detail: crate::github::oidc::without_url(&e) },
    }
}

/// One probe of each URL, in order.
pub async fn probe_all(http: &reqwest::Client, urls: &[String]) -> Vec<Probe> {
    let mut out = Vec::with_capacity(urls.len());
    for url in urls {
        out.push(probe(http, url).await);
    }
    out
}

/// A JSON body's `status`, when present, must be ok/healthy/up/pass; any other body is fine.
fn body_says_ok(body: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match v.get("status").and_then(|s| s.as_str()) {
            Some(s) => matches!(s.to_ascii_lowercase().as_str(), "ok" | "healthy" | "up" | "pass"),
            None => true,
        },
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_status_must_say_healthy() {
        let table = [
            (r#"{"status":"healthy","version":"v1"}"#, true),
            (r#"{"status":"UP"}"#, true),
            (r#"{"status":"degraded"}"#, false),
            (r#"{"version":"v1"}"#, true),
            ("OK", true),
            (r#"{"status":5}"#, true),
        ];
        for (body, ok) in table {
            assert_eq!(body_says_ok(body), ok, "{body}");
        }
    }
}

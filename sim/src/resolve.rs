//! What the ECS agent does before a container starts: resolve `secrets[].valueFrom` against SSM /
//! Secrets Manager (here: moto over plain HTTP) and check that the registry holds the image.

use serde_json::{Value, json};

/// A parsed `valueFrom` reference.
#[derive(Debug, PartialEq)]
pub enum SecretRef {
    Ssm {
        name: String,
        account: Option<String>,
        region: Option<String>,
    },
    SecretsManager {
        secret_id: String,
        json_key: Option<String>,
        version_stage: Option<String>,
        version_id: Option<String>,
        account: Option<String>,
        region: Option<String>,
    },
}

fn account_of(s: &str) -> Option<String> {
    (s.len() == 12 && s.chars().all(|c| c.is_ascii_digit())).then(|| s.to_string())
}

fn non_empty(s: Option<&str>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(str::to_string)
}

/// Parses an SSM parameter name/ARN or a Secrets Manager ARN (with optional
/// `:json-key:version-stage:version-id` suffix).
pub fn parse_value_from(v: &str) -> SecretRef {
    let parts: Vec<&str> = v.split(':').collect();
    if parts.len() >= 6 && parts[0] == "arn" && parts[2] == "secretsmanager" {
        let secret_id = parts[..7.min(parts.len())].join(":");
        return SecretRef::SecretsManager {
            secret_id,
            json_key: non_empty(parts.get(7).copied()),
            version_stage: non_empty(parts.get(8).copied()),
            version_id: non_empty(parts.get(9).copied()),
            account: account_of(parts[4]),
            region: non_empty(Some(parts[3])),
        };
    }
    if parts.len() >= 6 && parts[0] == "arn" && parts[2] == "ssm" {
        let res = parts[5..].join(":");
        let rest = res.strip_prefix("parameter").unwrap_or(&res);
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        let name = if rest.contains('/') { format!("/{rest}") } else { rest.to_string() };
        return SecretRef::Ssm { name, account: account_of(parts[4]), region: non_empty(Some(parts[3])) };
    }
    SecretRef::Ssm { name: v.to_string(), account: None, region: None }
}

/// Calls one moto JSON API (`target` like `AmazonSSM.GetParameter`) as `account` in `region`.
pub(crate) async fn moto_call(
    http: &reqwest::Client,
    endpoint: &str,
    service: &str,
    target: &str,
    account: &str,
    region: &str,
    body: Value,
) -> Result<Value, String> {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={account}/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let resp = http
        .post(endpoint)
        .header("X-Amz-Target", target)
        .header("Content-Type", "application/x-amz-json-1.1")
        .header("Authorization", auth)
        // moto maps only keys it issued to accounts; this header names the account outright.
        .header("x-moto-account-id", account)
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("request to {service} failed: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let ty = v.get("__type").and_then(Value::as_str).unwrap_or("error");
        let ty = ty.rsplit('#').next().unwrap_or(ty);
        let msg = v.get("message").or_else(|| v.get("Message")).and_then(Value::as_str).unwrap_or("");
        return Err(format!("{ty}: {msg}").trim_end_matches(": ").to_string());
    }
    Ok(v)
}

/// Resolves one secret to its value, or an agent-style error text naming the reference.
pub async fn resolve_secret(
    http: &reqwest::Client,
    endpoint: Option<&str>,
    value_from: &str,
    default_account: &str,
    default_region: &str,
) -> Result<String, String> {
    let Some(endpoint) = endpoint else {
        return Err(format!("no --aws-endpoint configured to resolve {value_from}"));
    };
    match parse_value_from(value_from) {
        SecretRef::Ssm { name, account, region } => {
            let account = account.unwrap_or_else(|| default_account.to_string());
            let region = region.unwrap_or_else(|| default_region.to_string());
            let v = moto_call(
                http,
                endpoint,
                "ssm",
                "AmazonSSM.GetParameter",
                &account,
                &region,
                json!({"Name": name, "WithDecryption": true}),
            )
            .await
            .map_err(|e| format!("retrieval of ssm parameter {value_from} failed: {e}"))?;
            v.pointer("/Parameter/Value")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| format!("ssm parameter {value_from} has no value"))
        }
        SecretRef::SecretsManager { secret_id, json_key, version_stage, version_id, account, region } => {
            let account = account.unwrap_or_else(|| default_account.to_string());
            let region = region.unwrap_or_else(|| default_region.to_string());
            let mut body = json!({"SecretId": secret_id});
            if let Some(s) = version_stage {
                body["VersionStage"] = json!(s);
            }
            if let Some(s) = version_id {
                body["VersionId"] = json!(s);
            }
            let v =
                moto_call(http, endpoint, "secretsmanager", "secretsmanager.GetSecretValue", &account, &region, body)
                    .await
                    .map_err(|e| format!("retrieval of secret {value_from} from secrets manager failed: {e}"))?;
            let s = v
                .get("SecretString")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("secret {value_from} has no SecretString"))?;
            match json_key {
                None => Ok(s.to_string()),
                Some(k) => {
                    let obj: Value = serde_json::from_str(s)
                        .map_err(|_| format!("secret {value_from}: secret string is not JSON, cannot read key {k}"))?;
                    match obj.get(&k) {
                        Some(Value::String(x)) => Ok(x.clone()),
                        Some(other) => Ok(other.to_string()),
                        None => Err(format!("secret {value_from}: key {k} not found in secret JSON")),
                    }
                }
            }
        }
    }
}

/// Repository and reference (tag or digest) of an image, ignoring its registry host.
pub fn parse_image(image: &str) -> (String, String) {
    let (host_less, _) = match image.split_once('/') {
        Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => (rest, true),
        _ => (image, false),
    };
    if let Some((repo, digest)) = host_less.split_once('@') {
        return (repo.to_string(), digest.to_string());
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = host_less.rfind('/').map(|i| i + 1).unwrap_or(0);
    match host_less[last_slash..].rfind(':') {
        Some(i) => (host_less[..last_slash + i].to_string(), host_less[last_slash + i + 1..].to_string()),
        None => (host_less.to_string(), "latest".to_string()),
    }
}

/// HEADs the manifest in the registry; Err carries the CannotPullContainerError detail.
pub async fn check_image(http: &reqwest::Client, registry: Option<&str>, image: &str) -> Result<(), String> {
    let Some(registry) = registry else { return Ok(()) };
    let (repo, reference) = parse_image(image);
    let url = format!("{}/v2/{}/manifests/{}", registry.trim_end_matches('/'), repo, reference);
    let accept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
                  application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
    let resp = http.head(&url).header("Accept", accept).send().await;
    match resp {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) if r.status().as_u16() == 404 => Err(format!(
            "pull image manifest has been retried 5 time(s): failed to resolve ref {image}: {image}: not found"
        )),
        Ok(r) => Err(format!(
            "pull image manifest has been retried 5 time(s): failed to resolve ref {image}: unexpected status {}",
            r.status()
        )),
        Err(e) => Err(format!("pull image manifest has been retried 5 time(s): failed to resolve ref {image}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_from_forms() {
        assert_eq!(
            parse_value_from("arn:aws:ssm:us-east-1:111122223333:parameter/prod/db"),
            SecretRef::Ssm {
                name: "/prod/db".into(),
                account: Some("111122223333".into()),
                region: Some("us-east-1".into())
            }
        );
        assert_eq!(
            parse_value_from("arn:aws:ssm:us-east-1:111122223333:parameter/plain"),
            SecretRef::Ssm {
                name: "plain".into(),
                account: Some("111122223333".into()),
                region: Some("us-east-1".into())
            }
        );
        assert_eq!(parse_value_from("/a/b"), SecretRef::Ssm { name: "/a/b".into(), account: None, region: None });
        match parse_value_from("arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf:password::") {
            SecretRef::SecretsManager { secret_id, json_key, version_stage, account, .. } => {
                assert_eq!(secret_id, "arn:aws:secretsmanager:eu-west-1:111122223333:secret:db-AbCdEf");
                assert_eq!(json_key.as_deref(), Some("password"));
                assert_eq!(version_stage, None);
                assert_eq!(account.as_deref(), Some("111122223333"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn image_refs() {
        assert_eq!(parse_image("127.0.0.1:5000/app:v1"), ("app".into(), "v1".into()));
        assert_eq!(
            parse_image("1.dkr.ecr.us-east-1.amazonaws.com/team/app@sha256:abc"),
            ("team/app".into(), "sha256:abc".into())
        );
        assert_eq!(parse_image("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(parse_image("library/nginx:1.27"), ("library/nginx".into(), "1.27".into()));
    }
}

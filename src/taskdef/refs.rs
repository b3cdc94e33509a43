//! Secret references: what `--secret NAME=REF` accepts, how references expand to the full
//! ARNs ECS wants, and how a `valueFrom` is taken apart again for verification. Pure.
//!
//! Accepted REF forms:
//! - a full ARN: `arn:aws:ssm:R:A:parameter/prod/shop/db_password`,
//!   `arn:aws:secretsmanager:R:A:secret:NAME-AbCdEf[:json-key:stage:version]`;
//! - `ssm:/prod/shop/db_password` (a Parameter Store name; account and region of the session);
//! - `secretsmanager:NAME[:json-key]` (a Secrets Manager name, resolved to its ARN with
//!   DescribeSecret — metadata only).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?}: {reason}")]
pub struct RefError {
    pub input: String,
    pub reason: String,
}

/// A reference as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefSpec {
    /// A full ARN, used as written.
    Arn(Arn),
    /// A Parameter Store name, e.g. `/prod/shop/db_password`.
    Ssm(String),
    /// A Secrets Manager name and optional JSON key; its ARN needs a lookup.
    SecretsManager { name: String, json_key: Option<String> },
}

/// An ARN taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

impl Arn {
    pub fn parse(s: &str) -> Option<Arn> {
        let mut parts = s.splitn(6, ':');
        let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return None;
        };
        if partition.is_empty() || service.is_empty() || resource.is_empty() {
            return None;
        }
        Some(Arn {
            partition: partition.into(),
            service: service.into(),
            region: region.into(),
            account: account.into(),
            resource: resource.into(),
        })
    }
}

pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The ARN of a Parameter Store parameter (`/a/b` → `parameter/a/b`).
pub fn ssm_arn(region: &str, account: &str, name: &str) -> String {
    format!("arn:{}:ssm:{region}:{account}:parameter/{}", partition_of(region), name.trim_start_matches('/'))
}

/// A Secrets Manager ARN narrowed to one JSON key, in ECS's `ARN:key:stage:version` form.
pub fn with_json_key(secret_arn: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{secret_arn}:{k}::"),
        None => secret_arn.to_string(),
    }
}

pub fn parse_ref(input: &str) -> Result<RefSpec, RefError> {
    let bad = |reason: &str| RefError { input: input.to_string(), reason: reason.to_string() };
    if input.starts_with("arn:") {
        let arn = Arn::parse(input)
            .ok_or_else(|| bad("not a well-formed ARN (arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE)"))?;
        check_arn(&arn).map_err(|r| bad(&r))?;
        return Ok(RefSpec::Arn(arn));
    }
    if let Some(name) = input.strip_prefix("ssm:") {
        check_parameter_name(name).map_err(|r| bad(&r))?;
        return Ok(RefSpec::Ssm(name.to_string()));
    }
    if let Some(rest) = input.strip_prefix("secretsmanager:") {
        let (name, json_key) = match rest.split_once(':') {
            Some((n, k)) if !k.is_empty() => (n, Some(k.to_string())),
            Some((_, _)) => return Err(bad("empty JSON key after ':'")),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("empty secret name"));
        }
        return Ok(RefSpec::SecretsManager { name: name.to_string(), json_key });
    }
    Err(bad("expected a full ARN, ssm:/path/name, or secretsmanager:NAME[:json-key]"))
}

fn check_parameter_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty parameter name".into());
    }
    if name.contains('/') && !name.starts_with('/') {
        return Err("a hierarchical parameter name must start with '/'".into());
    }
    if name.contains("//") || name.ends_with('/') {
        return Err("a parameter name has no empty path segments".into());
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c)) {
        return Err("parameter names hold only letters, digits and _.-/".into());
    }
    Ok(())
}

/// What a secret's `valueFrom` points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A Parameter Store parameter by name (with `/` for hierarchical names); region and
    /// account are those of the ARN, or `None` for a bare name (the task's own).
    Parameter { name: String, region: Option<String>, account: Option<String> },
    /// A Secrets Manager secret: the ARN without the JSON-key suffix, and the key if any.
    Secret { id: String, json_key: Option<String>, region: String, account: String },
}

fn check_arn(arn: &Arn) -> Result<(), String> {
    if arn.account.len() != 12 || !arn.account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("the account id {:?} is not 12 digits", arn.account));
    }
    if arn.region.is_empty() {
        return Err("the region is empty".into());
    }
    match arn.service.as_str() {
        "ssm" => {
            let name = arn.resource.strip_prefix("parameter/").ok_or("an SSM ARN's resource is parameter/NAME")?;
            check_parameter_name(&format!("/{name}"))
        }
        "secretsmanager" => {
            let rest = arn.resource.strip_prefix("secret:").ok_or("a Secrets Manager ARN's resource is secret:NAME")?;
            if rest.split(':').next().is_none_or(str::is_empty) {
                return Err("empty secret name".into());
            }
            if rest.split(':').count() > 4 {
                return Err("too many ':' parts (secret:NAME[:json-key:version-stage:version-id])".into());
            }
            Ok(())
        }
        other => Err(format!("ECS reads secrets from ssm or secretsmanager, not {other}")),
    }
}

/// Take a `valueFrom` apart (what ECS accepts: a parameter name or an ARN).
pub fn parse_value_from(value_from: &str) -> Result<Target, RefError> {
    let bad = |reason: String| RefError { input: value_from.to_string(), reason };
    if !value_from.starts_with("arn:") {
        check_parameter_name(value_from).map_err(bad)?;
        return Ok(Target::Parameter { name: value_from.to_string(), region: None, account: None });
    }
    let arn = Arn::parse(value_from).ok_or_else(|| bad("not a well-formed ARN".into()))?;
    check_arn(&arn).map_err(bad)?;
    if arn.service == "ssm" {
        let name = arn.resource.trim_start_matches("parameter/");
        let name = if name.contains('/') { format!("/{name}") } else { name.to_string() };
        return Ok(Target::Parameter { name, region: Some(arn.region), account: Some(arn.account) });
    }
    let rest = arn.resource.trim_start_matches("secret:");
    let mut parts = rest.split(':');
    let secret_name = parts.next().unwrap_or_default();
    let json_key = parts.next().filter(|k| !k.is_empty()).map(str::to_string);
    let id = format!("arn:{}:secretsmanager:{}:{}:secret:{secret_name}", arn.partition, arn.region, arn.account);
    Ok(Target::Secret { id, json_key, region: arn.region, account: arn.account })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_in_every_accepted_form() {
        assert_eq!(parse_ref("ssm:/prod/shop/db_password"), Ok(RefSpec::Ssm("/prod/shop/db_password".into())));
        assert_eq!(parse_ref("ssm:PLAIN"), Ok(RefSpec::Ssm("PLAIN".into())));
        assert_eq!(
            parse_ref("secretsmanager:/shop/production/database-credentials:DB_PASSWORD"),
            Ok(RefSpec::SecretsManager {
                name: "/shop/production/database-credentials".into(),
                json_key: Some("DB_PASSWORD".into())
            })
        );
        assert_eq!(
            parse_ref("secretsmanager:api-key"),
            Ok(RefSpec::SecretsManager { name: "api-key".into(), json_key: None })
        );
        let arn = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:db-AbCdEf:password::";
        assert!(matches!(parse_ref(arn), Ok(RefSpec::Arn(a)) if a.service == "secretsmanager"));
        assert!(matches!(parse_ref("arn:aws:ssm:eu-west-1:111111111111:parameter/a/b"), Ok(RefSpec::Arn(_))));
    }

    #[test]
    fn bad_references_say_why() {
        let table = [
            ("", "expected a full ARN"),
            ("/prod/x", "expected a full ARN"),
            ("ssm:", "empty parameter name"),
            ("ssm:prod/x", "must start with '/'"),
            ("ssm:/prod//x", "empty path segments"),
            ("ssm:/prod/x y", "only letters"),
            ("secretsmanager:", "empty secret name"),
            ("secretsmanager:db:", "empty JSON key"),
            ("arn:aws:ssm", "well-formed"),
            ("arn:aws:ssm:eu-west-1:1111:parameter/a", "12 digits"),
            ("arn:aws:ssm::111111111111:parameter/a", "region is empty"),
            ("arn:aws:s3:eu-west-1:111111111111:bucket/a", "not s3"),
            ("arn:aws:ssm:eu-west-1:111111111111:param/a", "parameter/NAME"),
            ("arn:aws:secretsmanager:eu-west-1:111111111111:secret:a:b:c:d:e", "too many"),
        ];
        for (input, want) in table {
            let err = parse_ref(input).unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
        }
    }

    #[test]
    fn arns_are_built_and_taken_apart_symmetrically() {
        let arn = ssm_arn("eu-west-1", "111111111111", "/prod/shop/db_password");
        assert_eq!(arn, "arn:aws:ssm:eu-west-1:111111111111:parameter/prod/shop/db_password");
        assert_eq!(
            parse_value_from(&arn),
            Ok(Target::Parameter {
                name: "/prod/shop/db_password".into(),
                region: Some("eu-west-1".into()),
                account: Some("111111111111".into())
            })
        );
        assert_eq!(ssm_arn("cn-north-1", "111111111111", "x"), "arn:aws-cn:ssm:cn-north-1:111111111111:parameter/x");
        let secret = "arn:aws:secretsmanager:eu-west-1:111111111111:secret:/shop/prod/db-AbCdEf";
        assert_eq!(with_json_key(secret, Some("DB_PASSWORD")), format!("{secret}:DB_PASSWORD::"));
        assert_eq!(
            parse_value_from(&with_json_key(secret, Some("DB_PASSWORD"))),
            Ok(Target::Secret {
                id: secret.into(),
                json_key: Some("DB_PASSWORD".into()),
                region: "eu-west-1".into(),
                account: "111111111111".into()
            })
        );
        assert_eq!(
            parse_value_from("db_password"),
            Ok(Target::Parameter { name: "db_password".into(), region: None, account: None })
        );
    }
}

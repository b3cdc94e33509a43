//! Image references (`HOST/REPO[:TAG][@sha256:DIGEST]`) taken apart, and the one notion of
//! "this host is Amazon ECR" ([`EcrHost`]) that decides where an ECR credential may go. Pure.

use std::sync::OnceLock;

use regex::Regex;

/// Every manifest media type deployer understands, for `Accept:` headers.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference {input:?}: {reason}")]
pub struct ImageRefError {
    pub input: String,
    pub reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Registry host (with port), `None` for Docker Hub short names.
    pub host: Option<String>,
    pub repository: String,
    pub tag: Option<String>,
    /// `sha256:…`
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<ImageRef, ImageRefError> {
        let bad = |reason| ImageRefError { input: input.to_string(), reason };
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let hex = d.strip_prefix("sha256:").ok_or(bad("the digest must be sha256:<64 hex>"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
                    return Err(bad("the digest must be sha256:<64 lowercase hex>"));
                }
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_string()), path)
            }
            _ => (None, rest),
        };
        // A ':' after the last '/' starts the tag.
        let (repository, tag) = match path.rfind(':') {
            Some(i) if !path[i..].contains('/') => (&path[..i], Some(path[i + 1..].to_string())),
            _ => (path, None),
        };
        if repository.is_empty() {
            return Err(bad("no repository"));
        }
        if !repository.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)) {
            return Err(bad("repository names hold lowercase letters, digits and ._-/"));
        }
        if let Some(t) = &tag
            && (t.is_empty()
                || t.len() > 128
                || !t.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                || t.starts_with(['.', '-']))
        {
            return Err(bad("a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -"));
        }
        Ok(ImageRef { host, repository: repository.to_string(), tag, digest })
    }

    /// The digest if any, else the tag, else `latest`.
    pub fn reference(&self) -> String {
        self.digest.clone().or_else(|| self.tag.clone()).unwrap_or_else(|| "latest".into())
    }

    /// The host parsed as an ECR registry, when it is one ([`EcrHost::parse`]).
    pub fn ecr(&self) -> Option<EcrHost> {
        self.host.as_deref().and_then(EcrHost::parse)
    }

    pub fn is_ecr(&self) -> bool {
        self.ecr().is_some()
    }

    /// The account of an ECR host.
    pub fn ecr_account(&self) -> Option<String> {
        self.ecr().map(|h| h.account)
    }
}

/// A private Amazon ECR registry host: `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`,
/// or the dual-stack `<account>.dkr-ecr[-fips].<region>.on.aws`. Nothing else is ECR: a host
/// that merely contains `dkr.ecr` (`123456789012.dkr.ecr.example.test`), carries a port other
/// than 443, or ends in a dot is not, and never receives an ECR credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcrHost {
    /// The host as written (lowercase, without `:443`).
    pub host: String,
    pub account: String,
    pub region: String,
}

impl EcrHost {
    /// `host` with an optional `:443`, no scheme; `None` when it is not an ECR host.
    pub fn parse(host: &str) -> Option<EcrHost> {
        static RE: OnceLock<Regex> = OnceLock::new();
        let re = RE.get_or_init(|| {
            Regex::new(
                r"^([0-9]{12})\.(?:dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?|dkr-ecr(?:-fips)?\.([a-z0-9-]+)\.on\.aws)$",
            )
            .expect("ECR host pattern")
        });
        let host = host.to_ascii_lowercase();
        let host = host.strip_suffix(":443").unwrap_or(&host);
        let caps = re.captures(host)?;
        let region = caps.get(2).or_else(|| caps.get(3))?.as_str();
        Some(EcrHost { host: host.to_string(), account: caps[1].to_string(), region: region.to_string() })
    }

    /// A host that is not ECR but is named like it (`dkr.ecr`, `dkr-ecr` or an AWS domain in
    /// it): only a typo or an attempt to collect an ECR credential writes one, so callers
    /// refuse it outright instead of treating it as some other registry.
    pub fn looks_like(host: &str) -> bool {
        let h = host.to_ascii_lowercase();
        EcrHost::parse(&h).is_none()
            && ["dkr.ecr", "dkr-ecr", "amazonaws.com", ".on.aws"].iter().any(|needle| h.contains(needle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_split_into_host_repository_tag_and_digest() {
        let table = [
            (
                format!("111111111111.dkr.ecr.eu-west-1.amazonaws.com/shop/web@{D}"),
                Some("111111111111.dkr.ecr.eu-west-1.amazonaws.com"),
                "shop/web",
                None,
                Some(D),
            ),
            ("127.0.0.1:5000/web:v1".to_string(), Some("127.0.0.1:5000"), "web", Some("v1"), None),
            ("nginx".to_string(), None, "nginx", None, None),
            ("library/nginx:1.27".to_string(), None, "library/nginx", Some("1.27"), None),
            (format!("localhost/a:b@{D}"), Some("localhost"), "a", Some("b"), Some(D)),
        ];
        for (input, host, repo, tag, digest) in table {
            let r = ImageRef::parse(&input).unwrap();
            assert_eq!(
                (r.host.as_deref(), r.repository.as_str(), r.tag.as_deref(), r.digest.as_deref()),
                (host, repo, tag, digest),
                "{input}"
            );
        }
        let ecr = ImageRef::parse(&format!("111111111111.dkr.ecr.eu-west-1.amazonaws.com/shop/web@{D}")).unwrap();
        assert!(ecr.is_ecr());
        assert_eq!(ecr.ecr_account().as_deref(), Some("111111111111"));
        assert_eq!(ecr.reference(), D);
        assert!(!ImageRef::parse("127.0.0.1:5000/web:v1").unwrap().is_ecr());
    }

    #[test]
    fn only_real_ecr_hosts_are_ecr() {
        let ecr = [
            ("123456789012.dkr.ecr.eu-west-1.amazonaws.com", "123456789012", "eu-west-1"),
            ("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com", "123456789012", "us-gov-west-1"),
            ("123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn", "123456789012", "cn-north-1"),
            ("123456789012.dkr-ecr.us-east-1.on.aws", "123456789012", "us-east-1"),
            ("123456789012.dkr-ecr-fips.us-east-1.on.aws", "123456789012", "us-east-1"),
            ("123456789012.DKR.ECR.us-east-1.amazonaws.com", "123456789012", "us-east-1"),
            ("123456789012.dkr.ecr.us-east-1.amazonaws.com:443", "123456789012", "us-east-1"),
        ];
        for (host, account, region) in ecr {
            let h = EcrHost::parse(host).unwrap_or_else(|| panic!("{host} is ECR"));
            assert_eq!((h.account.as_str(), h.region.as_str()), (account, region), "{host}");
            assert!(!EcrHost::looks_like(host), "{host}");
        }
        let look_alikes = [
            "123456789012.dkr.ecr.attacker.test",
            "123456789012.dkr.ecr.attacker.test:8443",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.attacker.test",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:5000",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.",
            "attacker.test/123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us_east_1.amazonaws.com",
            "x123456789012.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr-ecr.us-east-1.on.aws.attacker.test",
            "public.ecr.aws.amazonaws.com.evil",
        ];
        for host in look_alikes {
            assert_eq!(EcrHost::parse(host), None, "{host}");
            assert!(EcrHost::looks_like(host), "{host}");
        }
        for other in ["127.0.0.1:5000", "ghcr.io", "registry.example.com", "localhost"] {
            assert_eq!(EcrHost::parse(other), None, "{other}");
            assert!(!EcrHost::looks_like(other), "{other}");
        }
    }

    #[test]
    fn bad_references_are_refused() {
        for bad in ["", "web@sha256:xyz", "web@md5:00", "Web:1", "web:", "web:-x", "host.io/"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}

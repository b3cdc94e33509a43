//! Image references (`HOST/REPO[:TAG][@sha256:DIGEST]`) taken apart, and whether they point at
//! ECR. Pure.

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

    pub fn is_ecr(&self) -> bool {
        self.host.as_deref().is_some_and(|h| {
            let parts: Vec<&str> = h.split('.').collect();
            parts.len() >= 6 && parts[1] == "dkr" && parts[2].starts_with("ecr") && parts[0].len() == 12
        })
    }

    /// The account of an ECR host.
    pub fn ecr_account(&self) -> Option<String> {
        self.is_ecr()
            .then(|| self.host.as_deref().unwrap_or_default().split('.').next().unwrap_or_default().to_string())
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
    fn bad_references_are_refused() {
        for bad in ["", "web@sha256:xyz", "web@md5:00", "Web:1", "web:", "web:-x", "host.io/"] {
            assert!(ImageRef::parse(bad).is_err(), "{bad}");
        }
    }
}

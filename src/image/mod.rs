//! Container images without a daemon: read an image from disk (`source`, with the layer
//! `cache`), talk the OCI distribution API (`registry`), upload with bounded parallelism and
//! retries (`push`), and copy an image between repositories or registries without rebuilding it
//! (`promote`). `ecr` is the small part that speaks the ECR control plane (repositories, the auth
//! token, and where that token may be sent); `digest` checks bytes against their digests as they
//! pass.

pub mod cache;
pub mod digest;
pub mod ecr;
pub mod promote;
pub mod push;
pub mod registry;
pub mod source;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Every manifest media type a registry GET should accept.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The source cannot be read as an image; the message names the input and the fix.
    #[error("{0}")]
    Source(String),
    /// A flag value (tag, repository, reference) is not usable.
    #[error("{0}")]
    Input(String),
    /// ECR's control plane refused or failed.
    #[error("{0}")]
    Ecr(String),
    /// The registry's HTTP API failed (after retries where retrying made sense).
    #[error("{0}")]
    Registry(String),
    #[error(
        "tag {tag:?} of {repository} already points at {existing}, and this image is {ours}; the repository's tags are immutable, so use a new tag"
    )]
    ImmutableTag { repository: String, tag: String, existing: String, ours: String },
    #[error("cannot use the layer cache at {}: {source}", path.display())]
    Cache { path: PathBuf, source: std::io::Error },
    /// Bytes about to leave are not the bytes their digest names; the upload was cut short.
    #[error("{0}")]
    Integrity(String),
    /// A registry address or credential binding deployer refuses (look-alike ECR hosts, an ECR
    /// token sent anywhere but ECR or the explicit endpoint).
    #[error("{0}")]
    Trust(String),
}

/// `sha256:<64 hex>`.
pub fn check_digest(d: &str) -> Result<&str, ImageError> {
    match d.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(ImageError::Source(format!("{d:?} is not a sha256 digest"))),
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 15) as usize] as char);
    }
    s
}

/// An OCI descriptor, as manifests and indexes list their parts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
}

/// The parts of a manifest or an index deployer reads (the bytes themselves are kept as they
/// are, so digests never change).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub config: Option<Descriptor>,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl ManifestDoc {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self, ImageError> {
        serde_json::from_slice(bytes).map_err(|e| ImageError::Source(format!("{what} is not a valid manifest: {e}")))
    }

    /// The media type: the document's own field, else what it looks like.
    pub fn kind(&self, declared: Option<&str>) -> String {
        if let Some(m) = declared.filter(|m| !m.is_empty()).or(self.media_type.as_deref()) {
            return m.to_string();
        }
        if !self.manifests.is_empty() { OCI_INDEX.into() } else { OCI_MANIFEST.into() }
    }
}

/// Tag rules of the distribution spec: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), ImageError> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ImageError::Input(format!(
            "--tag {tag:?} is not a valid tag: use 1 to 128 of letters, digits, '_', '.', '-', not starting with '.' or '-'"
        )))
    }
}

/// ECR repository names: lowercase path components of `[a-z0-9]+([._-][a-z0-9]+)*`, 2-256 chars.
pub fn check_repository(flag: &str, name: &str) -> Result<(), ImageError> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
            && !c.as_bytes().windows(2).any(|w| b"._-".contains(&w[0]) && b"._-".contains(&w[1]))
    };
    if (2..=256).contains(&name.len()) && name.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(ImageError::Input(format!(
            "{flag} {name:?} is not a valid repository name: use lowercase letters, digits and single '.', '_', '-' or '/' separators (2 to 256 characters)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_distribution_spec() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "-x", "a:b", "a/b", "a b", "ä", &"a".repeat(129)] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repository_names_follow_ecr() {
        for ok in ["shop", "team/shop-web", "a.b_c/d"] {
            assert!(check_repository("--repository", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "Shop", "shop/", "/shop", "a--b", "a:b", "shop@x"] {
            assert!(check_repository("--repository", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn digests_are_checked() {
        assert!(check_digest(&format!("sha256:{}", "a".repeat(64))).is_ok());
        assert!(check_digest("sha256:abc").is_err());
        assert!(check_digest(&format!("sha512:{}", "a".repeat(64))).is_err());
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}

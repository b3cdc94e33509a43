//! Promotion: give an image that is already in a registry new tags, or copy it to another
//! repository or registry, without rebuilding it.
//!
//! Everything goes through the registry API, which ECR serves as well as docker-registry:
//! - same repository: GET the manifest, PUT the same bytes under each new tag (no blob moves);
//! - another repository of the same registry: HEAD each blob, cross-repository mount what is
//!   missing (`POST …/blobs/uploads/?mount=&from=`), and stream-copy a blob only when the
//!   registry answers 202 (ECR mounts only when the registry opted in);
//! - another registry: HEAD-skip, then stream each missing blob GET → PUT.
//!
//! Manifests keep their bytes, so the digest is the same everywhere.

use std::sync::Arc;

use super::push::{self, Options, Report};
use super::registry::Registry;
use super::source::{Blob, Image, Location, Manifest};
use super::{ImageError, ManifestDoc, check_digest, check_repository, is_index};

/// `REPO:TAG`, `REPO@sha256:…`, optionally with a registry host in front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRef {
    pub host: Option<String>,
    pub repo: String,
    /// A tag or a digest.
    pub reference: String,
}

impl SourceRef {
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let bad = |why: &str| ImageError::Input(format!("--from {s:?} is not REPO:TAG or REPO@sha256:DIGEST ({why})"));
        let (host, rest) = match s.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (Some(first.to_string()), rest)
            }
            _ => (None, s),
        };
        let (repo, reference) = if let Some((repo, digest)) = rest.split_once('@') {
            check_digest(digest).map_err(|_| bad("the digest is not sha256:<64 hex>"))?;
            (repo, digest.to_string())
        } else {
            let (repo, tag) = rest.rsplit_once(':').ok_or_else(|| bad("no :TAG or @DIGEST"))?;
            super::check_tag(tag).map_err(|_| bad("the tag has characters a tag cannot have"))?;
            (repo, tag.to_string())
        };
        check_repository("--from", repo)?;
        Ok(SourceRef { host, repo: repo.to_string(), reference })
    }
}

/// Read the image at `from` in `source` (manifests only; blobs stay remote).
pub async fn resolve(source: &Arc<Registry>, from: &SourceRef) -> Result<Image, ImageError> {
    let top = source.get_manifest(&from.repo, &from.reference).await?;
    let top = Manifest { digest: top.digest, media_type: top.media_type, bytes: top.bytes };
    let mut children = Vec::new();
    let mut blobs: Vec<Blob> = Vec::new();
    let remote = || Location::Remote { registry: source.clone(), repo: from.repo.clone() };
    let mut add_blobs = |m: &Manifest| -> Result<(), ImageError> {
        let doc = ManifestDoc::parse(&m.bytes, &m.digest)?;
        for d in doc.config.iter().chain(doc.layers.iter()) {
            if !blobs.iter().any(|b| b.digest == d.digest) {
                blobs.push(Blob {
                    digest: d.digest.clone(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                    location: remote(),
                });
            }
        }
        Ok(())
    };
    if is_index(&top.media_type) {
        let doc = ManifestDoc::parse(&top.bytes, &top.digest)?;
        for child in &doc.manifests {
            let m = source.get_manifest(&from.repo, &child.digest).await?;
            let m = Manifest { digest: m.digest, media_type: m.media_type, bytes: m.bytes };
            add_blobs(&m)?;
            children.push(m);
        }
    } else {
        add_blobs(&top)?;
    }
    let origin = format!("{}/{}@{}", source.base(), from.repo, top.digest);
    Ok(Image::new(top, children, blobs, origin))
}

/// Copy `image` (resolved from `from` in `source`) into `repo` of `dest` under `tags`.
pub async fn promote(
    dest: &Registry,
    same_registry: bool,
    from: &SourceRef,
    image: &Image,
    repo: &str,
    tags: &[String],
    opts: Options<'_>,
) -> Result<Report, ImageError> {
    let opts = Options { mount_from: (same_registry && from.repo != repo).then_some(from.repo.as_str()), ..opts };
    push::push(dest, repo, image, tags, opts).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_references_parse() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            SourceRef::parse("shop:v1").unwrap(),
            SourceRef { host: None, repo: "shop".into(), reference: "v1".into() }
        );
        assert_eq!(
            SourceRef::parse(&format!("team/shop@{d}")).unwrap(),
            SourceRef { host: None, repo: "team/shop".into(), reference: d.clone() }
        );
        assert_eq!(
            SourceRef::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop:rc1").unwrap(),
            SourceRef {
                host: Some("123456789012.dkr.ecr.eu-west-1.amazonaws.com".into()),
                repo: "shop".into(),
                reference: "rc1".into()
            }
        );
        assert_eq!(SourceRef::parse("127.0.0.1:5000/shop:rc1").unwrap().host.as_deref(), Some("127.0.0.1:5000"));
        for bad in ["shop", "shop@sha256:abc", "Shop:v1", "shop:bad tag", ""] {
            assert!(SourceRef::parse(bad).is_err(), "{bad}");
        }
    }
}

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
//! Manifests keep their bytes, so the digest is the same everywhere. Where the source is read
//! from, and with which credential, is decided by [`plan_source`] (pure): an ECR token only for
//! a real ECR host over https (or the explicit `--from-registry-endpoint` standing in for it),
//! no credential for any other registry, and a host named like ECR that is not ECR is refused.

use std::sync::Arc;

use super::ecr::Address;
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

/// What [`plan_source`] decides from.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceInputs<'a> {
    /// The registry host written in `--from`, if any.
    pub from_host: Option<&'a str>,
    pub from_registry: Option<&'a str>,
    pub from_registry_endpoint: Option<&'a str>,
    /// `--from-role-arn` was given.
    pub from_role: bool,
    /// The destination repository's registry host (from its ECR repository URI).
    pub dest_host: &'a str,
    /// Where the destination's registry requests go (`--registry-endpoint`, else ECR's).
    pub dest_base: &'a str,
}

/// Where promote reads the image, and with what credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePlan {
    /// The destination registry: its client and credential.
    Same,
    /// Another ECR registry: a token for `account`, from `region`'s ECR, sent to `base` only.
    Ecr { host: String, account: String, region: String, base: String },
    /// A registry that is not ECR: read without credentials.
    Anonymous { base: String },
}

/// Decide where the source of a promote is. Refused: a host named like ECR that is not ECR,
/// ECR over http, `--from-role-arn` (an ECR credential) for a registry that is not ECR, and
/// flags that would be silently ignored.
pub fn plan_source(i: &SourceInputs) -> Result<SourcePlan, ImageError> {
    let named = match (i.from_host, i.from_registry) {
        (Some(h), Some(r)) => {
            let (a, b) = (Address::parse("--from", h)?, Address::parse("--from-registry", r)?);
            if a.host != b.host {
                return Err(ImageError::Input(format!(
                    "--from names the registry {} and --from-registry {}; name the source registry once",
                    a.host, b.host
                )));
            }
            Some(("--from-registry", r))
        }
        (None, Some(r)) => Some(("--from-registry", r)),
        (Some(h), None) => Some(("--from", h)),
        (None, None) => None,
    };
    let Some((flag, source)) = named else {
        if i.from_registry_endpoint.is_some() || i.from_role {
            return Err(ImageError::Input(
                "--from-registry-endpoint and --from-role-arn are for reading another registry: name it in --from (HOST/REPO:TAG) or with --from-registry".into(),
            ));
        }
        return Ok(SourcePlan::Same);
    };
    let addr = Address::parse(flag, source)?;
    let ecr = addr.ecr(flag)?;
    let dest = Address::parse("the destination registry", i.dest_base).ok();
    if addr.host == i.dest_host || dest.is_some_and(|d| d.host == addr.host) {
        if i.from_registry_endpoint.is_some() || i.from_role {
            return Err(ImageError::Input(format!(
                "{flag} {} is the destination registry, read with the destination's credentials: drop --from-registry-endpoint and --from-role-arn",
                addr.host
            )));
        }
        return Ok(SourcePlan::Same);
    }
    match ecr {
        Some(h) => {
            let base = match i.from_registry_endpoint {
                Some(endpoint) => super::ecr::check_endpoint("--from-registry-endpoint", endpoint)?,
                None => format!("https://{}", h.host),
            };
            Ok(SourcePlan::Ecr { host: h.host, account: h.account, region: h.region, base })
        }
        None if i.from_registry_endpoint.is_some() => Err(ImageError::Input(format!(
            "--from-registry-endpoint stands in for an ECR source registry, and {} is not ECR: put the registry's address in {flag} instead",
            addr.host
        ))),
        None if i.from_role => Err(ImageError::Trust(format!(
            "--from-role-arn gives an ECR credential, and {} is not an ECR registry: deployer sends ECR credentials to ECR only; drop --from-role-arn to read it without credentials",
            addr.host
        ))),
        None => Ok(SourcePlan::Anonymous { base: addr.url }),
    }
}

/// Read the image at `from` in `source` (manifests only; blobs stay remote).
pub async fn resolve(source: &Arc<Registry>, from: &SourceRef) -> Result<Image, ImageError> {
    let top = source.get_manifest(&from.repo, &from.reference).await?;
    let top = Manifest { digest: top.digest, media_type: top.media_type, bytes: top.bytes };
    let mut children = Vec::new();
    let mut blobs: Vec<Blob> = Vec::new();
    let remote = || Location::Remote { registry: source.clone(), repo: from.repo.clone() };
    let origin = format!("{}/{}", source.base(), from.repo);
    let mut add_blobs = |m: &Manifest| -> Result<(), ImageError> {
        let doc = ManifestDoc::parse(&m.bytes, &m.digest)?;
        for d in doc.config.iter().chain(doc.layers.iter()) {
            if !blobs.iter().any(|b| b.digest == d.digest) {
                blobs.push(Blob {
                    digest: d.digest.clone(),
                    size: d.size,
                    media_type: d.media_type.clone(),
                    location: remote(),
                    name: format!("blob {} of {origin}", d.digest),
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
    let origin = format!("{origin}@{}", top.digest);
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

    #[test]
    fn the_source_gets_an_ecr_credential_only_when_it_is_ecr() {
        let dest = "111111111111.dkr.ecr.us-east-1.amazonaws.com";
        let base = SourceInputs { dest_host: dest, dest_base: "http://127.0.0.1:5000", ..Default::default() };
        let other = "222222222222.dkr.ecr.eu-west-1.amazonaws.com";
        let (https_other, http_other) = (format!("https://{other}"), format!("http://{other}"));
        let other_ecr = |b: &str| SourcePlan::Ecr {
            host: other.into(),
            account: "222222222222".into(),
            region: "eu-west-1".into(),
            base: b.into(),
        };
        let table: Vec<(&str, SourceInputs, Result<SourcePlan, &str>)> = vec![
            ("nothing named: the destination", base, Ok(SourcePlan::Same)),
            ("the destination's ECR host", SourceInputs { from_host: Some(dest), ..base }, Ok(SourcePlan::Same)),
            (
                "the destination's endpoint",
                SourceInputs { from_registry: Some("http://127.0.0.1:5000"), ..base },
                Ok(SourcePlan::Same),
            ),
            (
                "another ECR registry",
                SourceInputs { from_host: Some(other), ..base },
                Ok(other_ecr(&format!("https://{other}"))),
            ),
            (
                "another ECR registry, with a role",
                SourceInputs { from_registry: Some(&https_other), from_role: true, ..base },
                Ok(other_ecr(&format!("https://{other}"))),
            ),
            (
                "another ECR registry behind an explicit endpoint",
                SourceInputs {
                    from_host: Some(other),
                    from_registry_endpoint: Some("http://127.0.0.1:6000/"),
                    from_role: true,
                    ..base
                },
                Ok(other_ecr("http://127.0.0.1:6000")),
            ),
            (
                "another registry: anonymous",
                SourceInputs { from_registry: Some("http://127.0.0.1:6000"), ..base },
                Ok(SourcePlan::Anonymous { base: "http://127.0.0.1:6000".into() }),
            ),
            (
                "a bare host is https",
                SourceInputs { from_host: Some("ghcr.io"), ..base },
                Ok(SourcePlan::Anonymous { base: "https://ghcr.io".into() }),
            ),
            (
                "look-alike in --from-registry",
                SourceInputs { from_registry: Some("http://123456789012.dkr.ecr.attacker.test:8080"), ..base },
                Err("123456789012.dkr.ecr.attacker.test:8080 is named like an Amazon ECR registry"),
            ),
            (
                "look-alike in --from",
                SourceInputs { from_host: Some("123456789012.dkr.ecr.us-east-1.amazonaws.com.attacker.test"), ..base },
                Err("is named like an Amazon ECR registry but is not one"),
            ),
            (
                "look-alike even with a role",
                SourceInputs { from_host: Some("123456789012.dkr.ecr.attacker.test"), from_role: true, ..base },
                Err("named like an Amazon ECR registry"),
            ),
            ("ECR over http", SourceInputs { from_registry: Some(&http_other), ..base }, Err("https only")),
            (
                "a role for a registry that is not ECR",
                SourceInputs { from_registry: Some("http://127.0.0.1:6000"), from_role: true, ..base },
                Err("ECR credentials to ECR only"),
            ),
            (
                "an endpoint for a registry that is not ECR",
                SourceInputs {
                    from_host: Some("ghcr.io"),
                    from_registry_endpoint: Some("http://127.0.0.1:6000"),
                    ..base
                },
                Err("is not ECR"),
            ),
            (
                "a look-alike endpoint",
                SourceInputs {
                    from_host: Some(other),
                    from_registry_endpoint: Some("http://222222222222.dkr.ecr.attacker.test"),
                    ..base
                },
                Err("named like an Amazon ECR registry"),
            ),
            (
                "two different registries named",
                SourceInputs { from_host: Some(other), from_registry: Some("ghcr.io"), ..base },
                Err("name the source registry once"),
            ),
            (
                "a role with nothing to read",
                SourceInputs { from_role: true, ..base },
                Err("for reading another registry"),
            ),
            (
                "a role for the destination",
                SourceInputs { from_host: Some(dest), from_role: true, ..base },
                Err("is the destination registry"),
            ),
        ];
        for (name, inputs, want) in table {
            let got = plan_source(&inputs);
            match want {
                Ok(plan) => assert_eq!(got.unwrap_or_else(|e| panic!("{name}: {e}")), plan, "{name}"),
                Err(part) => {
                    let msg = got.expect_err(name).to_string();
                    assert!(msg.contains(part), "{name}: {msg}");
                }
            }
        }
    }
}

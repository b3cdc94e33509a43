//! The upload engine: HEAD every blob and skip what the repository has, upload the rest with
//! bounded parallelism (streamed from disk in 1 MiB chunks, so memory stays flat whatever the
//! layer size), then the child manifests of an index by digest, then the top manifest under
//! each tag — HEAD first, skipping a tag that already has this digest. A tag of an immutable
//! repository that points elsewhere is found before any byte moves and reported with both
//! digests. Every blob is hashed as it is read for its upload, and one that is not the blob its
//! digest names never reaches the registry whole (`digest::Verifier`).

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt, stream};

use super::ImageError;
use super::digest::{Mismatch, Verifier};
use super::registry::{BlobBody, Registry};
use super::source::{Blob, Image, Location, Manifest, human};

/// The default `--concurrency` (see README "push decisions": measured with bench/push.sh).
pub const DEFAULT_CONCURRENCY: usize = 4;

const CHUNK: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// indicatif bars on stderr.
    Bars,
    /// One log line per blob.
    Lines,
}

impl ProgressMode {
    pub fn detect(in_actions: bool) -> Self {
        if !in_actions && std::io::stderr().is_terminal() { ProgressMode::Bars } else { ProgressMode::Lines }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub concurrency: usize,
    /// The repository refuses to move a tag (ECR IMMUTABLE).
    pub immutable: bool,
    pub progress: ProgressMode,
    /// Same registry, another repository: try a cross-repository mount before uploading.
    pub mount_from: Option<&'a str>,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub digest: String,
    pub blobs_total: usize,
    pub blobs_uploaded: usize,
    pub bytes_uploaded: u64,
    pub blobs_mounted: usize,
    pub manifests_put: usize,
    /// Tags that already pointed at this digest.
    pub tags_unchanged: Vec<String>,
}

/// Push `image` to `repo` under `tags` (by digest only when `tags` is empty).
pub async fn push(
    registry: &Registry,
    repo: &str,
    image: &Image,
    tags: &[String],
    opts: Options<'_>,
) -> Result<Report, ImageError> {
    let digest = image.top.digest.clone();
    // Tags first: an immutable conflict must stop the push before anything moves.
    let mut todo_tags = Vec::new();
    let mut unchanged = Vec::new();
    for tag in tags {
        match registry.head_manifest(repo, tag).await? {
            Some(d) if d == digest => unchanged.push(tag.clone()),
            Some(existing) if opts.immutable => {
                return Err(ImageError::ImmutableTag {
                    repository: repo.to_string(),
                    tag: tag.clone(),
                    existing,
                    ours: digest,
                });
            }
            _ => todo_tags.push(tag.clone()),
        }
    }
    // Every tag already has this digest (or, untagged, the manifest is there): the registry
    // checked every blob when that manifest was written, so there is nothing to do.
    let complete =
        if tags.is_empty() { registry.head_manifest(repo, &digest).await?.is_some() } else { todo_tags.is_empty() };
    if complete {
        for tag in &unchanged {
            tracing::info!("tag {repo}:{tag} already points at {digest}");
        }
        return Ok(Report { digest, blobs_total: image.blobs.len(), tags_unchanged: unchanged, ..Report::default() });
    }
    let started = Instant::now();
    let uploaded = AtomicUsize::new(0);
    let mounted = AtomicUsize::new(0);
    let bytes = Arc::new(AtomicU64::new(0));
    let bars = match opts.progress {
        ProgressMode::Bars => Some(indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())),
        ProgressMode::Lines => None,
    };
    let total = image.blobs.len();
    let uploads = stream::iter(image.blobs.iter().enumerate())
        .map(|(i, blob)| {
            let (uploaded, mounted, bytes, bars) = (&uploaded, &mounted, bytes.clone(), bars.as_ref());
            async move {
                let label = format!("{}/{} {}", i + 1, total, short_digest(&blob.digest));
                if registry.blob_exists(repo, &blob.digest).await? {
                    tracing::info!("blob {label} ({}): already in {repo}, skipped", human(blob.size));
                    return Ok::<_, ImageError>(());
                }
                if let Some(from) = opts.mount_from
                    && registry.mount_blob(repo, &blob.digest, from).await?
                {
                    mounted.fetch_add(1, Ordering::Relaxed);
                    tracing::info!("blob {label} ({}): mounted from {from}", human(blob.size));
                    return Ok(());
                }
                let t = Instant::now();
                let bar = bars.map(|m| {
                    let bar = m.add(indicatif::ProgressBar::new(blob.size));
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                        )
                        .expect("template")
                        .progress_chars("=> "),
                    );
                    bar.set_message(label.clone());
                    bar
                });
                upload(registry, repo, blob, bar.clone()).await?;
                uploaded.fetch_add(1, Ordering::Relaxed);
                bytes.fetch_add(blob.size, Ordering::Relaxed);
                let secs = t.elapsed().as_secs_f64().max(0.001);
                match bar {
                    Some(bar) => bar.finish(),
                    None => tracing::info!(
                        "blob {label} ({}): uploaded in {secs:.1} s ({}/s)",
                        human(blob.size),
                        human((blob.size as f64 / secs) as u64)
                    ),
                }
                Ok(())
            }
        })
        .buffer_unordered(opts.concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await;
    if let Some(bars) = &bars {
        // Leave the terminal to the log lines and the result.
        let _ = bars.clear();
    }
    uploads?;
    let n = uploaded.load(Ordering::Relaxed);
    if n > 0 {
        let secs = started.elapsed().as_secs_f64().max(0.001);
        let b = bytes.load(Ordering::Relaxed);
        tracing::info!(
            "uploaded {n} of {total} blobs, {} in {secs:.1} s ({}/s)",
            human(b),
            human((b as f64 / secs) as u64)
        );
    }
    let mut manifests_put = 0;
    for child in &image.children {
        if put_if_missing(registry, repo, child, &child.digest).await? {
            manifests_put += 1;
        }
    }
    if tags.is_empty() && put_if_missing(registry, repo, &image.top, &digest).await? {
        manifests_put += 1;
    }
    for tag in &todo_tags {
        put_tag(registry, repo, &image.top, tag).await?;
        manifests_put += 1;
        tracing::info!("tagged {repo}:{tag} → {digest}");
    }
    for tag in &unchanged {
        tracing::info!("tag {repo}:{tag} already points at {digest}");
    }
    let report = Report {
        digest,
        blobs_total: total,
        blobs_uploaded: uploaded.load(Ordering::Relaxed),
        bytes_uploaded: bytes.load(Ordering::Relaxed),
        blobs_mounted: mounted.load(Ordering::Relaxed),
        manifests_put,
        tags_unchanged: unchanged,
    };
    tracing::debug!("push took {:.2} s", started.elapsed().as_secs_f64());
    Ok(report)
}

/// PUT a manifest by digest unless the repository already has it. True when PUT.
pub async fn put_if_missing(
    registry: &Registry,
    repo: &str,
    m: &Manifest,
    reference: &str,
) -> Result<bool, ImageError> {
    if registry.head_manifest(repo, &m.digest).await?.is_some() {
        return Ok(false);
    }
    let got = registry.put_manifest(repo, reference, &m.media_type, &m.bytes).await?;
    check_manifest_digest(&got, &m.digest, repo, reference)?;
    Ok(true)
}

/// PUT the manifest under `tag`, turning an immutable-tag refusal into a clear error.
pub async fn put_tag(registry: &Registry, repo: &str, m: &Manifest, tag: &str) -> Result<(), ImageError> {
    match registry.put_manifest(repo, tag, &m.media_type, &m.bytes).await {
        Ok(got) => check_manifest_digest(&got, &m.digest, repo, tag),
        Err(ImageError::Registry(msg)) if msg.starts_with("TAG_INVALID") => {
            let existing =
                registry.head_manifest(repo, tag).await.ok().flatten().unwrap_or_else(|| "another digest".into());
            Err(ImageError::ImmutableTag {
                repository: repo.to_string(),
                tag: tag.to_string(),
                existing,
                ours: m.digest.clone(),
            })
        }
        Err(e) => Err(e),
    }
}

fn check_manifest_digest(got: &str, ours: &str, repo: &str, reference: &str) -> Result<(), ImageError> {
    if !got.is_empty() && got != ours {
        return Err(ImageError::Registry(format!(
            "the registry stored {repo}:{reference} as {got}, not {ours}: it rewrote the manifest"
        )));
    }
    Ok(())
}

pub fn short_digest(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

async fn upload(
    registry: &Registry,
    repo: &str,
    blob: &Blob,
    bar: Option<indicatif::ProgressBar>,
) -> Result<(), ImageError> {
    registry
        .upload_blob(repo, &blob.digest, blob.size, || {
            let location = blob.location.clone();
            let bar = bar.clone();
            async move {
                if let Some(bar) = &bar {
                    bar.set_position(0);
                }
                body_of(location, blob, bar).await
            }
        })
        .await
}

/// What to say when `blob`'s bytes are not the blob its digest names.
fn refusal(blob: &Blob, why: &Mismatch) -> String {
    format!(
        "{} ({}): {why}, not the blob its digest names; the upload was stopped before its last byte, so the registry did not store it. The source changed or is corrupt: export or build the image again",
        blob.name, blob.digest
    )
}

/// A request body for `blob` at `location`, checked on the way by a [`Verifier`]: the chunk
/// that would complete the blob is sent only when the blob hashed to its digest, so a mismatch
/// ends the body early with an error (and sets [`BlobBody::refused`]). Files are read on a
/// blocking thread, 1 MiB at a time and at most a few chunks ahead of the network (hashed in
/// that thread); a remote blob is a GET whose body is passed on.
pub async fn body_of(
    location: Location,
    blob: &Blob,
    bar: Option<indicatif::ProgressBar>,
) -> Result<BlobBody, ImageError> {
    let inc = move |n: usize| {
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    };
    let refused: Arc<OnceLock<String>> = Arc::new(OnceLock::new());
    let mut verifier = Verifier::new(&blob.digest, blob.size);
    let (len, body) = match location {
        Location::Memory(b) => {
            if let Err(why) = verifier.feed(&b).and_then(|()| verifier.finish()) {
                return Err(ImageError::Integrity(refusal(blob, &why)));
            }
            (b.len() as u64, reqwest::Body::from(b))
        }
        Location::Remote { registry, repo } => {
            let resp = registry.get_blob(&repo, &blob.digest).await?;
            let len = resp.content_length().unwrap_or(blob.size);
            let (refused, checked) = (refused.clone(), blob.clone());
            let stream = stream::unfold(Some((resp.bytes_stream(), verifier)), move |state| {
                let (refused, checked) = (refused.clone(), checked.clone());
                async move {
                    let (mut inner, mut v) = state?;
                    let verdict = match inner.next().await {
                        Some(Ok(chunk)) => match v.feed(&chunk) {
                            Ok(()) => return Some((Ok(chunk), Some((inner, v)))),
                            Err(why) => why,
                        },
                        Some(Err(e)) => return Some((Err(std::io::Error::other(e)), None)),
                        None => match v.finish() {
                            Ok(()) => return None,
                            Err(why) => why,
                        },
                    };
                    let msg = refusal(&checked, &verdict);
                    let _ = refused.set(msg.clone());
                    Some((Err(std::io::Error::other(msg)), None))
                }
            })
            .inspect(move |c| {
                if let Ok(c) = c {
                    inc(c.len());
                }
            });
            (len, reqwest::Body::wrap_stream(stream))
        }
        Location::File { len, .. } => {
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
            let (refused, checked) = (refused.clone(), blob.clone());
            tokio::task::spawn_blocking(move || {
                let refuse = |why: Mismatch| {
                    let msg = refusal(&checked, &why);
                    let _ = refused.set(msg.clone());
                    let _ = tx.blocking_send(Err(std::io::Error::other(msg)));
                };
                let mut reader = match location.open() {
                    Ok(r) => r,
                    Err(e) => {
                        // Gone or replaced since the image was loaded: not worth a retry.
                        let msg = format!("{} ({}): cannot read it again: {e}", checked.name, checked.digest);
                        let _ = refused.set(msg.clone());
                        let _ = tx.blocking_send(Err(std::io::Error::other(msg)));
                        return;
                    }
                };
                loop {
                    // Up to one chunk, into memory that is not zeroed first.
                    let mut buf = Vec::with_capacity(CHUNK);
                    if let Err(e) = (&mut reader).take(CHUNK as u64).read_to_end(&mut buf) {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                    if buf.is_empty() {
                        if let Err(why) = verifier.finish() {
                            refuse(why);
                        }
                        return;
                    }
                    if let Err(why) = verifier.feed(&buf) {
                        refuse(why);
                        return;
                    }
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return; // the request was dropped (a retry, or an abort)
                    }
                }
            });
            let stream = tokio_stream_from(rx).inspect(move |c| {
                if let Ok(c) = c {
                    inc(c.len());
                }
            });
            (len, reqwest::Body::wrap_stream(stream))
        }
    };
    Ok(BlobBody { len, body, refused })
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    stream::poll_fn(move |cx| rx.poll_recv(cx))
}

//! Where an image comes from: an OCI image layout directory (`oci:DIR[:ref]`), a `docker save`
//! tar (`docker-archive:FILE`, legacy `manifest.json` tars and Docker 25+ tars alike), or a
//! local daemon (`docker:IMAGE`, exported with `docker save` into a temporary file first).
//!
//! Loading never reads a layer into memory: it records where each blob's bytes are (a file, or
//! an offset range inside a tar) so the uploader can stream them. OCI manifests and indexes are
//! kept as their original bytes, so every digest is preserved. Uncompressed docker-archive layers
//! are gzip-compressed once into the cache (`cache`), with the compressed digest and size
//! computed in the same pass and the uncompressed→compressed mapping remembered for the next
//! push.
//!
//! What is read is what was checked: an OCI layout's files must resolve inside the layout (a
//! blob that is a symbolic link out of it is refused), and every file is opened without
//! following a final symbolic link and must still be the file (device and inode) found when the
//! image was loaded. A docker-archive layer's diff id is checked in the pass that reads it —
//! compressed layers are decompressed on the way — and so is a cache hit, before any manifest
//! names it. The uploader hashes every blob once more as it sends it (`digest::Verifier`).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use sha2::Digest as _;

pub use super::cache::Cache;
use super::cache::{Entry, PrivateDir};
use super::digest::{self, Compression};
use super::{
    Descriptor, ImageError, ManifestDoc, OCI_CONFIG, OCI_LAYER_GZIP, OCI_MANIFEST, check_digest, hex, is_index,
    sha256_hex,
};

/// A parsed `--source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Oci { dir: PathBuf, reference: Option<String> },
    DockerArchive { file: PathBuf, reference: Option<String> },
    Docker { image: String },
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        // A path may itself contain ':'; the whole rest is the path when it exists.
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            if Path::new(rest).exists() {
                return (rest.into(), None);
            }
            match rest.rsplit_once(':') {
                Some((path, r)) if !r.contains('/') && Path::new(path).exists() => (path.into(), Some(r.to_string())),
                _ => (rest.into(), None),
            }
        };
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, reference) = split(rest);
            return Ok(SourceSpec::Oci { dir, reference });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, reference) = split(rest);
            return Ok(SourceSpec::DockerArchive { file, reference });
        }
        if let Some(rest) = s.strip_prefix("docker:") {
            if rest.is_empty() {
                return Err(ImageError::Input("--source docker: needs an image name, e.g. docker:shop:1.2".into()));
            }
            return Ok(SourceSpec::Docker { image: rest.to_string() });
        }
        Err(ImageError::Input(format!(
            "--source {s:?} has no known transport: use oci:DIR[:ref], docker-archive:FILE or docker:IMAGE"
        )))
    }
}

/// A file as it was found: opening it again must give the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(meta: &Metadata) -> Self {
        FileId { dev: meta.dev(), ino: meta.ino() }
    }
}

/// Open `path` for reading without following a symbolic link at its end, and only when it is
/// still the file `id` names (not replaced since it was checked).
pub fn open_pinned(path: &Path, id: FileId) -> io::Result<File> {
    let f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)?;
    let meta = f.metadata()?;
    if FileId::of(&meta) != id || !meta.is_file() {
        return Err(io::Error::other(format!("{} was replaced after it was checked", path.display())));
    }
    Ok(f)
}

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum Location {
    /// `len` bytes of `path` from `offset` (a whole file, or a member of a tar), which must still
    /// be the file `id` when it is opened.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
        id: FileId,
    },
    Memory(Bytes),
    /// A blob of another repository or registry (promote): streamed by a GET.
    Remote {
        registry: std::sync::Arc<super::registry::Registry>,
        repo: String,
    },
}

impl Location {
    /// A blocking reader over exactly these bytes.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match self {
            Location::File { path, offset, len, id } => {
                let mut f = open_pinned(path, *id)?;
                f.seek(SeekFrom::Start(*offset))?;
                Ok(Box::new(f.take(*len)))
            }
            Location::Memory(b) => Ok(Box::new(io::Cursor::new(b.clone()))),
            Location::Remote { .. } => Err(io::Error::other("a remote blob is streamed, not read")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub digest: String,
    pub size: u64,
    pub media_type: String,
    pub location: Location,
    /// What the blob is, for messages ("layer 2/3 (blobs/sha256/…) of oci:DIR").
    pub name: String,
}

#[derive(Debug, Clone)]
pub struct Manifest {
    pub digest: String,
    pub media_type: String,
    pub bytes: Bytes,
}

impl Manifest {
    fn new(media_type: String, bytes: Bytes) -> Self {
        Manifest { digest: format!("sha256:{}", sha256_hex(&bytes)), media_type, bytes }
    }
}

/// An image ready to push: blobs (deduplicated), child manifests of an index (pushed by
/// digest), and the top manifest (pushed under each tag).
#[derive(Debug)]
pub struct Image {
    pub top: Manifest,
    pub children: Vec<Manifest>,
    pub blobs: Vec<Blob>,
    /// What the image was read from, for messages.
    pub origin: String,
    /// Private directories the blobs are read from (a `docker save` export, compressions made
    /// without a cache), removed when the image is dropped.
    _keep: Vec<Arc<PrivateDir>>,
}

impl Image {
    /// An image whose parts are described elsewhere (promote).
    pub fn new(top: Manifest, children: Vec<Manifest>, blobs: Vec<Blob>, origin: String) -> Self {
        Image { top, children, blobs, origin, _keep: Vec::new() }
    }
}

/// Read `spec` into an [`Image`]. Blocking (file I/O, compression): call it off the async runtime.
pub fn load(spec: &SourceSpec, cache: &Cache, threads: usize) -> Result<Image, ImageError> {
    match spec {
        SourceSpec::Oci { dir, reference } => {
            let origin = format!("oci:{}", dir.display());
            let store = DirStore::open(dir)?;
            load_oci(&store, reference.as_deref(), &origin)
        }
        SourceSpec::DockerArchive { file, reference } => load_archive(file, reference.as_deref(), cache, threads),
        SourceSpec::Docker { image } => {
            let temp = PrivateDir::new("deployer-docker-save")
                .map_err(|e| ImageError::Source(format!("cannot make a directory for `docker save`: {e}")))?;
            let file = temp.path().join("image.tar");
            docker_save(image, &file)?;
            let mut img = load_archive(&file, None, cache, threads)?;
            img.origin = format!("docker:{image}");
            img._keep.push(Arc::new(temp));
            Ok(img)
        }
    }
}

fn docker_save(image: &str, file: &Path) -> Result<(), ImageError> {
    let fix = "export it where a daemon runs with `docker save -o image.tar IMAGE` and push --source docker-archive:image.tar, or build with `docker buildx build --output type=oci,tar=false,dest=DIR` and push --source oci:DIR";
    let out = std::process::Command::new("docker").arg("save").arg("-o").arg(file).arg(image).output();
    match out {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Err(ImageError::Source(format!("--source docker:{image}: the docker CLI is not installed here; {fix}")))
        }
        Err(e) => Err(ImageError::Source(format!("--source docker:{image}: cannot run `docker save`: {e}"))),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr = stderr.trim();
            if stderr.contains("Cannot connect") || stderr.contains("docker daemon") || stderr.contains("docker.sock") {
                Err(ImageError::Source(format!(
                    "--source docker:{image}: no Docker daemon is reachable ({stderr}); {fix}"
                )))
            } else {
                Err(ImageError::Source(format!("--source docker:{image}: `docker save` failed: {stderr}")))
            }
        }
        Ok(_) => Ok(()),
    }
}

/// A file of an OCI layout that resolves outside the layout.
#[derive(Debug)]
struct Outside {
    target: PathBuf,
}

impl Outside {
    fn error(&self, origin: &str, what: &str) -> ImageError {
        ImageError::Source(format!(
            "{origin}: {what} is a symbolic link to {}, outside the layout; deployer reads only files inside the layout, so copy the file into it (`cp -L`) or build the layout again",
            self.target.display()
        ))
    }
}

/// Files of an image layout or archive, by relative path.
trait Store {
    /// Where `rel`'s bytes are, or None when absent; `Outside` when it exists but resolves out
    /// of the layout, so must not be read.
    fn locate(&self, rel: &str) -> Result<Option<Location>, Outside>;
    fn origin(&self) -> &str;

    fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let loc = self
            .locate(rel)
            .map_err(|o| o.error(self.origin(), rel))?
            .ok_or_else(|| ImageError::Source(format!("{}: {rel} is missing", self.origin())))?;
        if let Location::File { len, .. } = &loc
            && *len > limit
        {
            return Err(ImageError::Source(format!(
                "{}: {rel} is {len} bytes, too large for a manifest or config",
                self.origin()
            )));
        }
        let mut buf = Vec::new();
        loc.open()
            .and_then(|mut r| r.read_to_end(&mut buf))
            .map_err(|e| ImageError::Source(format!("{}: cannot read {rel}: {e}", self.origin())))?;
        Ok(buf)
    }
}

struct DirStore {
    /// The layout directory, canonical: every file read must resolve inside it.
    root: PathBuf,
    origin: String,
}

impl DirStore {
    fn open(dir: &Path) -> Result<Self, ImageError> {
        let origin = format!("oci:{}", dir.display());
        let build =
            "build one with `docker buildx build --output type=oci,tar=false,dest=DIR` (or `skopeo copy ... oci:DIR`)";
        if !dir.exists() {
            return Err(ImageError::Source(format!(
                "--source {origin}: the directory {} does not exist; {build}",
                dir.display()
            )));
        }
        if dir.is_file() {
            return Err(ImageError::Source(format!(
                "--source {origin}: {} is a file, not an OCI layout directory; if it is a tar (buildx type=oci without tar=false, or docker save) use --source docker-archive:{}",
                dir.display(),
                dir.display()
            )));
        }
        if !dir.join("oci-layout").is_file() || !dir.join("index.json").is_file() {
            return Err(ImageError::Source(format!(
                "--source {origin}: {} is not an OCI image layout (it needs an `oci-layout` file and `index.json`); {build}",
                dir.display()
            )));
        }
        let root = std::fs::canonicalize(dir)
            .map_err(|e| ImageError::Source(format!("--source {origin}: cannot resolve {}: {e}", dir.display())))?;
        Ok(DirStore { root, origin })
    }
}

impl Store for DirStore {
    fn locate(&self, rel: &str) -> Result<Option<Location>, Outside> {
        let path = self.root.join(rel);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        // Links are resolved here, once, and must stay inside the layout; the file is then
        // opened by its resolved path without following links, and must be this very file.
        let Ok(real) = std::fs::canonicalize(&path) else { return Ok(None) };
        if !real.starts_with(&self.root) {
            return Err(Outside { target: real });
        }
        let Some(meta) = std::fs::symlink_metadata(&real).ok().filter(|m| m.is_file()) else { return Ok(None) };
        Ok(Some(Location::File { path: real, offset: 0, len: meta.len(), id: FileId::of(&meta) }))
    }
    fn origin(&self) -> &str {
        &self.origin
    }
}

/// The members of a tar file, indexed once (symlinks and hardlinks resolved within the tar).
struct TarStore {
    /// The tar, resolved; opened again only when it is still the file `id`.
    file: PathBuf,
    id: FileId,
    members: HashMap<String, (u64, u64)>,
    links: HashMap<String, String>,
    origin: String,
}

fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl TarStore {
    fn open(file: &Path) -> Result<Self, ImageError> {
        let origin = format!("docker-archive:{}", file.display());
        let fix = "create it with `docker save -o FILE IMAGE`";
        if !file.exists() {
            return Err(ImageError::Source(format!("--source {origin}: {} does not exist; {fix}", file.display())));
        }
        if file.is_dir() {
            return Err(ImageError::Source(format!(
                "--source {origin}: {} is a directory; for an OCI layout directory use --source oci:{}",
                file.display(),
                file.display()
            )));
        }
        let not_tar = |e: String| {
            ImageError::Source(format!(
                "--source {origin}: {} is not a tar archive ({e}); {fix} (a compressed tar must be decompressed first)",
                file.display()
            ))
        };
        let file = std::fs::canonicalize(file)
            .map_err(|e| ImageError::Source(format!("--source {origin}: cannot resolve: {e}")))?;
        let f = File::open(&file).map_err(|e| ImageError::Source(format!("--source {origin}: cannot open: {e}")))?;
        let id = FileId::of(&f.metadata().map_err(|e| ImageError::Source(format!("--source {origin}: {e}")))?);
        let mut magic = [0u8; 2];
        if (&f).read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b] {
            return Err(not_tar("it is gzip-compressed".into()));
        }
        (&f).seek(SeekFrom::Start(0)).map_err(|e| not_tar(e.to_string()))?;
        let mut archive = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        for entry in archive.entries().map_err(|e| not_tar(e.to_string()))? {
            let entry = entry.map_err(|e| not_tar(e.to_string()))?;
            let path = entry.path().map_err(|e| not_tar(e.to_string()))?.to_string_lossy().to_string();
            let path = normalize(&path);
            let kind = entry.header().entry_type();
            if kind.is_file() {
                members.insert(path, (entry.raw_file_position(), entry.size()));
            } else if kind.is_symlink() || kind.is_hard_link() {
                if let Ok(Some(target)) = entry.link_name() {
                    let target = target.to_string_lossy().to_string();
                    let resolved = if kind.is_symlink() {
                        let parent =
                            Path::new(&path).parent().map(|p| p.to_string_lossy().to_string()).unwrap_or_default();
                        normalize(&format!("{parent}/{target}"))
                    } else {
                        normalize(&target)
                    };
                    links.insert(path, resolved);
                }
            }
        }
        if members.is_empty() {
            return Err(not_tar("no files in it".into()));
        }
        Ok(TarStore { file, id, members, links, origin })
    }
}

impl Store for TarStore {
    fn locate(&self, rel: &str) -> Result<Option<Location>, Outside> {
        let mut p = normalize(rel);
        for _ in 0..16 {
            if let Some(&(offset, len)) = self.members.get(&p) {
                return Ok(Some(Location::File { path: self.file.clone(), offset, len, id: self.id }));
            }
            match self.links.get(&p) {
                Some(next) => p = next.clone(),
                None => return Ok(None),
            }
        }
        Ok(None)
    }
    fn origin(&self) -> &str {
        &self.origin
    }
}

const MANIFEST_LIMIT: u64 = 8 << 20;

fn blob_path(digest: &str) -> Result<String, ImageError> {
    Ok(format!("blobs/sha256/{}", check_digest(digest)?))
}

/// Read a manifest blob and check it is what its digest says.
fn read_manifest(store: &dyn Store, desc: &Descriptor) -> Result<Manifest, ImageError> {
    let rel = blob_path(&desc.digest)?;
    store.locate(&rel).map_err(|o| o.error(store.origin(), &format!("manifest {} ({rel})", desc.digest)))?;
    let bytes = store.read(&rel, MANIFEST_LIMIT).map_err(|_| {
        ImageError::Source(format!(
            "{}: manifest {} is missing ({rel}); the layout is incomplete",
            store.origin(),
            desc.digest
        ))
    })?;
    let digest = format!("sha256:{}", sha256_hex(&bytes));
    if digest != desc.digest {
        return Err(ImageError::Source(format!(
            "{}: {rel} has digest {digest}, not {} as referenced; the layout is corrupt",
            store.origin(),
            desc.digest
        )));
    }
    let doc = ManifestDoc::parse(&bytes, &format!("{}: {}", store.origin(), desc.digest))?;
    Ok(Manifest { digest, media_type: doc.kind(Some(&desc.media_type)), bytes: Bytes::from(bytes) })
}

/// Where a referenced blob is; its size must match the descriptor.
fn locate_blob(store: &dyn Store, desc: &Descriptor, what: &str) -> Result<Blob, ImageError> {
    let rel = blob_path(&desc.digest)?;
    let name = format!("{what} {} ({rel})", desc.digest);
    let location = store.locate(&rel).map_err(|o| o.error(store.origin(), &name))?.ok_or_else(|| {
        ImageError::Source(format!(
            "{}: {what} {} is missing ({rel} does not exist); the image is incomplete, export it again",
            store.origin(),
            desc.digest
        ))
    })?;
    if let Location::File { len, .. } = &location
        && *len != desc.size
    {
        return Err(ImageError::Source(format!(
            "{}: {what} {} is {len} bytes but the manifest says {}; the image is corrupt, export it again",
            store.origin(),
            desc.digest,
            desc.size
        )));
    }
    Ok(Blob {
        digest: desc.digest.clone(),
        size: desc.size,
        media_type: desc.media_type.clone(),
        location,
        name: format!("{name} of {}", store.origin()),
    })
}

fn push_unique(blobs: &mut Vec<Blob>, blob: Blob) {
    if !blobs.iter().any(|b| b.digest == blob.digest) {
        blobs.push(blob);
    }
}

/// The blobs of one (non-index) manifest.
fn manifest_blobs(store: &dyn Store, m: &Manifest, blobs: &mut Vec<Blob>) -> Result<(), ImageError> {
    let doc = ManifestDoc::parse(&m.bytes, &format!("{}: {}", store.origin(), m.digest))?;
    let config = doc
        .config
        .as_ref()
        .ok_or_else(|| ImageError::Source(format!("{}: manifest {} has no config", store.origin(), m.digest)))?;
    push_unique(blobs, locate_blob(store, config, "config")?);
    for (i, layer) in doc.layers.iter().enumerate() {
        push_unique(blobs, locate_blob(store, layer, &format!("layer {}/{}", i + 1, doc.layers.len()))?);
    }
    Ok(())
}

#[derive(Deserialize)]
struct OciIndexFile {
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn load_oci(store: &dyn Store, reference: Option<&str>, origin: &str) -> Result<Image, ImageError> {
    let index_bytes = store.read("index.json", MANIFEST_LIMIT)?;
    let index: OciIndexFile = serde_json::from_slice(&index_bytes)
        .map_err(|e| ImageError::Source(format!("{origin}: index.json is not valid: {e}")))?;
    let ref_of = |d: &Descriptor| d.annotations.as_ref().and_then(|a| a.get(REF_NAME)).cloned();
    let chosen = match reference {
        Some(r) => {
            index.manifests.iter().find(|d| ref_of(d).as_deref() == Some(r) || d.digest == r).ok_or_else(|| {
                let refs: Vec<String> = index.manifests.iter().filter_map(ref_of).collect();
                ImageError::Source(format!("{origin}: no image named {r:?} in index.json (it has: {})", list(&refs)))
            })?
        }
        None => match index.manifests.as_slice() {
            [one] => one,
            [] => return Err(ImageError::Source(format!("{origin}: index.json lists no image"))),
            many => {
                let refs: Vec<String> = many.iter().filter_map(ref_of).collect();
                return Err(ImageError::Source(format!(
                    "{origin}: index.json lists {} images; name one with oci:DIR:REF (refs: {})",
                    many.len(),
                    list(&refs)
                )));
            }
        },
    };
    let top = read_manifest(store, chosen)?;
    let mut blobs = Vec::new();
    let mut children = Vec::new();
    if is_index(&top.media_type) {
        let doc = ManifestDoc::parse(&top.bytes, origin)?;
        for child in &doc.manifests {
            let m = read_manifest(store, child)?;
            if is_index(&m.media_type) {
                return Err(ImageError::Source(format!("{origin}: nested index {} is not supported", m.digest)));
            }
            manifest_blobs(store, &m, &mut blobs)?;
            children.push(m);
        }
    } else {
        manifest_blobs(store, &top, &mut blobs)?;
    }
    Ok(Image { top, children, blobs, origin: origin.to_string(), _keep: Vec::new() })
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "no ref names".into() } else { items.join(", ") }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

#[derive(Deserialize)]
struct ImageConfig {
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

fn load_archive(file: &Path, reference: Option<&str>, cache: &Cache, threads: usize) -> Result<Image, ImageError> {
    let store = TarStore::open(file)?;
    let origin = store.origin.clone();
    let has = |rel: &str| matches!(store.locate(rel), Ok(Some(_)));
    if !has("manifest.json") {
        if has("index.json") && has("oci-layout") {
            // An OCI layout in a tar (buildx type=oci): push it as it is.
            return load_oci(&store, reference, &origin);
        }
        return Err(ImageError::Source(format!(
            "--source {origin}: no manifest.json in the tar, so it is not a `docker save` archive; create one with `docker save -o FILE IMAGE`"
        )));
    }
    let entries: Vec<ArchiveEntry> = serde_json::from_slice(&store.read("manifest.json", MANIFEST_LIMIT)?)
        .map_err(|e| ImageError::Source(format!("{origin}: manifest.json is not valid: {e}")))?;
    let entry = match (reference, entries.as_slice()) {
        (None, [one]) => one,
        (None, []) => return Err(ImageError::Source(format!("{origin}: manifest.json lists no image"))),
        (None, many) => {
            let tags: Vec<String> = many.iter().flat_map(|e| e.repo_tags.clone().unwrap_or_default()).collect();
            return Err(ImageError::Source(format!(
                "{origin}: the archive holds {} images; name one with docker-archive:FILE:REPO:TAG (tags: {})",
                many.len(),
                list(&tags)
            )));
        }
        (Some(r), all) => all
            .iter()
            .find(|e| e.repo_tags.as_ref().is_some_and(|t| t.iter().any(|t| t == r || t.ends_with(&format!("/{r}")))))
            .ok_or_else(|| ImageError::Source(format!("{origin}: no image tagged {r:?} in manifest.json")))?,
    };
    let config_bytes = store.read(&entry.config, MANIFEST_LIMIT).map_err(|_| {
        ImageError::Source(format!(
            "{origin}: the image config {} is missing from the tar; export it again",
            entry.config
        ))
    })?;
    let config: ImageConfig = serde_json::from_slice(&config_bytes)
        .map_err(|e| ImageError::Source(format!("{origin}: the image config {} is not valid: {e}", entry.config)))?;
    let diff_ids = config.rootfs.map(|r| r.diff_ids).unwrap_or_default();
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Source(format!(
            "{origin}: the config lists {} layers but manifest.json {}; the archive is corrupt",
            diff_ids.len(),
            entry.layers.len()
        )));
    }
    // Check every layer is present before any work.
    let mut layers = Vec::new();
    for (path, diff_id) in entry.layers.iter().zip(&diff_ids) {
        check_digest(diff_id)?;
        let loc = store.locate(path).ok().flatten().ok_or_else(|| {
            ImageError::Source(format!(
                "--source {origin}: layer {path} (diff id {diff_id}) is missing from the tar; the archive is incomplete, export it again with `docker save`"
            ))
        })?;
        layers.push((path.clone(), diff_id.clone(), loc));
    }
    let config_blob = Blob {
        digest: format!("sha256:{}", sha256_hex(&config_bytes)),
        size: config_bytes.len() as u64,
        media_type: OCI_CONFIG.to_string(),
        location: Location::Memory(Bytes::from(config_bytes)),
        name: format!("config {} of {origin}", entry.config),
    };
    let compressed = compress_all(&origin, layers, cache, threads)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": config_blob.size, "digest": config_blob.digest},
        "layers": compressed.iter().map(|b| serde_json::json!({
            "mediaType": b.media_type, "size": b.size, "digest": b.digest,
        })).collect::<Vec<_>>(),
    });
    let top = Manifest::new(OCI_MANIFEST.to_string(), Bytes::from(serde_json::to_vec(&manifest).expect("json")));
    let mut blobs = vec![config_blob];
    for b in compressed {
        push_unique(&mut blobs, b);
    }
    Ok(Image { top, children: Vec::new(), blobs, origin, _keep: cache.scratch_in_use().into_iter().collect() })
}

fn compress_all(
    origin: &str,
    layers: Vec<(String, String, Location)>,
    cache: &Cache,
    threads: usize,
) -> Result<Vec<Blob>, ImageError> {
    let total = layers.len();
    let mut out: Vec<Option<Result<Blob, ImageError>>> = (0..total).map(|_| None).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(&mut out);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, total.max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((path, diff_id, loc)) = layers.get(i) else { break };
                    let r = prepare_layer(origin, path, diff_id, loc, cache, i + 1, total);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| Err(ImageError::Source(format!("{origin}: layer {} was not read", i + 1)))))
        .collect()
}

/// What a cached compression turned out to be when read.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hit {
    /// Its bytes are the blob its mapping names, and decompress to the layer.
    Good,
    /// Its bytes are not what its mapping names (cut short, changed on disk, not gzip): a
    /// broken entry, dropped and made again.
    Corrupt(String),
    /// Intact bytes of another layer: the mapping lies, which only a write into the cache does.
    Planted { decompresses_to: String },
}

/// Judge one read of a cache entry (`got`) against its mapping and the layer's diff id.
fn judge_hit(entry_digest: &str, entry_size: u64, diff_id: &str, got: Result<&digest::LayerDigests, &str>) -> Hit {
    match got {
        Err(e) => Hit::Corrupt(format!("cannot be read as gzip ({e})")),
        Ok(g) if g.compressed != entry_digest || g.size != entry_size => Hit::Corrupt(format!(
            "holds {} bytes hashing to {}, not the {entry_size} bytes of {entry_digest} its mapping names",
            g.size, g.compressed
        )),
        Ok(g) if g.uncompressed != diff_id => Hit::Planted { decompresses_to: g.uncompressed.clone() },
        Ok(_) => Hit::Good,
    }
}

/// One docker-archive layer as a pushable blob, its diff id checked in the pass that reads it:
/// a cache hit (read once and checked against both digests), the layer as it is when already
/// compressed (decompressed on the way), or compressed now into the cache (digest and size
/// computed in the same pass).
fn prepare_layer(
    origin: &str,
    path: &str,
    diff_id: &str,
    loc: &Location,
    cache: &Cache,
    n: usize,
    total: usize,
) -> Result<Blob, ImageError> {
    let name = format!("layer {n}/{total} ({path}, diff id {diff_id}) of {origin}");
    if let Some(entry) = cache.lookup(diff_id) {
        let got = open_pinned(&entry.path, entry.id)
            .and_then(|f| digest::layer_digests(f, Compression::Gzip))
            .map_err(|e| e.to_string());
        match judge_hit(&entry.digest, entry.size, diff_id, got.as_ref().map_err(String::as_str)) {
            Hit::Good => {
                tracing::debug!("layer {n}/{total}: {diff_id} compressed earlier ({})", entry.digest);
                return Ok(cached_blob(entry, name));
            }
            Hit::Corrupt(why) => {
                tracing::warn!(
                    "layer {n}/{total} ({path}): the cached compression {} {why}; dropped it, compressing the layer again",
                    entry.path.display()
                );
                cache.forget(&entry);
            }
            Hit::Planted { decompresses_to } => {
                cache.forget(&entry);
                return Err(ImageError::Source(format!(
                    "{origin}: layer {path} (diff id {diff_id}): the layer cache maps it to {} ({}), which decompresses to {decompresses_to}, another layer; only a write into the cache makes such an entry, so nothing was pushed and the entry was removed: check who can write to {}, then push again",
                    entry.digest,
                    entry.mapping.display(),
                    cache.dir().map_or_else(|| "the cache".to_string(), |d| d.display().to_string())
                )));
            }
        }
    }
    let read_err = |e: io::Error| ImageError::Source(format!("{origin}: cannot read layer {path}: {e}"));
    let mut reader = loc.open().map_err(read_err)?;
    let len = match loc {
        Location::File { len, .. } => *len,
        Location::Memory(b) => b.len() as u64,
        Location::Remote { .. } => 0,
    };
    let hlen = len.min(4) as usize;
    let mut head = [0u8; 4];
    reader.read_exact(&mut head[..hlen]).map_err(read_err)?;
    if let Some(compression) = Compression::sniff(&head[..hlen]) {
        // Already compressed (a containerd-backed `docker save`): pushed as it is, once
        // decompressed here to check it is the layer the config names.
        let got =
            digest::layer_digests(io::Cursor::new(head[..hlen].to_vec()).chain(reader), compression).map_err(|e| {
                ImageError::Source(format!(
                    "{origin}: layer {path} is not valid {} data ({e}); the archive is corrupt, export it again",
                    compression.name()
                ))
            })?;
        if got.uncompressed != diff_id {
            return Err(ImageError::Source(format!(
                "{origin}: layer {path} decompresses to {} but the image config says its diff id is {diff_id}; the archive is corrupt (or was altered), export it again",
                got.uncompressed
            )));
        }
        return Ok(Blob {
            digest: got.compressed,
            size: got.size,
            media_type: compression.media_type().to_string(),
            location: loc.clone(),
            name,
        });
    }
    let started = std::time::Instant::now();
    let staging = cache.staging()?;
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ImageError::Cache { path: path.clone(), source }
    };
    let tmp = staging.join(format!("{}-{:016x}", std::process::id(), rand::random::<u64>()));
    let file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(cache_err(&tmp))?;
    let mut counted = Counted { inner: io::BufWriter::with_capacity(1 << 20, file), hasher: sha2::Sha256::new(), n: 0 };
    let mut raw_hasher = sha2::Sha256::new();
    let written = (|| -> Result<(), ImageError> {
        let mut gz = flate2::GzBuilder::new().write(&mut counted, flate2::Compression::new(6));
        gz.write_all(&head[..hlen]).map_err(cache_err(&tmp))?;
        raw_hasher.update(&head[..hlen]);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = reader.read(&mut buf).map_err(read_err)?;
            if k == 0 {
                break;
            }
            raw_hasher.update(&buf[..k]);
            gz.write_all(&buf[..k]).map_err(cache_err(&tmp))?;
        }
        gz.finish().map_err(cache_err(&tmp))?;
        Ok(())
    })()
    .and_then(|()| counted.inner.flush().map_err(cache_err(&tmp)));
    let raw = format!("sha256:{}", hex(&raw_hasher.finalize()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if raw != diff_id {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImageError::Source(format!(
            "{origin}: layer {path} has digest {raw} but the image config says {diff_id}; the archive is corrupt, export it again"
        )));
    }
    let chex = hex(&counted.hasher.finalize());
    let size = counted.n;
    let dest = cache.commit(&tmp, diff_id, &chex, size)?;
    let meta = std::fs::symlink_metadata(&dest).map_err(cache_err(&dest))?;
    tracing::info!(
        "layer {n}/{total}: compressed {} → {} in {:.1} s",
        human(len),
        human(size),
        started.elapsed().as_secs_f64()
    );
    Ok(Blob {
        digest: format!("sha256:{chex}"),
        size,
        media_type: OCI_LAYER_GZIP.to_string(),
        location: Location::File { path: dest, offset: 0, len: size, id: FileId::of(&meta) },
        name,
    })
}

fn cached_blob(entry: Entry, name: String) -> Blob {
    Blob {
        digest: entry.digest,
        size: entry.size,
        media_type: OCI_LAYER_GZIP.to_string(),
        location: Location::File { path: entry.path, offset: 0, len: entry.size, id: entry.id },
        name,
    }
}

/// Writes through, hashing and counting what passes.
struct Counted<W> {
    inner: W,
    hasher: sha2::Sha256,
    n: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.hasher.update(&buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse() {
        assert_eq!(
            SourceSpec::parse("oci:/nonexistent/dir").unwrap(),
            SourceSpec::Oci { dir: "/nonexistent/dir".into(), reference: None }
        );
        assert_eq!(SourceSpec::parse("docker:shop:1").unwrap(), SourceSpec::Docker { image: "shop:1".into() });
        let dir = std::env::temp_dir();
        let with_ref = format!("oci:{}:v1", dir.display());
        assert_eq!(
            SourceSpec::parse(&with_ref).unwrap(),
            SourceSpec::Oci { dir: dir.clone(), reference: Some("v1".into()) }
        );
        assert!(SourceSpec::parse("registry.example/shop").is_err());
        assert!(SourceSpec::parse("docker:").is_err());
    }

    #[test]
    fn cache_hits_are_judged_on_both_digests() {
        let good = digest::LayerDigests { compressed: "sha256:c".into(), size: 10, uncompressed: "sha256:d".into() };
        let table: Vec<(&str, Result<digest::LayerDigests, &str>, Hit)> = vec![
            ("intact and the right layer", Ok(good.clone()), Hit::Good),
            (
                "not gzip",
                Err("invalid gzip header"),
                Hit::Corrupt("cannot be read as gzip (invalid gzip header)".into()),
            ),
            (
                "bytes changed on disk",
                Ok(digest::LayerDigests { compressed: "sha256:x".into(), ..good.clone() }),
                Hit::Corrupt(
                    "holds 10 bytes hashing to sha256:x, not the 10 bytes of sha256:c its mapping names".into(),
                ),
            ),
            (
                "cut short",
                Ok(digest::LayerDigests { size: 9, ..good.clone() }),
                Hit::Corrupt(
                    "holds 9 bytes hashing to sha256:c, not the 10 bytes of sha256:c its mapping names".into(),
                ),
            ),
            (
                "intact bytes of another layer",
                Ok(digest::LayerDigests { uncompressed: "sha256:other".into(), ..good.clone() }),
                Hit::Planted { decompresses_to: "sha256:other".into() },
            ),
        ];
        for (name, got, want) in table {
            assert_eq!(judge_hit("sha256:c", 10, "sha256:d", got.as_ref().map_err(|e| *e)), want, "{name}");
        }
    }

    #[test]
    fn layout_files_resolve_inside_the_layout_and_are_opened_as_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("layout");
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), "{}").unwrap();
        std::fs::write(dir.join("index.json"), "{}").unwrap();
        std::fs::write(dir.join("blobs/sha256/inside"), "layer").unwrap();
        std::fs::write(tmp.path().join("secret"), "not yours").unwrap();
        std::os::unix::fs::symlink("inside", dir.join("blobs/sha256/alias")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), dir.join("blobs/sha256/out")).unwrap();
        std::os::unix::fs::symlink("../../../secret", dir.join("blobs/sha256/dotdot")).unwrap();
        let store = DirStore::open(&dir).unwrap();
        let read = |loc: &Location| {
            let mut s = String::new();
            loc.open().unwrap().read_to_string(&mut s).unwrap();
            s
        };
        let inside = store.locate("blobs/sha256/inside").unwrap().unwrap();
        assert_eq!(read(&inside), "layer");
        assert_eq!(read(&store.locate("blobs/sha256/alias").unwrap().unwrap()), "layer", "a link within the layout");
        for out in ["blobs/sha256/out", "blobs/sha256/dotdot"] {
            let e = store.locate(out).expect_err(out);
            assert!(e.target.ends_with("secret"), "{out}: {e:?}");
        }
        assert!(store.locate("blobs/sha256/missing").unwrap().is_none());
        let msg = store.read("blobs/sha256/out", 100).unwrap_err().to_string();
        assert!(msg.contains("symbolic link") && msg.contains("outside the layout"), "{msg}");
        // The checked file replaced by a link, or by another file: refused when opened.
        std::fs::rename(dir.join("blobs/sha256/inside"), tmp.path().join("checked")).unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), dir.join("blobs/sha256/inside")).unwrap();
        assert!(inside.open().is_err(), "a link in its place is not followed");
        std::fs::remove_file(dir.join("blobs/sha256/inside")).unwrap();
        // (the checked file is kept elsewhere, so its inode cannot be reused by the new one)
        std::fs::write(dir.join("blobs/sha256/inside"), "other").unwrap();
        let e = inside.open().err().expect("another file in its place");
        assert!(e.to_string().contains("replaced"), "{e}");
    }

    #[test]
    fn paths_normalize() {
        assert_eq!(normalize("./a/b/../c"), "a/c");
        assert_eq!(normalize("abc/../blobs/sha256/x"), "blobs/sha256/x");
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}

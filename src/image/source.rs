//! Where an image comes from: an OCI image layout directory (`oci:DIR[:ref]`), a `docker save`
//! tar (`docker-archive:FILE`, legacy `manifest.json` tars and Docker 25+ tars alike), or a
//! local daemon (`docker:IMAGE`, exported with `docker save` into a temporary file first).
//!
//! Loading never reads a layer into memory: it records where each blob's bytes are (a file, or
//! an offset range inside a tar) so the uploader can stream them. OCI manifests and indexes are
//! kept as their original bytes, so every digest is preserved. Uncompressed docker-archive layers
//! are gzip-compressed once into a cache, with the compressed digest and size computed in the
//! same pass and the uncompressed→compressed mapping remembered for the next push.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;
use sha2::Digest as _;

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

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum Location {
    /// `len` bytes of `path` from `offset` (a whole file, or a member of a tar).
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
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
            Location::File { path, offset, len } => {
                let mut f = File::open(path)?;
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
    _temp: Option<TempDir>,
}

impl Image {
    /// An image whose parts are described elsewhere (promote).
    pub fn new(top: Manifest, children: Vec<Manifest>, blobs: Vec<Blob>, origin: String) -> Self {
        Image { top, children, blobs, origin, _temp: None }
    }
}

/// A directory removed when dropped (the `docker save` export).
#[derive(Debug)]
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
            let dir = std::env::temp_dir().join(format!(
                "deployer-docker-save-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir)
                .map_err(|e| ImageError::Source(format!("cannot create {}: {e}", dir.display())))?;
            let temp = TempDir(dir.clone());
            let file = dir.join("image.tar");
            docker_save(image, &file)?;
            let mut img = load_archive(&file, None, cache, threads)?;
            img.origin = format!("docker:{image}");
            img._temp = Some(temp);
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

/// Files of an image layout or archive, by relative path.
trait Store {
    /// Where `rel`'s bytes are, or None when absent.
    fn locate(&self, rel: &str) -> Option<Location>;
    fn origin(&self) -> &str;

    fn read(&self, rel: &str, limit: u64) -> Result<Vec<u8>, ImageError> {
        let loc = self.locate(rel).ok_or_else(|| ImageError::Source(format!("{}: {rel} is missing", self.origin())))?;
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
    dir: PathBuf,
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
        Ok(DirStore { dir: dir.to_path_buf(), origin })
    }
}

impl Store for DirStore {
    fn locate(&self, rel: &str) -> Option<Location> {
        let path = self.dir.join(rel);
        let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file())?;
        Some(Location::File { path, offset: 0, len: meta.len() })
    }
    fn origin(&self) -> &str {
        &self.origin
    }
}

/// The members of a tar file, indexed once (symlinks and hardlinks resolved).
struct TarStore {
    file: PathBuf,
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
        let f = File::open(file).map_err(|e| ImageError::Source(format!("--source {origin}: cannot open: {e}")))?;
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
        Ok(TarStore { file: file.to_path_buf(), members, links, origin })
    }
}

impl Store for TarStore {
    fn locate(&self, rel: &str) -> Option<Location> {
        let mut p = normalize(rel);
        for _ in 0..16 {
            if let Some(&(offset, len)) = self.members.get(&p) {
                return Some(Location::File { path: self.file.clone(), offset, len });
            }
            p = self.links.get(&p)?.clone();
        }
        None
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
    let location = store.locate(&rel).ok_or_else(|| {
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
    Ok(Blob { digest: desc.digest.clone(), size: desc.size, media_type: desc.media_type.clone(), location })
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
    for layer in &doc.layers {
        push_unique(blobs, locate_blob(store, layer, "layer")?);
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
    Ok(Image { top, children, blobs, origin: origin.to_string(), _temp: None })
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
    if store.locate("manifest.json").is_none() {
        if store.locate("index.json").is_some() && store.locate("oci-layout").is_some() {
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
        let loc = store.locate(path).ok_or_else(|| {
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
    Ok(Image { top, children: Vec::new(), blobs, origin, _temp: None })
}

/// The gzip cache: `gzip/<uncompressed hex>` holds `sha256:<compressed hex> <size>`, and
/// `blobs/sha256/<compressed hex>` the compressed bytes.
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
}

impl Cache {
    /// `$DEPLOYER_CACHE_DIR`, else `$XDG_CACHE_HOME/deployer`, else `~/.cache/deployer`.
    pub fn from_env() -> Self {
        let var = |n: &str| std::env::var_os(n).filter(|v| !v.is_empty()).map(PathBuf::from);
        let dir = var("DEPLOYER_CACHE_DIR")
            .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("deployer")))
            .or_else(|| var("HOME").map(|d| d.join(".cache/deployer")))
            .unwrap_or_else(|| std::env::temp_dir().join("deployer-cache"));
        Cache { dir }
    }

    fn mapping_path(&self, diff_hex: &str) -> PathBuf {
        self.dir.join("gzip").join(diff_hex)
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    /// A cached compression of the layer whose uncompressed digest is `diff_id`.
    fn lookup(&self, diff_id: &str) -> Option<Blob> {
        let text = std::fs::read_to_string(self.mapping_path(check_digest(diff_id).ok()?)).ok()?;
        let (digest, size) = text.trim().split_once(' ')?;
        let size: u64 = size.parse().ok()?;
        let path = self.blob_path(check_digest(digest).ok()?);
        let meta = std::fs::metadata(&path).ok()?;
        (meta.len() == size).then(|| Blob {
            digest: digest.to_string(),
            size,
            media_type: OCI_LAYER_GZIP.to_string(),
            location: Location::File { path, offset: 0, len: size },
        })
    }

    fn err(&self, path: &Path) -> impl Fn(io::Error) -> ImageError {
        let path = path.to_path_buf();
        move |source| ImageError::Cache { path: path.clone(), source }
    }
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
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    out.into_iter().map(|r| r.expect("every layer handled")).collect()
}

/// One docker-archive layer as a pushable gzip blob: from the cache, as-is when it is already
/// gzip, or compressed now (into the cache, digest and size computed in the same pass).
fn prepare_layer(
    origin: &str,
    path: &str,
    diff_id: &str,
    loc: &Location,
    cache: &Cache,
    n: usize,
    total: usize,
) -> Result<Blob, ImageError> {
    if let Some(hit) = cache.lookup(diff_id) {
        tracing::debug!("layer {n}/{total}: {diff_id} compressed earlier ({})", hit.digest);
        return Ok(hit);
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
    let compressed = match &head[..hlen] {
        [0x1f, 0x8b, ..] => Some(OCI_LAYER_GZIP),
        [0x28, 0xb5, 0x2f, 0xfd] => Some("application/vnd.oci.image.layer.v1.tar+zstd"),
        _ => None,
    };
    if let Some(media_type) = compressed {
        // Already compressed (a containerd-backed `docker save`): push the bytes as they are.
        let mut hasher = sha2::Sha256::new();
        hasher.update(&head[..hlen]);
        io::copy(&mut reader, &mut HashWriter(&mut hasher)).map_err(read_err)?;
        return Ok(Blob {
            digest: format!("sha256:{}", hex(&hasher.finalize())),
            size: len,
            media_type: media_type.to_string(),
            location: loc.clone(),
        });
    }
    let started = std::time::Instant::now();
    let tmp_dir = cache.dir.join("tmp");
    std::fs::create_dir_all(&tmp_dir).map_err(cache.err(&tmp_dir))?;
    let tmp = tmp_dir.join(format!("{}-{}", std::process::id(), rand::random::<u64>()));
    let file = File::create(&tmp).map_err(cache.err(&tmp))?;
    let mut counted = Counted { inner: io::BufWriter::with_capacity(1 << 20, file), hasher: sha2::Sha256::new(), n: 0 };
    let mut raw_hasher = sha2::Sha256::new();
    {
        let mut gz = flate2::GzBuilder::new().write(&mut counted, flate2::Compression::new(6));
        gz.write_all(&head[..hlen]).map_err(cache.err(&tmp))?;
        raw_hasher.update(&head[..hlen]);
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let k = reader.read(&mut buf).map_err(read_err)?;
            if k == 0 {
                break;
            }
            raw_hasher.update(&buf[..k]);
            gz.write_all(&buf[..k]).map_err(cache.err(&tmp))?;
        }
        gz.finish().map_err(cache.err(&tmp))?;
    }
    counted.inner.flush().map_err(cache.err(&tmp))?;
    let raw = format!("sha256:{}", hex(&raw_hasher.finalize()));
    if raw != diff_id {
        let _ = std::fs::remove_file(&tmp);
        return Err(ImageError::Source(format!(
            "{origin}: layer {path} has digest {raw} but the image config says {diff_id}; the archive is corrupt, export it again"
        )));
    }
    let chex = hex(&counted.hasher.finalize());
    let size = counted.n;
    let dest = cache.blob_path(&chex);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(cache.err(parent))?;
    }
    std::fs::rename(&tmp, &dest).map_err(cache.err(&dest))?;
    let map = cache.mapping_path(check_digest(diff_id)?);
    if let Some(parent) = map.parent() {
        std::fs::create_dir_all(parent).map_err(cache.err(parent))?;
    }
    let map_tmp = tmp_dir.join(format!("map-{}-{}", std::process::id(), rand::random::<u64>()));
    std::fs::write(&map_tmp, format!("sha256:{chex} {size}\n")).map_err(cache.err(&map_tmp))?;
    std::fs::rename(&map_tmp, &map).map_err(cache.err(&map))?;
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
        location: Location::File { path: dest, offset: 0, len: size },
    })
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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

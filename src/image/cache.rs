//! The layer cache: gzip compressions of docker-archive layers, so a re-push neither reads nor
//! compresses a layer again. `gzip/<diff id hex>` maps an uncompressed layer to
//! `sha256:<compressed hex> <size>`; `blobs/sha256/<hex>` holds the compressed bytes.
//!
//! The cache is trusted only as far as it is the user's own. The default directory is
//! `$DEPLOYER_CACHE_DIR`, else `$XDG_CACHE_HOME/deployer`, else `~/.cache/deployer`, created
//! 0700; a directory (or one of its parts) not owned by the user, or writable by group or
//! others, is refused with a notice, and the push goes on without a cache. There is no shared
//! fallback: without a usable cache, layers are compressed into a private directory made for
//! the run (0700, a fresh random name, [`PrivateDir`]) and removed after it. A hit is never
//! taken on its word: `source` checks the cached bytes against both digests before a manifest
//! names them, and [`Cache::forget`] drops an entry that fails.

use std::fs::{self, DirBuilder, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::source::FileId;
use super::{ImageError, check_digest};

/// A directory made for this run only: created with a fresh random name and mode 0700 (never an
/// existing one), removed with everything in it when dropped.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// A new directory `<prefix>-<random>` under the system's temporary directory.
    pub fn new(prefix: &str) -> io::Result<PrivateDir> {
        let base = std::env::temp_dir();
        for _ in 0..16 {
            let path = base.join(format!("{prefix}-{:016x}", rand::random::<u64>()));
            match DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(PrivateDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(format!("cannot make a private directory under {}", base.display())))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A cached compression: the blob digest and size the mapping names, and where the bytes are.
#[derive(Debug, Clone)]
pub struct Entry {
    pub digest: String,
    pub size: u64,
    pub path: PathBuf,
    pub id: FileId,
    /// The mapping file, for messages.
    pub mapping: PathBuf,
}

/// The layer cache of one run; clones share it (the directory is opened once).
#[derive(Debug, Clone)]
pub struct Cache(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// The directory the environment names, opened (created, checked) on first use.
    configured: Option<PathBuf>,
    /// The checked cache directory (canonical), or None: no cache for this run.
    dir: OnceLock<Option<PathBuf>>,
    /// Where compressions go without a cache, made on first use.
    scratch: Mutex<Option<Arc<PrivateDir>>>,
}

/// The parts of the cache directory, created and checked with it.
const PARTS: [&str; 4] = ["gzip", "blobs", "blobs/sha256", "tmp"];

/// The cache directory named by the environment: `DEPLOYER_CACHE_DIR`, else
/// `XDG_CACHE_HOME/deployer`, else `HOME/.cache/deployer` (only absolute paths count, as the
/// XDG specification says); None when there is none.
pub fn default_dir(var: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let abs = |n: &str| var(n).filter(|v| Path::new(v).is_absolute()).map(PathBuf::from);
    abs("DEPLOYER_CACHE_DIR")
        .or_else(|| abs("XDG_CACHE_HOME").map(|d| d.join("deployer")))
        .or_else(|| abs("HOME").map(|d| d.join(".cache/deployer")))
}

/// Whether a directory with this owner and permission bits may hold the cache of user `me`.
pub fn judge(owner: u32, mode: u32, me: u32) -> Result<(), String> {
    if owner != me {
        return Err(format!("it is owned by uid {owner}, not by you (uid {me})"));
    }
    if mode & 0o022 != 0 {
        return Err(format!("it is writable by group or others (mode {:o})", mode & 0o7777));
    }
    Ok(())
}

fn me() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Create `dir` (0700) and its parts when missing, and check each is a directory the user owns
/// and no one else can write. The canonical path on success, the reason otherwise.
fn open_dir(dir: &Path, me: u32) -> Result<PathBuf, String> {
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    match DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create it: {e}")),
    }
    let meta = fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    judge(meta.uid(), meta.mode(), me)?;
    let root = fs::canonicalize(dir).map_err(|e| format!("cannot resolve it: {e}"))?;
    for part in PARTS {
        let p = root.join(part);
        match DirBuilder::new().mode(0o700).create(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {part}/ in it: {e}")),
        }
        // Not followed: a part that is a link elsewhere is not part of the cache.
        let meta = fs::symlink_metadata(&p).map_err(|e| format!("cannot read {part}/ in it: {e}"))?;
        if !meta.is_dir() {
            return Err(format!("{part}/ in it is not a directory"));
        }
        judge(meta.uid(), meta.mode(), me).map_err(|why| format!("{part}/ in it: {why}"))?;
    }
    Ok(root)
}

impl Cache {
    /// The cache the environment names, checked; a refusal is logged and means no cache.
    pub fn from_env() -> Cache {
        Cache::at(default_dir(|n| std::env::var(n).ok().filter(|v| !v.is_empty())))
    }

    /// The cache at `dir`, or none. The directory is created and checked when first needed
    /// (a push of an OCI layout never touches it).
    pub fn at(dir: Option<PathBuf>) -> Cache {
        Cache(Arc::new(Inner { configured: dir, dir: OnceLock::new(), scratch: Mutex::new(None) }))
    }

    /// The cache directory in use, when there is one (opened on the first call).
    pub fn dir(&self) -> Option<&Path> {
        self.0
            .dir
            .get_or_init(|| {
                let Some(d) = self.0.configured.as_ref() else {
                    tracing::warn!(
                        "no layer cache: neither DEPLOYER_CACHE_DIR, XDG_CACHE_HOME nor HOME is set to an absolute path; compressed layers are kept for this run only"
                    );
                    return None;
                };
                match open_dir(d, me()) {
                    Ok(root) => Some(root),
                    Err(why) => {
                        tracing::warn!(
                            "not using the layer cache at {}: {why}; compressed layers are kept for this run only (fix it with `chown $(id -u) DIR && chmod 700 DIR`, or point DEPLOYER_CACHE_DIR at a directory of your own)",
                            d.display()
                        );
                        None
                    }
                }
            })
            .as_deref()
    }

    fn mapping_path(root: &Path, diff_hex: &str) -> PathBuf {
        root.join("gzip").join(diff_hex)
    }

    /// The entry the cache holds for the layer whose uncompressed digest is `diff_id`: the
    /// mapping read and the blob found with the size it names. Not yet checked against the
    /// digests: that is the caller's one read of it.
    pub fn lookup(&self, diff_id: &str) -> Option<Entry> {
        let root = self.dir()?;
        let mapping = Cache::mapping_path(root, check_digest(diff_id).ok()?);
        let mut text = String::new();
        File::open(&mapping).ok()?.take(256).read_to_string(&mut text).ok()?;
        let (digest, size) = text.trim().split_once(' ')?;
        let size: u64 = size.parse().ok()?;
        let path = root.join("blobs/sha256").join(check_digest(digest).ok()?);
        let meta = fs::symlink_metadata(&path).ok().filter(|m| m.is_file())?;
        (meta.len() == size).then(|| Entry { digest: digest.to_string(), size, path, id: FileId::of(&meta), mapping })
    }

    /// Drop an entry that failed its check (its mapping and its blob).
    pub fn forget(&self, entry: &Entry) {
        let _ = fs::remove_file(&entry.mapping);
        let _ = fs::remove_file(&entry.path);
    }

    /// Where a compression in progress is written: the cache's `tmp/`, else this run's
    /// private directory.
    pub fn staging(&self) -> Result<PathBuf, ImageError> {
        if let Some(root) = self.dir() {
            return Ok(root.join("tmp"));
        }
        Ok(self.scratch()?.path().to_path_buf())
    }

    fn scratch(&self) -> Result<Arc<PrivateDir>, ImageError> {
        let mut slot = self.0.scratch.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let d = Arc::new(
            PrivateDir::new("deployer-layers")
                .map_err(|source| ImageError::Cache { path: std::env::temp_dir(), source })?,
        );
        *slot = Some(d.clone());
        Ok(d)
    }

    /// This run's private directory, when one was made: whatever was compressed into it must
    /// outlive the push.
    pub fn scratch_in_use(&self) -> Option<Arc<PrivateDir>> {
        self.0.scratch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Keep the compression written at `tmp` (whose blob digest is `sha256:<chex>`) for the
    /// layer `diff_id`: moved into the cache with its mapping, or left in the private
    /// directory. Returns where the bytes are now.
    pub fn commit(&self, tmp: &Path, diff_id: &str, chex: &str, size: u64) -> Result<PathBuf, ImageError> {
        let err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::Cache { path: path.clone(), source }
        };
        let Some(root) = self.dir() else {
            return Ok(tmp.to_path_buf());
        };
        let dest = root.join("blobs/sha256").join(chex);
        fs::rename(tmp, &dest).map_err(err(&dest))?;
        let map = Cache::mapping_path(root, check_digest(diff_id)?);
        let map_tmp = root.join("tmp").join(format!("map-{}-{:016x}", std::process::id(), rand::random::<u64>()));
        fs::write(&map_tmp, format!("sha256:{chex} {size}\n")).map_err(err(&map_tmp))?;
        fs::rename(&map_tmp, &map).map_err(err(&map))?;
        Ok(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_a_directory_of_ones_own_that_no_one_else_writes_is_used() {
        let table = [
            (1000, 0o700, 1000, Ok(())),
            (1000, 0o755, 1000, Ok(())),
            (1000, 0o500, 1000, Ok(())),
            (0, 0o700, 0, Ok(())),
            (1000, 0o775, 1000, Err("writable by group or others (mode 775)")),
            (1000, 0o1777, 1000, Err("writable by group or others (mode 1777)")),
            (1000, 0o702, 1000, Err("writable by group or others")),
            (0, 0o700, 1000, Err("owned by uid 0, not by you (uid 1000)")),
            (1001, 0o700, 1000, Err("owned by uid 1001")),
        ];
        for (owner, mode, me, want) in table {
            let got = judge(owner, mode, me);
            match want {
                Ok(()) => assert_eq!(got, Ok(()), "{owner} {mode:o} {me}"),
                Err(part) => {
                    let why = got.expect_err("refused");
                    assert!(why.contains(part), "{owner} {mode:o} {me}: {why}");
                }
            }
        }
    }

    #[test]
    fn the_default_directory_never_falls_back_to_a_shared_one() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |n: &str| pairs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
        };
        assert_eq!(default_dir(env(&[("DEPLOYER_CACHE_DIR", "/c"), ("HOME", "/h")])), Some("/c".into()));
        assert_eq!(default_dir(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])), Some("/x/deployer".into()));
        assert_eq!(default_dir(env(&[("HOME", "/h")])), Some("/h/.cache/deployer".into()));
        assert_eq!(default_dir(env(&[("XDG_CACHE_HOME", "rel"), ("HOME", "/h")])), Some("/h/.cache/deployer".into()));
        assert_eq!(default_dir(env(&[])), None);
        assert_eq!(default_dir(env(&[("HOME", "relative")])), None);
    }

    #[test]
    fn a_new_cache_is_private_and_a_writable_one_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/deployer");
        let cache = Cache::at(Some(dir.clone()));
        assert!(cache.dir().is_some());
        for part in ["", "gzip", "blobs/sha256", "tmp"] {
            let mode = fs::metadata(dir.join(part)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{part}");
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(Cache::at(Some(dir.clone())).dir().is_none());
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        fs::set_permissions(dir.join("gzip"), fs::Permissions::from_mode(0o733)).unwrap();
        assert!(Cache::at(Some(dir.clone())).dir().is_none(), "a writable part is refused too");
        fs::set_permissions(dir.join("gzip"), fs::Permissions::from_mode(0o700)).unwrap();
        // A part that is a link elsewhere is refused.
        fs::remove_dir(dir.join("tmp")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), dir.join("tmp")).unwrap();
        assert!(Cache::at(Some(dir)).dir().is_none());
    }

    #[test]
    fn without_a_cache_compressions_go_to_a_private_directory_of_the_run() {
        let cache = Cache::at(None);
        assert!(cache.scratch_in_use().is_none());
        let staging = cache.staging().unwrap();
        let mode = fs::metadata(&staging).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(cache.staging().unwrap(), staging, "one directory per run");
        let keep = cache.scratch_in_use().unwrap();
        drop(cache);
        assert!(staging.exists(), "kept while the image needs it");
        drop(keep);
        assert!(!staging.exists(), "removed after the run");
    }
}

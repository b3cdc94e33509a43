//! Every byte pushed is the byte its digest names. A layer that is not what the image says —
//! a pre-compressed docker-archive layer of another diff id, an OCI layout blob linked out of the
//! layout, a planted cache mapping — fails before any blob is uploaded (the proxy counts the
//! requests); a blob whose bytes change after loading never reaches the registry whole; and the
//! cache is used only when it is the user's own.

use std::os::unix::fs::PermissionsExt;

use sha2::Digest as _;

use super::*;

/// No blob upload of any kind reached the registry.
fn no_blob_upload(proxy: &RegistryProxy) {
    let uploads = proxy.count("POST", "/blobs/uploads/") + proxy.count("PUT", "/blobs/") + proxy.count("PATCH", "/");
    assert_eq!(uploads, 0, "{:?}", proxy.seen());
}

fn archive(run: &Run, proxy: &RegistryProxy, tar: &Path, r: &str) -> Captured {
    run.push(&proxy.url, &format!("docker-archive:{}", tar.display()), r, &["v1"], &["--create-repository"])
}

#[test]
fn a_precompressed_layer_of_another_diff_id_is_refused_before_any_upload() {
    let run = Run::new();
    let honest = layers(2, 100_000);
    let other = Layer::random(100_000, "evil.bin");
    // Layer 2's file holds another layer's gzip; the config still names the honest diff id.
    let mut files = honest.clone();
    files[1].gz = other.gz.clone();
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("image.tar");
    fixtures::archive_with(&tar, &files, None, true);
    let proxy = RegistryProxy::start(&stack().registry_host);
    let r = repo("wrong-diff-id");
    let out = archive(&run, &proxy, &tar, &r);
    let layer_path = format!("{:x}/layer.tar", sha2::Sha256::digest(format!("layer1{}", honest[1].diff_id())));
    assert_failed(&out, &[&layer_path, &format!("decompresses to {}", other.diff_id()), &honest[1].diff_id()]);
    no_blob_upload(&proxy);
    assert!(tags_of(&r).is_empty());
    // The honest archive of gzip layers still pushes.
    let good = dir.path().join("good.tar");
    fixtures::archive_with(&good, &honest, None, true);
    ok(&archive(&run, &proxy, &good, &r));
}

#[test]
fn a_layout_blob_linked_out_of_the_layout_is_refused_before_any_upload() {
    let run = Run::new();
    let ls = layers(2, 20_000);
    let (dir, _) = oci_dir(&ls);
    let outside = tempfile::tempdir().unwrap();
    // The same bytes even, but outside the layout: deployer does not follow the link.
    let target = outside.path().join("stolen");
    std::fs::write(&target, &ls[1].gz).unwrap();
    let blob = dir.path().join("blobs/sha256").join(&sha(&ls[1].gz)[7..]);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&target, &blob).unwrap();
    let proxy = RegistryProxy::start(&stack().registry_host);
    let r = repo("symlink");
    let out = run.push(&proxy.url, &src(dir.path()), &r, &["v1"], &["--create-repository"]);
    assert_failed(
        &out,
        &["layer 2/2", &sha(&ls[1].gz), "symbolic link", target.to_str().unwrap(), "outside the layout"],
    );
    no_blob_upload(&proxy);
    // /etc/hostname, as in the report: refused the same way.
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", &blob).unwrap();
    let out = run.push(&proxy.url, &src(dir.path()), &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["layer 2/2", "symbolic link to /etc/hostname"]);
    no_blob_upload(&proxy);
}

/// A legacy `docker save` tar of `ls` in a new temporary directory.
fn legacy_tar(ls: &[Layer]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("image.tar");
    fixtures::legacy_archive(&tar, ls, None);
    (dir, tar)
}

/// The layer cache's files for `diff_id`: (mapping, blob dir).
fn cache_paths(run: &Run, diff_id: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let root = run.cache.path();
    (root.join("gzip").join(&diff_id[7..]), root.join("blobs/sha256"))
}

#[test]
fn a_planted_cache_mapping_is_refused_before_any_upload_and_removed() {
    let run = Run::new();
    let ls = layers(2, 100_000);
    let (_dir, tar) = legacy_tar(&ls);
    // Someone wrote into the cache: layer 1 "is" an attacker's gzip (intact, of another tar).
    let attacker = Layer::random(38, "x");
    let (mapping, blobs) = cache_paths(&run, &ls[0].diff_id());
    std::fs::create_dir_all(mapping.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&sha(&attacker.gz)[7..]), &attacker.gz).unwrap();
    std::fs::write(&mapping, format!("{} {}\n", sha(&attacker.gz), attacker.gz.len())).unwrap();
    let proxy = RegistryProxy::start(&stack().registry_host);
    let r = repo("planted");
    let out = archive(&run, &proxy, &tar, &r);
    assert_failed(&out, &["layer", &ls[0].diff_id(), &sha(&attacker.gz), "another layer", "nothing was pushed"]);
    no_blob_upload(&proxy);
    assert!(!mapping.exists(), "the planted mapping was removed");
    // The next push compresses the layer again and uploads the real one.
    let pushed = archive(&run, &proxy, &tar, &r);
    let out = ok(&pushed);
    let digest = out["image-digest"].as_str().unwrap();
    let back = pull_back(&r, digest, false);
    let got = layer_digests(&blob(back.path(), digest));
    assert_eq!(gunzip(&blob(back.path(), &got[0])), ls[0].tar);
    assert_ne!(got[0], sha(&attacker.gz));
}

#[test]
fn a_corrupted_cache_entry_is_dropped_and_rebuilt_not_uploaded() {
    let run = Run::new();
    let ls = layers(2, 100_000);
    let (_dir, tar) = legacy_tar(&ls);
    let proxy = RegistryProxy::start(&stack().registry_host);
    let first = ok(&archive(&run, &proxy, &tar, &repo("corrupt-a")));
    let digest = first["image-digest"].as_str().unwrap().to_string();
    // Flip one byte of a cached blob (same size, so only reading it can tell).
    let (mapping, blobs) = cache_paths(&run, &ls[1].diff_id());
    let text = std::fs::read_to_string(&mapping).unwrap();
    let cached = blobs.join(&text.split_whitespace().next().unwrap()[7..]);
    let mut bytes = std::fs::read(&cached).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&cached, &bytes).unwrap();
    // Into a fresh repository, so every blob is uploaded.
    let r = repo("corrupt-b");
    let second = archive(&run, &proxy, &tar, &r);
    let out = ok(&second);
    assert!(second.stderr.contains("dropped it, compressing the layer again"), "{second}");
    assert_eq!(out["image-digest"], digest.as_str(), "the rebuilt layer is the same gzip");
    let back = pull_back(&r, &digest, false);
    for (l, d) in ls.iter().zip(layer_digests(&blob(back.path(), &digest))) {
        assert_eq!(gunzip(&blob(back.path(), &d)), l.tar);
    }
    assert_ne!(std::fs::read(&cached).unwrap(), bytes, "the cache entry was rebuilt");
}

#[test]
fn a_cache_directory_others_can_write_is_not_used() {
    let run = Run::new();
    let ls = layers(1, 50_000);
    let (_dir, tar) = legacy_tar(&ls);
    std::fs::set_permissions(run.cache.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let proxy = RegistryProxy::start(&stack().registry_host);
    let pushed = archive(&run, &proxy, &tar, &repo("shared-cache"));
    ok(&pushed);
    assert!(pushed.stderr.contains("not using the layer cache"), "{pushed}");
    assert!(pushed.stderr.contains("writable by group or others"), "{pushed}");
    let entries: Vec<_> = std::fs::read_dir(run.cache.path()).unwrap().collect();
    assert!(entries.is_empty(), "nothing was written into it: {entries:?}");

    // Owned by someone else (only root can make that here).
    std::fs::set_permissions(run.cache.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if std::os::unix::fs::chown(run.cache.path(), Some(65534), None).is_ok() {
        let pushed = archive(&run, &proxy, &tar, &repo("foreign-cache"));
        ok(&pushed);
        assert!(pushed.stderr.contains("owned by uid 65534"), "{pushed}");
        assert!(std::fs::read_dir(run.cache.path()).unwrap().next().is_none());
    }
}

#[test]
fn a_blob_that_changed_after_loading_never_reaches_the_registry_whole() {
    let run = Run::new();
    // A 3 MiB layer: several chunks leave before the last one is held back.
    let ls = vec![Layer::random(100_000, "a.bin"), Layer::random(3 << 20, "big.bin")];
    let (dir, _) = oci_dir(&ls);
    let bad = sha(&ls[1].gz);
    // Same size, one byte different: only hashing can tell.
    let path = dir.path().join("blobs/sha256").join(&bad[7..]);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let proxy = RegistryProxy::start(&stack().registry_host);
    let r = repo("changed");
    let out = run.push(&proxy.url, &src(dir.path()), &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["layer 2/2", &bad, &format!("hash to {}", sha(&bytes)), "before its last byte"]);
    // One attempt (a mismatch is not retried), cut short: the registry never got the whole body.
    let puts = |proxy: &RegistryProxy| -> Vec<_> {
        proxy.seen().into_iter().filter(|s| s.method == "PUT" && s.path.contains(&bad)).collect()
    };
    // The proxy notices the cut connection a moment after deployer exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while puts(&proxy).iter().any(|s| s.forwarded.is_none()) {
        assert!(Instant::now() < deadline, "the upload never ended: {:?}", puts(&proxy));
        std::thread::sleep(Duration::from_millis(20));
    }
    let puts = puts(&proxy);
    assert_eq!(puts.len(), 1, "{puts:?}");
    let forwarded = puts[0].forwarded.expect("the request ended");
    assert!(forwarded < bytes.len(), "{forwarded} of {} body bytes reached the registry", bytes.len());
    assert!(forwarded > 0, "the upload streamed before the check: {puts:?}");
    assert_ne!(puts[0].status, Some(201));
    assert_eq!(get(&format!("{}/v2/{r}/blobs/{bad}", stack().registry_url)).0, 404);
    assert!(tags_of(&r).is_empty());
}

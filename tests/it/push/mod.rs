//! `deployer push` and `deployer promote` against moto (ECR API) and docker-registry (bytes):
//! round trips checked with skopeo, faults injected by a proxy, bad input, and retags that
//! must move no bytes. `trust` checks where the ECR token may go, `integrity` that every byte
//! pushed is the byte its digest names.

pub mod fixtures;
mod integrity;
mod trust;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fixtures::{Layer, gunzip, layers, sha};
use serde_json::Value;

use crate::support::registry_proxy::{Fault, RegistryProxy};
use crate::support::{Captured, capture, deployer, deployer_process, stack, unique_account};

/// A repository name no other test uses.
fn repo(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!("it/{name}-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

struct Run {
    account: String,
    cache: tempfile::TempDir,
}

impl Run {
    fn new() -> Self {
        Run { account: unique_account(), cache: tempfile::tempdir().unwrap() }
    }

    fn cmd(&self, endpoint: &str) -> assert_cmd::Command {
        let mut cmd = deployer(&self.account);
        cmd.env("DEPLOYER_REGISTRY_ENDPOINT", endpoint).env("DEPLOYER_CACHE_DIR", self.cache.path());
        cmd
    }

    /// The same command as a plain `std::process::Command`, for a run the test kills.
    fn std_cmd(&self, endpoint: &str) -> Command {
        let mut cmd = deployer_process(&self.account);
        cmd.env("DEPLOYER_REGISTRY_ENDPOINT", endpoint).env("DEPLOYER_CACHE_DIR", self.cache.path());
        cmd
    }

    fn push(&self, endpoint: &str, source: &str, repo: &str, tags: &[&str], extra: &[&str]) -> Captured {
        let mut cmd = self.cmd(endpoint);
        cmd.args(["push", "--output", "json", "--source", source, "--repository", repo]);
        for t in tags {
            cmd.args(["--tag", t]);
        }
        cmd.args(extra);
        capture(&mut cmd)
    }
}

fn json(run: &Captured) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {run}"))
}

fn ok(run: &Captured) -> Value {
    assert_eq!(run.code, Some(0), "{run}");
    json(run)
}

/// Pull `repo@digest` back with skopeo into an OCI layout, digests preserved.
fn pull_back(repo: &str, digest: &str, all: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("oci");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--src-tls-verify=false", "--preserve-digests"]);
    if all {
        cmd.arg("--all");
    }
    let out = cmd
        .arg(format!("docker://{}/{repo}@{digest}", stack().registry_host))
        .arg(format!("oci:{}", dest.display()))
        .output()
        .expect("run skopeo");
    assert!(out.status.success(), "skopeo copy failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(layout.join("oci/blobs/sha256").join(digest.trim_start_matches("sha256:"))).expect("pulled blob")
}

fn pulled_top(layout: &Path) -> String {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("oci/index.json")).unwrap()).unwrap();
    index["manifests"][0]["digest"].as_str().unwrap().to_string()
}

fn layer_digests(manifest: &[u8]) -> Vec<String> {
    let m: Value = serde_json::from_slice(manifest).unwrap();
    m["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

fn get(url: &str) -> (u16, String) {
    crate::support::runtime().block_on(async {
        let resp = reqwest::get(url).await.expect("GET");
        (resp.status().as_u16(), resp.text().await.unwrap_or_default())
    })
}

/// The tags the registry holds for `repo` (none when the repository does not exist there).
fn tags_of(repo: &str) -> Vec<String> {
    let (status, body) = get(&format!("{}/v2/{repo}/tags/list", stack().registry_url));
    if status == 404 {
        return Vec::new();
    }
    let v: Value = serde_json::from_str(&body).unwrap();
    v["tags"].as_array().map(|t| t.iter().map(|x| x.as_str().unwrap().to_string()).collect()).unwrap_or_default()
}

fn oci_dir(layers: &[Layer]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let digest = fixtures::oci_layout(dir.path(), layers);
    (dir, digest)
}

fn src(dir: &Path) -> String {
    format!("oci:{}", dir.display())
}

#[test]
fn oci_layout_round_trips_with_the_printed_digest() {
    let run = Run::new();
    let ls = layers(3, 300_000);
    let (dir, digest) = oci_dir(&ls);
    let repo = repo("oci");
    let out =
        ok(&run.push(&stack().registry_url, &src(dir.path()), &repo, &["v1", "latest"], &["--create-repository"]));
    assert_eq!(out["image-digest"], digest.as_str());
    assert_eq!(out["image-uri"], format!("{}.dkr.ecr.us-east-1.amazonaws.com/{repo}@{digest}", run.account));
    assert_eq!(out["blobs-uploaded"], 4);
    let back = pull_back(&repo, &digest, false);
    assert_eq!(pulled_top(back.path()), digest);
    let manifest = blob(back.path(), &digest);
    for (l, d) in ls.iter().zip(layer_digests(&manifest)) {
        assert_eq!(blob(back.path(), &d), l.gz, "layer {d} bytes differ");
    }
    let mut tags = tags_of(&repo);
    tags.sort();
    assert_eq!(tags, ["latest", "v1"]);
    // A second push uploads nothing and writes no manifest.
    let again = ok(&run.push(&stack().registry_url, &src(dir.path()), &repo, &["v1", "latest"], &[]));
    assert_eq!(again["image-digest"], digest.as_str());
    assert_eq!(again["blobs-uploaded"], 0);
    assert_eq!(again["manifests-put"], 0);
}

#[test]
fn multi_arch_index_is_pushed_byte_for_byte() {
    let run = Run::new();
    let shared = Layer::random(200_000, "shared.bin");
    let dir = tempfile::tempdir().unwrap();
    let (index, children) = fixtures::multi_arch_layout(dir.path(), &shared, &layers(1, 100_000), &layers(2, 100_000));
    let repo = repo("multi");
    let out = ok(&run.push(&stack().registry_url, &src(dir.path()), &repo, &["v1"], &["--create-repository"]));
    assert_eq!(out["image-digest"], index.as_str());
    // shared layer once + 1 + 2 layers + 2 configs
    assert_eq!(out["blobs-total"], 6);
    let back = pull_back(&repo, &index, true);
    assert_eq!(pulled_top(back.path()), index);
    assert_eq!(blob(back.path(), &index), std::fs::read(dir.path().join("blobs/sha256").join(&index[7..])).unwrap());
    for child in &children {
        let m = blob(back.path(), child);
        assert_eq!(sha(&m), *child);
        for d in layer_digests(&m) {
            assert_eq!(sha(&blob(back.path(), &d)), d);
        }
    }
}

fn check_archive_round_trip(run: &Run, archive: &Path, ls: &[Layer], cfg: &[u8], name: &str) -> String {
    let repo = repo(name);
    let source = format!("docker-archive:{}", archive.display());
    let first = run.push(&stack().registry_url, &source, &repo, &["v1"], &["--create-repository"]);
    let out = ok(&first);
    assert!(first.stderr.contains("compressed"), "layers were compressed: {first}");
    let digest = out["image-digest"].as_str().unwrap().to_string();
    let back = pull_back(&repo, &digest, false);
    assert_eq!(pulled_top(back.path()), digest);
    let manifest = blob(back.path(), &digest);
    assert_eq!(sha(&manifest), digest);
    let m: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(blob(back.path(), m["config"]["digest"].as_str().unwrap()), cfg);
    let digests = layer_digests(&manifest);
    assert_eq!(digests.len(), ls.len());
    for (l, d) in ls.iter().zip(digests) {
        assert_eq!(gunzip(&blob(back.path(), &d)), l.tar, "layer {d} does not decompress to the archived tar");
    }
    // Re-push: the cache maps each layer to its gzip; nothing is compressed or uploaded again.
    let second = run.push(&stack().registry_url, &source, &repo, &["v1"], &[]);
    let out2 = ok(&second);
    assert_eq!(out2["image-digest"], digest.as_str());
    assert_eq!(out2["blobs-uploaded"], 0);
    assert!(!second.stderr.contains("compressed"), "re-push recompressed: {second}");
    digest
}

#[test]
fn legacy_docker_archive_round_trips_and_compresses_once() {
    let run = Run::new();
    let ls = layers(2, 250_000);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("image.tar");
    let cfg = fixtures::legacy_archive(&tar, &ls, None);
    check_archive_round_trip(&run, &tar, &ls, &cfg, "legacy");
}

#[test]
fn an_archive_of_gzip_layers_is_pushed_as_it_is() {
    let run = Run::new();
    let ls = layers(2, 100_000);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("image.tar");
    fixtures::archive_with(&tar, &ls, None, true);
    let r = repo("gzip-archive");
    let pushed = run.push(
        &stack().registry_url,
        &format!("docker-archive:{}", tar.display()),
        &r,
        &["v1"],
        &["--create-repository"],
    );
    let out = ok(&pushed);
    assert!(!pushed.stderr.contains("compressed"), "nothing to compress: {pushed}");
    let digest = out["image-digest"].as_str().unwrap();
    let back = pull_back(&r, digest, false);
    let got = layer_digests(&blob(back.path(), digest));
    assert_eq!(got, ls.iter().map(|l| sha(&l.gz)).collect::<Vec<_>>());
}

#[test]
fn docker25_archive_round_trips() {
    let run = Run::new();
    let ls = layers(2, 250_000);
    let dir = tempfile::tempdir().unwrap();
    let tar = dir.path().join("image.tar");
    let cfg = fixtures::docker25_archive(&tar, &ls);
    check_archive_round_trip(&run, &tar, &ls, &cfg, "docker25");
}

#[test]
fn faults_are_retried_and_the_digest_is_the_same() {
    let run = Run::new();
    let ls = layers(4, 400_000);
    let (dir, digest) = oci_dir(&ls);
    let repo = repo("faults");
    let proxy = RegistryProxy::start(&stack().registry_host);
    // Every kind of request fails at least once; each fault is bounded.
    proxy.fault("HEAD", "/blobs/", Fault::Status(503), 0, 2);
    proxy.fault("POST", "/blobs/uploads/", Fault::Status(503), 1, 1);
    proxy.fault("PUT", "/blobs/uploads/", Fault::Status(502), 0, 1);
    proxy.fault("PUT", "/blobs/uploads/", Fault::DropAfter(150_000), 0, 2);
    proxy.fault("PUT", "/blobs/uploads/", Fault::Slow { chunk: 32 * 1024, delay: Duration::from_millis(5) }, 0, 2);
    proxy.fault("PUT", "/manifests/", Fault::Status(503), 0, 1);
    proxy.fault("HEAD", "/manifests/", Fault::Status(429), 0, 1);
    // An expired token: the first blob POST gets a 401, which refreshes it once.
    proxy.fault("POST", "/blobs/uploads/", Fault::Status(401), 0, 1);
    let t = Instant::now();
    let pushed = run.push(&proxy.url, &src(dir.path()), &repo, &["v1"], &["--create-repository", "-vv"]);
    let out = ok(&pushed);
    // The ECR token (moto's is base64 "AWS:<account>-auth-token") is never printed, even at -vv.
    let password = format!("{}-auth-token", run.account);
    let token = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("AWS:{password}"));
    for secret in [&password, &token] {
        assert!(
            !pushed.stdout.contains(secret.as_str()) && !pushed.stderr.contains(secret.as_str()),
            "token leaked: {pushed}"
        );
    }
    assert!(pushed.stderr.contains("attempt 1 failed"), "retries are logged at -v: {pushed}");
    assert!(pushed.stderr.contains("refreshing the ECR authorization token"), "{pushed}");
    // Every registry request carried the ECR token as Basic auth.
    let basic = format!("Basic {token}");
    assert!(proxy.seen().iter().all(|s| s.authorization.as_deref() == Some(basic.as_str())));
    // Retries are quick (no read timeout was waited out).
    assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
    assert_eq!(out["image-digest"], digest.as_str());
    assert!(proxy.faults_injected() >= 10, "faults injected: {:?}", proxy.seen());
    // The registry holds the image under the tag, with the same digest.
    let back = pull_back(&repo, &digest, false);
    assert_eq!(pulled_top(back.path()), digest);
    for (l, d) in ls.iter().zip(layer_digests(&blob(back.path(), &digest))) {
        assert_eq!(blob(back.path(), &d), l.gz);
    }
    assert_eq!(tags_of(&repo), ["v1"]);
}

#[test]
fn a_killed_push_resumes_with_only_the_missing_blobs() {
    let run = Run::new();
    let ls = layers(5, 200_000);
    let (dir, digest) = oci_dir(&ls);
    let repo = repo("resume");
    let proxy = RegistryProxy::start(&stack().registry_host);
    // Two blob uploads complete, the third hangs; then the push is killed.
    proxy.fault("PUT", "/blobs/uploads/", Fault::Hang, 2, 1);
    let mut child = run
        .std_cmd(&proxy.url)
        .args(["push", "--source", &src(dir.path()), "--repository", &repo, "--tag", "v1", "--create-repository"])
        .args(["--concurrency", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while proxy.count("PUT", "/blobs/uploads/") < 3 {
        assert!(Instant::now() < deadline, "push did not reach its third upload: {:?}", proxy.seen());
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(proxy.count_status("PUT", "/blobs/uploads/", 201), 2);
    assert!(tags_of(&repo).is_empty(), "nothing is tagged after a killed push");

    proxy.clear_faults();
    proxy.reset_log();
    let out = ok(&run.push(&proxy.url, &src(dir.path()), &repo, &["v1"], &[]));
    assert_eq!(out["image-digest"], digest.as_str());
    // 6 blobs (config + 5 layers): every one HEADed, only the 4 missing uploaded.
    assert_eq!(proxy.count("HEAD", "/blobs/sha256:"), 6);
    assert_eq!(proxy.count_status("PUT", "/blobs/uploads/", 201), 4);
    assert_eq!(proxy.count("PUT", "/blobs/uploads/"), 4);
    assert_eq!(out["blobs-uploaded"], 4);
}

fn assert_failed(run: &Captured, needles: &[&str]) {
    assert_eq!(run.code, Some(1), "{run}");
    let v = json(run);
    let msg = v["error"].as_str().unwrap_or_default();
    for n in needles {
        assert!(msg.contains(n), "error {msg:?} should mention {n:?}");
    }
}

#[test]
fn bad_input_fails_clearly_and_tags_nothing() {
    let run = Run::new();
    let reg = &stack().registry_url;
    let tmp = tempfile::tempdir().unwrap();
    let r = repo("bad");

    let missing = tmp.path().join("nope");
    let out = run.push(reg, &src(&missing), &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["does not exist", missing.to_str().unwrap(), "buildx"]);

    let not_layout = tmp.path().join("empty");
    std::fs::create_dir(&not_layout).unwrap();
    let out = run.push(reg, &src(&not_layout), &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["not an OCI image layout", "index.json", not_layout.to_str().unwrap()]);

    let ls = layers(3, 50_000);
    let broken = tmp.path().join("broken.tar");
    fixtures::legacy_archive(&broken, &ls, Some(1));
    let out = run.push(reg, &format!("docker-archive:{}", broken.display()), &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["layer", "missing from the tar", broken.to_str().unwrap(), "docker save"]);

    let (dir, _) = oci_dir(&ls[..1]);
    let out = run.push(reg, &src(dir.path()), &r, &["v1", "bad:tag"], &["--create-repository"]);
    assert_failed(&out, &["--tag \"bad:tag\"", "not a valid tag"]);

    // A layout whose layer blob is gone.
    let (holey, _) = oci_dir(&ls[..2]);
    std::fs::remove_file(holey.path().join("blobs/sha256").join(&sha(&ls[1].gz)[7..])).unwrap();
    let out = run.push(reg, &src(holey.path()), &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["layer", "is missing", "export it again"]);

    let out = run.push(reg, &src(dir.path()), &r, &["v1"], &[]);
    assert_failed(&out, &[&format!("repository {r} does not exist in account {}", run.account), "--create-repository"]);

    let out = run.push(reg, "docker:shop:1", &r, &["v1"], &["--create-repository"]);
    assert_failed(&out, &["docker:shop:1", "docker-archive:"]);

    assert!(tags_of(&r).is_empty(), "nothing was tagged");
    assert_eq!(get(&format!("{reg}/v2/{r}/tags/list")).0, 404, "no repository was written to");
}

#[test]
fn an_immutable_tag_is_never_moved() {
    let run = Run::new();
    let reg = &stack().registry_url;
    let r = repo("immutable");
    let (a, da) = oci_dir(&layers(1, 10_000));
    let (b, db) = oci_dir(&layers(1, 10_000));
    ok(&run.push(reg, &src(a.path()), &r, &["v1"], &["--create-repository", "--immutable-tags"]));
    let out = run.push(reg, &src(b.path()), &r, &["v2", "v1"], &[]);
    assert_failed(&out, &["\"v1\"", &da, &db, "immutable"]);
    // Checked before anything moved: v2 was not written either.
    assert_eq!(tags_of(&r), ["v1"]);
}

fn promote(run: &Run, endpoint: &str, from: &str, to: &str, tags: &[&str], extra: &[&str]) -> Captured {
    let mut cmd = run.cmd(endpoint);
    cmd.args(["promote", "--output", "json", "--from", from, "--repository", to]);
    for t in tags {
        cmd.args(["--tag", t]);
    }
    cmd.args(extra);
    capture(&mut cmd)
}

fn create_repo(run: &Run, name: &str) {
    // A push of a tiny image creates it through the same path users take.
    let (d, _) = oci_dir(&layers(1, 1000));
    ok(&run.push(&stack().registry_url, &src(d.path()), name, &["seed"], &["--create-repository"]));
}

#[test]
fn promote_within_the_registry_moves_no_blob_bytes() {
    let run = Run::new();
    let ls = layers(3, 100_000);
    let (dir, digest) = oci_dir(&ls);
    let from = repo("promote-src");
    let to = repo("promote-dst");
    ok(&run.push(&stack().registry_url, &src(dir.path()), &from, &["build-1"], &["--create-repository"]));
    create_repo(&run, &to);
    let proxy = RegistryProxy::start(&stack().registry_host);

    // Same repository: a retag is manifest GET + PUT only.
    let out = ok(&promote(&run, &proxy.url, &format!("{from}:build-1"), &from, &["staging"], &[]));
    assert_eq!(out["image-digest"], digest.as_str());
    assert_eq!(proxy.count("PUT", "/blobs/") + proxy.count("PATCH", "/blobs/") + proxy.count("POST", "/blobs/"), 0);
    assert_eq!(proxy.count("PUT", &format!("/v2/{from}/manifests/staging")), 1);

    // Another repository: blobs are mounted, never re-uploaded.
    proxy.reset_log();
    let out = ok(&promote(&run, &proxy.url, &format!("{from}@{digest}"), &to, &["prod", "v1"], &[]));
    assert_eq!(out["image-digest"], digest.as_str());
    assert_eq!(out["image-uri"], format!("{}.dkr.ecr.us-east-1.amazonaws.com/{to}@{digest}", run.account));
    assert_eq!(out["blobs-mounted"], 4);
    assert_eq!(proxy.count("PUT", "/blobs/") + proxy.count("PATCH", "/blobs/"), 0, "{:?}", proxy.seen());
    assert_eq!(proxy.count("GET", "/blobs/"), 0);
    let mut tags = tags_of(&to);
    tags.sort();
    assert_eq!(tags, ["prod", "seed", "v1"]);
    let back = pull_back(&to, &digest, false);
    assert_eq!(pulled_top(back.path()), digest);

    // Promoting again is a no-op: HEADs only.
    proxy.reset_log();
    ok(&promote(&run, &proxy.url, &format!("{from}@{digest}"), &to, &["prod"], &[]));
    assert_eq!(proxy.count("PUT", "/") + proxy.count("POST", "/") + proxy.count("PATCH", "/"), 0, "{:?}", proxy.seen());
}

/// A second docker-registry for cross-registry tests, stopped (by its pid) when dropped.
struct SecondRegistry {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl SecondRegistry {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let config = dir.path().join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "second registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        SecondRegistry { child, url, _dir: dir }
    }
}

impl Drop for SecondRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn promote_across_registries_streams_only_missing_blobs() {
    let run = Run::new();
    let other = SecondRegistry::start();
    let shared = Layer::random(100_000, "shared.bin");
    let dir = tempfile::tempdir().unwrap();
    let (index, _) = fixtures::multi_arch_layout(dir.path(), &shared, &layers(1, 80_000), &layers(1, 80_000));
    // The image lives in the other registry (pushed there by deployer itself).
    let from = repo("xreg-src");
    ok(&run.push(&other.url, &src(dir.path()), &from, &["rc1"], &["--create-repository"]));
    // The destination already holds the shared layer.
    let to = repo("xreg-dst");
    let seed = tempfile::tempdir().unwrap();
    fixtures::oci_layout(seed.path(), std::slice::from_ref(&shared));
    ok(&run.push(&stack().registry_url, &src(seed.path()), &to, &["seed"], &["--create-repository"]));

    let proxy = RegistryProxy::start(&stack().registry_host);
    proxy.fault("PUT", "/blobs/uploads/", Fault::DropAfter(20_000), 0, 1);
    // The source is another account's ECR registry (the second docker-registry stands in for
    // it through --from-registry-endpoint, behind a recording proxy), read with a token of a
    // role in that account (masked, never printed).
    let source_account = unique_account();
    let role = format!("arn:aws:iam::{source_account}:role/image-reader");
    let source_proxy = RegistryProxy::start(other.url.trim_start_matches("http://"));
    let source_host = format!("{source_account}.dkr.ecr.eu-west-1.amazonaws.com");
    let run_out = promote(
        &run,
        &proxy.url,
        &format!("{source_host}/{from}:rc1"),
        &to,
        &["v1"],
        &["--from-registry-endpoint", &source_proxy.url, "--from-role-arn", &role],
    );
    assert!(run_out.stderr.contains("reading the source as"), "{run_out}");
    let out = ok(&run_out);
    // Each registry got its own account's token, and nothing else.
    let basic = |account: &str| {
        let token =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("AWS:{account}-auth-token"));
        Some(format!("Basic {token}"))
    };
    assert!(source_proxy.count("GET", "/blobs/") >= 4, "{:?}", source_proxy.seen());
    assert!(source_proxy.seen().iter().all(|s| s.authorization == basic(&source_account)), "{:?}", source_proxy.seen());
    assert!(proxy.seen().iter().all(|s| s.authorization == basic(&run.account)), "{:?}", proxy.seen());
    for secret in [format!("{source_account}-auth-token"), format!("{}-auth-token", run.account)] {
        assert!(!run_out.stdout.contains(&secret) && !run_out.stderr.contains(&secret), "{run_out}");
    }
    assert_eq!(out["image-digest"], index.as_str());
    // 2 configs + 2 own layers moved (one PUT was cut and retried); the shared layer was skipped.
    assert_eq!(out["blobs-uploaded"], 4);
    assert_eq!(proxy.count_status("PUT", "/blobs/uploads/", 201), 4);
    let back = pull_back(&to, &index, true);
    assert_eq!(pulled_top(back.path()), index);
}

#[test]
fn docker_source_without_a_daemon_says_what_to_do() {
    let run = Run::new();
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = run.cmd(&stack().registry_url);
    cmd.env("PATH", empty.path()).args(["push", "--output", "json", "--source", "docker:shop:1", "--repository", "x1"]);
    let out = capture(&mut cmd);
    assert_failed(&out, &["docker CLI is not installed", "docker-archive:"]);
}

#[test]
fn in_actions_outputs_are_written_tokens_masked_and_each_blob_logged() {
    let run = Run::new();
    let (dir, digest) = oci_dir(&layers(2, 20_000));
    let r = repo("actions");
    let job = tempfile::tempdir().unwrap();
    let output = job.path().join("output");
    let mut cmd = run.cmd(&stack().registry_url);
    cmd.env("GITHUB_ACTIONS", "true").env("GITHUB_OUTPUT", &output).args([
        "push",
        "--source",
        &src(dir.path()),
        "--repository",
        &r,
        "--tag",
        "v1",
        "--create-repository",
    ]);
    let out = capture(&mut cmd);
    assert_eq!(out.code, Some(0), "{out}");
    let uri = format!("{}.dkr.ecr.us-east-1.amazonaws.com/{r}@{digest}", run.account);
    assert!(out.stdout.contains(&uri), "{out}");
    let password = format!("{}-auth-token", run.account);
    assert!(out.stdout.contains(&format!("::add-mask::{password}")), "the token's password is masked: {out}");
    assert!(out.stdout.contains("::group::push"), "{out}");
    assert_eq!(out.stderr.matches("uploaded in").count(), 3, "one line per blob: {out}");
    let written = std::fs::read_to_string(&output).unwrap();
    for needle in
        ["image-uri<<".to_string(), uri.clone(), "image-digest<<".into(), digest.clone(), "image-tags<<".into()]
    {
        assert!(written.contains(&needle), "{needle} in {written}");
    }
}

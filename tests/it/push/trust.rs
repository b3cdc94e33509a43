//! Where the ECR token goes. A loopback registry is reached under a name like ECR's
//! (`123456789012.dkr.ecr.attacker.test`): an /etc/hosts entry inside a private mount namespace,
//! so deployer resolves it with the system resolver exactly as it would in production, and no
//! test hook exists in the binary. Whichever way that host is named — `--from`,
//! `--from-registry`, `--registry-endpoint`, an upload `Location`, a redirect, or ECR's own
//! `proxyEndpoint` — it must never see an `Authorization` header, and the command fails naming
//! the host.

use std::process::Command;
use std::sync::OnceLock;

use super::*;

const LOOK_ALIKE: &str = "123456789012.dkr.ecr.attacker.test";
/// A name that is plainly not ECR, mapped to the same server: proves the names resolve.
const PLAIN: &str = "registry.attacker.test";

/// How to enter a private mount namespace here: as root `unshare --mount`, else inside a user
/// namespace. Probed once by bind-mounting /etc/hosts over itself.
fn unshare_prefix() -> &'static [&'static str] {
    static PREFIX: OnceLock<&'static [&'static str]> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let candidates: [&'static [&'static str]; 2] = [
            &["unshare", "--mount", "--propagation", "private"],
            &["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"],
        ];
        for c in candidates {
            let ok = Command::new(c[0])
                .args(&c[1..])
                .args(["sh", "-c", "mount --bind /etc/hosts /etc/hosts"])
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return c;
            }
        }
        panic!(
            "these tests give a loopback server an ECR-like name in /etc/hosts inside a private mount namespace: run them as root, or where unprivileged user namespaces are allowed (`unshare --user --map-root-user --mount true`)"
        )
    })
}

/// `cmd` run inside a private mount namespace whose /etc/hosts also maps `names` to 127.0.0.1.
fn in_namespace(cmd: Command, names: &[&str]) -> (assert_cmd::Command, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    for n in names {
        text.push_str(&format!("\n127.0.0.1 {n}\n"));
    }
    std::fs::write(&hosts, text).unwrap();
    let prefix = unshare_prefix();
    let mut c = Command::new(prefix[0]);
    c.args(&prefix[1..])
        .args(["sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\""])
        .arg(&hosts)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    (assert_cmd::Command::from_std(c), dir)
}

fn run_named(cmd: Command) -> Captured {
    let (mut c, _hosts) = in_namespace(cmd, &[LOOK_ALIKE, PLAIN]);
    capture(&mut c)
}

/// `promote` into `repo` under `tag`, run where the test names resolve.
fn promote_named(run: &Run, repo: &str, tag: &str, args: &[impl AsRef<std::ffi::OsStr>]) -> Captured {
    let mut cmd = run.std_cmd(&stack().registry_url);
    cmd.args(["promote", "--output", "json", "--repository", repo, "--tag", tag]).args(args);
    run_named(cmd)
}

fn port_of(proxy: &RegistryProxy) -> &str {
    proxy.host.rsplit(':').next().unwrap()
}

fn no_authorization(proxy: &RegistryProxy) {
    for s in proxy.seen() {
        assert_eq!(s.authorization, None, "{} {} carried a credential", s.method, s.path);
    }
}

#[test]
fn promote_refuses_a_source_named_like_ecr_and_never_sends_it_the_token() {
    let run = Run::new();
    let (dir, digest) = oci_dir(&layers(1, 10_000));
    let r = repo("look-alike-src");
    ok(&run.push(&stack().registry_url, &src(dir.path()), &r, &["v1"], &["--create-repository"]));
    // The "attacker's" registry: a working registry (the stack's, behind a recording proxy).
    let look = RegistryProxy::start(&stack().registry_host);
    let named = format!("{LOOK_ALIKE}:{}", port_of(&look));
    let role = format!("arn:aws:iam::{}:role/image-reader", unique_account());
    let cases: Vec<Vec<String>> = vec![
        vec!["--from".into(), format!("{r}:v1"), "--from-registry".into(), format!("http://{named}")],
        vec!["--from".into(), format!("{named}/{r}:v1")],
        vec!["--from".into(), format!("{named}/{r}@{digest}"), "--from-role-arn".into(), role.clone()],
        vec!["--from".into(), format!("{r}:v1"), "--from-registry".into(), format!("https://{LOOK_ALIKE}")],
    ];
    for args in cases {
        let out = promote_named(&run, &r, "stolen", &args);
        assert_failed(&out, &[LOOK_ALIKE, "named like an Amazon ECR registry but is not one"]);
        assert!(look.seen().is_empty(), "{args:?}: the look-alike was contacted: {:?}", look.seen());
    }
    assert!(!tags_of(&r).contains(&"stolen".to_string()));

    // The names do resolve to the server in the namespace: a registry that is not ECR is read
    // (anonymously), and an ECR role for it is refused rather than sent.
    let plain = format!("http://{PLAIN}:{}", port_of(&look));
    let from = format!("{r}:v1");
    let out = ok(&promote_named(&run, &r, "copied", &["--from", &from, "--from-registry", &plain]));
    assert_eq!(out["image-digest"], digest.as_str());
    assert!(look.count("GET", "/manifests/") >= 1, "{:?}", look.seen());
    no_authorization(&look);
    look.reset_log();
    let with_role = ["--from", &from, "--from-registry", &plain, "--from-role-arn", &role];
    let out = promote_named(&run, &r, "copied", &with_role);
    assert_failed(&out, &[PLAIN, "--from-role-arn gives an ECR credential", "ECR credentials to ECR only"]);
    assert!(look.seen().is_empty(), "{:?}", look.seen());
}

/// The ECR API behind a proxy that rewrites GetAuthorizationToken's `proxyEndpoint` (a
/// compromised or mistaken endpoint); everything else is moto's answer.
fn ecr_api_reporting(proxy_endpoint: String) -> String {
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};

    async fn forward(
        State((moto, rewrite)): State<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, [(&'static str, String); 1], Vec<u8>) {
        let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let mut req = reqwest::Client::new().post(format!("{moto}/")).body(body.to_vec());
        for (k, v) in &headers {
            if k != "host" && k != "content-length" {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.expect("moto");
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/x-amz-json-1.1")
            .to_string();
        let mut bytes = resp.bytes().await.expect("moto body").to_vec();
        if target.ends_with("GetAuthorizationToken") {
            let mut v: Value = serde_json::from_slice(&bytes).expect("json");
            for d in v["authorizationData"].as_array_mut().expect("authorizationData") {
                d["proxyEndpoint"] = Value::String(rewrite.clone());
            }
            bytes = serde_json::to_vec(&v).expect("json");
        }
        (status, [("content-type", kind)], bytes)
    }
    let router = axum::Router::new().fallback(forward).with_state((stack().moto_url.clone(), proxy_endpoint));
    crate::support::serve(router)
}

#[test]
fn push_refuses_a_look_alike_registry_named_by_the_user_or_by_the_ecr_api() {
    let run = Run::new();
    let (dir, _) = oci_dir(&layers(1, 10_000));
    let look = RegistryProxy::start(&stack().registry_host);
    let look_alike = format!("http://{LOOK_ALIKE}:{}", port_of(&look));
    let push = ["push", "--output", "json", "--source", &src(dir.path()), "--repository", &repo("look-alike")];
    let push = [&push[..], &["--tag", "v1", "--create-repository"]].concat();

    // Named by the user, as the explicit endpoint.
    let mut cmd = run.std_cmd(&look_alike);
    cmd.args(&push);
    assert_failed(&run_named(cmd), &["--registry-endpoint", LOOK_ALIKE, "named like an Amazon ECR registry"]);
    assert!(look.seen().is_empty(), "{:?}", look.seen());

    // Named by the ECR API (no --registry-endpoint: the bytes would go where ECR says).
    let mut cmd = crate::support::deployer_process(&run.account);
    cmd.env("AWS_ENDPOINT_URL_ECR", ecr_api_reporting(look_alike.clone()))
        .env("DEPLOYER_CACHE_DIR", run.cache.path())
        .args(&push);
    let out = run_named(cmd);
    assert_failed(&out, &[&format!("GetAuthorizationToken named {look_alike}"), "not an Amazon ECR host over https"]);
    assert!(look.seen().is_empty(), "{:?}", look.seen());
}

/// Push the layout `dir` to `r` through a registry proxy that answers up to `times` `method`
/// requests whose path contains `part` with `status` and `Location: location`, run where the
/// test names resolve.
fn push_answered(
    run: &Run,
    dir: &Path,
    r: &str,
    rule: (&str, &str, usize),
    status: u16,
    location: String,
) -> (Captured, RegistryProxy) {
    let registry = RegistryProxy::start(&stack().registry_host);
    let (method, part, times) = rule;
    registry.fault(method, part, Fault::Respond { status, headers: vec![("Location".into(), location)] }, 0, times);
    let mut cmd = run.std_cmd(&registry.url);
    cmd.args(["push", "--output", "json", "--source", &src(dir), "--repository", r, "--tag", "v1"])
        .arg("--create-repository");
    (run_named(cmd), registry)
}

#[test]
fn an_upload_location_on_another_host_is_refused() {
    let run = Run::new();
    let (dir, _) = oci_dir(&layers(1, 10_000));
    let r = repo("location");
    let look = RegistryProxy::start(&stack().registry_host);
    let elsewhere = format!("http://{LOOK_ALIKE}:{}", port_of(&look));
    let location = format!("{elsewhere}/v2/{r}/blobs/uploads/0b3f?_state=stolen");
    let (out, registry) = push_answered(&run, dir.path(), &r, ("POST", "/blobs/uploads/", 100), 202, location);
    assert_failed(&out, &["upload location on another host", &elsewhere]);
    assert!(look.seen().is_empty(), "{:?}", look.seen());
    assert!(registry.faults_injected() >= 1);
    assert_eq!(registry.count("PUT", "/"), 0, "{:?}", registry.seen());
}

#[test]
fn a_redirect_to_another_host_is_followed_without_the_token() {
    let run = Run::new();
    let (dir, digest) = oci_dir(&layers(1, 10_000));
    let r = repo("redirect");
    let look = RegistryProxy::start(&stack().registry_host);
    let missing = format!("sha256:{}", "0".repeat(64));
    let location = format!("http://{LOOK_ALIKE}:{}/v2/{r}/blobs/{missing}", port_of(&look));
    let (out, registry) = push_answered(&run, dir.path(), &r, ("HEAD", "/blobs/sha256:", 1), 307, location);
    let out = ok(&out);
    assert_eq!(out["image-digest"], digest.as_str());
    assert_eq!(registry.faults_injected(), 1);
    assert_eq!(look.count("HEAD", &missing), 1, "the redirect was followed: {:?}", look.seen());
    no_authorization(&look);
    // The registry itself got the credential on every request.
    assert!(registry.seen().iter().all(|s| s.authorization.is_some()), "{:?}", registry.seen());
}

//! The action's trust boundary, tested on `scripts/action.sh` itself under crafted
//! environments (no act needed): a fake action tree, tool cache, `RUNNER_TEMP` and
//! `GITHUB_OUTPUT`, `file://` release assets through the test override, and tiny shell
//! "binaries" that record that they ran. As root, other users' directories are made with
//! chown. Also: the lists action.yml declares against the sources, and `scripts/release`
//! on a local git repository.

use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::support::repo_root;
use crate::workflows::{git, write};

const ASSET: &str = "deployer-x86_64-unknown-linux-musl";
/// `nobody`: the other user whose directories must never be trusted.
const OTHER_UID: u32 = 65534;

fn sha_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

fn executable(path: &Path, text: &str) {
    write(path, text);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Give `path` (recursively) to another user; false when this process may not (not root).
fn give_away(path: &Path) -> bool {
    let ok = std::os::unix::fs::chown(path, Some(OTHER_UID), Some(OTHER_UID)).is_ok();
    if ok && path.is_dir() {
        for e in std::fs::read_dir(path).unwrap().flatten() {
            give_away(&e.path());
        }
    }
    if !ok {
        eprintln!("not root: skipping the other-user case for {}", path.display());
    }
    ok
}

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// A crafted runner: the action's tree (scripts/action.sh, optionally checksums and source),
/// a tool cache, RUNNER_TEMP, GITHUB_OUTPUT, a PATH directory for stubs, and "binaries" that
/// record in `dir` that they ran.
struct Runner {
    dir: tempfile::TempDir,
}

impl Runner {
    fn new() -> Runner {
        let r = Runner { dir: tempfile::tempdir().unwrap() };
        let script = r.action().join("scripts/action.sh");
        std::fs::create_dir_all(script.parent().unwrap()).unwrap();
        std::fs::copy(repo_root().join("scripts/action.sh"), &script).unwrap();
        std::fs::create_dir_all(r.tool_cache()).unwrap();
        std::fs::create_dir_all(r.temp()).unwrap();
        std::fs::create_dir_all(r.path().join("bin")).unwrap();
        r
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn action(&self) -> PathBuf {
        self.path().join("action")
    }
    fn tool_cache(&self) -> PathBuf {
        self.path().join("toolcache")
    }
    fn temp(&self) -> PathBuf {
        self.path().join("runner-temp")
    }
    fn assets(&self) -> PathBuf {
        self.path().join("assets")
    }

    /// The real binary's stand-in: records its arguments and the DEPLOYER_* it sees.
    fn genuine(&self) -> String {
        let log = self.path().join("genuine-ran");
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >>'{}'\nenv | grep '^DEPLOYER_' | sort >'{}'\n",
            log.display(),
            self.path().join("genuine-env").display()
        )
    }

    /// An attacker's binary: leaves a mark if it ever runs.
    fn planted(&self) -> String {
        format!("#!/bin/sh\ntouch '{}'\n", self.path().join("planted-ran").display())
    }

    fn genuine_runs(&self) -> usize {
        std::fs::read_to_string(self.path().join("genuine-ran")).map(|s| s.lines().count()).unwrap_or(0)
    }

    fn planted_ran(&self) -> bool {
        self.path().join("planted-ran").exists()
    }

    fn seen_env(&self) -> String {
        std::fs::read_to_string(self.path().join("genuine-env")).unwrap_or_default()
    }

    /// A release of the genuine binary: the asset in `assets/`, its sha256 in the action's
    /// checksums/release.sha256, and the test override pointing downloads at `assets/`.
    fn release(&self) -> String {
        let genuine = self.genuine();
        executable(&self.assets().join(ASSET), &genuine);
        let sha = sha_hex(genuine.as_bytes());
        self.checksums("https://github.invalid/org/deployer/releases/download/v1.0.0", &sha);
        self.overrides(&format!("asset-base-url=file://{}\n", self.assets().display()));
        sha
    }

    fn checksums(&self, url: &str, sha: &str) {
        write(
            &self.action().join("checksums/release.sha256"),
            &format!(
                "# release: {url}\n{sha}  {ASSET}\n0000000000000000000000000000000000000000000000000000000000000000  deployer-aarch64-apple-darwin\n"
            ),
        );
    }

    fn overrides(&self, text: &str) {
        write(&self.action().join("test-overrides.env"), text);
    }

    /// A stub `cargo` that "builds" the genuine binary and counts its calls.
    fn cargo_stub(&self) {
        let target = "$CARGO_TARGET_DIR/release/deployer";
        executable(
            &self.path().join("bin/cargo"),
            &format!(
                "#!/bin/sh\necho \"$PWD $*\" >>'{}'\nmkdir -p \"$CARGO_TARGET_DIR/release\"\ncat >\"{target}\" <<'BIN'\n{}BIN\nchmod 755 \"{target}\"\n",
                self.path().join("cargo-calls").display(),
                self.genuine()
            ),
        );
        // The action's tree as a branch pin has it: source, no checksums/release.sha256.
        for file in ["Cargo.toml", "Cargo.lock", "src/main.rs", "sim/Cargo.toml"] {
            std::fs::create_dir_all(self.action().join(file).parent().unwrap()).unwrap();
            std::fs::copy(repo_root().join(file), self.action().join(file)).unwrap();
        }
    }

    fn cargo_calls(&self) -> usize {
        std::fs::read_to_string(self.path().join("cargo-calls")).map(|s| s.lines().count()).unwrap_or(0)
    }

    /// action.sh with a clean environment plus `envs`.
    fn run(&self, envs: &[(&str, &str)]) -> Out {
        let mut c = Command::new("bash");
        c.arg(self.action().join("scripts/action.sh"))
            .current_dir(self.path())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", self.path().join("bin").display()))
            .env("GITHUB_ACTION_PATH", self.action())
            .env("GITHUB_OUTPUT", self.path().join("github-output"))
            .env("RUNNER_TOOL_CACHE", self.tool_cache())
            .env("RUNNER_TEMP", self.temp())
            .env("RUNNER_OS", "Linux")
            .env("RUNNER_ARCH", "X64");
        for (k, v) in envs {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn outputs(&self) -> HashMap<String, String> {
        let text = std::fs::read_to_string(self.path().join("github-output")).unwrap_or_default();
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn cache_entry(&self, name: &str) -> PathBuf {
        self.tool_cache().join("deployer").join(name)
    }

    /// Plant `binary` at the tool-cache entry `name`, with a recorded hash `sha`.
    fn plant(&self, name: &str, sha: &str) -> PathBuf {
        let entry = self.cache_entry(name);
        executable(&entry.join("deployer"), &self.planted());
        write(&entry.join("deployer.sha256"), &format!("{sha}\n"));
        entry
    }

    /// Whatever action.sh left in RUNNER_TEMP.
    fn temp_entries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.temp()).unwrap().flatten().map(|e| e.path()).collect()
    }
}

fn assert_ok(out: &Out) {
    assert_eq!(out.code, Some(0), "{out}");
}

fn assert_failed(r: &Runner, out: &Out, says: &str) {
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stdout.contains("::error title=deployer action::"), "{out}");
    assert!(out.stdout.contains(says), "{says}\n{out}");
    let o = r.outputs();
    assert_eq!(o.get("result").map(String::as_str), Some("failed"), "{o:?}");
    assert_eq!(o.get("exit-code").map(String::as_str), Some("1"), "{o:?}");
    // The failed run's private directory is gone (earlier successful runs exec'd from theirs).
    let partial = r.temp_entries().iter().any(|d| d.join("deployer.download").exists() || !d.join("deployer").exists());
    assert!(!partial, "the private directory is removed: {:?}", r.temp_entries());
}

// ---------------------------------------------------------------------------------------------
// Inputs and environment.

/// Multi-line `env`/`secrets` inputs become one argument each (no shell re-parsing), and
/// empty inputs are dropped so deployer.toml applies.
#[test]
fn the_script_turns_inputs_into_arguments_without_a_shell_reparsing_them() {
    let r = Runner::new();
    let fake = r.path().join("deployer");
    executable(&fake, &r.genuine());
    let out = r.run(&[
        ("DEPLOYER_ACTION_BINARY", &fake.display().to_string()),
        ("DEPLOYER_CLUSTER", ""),
        ("DEPLOYER_SERVICE", "web"),
        ("DEPLOYER_ACTION_ENV", "A=1\n\n  \nB=two words; $(touch pwned)\n"),
        ("DEPLOYER_ACTION_SECRETS", "DB=ssm:/prod/db\n"),
    ]);
    assert_ok(&out);
    let args = std::fs::read_to_string(r.path().join("genuine-ran")).unwrap();
    assert_eq!(args, "release --env A=1 --env B=two words; $(touch pwned) --secret DB=ssm:/prod/db\n");
    assert_eq!(r.seen_env(), "DEPLOYER_SERVICE=web\n");
    assert!(!r.path().join("pwned").exists());
}

#[test]
fn job_level_deployer_variables_never_reach_the_binary() {
    let r = Runner::new();
    r.release();
    let planted = r.path().join("planted");
    executable(&planted, &r.planted());
    let out = r.run(&[
        // Set by the job (or a step's $GITHUB_ENV): each would redirect tokens or code.
        ("DEPLOYER_REGISTRY_ENDPOINT", "https://registry.attacker.example"),
        ("DEPLOYER_GITHUB_API_URL", "https://api.attacker.example"),
        ("DEPLOYER_BINARY", &planted.display().to_string()),
        ("DEPLOYER_ACTION_ASSET_BASE_URL", "https://assets.attacker.example"),
        ("DEPLOYER_LOG", "trace"),
        // Set by action.yml from the inputs.
        ("DEPLOYER_CLUSTER", "prod"),
        ("DEPLOYER_GITHUB_TOKEN", "ghs_input"),
    ]);
    assert_ok(&out);
    assert_eq!(r.genuine_runs(), 1, "{out}");
    assert!(!r.planted_ran(), "DEPLOYER_BINARY from the job is not a way in");
    assert_eq!(r.seen_env(), "DEPLOYER_CLUSTER=prod\nDEPLOYER_GITHUB_TOKEN=ghs_input\n");
    assert!(out.stdout.contains("only the action's inputs reach deployer"), "{out}");
}

/// The two lists that must agree: the variables action.yml maps inputs to, and the ones
/// action.sh lets through.
#[test]
fn the_scripts_allow_list_is_exactly_what_action_yml_sets() {
    let yml = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    let env_block = yml.split("      env:\n").nth(1).expect("the step's env block");
    let declared: BTreeSet<String> = env_block
        .lines()
        .take_while(|l| l.starts_with("        "))
        .filter_map(|l| l.trim().split_once(':').map(|(k, _)| k.to_string()))
        .collect();
    let script = std::fs::read_to_string(repo_root().join("scripts/action.sh")).unwrap();
    let list = script.split("allowed_vars=(").nth(1).and_then(|s| s.split(')').next()).expect("allowed_vars");
    let mut allowed: BTreeSet<String> = list.split_whitespace().map(str::to_string).collect();
    // Read by the script itself and never passed on.
    allowed.extend(["DEPLOYER_ACTION_BINARY", "DEPLOYER_ACTION_ENV", "DEPLOYER_ACTION_SECRETS"].map(String::from));
    assert!(declared.len() > 20, "{declared:?}");
    assert_eq!(declared, allowed);
}

/// Every `set_output("…")` in the sources (and the names main.rs writes) is an output of
/// action.yml, and action.yml declares nothing deployer never writes.
#[test]
fn every_output_deployer_writes_is_declared_in_action_yml() {
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    sources(&repo_root().join("src"), &mut files);
    let pattern = regex::Regex::new(r#"set_output\(\s*"([a-z0-9-]+)""#).unwrap();
    let mut written = BTreeSet::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        written.extend(pattern.captures_iter(&text).map(|c| c[1].to_string()));
    }
    let main = std::fs::read_to_string(repo_root().join("src/main.rs")).unwrap();
    let edge = regex::Regex::new(r#"write_output\([^,]+,\s*"([a-z0-9-]+)""#).unwrap();
    written.extend(edge.captures_iter(&main).map(|c| c[1].to_string()));
    let yml = std::fs::read_to_string(repo_root().join("action.yml")).unwrap();
    let block = yml.split("\noutputs:\n").nth(1).and_then(|s| s.split("\nruns:").next()).expect("outputs");
    let declared: BTreeSet<String> = block
        .lines()
        .filter(|l| l.starts_with("  ") && !l.starts_with("   ") && l.trim_end().ends_with(':'))
        .map(|l| l.trim().trim_end_matches(':').to_string())
        .collect();
    for name in ["result", "exit-code", "image-tags"] {
        assert!(written.contains(name), "{name} is written: {written:?}");
    }
    assert_eq!(written, declared, "written by deployer vs declared in action.yml");
    // Each declared output reads the step's output of the same name.
    for name in &declared {
        assert!(block.contains(&format!("${{{{ steps.release.outputs.{name} }}}}")), "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// The release asset.

#[test]
fn a_verified_release_asset_runs_and_is_cached_for_the_next_run() {
    let r = Runner::new();
    let sha = r.release();
    assert_ok(&r.run(&[]));
    assert_eq!(r.genuine_runs(), 1);
    let entry = r.cache_entry(&format!("release-{sha}"));
    assert_eq!(sha_hex(&std::fs::read(entry.join("deployer")).unwrap()), sha);
    let mode = std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the cache entry is private");
    // The next run needs no download: the cached copy is verified and run.
    std::fs::remove_file(r.assets().join(ASSET)).unwrap();
    let out = r.run(&[]);
    assert_ok(&out);
    assert_eq!(r.genuine_runs(), 2, "{out}");
    assert!(!out.stderr.contains("downloading"), "{out}");
    // What ran lived in a private directory of RUNNER_TEMP, never in the cache.
    let ran: Vec<PathBuf> = r.temp_entries();
    assert_eq!(ran.len(), 2, "{ran:?}");
    for dir in ran {
        assert!(dir.file_name().unwrap().to_string_lossy().starts_with("deployer-bin."), "{}", dir.display());
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    }
}

#[test]
fn a_tampered_or_substituted_asset_is_refused_before_anything_runs() {
    let r = Runner::new();
    let sha = r.release();
    // Tampered: the bytes at the asset's URL are not the released ones.
    executable(&r.assets().join(ASSET), &r.planted());
    let out = r.run(&[]);
    assert_failed(&r, &out, &format!("checksum mismatch for {ASSET}: expected {sha}"));
    assert!(!r.planted_ran());
    assert!(!r.cache_entry(&format!("release-{sha}")).join("deployer").exists(), "nothing cached");
    // Substituted: another platform's genuine-looking asset served under this name.
    let other = format!("{}# aarch64\n", r.genuine());
    executable(&r.assets().join(ASSET), &other);
    let out = r.run(&[]);
    assert_failed(&r, &out, "checksum mismatch");
    assert_eq!(r.genuine_runs(), 0);
}

#[test]
fn downloads_are_https_only_unless_the_test_override_says_file() {
    let r = Runner::new();
    let sha = r.release();
    std::fs::remove_file(r.action().join("test-overrides.env")).unwrap();
    for url in ["http://github.invalid/org/deployer/releases/download/v1.0.0", "file:///tmp/assets", "ftp://x/y"] {
        r.checksums(url, &sha);
        let out = r.run(&[]);
        assert_failed(&r, &out, "the release URL must be https");
    }
    assert_eq!(r.genuine_runs(), 0);
}

#[test]
fn a_failed_step_fails_the_action_and_nothing_else_runs() {
    let r = Runner::new();
    r.release();
    r.cargo_stub();
    // The download fails: no fallback to a source build, no other binary.
    std::fs::remove_file(r.assets().join(ASSET)).unwrap();
    let out = r.run(&[]);
    assert_failed(&r, &out, "a step failed (exit 37): curl");
    assert_eq!(r.cargo_calls(), 0, "no fallback to a source build");
    assert_eq!(r.genuine_runs(), 0);
    // RUNNER_TEMP cannot hold a private directory.
    r.release();
    std::fs::remove_dir(r.temp()).unwrap();
    let out = r.run(&[]);
    assert_eq!(out.code, Some(1), "{out}");
    assert_eq!(r.outputs().get("result").map(String::as_str), Some("failed"));
    // A temp directory others can write without the sticky bit is refused.
    std::fs::create_dir(r.temp()).unwrap();
    chmod(&r.temp(), 0o777);
    let out = r.run(&[]);
    assert_failed(&r, &out, "is writable by others without the sticky bit");
    assert_eq!(r.genuine_runs(), 0);
    chmod(&r.temp(), 0o1777);
    assert_ok(&r.run(&[]));
    assert_eq!(r.genuine_runs(), 1);
}

#[test]
fn a_planted_release_binary_in_the_tool_cache_is_never_executed() {
    let r = Runner::new();
    let sha = r.release();
    let name = format!("release-{sha}");
    // The predictable path, ours, with the right recorded hash but other bytes: the copy's
    // hash decides, the genuine asset is downloaded and replaces it.
    let entry = r.plant(&name, &sha);
    let out = r.run(&[]);
    assert_ok(&out);
    assert!(out.stdout.contains("does not match its sha256"), "{out}");
    assert_eq!((r.genuine_runs(), r.planted_ran()), (1, false));
    assert_eq!(sha_hex(&std::fs::read(entry.join("deployer")).unwrap()), sha, "replaced by the verified asset");

    // Group- or world-writable: bypassed, whatever it holds.
    std::fs::remove_dir_all(&entry).unwrap();
    let entry = r.plant(&name, &sha);
    chmod(&entry, 0o777);
    let out = r.run(&[]);
    assert_ok(&out);
    assert!(out.stdout.contains("is writable by group or others"), "{out}");
    assert_eq!((r.genuine_runs(), r.planted_ran()), (2, false));

    // A symbolic link to a planted file.
    std::fs::remove_dir_all(&entry).unwrap();
    std::fs::create_dir_all(&entry).unwrap();
    chmod(&entry, 0o700);
    let elsewhere = r.path().join("elsewhere");
    executable(&elsewhere, &r.planted());
    std::os::unix::fs::symlink(&elsewhere, entry.join("deployer")).unwrap();
    write(&entry.join("deployer.sha256"), &sha);
    let out = r.run(&[]);
    assert_ok(&out);
    assert!(out.stdout.contains("is a symbolic link"), "{out}");
    assert_eq!((r.genuine_runs(), r.planted_ran()), (3, false));

    // Another user's entry, and another user's whole cache directory.
    std::fs::remove_dir_all(&entry).unwrap();
    let entry = r.plant(&name, &sha);
    if give_away(&entry) {
        let out = r.run(&[]);
        assert_ok(&out);
        assert!(out.stdout.contains(&format!("is owned by uid {OTHER_UID}")), "{out}");
        assert_eq!((r.genuine_runs(), r.planted_ran()), (4, false));
        assert!(give_away(&r.tool_cache().join("deployer")));
        let out = r.run(&[]);
        assert_ok(&out);
        assert!(out.stdout.contains("not using the tool cache"), "{out}");
        assert_eq!((r.genuine_runs(), r.planted_ran()), (5, false));
    }
}

// ---------------------------------------------------------------------------------------------
// The source build (a branch pin: no checksums in the tree).

#[test]
fn without_a_checksum_the_action_builds_from_source_once_says_so_and_caches_it() {
    let r = Runner::new();
    r.cargo_stub();
    let out = r.run(&[]);
    assert_ok(&out);
    assert!(out.stdout.contains("::notice title=deployer action::this action's tree has no release checksum"), "{out}");
    assert_ok(&r.run(&[]));
    assert_eq!(r.genuine_runs(), 2);
    let calls = std::fs::read_to_string(r.path().join("cargo-calls")).unwrap();
    assert_eq!(
        calls,
        format!("{} build --release --locked -p deployer --bin deployer\n", r.action().display()),
        "one build, from the action's path"
    );
    // The entry records the hash of what was built.
    let entry = std::fs::read_dir(r.tool_cache().join("deployer"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("source-"))
        .expect("a source-<hash> entry");
    let recorded = std::fs::read_to_string(entry.join("deployer.sha256")).unwrap();
    assert_eq!(recorded.trim(), sha_hex(r.genuine().as_bytes()));
}

#[test]
fn a_planted_source_build_in_the_tool_cache_is_never_executed() {
    let r = Runner::new();
    r.cargo_stub();
    assert_ok(&r.run(&[]));
    let entry = std::fs::read_dir(r.tool_cache().join("deployer"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("source-"))
        .expect("a source-<hash> entry");
    let recorded = std::fs::read_to_string(entry.join("deployer.sha256")).unwrap();

    // Bytes swapped under the recorded hash: rebuilt, not run.
    executable(&entry.join("deployer"), &r.planted());
    chmod(&entry.join("deployer"), 0o700);
    let out = r.run(&[]);
    assert_ok(&out);
    assert!(out.stdout.contains("does not match its sha256"), "{out}");
    assert_eq!((r.cargo_calls(), r.genuine_runs(), r.planted_ran()), (2, 2, false));

    // A planted entry whose recorded hash matches the planted bytes, but group-writable.
    let name = entry.file_name().unwrap().to_string_lossy().to_string();
    std::fs::remove_dir_all(&entry).unwrap();
    let entry = r.plant(&name, &sha_hex(r.planted().as_bytes()));
    chmod(&entry.join("deployer"), 0o777);
    let out = r.run(&[]);
    assert_ok(&out);
    assert!(out.stdout.contains("is writable by group or others"), "{out}");
    assert_eq!((r.cargo_calls(), r.genuine_runs(), r.planted_ran()), (3, 3, false));

    // The same, owned by another user (recorded hash and all).
    std::fs::remove_dir_all(&entry).unwrap();
    let entry = r.plant(&name, &sha_hex(r.planted().as_bytes()));
    if give_away(&entry) {
        let out = r.run(&[]);
        assert_ok(&out);
        assert!(out.stdout.contains(&format!("is owned by uid {OTHER_UID}")), "{out}");
        assert_eq!((r.cargo_calls(), r.genuine_runs(), r.planted_ran()), (4, 4, false));
    }
    assert_ne!(recorded.trim(), sha_hex(r.planted().as_bytes()));
}

// ---------------------------------------------------------------------------------------------
// scripts/release on a local repository.

const TARGETS: [&str; 3] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl", "aarch64-apple-darwin"];

struct Released {
    dir: tempfile::TempDir,
}

impl Released {
    /// A repository holding this action's action.yml and scripts/action.sh, and assets.
    fn new() -> Released {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        for file in ["action.yml", "scripts/action.sh", "checksums/README.md"] {
            std::fs::create_dir_all(repo.join(file).parent().unwrap()).unwrap();
            std::fs::copy(repo_root().join(file), repo.join(file)).unwrap();
        }
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "the action"]);
        let rel = Released { dir };
        rel.assets("v1");
        rel
    }

    fn repo(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// One asset per target; `flavour` makes them differ between releases.
    fn assets(&self, flavour: &str) {
        for t in TARGETS {
            let log = self.dir.path().join("ran");
            executable(
                &self.dir.path().join("assets").join(format!("deployer-{t}")),
                &format!("#!/bin/sh\necho '{flavour} {t}' >>'{}'\n", log.display()),
            );
        }
    }

    fn release(&self, args: &[&str]) -> Out {
        let out = Command::new(repo_root().join("scripts/release"))
            .current_dir(self.repo())
            .args(args)
            .env_remove("GITHUB_OUTPUT")
            .env_remove("GITHUB_REPOSITORY")
            .env("GIT_AUTHOR_NAME", "release")
            .env("GIT_AUTHOR_EMAIL", "release@example.com")
            .env("GIT_COMMITTER_NAME", "release")
            .env("GIT_COMMITTER_EMAIL", "release@example.com")
            .output()
            .unwrap();
        Out {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn git_out(&self, args: &[&str]) -> String {
        let out = Command::new("git").current_dir(self.repo()).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn commit_of(&self, rev: &str) -> String {
        self.git_out(&["rev-parse", &format!("{rev}^{{commit}}")])
    }
}

#[test]
fn a_release_points_both_tags_at_a_commit_whose_checksums_name_every_asset() {
    let rel = Released::new();
    let head = rel.commit_of("HEAD");
    let status_before = rel.git_out(&["status", "--porcelain"]);
    let assets = rel.dir.path().join("assets").display().to_string();
    let out =
        rel.release(&["--base-url", "https://github.com/org/deployer/releases/download/v1.2.3", "1.2.3", &assets]);
    assert_eq!(out.code, Some(0), "{out}");

    let commit = rel.commit_of("v1.2.3");
    assert_eq!(rel.commit_of("v1"), commit, "the major tag and the release tag name one commit");
    assert!(out.stdout.contains(&format!("commit={commit}\n")), "{out}");
    assert_eq!(rel.commit_of(&format!("{commit}^")), head, "on top of the released source");
    let list = rel.git_out(&["show", &format!("{commit}:checksums/release.sha256")]);
    let mut lines = list.lines();
    assert_eq!(lines.next(), Some("# release: https://github.com/org/deployer/releases/download/v1.2.3"));
    let named: Vec<(String, String)> =
        lines.map(|l| l.split_once("  ").map(|(h, n)| (h.to_string(), n.to_string())).unwrap()).collect();
    assert_eq!(named.len(), TARGETS.len(), "{list}");
    for t in TARGETS {
        let bytes = std::fs::read(rel.dir.path().join("assets").join(format!("deployer-{t}"))).unwrap();
        assert!(named.contains(&(sha_hex(&bytes), format!("deployer-{t}"))), "deployer-{t} in\n{list}");
    }
    // Only the checksum file changed; the work tree, index and branch are as they were.
    let changed = rel.git_out(&["diff", "--name-only", &head, &commit]);
    assert_eq!(changed, "checksums/release.sha256");
    assert_eq!(rel.commit_of("HEAD"), head);
    assert_eq!(rel.git_out(&["status", "--porcelain"]), status_before);

    // A release tag never moves; the major tag only moves forward.
    let again = rel.release(&["--base-url", "https://x.example/v", "1.2.3", &assets]);
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains("tag v1.2.3 exists already"), "{again}");
    rel.assets("v1.3.0");
    assert_eq!(rel.release(&["--base-url", "https://x.example/v", "v1.3.0", &assets]).code, Some(0));
    let v130 = rel.commit_of("v1.3.0");
    assert_eq!(rel.commit_of("v1"), v130);
    let patch = rel.release(&["--base-url", "https://x.example/v", "1.2.4", &assets]);
    assert_eq!(patch.code, Some(0), "{patch}");
    assert!(patch.stdout.contains("major-moved=no"), "{patch}");
    assert_eq!(rel.commit_of("v1"), v130, "v1 stays on the highest release");
    assert_eq!(rel.commit_of("v1.2.3"), commit);
}

#[test]
fn the_release_script_refuses_what_would_make_a_bad_pin() {
    let rel = Released::new();
    let assets = rel.dir.path().join("assets");
    let a = assets.display().to_string();
    let url = "https://github.com/org/deployer/releases/download/v1.0.0";
    for (args, code, says) in [
        (vec!["--base-url", url, "1.2", &a], 2, "is not X.Y.Z"),
        (vec!["--base-url", url, "1.2.3-rc1", &a], 2, "is not X.Y.Z"),
        (vec!["--base-url", url, "01.2.3", &a], 2, "is not X.Y.Z"),
        (vec!["--base-url", "http://github.com/x", "1.2.3", &a], 2, "must be https"),
        (vec!["1.2.3", &a], 2, "no --base-url and no GITHUB_REPOSITORY"),
    ] {
        let out = rel.release(&args);
        assert_eq!(out.code, Some(code), "{args:?}\n{out}");
        assert!(out.stderr.contains(says), "{args:?}\n{out}");
    }
    // A missing asset, and one it does not know.
    std::fs::remove_file(assets.join("deployer-aarch64-apple-darwin")).unwrap();
    let out = rel.release(&["--base-url", url, "1.0.0", &a]);
    assert!(out.code == Some(1) && out.stderr.contains("missing asset"), "{out}");
    rel.assets("x");
    write(&assets.join("deployer-x86_64-pc-windows-msvc.exe"), "x");
    let out = rel.release(&["--base-url", url, "1.0.0", &a]);
    assert!(out.code == Some(1) && out.stderr.contains("is not an asset of a release"), "{out}");
    std::fs::remove_file(assets.join("deployer-x86_64-pc-windows-msvc.exe")).unwrap();
    // A tree that would switch the action's test overrides on.
    write(&rel.repo().join("test-overrides.env"), "binary=/tmp/x\n");
    git(&rel.repo(), &["add", "-f", "test-overrides.env"]);
    git(&rel.repo(), &["commit", "-qm", "oops"]);
    let out = rel.release(&["--base-url", url, "1.0.0", &a]);
    assert!(out.code == Some(1) && out.stderr.contains("test-overrides.env"), "{out}");
    assert_eq!(rel.git_out(&["tag", "--list"]), "", "no tag was made");
}

/// The whole pin: the tree of a release tag, as a workflow pinning it checks it out, verifies
/// and runs that release's asset, and refuses one changed after the release.
#[test]
fn a_release_tags_tree_verifies_its_own_assets() {
    let rel = Released::new();
    let a = rel.dir.path().join("assets").display().to_string();
    let out = rel.release(&["--base-url", "https://github.com/org/deployer/releases/download/v2.0.0", "2.0.0", &a]);
    assert_eq!(out.code, Some(0), "{out}");
    let commit = rel.commit_of("v2");
    let r = Runner::new();
    std::fs::remove_dir_all(r.action()).unwrap();
    std::fs::create_dir_all(r.action()).unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!("git archive {commit} | tar -x -C '{}'", r.action().display()))
        .current_dir(rel.repo())
        .status()
        .unwrap();
    assert!(archive.success());
    r.overrides(&format!("asset-base-url=file://{a}\n"));
    assert_ok(&r.run(&[]));
    let ran = std::fs::read_to_string(rel.dir.path().join("ran")).unwrap();
    assert_eq!(ran, "v1 x86_64-unknown-linux-musl\n");
    // Someone replaces the published asset afterwards.
    rel.assets("evil");
    std::fs::remove_dir_all(r.tool_cache().join("deployer")).unwrap();
    let out = r.run(&[]);
    assert_failed(&r, &out, "checksum mismatch");
    assert_eq!(std::fs::read_to_string(rel.dir.path().join("ran")).unwrap(), ran, "the new asset never ran");
}

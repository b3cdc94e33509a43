//! One moto_server and one docker-registry per test binary, on free loopback ports. Each runs
//! under a small `sh` guard that kills it when the test binary's end of a pipe closes, so no
//! server outlives the tests, however they end.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::repo_root;

pub struct Stack {
    /// `http://127.0.0.1:PORT` of moto_server (AWS_ENDPOINT_URL).
    pub moto_url: String,
    /// `http://127.0.0.1:PORT` of docker-registry.
    pub registry_url: String,
    /// `127.0.0.1:PORT` of docker-registry, as an image reference's host.
    pub registry_host: String,
    pub dir: PathBuf,
    _guards: Mutex<Vec<Child>>,
}

/// The stack of this test binary, started on first use.
pub fn stack() -> &'static Stack {
    static STACK: OnceLock<Stack> = OnceLock::new();
    STACK.get_or_init(start)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free loopback port")
}

fn moto_server() -> PathBuf {
    let venv = std::env::var_os("DEPLOYER_VENV").map(PathBuf::from).unwrap_or_else(|| repo_root().join(".venv"));
    let bin = venv.join("bin/moto_server");
    if !bin.exists() {
        let status = Command::new(repo_root().join("scripts/stack"))
            .arg("install")
            .env("DEPLOYER_VENV", &venv)
            .status()
            .expect("run scripts/stack install");
        assert!(status.success(), "scripts/stack install failed");
    }
    bin
}

/// Start `program args…` under a guard shell that kills it once our pipe closes.
fn guarded(program: &str, args: &[&str], log: PathBuf) -> Child {
    let log = std::fs::File::create(&log).expect("log file");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$@" & child=$!; read _ || true; kill "$child" 2>/dev/null; wait "$child""#)
        .arg("guard")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    // Keep stdin open: dropping it (or our process ending) stops the server.
    let _ = child.stdin.as_mut().map(|s| s.flush());
    child
}

fn wait_http(addr: SocketAddr, path: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
            let mut buf = [0u8; 12];
            if s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not answer on {addr} within 30 s");
}

fn start() -> Stack {
    let dir = tempfile::Builder::new().prefix("deployer-stack-").tempdir().expect("stack dir").keep();
    let moto_port = free_port();
    let moto = guarded(
        moto_server().to_str().expect("utf-8 path"),
        &["-H", "127.0.0.1", "-p", &moto_port.to_string()],
        dir.join("moto.log"),
    );
    let reg_port = free_port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{reg_port}\n",
            dir.join("registry-data").display()
        ),
    )
    .expect("registry config");
    let registry =
        guarded("docker-registry", &["serve", config.to_str().expect("utf-8 path")], dir.join("registry.log"));
    let moto_addr: SocketAddr = ([127, 0, 0, 1], moto_port).into();
    let reg_addr: SocketAddr = ([127, 0, 0, 1], reg_port).into();
    wait_http(moto_addr, "/moto-api/", "moto_server");
    wait_http(reg_addr, "/v2/", "docker-registry");
    Stack {
        moto_url: format!("http://{moto_addr}"),
        registry_url: format!("http://{reg_addr}"),
        registry_host: reg_addr.to_string(),
        dir,
        _guards: Mutex::new(vec![moto, registry]),
    }
}

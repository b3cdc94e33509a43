//! A loopback HTTP proxy in front of docker-registry that records every request (with its
//! `Authorization` header and how many body bytes reached the registry) and injects faults: an
//! error status, an answer of the test's choosing (a redirect, an upload `Location` elsewhere), a
//! connection dropped part-way through the request body, slow bodies in both directions, or a
//! request that hangs. Each fault applies to a bounded number of matching requests, so a client
//! that retries always gets through in the end.
//!
//! One request per connection: the proxy asks both sides for `Connection: close`, so it only
//! parses request heads, never responses beyond their status line.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::runtime;

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (after reading the request body) without forwarding.
    Status(u16),
    /// Answer with this status and these headers (after reading the request body) without
    /// forwarding.
    Respond { status: u16, headers: Vec<(String, String)> },
    /// Forward the head and this many body bytes (at most half the body), then drop both
    /// connections.
    DropAfter(usize),
    /// Forward everything, in `chunk`-byte pieces with `delay` between them, both ways.
    Slow { chunk: usize, delay: Duration },
    /// Never answer (the connection is held for up to two minutes).
    Hang,
}

#[derive(Debug, Clone)]
struct Rule {
    method: String,
    path_contains: String,
    fault: Fault,
    /// Matching requests to let through before the fault starts.
    skip: usize,
    /// How many more requests get the fault.
    times: usize,
}

/// A request the proxy saw; `status` is set once the upstream (or the fault) answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub status: Option<u16>,
    pub fault: Option<String>,
    /// The `Authorization` header the client sent, if any.
    pub authorization: Option<String>,
    /// The request's `Content-Length`.
    pub content_length: usize,
    /// Body bytes passed on to the registry (set when the request is done).
    pub forwarded: Option<usize>,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
}

pub struct RegistryProxy {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    state: Arc<State>,
}

impl RegistryProxy {
    /// Start a proxy to `upstream` (`127.0.0.1:PORT`) on a free loopback port.
    pub fn start(upstream: &str) -> Self {
        // Bound here, served on the support runtime: works from sync and async tests alike.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let upstream = upstream.to_string();
        let st = state.clone();
        runtime().spawn(async move {
            let listener = TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((client, _)) = listener.accept().await {
                let (st, upstream) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    let _ = handle(client, &upstream, &st).await;
                });
            }
        });
        RegistryProxy { url: format!("http://{addr}"), host: addr.to_string(), state }
    }

    /// Inject `fault` into `times` requests whose method is `method` (or "*") and whose path
    /// contains `path_contains`, after letting `skip` of them through.
    pub fn fault(&self, method: &str, path_contains: &str, fault: Fault, skip: usize, times: usize) {
        self.state.rules.lock().unwrap().push(Rule {
            method: method.to_string(),
            path_contains: path_contains.to_string(),
            fault,
            skip,
            times,
        });
    }

    pub fn clear_faults(&self) {
        self.state.rules.lock().unwrap().clear();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    pub fn reset_log(&self) {
        self.state.seen.lock().unwrap().clear();
    }

    /// Requests with this method whose path contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.path.contains(part)).count()
    }

    /// Like `count`, only those the upstream answered with `status`.
    pub fn count_status(&self, method: &str, part: &str, status: u16) -> usize {
        self.seen().iter().filter(|s| s.method == method && s.path.contains(part) && s.status == Some(status)).count()
    }

    /// Requests that got an injected fault.
    pub fn faults_injected(&self) -> usize {
        self.seen().iter().filter(|s| s.fault.is_some()).count()
    }
}

fn pick(state: &State, method: &str, path: &str) -> Option<Fault> {
    let mut rules = state.rules.lock().unwrap();
    for rule in rules.iter_mut() {
        if (rule.method == "*" || rule.method == method) && path.contains(&rule.path_contains) && rule.times > 0 {
            if rule.skip > 0 {
                rule.skip -= 1;
                return None;
            }
            rule.times -= 1;
            return Some(rule.fault.clone());
        }
    }
    None
}

async fn handle(mut client: TcpStream, upstream: &str, state: &State) -> std::io::Result<()> {
    // The head, and whatever body bytes came with it.
    let mut buf = Vec::with_capacity(8192);
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let body_start = buf[head_end..].to_vec();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut content_length = 0usize;
    let mut authorization = None;
    let mut new_head = format!("{request_line}\r\n");
    for line in lines.filter(|l| !l.is_empty()) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("connection:") {
            continue;
        }
        if lower.starts_with("authorization:") {
            authorization = line.split_once(':').map(|(_, v)| v.trim().to_string());
        }
        if let Some(v) = lower.strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        new_head.push_str(line);
        new_head.push_str("\r\n");
    }
    new_head.push_str("Connection: close\r\n\r\n");
    let fault = pick(state, &method, &path);
    let index = {
        let mut seen = state.seen.lock().unwrap();
        seen.push(Seen {
            method: method.clone(),
            path: path.clone(),
            status: None,
            fault: fault.as_ref().map(|f| format!("{f:?}")),
            authorization,
            content_length,
            forwarded: None,
        });
        seen.len() - 1
    };
    let set_status = |status: u16| state.seen.lock().unwrap()[index].status = Some(status);
    let set_forwarded = |n: usize| state.seen.lock().unwrap()[index].forwarded = Some(n);

    match fault {
        Some(Fault::Status(code)) => respond(client, content_length, body_start.len(), code, &[], set_status).await,
        Some(Fault::Respond { status, headers }) => {
            respond(client, content_length, body_start.len(), status, &headers, set_status).await
        }
        Some(Fault::Hang) => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok(())
        }
        Some(Fault::DropAfter(n)) => {
            // Always cut the body short, even a body smaller than `n`.
            let n = n.min(content_length / 2);
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(new_head.as_bytes()).await?;
            let mut sent = body_start.len().min(n);
            up.write_all(&body_start[..sent]).await?;
            let mut chunk = vec![0u8; 16 * 1024];
            while sent < n {
                let k = client.read(&mut chunk[..(n - sent).min(16 * 1024)]).await?;
                if k == 0 {
                    break;
                }
                up.write_all(&chunk[..k]).await?;
                sent += k;
            }
            // Drop both sides: the client sees its connection die mid-body.
            drop(up);
            drop(client);
            set_forwarded(sent);
            Ok(())
        }
        slow => {
            let pace = match slow {
                Some(Fault::Slow { chunk, delay }) => Some((chunk, delay)),
                _ => None,
            };
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(new_head.as_bytes()).await?;
            up.write_all(&body_start).await?;
            let (mut cr, mut cw) = client.into_split();
            let (mut ur, mut uw) = up.into_split();
            let first = body_start.len();
            let to_upstream = async move {
                let n = pipe(&mut cr, &mut uw, pace).await;
                set_forwarded(first + n);
                let _ = uw.shutdown().await;
            };
            let to_client = async {
                // The first chunk carries the status line.
                let mut first = vec![0u8; 16 * 1024];
                let n = ur.read(&mut first).await.unwrap_or(0);
                if n > 0 {
                    let text = String::from_utf8_lossy(&first[..n.min(32)]).to_string();
                    if let Some(code) = text.split(' ').nth(1).and_then(|c| c.parse().ok()) {
                        set_status(code);
                    }
                    let _ = cw.write_all(&first[..n]).await;
                    pipe(&mut ur, &mut cw, pace).await;
                }
                let _ = cw.shutdown().await;
            };
            tokio::join!(to_upstream, to_client);
            Ok(())
        }
    }
}

/// Answer without forwarding: read the body (bounded) so the client sees the answer, not a
/// reset, then send `status` with `headers`.
async fn respond(
    mut client: TcpStream,
    content_length: usize,
    already: usize,
    status: u16,
    headers: &[(String, String)],
    set_status: impl Fn(u16),
) -> std::io::Result<()> {
    let mut remaining = content_length.saturating_sub(already).min(64 << 20);
    let mut sink = vec![0u8; 64 * 1024];
    while remaining > 0 {
        let want = remaining.min(sink.len());
        let n = client.read(&mut sink[..want]).await?;
        if n == 0 {
            break;
        }
        remaining -= n;
    }
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let resp = format!(
        "HTTP/1.1 {status} Injected\r\n{extra}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    client.write_all(resp.as_bytes()).await?;
    set_status(status);
    let _ = client.shutdown().await;
    Ok(())
}

/// Copy until the end (or an error); returns how many bytes were written.
async fn pipe<R, W>(r: &mut R, w: &mut W, pace: Option<(usize, Duration)>) -> usize
where
    R: AsyncReadExt + Unpin,
    W: AsyncWriteExt + Unpin,
{
    let size = pace.map_or(64 * 1024, |(c, _)| c.max(1));
    let mut buf = vec![0u8; size];
    let mut total = 0;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => n,
        };
        if w.write_all(&buf[..n]).await.is_err() {
            return total;
        }
        total += n;
        if let Some((_, delay)) = pace {
            tokio::time::sleep(delay).await;
        }
    }
}

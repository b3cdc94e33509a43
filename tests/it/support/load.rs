//! A bounded loopback HTTP load generator: a few workers send GET requests to one URL until
//! a request budget or a deadline runs out (or `stop` is called), counting successes,
//! failures, and which app versions (`{"version": …}` in the body) answered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Stop after this many requests in total.
    pub max_requests: u64,
    /// Stop after this long, whatever else happens.
    pub max_duration: Duration,
    /// Concurrent workers.
    pub concurrency: usize,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_requests: 20_000,
            max_duration: Duration::from_secs(30),
            concurrency: 4,
            request_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    pub ok: u64,
    pub failed: u64,
    /// Answers per version (the body's `version` field, else the body itself, truncated).
    pub versions: BTreeMap<String, u64>,
    /// The first few failures, for assertion messages.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl LoadReport {
    pub fn saw(&self, version: &str) -> bool {
        self.versions.contains_key(version)
    }

    fn merge(&mut self, other: LoadReport) {
        self.ok += other.ok;
        self.failed += other.failed;
        for (k, v) in other.versions {
            *self.versions.entry(k).or_default() += v;
        }
        for f in other.failures {
            if self.failures.len() < 10 {
                self.failures.push(f);
            }
        }
    }
}

/// A load run in the background.
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    workers: Vec<tokio::task::JoinHandle<LoadReport>>,
}

/// Starts workers on the current tokio runtime.
pub fn start(url: &str, opts: LoadOptions) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let budget = Arc::new(AtomicU64::new(opts.max_requests));
    let started = Instant::now();
    let deadline = started + opts.max_duration;
    let client = reqwest::Client::builder().no_proxy().timeout(opts.request_timeout).build().expect("load client");
    let workers = (0..opts.concurrency.max(1))
        .map(|_| {
            let (stop, budget, client, url) = (stop.clone(), budget.clone(), client.clone(), url.to_string());
            tokio::spawn(async move {
                let mut r = LoadReport::default();
                // Bounded by the request budget and the deadline.
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    if budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                        break;
                    }
                    match client.get(&url).send().await {
                        Ok(resp) => {
                            let status = resp.status();
                            let body = resp.text().await.unwrap_or_default();
                            if status.is_success() {
                                r.ok += 1;
                                let key = serde_json::from_str::<serde_json::Value>(&body)
                                    .ok()
                                    .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_string))
                                    .unwrap_or_else(|| body.chars().take(60).collect());
                                *r.versions.entry(key).or_default() += 1;
                            } else {
                                r.failed += 1;
                                if r.failures.len() < 10 {
                                    r.failures
                                        .push(format!("HTTP {status}: {}", body.chars().take(120).collect::<String>()));
                                }
                            }
                        }
                        Err(e) => {
                            r.failed += 1;
                            if r.failures.len() < 10 {
                                r.failures.push(format!("request error: {e}"));
                            }
                        }
                    }
                }
                r
            })
        })
        .collect();
    Load { stop, started, workers }
}

impl Load {
    /// Stops the workers and sums what they saw.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Waits for the budget or deadline to run out.
    pub async fn join(self) -> LoadReport {
        let mut total = LoadReport::default();
        for w in self.workers {
            if let Ok(r) = w.await {
                total.merge(r);
            }
        }
        total.elapsed = self.started.elapsed();
        total
    }
}

/// Runs a load to completion (budget or deadline).
pub async fn run(url: &str, opts: LoadOptions) -> LoadReport {
    start(url, opts).join().await
}

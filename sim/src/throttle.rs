//! ECS's API request throttling, as the real service applies it (AWS, "Request throttling for
//! the Amazon ECS API"): a token bucket per account, Region and bucket — the bucket's size is
//! the burst, its refill per second the sustained rate — and a call that finds it empty is
//! refused with `ThrottlingException` / `Rate exceeded`. Several operations share one bucket
//! (ListTasks and DescribeTasks; List and DescribeServiceDeployments). Operations whose
//! figures AWS does not publish in that table are not throttled here.
//!
//! Off unless `--throttle` (or `POST /_sim/throttle`) turns it on; real time, not scaled by
//! `--time-scale` (deployer's own limiter runs on the wall clock too). Every ECS call is also
//! logged with its time and whether it was refused, so `GET /_sim/calls` can give the peak
//! per-second rate per bucket and tests can count refusals.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use serde_json::{Value, json};

/// One bucket's size (burst) and refill per second (sustained rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub burst: f64,
    pub rate: f64,
}

/// The bucket an operation draws from, as AWS documents it; `None`: not throttled by the sim.
pub fn bucket_of(op: &str) -> Option<&'static str> {
    Some(match op {
        "DescribeServices" => "DescribeServices",
        "UpdateService" => "UpdateService",
        "ListServiceDeployments" | "DescribeServiceDeployments" => "ServiceDeployments",
        "ListTasks" | "DescribeTasks" => "Tasks",
        "DescribeTaskDefinition" => "DescribeTaskDefinition",
        _ => return None,
    })
}

/// ECS's documented figures per bucket (burst / refill per second).
pub fn ecs_limits() -> BTreeMap<String, Limit> {
    [
        ("DescribeServices", 100.0, 20.0),
        ("UpdateService", 50.0, 5.0),
        ("ServiceDeployments", 50.0, 20.0),
        ("Tasks", 100.0, 20.0),
        ("DescribeTaskDefinition", 50.0, 20.0),
    ]
    .into_iter()
    .map(|(b, burst, rate)| (b.to_string(), Limit { burst, rate }))
    .collect()
}

/// One token bucket: full at first, refilled continuously.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// One logged call.
#[derive(Debug, Clone)]
pub struct Call {
    /// Milliseconds since the log was last cleared.
    pub at_ms: u64,
    pub op: String,
    pub account: String,
    pub throttled: bool,
}

/// The most calls the log keeps (a long soak test must not grow the sim without bound).
const LOG_LIMIT: usize = 200_000;

pub struct Throttle {
    pub enabled: bool,
    pub limits: BTreeMap<String, Limit>,
    buckets: HashMap<(String, String, String), Bucket>,
    log: Vec<Call>,
    since: Instant,
}

impl Throttle {
    pub fn new(enabled: bool) -> Throttle {
        Throttle { enabled, limits: ecs_limits(), buckets: HashMap::new(), log: Vec::new(), since: Instant::now() }
    }

    /// Take a token for `op` of `account` in `region` at `now`; false: refused. Logs the call.
    pub fn admit(&mut self, account: &str, region: &str, op: &str, now: Instant) -> bool {
        let ok = match (self.enabled, bucket_of(op).and_then(|b| Some((b, *self.limits.get(b)?)))) {
            (true, Some((bucket, limit))) => {
                let key = (account.to_string(), region.to_string(), bucket.to_string());
                let b = self.buckets.entry(key).or_insert(Bucket { tokens: limit.burst, at: now });
                let refill = now.saturating_duration_since(b.at).as_secs_f64() * limit.rate;
                b.tokens = (b.tokens + refill).min(limit.burst);
                b.at = now;
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    true
                } else {
                    false
                }
            }
            _ => true,
        };
        if self.log.len() < LOG_LIMIT {
            let at_ms = now.saturating_duration_since(self.since).as_millis() as u64;
            self.log.push(Call { at_ms, op: op.to_string(), account: account.to_string(), throttled: !ok });
        }
        ok
    }

    /// Turn throttling on or off, optionally with other figures; buckets start full again.
    pub fn configure(&mut self, enabled: bool, limits: Option<BTreeMap<String, Limit>>) {
        self.enabled = enabled;
        if let Some(l) = limits {
            self.limits = l;
        }
        self.buckets.clear();
    }

    /// Forget the log (counts start again from here) and refill every bucket.
    pub fn clear(&mut self) {
        self.log.clear();
        self.buckets.clear();
        self.since = Instant::now();
    }

    pub fn log(&self) -> &[Call] {
        &self.log
    }

    /// The figures of `GET /_sim/calls`: per operation the calls received and refused, per
    /// bucket the most calls accepted within any one second (a sliding window), the first
    /// second's calls per operation, and the log when asked.
    pub fn report(&self, with_log: bool) -> Value {
        let mut calls: BTreeMap<&str, u64> = BTreeMap::new();
        let mut throttled: BTreeMap<&str, u64> = BTreeMap::new();
        let mut first_second: BTreeMap<&str, u64> = BTreeMap::new();
        let first_at = self.log.first().map(|c| c.at_ms).unwrap_or(0);
        for c in &self.log {
            *calls.entry(&c.op).or_default() += 1;
            if c.throttled {
                *throttled.entry(&c.op).or_default() += 1;
            }
            if c.at_ms < first_at + 1000 {
                *first_second.entry(&c.op).or_default() += 1;
            }
        }
        let mut v = json!({
            "enabled": self.enabled,
            "calls": calls,
            "throttled": throttled,
            "firstSecond": first_second,
            "peakPerSecond": peak_per_second(&self.log),
            "limits": self.limits.iter().map(|(b, l)| (b.clone(), json!({"burst": l.burst, "rate": l.rate}))).collect::<BTreeMap<_, _>>(),
        });
        if with_log {
            v["log"] = self
                .log
                .iter()
                .map(|c| json!({"atMs": c.at_ms, "op": c.op, "account": c.account, "throttled": c.throttled}))
                .collect();
        }
        v
    }
}

/// Per bucket, the most calls one account had accepted within any window of 1000 ms (the log
/// is in time order).
pub fn peak_per_second(log: &[Call]) -> BTreeMap<String, u64> {
    let mut by_bucket: BTreeMap<(&str, &str), Vec<u64>> = BTreeMap::new();
    for c in log.iter().filter(|c| !c.throttled) {
        if let Some(b) = bucket_of(&c.op) {
            by_bucket.entry((b, &c.account)).or_default().push(c.at_ms);
        }
    }
    let mut peaks: BTreeMap<String, u64> = BTreeMap::new();
    for ((b, _), times) in by_bucket {
        let (mut start, mut best) = (0usize, 0usize);
        for end in 0..times.len() {
            while times[end] >= times[start] + 1000 {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        let peak = peaks.entry(b.to_string()).or_default();
        *peak = (*peak).max(best as u64);
    }
    peaks
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_per_account_and_region() {
        let mut t = Throttle::new(true);
        let t0 = Instant::now();
        let ok = (0..60).filter(|_| t.admit("111111111111", "us-east-1", "UpdateService", t0)).count();
        assert_eq!(ok, 50, "UpdateService's burst");
        // Another account, another Region: buckets of their own.
        assert!(t.admit("222222222222", "us-east-1", "UpdateService", t0));
        assert!(t.admit("111111111111", "eu-west-1", "UpdateService", t0));
        // 5 per second: after 1 s, 5 more.
        let t1 = t0 + Duration::from_secs(1);
        let ok = (0..10).filter(|_| t.admit("111111111111", "us-east-1", "UpdateService", t1)).count();
        assert_eq!(ok, 5);
        // ListTasks and DescribeTasks share one bucket; RegisterTaskDefinition is not throttled.
        let ok =
            (0..120).filter(|i| t.admit("3", "r", if i % 2 == 0 { "ListTasks" } else { "DescribeTasks" }, t0)).count();
        assert_eq!(ok, 100);
        assert!((0..500).all(|_| t.admit("3", "r", "RegisterTaskDefinition", t0)));
        let refused = t.log().iter().filter(|c| c.throttled).count();
        assert_eq!(refused, 10 + 5 + 20);
    }

    #[test]
    fn off_means_every_call_passes_and_is_still_logged() {
        let mut t = Throttle::new(false);
        let t0 = Instant::now();
        assert!((0..500).all(|_| t.admit("1", "r", "UpdateService", t0)));
        assert_eq!(t.log().len(), 500);
        t.configure(true, None);
        assert!(!(0..51).all(|_| t.admit("1", "r", "UpdateService", t0)));
    }

    #[test]
    fn the_peak_is_the_busiest_second_of_accepted_calls() {
        let call =
            |at_ms: u64, op: &str, throttled: bool| Call { at_ms, op: op.into(), account: "1".into(), throttled };
        let log = vec![
            call(0, "DescribeServices", false),
            call(500, "DescribeServices", false),
            call(900, "DescribeServices", false),
            call(950, "DescribeServices", true),
            call(1400, "DescribeServices", false),
            call(1499, "DescribeServices", false),
            call(3000, "ListTasks", false),
            call(3100, "DescribeTasks", false),
            Call { at_ms: 3200, op: "ListTasks".into(), account: "2".into(), throttled: false },
        ];
        let peak = peak_per_second(&log);
        assert_eq!(peak["DescribeServices"], 4, "500, 900, 1400, 1499");
        assert_eq!(peak["Tasks"], 2, "per account");
    }
}

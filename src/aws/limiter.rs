//! A client-side limiter for ECS's API buckets, shared by every service of a run. ECS throttles
//! per account and Region with token buckets (AWS, "Request throttling for the Amazon ECS
//! API": a bucket's size is the burst, its refill per second the sustained rate), and several
//! operations share one bucket. Deployer keeps its own copy of each bucket and waits for a
//! token before it sends, so a fleet deploy stays under the account's limits instead of
//! learning them from `ThrottlingException`s (whose retries the SDK pays from one shared
//! budget that a fleet exhausts in a second).
//!
//! `TokenBucket::reserve` is the pure part (a clock passed in, table-tested): it takes a token
//! now or reserves the next one, so waiting callers are served in order. By default deployer
//! takes 90 % of each documented figure, leaving room for whatever else uses the account
//! (the console, other pipelines) and for the jitter between when a call leaves and when ECS
//! counts it. `--ecs-api-limits` / `DEPLOYER_ECS_API_LIMITS` changes them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One of ECS's throttling buckets (operations not in AWS's table share `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    DescribeServices,
    UpdateService,
    /// ListServiceDeployments and DescribeServiceDeployments.
    ServiceDeployments,
    /// ListTasks and DescribeTasks.
    Tasks,
    DescribeTaskDefinition,
    /// Everything else deployer calls (StopServiceDeployment, ContinueServiceDeployment,
    /// ListTaskDefinitions, ...), held to a conservative budget of its own.
    Other,
}

impl Bucket {
    pub const ALL: [Bucket; 6] = [
        Bucket::DescribeServices,
        Bucket::UpdateService,
        Bucket::ServiceDeployments,
        Bucket::Tasks,
        Bucket::DescribeTaskDefinition,
        Bucket::Other,
    ];

    /// The bucket an ECS operation draws from.
    pub fn of(op: &str) -> Bucket {
        match op {
            "DescribeServices" => Bucket::DescribeServices,
            "UpdateService" => Bucket::UpdateService,
            "ListServiceDeployments" | "DescribeServiceDeployments" => Bucket::ServiceDeployments,
            "ListTasks" | "DescribeTasks" => Bucket::Tasks,
            "DescribeTaskDefinition" => Bucket::DescribeTaskDefinition,
            _ => Bucket::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Bucket::DescribeServices => "DescribeServices",
            Bucket::UpdateService => "UpdateService",
            Bucket::ServiceDeployments => "ServiceDeployments",
            Bucket::Tasks => "Tasks",
            Bucket::DescribeTaskDefinition => "DescribeTaskDefinition",
            Bucket::Other => "Other",
        }
    }

    fn parse(name: &str) -> Option<Bucket> {
        Bucket::ALL.into_iter().find(|b| b.name().eq_ignore_ascii_case(name))
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bucket's size (the burst) and refill per second (the sustained rate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub burst: f64,
    pub rate: f64,
}

/// The figures deployer keeps to, per bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits(BTreeMap<Bucket, Limit>);

/// The share of each documented figure deployer takes by default.
pub const DEFAULT_SHARE: f64 = 0.9;

impl Default for Limits {
    fn default() -> Self {
        Limits::ecs().share(DEFAULT_SHARE)
    }
}

impl Limits {
    /// ECS's documented figures (DESIGN.md section 6); `Other` is deployer's own guess.
    pub fn ecs() -> Limits {
        let l = |burst, rate| Limit { burst, rate };
        Limits(BTreeMap::from([
            (Bucket::DescribeServices, l(100.0, 20.0)),
            (Bucket::UpdateService, l(50.0, 5.0)),
            (Bucket::ServiceDeployments, l(50.0, 20.0)),
            (Bucket::Tasks, l(100.0, 20.0)),
            (Bucket::DescribeTaskDefinition, l(50.0, 20.0)),
            (Bucket::Other, l(20.0, 5.0)),
        ]))
    }

    /// `share` (0–1] of every figure, never below one call of burst.
    pub fn share(self, share: f64) -> Limits {
        let share = share.clamp(0.01, 1.0);
        Limits(
            self.0
                .into_iter()
                .map(|(b, l)| (b, Limit { burst: (l.burst * share).floor().max(1.0), rate: l.rate * share }))
                .collect(),
        )
    }

    pub fn get(&self, bucket: Bucket) -> Limit {
        self.0.get(&bucket).copied().unwrap_or(Limit { burst: 1.0, rate: 1.0 })
    }

    /// `BUCKET=BURST/RATE,...` (e.g. `UpdateService=20/2,Tasks=50/10`) over these figures;
    /// the message names the entry and the fix.
    pub fn with_spec(mut self, spec: &str) -> Result<Limits, String> {
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let names: Vec<&str> = Bucket::ALL.iter().map(|b| b.name()).collect();
            let bad = |why: &str| {
                format!(
                    "--ecs-api-limits {entry:?}: {why}; write BUCKET=BURST/RATE (e.g. UpdateService=20/2), BUCKET one of {}",
                    names.join(", ")
                )
            };
            let (name, figures) = entry.split_once('=').ok_or_else(|| bad("no `=`"))?;
            let bucket = Bucket::parse(name.trim()).ok_or_else(|| bad("unknown bucket"))?;
            let (burst, rate) = figures.split_once('/').ok_or_else(|| bad("no `/` between burst and rate"))?;
            let burst: f64 = burst.trim().parse().map_err(|_| bad("the burst is not a number"))?;
            let rate: f64 = rate.trim().parse().map_err(|_| bad("the rate is not a number"))?;
            if !(burst >= 1.0 && burst.is_finite() && rate > 0.0 && rate.is_finite()) {
                return Err(bad("the burst must be at least 1 and the rate above 0"));
            }
            self.0.insert(bucket, Limit { burst, rate });
        }
        Ok(self)
    }
}

/// One token bucket on a clock the caller passes in.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    limit: Limit,
    /// May go below zero: tokens already promised to waiting callers.
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> TokenBucket {
        TokenBucket { limit, tokens: limit.burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(self.limit.burst);
        self.at = self.at.max(now);
    }

    /// Take a token at `now`: how long the caller must wait before sending (zero: at once).
    /// The token is promised either way, so the next caller waits behind this one.
    pub fn reserve(&mut self, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-self.tokens / self.limit.rate) }
    }

    /// ECS refused a call: someone else drew on the account's bucket too, so take ours as empty.
    pub fn drain(&mut self, now: Instant) {
        self.refill(now);
        self.tokens = self.tokens.min(0.0);
    }

    /// The time one token takes to come back.
    pub fn refill_interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.limit.rate)
    }
}

/// What the limiter saw over a run, for the report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    /// Calls sent, per operation.
    pub calls: BTreeMap<String, u64>,
    /// `ThrottlingException`s ECS answered, per operation.
    pub throttled: BTreeMap<String, u64>,
    /// Time callers spent waiting for a token, summed.
    pub waited: Duration,
}

impl Usage {
    pub fn total_calls(&self) -> u64 {
        self.calls.values().sum()
    }

    pub fn total_throttled(&self) -> u64 {
        self.throttled.values().sum()
    }
}

/// The run's buckets, shared by every service (and every clone of the ECS wrapper).
#[derive(Debug)]
pub struct Limiter {
    buckets: Mutex<BTreeMap<Bucket, TokenBucket>>,
    usage: Mutex<Usage>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::new(&Limits::default())
    }
}

impl Limiter {
    pub fn new(limits: &Limits) -> Limiter {
        let now = Instant::now();
        let buckets = Bucket::ALL.into_iter().map(|b| (b, TokenBucket::new(limits.get(b), now))).collect();
        Limiter { buckets: Mutex::new(buckets), usage: Mutex::default() }
    }

    fn bucket<T>(&self, bucket: Bucket, f: impl FnOnce(&mut TokenBucket) -> T) -> T {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let b =
            buckets.entry(bucket).or_insert_with(|| TokenBucket::new(Limits::default().get(bucket), Instant::now()));
        f(b)
    }

    /// Wait for a token of `op`'s bucket, then count the call.
    pub async fn acquire(&self, op: &str) {
        let wait = self.bucket(Bucket::of(op), |b| b.reserve(Instant::now()));
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        *usage.calls.entry(op.to_string()).or_default() += 1;
        usage.waited += wait;
    }

    /// ECS answered `op` with ThrottlingException: count it, empty the bucket, and return how
    /// long one token takes to come back (the floor of the caller's backoff).
    pub fn throttled(&self, op: &str) -> Duration {
        let interval = self.bucket(Bucket::of(op), |b| {
            b.drain(Instant::now());
            b.refill_interval()
        });
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        *usage.throttled.entry(op.to_string()).or_default() += 1;
        interval
    }

    pub fn usage(&self) -> Usage {
        self.usage.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_the_burst_through_then_spaces_calls_at_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Limit { burst: 3.0, rate: 2.0 }, t0);
        let waits: Vec<u64> = (0..6).map(|_| b.reserve(t0).as_millis() as u64).collect();
        // Three at once, then one every 500 ms, each caller behind the one before.
        assert_eq!(waits, [0, 0, 0, 500, 1000, 1500]);
        // 2 s later the three promised tokens are paid back and one more came: one at once,
        // the next 500 ms later.
        let t2 = t0 + Duration::from_secs(2);
        assert_eq!(b.reserve(t2), Duration::ZERO);
        assert_eq!(b.reserve(t2).as_millis(), 500);
        // A long quiet spell refills to the burst, never beyond it.
        let later = t0 + Duration::from_secs(60);
        let waits: Vec<bool> = (0..4).map(|_| b.reserve(later).is_zero()).collect();
        assert_eq!(waits, [true, true, true, false]);
    }

    #[test]
    fn a_refusal_empties_the_bucket() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(Limit { burst: 10.0, rate: 5.0 }, t0);
        b.drain(t0);
        assert_eq!(b.reserve(t0).as_millis(), 200);
        assert_eq!(b.refill_interval().as_millis(), 200);
    }

    #[test]
    fn operations_map_to_ecs_buckets_and_the_default_leaves_headroom() {
        let table = [
            ("DescribeServices", Bucket::DescribeServices),
            ("UpdateService", Bucket::UpdateService),
            ("ListServiceDeployments", Bucket::ServiceDeployments),
            ("DescribeServiceDeployments", Bucket::ServiceDeployments),
            ("ListTasks", Bucket::Tasks),
            ("DescribeTasks", Bucket::Tasks),
            ("DescribeTaskDefinition", Bucket::DescribeTaskDefinition),
            ("StopServiceDeployment", Bucket::Other),
        ];
        for (op, bucket) in table {
            assert_eq!(Bucket::of(op), bucket, "{op}");
        }
        let d = Limits::default();
        assert_eq!(d.get(Bucket::DescribeServices), Limit { burst: 90.0, rate: 18.0 });
        assert_eq!(d.get(Bucket::UpdateService), Limit { burst: 45.0, rate: 4.5 });
        assert_eq!(Limits::ecs().get(Bucket::Tasks), Limit { burst: 100.0, rate: 20.0 });
    }

    #[test]
    fn limits_can_be_set_per_bucket_and_mistakes_name_the_entry() {
        let l = Limits::ecs().with_spec("UpdateService=20/2, tasks=50/10").unwrap();
        assert_eq!(l.get(Bucket::UpdateService), Limit { burst: 20.0, rate: 2.0 });
        assert_eq!(l.get(Bucket::Tasks), Limit { burst: 50.0, rate: 10.0 });
        assert_eq!(l.get(Bucket::DescribeServices), Limits::ecs().get(Bucket::DescribeServices));
        for (spec, why) in [
            ("UpdateService", "no `=`"),
            ("Nope=1/1", "unknown bucket"),
            ("UpdateService=20", "no `/`"),
            ("UpdateService=x/2", "the burst is not a number"),
            ("UpdateService=20/0", "the rate above 0"),
            ("UpdateService=0/1", "at least 1"),
        ] {
            let err = Limits::ecs().with_spec(spec).unwrap_err();
            assert!(err.starts_with(&format!("--ecs-api-limits {spec:?}: ")), "{err}");
            assert!(err.contains(why), "{spec}: {err}");
        }
    }

    #[tokio::test]
    async fn callers_of_one_bucket_wait_their_turn_and_other_buckets_do_not_wait() {
        let limits = Limits::ecs().with_spec("UpdateService=2/20").unwrap();
        let limiter = Limiter::new(&limits);
        let start = Instant::now();
        for _ in 0..4 {
            limiter.acquire("UpdateService").await;
        }
        // Two at once, then two more 50 ms apart.
        let spent = start.elapsed();
        assert!(spent >= Duration::from_millis(95) && spent < Duration::from_secs(5), "{spent:?}");
        let before = Instant::now();
        limiter.acquire("DescribeServices").await;
        assert!(before.elapsed() < Duration::from_millis(40), "another bucket does not wait");
        assert_eq!(limiter.throttled("UpdateService").as_millis(), 50);
        let usage = limiter.usage();
        assert_eq!((usage.total_calls(), usage.total_throttled()), (5, 1));
        assert_eq!(usage.calls["UpdateService"], 4);
        assert!(usage.waited >= Duration::from_millis(90), "two waits of 50 ms: {:?}", usage.waited);
    }
}

//! Jittered exponential backoff for the HTTP calls deployer makes itself (the AWS SDK has its
//! own retry layer). The policy is plain data, so tests can shrink it; `DEPLOYER_RETRY_BASE_MS`
//! shrinks it for the whole process (integration tests of "endpoint down after retries").

use std::future::Future;
use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Total attempts, the first one included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        let base_ms = std::env::var("DEPLOYER_RETRY_BASE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(400);
        Backoff { attempts: 5, base: Duration::from_millis(base_ms), max: Duration::from_secs(8) }
    }
}

impl Backoff {
    /// The ceiling of the wait before retry number `retry` (1-based): base * 2^(retry-1), capped.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.saturating_sub(1)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// "Full jitter": a uniform wait in [ceiling/2, ceiling], so parallel clients spread out
    /// but never retry immediately.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self.ceiling(retry);
        let half = ceiling / 2;
        let spread = (ceiling - half).as_millis() as u64;
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }
}

/// What one attempt came to.
pub enum Attempt<T, E> {
    Done(T),
    /// Worth another try (timeouts, 5xx, throttling); keeps the error for the last report.
    Retry(E),
    Fatal(E),
}

/// Run `op` until it is done, fatal, or out of attempts; returns the last error and how many
/// attempts were made.
pub async fn retry<T, E, F, Fut>(policy: Backoff, mut op: F) -> Result<T, (E, u32)>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Attempt::Done(v) => return Ok(v),
            Attempt::Fatal(e) => return Err((e, attempt)),
            Attempt::Retry(e) if attempt >= policy.attempts => return Err((e, attempt)),
            Attempt::Retry(_) => {
                tokio::time::sleep(policy.delay(attempt)).await;
                attempt += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_and_cap() {
        let b = Backoff { attempts: 10, base: Duration::from_millis(100), max: Duration::from_millis(1000) };
        let got: Vec<u128> = (1..=6).map(|r| b.ceiling(r).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.ceiling(200), Duration::from_millis(1000));
    }

    #[test]
    fn delays_stay_within_half_and_full_ceiling() {
        let b = Backoff { attempts: 10, base: Duration::from_millis(100), max: Duration::from_secs(5) };
        for retry in 1..8 {
            for _ in 0..50 {
                let d = b.delay(retry);
                assert!(d >= b.ceiling(retry) / 2 && d <= b.ceiling(retry), "{d:?}");
            }
        }
    }

    #[tokio::test]
    async fn stops_at_the_attempt_limit_and_on_fatal() {
        let policy = Backoff { attempts: 3, base: Duration::from_millis(1), max: Duration::from_millis(2) };
        let r: Result<(), (&str, u32)> = retry(policy, |_| async { Attempt::Retry("busy") }).await;
        assert_eq!(r.unwrap_err(), ("busy", 3));
        let r: Result<(), (&str, u32)> = retry(policy, |_| async { Attempt::Fatal("no") }).await;
        assert_eq!(r.unwrap_err(), ("no", 1));
        let r: Result<u32, (&str, u32)> =
            retry(policy, |n| async move { if n < 2 { Attempt::Retry("busy") } else { Attempt::Done(n) } }).await;
        assert_eq!(r.unwrap(), 2);
    }
}

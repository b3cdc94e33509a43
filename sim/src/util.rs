//! Small shared helpers: request context (account/region), ARNs, ids, clocks and time scaling.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Account and region a request (and everything it creates) belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ctx {
    pub account: String,
    pub region: String,
}

pub const DEFAULT_ACCOUNT: &str = "123456789012";
pub const DEFAULT_REGION: &str = "us-east-1";

impl Ctx {
    /// Reads `Credential=AKID/DATE/REGION/SERVICE/aws4_request` from a SigV4 Authorization header.
    /// A 12-digit access key id is the account; anything else maps to the default account.
    pub fn from_authorization(header: Option<&str>) -> Ctx {
        let mut ctx = Ctx { account: DEFAULT_ACCOUNT.into(), region: DEFAULT_REGION.into() };
        let Some(h) = header else { return ctx };
        let Some(pos) = h.find("Credential=") else { return ctx };
        let cred = h[pos + "Credential=".len()..].split([',', ' ']).next().unwrap_or("");
        let parts: Vec<&str> = cred.split('/').collect();
        if let Some(akid) = parts.first() {
            if akid.len() == 12 && akid.chars().all(|c| c.is_ascii_digit()) {
                ctx.account = akid.to_string();
            }
        }
        if let Some(region) = parts.get(2) {
            if !region.is_empty() {
                ctx.region = region.to_string();
            }
        }
        ctx
    }

    /// The access key id of a SigV4 Authorization header, if any.
    pub fn access_key(header: Option<&str>) -> Option<String> {
        let h = header?;
        let pos = h.find("Credential=")?;
        let akid = h[pos + "Credential=".len()..].split(['/', ',', ' ']).next()?;
        (!akid.is_empty()).then(|| akid.to_string())
    }

    pub fn arn(&self, resource: &str) -> String {
        format!("arn:aws:ecs:{}:{}:{}", self.region, self.account, resource)
    }
}

/// The last path segment of an ARN-ish string (`arn:...:cluster/name` -> `name`); names pass through.
pub fn short_name(s: &str) -> &str {
    if s.starts_with("arn:") {
        let res = s.splitn(6, ':').nth(5).unwrap_or(s);
        res.rsplit('/').next().unwrap_or(res)
    } else {
        s
    }
}

/// Seconds since the epoch as ECS's JSON timestamps carry them.
pub fn now_epoch() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

static COUNTER: AtomicU64 = AtomicU64::new(1);

/// A cheap non-cryptographic random u64 (splitmix64 over time and a counter).
pub fn rand_u64() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut z = t ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A 32-hex-digit id like ECS task ids.
pub fn hex_id() -> String {
    format!("{:016x}{:016x}", rand_u64(), rand_u64())
}

/// `ecs-svc/` followed by 19 digits, as ECS names deployments.
pub fn deployment_id() -> String {
    format!("ecs-svc/{:019}", rand_u64() % 10_000_000_000_000_000_000)
}

/// Scales durations by the `--time-scale` factor, never below a small floor so loops stay sane.
#[derive(Clone, Copy, Debug)]
pub struct Scale(pub f64);

impl Scale {
    pub fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64((s * self.0).max(0.02))
    }
    pub fn minutes(&self, m: f64) -> Duration {
        if m <= 0.0 { Duration::ZERO } else { self.secs(m * 60.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctx_from_credential_scope() {
        let c = Ctx::from_authorization(Some(
            "AWS4-HMAC-SHA256 Credential=210987654321/20260101/eu-west-1/ecs/aws4_request, SignedHeaders=host, Signature=0",
        ));
        assert_eq!(c.account, "210987654321");
        assert_eq!(c.region, "eu-west-1");
        let d = Ctx::from_authorization(Some(
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-west-2/ecs/aws4_request",
        ));
        assert_eq!(d.account, DEFAULT_ACCOUNT);
        assert_eq!(d.region, "us-west-2");
        assert_eq!(Ctx::from_authorization(None).region, DEFAULT_REGION);
        assert_eq!(
            Ctx::access_key(Some("AWS4-HMAC-SHA256 Credential=ASIAXYZ/20260101/us-east-1/ecs/aws4_request")).as_deref(),
            Some("ASIAXYZ")
        );
        assert_eq!(Ctx::access_key(Some("Bearer x")), None);
    }

    #[test]
    fn short_names() {
        assert_eq!(short_name("arn:aws:ecs:us-east-1:1:cluster/main"), "main");
        assert_eq!(short_name("arn:aws:ecs:us-east-1:1:service/main/web"), "web");
        assert_eq!(short_name("web"), "web");
    }

    #[test]
    fn ids_have_ecs_shape() {
        assert_eq!(hex_id().len(), 32);
        let d = deployment_id();
        assert!(d.starts_with("ecs-svc/") && d.len() == 8 + 19, "{d}");
    }
}

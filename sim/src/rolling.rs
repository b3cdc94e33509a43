//! Pure decisions of the rolling-update scheduler: the circuit-breaker threshold and how many
//! tasks to start or stop in one step, bounded by minimumHealthyPercent / maximumPercent.

/// ECS's deployment circuit breaker failure threshold: 0.5 x desired, at least 3, at most 200.
pub fn breaker_threshold(desired: i64) -> i64 {
    let half = (desired.max(0) + 1) / 2; // ceil(0.5 * desired)
    half.clamp(3, 200)
}

/// Failures in a row after which the scheduler starts backing off launches.
pub const STREAK_BEFORE_BACKOFF: u32 = 3;

/// Seconds (before time scaling) to wait after the last failure before launching again:
/// nothing for the first failures, then 10 s doubling up to 15 minutes.
pub fn launch_backoff_secs(streak: u32) -> f64 {
    if streak < STREAK_BEFORE_BACKOFF {
        return 0.0;
    }
    let exp = (streak - STREAK_BEFORE_BACKOFF).min(7);
    (10.0 * f64::from(1u32 << exp)).min(900.0)
}

/// Counts of one deployment's tasks that are not stopping.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every task not yet told to stop (provisioning, pending, running).
    pub live: i64,
    /// Of those, the ones that count as healthy (running and passing health checks).
    pub healthy: i64,
}

/// What one scheduler step should do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// New tasks of the primary deployment to start.
    pub start: i64,
    /// Tasks of older deployments to stop (unhealthy first).
    pub stop_old: i64,
    /// Surplus primary tasks to stop (scale-in).
    pub stop_primary: i64,
}

/// One rolling step: start primary tasks while the total stays within maximumPercent, stop old
/// tasks while the healthy total stays at or above minimumHealthyPercent. Old unhealthy tasks may
/// always go. `launching_allowed` is false once the primary deployment has FAILED.
pub fn plan_rolling(
    desired: i64,
    min_healthy_pct: i64,
    max_pct: i64,
    primary: Counts,
    old: Counts,
    launching_allowed: bool,
) -> Plan {
    let desired = desired.max(0);
    let max_total = ((desired * max_pct) as f64 / 100.0).floor() as i64;
    // With nothing old left, reaching `desired` is always allowed.
    let max_total = if old.live == 0 { max_total.max(desired) } else { max_total };
    let min_healthy = ((desired * min_healthy_pct) as f64 / 100.0).ceil() as i64;
    let mut plan = Plan::default();

    if primary.live > desired {
        plan.stop_primary = primary.live - desired;
    }

    // Stop old tasks: unhealthy ones freely, healthy ones only above the minimum.
    let healthy_total = primary.healthy + old.healthy;
    let old_unhealthy = old.live - old.healthy;
    let removable_healthy = (healthy_total - min_healthy).max(0).min(old.healthy);
    plan.stop_old = old_unhealthy + removable_healthy;

    // Start new ones within the maximum, counting the old tasks that survive this step.
    if launching_allowed {
        let total_after_stop = primary.live - plan.stop_primary + old.live - plan.stop_old;
        let want = (desired - primary.live).max(0);
        let room = (max_total - total_after_stop).max(0);
        plan.start = want.min(room);
    }
    plan
}

/// A deployment is steady when the primary runs exactly `desired` healthy tasks and nothing else runs.
pub fn is_steady(desired: i64, primary: Counts, old: Counts) -> bool {
    primary.live == desired && primary.healthy == desired && old.live == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_matches_ecs_documentation() {
        assert_eq!(breaker_threshold(1), 3);
        assert_eq!(breaker_threshold(2), 3);
        assert_eq!(breaker_threshold(6), 3);
        assert_eq!(breaker_threshold(7), 4);
        assert_eq!(breaker_threshold(10), 5);
        assert_eq!(breaker_threshold(25), 13);
        assert_eq!(breaker_threshold(400), 200);
        assert_eq!(breaker_threshold(1000), 200);
    }

    fn c(live: i64, healthy: i64) -> Counts {
        Counts { live, healthy }
    }

    #[test]
    fn max_200_min_100_starts_all_then_stops_old_when_new_are_healthy() {
        // Fresh deployment: start 2 new, keep 2 old.
        let p = plan_rolling(2, 100, 200, c(0, 0), c(2, 2), true);
        assert_eq!(p, Plan { start: 2, stop_old: 0, stop_primary: 0 });
        // New ones pending: nothing to do.
        let p = plan_rolling(2, 100, 200, c(2, 0), c(2, 2), true);
        assert_eq!(p, Plan::default());
        // One healthy: one old may go.
        let p = plan_rolling(2, 100, 200, c(2, 1), c(2, 2), true);
        assert_eq!(p.stop_old, 1);
        // All healthy: both old go.
        let p = plan_rolling(2, 100, 200, c(2, 2), c(2, 2), true);
        assert_eq!(p.stop_old, 2);
    }

    #[test]
    fn min_50_max_100_stops_old_first() {
        let p = plan_rolling(4, 50, 100, c(0, 0), c(4, 4), true);
        assert_eq!(p.stop_old, 2);
        assert_eq!(p.start, 2);
    }

    #[test]
    fn unhealthy_old_tasks_always_go_and_failed_deployments_do_not_launch() {
        let p = plan_rolling(2, 100, 200, c(0, 0), c(2, 0), false);
        assert_eq!(p, Plan { start: 0, stop_old: 2, stop_primary: 0 });
    }

    #[test]
    fn scale_in_and_steady_state() {
        let p = plan_rolling(1, 100, 200, c(3, 3), c(0, 0), true);
        assert_eq!(p.stop_primary, 2);
        assert!(is_steady(2, c(2, 2), c(0, 0)));
        assert!(!is_steady(2, c(2, 2), c(1, 1)));
        assert!(!is_steady(2, c(2, 1), c(0, 0)));
    }

    #[test]
    fn launch_backoff_grows_and_caps() {
        assert_eq!(launch_backoff_secs(0), 0.0);
        assert_eq!(launch_backoff_secs(2), 0.0);
        assert_eq!(launch_backoff_secs(3), 10.0);
        assert_eq!(launch_backoff_secs(4), 20.0);
        assert_eq!(launch_backoff_secs(9), 640.0);
        assert_eq!(launch_backoff_secs(30), 900.0);
    }

    #[test]
    fn initial_create_starts_desired() {
        let p = plan_rolling(3, 100, 200, c(0, 0), c(0, 0), true);
        assert_eq!(p.start, 3);
        let p = plan_rolling(3, 100, 100, c(0, 0), c(0, 0), true);
        assert_eq!(p.start, 3);
    }
}

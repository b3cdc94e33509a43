//! Pure parts of ECS-native BLUE_GREEN / CANARY / LINEAR deployments: the lifecycle stage order,
//! which stages accept hooks, the production traffic steps of each strategy, and the sim's rule
//! for which lifecycle hooks hold a deployment until ContinueServiceDeployment.

use serde_json::Value;

/// Lifecycle stages in the order ECS walks them.
pub const STAGES: &[&str] = &[
    "RECONCILE_SERVICE",
    "PRE_SCALE_UP",
    "SCALE_UP",
    "POST_SCALE_UP",
    "TEST_TRAFFIC_SHIFT",
    "POST_TEST_TRAFFIC_SHIFT",
    "PRODUCTION_TRAFFIC_SHIFT",
    "POST_PRODUCTION_TRAFFIC_SHIFT",
    "BAKE_TIME",
    "CLEAN_UP",
];

/// The stage after `stage`, or None after CLEAN_UP.
pub fn next_stage(stage: &str) -> Option<&'static str> {
    let i = STAGES.iter().position(|s| *s == stage)?;
    STAGES.get(i + 1).copied()
}

/// Hook stages that run at a service stage. PRE_PRODUCTION_TRAFFIC_SHIFT hooks (a hook stage
/// without a service stage of its own) run at the start of PRODUCTION_TRAFFIC_SHIFT.
pub fn hook_stages_for(stage: &str) -> Vec<&'static str> {
    match stage {
        "RECONCILE_SERVICE" => vec!["RECONCILE_SERVICE"],
        "PRE_SCALE_UP" => vec!["PRE_SCALE_UP"],
        "POST_SCALE_UP" => vec!["POST_SCALE_UP"],
        "TEST_TRAFFIC_SHIFT" => vec!["TEST_TRAFFIC_SHIFT"],
        "POST_TEST_TRAFFIC_SHIFT" => vec!["POST_TEST_TRAFFIC_SHIFT"],
        "PRODUCTION_TRAFFIC_SHIFT" => vec!["PRE_PRODUCTION_TRAFFIC_SHIFT", "PRODUCTION_TRAFFIC_SHIFT"],
        "POST_PRODUCTION_TRAFFIC_SHIFT" => vec!["POST_PRODUCTION_TRAFFIC_SHIFT"],
        _ => vec![],
    }
}

/// The sim's hold rule: a hook holds (status AWAITING_ACTION until ContinueServiceDeployment)
/// when its targetType is PAUSE, or when its hookTargetArn names a function containing "pause"
/// (so `arn:aws:lambda:...:function:pause-for-approval` pauses too). Any other hook (a Lambda the
/// sim cannot invoke) succeeds at once.
pub fn hook_holds(hook: &Value) -> bool {
    if hook.get("targetType").and_then(Value::as_str) == Some("PAUSE") {
        return true;
    }
    hook.get("hookTargetArn")
        .and_then(Value::as_str)
        .map(|arn| arn.to_ascii_lowercase().contains(":function:pause"))
        .unwrap_or(false)
}

/// A hook's `timeoutConfiguration`: minutes (ECS's default 1440, range 1 to 20160) and the
/// action taken when nobody answered by then (ECS's default ROLLBACK).
pub fn hook_timeout(hook: &Value) -> (f64, String) {
    let t = hook.get("timeoutConfiguration");
    let minutes = t.and_then(|t| t.get("timeoutInMinutes")).and_then(Value::as_f64).unwrap_or(1440.0);
    let action = t.and_then(|t| t.get("action")).and_then(Value::as_str).unwrap_or("ROLLBACK");
    (minutes.clamp(1.0, 20160.0), action.to_string())
}

/// Production traffic percentages to green, one per step; each step but the last is followed by
/// the strategy's step bake time (minutes) returned alongside.
pub fn production_steps(strategy: &str, cfg: &Value) -> (Vec<f64>, f64) {
    match strategy {
        "CANARY" => {
            let c = cfg.get("canaryConfiguration");
            let pct = c.and_then(|c| c.get("canaryPercent")).and_then(Value::as_f64).unwrap_or(5.0);
            let bake = c.and_then(|c| c.get("canaryBakeTimeInMinutes")).and_then(Value::as_f64).unwrap_or(10.0);
            let pct = pct.clamp(0.1, 100.0);
            if pct >= 100.0 { (vec![100.0], 0.0) } else { (vec![pct, 100.0], bake) }
        }
        "LINEAR" => {
            let c = cfg.get("linearConfiguration");
            let pct = c.and_then(|c| c.get("stepPercent")).and_then(Value::as_f64).unwrap_or(10.0);
            let bake = c.and_then(|c| c.get("stepBakeTimeInMinutes")).and_then(Value::as_f64).unwrap_or(6.0);
            let pct = pct.clamp(1.0, 100.0);
            let mut steps = Vec::new();
            let mut cur = 0.0;
            // Bounded: at most 100 steps since pct >= 1.
            while cur < 100.0 && steps.len() < 100 {
                cur = (cur + pct).min(100.0);
                steps.push((cur * 1000.0).round() / 1000.0);
            }
            (steps, bake)
        }
        _ => (vec![100.0], 0.0),
    }
}

/// Picks a side for one request given green's percentage and a uniform sample in [0, 100).
pub fn route_to_green(green_pct: f64, sample: f64) -> bool {
    sample < green_pct
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stage_order() {
        assert_eq!(next_stage("RECONCILE_SERVICE"), Some("PRE_SCALE_UP"));
        assert_eq!(next_stage("TEST_TRAFFIC_SHIFT"), Some("POST_TEST_TRAFFIC_SHIFT"));
        assert_eq!(next_stage("BAKE_TIME"), Some("CLEAN_UP"));
        assert_eq!(next_stage("CLEAN_UP"), None);
    }

    #[test]
    fn steps_per_strategy() {
        assert_eq!(production_steps("BLUE_GREEN", &json!({})), (vec![100.0], 0.0));
        let (s, b) = production_steps(
            "CANARY",
            &json!({"canaryConfiguration":{"canaryPercent":10.0,"canaryBakeTimeInMinutes":2}}),
        );
        assert_eq!((s, b), (vec![10.0, 100.0], 2.0));
        let (s, b) =
            production_steps("LINEAR", &json!({"linearConfiguration":{"stepPercent":30.0,"stepBakeTimeInMinutes":1}}));
        assert_eq!((s, b), (vec![30.0, 60.0, 90.0, 100.0], 1.0));
        let (s, _) = production_steps("LINEAR", &json!({"linearConfiguration":{"stepPercent":25.0}}));
        assert_eq!(s, vec![25.0, 50.0, 75.0, 100.0]);
    }

    #[test]
    fn hold_rule() {
        assert!(hook_holds(&json!({"targetType":"PAUSE"})));
        assert!(hook_holds(&json!({"hookTargetArn":"arn:aws:lambda:us-east-1:1:function:pause-here"})));
        assert!(!hook_holds(&json!({"hookTargetArn":"arn:aws:lambda:us-east-1:1:function:smoke"})));
    }

    #[test]
    fn hook_timeouts_default_to_a_day_and_roll_back() {
        assert_eq!(hook_timeout(&json!({"targetType":"PAUSE"})), (1440.0, "ROLLBACK".to_string()));
        let h = json!({"timeoutConfiguration":{"timeoutInMinutes":3,"action":"CONTINUE"}});
        assert_eq!(hook_timeout(&h), (3.0, "CONTINUE".to_string()));
        assert_eq!(hook_timeout(&json!({"timeoutConfiguration":{"timeoutInMinutes":99999}})).0, 20160.0);
    }

    #[test]
    fn weights_route() {
        assert!(!route_to_green(0.0, 0.0));
        assert!(route_to_green(100.0, 99.9));
        assert!(route_to_green(10.0, 9.99));
        assert!(!route_to_green(10.0, 10.0));
    }
}

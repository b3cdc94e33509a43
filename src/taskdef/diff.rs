//! Diffing a rendered task definition against the one that runs: both are normalised (ECS's
//! read-only fields and the defaults it fills in dropped, environment and secrets sorted by
//! name) and compared as pretty JSON, so the diff shows intent, not noise. Secrets show as
//! their references — values are never fetched. Pure.

use serde_json::{Map, Value};
use similar::TextDiff;

use super::template::READ_ONLY;

/// A normalised copy for comparison.
pub fn normalize(def: &Value) -> Value {
    let mut v = def.clone();
    if let Some(obj) = v.as_object_mut() {
        for field in READ_ONLY {
            obj.remove(*field);
        }
        if let Some(Value::Array(containers)) = obj.get_mut("containerDefinitions") {
            for c in containers.iter_mut().filter_map(Value::as_object_mut) {
                for list in ["environment", "secrets"] {
                    if let Some(Value::Array(entries)) = c.get_mut(list) {
                        entries.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
                    }
                }
                // Defaults ECS fills in on registration.
                if c.get("cpu") == Some(&Value::from(0)) {
                    c.remove("cpu");
                }
                if let Some(Value::Array(ports)) = c.get_mut("portMappings") {
                    for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                        if p.get("protocol").and_then(Value::as_str) == Some("tcp") {
                            p.remove("protocol");
                        }
                    }
                }
            }
        }
    }
    prune(v)
}

/// Drop nulls, empty arrays and empty objects, recursively (ECS returns `"volumes": []` and
/// the like for what a template leaves out).
fn prune(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let map: Map<String, Value> =
                map.into_iter().map(|(k, v)| (k, prune(v))).filter(|(_, v)| !is_empty(v)).collect();
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(prune).collect()),
        other => other,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The comparison of `current` (None when nothing runs yet) with `rendered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diff {
    pub current_label: String,
    pub rendered_label: String,
    pub unified: String,
    pub changed: bool,
}

pub fn diff(current: Option<&Value>, current_label: &str, rendered: &Value, rendered_label: &str) -> Diff {
    let pretty = |v: &Value| serde_json::to_string_pretty(&normalize(v)).unwrap_or_default() + "\n";
    let old = current.map(pretty).unwrap_or_default();
    let new = pretty(rendered);
    let text = TextDiff::from_lines(&old, &new);
    let unified = text.unified_diff().context_radius(3).header(current_label, rendered_label).to_string();
    Diff {
        current_label: current_label.to_string(),
        rendered_label: rendered_label.to_string(),
        changed: old != new,
        unified,
    }
}

impl Diff {
    /// ANSI-coloured for a terminal.
    pub fn colored(&self) -> String {
        self.unified
            .lines()
            .map(|l| match l.chars().next() {
                Some('+') if !l.starts_with("+++") => format!("\x1b[32m{l}\x1b[0m"),
                Some('-') if !l.starts_with("---") => format!("\x1b[31m{l}\x1b[0m"),
                Some('@') => format!("\x1b[36m{l}\x1b[0m"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// For the step summary.
    pub fn markdown(&self) -> String {
        if !self.changed {
            return format!("Task definition: no change from `{}`.\n", self.current_label);
        }
        format!(
            "<details><summary>Task definition diff: <code>{}</code> → <code>{}</code></summary>\n\n```diff\n{}```\n</details>\n",
            self.current_label,
            self.rendered_label,
            self.unified.replace("```", "`\u{200b}``")
        )
    }

    /// Lines added and removed.
    pub fn stats(&self) -> (usize, usize) {
        let mut added = 0;
        let mut removed = 0;
        for line in self.unified.lines() {
            if line.starts_with('+') && !line.starts_with("+++") {
                added += 1;
            } else if line.starts_with('-') && !line.starts_with("---") {
                removed += 1;
            }
        }
        (added, removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ecs_defaults_and_ordering_are_not_changes() {
        let template = json!({"family": "web", "containerDefinitions": [{
            "name": "app", "image": "a",
            "environment": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}],
            "portMappings": [{"containerPort": 80}]
        }]});
        let described = json!({"family": "web", "revision": 3, "status": "ACTIVE",
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:1:task-definition/web:3",
            "volumes": [], "placementConstraints": [], "requiresAttributes": [],
            "containerDefinitions": [{
                "name": "app", "image": "a", "cpu": 0, "mountPoints": [], "volumesFrom": [],
                "environment": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "portMappings": [{"containerPort": 80, "protocol": "tcp"}]
        }]});
        let d = diff(Some(&described), "web:3", &template, "rendered");
        assert!(!d.changed, "{}", d.unified);
        assert_eq!(d.unified, "");
    }

    #[test]
    fn a_changed_image_and_secret_show_as_one_line_each() {
        let old = json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "r@sha256:old",
            "secrets": [{"name": "DB", "valueFrom": "arn:aws:ssm:r:111111111111:parameter/db"}]}]});
        let new = json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "r@sha256:new",
            "secrets": [{"name": "DB", "valueFrom": "arn:aws:ssm:r:111111111111:parameter/db2"}]}]});
        let d = diff(Some(&old), "web:3", &new, "rendered");
        assert!(d.changed);
        assert_eq!(d.stats(), (2, 2));
        assert!(d.unified.starts_with("--- web:3\n+++ rendered\n"), "{}", d.unified);
        assert!(d.unified.contains("-      \"image\": \"r@sha256:old\""), "{}", d.unified);
        assert!(d.unified.contains("+      \"image\": \"r@sha256:new\""), "{}", d.unified);
        assert!(d.markdown().contains("```diff\n"));
        assert!(d.colored().contains("\x1b[32m+"));
    }

    #[test]
    fn nothing_running_yet_diffs_against_empty() {
        let new = json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "x"}]});
        let d = diff(None, "(none)", &new, "rendered");
        assert!(d.changed);
        assert_eq!(d.stats().1, 0);
    }
}

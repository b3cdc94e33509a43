//! The step summary and timeline of a deploy: a markdown table per service, the failure
//! diagnostics (stopped tasks, ECS events, the failing probe) and the timeline of stages.

use crate::deploy::rolling::{DeployReport, Outcome};

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Markdown for `$GITHUB_STEP_SUMMARY`. Values are ours or ECS's; backticks are neutralised.
pub fn summary(reports: &[DeployReport]) -> String {
    let code = |s: &str| format!("`{}`", s.replace('`', "'"));
    let mut md = String::from(
        "## deployer\n\n| service | result | task definition | previous | deployment |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in reports {
        let result = match r.result {
            Outcome::Succeeded => "✅ succeeded",
            Outcome::RolledBack if r.cancelled => "⏹ cancelled, rolled back",
            Outcome::RolledBack => "↩️ rolled back",
            Outcome::Failed => "❌ failed — needs a human",
        };
        md.push_str(&format!(
            "| {} | {result} | {} | {} | {} |\n",
            code(&r.service),
            code(short(&r.task_definition_arn)),
            code(short(&r.previous_task_definition_arn)),
            r.deployment_id.as_deref().map(|d| code(short(d))).unwrap_or_default()
        ));
    }
    for r in reports {
        md.push_str(&format!("\n### {}\n\n", r.service));
        if let Some(f) = &r.failure {
            md.push_str(&format!("**Why:** {}\n\n", f.replace('\n', " ")));
        }
        if let Some(rb) = &r.rollback {
            md.push_str(&format!("**Rollback:** {rb}\n\n"));
        }
        if let Some(s) = &r.state {
            md.push_str(&format!("**State:** {s}\n\n"));
        }
        if !r.stopped_tasks.is_empty() {
            md.push_str("**Stopped tasks of the new revision:**\n\n");
            for t in &r.stopped_tasks {
                md.push_str(&format!("- {}\n", code(t)));
            }
            md.push('\n');
        }
        if let Some(p) = &r.failing_probe {
            md.push_str(&format!("**Failing probe:** {}\n\n", code(p)));
        }
        if !r.events.is_empty() && r.result != Outcome::Succeeded {
            md.push_str("<details><summary>ECS service events</summary>\n\n");
            for e in &r.events {
                md.push_str(&format!("- {}\n", code(e)));
            }
            md.push_str("\n</details>\n\n");
        }
        md.push_str("| at | step |\n| ---: | --- |\n");
        for s in &r.timeline {
            md.push_str(&format!("| {:.1}s | {} |\n", s.at_ms as f64 / 1000.0, s.what.replace('|', "\\|")));
        }
        md.push_str(&format!("\n{} polls, {} ECS API calls.\n", r.polls, r.api_calls));
    }
    md
}

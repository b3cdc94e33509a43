//! The report stage: a deploy's outputs, step summary (a markdown table per service, the
//! failure diagnostics — stopped tasks, ECS events, the failing probe — and the timeline of
//! stages) and annotations; the release's headline and mermaid timeline.

use crate::deploy::plan::Strategy;
use crate::deploy::report::{DeployReport, DeployRun, Outcome};
use crate::github::runner::{Level, Runner, RunnerError};

fn short(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

/// Outputs (DESIGN.md section 3's names, `result` included), the summary, and in Actions an
/// error annotation per service that did not succeed.
pub fn publish(runner: &Runner, run: &DeployRun) -> Result<(), RunnerError> {
    if let Some(first) = run.services.first() {
        runner.set_output("task-definition-arn", &first.task_definition_arn)?;
        runner.set_output("previous-task-definition-arn", &first.previous_task_definition_arn)?;
        runner.set_output("deployment-id", first.deployment_id.as_deref().unwrap_or_default())?;
    }
    runner.set_output("result", run.result.as_str())?;
    runner.summary(&summary(&run.services))?;
    if runner.in_actions() {
        for r in run.services.iter().filter(|r| r.result != Outcome::Succeeded) {
            runner.annotate(
                Level::Error,
                &format!("{}: {}", r.service, r.failure.as_deref().unwrap_or("failed")),
                None,
            );
        }
    }
    Ok(())
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
            Outcome::Failed if !r.changed => "❌ failed — not deployed, unchanged",
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
        md.push_str(&lifecycle_markdown(r));
        let which = if r.strategy == Strategy::CodeDeploy { "ECS and CodeDeploy" } else { "ECS" };
        md.push_str(&format!("\n{} polls, {} {which} API calls.\n", r.polls, r.api_calls));
    }
    md
}

/// What the release section of the step summary shows.
pub struct ReleaseSummary<'a> {
    pub environment: &'a str,
    pub image_uri: Option<&'a str>,
    pub image_digest: Option<&'a str>,
    pub task_definition_arn: &'a str,
    pub previous_task_definition_arn: &'a str,
    pub strategy: &'a str,
    /// `succeeded` | `rolled-back` | `failed`
    pub result: &'a str,
    /// Each stage and its duration in milliseconds, in order.
    pub stages: Vec<(&'a str, u64)>,
}

/// The release's headline for `$GITHUB_STEP_SUMMARY`: environment, image and digest, task
/// definition old → new revision, strategy, result, durations, and the stages as a mermaid
/// gantt chart (GitHub renders it). The diff and the per-service diagnostics are written by
/// the stages themselves.
pub fn release_summary(s: &ReleaseSummary) -> String {
    let code = |v: &str| format!("`{}`", v.replace('`', "'"));
    let icon = match s.result {
        "succeeded" => "✅",
        "rolled-back" => "↩️",
        _ => "❌",
    };
    let total: u64 = s.stages.iter().map(|(_, ms)| ms).sum();
    let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
    let mut md = format!("## deployer release: {} {icon} {}\n\n", code(s.environment), s.result);
    md.push_str("| | |\n| --- | --- |\n");
    md.push_str(&format!("| environment | {} |\n", code(s.environment)));
    if let Some(uri) = s.image_uri {
        md.push_str(&format!("| image | {} |\n", code(uri)));
    }
    if let Some(digest) = s.image_digest {
        md.push_str(&format!("| digest | {} |\n", code(digest)));
    }
    let previous =
        if s.previous_task_definition_arn.is_empty() { "(none)" } else { short(s.previous_task_definition_arn) };
    md.push_str(&format!("| task definition | {} → {} |\n", code(previous), code(short(s.task_definition_arn))));
    md.push_str(&format!("| strategy | {} |\n", s.strategy));
    md.push_str(&format!("| result | {icon} {} |\n", s.result));
    let durations: Vec<String> = s.stages.iter().map(|(stage, ms)| format!("{stage} {}", secs(*ms))).collect();
    md.push_str(&format!("| duration | {} ({}) |\n\n", secs(total), durations.join(", ")));
    md.push_str(&gantt(&s.stages));
    md
}

/// The stages as a mermaid gantt chart, milliseconds from the start of the release.
pub fn gantt(stages: &[(&str, u64)]) -> String {
    let mut md = String::from(
        "```mermaid\ngantt\n    title release timeline\n    dateFormat x\n    axisFormat %M:%S\n    section stages\n",
    );
    let mut at = 0u64;
    for (stage, ms) in stages {
        // A task name must not contain ':' or '#' (mermaid syntax); ours are fixed words.
        let name: String = stage.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == ' ').collect();
        // A zero-length bar is invisible: give it 1 ms.
        let end = at + (*ms).max(1);
        md.push_str(&format!("    {name} ({:.1}s) : {at}, {end}\n", *ms as f64 / 1000.0));
        at = end;
    }
    md.push_str("```\n");
    md
}

/// Blue/green, canary, linear: each lifecycle stage with its start and duration, and green's
/// share of traffic over time. Empty for rolling deployments.
fn lifecycle_markdown(r: &DeployReport) -> String {
    let secs = |ms: u64| format!("{:.1}s", ms as f64 / 1000.0);
    let mut md = String::new();
    if !r.lifecycle.is_empty() {
        md.push_str(&format!(
            "\n**Lifecycle ({}):**\n\n| stage | started | duration |\n| --- | ---: | ---: |\n",
            r.strategy.name()
        ));
        for s in &r.lifecycle {
            md.push_str(&format!("| {} | {} | {} |\n", s.stage, secs(s.started_ms), secs(s.duration_ms)));
        }
    }
    if !r.traffic.is_empty() {
        md.push_str("\n**Traffic split:**\n\n| at | production → green | test → green |\n| ---: | ---: | ---: |\n");
        for t in &r.traffic {
            md.push_str(&format!(
                "| {} | {}% | {}% |\n",
                secs(t.at_ms),
                t.production_green_percent,
                t.test_green_percent
            ));
        }
    }
    md
}

#[cfg(test)]
mod release_summary_tests {
    use super::*;

    #[test]
    fn the_release_summary_has_the_headline_and_a_gantt_timeline() {
        let md = release_summary(&ReleaseSummary {
            environment: "production",
            image_uri: Some("1.dkr.ecr.us-east-1.amazonaws.com/shop@sha256:ab"),
            image_digest: Some("sha256:ab"),
            task_definition_arn: "arn:aws:ecs:us-east-1:1:task-definition/shop:8",
            previous_task_definition_arn: "arn:aws:ecs:us-east-1:1:task-definition/shop:7",
            strategy: "rolling",
            result: "succeeded",
            stages: vec![("resolve", 3), ("auth", 250), ("deploy", 41_000)],
        });
        assert!(md.contains("| task definition | `shop:7` → `shop:8` |"), "{md}");
        assert!(md.contains("| digest | `sha256:ab` |"), "{md}");
        assert!(md.contains("| duration | 41.3s (resolve 0.0s, auth 0.2s, deploy 41.0s) |"), "{md}");
        assert!(md.contains("```mermaid\ngantt\n"), "{md}");
        assert!(
            md.contains("    resolve (0.0s) : 0, 3\n    auth (0.2s) : 3, 253\n    deploy (41.0s) : 253, 41253\n"),
            "{md}"
        );
    }
}

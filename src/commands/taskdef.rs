//! `render`, `diff`, `verify` and `register`: the flags as a task-definition plan, the
//! stage's shared preparation (`pipeline::taskdef::prepare`), then each command's own last
//! step and its result.

use std::fmt;
use std::io::IsTerminal;

use serde::Serialize;
use serde_json::Value;

use super::plan::taskdef_plan;
use crate::cli::{GlobalArgs, OutputFormat, TaskDefArgs};
use crate::error::Result;
use crate::exit::Exit;
use crate::output::Printer;
/// Where `params` finds the session type (it lives in `pipeline` now).
pub use crate::pipeline::Session;
use crate::pipeline::taskdef::{diff_against_current, prepare, register, verify_rendered};
use crate::taskdef::diff::Diff;
use crate::taskdef::ecs::Registered;
use crate::taskdef::verify::Checked;

/// The rendered JSON; `--output json` and text print the same document.
#[derive(Serialize)]
#[serde(transparent)]
pub struct RenderResult(pub Value);

impl fmt::Display for RenderResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&serde_json::to_string_pretty(&self.0).unwrap_or_default())
    }
}

pub async fn run_render(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let plan = taskdef_plan(args)?;
    let rendered = prepare(&session, &plan).await?;
    printer.result(&RenderResult(rendered.rendered.to_json()));
    Ok(Exit::Ok)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DiffResult {
    pub changed: bool,
    pub current: String,
    pub rendered: String,
    pub lines_added: usize,
    pub lines_removed: usize,
    pub diff: String,
    #[serde(skip)]
    color: bool,
}

impl fmt::Display for DiffResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.changed {
            return write!(f, "no change: the rendered task definition matches {}", self.current);
        }
        let d = Diff {
            current_label: self.current.clone(),
            rendered_label: self.rendered.clone(),
            unified: self.diff.clone(),
            changed: true,
        };
        write!(f, "{}", if self.color { d.colored() } else { d.unified })
    }
}

pub async fn run_diff(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let plan = taskdef_plan(args)?;
    let rendered = prepare(&session, &plan).await?;
    let d = diff_against_current(&session, &plan, &rendered).await?;
    printer.runner.summary(&d.markdown())?;
    let (added, removed) = d.stats();
    let color = global.output == OutputFormat::Text
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    printer.result(&DiffResult {
        changed: d.changed,
        current: d.current_label.clone(),
        rendered: d.rendered_label.clone(),
        lines_added: added,
        lines_removed: removed,
        diff: d.unified.clone(),
        color,
    });
    Ok(if d.changed && args.exit_code { Exit::Failed } else { Exit::Ok })
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyResult {
    pub template: String,
    pub checked: Checked,
}

impl fmt::Display for VerifyResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "verified {}: {} parameter(s), {} secret(s), {} image(s) exist",
            self.template, self.checked.parameters, self.checked.secrets, self.checked.images
        )
    }
}

pub async fn run_verify(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let plan = taskdef_plan(args)?;
    let rendered = prepare(&session, &plan).await?;
    let checked = verify_rendered(&session, &plan, &rendered).await?;
    printer.result(&VerifyResult { template: rendered.template_label, checked });
    Ok(Exit::Ok)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegisterResult {
    #[serde(flatten)]
    pub registered: Registered,
    pub verified: bool,
}

impl fmt::Display for RegisterResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.registered.task_definition_arn)
    }
}

pub async fn run_register(args: &TaskDefArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let session = Session::from_default_chain(global).await?;
    let plan = taskdef_plan(args)?;
    let rendered = prepare(&session, &plan).await?;
    if !args.no_verify {
        verify_rendered(&session, &plan, &rendered).await?;
    }
    let registered = register(&session, &rendered).await?;
    printer.runner.set_output("task-definition-arn", &registered.task_definition_arn)?;
    printer.result(&RegisterResult { registered, verified: !args.no_verify });
    Ok(Exit::Ok)
}

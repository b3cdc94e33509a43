//! `deployer params import`: read the .env file within its bounds, plan (literal values,
//! SecureString unless named plain), compare with Parameter Store, write what changed (never
//! with --dry-run, never after a refusal), and report keys, names and actions — never values.

use std::fmt;

use serde::Serialize;

use crate::cli::{GlobalArgs, ParamsImportArgs};
use crate::commands::taskdef::Session;
use crate::config::Config;
use crate::error::Result;
use crate::exit::Exit;
use crate::github::runner::Level;
use crate::output::Printer;
use crate::params::{self, Action, ApplyOptions, Change, Outcome, Plain};

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImportResult {
    pub path: String,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    pub parameters: Vec<Outcome>,
    /// Keys worth a second look (a `$` kept literally, a duplicate, a plain secret); never values.
    pub warnings: Vec<String>,
}

impl fmt::Display for ImportResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |p: &Outcome| match (p.action, self.dry_run) {
            (Action::Create, false) => "created".to_string(),
            (Action::Create, true) => "would create".to_string(),
            (Action::Update, dry) => format!("{}{}", if dry { "would update" } else { "updated" }, what(p.change)),
            (Action::Unchanged, _) => "unchanged".to_string(),
            (Action::KeepChanged, _) => format!("differs{}, kept (pass --overwrite to replace)", what(p.change)),
        };
        let width = self.parameters.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &self.parameters {
            writeln!(f, "{:<width$}  {:<12}  {}", p.name, p.kind, verb(p))?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        let count = |a| self.parameters.iter().filter(|p| p.action == a).count();
        write!(
            f,
            "{}: {} to create, {} to update, {} unchanged, {} differing kept{}",
            self.path,
            count(Action::Create),
            count(Action::Update),
            count(Action::Unchanged),
            count(Action::KeepChanged),
            if self.dry_run { " (dry run: nothing written)" } else { "" }
        )
    }
}

fn what(change: Option<Change>) -> &'static str {
    match change {
        Some(Change::Value) | None => "",
        Some(Change::Type) => " (String → SecureString)",
        Some(Change::ValueAndType) => " (value, and String → SecureString)",
    }
}

pub async fn run_import(args: &ParamsImportArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let path = params::normalize_path(&args.path)?;
    let config = Config::load(&args.config, args.config.as_os_str() != "deployer.toml")?;
    let plain = Plain::new(
        args.plain
            .iter()
            .map(|p| ("--plain", p.as_str()))
            .chain(config.params.plain.iter().map(|p| ("[params] plain", p.as_str()))),
    )?;
    let file = args.file.display().to_string();
    let text = params::read_env_file(&args.file)?;
    let plan = params::plan(&text, &file, &path, &plain)?;
    drop(text);
    let session = Session::from_default_chain(global).await?;
    let opts = ApplyOptions { overwrite: args.overwrite, dry_run: args.dry_run, kms_key_id: args.kms_key_id.clone() };
    let outcomes = params::apply(&session.config, &plan.entries, &opts).await?;
    if printer.runner.in_actions() {
        for w in &plan.warnings {
            printer.runner.annotate(Level::Warning, w, Some(&args.file));
        }
    }
    printer.result(&ImportResult {
        path,
        dry_run: args.dry_run,
        kms_key_id: args.kms_key_id.clone(),
        parameters: outcomes,
        warnings: plan.warnings,
    });
    Ok(Exit::Ok)
}

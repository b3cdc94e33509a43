//! `deployer params import`: plan from the .env file, compare with Parameter Store, write
//! what changed (never with --dry-run), and report names and actions — never values.

use std::fmt;

use serde::Serialize;

use crate::cli::{GlobalArgs, ParamsImportArgs};
use crate::commands::taskdef::Session;
use crate::error::Result;
use crate::exit::Exit;
use crate::output::Printer;
use crate::params::{self, Action, Outcome};

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImportResult {
    pub path: String,
    pub dry_run: bool,
    pub parameters: Vec<Outcome>,
}

impl fmt::Display for ImportResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = |a: Action| match (a, self.dry_run) {
            (Action::Create, false) => "created",
            (Action::Create, true) => "would create",
            (Action::Update, false) => "updated",
            (Action::Update, true) => "would update",
            (Action::Unchanged, _) => "unchanged",
            (Action::KeepChanged, _) => "differs, kept (pass --overwrite to replace)",
        };
        let width = self.parameters.iter().map(|p| p.name.len()).max().unwrap_or(0);
        for p in &self.parameters {
            writeln!(f, "{:<width$}  {:<12}  {}", p.name, p.kind, verb(p.action))?;
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

pub async fn run_import(args: &ParamsImportArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let path = params::normalize_path(&args.path)?;
    let entries = params::plan(&args.file, &path, &args.secure)?;
    let session = Session::from_default_chain(global).await?;
    let outcomes = params::apply(&session.config, &entries, args.overwrite, args.dry_run).await?;
    printer.result(&ImportResult { path, dry_run: args.dry_run, parameters: outcomes });
    Ok(Exit::Ok)
}

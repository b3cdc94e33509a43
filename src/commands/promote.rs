//! `deployer promote`: the flags as a promote request, the image stage
//! (`pipeline::image::promote`: retag, mount or copy without rebuilding), the outputs and the
//! result.

use super::plan;
use crate::cli::{GlobalArgs, PromoteArgs};
use crate::error::Result;
use crate::exit::Exit;
use crate::output::Printer;

pub async fn run(args: &PromoteArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let req = plan::promote_request(&args.from, &args.source, &args.repository, &args.target);
    let config = plan::default_config(global.region.as_deref()).await?;
    let result = crate::pipeline::image::promote(&config, &req, &printer.runner).await?;
    result.set_outputs(&printer.runner)?;
    printer.result(&result);
    Ok(Exit::Ok)
}

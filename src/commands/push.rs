//! `deployer push`: the flags as a push request (a created repository gets the resource tags
//! and the lifecycle policy), the image stage (`pipeline::image::push`), the outputs and the
//! result.

use super::plan;
use crate::cli::{GlobalArgs, PushArgs};
use crate::error::Result;
use crate::exit::Exit;
use crate::output::Printer;

pub async fn run(args: &PushArgs, global: &GlobalArgs, printer: &Printer) -> Result<Exit> {
    let tags = plan::resource_tags(&args.resources.resource_tags, None, None)?;
    let create = plan::create_options(&args.upload, &args.resources, &tags)?;
    let req = plan::push_request(&args.source, &args.repository, &args.target, &args.upload, create);
    let config = plan::default_config(global.region.as_deref()).await?;
    let result = crate::pipeline::image::push(&config, &req, &printer.runner).await?;
    result.set_outputs(&printer.runner)?;
    printer.result(&result);
    Ok(Exit::Ok)
}

//! `ork event send NAME [--id ID] [--data JSON]`.

use chrono::Utc;
use clap::Args;
use ork_proto::v1::PublishEventRequest;

use crate::commands::Context;
use crate::error::usage;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct SendArgs {
    /// The event name (`order.created`).
    name: String,
    /// The event id: sending the same id again starts nothing (default: a
    /// new id, so a new event).
    #[arg(long)]
    id: Option<String>,
    /// The event's data, a JSON object; the runs read it as
    /// `{{ run.input.event.data.FIELD }}`.
    #[arg(long, value_name = "JSON", default_value = "{}")]
    data: String,
}

pub async fn run(args: SendArgs, ctx: &Context) -> anyhow::Result<()> {
    let data: serde_json::Value = serde_json::from_str(&args.data).map_err(|e| {
        usage(format!(
            "--data: not JSON ({e}); give an object such as '{{\"order\": 7}}'"
        ))
    })?;
    if !data.is_object() {
        return Err(usage("--data: give a JSON object such as '{\"order\": 7}'"));
    }
    let client = ctx.connect().await?;
    let reply = client
        .events
        .clone()
        .publish_event(PublishEventRequest {
            name: args.name.clone(),
            id: args.id.unwrap_or_default(),
            data: Some(ork_proto::json::to_proto(&data)),
        })
        .await?
        .into_inner();
    match ctx.output {
        OutputFormat::Json => output::print_json(&reply),
        OutputFormat::Table => {
            if reply.duplicate {
                eprintln!(
                    "event `{}` id {} was delivered before: nothing started; its runs:",
                    args.name, reply.id
                );
            } else {
                eprintln!(
                    "event `{}` id {} started {} run(s)",
                    args.name,
                    reply.id,
                    reply.runs.len()
                );
            }
            output::emit(&output::render_run_list(&reply.runs, Utc::now(), ctx.style))
        }
    }
}

//! `ork run list [WORKFLOW] [--status S]... [--since 24h] [--label k=v]...
//! [--limit N] [--page-token T | --all]`: run history, newest first, one
//! page at a time.
//!
//! The server pages by a stable key, so `--all` (or following the printed
//! `--page-token`) visits every matching run once even while new runs start.

use chrono::{DateTime, Utc};
use clap::Args;
use ork_proto::v1::{ListRunsRequest, Run};

use crate::commands::Context;
use crate::error::usage;
use crate::output::{self, OutputFormat};

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only runs in this status (pending, running, success, failed,
    /// cancelled); repeat it or separate with commas for several.
    #[arg(long, value_name = "STATUS", value_delimiter = ',')]
    status: Vec<String>,
    /// Only runs started by this trigger (manual, schedule, retry); repeat
    /// it or separate with commas for several.
    #[arg(long, value_name = "TRIGGER", value_delimiter = ',')]
    trigger: Vec<String>,
    /// Only runs created since: an age (`30m`, `24h`, `7d`) or an RFC 3339
    /// time (`2026-11-28T00:00:00Z`).
    #[arg(long, value_name = "AGE|TIME")]
    since: Option<String>,
    /// Only runs created before: an age (`1h`) or an RFC 3339 time.
    #[arg(long, value_name = "AGE|TIME")]
    until: Option<String>,
    /// Only runs carrying this label (`key=value`); repeat for several.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Runs per page (at most 1000).
    #[arg(long, default_value_t = 20)]
    limit: u32,
    /// Continue from where a previous page ended (it prints the token).
    #[arg(long, value_name = "TOKEN", conflicts_with = "all")]
    page_token: Option<String>,
    /// Every matching run, fetching page after page.
    #[arg(long)]
    all: bool,
}

pub async fn run(args: ListArgs, ctx: &Context) -> anyhow::Result<()> {
    let now = Utc::now();
    let created_after = args
        .since
        .as_deref()
        .map(|t| parse_time("--since", t, now))
        .transpose()?;
    let created_before = args
        .until
        .as_deref()
        .map(|t| parse_time("--until", t, now))
        .transpose()?;
    for label in &args.labels {
        ork_domain::labels::parse_pair(label).map_err(|e| usage(format!("--label: {e}")))?;
    }
    let mut request = ListRunsRequest {
        workflow: args.workflow.unwrap_or_default(),
        limit: args.limit,
        status: args.status,
        triggered_by: args.trigger,
        created_after: created_after.map(ork_proto::time::to_proto),
        created_before: created_before.map(ork_proto::time::to_proto),
        label: args.labels,
        page_token: args.page_token.unwrap_or_default(),
        include_total: true,
        ..Default::default()
    };
    let client = ctx.connect().await?;
    let mut runs: Vec<Run> = Vec::new();
    let mut total = None;
    let next = loop {
        let page = client
            .runs
            .clone()
            .list_runs(request.clone())
            .await?
            .into_inner();
        total = total.or(page.total);
        runs.extend(page.runs);
        if !args.all || page.next_page_token.is_empty() {
            break page.next_page_token;
        }
        // Counting once is enough.
        request.include_total = false;
        request.page_token = page.next_page_token;
    };
    match ctx.output {
        // A bare array, like `ork workflow list`: proto3 JSON would print an
        // empty `ListRunsResponse` as `{}`.
        OutputFormat::Json => output::print_json(&runs)?,
        OutputFormat::Table => {
            output::emit(&output::render_run_list(&runs, now, ctx.style))?;
        }
    }
    // On stderr, so stdout stays the runs alone.
    if !next.is_empty() {
        let shown = match total {
            Some(total) => format!("{} of {total} matching runs shown", runs.len()),
            None => format!("{} runs shown", runs.len()),
        };
        eprintln!("{shown}; next page: --page-token {next} (or --all)");
    }
    Ok(())
}

/// An age before `now` (`90s`, `30m`, `24h`, `7d`, `2w`) or an RFC 3339 time.
pub(crate) fn parse_time(
    flag: &str,
    text: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        usage(format!(
            "{flag} `{text}`: give an age such as 30m, 24h or 7d, or an RFC 3339 time such as 2026-11-28T00:00:00Z"
        ))
    };
    let split = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    let age = n
        .checked_mul(seconds)
        .and_then(chrono::TimeDelta::try_seconds)
        .ok_or_else(bad)?;
    now.checked_sub_signed(age).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_times_parse_and_junk_says_how() {
        let now = DateTime::parse_from_rfc3339("2026-11-29T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let at = |s| parse_time("--since", s, now).unwrap().to_rfc3339();
        assert_eq!(at("24h"), "2026-11-28T12:00:00+00:00");
        assert_eq!(at("30m"), "2026-11-29T11:30:00+00:00");
        assert_eq!(at("7d"), "2026-11-22T12:00:00+00:00");
        assert_eq!(at("2026-11-01T00:00:00Z"), "2026-11-01T00:00:00+00:00");
        for junk in ["", "h", "24", "24y", "-3h", "99999999999999999d"] {
            let e = parse_time("--since", junk, now).unwrap_err().to_string();
            assert!(e.contains("--since"), "{junk}: {e}");
        }
    }
}

//! Following a run to its end for `run start --wait`, `run status --watch`
//! and `run retry --wait`: the server's `WatchRun` stream, shown on stderr
//! as one live line on a terminal or as event lines into a pipe.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use ork_proto::v1::{Run, WatchRunRequest};

use crate::client::Client;
use crate::commands::Context;
use crate::output::{self, Style};
use crate::progress;

fn is_terminal(status: &str) -> bool {
    matches!(status, "success" | "failed" | "cancelled")
}

/// How often the live line is redrawn between messages (its clock).
const REDRAW: Duration = Duration::from_millis(100);

/// Follows the run's `WatchRun` stream until it ends: the server pushes the
/// run at every change, so the last message arrives as the run ends, with
/// no polling interval in between. Shows progress on stderr meanwhile: a
/// live line on a terminal, event lines otherwise.
pub(super) async fn watch_run(client: &Client, id: &str, ctx: &Context) -> anyhow::Result<Run> {
    let mut stream = client
        .runs
        .clone()
        .watch_run(WatchRunRequest { id: id.to_owned() })
        .await?
        .into_inner();
    let mut display = Display::new(ctx.err_style);
    let mut redraw = tokio::time::interval(REDRAW);
    redraw.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Run> = None;
    loop {
        tokio::select! {
            message = stream.message() => {
                let Some(message) = message? else { break };
                // Messages after the first carry only the task runs that
                // changed: merged into the whole run.
                let run = ork_proto::watch::apply(last.take(), message);
                display.update(&run);
                let over = is_terminal(&run.status);
                last = Some(run);
                if over {
                    break;
                }
            }
            _ = redraw.tick(), if display.live => {
                if let Some(run) = &last {
                    display.redraw(run);
                }
            }
        }
    }
    display.finish();
    match last {
        Some(run) if is_terminal(&run.status) => Ok(run),
        _ => Err(anyhow::anyhow!(
            "the server ended the watch of run {id} before the run ended (was it stopped?); \
             `ork run status {id} --watch` follows it again"
        )),
    }
}

/// Where progress goes: stderr, as one live line on a terminal (redrawn in
/// place), or as event lines when it is a pipe or a file.
struct Display {
    live: bool,
    style: Style,
    events: progress::Events,
    started: std::time::Instant,
    frame: usize,
    drawn: bool,
}

impl Display {
    fn new(style: Style) -> Self {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        Self {
            live: std::io::stderr().is_terminal() && !dumb,
            style,
            events: progress::Events::default(),
            started: std::time::Instant::now(),
            frame: 0,
            drawn: false,
        }
    }

    /// Milliseconds since the run started (by the server's clock) until it
    /// finished or now, or since this command started watching when the run
    /// has not started yet.
    fn elapsed(&self, run: &Run) -> i64 {
        let since = run
            .started_at
            .as_ref()
            .or(run.created_at.as_ref())
            .and_then(output::to_chrono);
        let until = run
            .finished_at
            .as_ref()
            .and_then(output::to_chrono)
            .unwrap_or_else(chrono::Utc::now);
        match since {
            Some(t) => (until - t).num_milliseconds().max(0),
            None => i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX),
        }
    }

    fn update(&mut self, run: &Run) {
        let elapsed = self.elapsed(run);
        // On a terminal the live line shows starts and successes; the lines
        // that must stay (failures, retries, waits) go above it.
        let lines = self.events.update(run, elapsed, self.live, self.style);
        let mut err = std::io::stderr().lock();
        if self.live && self.drawn && !lines.is_empty() {
            let _ = write!(err, "\r\x1b[2K");
            self.drawn = false;
        }
        for line in lines {
            let _ = writeln!(err, "{line}");
        }
        drop(err);
        if self.live {
            self.redraw(run);
        }
    }

    fn redraw(&mut self, run: &Run) {
        self.frame += 1;
        let width = terminal_size::terminal_size_of(std::io::stderr())
            .map_or(80, |(w, _)| usize::from(w.0))
            .saturating_sub(1);
        let line = progress::status_line(run, self.elapsed(run), self.frame, width, self.style);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.live && self.drawn {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

//! When a scheduled workflow fires: the cron expression read in the
//! workflow's time zone, and which missed fires become runs (`catchup`).
//!
//! # Wall-clock semantics and daylight saving time
//!
//! A schedule names wall-clock times in `timezone`: `0 2 * * *` in
//! `America/New_York` fires at 02:00 New York time, whatever the UTC offset.
//! Each matching local time fires at most once, and fire times always
//! increase:
//!
//! - **Gap (spring forward)**: a local time that does not exist that day
//!   (02:30 when clocks jump from 02:00 to 03:00) fires once, at the first
//!   instant after the gap (03:00 local). Several times inside one gap
//!   (`*/15` at 02:00, 02:15, ...) and a fire at the gap's end collapse into
//!   that single fire, so a daily job still runs every day.
//! - **Overlap (fall back)**: a local time that happens twice (01:30 when
//!   clocks go back from 02:00 to 01:00) fires once, at its first occurrence.
//!   An hourly job therefore has a two-hour gap in UTC that night; nothing is
//!   run twice.
//!
//! The `cron` crate alone does neither: evaluated in a zone, it skips
//! nonexistent times and yields both occurrences of an ambiguous one (and,
//! inside the repeated hour, times that go back). So this module runs the
//! crate on naive local times (labelled UTC, where every time exists once)
//! and maps each to an instant itself.
//!
//! Nothing here reads a clock: callers pass `now`.

use chrono::{DateTime, Duration, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

pub use crate::model::Catchup;
use crate::model::WorkflowDefinition;

/// Most missed fires `catchup: all` turns into runs at once; the most recent
/// ones are kept.
pub const MAX_CATCHUP_FIRES: usize = 100;

/// How late a fire may still run under `catchup: skip`: a scheduler that
/// ticks every few seconds must not drop the fire it is just now handling.
pub const SKIP_GRACE_SECONDS: i64 = 60;

/// The fires of `def`'s schedule in `(start, now]` that should create runs,
/// oldest first, where `start` is the later of `last_fire` and `deployed_at`
/// (a schedule never covers time before it was deployed, and a fire is never
/// repeated). Empty without a valid schedule or time zone.
///
/// - [`Catchup::Skip`]: the due fires no older than [`SKIP_GRACE_SECONDS`]
///   before `now`; older missed fires are dropped.
/// - [`Catchup::Latest`]: only the most recent due fire.
/// - [`Catchup::All`]: every due fire, keeping the most recent
///   [`MAX_CATCHUP_FIRES`].
///
/// The caller records the last returned time as the new `last_fire`, in the
/// same transaction as the runs, under a unique (schedule, fire time) key.
pub fn due_fires(
    def: &WorkflowDefinition,
    last_fire: Option<DateTime<Utc>>,
    deployed_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let Some((schedule, tz)) = schedule_of(def) else {
        return Vec::new();
    };
    let start = last_fire.map_or(deployed_at, |last| last.max(deployed_at));
    if start >= now {
        return Vec::new();
    }
    let (after, limit) = match def.catchup {
        Catchup::Skip => (
            start.max(now - Duration::seconds(SKIP_GRACE_SECONDS) - Duration::nanoseconds(1)),
            MAX_CATCHUP_FIRES,
        ),
        Catchup::Latest => (start, 1),
        Catchup::All => (start, MAX_CATCHUP_FIRES),
    };
    fires_before(&schedule, tz, after, now, limit)
}

/// The first fire strictly after `after`, or `None` without a valid
/// schedule or when the schedule never fires again.
pub fn next_fire(def: &WorkflowDefinition, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let (schedule, tz) = schedule_of(def)?;
    let from = as_utc_label(local_naive(tz, after));
    schedule
        .after(&from)
        .map(|naive| instant_of(tz, naive.naive_utc()))
        .find(|t| *t > after)
}

/// The next `n` fires strictly after `after`, oldest first (fewer when the
/// schedule ends; none without a valid schedule).
pub fn next_fires(def: &WorkflowDefinition, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
    let mut fires = Vec::with_capacity(n);
    let mut from = after;
    while fires.len() < n {
        let Some(next) = next_fire(def, from) else {
            break;
        };
        fires.push(next);
        from = next;
    }
    fires
}

/// Most fires one backfill covers.
pub const MAX_BACKFILL_FIRES: usize = 10_000;

/// Every fire of `def`'s schedule in `[from, to]`, oldest first, for a
/// backfill. An error says why there are none to give: no valid schedule,
/// a reversed range, or more than [`MAX_BACKFILL_FIRES`].
pub fn fires_between(
    def: &WorkflowDefinition,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, String> {
    let (schedule, tz) = schedule_of(def).ok_or_else(|| {
        format!(
            "workflow `{}` has no schedule (add `schedule:` to its YAML and deploy it)",
            def.name
        )
    })?;
    if from > to {
        return Err(format!(
            "the range ends ({to}) before it starts ({from}); give --from earlier than --to"
        ));
    }
    let fires = fires_before(
        &schedule,
        tz,
        from - Duration::nanoseconds(1),
        to,
        MAX_BACKFILL_FIRES + 1,
    );
    if fires.len() > MAX_BACKFILL_FIRES {
        return Err(format!(
            "the range holds more than {MAX_BACKFILL_FIRES} fires of `{}`; backfill it in smaller ranges",
            def.name
        ));
    }
    Ok(fires)
}

fn schedule_of(def: &WorkflowDefinition) -> Option<(cron::Schedule, Tz)> {
    let schedule = crate::parse::cron_schedule(def.schedule.as_deref()?).ok()?;
    let tz: Tz = def.timezone.parse().ok()?;
    Some((schedule, tz))
}

/// Up to `limit` most recent fires in `(after, upto]`, oldest first.
///
/// Walks back from a local time late enough to cover a repeated hour that
/// `upto` may be in: while clocks are back, local times after `upto`'s own
/// first happened before `upto`.
fn fires_before(
    schedule: &cron::Schedule,
    tz: Tz,
    after: DateTime<Utc>,
    upto: DateTime<Utc>,
    limit: usize,
) -> Vec<DateTime<Utc>> {
    let ahead = (0..=26)
        .map(|hours| offset_seconds(tz, upto - Duration::hours(hours)))
        .max()
        .unwrap_or(0);
    let top = upto.naive_utc() + Duration::seconds(ahead) + Duration::seconds(1);
    let mut fires: Vec<DateTime<Utc>> = Vec::new();
    for naive in schedule.after(&as_utc_label(top)).rev() {
        let t = instant_of(tz, naive.naive_utc());
        if t > upto {
            continue;
        }
        if t <= after || fires.len() >= limit {
            break;
        }
        // Times in one gap share an instant: keep one.
        if fires.last() != Some(&t) {
            fires.push(t);
        }
    }
    fires.reverse();
    fires
}

/// The instant a local wall-clock time fires at: itself when it exists once,
/// its first occurrence when clocks go back over it, the end of the gap when
/// clocks jump over it.
fn instant_of(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => t.with_timezone(&Utc),
        chrono::LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        chrono::LocalResult::None => gap_end(tz, local),
    }
}

/// The first instant whose local time is past `local`, a time inside a gap.
/// Offsets lie within ±15 hours, so the instant is in the window searched;
/// the search finds where local time jumps over `local`, which only the
/// gap's transition does.
fn gap_end(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    const WINDOW: i64 = 16 * 3600;
    let label = local.and_utc().timestamp();
    let past =
        |secs: i64| DateTime::from_timestamp(secs, 0).is_some_and(|t| local_naive(tz, t) > local);
    // Invariant: `lo` is not past `local`, `hi` is; offsets are whole seconds.
    let (mut lo, mut hi) = (label - WINDOW, label + WINDOW);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if past(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0).unwrap_or_else(|| local.and_utc())
}

fn local_naive(tz: Tz, t: DateTime<Utc>) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

fn offset_seconds(tz: Tz, t: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&t.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// A local time written as a UTC time, for the `cron` crate to step through
/// without time-zone effects.
fn as_utc_label(local: NaiveDateTime) -> DateTime<Utc> {
    local.and_utc()
}

#[cfg(test)]
mod tests;

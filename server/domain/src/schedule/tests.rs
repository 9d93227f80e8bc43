use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;

use super::*;
use crate::parse::{ParseOptions, parse_workflow};

fn workflow(schedule: &str, timezone: &str, catchup: &str) -> WorkflowDefinition {
    let yaml = format!(
        "name: wf\nschedule: '{schedule}'\ntimezone: {timezone}\ncatchup: {catchup}\n\
         tasks: [{{name: a, file: a.sh}}]\n"
    );
    parse_workflow(&yaml, &ParseOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

fn show(fires: &[DateTime<Utc>]) -> Vec<String> {
    fires
        .iter()
        .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
        .collect()
}

/// Every fire in `(from, to]`, by `catchup: all` (the windows stay under its cap).
fn all_fires(schedule: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
    let def = workflow(schedule, tz, "all");
    let fires = due_fires(&def, None, utc(from), utc(to));
    assert!(fires.len() < MAX_CATCHUP_FIRES, "window too wide");
    show(&fires)
}

/// The same fires found one at a time, as a scheduler asking for the next
/// fire would.
fn chained_fires(schedule: &str, tz: &str, from: &str, to: &str) -> Vec<String> {
    let def = workflow(schedule, tz, "all");
    let mut fires = Vec::new();
    let mut at = utc(from);
    while let Some(next) = next_fire(&def, at).filter(|t| *t <= utc(to)) {
        fires.push(next);
        at = next;
    }
    show(&fires)
}

/// Fires around the 2026 daylight-saving transitions, as exact UTC instants.
/// US: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT ->
/// 01:00 EST (06:00Z). EU: 2026-03-29 and 2026-10-25, both at 01:00Z
/// (Stockholm 02:00 CET -> 03:00 CEST, and 03:00 CEST -> 02:00 CET).
#[test]
fn dst_transitions_fire_each_local_time_once() {
    let ny = "America/New_York";
    let sthlm = "Europe/Stockholm";
    #[rustfmt::skip]
    let cases: &[(&str, &str, &str, &str, &[&str])] = &[
        // New York, spring forward: 02:xx does not exist on 03-08.
        ("30 2 * * *", ny, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z",
         &["2026-03-07T07:30Z", "2026-03-08T07:00Z", "2026-03-09T06:30Z"]),
        ("0 2 * * *", ny, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z",
         &["2026-03-07T07:00Z", "2026-03-08T07:00Z", "2026-03-09T06:00Z"]),
        ("0 3 * * *", ny, "2026-03-07T00:00:00Z", "2026-03-10T00:00:00Z",
         &["2026-03-07T08:00Z", "2026-03-08T07:00Z", "2026-03-09T07:00Z"]),
        // Hourly: 02:00 falls in the gap and merges with 03:00 EDT (07:00Z).
        ("0 * * * *", ny, "2026-03-08T04:30:00Z", "2026-03-08T09:30:00Z",
         &["2026-03-08T05:00Z", "2026-03-08T06:00Z", "2026-03-08T07:00Z", "2026-03-08T08:00Z", "2026-03-08T09:00Z"]),
        ("30 * * * *", ny, "2026-03-08T04:30:00Z", "2026-03-08T09:30:00Z",
         &["2026-03-08T05:30Z", "2026-03-08T06:30Z", "2026-03-08T07:00Z", "2026-03-08T07:30Z", "2026-03-08T08:30Z", "2026-03-08T09:30Z"]),
        // Every quarter hour: the gap's four times and 03:00 make one fire.
        ("*/15 * * * *", ny, "2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z",
         &["2026-03-08T06:45Z", "2026-03-08T07:00Z", "2026-03-08T07:15Z", "2026-03-08T07:30Z"]),
        // New York, fall back: 01:xx happens twice on 11-01; the first (EDT) fires.
        ("30 1 * * *", ny, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z",
         &["2026-10-31T05:30Z", "2026-11-01T05:30Z", "2026-11-02T06:30Z"]),
        ("0 2 * * *", ny, "2026-10-31T00:00:00Z", "2026-11-03T00:00:00Z",
         &["2026-10-31T06:00Z", "2026-11-01T07:00Z", "2026-11-02T07:00Z"]),
        ("0 * * * *", ny, "2026-11-01T03:30:00Z", "2026-11-01T08:30:00Z",
         &["2026-11-01T04:00Z", "2026-11-01T05:00Z", "2026-11-01T07:00Z", "2026-11-01T08:00Z"]),
        ("30 * * * *", ny, "2026-11-01T03:30:00Z", "2026-11-01T08:30:00Z",
         &["2026-11-01T04:30Z", "2026-11-01T05:30Z", "2026-11-01T07:30Z", "2026-11-01T08:30Z"]),
        // Every quarter hour: the repeated hour (06:00Z-06:59Z) fires nothing.
        ("*/15 * * * *", ny, "2026-11-01T05:30:00Z", "2026-11-01T07:15:00Z",
         &["2026-11-01T05:45Z", "2026-11-01T07:00Z", "2026-11-01T07:15Z"]),
        // Stockholm, spring forward: 02:xx does not exist on 03-29.
        ("30 2 * * *", sthlm, "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z",
         &["2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z"]),
        ("0 * * * *", sthlm, "2026-03-28T23:30:00Z", "2026-03-29T03:30:00Z",
         &["2026-03-29T00:00Z", "2026-03-29T01:00Z", "2026-03-29T02:00Z", "2026-03-29T03:00Z"]),
        ("30 * * * *", sthlm, "2026-03-28T23:30:00Z", "2026-03-29T03:30:00Z",
         &["2026-03-29T00:30Z", "2026-03-29T01:00Z", "2026-03-29T01:30Z", "2026-03-29T02:30Z", "2026-03-29T03:30Z"]),
        // Stockholm, fall back: 02:xx happens twice on 10-25; the first (CEST) fires.
        ("30 2 * * *", sthlm, "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z",
         &["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z"]),
        ("0 * * * *", sthlm, "2026-10-24T22:30:00Z", "2026-10-25T03:30:00Z",
         &["2026-10-24T23:00Z", "2026-10-25T00:00Z", "2026-10-25T02:00Z", "2026-10-25T03:00Z"]),
        ("30 * * * *", sthlm, "2026-10-24T22:30:00Z", "2026-10-25T03:30:00Z",
         &["2026-10-24T23:30Z", "2026-10-25T00:30Z", "2026-10-25T02:30Z", "2026-10-25T03:30Z"]),
        // UTC has no transitions: plain hourly.
        ("0 * * * *", "UTC", "2026-03-08T04:30:00Z", "2026-03-08T08:30:00Z",
         &["2026-03-08T05:00Z", "2026-03-08T06:00Z", "2026-03-08T07:00Z", "2026-03-08T08:00Z"]),
    ];
    for (schedule, tz, from, to, expected) in cases {
        let label = format!("{schedule} in {tz}, ({from}, {to}]");
        assert_eq!(all_fires(schedule, tz, from, to), *expected, "{label}");
        assert_eq!(
            chained_fires(schedule, tz, from, to),
            *expected,
            "chained: {label}"
        );
    }
}

/// What the `cron` crate does on its own, which this module corrects: it
/// yields an ambiguous local time twice and skips a nonexistent one.
#[test]
fn the_cron_crate_alone_duplicates_and_drops() {
    let tz: Tz = "America/New_York".parse().unwrap();
    let schedule = crate::parse::cron_schedule("30 1 * * *").unwrap();
    let from = utc("2026-11-01T00:00:00Z").with_timezone(&tz);
    let raw: Vec<String> = schedule
        .after(&from)
        .take(2)
        .map(|t| t.with_timezone(&Utc).format("%m-%dT%H:%MZ").to_string())
        .collect();
    assert_eq!(raw, ["11-01T05:30Z", "11-01T06:30Z"]);

    let schedule = crate::parse::cron_schedule("30 2 * * *").unwrap();
    let from = utc("2026-03-08T00:00:00Z").with_timezone(&tz);
    let next = schedule.after(&from).next().unwrap().with_timezone(&Utc);
    assert_eq!(next, utc("2026-03-09T06:30:00Z"), "the 03-08 fire is lost");
}

/// A scheduler ticking through the transition days, recording `last_fire`
/// after each tick, creates the same runs as one look at the whole window:
/// none twice, none lost, also when a tick lands in the repeated hour.
#[test]
fn ticking_through_transitions_neither_duplicates_nor_loses() {
    let days = [
        ("America/New_York", "2026-03-07T12:00:00Z"),
        ("America/New_York", "2026-10-31T12:00:00Z"),
        ("Europe/Stockholm", "2026-03-28T12:00:00Z"),
        ("Europe/Stockholm", "2026-10-24T12:00:00Z"),
    ];
    for schedule in [
        "*/15 * * * *",
        "0 * * * *",
        "30 1 * * *",
        "30 2 * * *",
        "0 2 * * *",
    ] {
        for (tz, from) in days {
            let def = workflow(schedule, tz, "all");
            let deployed = utc(from);
            let end = deployed + Duration::hours(22);
            let mut last = None;
            let mut ticked = Vec::new();
            let mut now = deployed;
            while now < end {
                // An odd step, so ticks fall at varied offsets from fires.
                now += Duration::seconds(367);
                let fires = due_fires(&def, last, deployed, now);
                if let Some(t) = fires.last() {
                    last = Some(*t);
                }
                ticked.extend(fires);
            }
            let whole = due_fires(&def, None, deployed, now);
            assert!(whole.len() < MAX_CATCHUP_FIRES);
            assert_eq!(ticked, whole, "{schedule} in {tz}");
            assert!(whole.windows(2).all(|w| w[0] < w[1]), "{schedule} in {tz}");
        }
    }
}

#[test]
fn catchup_policies() {
    let deployed = utc("2026-01-01T00:00:00Z");
    let at = |s: &str| utc(&format!("2026-01-01T{s}Z"));
    let cases: &[(&str, Option<&str>, &str, &[&str])] = &[
        // A fire just now runs under every policy.
        ("skip", Some("09:00:00"), "10:00:30", &["10:00"]),
        ("latest", Some("09:00:00"), "10:00:30", &["10:00"]),
        ("all", Some("09:00:00"), "10:00:30", &["10:00"]),
        // Exactly a minute late still runs under skip; a second more does not.
        ("skip", Some("09:00:00"), "10:01:00", &["10:00"]),
        ("skip", Some("09:00:00"), "10:01:01", &[]),
        // Missed fires while the scheduler was down since 06:00.
        ("skip", Some("06:00:00"), "10:20:00", &[]),
        ("latest", Some("06:00:00"), "10:20:00", &["10:00"]),
        (
            "all",
            Some("06:00:00"),
            "10:20:00",
            &["07:00", "08:00", "09:00", "10:00"],
        ),
        // Nothing is due before the next fire, nor at the last one again.
        ("all", Some("10:00:00"), "10:59:59", &[]),
        ("all", Some("10:00:00"), "10:00:00", &[]),
        // Without a last fire, the deployment time is the start.
        ("all", None, "02:00:00", &["01:00", "02:00"]),
    ];
    for (catchup, last, now, expected) in cases {
        let def = workflow("0 * * * *", "UTC", catchup);
        let fires = due_fires(&def, last.map(at), deployed, at(now));
        let fires: Vec<String> = fires
            .iter()
            .map(|t| t.format("%H:%M").to_string())
            .collect();
        assert_eq!(fires, *expected, "{catchup}, last {last:?}, now {now}");
    }
}

#[test]
fn catchup_all_keeps_the_most_recent_fires() {
    let def = workflow("* * * * *", "UTC", "all");
    let deployed = utc("2026-01-01T00:00:00Z");
    let now = utc("2026-01-02T00:00:00Z");
    let fires = due_fires(&def, None, deployed, now);
    assert_eq!(fires.len(), MAX_CATCHUP_FIRES);
    assert_eq!(fires.last(), Some(&now));
    assert_eq!(fires[0], now - Duration::minutes(99));
    // A year of per-second fires is still quick to cut down.
    let def = workflow("* * * * * *", "Europe/Stockholm", "all");
    let fires = due_fires(&def, None, deployed, deployed + Duration::days(365));
    assert_eq!(fires.len(), MAX_CATCHUP_FIRES);
}

#[test]
fn a_schedule_never_covers_time_before_its_deployment() {
    let def = workflow("0 * * * *", "UTC", "all");
    let deployed = utc("2026-01-01T05:30:00Z");
    let now = utc("2026-01-01T07:30:00Z");
    // A last fire from before a redeployment does not reach back past it.
    let fires = due_fires(&def, Some(utc("2026-01-01T01:00:00Z")), deployed, now);
    assert_eq!(show(&fires), ["2026-01-01T06:00Z", "2026-01-01T07:00Z"]);
    assert!(due_fires(&def, None, now, deployed).is_empty());
    let unscheduled = WorkflowDefinition {
        schedule: None,
        ..def
    };
    assert!(due_fires(&unscheduled, None, deployed, now).is_empty());
    assert_eq!(next_fire(&unscheduled, now), None);
}

#[test]
fn six_field_schedules_fire_on_seconds() {
    let def = workflow("*/20 * * * * *", "UTC", "all");
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let fires = due_fires(&def, None, t0, t0 + Duration::seconds(61));
    let secs: Vec<i64> = fires.iter().map(|t| (*t - t0).num_seconds()).collect();
    assert_eq!(secs, [20, 40, 60]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For any window: fires increase strictly, stay inside `(start, now]`,
    /// `latest` is the last of `all`, `skip` is the tail of `all` within the
    /// grace period, and `all` agrees with asking for the next fire repeatedly.
    #[test]
    fn policies_agree(
        tz in prop::sample::select(vec!["UTC", "America/New_York", "Europe/Stockholm", "Australia/Lord_Howe", "Asia/Kolkata"]),
        schedule in prop::sample::select(vec!["0 * * * *", "*/20 * * * *", "30 2 * * *", "15 1 * * 0", "0 0 1 * *"]),
        // Anywhere in 2026, in minutes, for windows up to three days.
        start_min in 0i64..525_600,
        span_secs in 0i64..259_200,
        last_offset in prop::option::of(-3_600i64..3_600),
    ) {
        let year = utc("2026-01-01T00:00:00Z");
        let deployed = year + Duration::minutes(start_min);
        let now = deployed + Duration::seconds(span_secs);
        let last = last_offset.map(|s| deployed + Duration::seconds(s));
        let start = last.map_or(deployed, |l| l.max(deployed));
        let run = |catchup: &str| due_fires(&workflow(schedule, tz, catchup), last, deployed, now);
        let all = run("all");
        prop_assert!(all.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(all.iter().all(|t| *t > start && *t <= now));
        prop_assert_eq!(run("latest"), all.last().copied().into_iter().collect::<Vec<_>>());
        let grace = now - Duration::seconds(SKIP_GRACE_SECONDS);
        let recent: Vec<_> = all.iter().copied().filter(|t| *t >= grace).collect();
        prop_assert_eq!(run("skip"), recent);
        let def = workflow(schedule, tz, "all");
        let mut chained = Vec::new();
        let mut at = start;
        while let Some(next) = next_fire(&def, at).filter(|t| *t <= now) {
            chained.push(next);
            at = next;
        }
        let keep = chained.len().saturating_sub(MAX_CATCHUP_FIRES);
        prop_assert_eq!(&chained[keep..], &all[..]);
    }
}

#[test]
fn backfill_covers_both_ends_of_its_range() {
    let def = workflow("0 * * * *", "UTC", "skip");
    let fires = fires_between(
        &def,
        utc("2026-01-01T00:00:00Z"),
        utc("2026-01-02T23:00:00Z"),
    )
    .expect("fires");
    assert_eq!(fires.len(), 48);
    assert_eq!(fires[0], utc("2026-01-01T00:00:00Z"));
    assert_eq!(fires[47], utc("2026-01-02T23:00:00Z"));
}

#[test]
fn backfill_refuses_reversed_and_huge_ranges_and_unscheduled_workflows() {
    let def = workflow("* * * * *", "UTC", "skip");
    let reversed = fires_between(
        &def,
        utc("2026-01-02T00:00:00Z"),
        utc("2026-01-01T00:00:00Z"),
    )
    .unwrap_err();
    assert!(reversed.contains("--from"), "{reversed}");
    let huge = fires_between(
        &def,
        utc("2026-01-01T00:00:00Z"),
        utc("2026-02-01T00:00:00Z"),
    )
    .unwrap_err();
    assert!(huge.contains("smaller ranges"), "{huge}");
    let plain = parse_workflow(
        "name: p\ntasks: [{name: a, file: a.sh}]\n",
        &ParseOptions::default(),
    )
    .expect("parse");
    let none = fires_between(
        &plain,
        utc("2026-01-01T00:00:00Z"),
        utc("2026-01-02T00:00:00Z"),
    )
    .unwrap_err();
    assert!(none.contains("no schedule"), "{none}");
}

#[test]
fn next_fires_are_consecutive() {
    let def = workflow("0 2 * * *", "UTC", "skip");
    let fires = next_fires(&def, utc("2026-01-01T03:00:00Z"), 3);
    assert_eq!(
        show(&fires),
        [
            "2026-01-02T02:00Z",
            "2026-01-03T02:00Z",
            "2026-01-04T02:00Z"
        ]
    );
}

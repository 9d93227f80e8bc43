//! Any text as a cron expression and time zone: parsing refuses what it
//! cannot read, and a parsed schedule's next fires are computed without
//! panicking.
#![no_main]

use chrono::{DateTime, Utc};
use libfuzzer_sys::fuzz_target;
use ork_domain::parse::{ParseOptions, cron_schedule, parse_workflow};
use ork_domain::schedule::{due_fires, next_fire};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `EXPRESSION \n TIMEZONE`: the time zone is optional.
    let (expr, zone) = text.split_once('\n').unwrap_or((text, "UTC"));
    if cron_schedule(expr).is_err() || expr.contains(['\'', '\n', '\r', '\\']) {
        return;
    }
    let yaml = format!(
        "name: cron\nschedule: '{expr}'\ntimezone: '{}'\ncatchup: all\ntasks: [{{name: a, file: a.sh}}]\n",
        zone.replace(['\'', '\n', '\r'], "")
    );
    let Ok(def) = parse_workflow(&yaml, &ParseOptions::default()) else {
        return;
    };
    let at = |s: i64| DateTime::<Utc>::from_timestamp(s, 0).unwrap_or_default();
    let _ = next_fire(&def, at(1_790_000_000));
    let _ = due_fires(&def, Some(at(1_790_000_000)), at(1_780_000_000), at(1_790_090_000));
});

//! Cron fires under a controllable clock: two schedulers over one store create
//! exactly one run per fire, across DST transitions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ork_domain::TriggerType;
use ork_domain::parse::{ParseOptions, parse_workflow};
use ork_server::scheduler::cron::Cron;
use ork_server::state::{self, Limits, NewWorkflowVersion, StateStore};

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

async fn store_with(yaml: &str, deployed_at: DateTime<Utc>) -> Arc<dyn StateStore> {
    let store = state::open(
        "sqlite::memory:",
        Limits {
            max_fan_out: 10,
            lease: Duration::from_secs(86_400),
        },
    )
    .await
    .expect("open");
    let def = parse_workflow(
        yaml,
        &ParseOptions {
            source: "cron.yaml",
            files: None,
            ..Default::default()
        },
    )
    .expect("valid");
    let files = BTreeMap::from([("t.sh".to_owned(), b"#!/bin/sh\n".to_vec())]);
    let version = ork_server::hash::workflow_version(yaml, &files);
    store
        .deploy_workflow(
            NewWorkflowVersion {
                version,
                yaml: yaml.into(),
                definition: def,
                files,
            },
            deployed_at,
        )
        .await
        .expect("deploy");
    store
}

/// Ticks two schedulers alternately every `step` from `from` to `to` and
/// returns the fire instants of the runs, as recorded in their input.
async fn simulate(
    store: &Arc<dyn StateStore>,
    from: &str,
    to: &str,
    step_minutes: i64,
) -> Vec<String> {
    let a = Cron::new(store.clone(), "replica-a".into());
    let b = Cron::new(store.clone(), "replica-b".into());
    let mut now = at(from);
    let end = at(to);
    let mut created = 0;
    while now <= end {
        created += a.fire_due(now).await.expect("fire a").len();
        created += b.fire_due(now).await.expect("fire b").len();
        // The second scheduler, a little later, sees the same fires as done.
        created += b
            .fire_due(now + chrono::Duration::seconds(1))
            .await
            .expect("fire b")
            .len();
        now += chrono::Duration::minutes(step_minutes);
    }
    let runs = store.list_runs(Some("nightly"), 1000).await.expect("runs");
    assert_eq!(runs.len(), created, "every created run is listed once");
    let mut fires: Vec<String> = runs
        .iter()
        .map(|r| {
            assert_eq!(r.triggered_by, TriggerType::Schedule);
            r.input["scheduled_for"]
                .as_str()
                .expect("scheduled_for")
                .to_owned()
        })
        .collect();
    fires.sort();
    let unique: std::collections::BTreeSet<&String> = fires.iter().collect();
    assert_eq!(
        unique.len(),
        fires.len(),
        "a fire created two runs: {fires:?}"
    );
    fires
}

#[tokio::test]
async fn new_york_spring_forward_fires_once_a_day() {
    let yaml = "name: nightly\nschedule: \"30 2 * * *\"\ntimezone: America/New_York\ncatchup: all\ntasks:\n  - name: t\n    file: t.sh\n";
    let store = store_with(yaml, at("2026-03-06T00:00:00Z")).await;
    let fires = simulate(&store, "2026-03-06T00:00:00Z", "2026-03-10T00:00:00Z", 7).await;
    assert_eq!(
        fires,
        [
            "2026-03-06T07:30:00Z",
            "2026-03-07T07:30:00Z",
            // 02:30 does not exist on 03-08: it fires at 03:00 EDT.
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z",
        ]
    );
}

#[tokio::test]
async fn stockholm_fall_back_fires_the_repeated_hour_once() {
    let yaml = "name: nightly\nschedule: \"30 2 * * *\"\ntimezone: Europe/Stockholm\ncatchup: all\ntasks:\n  - name: t\n    file: t.sh\n";
    let store = store_with(yaml, at("2026-10-23T12:00:00Z")).await;
    let fires = simulate(&store, "2026-10-23T12:00:00Z", "2026-10-27T00:00:00Z", 5).await;
    assert_eq!(
        fires,
        [
            "2026-10-24T00:30:00Z",
            // 02:30 happens twice on 10-25; only the first one fires.
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ]
    );
}

#[tokio::test]
async fn hourly_new_york_fall_back_has_no_duplicate_and_latest_policy_catches_up_once() {
    let yaml = "name: nightly\nschedule: \"0 * * * *\"\ntimezone: America/New_York\ntasks:\n  - name: t\n    file: t.sh\n";
    let store = store_with(yaml, at("2026-11-01T03:30:00Z")).await;
    let fires = simulate(&store, "2026-11-01T03:30:00Z", "2026-11-01T08:30:00Z", 3).await;
    assert_eq!(
        fires,
        [
            "2026-11-01T04:00:00Z",
            "2026-11-01T05:00:00Z",
            "2026-11-01T07:00:00Z",
            "2026-11-01T08:00:00Z"
        ]
    );

    // Down for a day with `catchup: latest` (the default): one run, not 24.
    let cron = Cron::new(store.clone(), "replica-a".into());
    let created = cron
        .fire_due(at("2026-11-02T08:10:00Z"))
        .await
        .expect("fire");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].input["scheduled_for"], "2026-11-02T08:00:00Z");
}

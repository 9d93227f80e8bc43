//! How fast the mirror copies a finished fan-out into an object store: a
//! run of N one-attempt task runs is driven to success in an in-memory
//! SQLite state store, then the outbox is drained into the store at URL
//! (settings from the usual `AWS_*`, `GOOGLE_*`, `AZURE_*` and
//! `STORAGE_EMULATOR_HOST` variables), and the time is printed.
//!
//! ```text
//! scripts/emulators.sh sh -c 'STORAGE_EMULATOR_HOST=${ORK_TEST_GCS_ENDPOINT#http://} \
//!   cargo run -q -p ork-server --example mirror_throughput -- "gs://$ORK_TEST_GCS_BUCKET/t" 1000'
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use ork_domain::TriggerType;
use ork_domain::parse::{ParseOptions, parse_workflow};
use ork_server::objects::{self, Mirror};
use ork_server::state::{self, Limits, NewLogLine, NewRun, NewWorkflowVersion};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: mirror_throughput OBJECTS_URL [TASKS]")?;
    let n: u32 = args.next().map_or(Ok(1_000), |n| n.parse())?;
    let store = objects::open(&url, &objects::settings_from_vars(std::env::vars()))?;
    let state = state::open(
        "sqlite::memory:",
        Limits {
            max_fan_out: n.max(1),
            lease: Duration::from_secs(86_400),
        },
    )
    .await?;
    let yaml = format!("name: fan\ntasks:\n  - name: each\n    file: each.sh\n    parallel: {n}\n");
    let definition = parse_workflow(
        &yaml,
        &ParseOptions {
            source: "fan.yaml",
            files: None,
            ..Default::default()
        },
    )?;
    let files = BTreeMap::from([("each.sh".to_owned(), b"#!/bin/sh\ntrue\n".to_vec())]);
    state
        .deploy_workflow(
            NewWorkflowVersion {
                version: ork_server::hash::workflow_version(&yaml, &files),
                yaml: yaml.clone(),
                definition,
                files,
            },
            Utc::now(),
        )
        .await?;
    let run = state
        .create_run(
            NewRun {
                workflow: "fan".into(),
                input: json!({}),
                triggered_by: TriggerType::Manual,
                owner: "throughput".into(),
                labels: Default::default(),
            },
            Utc::now(),
        )
        .await?;
    let mut done = 0;
    while done < n {
        let claims = state
            .claim_ready("throughput", Utc::now(), 500, &Default::default())
            .await?;
        if claims.is_empty() {
            return Err("no task run left to claim".into());
        }
        for claim in claims {
            state.start_attempt(&claim.fence, Utc::now()).await?;
            let line = NewLogLine {
                stream: "stdout".into(),
                line: "done".into(),
                time: Utc::now(),
            };
            state.append_logs(&claim.fence, &[line]).await?;
            state
                .complete_attempt(&claim.fence, json!({"ok": true}), Utc::now())
                .await?;
            done += 1;
        }
    }

    let mirror = Mirror::new(state.clone(), store.clone());
    let started = Instant::now();
    let mut entries = 0;
    loop {
        let handled = mirror.drain_once().await?;
        if handled == 0 {
            break;
        }
        entries += handled;
    }
    let elapsed = started.elapsed();
    let read = objects::read_run(store.as_ref(), &run.id).await?;
    if read.status != "success" || read.tasks.len() != n as usize {
        return Err(format!("the mirrored run is incomplete: {} tasks", read.tasks.len()).into());
    }
    println!(
        "{url}: mirrored a {n}-task fan-out ({entries} outbox entries) in {:.2} s: {:.0} task runs/s",
        elapsed.as_secs_f64(),
        f64::from(n) / elapsed.as_secs_f64()
    );
    Ok(())
}

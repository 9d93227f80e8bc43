//! Group commit: many reports at once are committed in batches, and every
//! caller gets its own answer.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use ork_domain::parse::{ParseOptions, parse_workflow};
use ork_domain::{RunStatus, TriggerType};
use ork_server::reports::queue::{Queue, QueueOptions};
use ork_server::state::{self, Fence, Limits, NewRun, NewWorkflowVersion, Report};
use serde_json::json;

const FAN_IN: &str = "name: fanin\ntasks:\n  - name: many\n    file: a.sh\n    parallel: 200\n  - name: join\n    file: a.sh\n    depends_on: [many]\n";

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reports_are_committed_together_and_answered_alone() {
    let store = state::open("sqlite::memory:", Limits::default())
        .await
        .expect("open");
    let def = parse_workflow(FAN_IN, &ParseOptions::default()).expect("valid");
    let files = BTreeMap::from([("a.sh".to_owned(), b"#!/bin/sh\n".to_vec())]);
    store
        .deploy_workflow(
            NewWorkflowVersion {
                version: ork_server::hash::workflow_version(FAN_IN, &files),
                yaml: FAN_IN.to_owned(),
                definition: def,
                files,
            },
            Utc::now(),
        )
        .await
        .expect("deploy");
    let run = store
        .create_run(
            NewRun {
                workflow: "fanin".into(),
                input: json!({}),
                triggered_by: TriggerType::Manual,
                owner: "me".into(),
                labels: Default::default(),
            },
            Utc::now(),
        )
        .await
        .expect("run");
    let claims = store
        .claim_ready("me", Utc::now(), 500, &Default::default())
        .await
        .expect("claim");
    assert_eq!(claims.len(), 200);
    let queue = Queue::spawn(
        store.clone(),
        QueueOptions {
            max_batch: 64,
            linger: Duration::from_millis(1),
            committers: 1,
            checkers: 2,
        },
    );
    // Heartbeats of every attempt at once, read in concurrent batches:
    // each caller hears its own answer (alive, not cancelled).
    let beats = futures::future::join_all(claims.iter().map(|c| {
        let queue = queue.clone();
        let fence = c.fence.clone();
        async move { queue.heartbeat(fence).await }
    }))
    .await;
    assert!(beats.iter().all(|b| matches!(b, Ok(false))), "{beats:?}");
    let forged = queue
        .heartbeat(Fence {
            token: "guess".into(),
            ..claims[0].fence.clone()
        })
        .await;
    assert!(
        forged.is_err(),
        "a forged token must be refused: {forged:?}"
    );
    // Every report at once, each twice, plus one forged per instance.
    let mut calls = Vec::new();
    for c in &claims {
        for report in [
            (c.fence.clone(), Report::Complete(json!(1), vec![])),
            (c.fence.clone(), Report::Complete(json!(1), vec![])),
            (
                Fence {
                    token: "guess".into(),
                    ..c.fence.clone()
                },
                Report::Complete(json!(2), vec![]),
            ),
        ] {
            let queue = queue.clone();
            calls.push(tokio::spawn(async move {
                queue.report(report.0, report.1).await
            }));
        }
    }
    let mut ok = 0;
    let mut stale = 0;
    for call in calls {
        match call.await.expect("call") {
            Ok(()) => ok += 1,
            Err(state::Error::Stale { .. }) => stale += 1,
            Err(e) => panic!("unexpected answer: {e}"),
        }
    }
    assert_eq!((ok, stale), (400, 200));
    let join = store
        .claim_ready("me", Utc::now(), 10, &Default::default())
        .await
        .expect("claim");
    assert_eq!(join.len(), 1, "the last batch readied the join");
    queue
        .report(join[0].fence.clone(), Report::Complete(json!(null), vec![]))
        .await
        .expect("join");
    assert_eq!(
        store
            .get_run(&run.id)
            .await
            .expect("get")
            .expect("run")
            .status,
        RunStatus::Success
    );
    // A heartbeat through the queue hears the attempt is over.
    assert!(matches!(
        queue.heartbeat(join[0].fence.clone()).await,
        Err(state::Error::Stale { .. })
    ));
}

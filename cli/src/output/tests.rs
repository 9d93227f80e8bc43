//! Snapshots of what people see: `cargo test -p ork-cli` with
//! `UPDATE_EXPECT=1` rewrites them after an intended change.

use chrono::{DateTime, Utc};
use expect_test::expect;
use ork_proto::v1::{LogLine, PoolWorker, Run, TaskRun, Workflow, WorkflowInput, WorkflowTask};
use pbjson_types::Timestamp;
use serde_json::json;

use super::*;

const T0: i64 = 1_795_000_000; // 2026-11-18T...Z, any fixed instant will do

fn ts(offset_ms: i64) -> Option<Timestamp> {
    let ms = T0 * 1000 + offset_ms;
    Some(Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    })
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(T0 + 90, 0).unwrap()
}

fn value(v: serde_json::Value) -> Option<pbjson_types::Value> {
    Some(ork_proto::json::to_proto(&v))
}

fn task(name: &str, status: &str) -> TaskRun {
    TaskRun {
        id: format!("tr-{name}"),
        run_id: "0193f1a2-run".into(),
        name: name.into(),
        status: status.into(),
        executor: "subprocess".into(),
        ..Default::default()
    }
}

fn sample_run() -> Run {
    let extract = TaskRun {
        attempt: 1,
        started_at: ts(0),
        finished_at: ts(850),
        output: value(json!({"files": ["a.csv", "b.csv", "c.csv"], "count": 3})),
        ..task("extract", "success")
    };
    let process = |i: u32, status: &str| TaskRun {
        parallel_index: Some(i),
        parallel_count: Some(3),
        max_retries: 2,
        attempt: 1,
        started_at: ts(1_000),
        ..task("process", status)
    };
    let done = TaskRun {
        finished_at: ts(13_345),
        output: value(
            json!({"rows": 1200, "path": "out/a.parquet", "stats": {"min": 1, "max": 99.5}}),
        ),
        ..process(0, "success")
    };
    let failed = TaskRun {
        attempt: 3,
        finished_at: ts(75_000),
        error: "exit status 2\nTraceback (most recent call last):\n  ...".into(),
        ..process(1, "failed")
    };
    let running = process(2, "running");
    let load = TaskRun {
        pending_reason: "waiting on process".into(),
        ..task("load", "pending")
    };
    Run {
        id: "0193f1a2-run".into(),
        workflow: "etl".into(),
        workflow_version: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".into(),
        status: "running".into(),
        triggered_by: "manual".into(),
        input: value(json!({"date": "2026-11-26"})),
        created_at: ts(-200),
        started_at: ts(0),
        finished_at: None,
        tasks: vec![extract, done, failed, running, load],
        owner: "local".into(),
        labels: [("team".to_owned(), "data".to_owned())].into(),
    }
}

#[test]
fn run_status_table() {
    let actual = render_run(&sample_run(), now(), Style::PLAIN);
    expect![[r#"
        run:       0193f1a2-run
        workflow:  etl (version 9f86d081884c)
        status:    running
        trigger:   manual
        created:   2026-11-18T11:06:39Z
        started:   2026-11-18T11:06:40Z
        finished:  -
        duration:  1m30s
        labels:    team=data

        NAME        STATUS   ATTEMPT  DURATION  OUTPUT                                                        DETAIL
        extract     success  1        850ms     {"count":3,"files":["a.csv","b.csv","c.csv"]}
        process[0]  success  1/3      12.3s     {"path":"out/a.parquet","rows":1200,"stats":{"max":99.5,"mi…
        process[1]  failed   3/3      1m14s                                                                   exit status 2 …
        process[2]  running  1/3      1m29s
        load        pending  -        -                                                                       waiting on process
    "#]]
    .assert_eq(&actual);
}

#[test]
fn run_list_table() {
    let finished = Run {
        id: "0193f0ff-old".into(),
        status: "success".into(),
        triggered_by: "schedule".into(),
        finished_at: ts(4_000),
        tasks: vec![],
        ..sample_run()
    };
    let actual = render_run_list(&[sample_run(), finished], now(), Style::PLAIN);
    expect![[r#"
        ID            WORKFLOW  STATUS   TRIGGER   CREATED               DURATION
        0193f1a2-run  etl       running  manual    2026-11-18T11:06:39Z  1m30s
        0193f0ff-old  etl       success  schedule  2026-11-18T11:06:39Z  4.0s
    "#]]
    .assert_eq(&actual);
}

fn sample_workflow() -> Workflow {
    Workflow {
        name: "etl".into(),
        version: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b".into(),
        schedule: "0 2 * * *".into(),
        tasks: vec![
            WorkflowTask {
                name: "extract".into(),
                executor: "subprocess".into(),
                file: "scripts/extract.py".into(),
                timeout_seconds: 3600,
                ..Default::default()
            },
            WorkflowTask {
                name: "process".into(),
                executor: "subprocess".into(),
                depends_on: vec!["extract".into()],
                parallel: "for_each: extract.files".into(),
                retries: 2,
                timeout_seconds: 600,
                file: "scripts/process.py".into(),
                ..Default::default()
            },
        ],
        created_at: ts(-86_400_000),
        updated_at: ts(-3_600_000),
        definition_yaml: "name: etl\n".into(),
        inputs: vec![
            WorkflowInput {
                name: "date".into(),
                schema: value(json!({"type": "string"})),
                required: false,
                default_value: value(json!("2026-11-26")),
                description: "The day to load".into(),
            },
            WorkflowInput {
                name: "limit".into(),
                schema: value(json!({"type": ["integer", "null"], "minimum": 1})),
                required: true,
                default_value: None,
                description: String::new(),
            },
        ],
    }
}

#[test]
fn workflow_tables() {
    let mut unscheduled = sample_workflow();
    unscheduled.name = "adhoc".into();
    unscheduled.schedule.clear();
    unscheduled.tasks.truncate(1);
    let actual = render_workflow_list(&[sample_workflow(), unscheduled], Style::PLAIN);
    expect![[r#"
        NAME   VERSION       TASKS  SCHEDULE   UPDATED
        etl    9f86d081884c  2      0 2 * * *  2026-11-18T10:06:40Z
        adhoc  9f86d081884c  1      -          2026-11-18T10:06:40Z
    "#]]
    .assert_eq(&actual);

    let actual = render_workflow(&sample_workflow(), &[], now(), Style::PLAIN);
    expect![[r#"
        workflow:  etl
        version:   9f86d081884c7d659a2feaa0c55ad015a3bf4f1b
        schedule:  0 2 * * *
        created:   2026-11-17T11:06:40Z
        updated:   2026-11-18T10:06:40Z

        TASK     EXECUTOR    DEPENDS ON  PARALLEL                 RETRIES  TIMEOUT  FILE
        extract  subprocess  -           -                        0        3600s    scripts/extract.py
        process  subprocess  extract     for_each: extract.files  2        600s     scripts/process.py

        INPUT  TYPE             DEFAULT       DESCRIPTION
        date   string           "2026-11-26"  The day to load
        limit  integer or null  (required)

        no runs yet
    "#]]
    .assert_eq(&actual);
}

#[test]
fn log_lines() {
    let line = LogLine {
        task: "process".into(),
        parallel_index: Some(1),
        attempt: 2,
        stream: "stderr".into(),
        line: "retrying connection".into(),
        time: ts(0),
    };
    assert_eq!(
        render_log_line(&line, false, Style::PLAIN),
        "process[1] #2 | retrying connection"
    );
    assert_eq!(
        render_log_line(&line, true, Style::PLAIN),
        "retrying connection"
    );
    assert_eq!(
        render_log_line(&line, false, Style { color: true }),
        "\x1b[33mprocess[1] #2 |\x1b[0m retrying connection"
    );
}

#[test]
fn colour_does_not_shift_columns() {
    let plain = render_run_list(&[sample_run()], now(), Style::PLAIN);
    let coloured = render_run_list(&[sample_run()], now(), Style { color: true });
    let stripped = coloured
        .replace("\x1b[1m", "")
        .replace("\x1b[36m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
}

#[test]
fn run_json_keeps_proto_field_order_and_integers() {
    let mut run = sample_run();
    run.tasks.truncate(2);
    let actual = to_json_pretty(&run).unwrap();
    expect![[r#"
        {
          "id": "0193f1a2-run",
          "workflow": "etl",
          "workflow_version": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b",
          "status": "running",
          "triggered_by": "manual",
          "input": {
            "date": "2026-11-26"
          },
          "created_at": "2026-11-18T11:06:39.800+00:00",
          "started_at": "2026-11-18T11:06:40+00:00",
          "tasks": [
            {
              "id": "tr-extract",
              "run_id": "0193f1a2-run",
              "name": "extract",
              "status": "success",
              "attempt": 1,
              "executor": "subprocess",
              "output": {
                "count": 3,
                "files": [
                  "a.csv",
                  "b.csv",
                  "c.csv"
                ]
              },
              "started_at": "2026-11-18T11:06:40+00:00",
              "finished_at": "2026-11-18T11:06:40.850+00:00"
            },
            {
              "id": "tr-process",
              "run_id": "0193f1a2-run",
              "name": "process",
              "status": "success",
              "attempt": 1,
              "max_retries": 2,
              "parallel_index": 0,
              "parallel_count": 3,
              "executor": "subprocess",
              "output": {
                "path": "out/a.parquet",
                "rows": 1200,
                "stats": {
                  "max": 99.5,
                  "min": 1
                }
              },
              "started_at": "2026-11-18T11:06:41+00:00",
              "finished_at": "2026-11-18T11:06:53.345+00:00"
            }
          ],
          "owner": "local",
          "labels": {
            "team": "data"
          }
        }"#]]
    .assert_eq(&actual);
}

#[test]
fn run_status_lists_the_metrics_tasks_recorded() {
    let mut run = sample_run();
    run.tasks[0].attempts = vec![ork_proto::v1::Attempt {
        attempt: 1,
        status: "success".into(),
        metrics: [("rows".to_owned(), 1200.0), ("score".to_owned(), 0.93)]
            .into_iter()
            .collect(),
        ..Default::default()
    }];
    let actual = render_run(&run, now(), Style::PLAIN);
    let table = actual
        .split_once("\nTASK")
        .map(|(_, t)| format!("TASK{t}"))
        .unwrap_or_default();
    expect![[r#"
        TASK     ATTEMPT  METRICS
        extract  1        rows=1200 score=0.93
    "#]]
    .assert_eq(&table);
}

#[test]
fn the_detail_of_a_python_failure_is_its_exception_line() {
    let detail_of = |error: &str| {
        let task = TaskRun {
            error: error.into(),
            ..task("t", "failed")
        };
        detail(&task).text
    };
    // An SDK puts the exception first.
    assert_eq!(
        detail_of(
            "ValueError: bad input\n\nTraceback (most recent call last):\n  File \"t.py\", line 3\nValueError: bad input"
        ),
        "ValueError: bad input …"
    );
    // A plain script's stderr: the exception at the end of the traceback,
    // after what the supervisor said first.
    assert_eq!(
        detail_of(
            "exited with code 1: Traceback (most recent call last):\n  File \"t.py\", line 3, in <module>\n    main()\nKeyError: 'date'"
        ),
        "exited with code 1: KeyError: 'date' …"
    );
    // Chained exceptions: the last one is what ended the task.
    assert_eq!(
        detail_of(
            "Traceback (most recent call last):\n  File \"a\"\nKeyError: 'x'\n\nDuring handling of the above exception, another exception occurred:\n\nTraceback (most recent call last):\n  File \"b\"\nRuntimeError: lookup failed"
        ),
        "RuntimeError: lookup failed …"
    );
    assert_eq!(detail_of("timed out after 30s"), "timed out after 30s");
    assert_eq!(
        detail_of("Traceback (most recent call last):"),
        "Traceback (most recent call last):"
    );
}

#[test]
fn worker_list_table() {
    let workers = vec![
        PoolWorker {
            session_id: "1".into(),
            name: "host-a:4242".into(),
            handlers: vec!["build_report".into(), "count_words".into()],
            slots: 4,
            slots_in_use: 3,
            attached_at: ts(-60_000),
            last_seen_at: ts(88_000),
            server: "local".into(),
            ..Default::default()
        },
        PoolWorker {
            session_id: "2".into(),
            name: "host-b:7".into(),
            handlers: vec!["total".into()],
            slots: 1,
            draining: true,
            attached_at: ts(0),
            last_seen_at: ts(85_500),
            server: "local".into(),
            ..Default::default()
        },
    ];
    expect![[r#"
        NAME         HANDLERS                   SLOTS  LAST SEEN  ATTACHED              STATE
        host-a:4242  build_report, count_words  3/4    2.0s ago   2026-11-18T11:05:40Z  serving
        host-b:7     total                      0/1    4.5s ago   2026-11-18T11:06:40Z  draining
    "#]]
    .assert_eq(&render_worker_list(&workers, now(), Style::PLAIN));
    assert_eq!(
        render_worker_list(&[], now(), Style::PLAIN),
        "no pool workers are attached\n"
    );
}

#[test]
fn colour_follows_the_flag_then_no_color_then_clicolor_force() {
    use std::ffi::OsString;
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    let decide = |choice, terminal, pairs| Style::decide(choice, terminal, env(pairs)).color;
    assert!(decide(ColorChoice::Auto, true, &[]));
    assert!(!decide(ColorChoice::Auto, false, &[]));
    assert!(!decide(ColorChoice::Auto, true, &[("NO_COLOR", "1")]));
    assert!(
        decide(ColorChoice::Auto, true, &[("NO_COLOR", "")]),
        "empty NO_COLOR is unset"
    );
    assert!(decide(ColorChoice::Auto, false, &[("CLICOLOR_FORCE", "1")]));
    assert!(!decide(
        ColorChoice::Auto,
        false,
        &[("CLICOLOR_FORCE", "0")]
    ));
    assert!(!decide(
        ColorChoice::Auto,
        false,
        &[("NO_COLOR", "1"), ("CLICOLOR_FORCE", "1")]
    ));
    assert!(!decide(ColorChoice::Auto, true, &[("CLICOLOR", "0")]));
    assert!(decide(ColorChoice::Always, false, &[("NO_COLOR", "1")]));
    assert!(!decide(
        ColorChoice::Never,
        true,
        &[("CLICOLOR_FORCE", "1")]
    ));
}

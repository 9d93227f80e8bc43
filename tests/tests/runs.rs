//! A workflow runs end to end on the embedded default: real SQLite, real
//! `ork-worker` subprocesses, real gRPC on an ephemeral port.

use std::time::Duration;

use ork_tests::{TestServer, output, task, tasks};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn outputs_flow_through_a_chain_with_run_input() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = r#"
name: chain
tasks:
  - name: extract
    file: extract.sh
    input:
      date: "{{ run.input.date }}"
  - name: transform
    file: transform.py
    depends_on: [extract]
    input:
      rows: "{{ tasks.extract.output.rows }}"
      label: "day {{ run.input.date }} had {{ tasks.extract.output.rows }} rows"
"#;
    let extract = r#"#!/bin/bash
set -e
date=$(python3 -c 'import json,os; print(json.load(open(os.environ["ORK_INPUT"]))["date"])')
echo "extracting $date"
echo "{\"rows\": 42, \"date\": \"$date\"}" > "$ORK_OUTPUT"
"#;
    let transform = r#"
import json, os
inp = json.load(open(os.environ["ORK_INPUT"]))
print("got", inp)
json.dump({"doubled": inp["rows"] * 2, "label": inp["label"], "attempt": os.environ["ORK_ATTEMPT"]}, open(os.environ["ORK_OUTPUT"], "w"))
"#;
    c.deploy(
        yaml,
        &[("extract.sh", extract), ("transform.py", transform)],
    )
    .await
    .expect("deploy");
    let run = c.start_run("chain", json!({"date": "2026-11-26"})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        output(task(&run, "extract")),
        json!({"rows": 42, "date": "2026-11-26"})
    );
    assert_eq!(
        output(task(&run, "transform")),
        json!({"doubled": 84, "label": "day 2026-11-26 had 42 rows", "attempt": "1"})
    );
    assert_eq!(task(&run, "transform").attempt, 1);
    let logs = c.logs(&run.id, "extract").await;
    assert!(
        logs.iter().any(|l| l.line == "extracting 2026-11-26"),
        "{logs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn static_fan_out_and_join_sees_outputs_in_index_order() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = r#"
name: fan
tasks:
  - name: square
    file: square.sh
    parallel: 3
    input: { i: "{{ parallel.index }}", n: "{{ parallel.count }}" }
  - name: join
    file: join.py
    depends_on: [square]
    input: { all: "{{ tasks.square.outputs }}" }
"#;
    let square = r#"#!/bin/bash
i=$ORK_PARALLEL_INDEX
sleep 0.$((3 - i))
echo "{\"sq\": $((i * i)), \"count\": $ORK_PARALLEL_COUNT}" > "$ORK_OUTPUT"
"#;
    let join = r#"
import json, os
inp = json.load(open(os.environ["ORK_INPUT"]))
json.dump({"sum": sum(o["sq"] for o in inp["all"]), "all": inp["all"]}, open(os.environ["ORK_OUTPUT"], "w"))
"#;
    c.deploy(yaml, &[("square.sh", square), ("join.py", join)])
        .await
        .expect("deploy");
    let run = c.start_run("fan", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let squares = tasks(&run, "square");
    assert_eq!(squares.len(), 3);
    for (i, t) in squares.iter().enumerate() {
        assert_eq!(t.parallel_index, Some(i as u32));
        assert_eq!(t.parallel_count, Some(3));
        assert_eq!(output(t), json!({"sq": i * i, "count": 3}));
    }
    assert_eq!(
        output(task(&run, "join")),
        json!({"sum": 5, "all": [{"sq": 0, "count": 3}, {"sq": 1, "count": 3}, {"sq": 4, "count": 3}]})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_fails_the_run_skips_dependents_and_runs_on_failure_tasks() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = r#"
name: failing
tasks:
  - name: boom
    file: boom.sh
  - name: after
    file: ok.sh
    depends_on: [boom]
  - name: after_after
    file: ok.sh
    depends_on: [after]
  - name: cleanup
    file: ok.sh
    depends_on: [boom]
    on_failure: run
  - name: independent
    file: ok.sh
"#;
    let boom = "#!/bin/bash\necho 'about to fail' >&2\nexit 7\n";
    let ok = "#!/bin/bash\necho '{\"ok\": true}' > \"$ORK_OUTPUT\"\n";
    c.deploy(yaml, &[("boom.sh", boom), ("ok.sh", ok)])
        .await
        .expect("deploy");
    let run = c.start_run("failing", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    let boom = task(&run, "boom");
    assert_eq!(boom.status, "failed");
    assert!(boom.error.contains("exited with code 7"), "{}", boom.error);
    assert!(boom.error.contains("about to fail"), "{}", boom.error);
    assert_eq!(task(&run, "after").status, "skipped");
    assert!(
        task(&run, "after").error.contains("boom"),
        "{}",
        task(&run, "after").error
    );
    assert_eq!(task(&run, "after_after").status, "skipped");
    assert_eq!(task(&run, "cleanup").status, "success");
    assert_eq!(task(&run, "independent").status, "success");
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_make_new_attempts_and_stale_reports_are_rejected() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let spool = tempfile::tempdir().expect("spool");
    let yaml = r#"
name: flaky
tasks:
  - name: flaky
    file: flaky.sh
    retries: 2
    input: { spool: "{{ run.input.spool }}" }
"#;
    // Records every attempt's fence, fails the first two attempts.
    let flaky = r#"#!/bin/bash
spool=$(python3 -c 'import json,os; print(json.load(open(os.environ["ORK_INPUT"]))["spool"])')
echo "$ORK_TASK_RUN_ID $ORK_ATTEMPT $ORK_ATTEMPT_TOKEN" >> "$spool/fences"
if [ "$ORK_ATTEMPT" -lt 3 ]; then echo "attempt $ORK_ATTEMPT fails" >&2; exit 1; fi
echo '{"done": true}' > "$ORK_OUTPUT"
"#;
    c.deploy(yaml, &[("flaky.sh", flaky)])
        .await
        .expect("deploy");
    let run = c
        .start_run(
            "flaky",
            json!({"spool": spool.path().display().to_string()}),
        )
        .await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let t = task(&run, "flaky");
    assert_eq!(t.attempt, 3);
    assert_eq!(output(t), json!({"done": true}));

    let fences = std::fs::read_to_string(spool.path().join("fences")).expect("fences");
    let fences: Vec<Vec<String>> = fences
        .lines()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect();
    assert_eq!(fences.len(), 3);
    let tokens: std::collections::HashSet<&String> = fences.iter().map(|f| &f[2]).collect();
    assert_eq!(tokens.len(), 3, "each attempt has its own token");

    // A zombie of attempt 1 reports success: rejected, nothing changes.
    let zombie = ork_proto::v1::AttemptRef {
        task_run_id: fences[0][0].clone(),
        attempt: 1,
        token: fences[0][2].clone(),
    };
    let err = c
        .workers
        .complete_task(ork_proto::v1::CompleteTaskRequest {
            metrics: Default::default(),
            attempt: Some(zombie.clone()),
            output: Some(ork_proto::json::to_proto(&json!({"zombie": true}))),
        })
        .await
        .expect_err("stale report must be rejected");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("stale attempt"), "{}", err.message());
    // Even the current attempt's fence cannot report twice.
    let current = ork_proto::v1::AttemptRef {
        task_run_id: fences[2][0].clone(),
        attempt: 3,
        token: fences[2][2].clone(),
    };
    let err = c
        .workers
        .fail_task(ork_proto::v1::FailTaskRequest {
            metrics: Default::default(),
            attempt: Some(current),
            error: "late".into(),
            non_retryable: false,
        })
        .await
        .expect_err("a finished attempt takes no more reports");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    // A wrong token for the right attempt number is stale too.
    let forged = ork_proto::v1::AttemptRef {
        token: "forged".into(),
        ..zombie
    };
    let err = c
        .workers
        .heartbeat(ork_proto::v1::HeartbeatRequest {
            attempt: Some(forged),
        })
        .await
        .expect_err("forged token");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let after = c.get_run(&run.id).await;
    assert_eq!(after.status, "success");
    assert_eq!(output(task(&after, "flaky")), json!({"done": true}));
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_3_is_not_retried() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: permanent\ntasks:\n  - name: t\n    file: t.sh\n    retries: 5\n";
    c.deploy(
        yaml,
        &[("t.sh", "#!/bin/bash\necho 'bad input' >&2\nexit 3\n")],
    )
    .await
    .expect("deploy");
    let run = c.start_run("permanent", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "failed");
    assert_eq!(task(&run, "t").attempt, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_mirror_holds_spec_status_output_and_log_of_every_attempt() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml =
        "name: mirrored\ntasks:\n  - name: hello\n    file: hello.sh\n    input: { who: world }\n";
    let hello = "#!/bin/bash\necho 'hello from the task'\necho '{\"greeting\": \"hi\"}' > \"$ORK_OUTPUT\"\n";
    c.deploy(yaml, &[("hello.sh", hello)])
        .await
        .expect("deploy");
    let run = c.start_run("mirrored", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success");
    // Stopping flushes the outbox.
    let data = server.stop().await;
    // Read back through the library, which knows the bucket's layout (one
    // segment object per batch of a run's attempts).
    let url = format!("file://{}", data.path().join("objects").display());
    let store = ork_server::objects::open(&url, &ork_server::objects::Settings::new())
        .expect("open the mirror folder");
    let attempts = ork_server::objects::read_run_attempts(store.as_ref(), &run.id)
        .await
        .expect("attempts");
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    let attempt = &attempts[0];
    assert_eq!((attempt.task.as_str(), attempt.attempt), ("hello", 1));
    let spec = attempt.spec.as_ref().expect("spec");
    assert_eq!(spec.input, Some(json!({"who": "world"})));
    assert_eq!(attempt.status.as_ref().expect("status").status, "success");
    assert_eq!(attempt.output, Some(json!({"greeting": "hi"})));
    assert!(
        attempt
            .log
            .as_deref()
            .expect("log")
            .contains("hello from the task")
    );
    let run_doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            data.path()
                .join("objects/runs")
                .join(&run.id)
                .join("run.json"),
        )
        .expect("run.json"),
    )
    .expect("run json");
    assert_eq!(run_doc["status"], "success");
    assert!(data.path().join("objects/workflows/mirrored").is_dir());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failure_message_written_to_ork_error_is_the_task_error() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let yaml = "name: explained\ntasks:\n  - name: t\n    file: t.sh\n";
    let script = "#!/bin/bash\necho noise >&2\nprintf 'Traceback (most recent call last):\\n  line 1\\nValueError: bad row 7\\n' > \"$ORK_ERROR\"\nexit 1\n";
    c.deploy(yaml, &[("t.sh", script)]).await.expect("deploy");
    let run = c.start_run("explained", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    let t = task(&run, "t");
    assert_eq!(t.status, "failed");
    assert!(
        t.error
            .contains("Traceback (most recent call last):\n  line 1\nValueError: bad row 7"),
        "{}",
        t.error
    );
    assert!(
        !t.error.contains("noise"),
        "the error file replaces the stderr tail: {}",
        t.error
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn large_outputs_are_stored_by_reference_and_still_flow_downstream() {
    let data_dir = tempfile::tempdir().expect("data dir");
    let mut options = ork_tests::test_options(data_dir.path());
    options.inline_output_limit = 1024;
    let server = TestServer::start_with(data_dir, options).await;
    let mut c = server.clients().await;
    let yaml = "name: big\ntasks:\n  - name: big\n    file: big.py\n  - name: count\n    file: count.py\n    depends_on: [big]\n    input: { first: \"{{ tasks.big.output.rows.0 }}\", last: \"{{ tasks.big.output.rows.1999 }}\" }\n";
    let big = "import json, os\nrows = ['zebra-%05d' % i for i in range(2000)]\njson.dump({'rows': rows}, open(os.environ['ORK_OUTPUT'], 'w'))\n";
    let count = "import json, os\ni = json.load(open(os.environ['ORK_INPUT']))\njson.dump({'first': i['first'], 'last': i['last']}, open(os.environ['ORK_OUTPUT'], 'w'))\n";
    c.deploy(yaml, &[("big.py", big), ("count.py", count)])
        .await
        .expect("deploy");
    let run = c.start_run("big", json!({})).await;
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        output(task(&run, "count")),
        json!({"first": "zebra-00000", "last": "zebra-01999"})
    );
    let marker = output(task(&run, "big"));
    let key = marker["$ork_output_ref"]["key"]
        .as_str()
        .expect("a reference, not the content")
        .to_owned();
    assert!(marker["$ork_output_ref"]["bytes"].as_u64().expect("bytes") > 1024);

    let data = server.stop().await;
    let stored =
        std::fs::read_to_string(data.path().join("objects").join(&key)).expect("the object");
    assert!(stored.contains("zebra-01999"));
    let db = std::fs::read(data.path().join("ork.db")).expect("db");
    let wal = std::fs::read(data.path().join("ork.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(11).any(|w| w == b"zebra-01000"),
            "the large output's content is not in the database"
        );
    }
}

const WITH_INPUTS: &str = r#"
name: typed
inputs:
  date: { type: string, default: "2026-11-26", description: The day }
  limit: { type: integer, minimum: 1 }
  tags: { type: array, items: { type: string }, default: [] }
tasks:
  - name: echo
    command: [bash, -c, "cat \"$ORK_INPUT\" > \"$ORK_OUTPUT\""]
    input:
      date: "{{ run.input.date }}"
      limit: "{{ run.input.limit }}"
"#;

/// `inputs:` declares the run input: a run gets the defaults of what it
/// leaves out, and an input that does not match is refused, naming the
/// field, through gRPC and REST alike; the workflow shows its inputs.
#[tokio::test(flavor = "multi_thread")]
async fn declared_inputs_get_their_defaults_and_a_mismatch_names_the_field() {
    let server = TestServer::start().await;
    let mut c = server.clients().await;
    let workflow = c.deploy(WITH_INPUTS, &[]).await.expect("deploy");
    let names: Vec<&str> = workflow.inputs.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["date", "limit", "tags"], "in YAML order");
    assert!(!workflow.inputs[0].required && workflow.inputs[1].required);
    assert_eq!(
        ork_proto::json::from_proto_opt(workflow.inputs[0].default_value.as_ref()),
        json!("2026-11-26")
    );
    assert_eq!(workflow.inputs[0].description, "The day");

    let run = c.start_run("typed", json!({"limit": 5})).await;
    assert_eq!(
        ork_proto::json::from_proto_opt(run.input.as_ref()),
        json!({"date": "2026-11-26", "limit": 5, "tags": []})
    );
    let run = c.wait_run(&run.id, WAIT).await;
    assert_eq!(
        output(task(&run, "echo")),
        json!({"date": "2026-11-26", "limit": 5})
    );

    for (input, needle) in [
        (
            json!({}),
            "field `input.limit`: the input `limit` is required",
        ),
        (
            json!({"limit": "5"}),
            "field `input.limit`: expected integer, found string \"5\"",
        ),
        (
            json!({"limit": 0}),
            "field `input.limit`: expected at least 1",
        ),
        (
            json!({"limit": 1, "dat": "x"}),
            "field `input.dat`: workflow `typed` declares no input `dat` (did you mean `date`?)",
        ),
    ] {
        let err = c
            .runs
            .start_run(ork_proto::v1::StartRunRequest {
                workflow: "typed".into(),
                input: Some(ork_proto::json::to_proto(&input)),
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{input}");
        assert!(err.message().contains(needle), "{input}: {}", err.message());
    }
    let response = reqwest::Client::new()
        .post(format!("{}/workflows/typed/runs", server.url()))
        .json(&json!({"input": {"limit": "many"}}))
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body["details"][0]["field"], "input.limit", "{body:#}");
}

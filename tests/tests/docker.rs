//! End to end on a real Docker engine (started by `scripts/docker.sh`):
//! `executor: docker` tasks run in containers whose `ork-worker` calls back
//! over gRPC, next to subprocess tasks, with their limits enforced; cancel,
//! timeouts and server restarts leave nothing behind in the engine.

use std::time::{Duration, Instant};

use ork_proto::v1;
use ork_tests::containers::{DockerEngine, docker};
use ork_tests::{DevProcess, TestServer, free_port, output, task};
use serde_json::json;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

async fn server(engine: &DockerEngine) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let options = engine.options(data_dir.path());
    TestServer::start_with(data_dir, options).await
}

fn attempts(run: &v1::Run, name: &str) -> Vec<(String, String)> {
    task(run, name)
        .attempts
        .iter()
        .map(|a| (a.status.clone(), a.error.clone()))
        .collect()
}

const MIXED: &str = r#"
name: mixed
defaults:
  image: ork-test/busybox:1
tasks:
  - name: seed
    file: seed.sh
  - name: double
    executor: docker
    depends_on: [seed]
    input: { n: "{{ tasks.seed.output.n }}" }
    resources: { cpu: "500m", memory: "64Mi" }
    command:
      - sh
      - -c
      - |
        n=$(sed 's/[^0-9]//g' "$ORK_INPUT")
        mem=$(cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
        cpu=$(cut -d' ' -f1 /sys/fs/cgroup/cpu.max 2>/dev/null || cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)
        echo "doubling $n in a container"
        echo "{\"n\": $((n * 2)), \"memory\": $mem, \"cpu_quota\": $cpu}" > "$ORK_OUTPUT"
  - name: square
    executor: docker
    image: ork-test/python:1
    depends_on: [double]
    file: square.py
    input: { n: "{{ tasks.double.output.n }}" }
  - name: report
    depends_on: [square]
    file: report.sh
    input: { n: "{{ tasks.square.output.n }}" }
"#;

const SEED: &str = "#!/bin/bash\necho '{\"n\": 21}' > \"$ORK_OUTPUT\"\n";
const SQUARE: &str = "import json, os, sys\n\
n = json.load(open(os.environ['ORK_INPUT']))['n']\n\
print('squaring', n)\n\
json.dump({'n': n * n, 'python': sys.version.split()[0]}, open(os.environ['ORK_OUTPUT'], 'w'))\n";
const REPORT: &str = "#!/bin/bash\ncp \"$ORK_INPUT\" \"$ORK_OUTPUT\"\n";

#[tokio::test(flavor = "multi_thread")]
async fn subprocess_and_docker_tasks_pass_outputs_along_with_limits_enforced() {
    let Some(engine) = docker() else { return };
    let server = server(&engine).await;
    let mut c = server.clients().await;
    c.deploy(
        MIXED,
        &[
            ("seed.sh", SEED),
            ("square.py", SQUARE),
            ("report.sh", REPORT),
        ],
    )
    .await
    .expect("deploy");
    let run = c.start_run("mixed", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    let double = output(task(&run, "double"));
    assert_eq!(double["n"], json!(42));
    assert_eq!(
        double["memory"],
        json!(64 << 20),
        "the memory limit is the container's"
    );
    assert_eq!(
        double["cpu_quota"],
        json!(50_000),
        "500m is half of a 100ms period"
    );
    assert_eq!(output(task(&run, "square"))["n"], json!(42 * 42));
    assert_eq!(output(task(&run, "report")), json!({"n": 1764}));
    assert_eq!(task(&run, "double").executor, "docker");
    let logs: Vec<String> = c
        .logs(&run.id, "double")
        .await
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert!(
        logs.contains(&"doubling 21 in a container".to_owned()),
        "{logs:?}"
    );
    engine.wait_no_containers(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_3_is_not_retried_and_exit_code_1_is() {
    let Some(engine) = docker() else { return };
    let server = server(&engine).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: codes
defaults: { executor: docker, image: "ork-test/busybox:1" }
tasks:
  - name: fatal
    retries: 2
    command: [sh, -c, "echo 'bad input' >&2; exit 3"]
  - name: flaky
    retries: 1
    command: [sh, -c, 'if [ "$ORK_ATTEMPT" = 1 ]; then exit 1; fi; echo "{\"attempt\": $ORK_ATTEMPT}" > "$ORK_OUTPUT"']
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("codes", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    let fatal = attempts(&run, "fatal");
    assert_eq!(fatal.len(), 1, "{fatal:?}");
    assert_eq!(fatal[0].0, "failed");
    assert!(
        fatal[0].1.contains("exited with code 3: bad input"),
        "{fatal:?}"
    );
    let flaky = task(&run, "flaky");
    assert_eq!(flaky.status, "success");
    assert_eq!(flaky.attempts.len(), 2);
    assert_eq!(output(flaky), json!({"attempt": 2}));
    engine.wait_no_containers(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_over_its_memory_limit_is_oom_killed_and_retried_per_policy() {
    let Some(engine) = docker() else { return };
    let server = server(&engine).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: oom
tasks:
  - name: hog
    executor: docker
    image: ork-test/busybox:1
    resources: { memory: 32Mi }
    retries: 1
    command: [sh, -c, 'x=$(head -c 300000000 /dev/zero | tr "\0" a); echo survived']
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("oom", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "failed");
    let hog = attempts(&run, "hog");
    assert_eq!(hog.len(), 2, "one retry, as `retries: 1` says: {hog:?}");
    for (status, error) in &hog {
        assert_eq!(status, "failed");
        assert!(error.contains("OOMKilled"), "{error}");
    }
    engine.wait_no_containers(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_timeout_leave_no_container() {
    let Some(engine) = docker() else { return };
    let server = server(&engine).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: stop
defaults: { executor: docker, image: "ork-test/busybox:1" }
tasks:
  - name: sleeper
    command: [sh, -c, "echo sleeping; sleep 300"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    c.deploy(
        r#"
name: slow
defaults: { executor: docker, image: "ork-test/busybox:1" }
tasks:
  - name: sleeper
    timeout_seconds: 2
    command: [sh, -c, "sleep 300"]
"#,
        &[],
    )
    .await
    .expect("deploy");

    let cancelled = c.start_run("stop", json!({})).await;
    let timed_out = c.start_run("slow", json!({})).await;
    c.wait_until(&cancelled.id, RUN_TIMEOUT, "the sleeper to run", |r| {
        task(r, "sleeper").status == "running"
    })
    .await;
    assert_eq!(engine.containers_of_run(&cancelled.id).len(), 1);
    c.runs
        .cancel_run(v1::CancelRunRequest {
            id: cancelled.id.clone(),
        })
        .await
        .expect("cancel");
    let run = c.wait_run(&cancelled.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "cancelled");
    engine.wait_no_containers(&cancelled.id).await;

    let run = c.wait_run(&timed_out.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "failed");
    let error = &task(&run, "sleeper").error;
    assert!(error.contains("timed out"), "{error}");
    engine.wait_no_containers(&timed_out.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_fails_fast_with_the_engine_message() {
    let Some(engine) = docker() else { return };
    let server = server(&engine).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: noimage
defaults: { executor: docker }
tasks:
  - name: pulled
    image: ork-test/missing:1
    retries: 3
    command: ["true"]
  - name: local-only
    image: ork-test/missing:2
    image_pull_policy: never
    retries: 3
    command: ["true"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let started = Instant::now();
    let run = c.start_run("noimage", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a missing image is not retried: {:?}",
        started.elapsed()
    );
    assert_eq!(run.status, "failed");
    let pulled = attempts(&run, "pulled");
    assert_eq!(pulled.len(), 1, "not retried: {pulled:?}");
    // The engine's own words follow ours (here: no registry is reachable).
    assert!(
        pulled[0]
            .1
            .contains("cannot pull image `ork-test/missing:1`: ")
            && pulled[0].1.len() > 60,
        "{pulled:?}"
    );
    let never = attempts(&run, "local-only");
    assert_eq!(never.len(), 1);
    assert!(
        never[0].1.contains("`image_pull_policy` is `never`"),
        "{never:?}"
    );
    engine.wait_no_containers(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_adopts_running_containers_and_runs_nothing_twice() {
    let Some(engine) = docker() else { return };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let flags = engine.dev_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut dev = DevProcess::start(data_dir.path(), port, &flags).await;
    let mut c = ork_tests::Clients::connect(&dev.url).await;
    c.deploy(
        r#"
name: adopt
defaults: { executor: docker, image: "ork-test/busybox:1" }
tasks:
  - name: slow
    parallel: 2
    command: [sh, -c, 'echo "started $ORK_PARALLEL_INDEX"; sleep 6; echo "{\"i\": $ORK_PARALLEL_INDEX}" > "$ORK_OUTPUT"']
  - name: after
    depends_on: [slow]
    command: [sh, -c, 'echo after']
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("adopt", json!({})).await;
    c.wait_until(&run.id, RUN_TIMEOUT, "both containers to run", |r| {
        r.tasks
            .iter()
            .filter(|t| t.name == "slow" && t.status == "running")
            .count()
            == 2
    })
    .await;
    // SIGKILL: no clean shutdown, the containers keep running.
    dev.kill();
    let running = engine.cli(&[
        "ps",
        "--filter",
        &format!("label=ork/run-id={}", run.id),
        "--format",
        "{{.Names}}",
    ]);
    assert_eq!(running.lines().count(), 2, "{running}");

    let _dev = DevProcess::start(data_dir.path(), port, &flags).await;
    let mut c = ork_tests::Clients::connect(&_dev.url).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    for t in run.tasks.iter().filter(|t| t.name == "slow") {
        assert_eq!(t.attempts.len(), 1, "run once: {t:#?}");
    }
    let started = c
        .logs(&run.id, "slow")
        .await
        .into_iter()
        .filter(|l| l.line.starts_with("started"))
        .count();
    assert_eq!(started, 2, "each instance started once");
    engine.wait_no_containers(&run.id).await;
}

/// The ```yaml block under `## Containers` in README.md.
fn readme_container_yaml() -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("Containers\n"))
        .expect("README has a `## Containers` section");
    let start = section
        .find("```yaml\n")
        .expect("a ```yaml block under Containers")
        + 8;
    let len = section[start..].find("```").expect("the block ends");
    section[start..start + len].to_owned()
}

/// The README's container example, as written, with the file it names
/// (examples/containers/stats.py), on this engine.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_container_example_runs_as_written() {
    let Some(engine) = docker() else { return };
    let server = server(&engine).await;
    let mut c = server.clients().await;
    let yaml = readme_container_yaml();
    let stats = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/containers/stats.py"),
    )
    .expect("stats.py");
    c.deploy(&yaml, &[("stats.py", &stats)])
        .await
        .expect("deploy the README's YAML");
    let run = c.start_run("containers", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        output(task(&run, "stats")),
        json!({"sentence": "SHIP IT", "count": 2})
    );
    assert_eq!(task(&run, "shout").executor, "docker");
    assert_eq!(task(&run, "words").executor, "subprocess");
    engine.wait_no_containers(&run.id).await;
}

//! The `fargate` executor end to end against moto's ECS (started by
//! `scripts/emulators.sh`), with `ork dev` talking to it through the AWS SDK
//! exactly as it would to AWS.
//!
//! moto keeps ECS's books (task definitions, tasks, tags, overrides, stop
//! reasons) and moves tasks through ECS's states, but runs no container, and
//! a task it stops by itself reports exit code 0. So: these tests check the
//! task definitions and RunTask requests ork makes, and the lifecycle ork
//! reconciles (StopTask on cancel, timeout and completion, adoption after a
//! restart, a task that stops without a report); one test plays the
//! container of a task and runs its `ork-worker` on this machine with the
//! environment RunTask's overrides gave it, so a workflow with a Fargate
//! task runs end to end. How stopped tasks map to failures (out of memory,
//! pull errors, exit codes, Spot) is tested over DescribeTasks responses in
//! the server's unit tests (`executor/fargate/tests.rs`).
//!
//! moto's task lifecycle is one setting for the whole emulator (how many
//! DescribeTasks calls move a task one state on), so these tests hold a
//! lock while they run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use ork_tests::mirror::{emulator, unique};
use ork_tests::{Clients, DevProcess, free_port, task};
use serde_json::{Value, json};
use tokio::sync::{Mutex, MutexGuard};

const RUN_TIMEOUT: Duration = Duration::from_secs(120);
const REGION: &str = "us-east-1";
/// moto's tasks advance one state per this many DescribeTasks: never, here.
const STAY_RUNNING: u64 = 1_000_000_000;

static LIFECYCLE: Mutex<()> = Mutex::const_new(());

/// moto, spoken to over its JSON (ECS) and query (EC2) protocols; it does
/// not check signatures, only which service the credential scope names.
struct Moto {
    url: String,
    http: reqwest::Client,
}

impl Moto {
    fn new() -> Option<Self> {
        Some(Self {
            url: emulator("ORK_TEST_MOTO_ENDPOINT")?,
            http: reqwest::Client::new(),
        })
    }

    fn authorization(service: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential=testing/20260101/{REGION}/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        )
    }

    async fn ecs(&self, operation: &str, body: Value) -> Value {
        let response = self
            .http
            .post(&self.url)
            .header(
                "x-amz-target",
                format!("AmazonEC2ContainerServiceV20141113.{operation}"),
            )
            .header("content-type", "application/x-amz-json-1.1")
            .header("authorization", Self::authorization("ecs"))
            .body(body.to_string())
            .send()
            .await
            .expect("moto answers");
        let status = response.status();
        let text = response.text().await.expect("moto's body");
        assert!(status.is_success(), "{operation}: {status} {text}");
        serde_json::from_str(&text).expect("JSON from moto")
    }

    /// A subnet of moto's default VPC.
    async fn subnet(&self) -> String {
        let text = self
            .http
            .post(&self.url)
            .header("authorization", Self::authorization("ec2"))
            .form(&[("Action", "DescribeSubnets"), ("Version", "2016-11-15")])
            .send()
            .await
            .expect("moto answers")
            .text()
            .await
            .expect("moto's body");
        let start = text.find("<subnetId>").expect("a subnet") + "<subnetId>".len();
        let end = start + text[start..].find('<').expect("closing tag");
        text[start..end].to_owned()
    }

    /// How many DescribeTasks move a task one state on (RUNNING,
    /// DEACTIVATING, STOPPING, DEPROVISIONING, STOPPED).
    async fn set_task_lifecycle(&self, describes_per_state: u64) {
        let response = self
            .http
            .post(format!(
                "{}/moto-api/state-manager/set-transition",
                self.url
            ))
            .json(&json!({
                "model_name": "ecs::task",
                "transition": {"progression": "manual", "times": describes_per_state}
            }))
            .send()
            .await
            .expect("moto answers");
        assert!(response.status().is_success(), "{response:?}");
    }

    /// The tasks (any status) of a run, with their tags.
    async fn tasks_of_run(&self, cluster: &str, run_id: &str) -> Vec<Value> {
        let listed = self.ecs("ListTasks", json!({"cluster": cluster})).await;
        let arns = listed["taskArns"].as_array().cloned().unwrap_or_default();
        if arns.is_empty() {
            return Vec::new();
        }
        let described = self
            .ecs(
                "DescribeTasks",
                json!({"cluster": cluster, "tasks": arns, "include": ["TAGS"]}),
            )
            .await;
        described["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| tag(t, "ork/run-id").as_deref() == Some(run_id))
            .collect()
    }

    /// Waits for the run's task number `n` (1-based, in start order).
    async fn wait_task(&self, cluster: &str, run_id: &str, n: usize) -> Value {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let mut tasks = self.tasks_of_run(cluster, run_id).await;
            if tasks.len() >= n {
                tasks.sort_by_key(|t| tag(t, "ork/attempt").unwrap_or_default());
                return tasks.swap_remove(n - 1);
            }
            assert!(Instant::now() < deadline, "no task {n} for run {run_id}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the run's tasks are all STOPPED; returns them.
    async fn wait_all_stopped(&self, cluster: &str, run_id: &str) -> Vec<Value> {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let tasks = self.tasks_of_run(cluster, run_id).await;
            if !tasks.is_empty() && tasks.iter().all(|t| t["lastStatus"] == "STOPPED") {
                return tasks;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} left tasks running: {tasks:#?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn tag(task: &Value, key: &str) -> Option<String> {
    task["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .and_then(|t| t["value"].as_str().map(str::to_owned))
}

/// The environment RunTask's overrides gave the task container.
fn override_env(task: &Value) -> BTreeMap<String, String> {
    task["overrides"]["containerOverrides"]
        .as_array()
        .expect("container overrides")
        .iter()
        .filter(|o| o["name"] == "task")
        .flat_map(|o| o["environment"].as_array().cloned().unwrap_or_default())
        .map(|kv| {
            (
                kv["name"].as_str().unwrap_or_default().to_owned(),
                kv["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// A cluster of its own, an `ork dev` running `fargate` tasks in it, and
/// the lifecycle lock.
struct Setup {
    moto: Moto,
    cluster: String,
    flags: Vec<String>,
    _lock: MutexGuard<'static, ()>,
}

impl Setup {
    async fn new(describes_per_state: u64) -> Option<Self> {
        let moto = Moto::new()?;
        let lock = LIFECYCLE.lock().await;
        moto.set_task_lifecycle(describes_per_state).await;
        let cluster = format!("ork-{}", unique());
        moto.ecs("CreateCluster", json!({"clusterName": cluster}))
            .await;
        let subnet = moto.subnet().await;
        let flags = vec![
            "--fargate-cluster".into(),
            cluster.clone(),
            "--fargate-subnets".into(),
            subnet,
            "--fargate-region".into(),
            REGION.into(),
            "--fargate-endpoint-url".into(),
            moto.url.clone(),
            "--worker-image".into(),
            "ork-test/worker:1".into(),
            // The attempts here never heartbeat unless a test plays their
            // container: keep them until the executor reports.
            "--heartbeat-timeout".into(),
            "300".into(),
        ];
        Some(Self {
            moto,
            cluster,
            flags,
            _lock: lock,
        })
    }

    async fn dev(&self, data_dir: &Path, port: u16) -> DevProcess {
        let flags: Vec<&str> = self.flags.iter().map(String::as_str).collect();
        DevProcess::start_with_env(
            data_dir,
            port,
            &flags,
            &[
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
        .await
    }
}

/// Plays the container of a task: runs its entry point (`ork-worker`) here
/// with exactly the environment RunTask's overrides carried; only the work
/// directory is moved to a folder of this machine.
async fn run_task_here(task: &Value) -> std::process::ExitStatus {
    let work = tempfile::tempdir().expect("work dir");
    let mut worker = tokio::process::Command::new(ork_tests::binary("ork-worker"));
    worker
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (name, value) in override_env(task) {
        worker.env(name, value);
    }
    worker.env("ORK_WORK_DIR", work.path());
    tokio::time::timeout(RUN_TIMEOUT, worker.status())
        .await
        .expect("the worker ends")
        .expect("run ork-worker")
}

fn errors(run: &ork_proto::v1::Run, name: &str) -> Vec<String> {
    task(run, name)
        .attempts
        .iter()
        .map(|a| a.error.clone())
        .collect()
}

/// subprocess → fargate → subprocess, outputs flowing along: the Fargate
/// task's definition and RunTask request are checked, its container is
/// played here, and once the attempt is over ork stops the task.
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_with_a_fargate_task_runs_end_to_end() {
    let Some(setup) = Setup::new(STAY_RUNNING).await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let dev = setup.dev(data_dir.path(), free_port()).await;
    let mut c = Clients::connect(&dev.url).await;
    c.deploy(
        r#"
name: fg
tasks:
  - name: seed
    command: ["sh", "-c", "echo '{\"n\": 4}' > \"$ORK_OUTPUT\""]
  - name: in_fargate
    executor: fargate
    image: public.ecr.aws/docker/library/busybox:1.36
    resources: { cpu: "500m", memory: "1536Mi" }
    depends_on: [seed]
    input: { n: "{{ tasks.seed.output.n }}" }
    command: ["sh", "-c", "n=$(sed 's/[^0-9]//g' \"$ORK_INPUT\"); echo \"{\\\"n\\\": $((n * 10))}\" > \"$ORK_OUTPUT\""]
  - name: report
    depends_on: [in_fargate]
    input: { n: "{{ tasks.in_fargate.output.n }}" }
    command: ["sh", "-c", "cp \"$ORK_INPUT\" \"$ORK_OUTPUT\""]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("fg", json!({})).await;
    let ecs_task = setup.moto.wait_task(&setup.cluster, &run.id, 1).await;

    // What RunTask asked for.
    let task_run = task(&c.get_run(&run.id).await, "in_fargate").clone();
    assert_eq!(ecs_task["launchType"], "FARGATE");
    assert_eq!(
        tag(&ecs_task, "ork/task-run-id").as_deref(),
        Some(task_run.id.as_str())
    );
    assert_eq!(tag(&ecs_task, "ork/attempt").as_deref(), Some("1"));
    assert_eq!(tag(&ecs_task, "ork/task").as_deref(), Some("in_fargate"));
    assert_eq!(tag(&ecs_task, "ork/workflow").as_deref(), Some("fg"));
    let name = ecs_task["startedBy"].as_str().expect("startedBy");
    assert!(name.starts_with("ork-") && name.ends_with("-1"), "{name}");
    let env = override_env(&ecs_task);
    assert_eq!(env["ORK_SERVER"], dev.url);
    assert_eq!(env["ORK_TASK_RUN_ID"], task_run.id);
    assert_eq!(env["ORK_ATTEMPT"], "1");
    assert_eq!(env["ORK_WORK_DIR"], "/ork/work");
    assert!(env["ORK_TOKEN"].len() >= 32);

    // The task definition: the worker installed by a sidecar into a task
    // volume, the smallest Fargate size that holds the resources.
    let definition = setup
        .moto
        .ecs(
            "DescribeTaskDefinition",
            json!({"taskDefinition": ecs_task["taskDefinitionArn"]}),
        )
        .await;
    let definition = &definition["taskDefinition"];
    assert!(
        definition["family"]
            .as_str()
            .is_some_and(|f| f.starts_with("ork-")),
        "{definition:#}"
    );
    assert_eq!(definition["networkMode"], "awsvpc");
    assert_eq!(definition["requiresCompatibilities"], json!(["FARGATE"]));
    assert_eq!(
        (&definition["cpu"], &definition["memory"]),
        (&json!("512"), &json!("2048"))
    );
    assert_eq!(definition["volumes"][0]["name"], "ork");
    let containers = definition["containerDefinitions"]
        .as_array()
        .expect("containers");
    let main = containers
        .iter()
        .find(|c| c["name"] == "task")
        .expect("task container");
    assert_eq!(main["image"], "public.ecr.aws/docker/library/busybox:1.36");
    assert_eq!(main["essential"], true);
    assert_eq!(main["entryPoint"], json!(["/ork/bin/ork-worker"]));
    assert_eq!(
        main["dependsOn"],
        json!([{"containerName": "ork-worker", "condition": "SUCCESS"}])
    );
    assert_eq!(main["mountPoints"][0]["containerPath"], "/ork");
    let install = containers
        .iter()
        .find(|c| c["name"] == "ork-worker")
        .expect("installer");
    assert_eq!(install["image"], "ork-test/worker:1");
    assert_eq!(install["essential"], false);
    assert_eq!(
        install["command"],
        json!(["/ork-worker", "install", "/ork/bin/ork-worker"])
    );

    let status = run_task_here(&ecs_task).await;
    assert!(status.success(), "the task's worker: {status}");
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(
        ork_tests::output(task(&run, "in_fargate")),
        json!({"n": 40})
    );
    assert_eq!(ork_tests::output(task(&run, "report")), json!({"n": 40}));
    assert_eq!(task(&run, "in_fargate").executor, "fargate");
    assert_eq!(task(&run, "in_fargate").attempts.len(), 1);

    // moto's container never exits: ork stops what is left of an attempt
    // that is over.
    let stopped = setup.moto.wait_all_stopped(&setup.cluster, &run.id).await;
    assert!(
        stopped[0]["stoppedReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("ork: ")),
        "{stopped:#?}"
    );

    // The same content reuses its task definition.
    let run2 = c.start_run("fg", json!({})).await;
    let second = setup.moto.wait_task(&setup.cluster, &run2.id, 1).await;
    assert_eq!(second["taskDefinitionArn"], ecs_task["taskDefinitionArn"]);
    c.runs
        .cancel_run(ork_proto::v1::CancelRunRequest {
            id: run2.id.clone(),
        })
        .await
        .expect("cancel");
    setup.moto.wait_all_stopped(&setup.cluster, &run2.id).await;
}

/// moto stops a task by itself after a few DescribeTasks, reporting exit
/// code 0, as a container that exits without its worker reporting would:
/// the attempt fails as a lost worker, with ECS's account of it, and is
/// retried as a new task.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_that_stops_without_a_report_fails_its_attempt_and_is_retried() {
    let Some(setup) = Setup::new(1).await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let dev = setup.dev(data_dir.path(), free_port()).await;
    let mut c = Clients::connect(&dev.url).await;
    c.deploy(
        "name: fgexit\ntasks:\n  - name: quiet\n    executor: fargate\n    image: busybox:1\n    command: [\"true\"]\n",
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("fgexit", json!({})).await;
    let run = c
        .wait_until(&run.id, RUN_TIMEOUT, "a second attempt", |r| {
            task(r, "quiet").attempts.len() >= 2
        })
        .await;
    assert_eq!(
        errors(&run, "quiet")[0],
        "the container exited with code 0 before its worker reported a result"
    );
    setup.moto.wait_task(&setup.cluster, &run.id, 2).await;
    c.runs
        .cancel_run(ork_proto::v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel");
    assert_eq!(c.wait_run(&run.id, RUN_TIMEOUT).await.status, "cancelled");
    setup.moto.wait_all_stopped(&setup.cluster, &run.id).await;
}

/// A timeout and a cancel both stop the task, with ork's reason.
#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_cancels_stop_the_task() {
    let Some(setup) = Setup::new(STAY_RUNNING).await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let dev = setup.dev(data_dir.path(), free_port()).await;
    let mut c = Clients::connect(&dev.url).await;
    c.deploy(
        "name: fgslow\ntasks:\n  - name: slow\n    executor: fargate\n    image: busybox:1\n    timeout_seconds: 2\n    command: [sleep, \"300\"]\n",
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("fgslow", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "failed");
    assert!(task(&run, "slow").error.contains("timed out"), "{run:#?}");
    let stopped = setup.moto.wait_all_stopped(&setup.cluster, &run.id).await;
    assert!(
        stopped[0]["stoppedReason"]
            .as_str()
            .is_some_and(|r| r.starts_with("ork: "))
    );

    c.deploy(
        "name: fgcancel\ntasks:\n  - name: long\n    executor: fargate\n    image: busybox:1\n    command: [sleep, \"300\"]\n",
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("fgcancel", json!({})).await;
    setup.moto.wait_task(&setup.cluster, &run.id, 1).await;
    c.runs
        .cancel_run(ork_proto::v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel");
    assert_eq!(c.wait_run(&run.id, RUN_TIMEOUT).await.status, "cancelled");
    setup.moto.wait_all_stopped(&setup.cluster, &run.id).await;
}

/// A server that restarts finds its tasks by their tags and watches them
/// again: a task that stopped while no server was there fails its attempt
/// with ECS's reason, long before the attempt's heartbeat timeout.
#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_adopts_its_tasks() {
    let Some(setup) = Setup::new(STAY_RUNNING).await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let mut dev = setup.dev(data_dir.path(), port).await;
    let mut c = Clients::connect(&dev.url).await;
    c.deploy(
        "name: fgadopt\ntasks:\n  - name: late\n    executor: fargate\n    image: busybox:1\n    command: [sleep, \"300\"]\n",
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("fgadopt", json!({})).await;
    let ecs_task = setup.moto.wait_task(&setup.cluster, &run.id, 1).await;
    dev.kill();

    // The container dies while no server watches.
    setup
        .moto
        .ecs(
            "StopTask",
            json!({
                "cluster": setup.cluster,
                "task": ecs_task["taskArn"],
                "reason": "Essential container in task exited"
            }),
        )
        .await;

    let dev = setup.dev(data_dir.path(), port).await;
    let mut c = Clients::connect(&dev.url).await;
    let run = c
        .wait_until(&run.id, RUN_TIMEOUT, "the first attempt to fail", |r| {
            !task(r, "late").attempts.is_empty() && !task(r, "late").attempts[0].error.is_empty()
        })
        .await;
    assert_eq!(
        errors(&run, "late")[0],
        "the container exited with code 0 before its worker reported a result: Essential container in task exited"
    );
    c.runs
        .cancel_run(ork_proto::v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel");
    assert_eq!(c.wait_run(&run.id, RUN_TIMEOUT).await.status, "cancelled");
    setup.moto.wait_all_stopped(&setup.cluster, &run.id).await;
}

/// Without `--fargate-cluster`, deploying a `fargate` task says what to pass.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_fargate_options_refuses_fargate_tasks_at_deploy() {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let dev = DevProcess::start(data_dir.path(), free_port(), &[]).await;
    let mut c = Clients::connect(&dev.url).await;
    let err = c
        .deploy(
            "name: fgnone\ntasks:\n  - name: t\n    executor: fargate\n    image: busybox:1\n    command: [\"true\"]\n",
            &[],
        )
        .await
        .expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        err.message(),
        "test.yaml: task `t`, field `executor`: this server cannot run `fargate` tasks: start the server with \
         --fargate-cluster NAME and --fargate-subnets ID[,ID...] (AWS credentials and region come from the usual AWS environment)"
    );
}

/// A worker whose server died retries its report for the client's retry
/// window (10 minutes); SIGTERM (what ECS's StopTask sends) ends it at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_orphaned_worker_ends_promptly_on_sigterm() {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let Some(setup) = Setup::new(STAY_RUNNING).await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut dev = setup.dev(data_dir.path(), free_port()).await;
    let mut c = Clients::connect(&dev.url).await;
    // The task ends once the test lets it (by creating `go`), leaving a
    // mark that it did.
    let marks = tempfile::tempdir().expect("marks dir");
    let (go, done) = (marks.path().join("go"), marks.path().join("done"));
    c.deploy(
        &format!(
            "name: fgorphan\ntasks:\n  - name: t\n    executor: fargate\n    image: busybox:1\n    \
             command: [sh, -c, \"while [ ! -e {go} ]; do sleep 0.1; done; touch {done}\"]\n",
            go = go.display(),
            done = done.display()
        ),
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("fgorphan", json!({})).await;
    let ecs_task = setup.moto.wait_task(&setup.cluster, &run.id, 1).await;

    let work = tempfile::tempdir().expect("work dir");
    let mut worker = tokio::process::Command::new(ork_tests::binary("ork-worker"));
    worker
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        // A failing test leaves no worker retrying behind.
        .kill_on_drop(true);
    for (name, value) in override_env(&ecs_task) {
        worker.env(name, value);
    }
    worker.env("ORK_WORK_DIR", work.path());
    let mut worker = worker.spawn().expect("run ork-worker");
    let mut lines = BufReader::new(worker.stderr.take().expect("stderr")).lines();
    let wait_line = async |lines: &mut tokio::io::Lines<_>, what: &str| {
        let found = tokio::time::timeout(RUN_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(what) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "the worker logs `{what}`");
    };
    wait_line(&mut lines, "task started").await;
    // The server dies while the task runs; the worker then cannot report.
    dev.kill();
    std::fs::write(&go, "").expect("let the task end");
    let deadline = Instant::now() + RUN_TIMEOUT;
    while !done.exists() {
        assert!(Instant::now() < deadline, "the task never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = worker.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exited = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    assert!(exited.is_ok(), "the worker ignored SIGTERM");
}

//! End to end against a real Kubernetes API server, controller manager and
//! scheduler (started by `scripts/kubernetes.sh`), with kwok playing the
//! node: the pods are scheduled and move through their phases, but no
//! container runs, so these tests check the Jobs and pods ork writes, their
//! lifecycle and the reconciliation of what the cluster reports. The worker
//! calling back from inside a container is tested on Docker (`docker.rs`);
//! here, one test plays the kubelet for a pod and runs its `ork-worker` on
//! this machine with the environment the Job gave it, so a workflow mixing
//! subprocess, Docker and Kubernetes tasks runs end to end.

use std::time::{Duration, Instant};

use ork_proto::v1;
use ork_tests::containers::{KubeCluster, kubernetes};
use ork_tests::{Clients, DevProcess, TestServer, free_port, task};
use serde_json::json;

const RUN_TIMEOUT: Duration = Duration::from_secs(120);

async fn server(cluster: &KubeCluster) -> TestServer {
    let data_dir = tempfile::tempdir().expect("temp dir");
    let options = cluster.options(data_dir.path());
    TestServer::start_with(data_dir, options).await
}

fn errors(run: &v1::Run, name: &str) -> Vec<String> {
    task(run, name)
        .attempts
        .iter()
        .map(|a| a.error.clone())
        .collect()
}

/// Waits until the run's (one) pod is Running on the kwok node.
async fn wait_pod_running(cluster: &KubeCluster, run_id: &str) {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        let pods = cluster.pods_of_run(run_id).await;
        let running = pods
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        if running {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no running pod for run {run_id}: {pods:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_becomes_a_job_with_its_image_limits_and_worker_and_cancel_removes_it() {
    let Some(cluster) = kubernetes().await else {
        return;
    };
    let server = server(&cluster).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: kjob
defaults:
  executor: kubernetes
  resources: { cpu: "250m", memory: "64Mi" }
tasks:
  - name: work
    image: ork-test/busybox:1
    image_pull_policy: never
    timeout_seconds: 600
    command: [sh, -c, "sleep 300"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("kjob", json!({})).await;
    wait_pod_running(&cluster, &run.id).await;
    let jobs = cluster.jobs_of_run(&run.id).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    let labels = job.metadata.labels.clone().unwrap_or_default();
    let task_run = task(&c.get_run(&run.id).await, "work").clone();
    assert_eq!(labels["ork/task-run-id"], task_run.id);
    assert_eq!(labels["ork/attempt"], "1");
    assert_eq!(labels["ork/task"], "work");
    assert_eq!(labels["ork/workflow"], "kjob");
    let spec = job.spec.as_ref().expect("job spec");
    assert_eq!(spec.backoff_limit, Some(0), "ork retries, not the Job");
    assert_eq!(
        spec.active_deadline_seconds,
        Some(660),
        "timeout + margin as a backstop"
    );
    let pod = spec.template.spec.as_ref().expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let init = &pod.init_containers.as_ref().expect("init containers")[0];
    assert_eq!(init.image.as_deref(), Some("ork-test/worker:1"));
    assert_eq!(
        init.command.clone().unwrap_or_default(),
        ["/ork-worker", "install", "/ork/bin/ork-worker"]
    );
    let main = &pod.containers[0];
    assert_eq!(main.image.as_deref(), Some("ork-test/busybox:1"));
    assert_eq!(main.image_pull_policy.as_deref(), Some("Never"));
    assert_eq!(
        main.command.clone().unwrap_or_default(),
        ["/ork/bin/ork-worker"]
    );
    let env: std::collections::BTreeMap<String, String> = main
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap_or_default()))
        .collect();
    assert_eq!(env["ORK_SERVER"], server.url());
    assert_eq!(env["ORK_TASK_RUN_ID"], task_run.id);
    assert_eq!(env["ORK_ATTEMPT"], "1");
    assert!(env["ORK_TOKEN"].len() >= 32);
    let resources = main.resources.as_ref().expect("resources");
    for amounts in [&resources.requests, &resources.limits] {
        let amounts = amounts.as_ref().expect("amounts");
        assert_eq!(amounts["cpu"].0, "250m");
        assert_eq!(amounts["memory"].0, "64Mi");
    }
    let pods = cluster.pods_of_run(&run.id).await;
    assert_eq!(
        pods[0].spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some("ork-kwok-node"),
        "scheduled by the real scheduler"
    );

    c.runs
        .cancel_run(v1::CancelRunRequest { id: run.id.clone() })
        .await
        .expect("cancel");
    assert_eq!(c.wait_run(&run.id, RUN_TIMEOUT).await.status, "cancelled");
    cluster.wait_nothing_left(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_deletes_the_job() {
    let Some(cluster) = kubernetes().await else {
        return;
    };
    let server = server(&cluster).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: ktimeout
tasks:
  - name: slow
    executor: kubernetes
    image: ork-test/busybox:1
    timeout_seconds: 2
    command: [sh, -c, "sleep 300"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("ktimeout", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "failed");
    assert!(task(&run, "slow").error.contains("timed out"), "{run:#?}");
    cluster.wait_nothing_left(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oom_killed_pod_fails_its_attempt_and_is_retried_per_policy() {
    let Some(cluster) = kubernetes().await else {
        return;
    };
    let server = server(&cluster).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: koom
tasks:
  - name: hog
    executor: kubernetes
    image: ork-test/oom:1
    resources: { memory: "32Mi" }
    retries: 1
    command: ["hog"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("koom", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "failed");
    let errors = errors(&run, "hog");
    assert_eq!(errors.len(), 2, "{errors:?}");
    for error in &errors {
        assert_eq!(
            error,
            "OOMKilled: the container ran out of its memory limit of 32Mi and was killed (exit code 137)"
        );
    }
    cluster.wait_nothing_left(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_that_cannot_be_pulled_fails_fast_with_the_clusters_message() {
    let Some(cluster) = kubernetes().await else {
        return;
    };
    let server = server(&cluster).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: kpull
tasks:
  - name: nothing
    executor: kubernetes
    image: ork-test/missing:1
    retries: 3
    command: ["true"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let started = Instant::now();
    let run = c.start_run("kpull", json!({})).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(run.status, "failed");
    let errors = errors(&run, "nothing");
    assert_eq!(errors.len(), 1, "not retried: {errors:?}");
    assert_eq!(
        errors[0],
        "cannot pull the task image `ork-test/missing:1`: ErrImagePull: failed to pull and unpack image \"ork-test/missing:1\": not found"
    );
    cluster.wait_nothing_left(&run.id).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_adopts_its_jobs() {
    let Some(cluster) = kubernetes().await else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let flags = cluster.dev_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut dev = DevProcess::start(data_dir.path(), port, &flags).await;
    let mut c = Clients::connect(&dev.url).await;
    c.deploy(
        r#"
name: kadopt
tasks:
  - name: late
    executor: kubernetes
    image: ork-test/oom-late:1
    command: ["hog"]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("kadopt", json!({})).await;
    wait_pod_running(&cluster, &run.id).await;
    dev.kill();
    assert_eq!(
        cluster.jobs_of_run(&run.id).await.len(),
        1,
        "the Job outlives the server"
    );

    // The pod is OOM-killed 8 s after it started, well before the attempt's
    // heartbeat timeout (30 s): only a server that adopted the Job can tell.
    let dev = DevProcess::start(data_dir.path(), port, &flags).await;
    let mut c = Clients::connect(&dev.url).await;
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "failed");
    let errors = errors(&run, "late");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("OOMKilled"), "{errors:?}");
    cluster.wait_nothing_left(&run.id).await;
}

/// Plays the kubelet for a run's pod that kwok reports Running: runs its
/// task container's command (`ork-worker`) here with the container's
/// environment as the Job wrote it, so the worker calls back with the
/// attempt's credentials exactly as it would in a pod. Only the work
/// directory is moved to a folder of this machine. Returns the worker's
/// exit status.
async fn run_pod_here(cluster: &KubeCluster, run_id: &str) -> std::process::ExitStatus {
    wait_pod_running(cluster, run_id).await;
    let pods = cluster.pods_of_run(run_id).await;
    let spec = pods[0].spec.as_ref().expect("pod spec");
    let main = &spec.containers[0];
    assert_eq!(
        main.command.clone().unwrap_or_default(),
        ["/ork/bin/ork-worker"]
    );
    let work = tempfile::tempdir().expect("work dir");
    let mut worker = tokio::process::Command::new(ork_tests::binary("ork-worker"));
    worker
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for var in main.env.clone().unwrap_or_default() {
        worker.env(&var.name, var.value.unwrap_or_default());
    }
    worker.env("ORK_WORK_DIR", work.path());
    tokio::time::timeout(RUN_TIMEOUT, worker.status())
        .await
        .expect("the worker ends")
        .expect("run ork-worker")
}

/// subprocess → docker → kubernetes → subprocess, outputs flowing along.
/// The Kubernetes task's pod is run by [`run_pod_here`] (kwok runs no
/// containers); the rest runs for real.
#[tokio::test(flavor = "multi_thread")]
async fn a_workflow_mixing_subprocess_docker_and_kubernetes_tasks_passes_outputs_along() {
    let Some(cluster) = kubernetes().await else {
        return;
    };
    let Some(engine) = ork_tests::containers::docker() else {
        return;
    };
    let data_dir = tempfile::tempdir().expect("temp dir");
    let mut options = cluster.options(data_dir.path());
    options.containers.docker_host = Some(engine.host.clone());
    options.containers.worker_binary = Some(engine.worker.clone());
    let server = TestServer::start_with(data_dir, options).await;
    let mut c = server.clients().await;
    c.deploy(
        r#"
name: mixed3
defaults:
  image: ork-test/busybox:1
  resources: { cpu: "250m", memory: "64Mi" }
tasks:
  - name: seed
    command: ["sh", "-c", "echo '{\"n\": 5}' > \"$ORK_OUTPUT\""]
  - name: in_docker
    executor: docker
    depends_on: [seed]
    input: { n: "{{ tasks.seed.output.n }}" }
    command: ["sh", "-c", "n=$(sed 's/[^0-9]//g' \"$ORK_INPUT\"); echo \"{\\\"n\\\": $((n + 1))}\" > \"$ORK_OUTPUT\""]
  - name: in_kubernetes
    executor: kubernetes
    image_pull_policy: never
    depends_on: [in_docker]
    input: { n: "{{ tasks.in_docker.output.n }}" }
    command: ["sh", "-c", "n=$(sed 's/[^0-9]//g' \"$ORK_INPUT\"); echo \"{\\\"n\\\": $((n * 10))}\" > \"$ORK_OUTPUT\""]
  - name: report
    depends_on: [in_kubernetes]
    input: { n: "{{ tasks.in_kubernetes.output.n }}" }
    command: ["sh", "-c", "cp \"$ORK_INPUT\" \"$ORK_OUTPUT\""]
"#,
        &[],
    )
    .await
    .expect("deploy");
    let run = c.start_run("mixed3", json!({})).await;
    let status = run_pod_here(&cluster, &run.id).await;
    assert!(status.success(), "the pod's worker: {status}");
    let run = c.wait_run(&run.id, RUN_TIMEOUT).await;
    assert_eq!(run.status, "success", "{run:#?}");
    assert_eq!(ork_tests::output(task(&run, "in_docker")), json!({"n": 6}));
    assert_eq!(
        ork_tests::output(task(&run, "in_kubernetes")),
        json!({"n": 60})
    );
    assert_eq!(ork_tests::output(task(&run, "report")), json!({"n": 60}));
    for (name, executor) in [
        ("seed", "subprocess"),
        ("in_docker", "docker"),
        ("in_kubernetes", "kubernetes"),
    ] {
        assert_eq!(task(&run, name).executor, executor);
        assert_eq!(task(&run, name).attempts.len(), 1, "{name} ran once");
    }
    cluster.wait_nothing_left(&run.id).await;
    engine.wait_no_containers(&run.id).await;
}

//! Support for the container executor tests: the engines started by
//! `scripts/docker.sh` and `scripts/kubernetes.sh`, read from the
//! environment, and what is left in them, read with their own CLIs.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The Docker engine of `scripts/docker.sh`.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    /// `DOCKER_HOST`.
    pub host: String,
    /// The statically linked `ork-worker` mounted into containers.
    pub worker: PathBuf,
}

/// `None` (the test is skipped loudly, or fails when `CI` is set) when the
/// tests do not run under `scripts/docker.sh`.
pub fn docker() -> Option<DockerEngine> {
    let host = required("DOCKER_HOST", "scripts/docker.sh")?;
    let worker = required("ORK_TEST_CONTAINER_WORKER", "scripts/docker.sh")?;
    Some(DockerEngine {
        host,
        worker: PathBuf::from(worker),
    })
}

pub(crate) fn required(variable: &str, script: &str) -> Option<String> {
    if let Some(value) = std::env::var(variable).ok().filter(|v| !v.is_empty()) {
        return Some(value);
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    assert!(
        !ci,
        "{variable} is not set; in CI the tests run under {script}"
    );
    let _ = writeln!(
        std::io::stderr(),
        "WARNING: skipping a container end-to-end test: {variable} is not set (run it under {script})"
    );
    None
}

impl DockerEngine {
    /// Server options that run `docker` tasks on this engine.
    pub fn options(&self, data_dir: &std::path::Path) -> ork_server::ServerOptions {
        let mut options = crate::test_options(data_dir);
        options.containers.docker_host = Some(self.host.clone());
        options.containers.worker_binary = Some(self.worker.clone());
        options
    }

    /// `ork dev` flags that do the same.
    pub fn dev_flags(&self) -> Vec<String> {
        vec![
            "--docker-host".into(),
            self.host.clone(),
            "--container-worker".into(),
            self.worker.display().to_string(),
        ]
    }

    /// The `docker` CLI against this engine.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &self.host)
            .output()
            .expect("run docker");
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Names of the containers (running or not) of a run.
    pub fn containers_of_run(&self, run_id: &str) -> Vec<String> {
        let filter = format!("label=ork/run-id={run_id}");
        self.cli(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the engine holds no container of the run.
    pub async fn wait_no_containers(&self, run_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = self.containers_of_run(run_id);
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containers of run {run_id} still in the engine: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The cluster of `scripts/kubernetes.sh` (kwok plays its node).
#[derive(Clone)]
pub struct KubeCluster {
    pub kubeconfig: PathBuf,
    pub client: kube::Client,
}

/// `None` (skipped loudly, or failing in CI) outside `scripts/kubernetes.sh`.
pub async fn kubernetes() -> Option<KubeCluster> {
    let kubeconfig = required("KUBECONFIG", "scripts/kubernetes.sh")?;
    required("ORK_TEST_KUBE_NODE", "scripts/kubernetes.sh")?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let config = kube::config::Kubeconfig::read_from(&kubeconfig).expect("read KUBECONFIG");
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .expect("kubeconfig");
    let client = kube::Client::try_from(config).expect("kube client");
    Some(KubeCluster {
        kubeconfig: PathBuf::from(kubeconfig),
        client,
    })
}

impl KubeCluster {
    /// Server options that run `kubernetes` tasks in this cluster.
    pub fn options(&self, data_dir: &std::path::Path) -> ork_server::ServerOptions {
        let mut options = crate::test_options(data_dir);
        options.containers.kubeconfig = Some(self.kubeconfig.clone());
        options.containers.worker_image = "ork-test/worker:1".to_owned();
        options
    }

    /// `ork dev` flags that do the same.
    pub fn dev_flags(&self) -> Vec<String> {
        vec![
            "--kubeconfig".into(),
            self.kubeconfig.display().to_string(),
            "--worker-image".into(),
            "ork-test/worker:1".into(),
        ]
    }

    fn selector(run_id: &str) -> kube::api::ListParams {
        kube::api::ListParams::default().labels(&format!("ork/run-id={run_id}"))
    }

    /// The Jobs of a run.
    pub async fn jobs_of_run(&self, run_id: &str) -> Vec<k8s_openapi::api::batch::v1::Job> {
        let api: kube::Api<k8s_openapi::api::batch::v1::Job> =
            kube::Api::namespaced(self.client.clone(), "default");
        api.list(&Self::selector(run_id))
            .await
            .expect("list jobs")
            .items
    }

    /// The pods of a run.
    pub async fn pods_of_run(&self, run_id: &str) -> Vec<k8s_openapi::api::core::v1::Pod> {
        let api: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(self.client.clone(), "default");
        api.list(&Self::selector(run_id))
            .await
            .expect("list pods")
            .items
    }

    /// Waits until the cluster holds no Job and no pod of the run.
    pub async fn wait_nothing_left(&self, run_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let jobs = self.jobs_of_run(run_id).await.len();
            let pods = self.pods_of_run(run_id).await.len();
            if jobs == 0 && pods == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} left {jobs} Job(s) and {pods} pod(s) in the cluster"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

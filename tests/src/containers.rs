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

//! The outcome mapping over DescribeTasks responses in the ECS API's JSON
//! wire form (`describe_tasks/*.json`), one per way a Fargate task ends,
//! with the stop codes and reasons ECS documents for each; and the task
//! sizes Fargate accepts.

use ork_domain::ImagePullPolicy;

use super::*;

#[derive(Deserialize)]
struct DescribeTasksResponse {
    tasks: Vec<TaskView>,
}

fn end_of(response: &str) -> Option<End> {
    let response: DescribeTasksResponse =
        serde_json::from_str(response).expect("a DescribeTasks response");
    ended(&response.tasks[0])
}

macro_rules! recorded {
    ($name:literal) => {
        end_of(include_str!(concat!("describe_tasks/", $name, ".json")))
    };
}

#[test]
fn a_running_task_has_not_ended() {
    assert_eq!(recorded!("running"), None);
}

#[test]
fn out_of_memory_spends_a_retry_and_names_the_limit() {
    let end = recorded!("oom").expect("ended");
    assert_eq!(
        end.description,
        "OutOfMemoryError: the container ran out of the task's memory of 512 MiB and was killed \
         (exit code 137): OutOfMemoryError: Container killed due to memory usage"
    );
    assert_eq!((end.kind, end.non_retryable), (FailureKind::Task, false));
}

#[test]
fn an_image_that_cannot_be_pulled_is_not_retried_and_says_which() {
    let end = recorded!("pull_task_image").expect("ended");
    assert!(
        end.description.starts_with(
            "cannot pull the task image `pyhton:3.12`: CannotPullContainerError: pull image manifest"
        ),
        "{}",
        end.description
    );
    assert_eq!((end.kind, end.non_retryable), (FailureKind::Dispatch, true));

    let end = recorded!("pull_worker_image").expect("ended");
    assert!(
        end.description.starts_with(
            "cannot pull the worker image `123456789012.dkr.ecr.eu-west-1.amazonaws.com/ork-worker:0.1.0`: CannotPullContainerError"
        ),
        "{}",
        end.description
    );
    assert!(end.non_retryable);
}

#[test]
fn a_non_zero_exit_without_a_report_is_a_lost_worker() {
    let end = recorded!("exit_code").expect("ended");
    assert_eq!(
        end.description,
        "the container exited with code 3 before its worker reported a result: Essential container in task exited"
    );
    assert_eq!((end.kind, end.non_retryable), (FailureKind::Lost, false));
}

#[test]
fn stops_from_outside_ork_and_spot_interruptions_are_retried() {
    let end = recorded!("stopped_by_user").expect("ended");
    assert_eq!(
        end.description,
        "the task was stopped from outside ork (UserInitiated) before its worker reported a result: Task stopped by user"
    );
    assert_eq!(end.kind, FailureKind::Lost);
    let end = recorded!("spot_interruption").expect("ended");
    assert_eq!(
        end.description,
        "AWS stopped the task (SpotInterruption) before its worker reported a result: Your Spot Task was interrupted."
    );
    assert_eq!((end.kind, end.non_retryable), (FailureKind::Lost, false));
}

#[test]
fn a_worker_image_without_ork_worker_is_not_retried() {
    let end = recorded!("worker_install_failed").expect("ended");
    assert_eq!(
        end.description,
        "the container installing ork-worker from `busybox:1` exited with code 127; \
         --worker-image must hold a self-contained /ork-worker"
    );
    assert_eq!((end.kind, end.non_retryable), (FailureKind::Dispatch, true));
}

fn spec(cpu: Option<&str>, memory: Option<&str>) -> ContainerSpec {
    ContainerSpec {
        image: "python:3.12-slim".into(),
        pull_policy: ImagePullPolicy::IfNotPresent,
        cpu: cpu.map(Into::into),
        memory: memory.map(Into::into),
    }
}

#[test]
fn resources_round_up_to_the_smallest_fargate_size() {
    let size_of = |cpu, memory| size(&spec(cpu, memory)).map(|s| (s.cpu, s.memory_mib));
    assert_eq!(size_of(None, None), Ok((256, 512)));
    assert_eq!(size_of(Some("250m"), Some("64Mi")), Ok((256, 512)));
    assert_eq!(size_of(Some("500m"), Some("1Gi")), Ok((512, 1024)));
    assert_eq!(size_of(Some("1"), Some("3000Mi")), Ok((1024, 3072)));
    assert_eq!(
        size_of(Some("100m"), Some("3Gi")),
        Ok((512, 3072)),
        "memory picks the CPU"
    );
    assert_eq!(size_of(Some("2"), None), Ok((2048, 4096)));
    assert_eq!(size_of(Some("8"), Some("17Gi")), Ok((8192, 20480)));
    assert!(
        size_of(Some("32"), None)
            .unwrap_err()
            .contains("exceed the largest Fargate task")
    );
}

#[test]
fn one_family_per_content() {
    let options = FargateOptions {
        cluster: "c".into(),
        subnets: vec![],
        security_groups: vec![],
        assign_public_ip: false,
        region: None,
        endpoint_url: None,
        execution_role_arn: None,
        task_role_arn: None,
        worker_image: "ork-worker:1".into(),
        server_url: "http://x".into(),
        server_id: "s".into(),
        kill_grace: Duration::from_secs(15),
        extra_env: vec![],
    };
    let a = spec(Some("250m"), None);
    let b = spec(None, Some("64Mi"));
    let fa = family(&options, &a, size(&a).expect("size"));
    assert_eq!(
        fa,
        family(&options, &b, size(&b).expect("size")),
        "same Fargate size"
    );
    assert!(fa.starts_with("ork-") && fa.len() == 20, "{fa}");
    let c = ContainerSpec {
        image: "other:1".into(),
        ..a.clone()
    };
    assert_ne!(fa, family(&options, &c, size(&c).expect("size")));
}

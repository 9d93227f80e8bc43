//! The `cloudrun` executor against Cloud Run's published contract: no
//! emulator of Cloud Run exists, so a local HTTP server stands in for the
//! Admin API v2. It checks every request the executor makes against the
//! API's discovery document (`fixtures/cloudrun/run-v2.json`, see the
//! README there): the method and path exist, query parameters are declared,
//! and the body matches the request schema (no unknown or output-only
//! field, types and enums right). It answers with responses written to the
//! same schemas (checked too), scripted per test: start, poll, success,
//! failure with an exit code, cancel, timeout, and throttling (a 429 whose
//! `Retry-After` must be waited out).

mod fake_api;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fake_api::{Answer, Contract, FakeApi, Seen, glob, next_event, ok};
use ork_domain::ImagePullPolicy;
use ork_server::executor::cloud_api::Auth;
use ork_server::executor::{
    CloudRunExecutor, CloudRunOptions, ContainerSpec, Executor, ExecutorEvent, Launch,
};
use ork_server::state::FailureKind;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const DISCOVERY: &str = include_str!("fixtures/cloudrun/run-v2.json");
const PARENT: &str = "projects/ork-test/locations/europe-west1";

/// The stand-in Admin API.
type FakeCloudRun = FakeApi<Discovery>;

async fn fake_cloud_run() -> FakeCloudRun {
    FakeApi::start(Discovery::load()).await
}

fn error(status: u16, message: &str) -> Answer {
    fake_api::answer(
        status,
        json!({"error": {"code": status, "message": message, "status": "X"}}),
    )
}

impl Contract for Discovery {
    fn name(&self) -> &'static str {
        "Cloud Run v2"
    }

    fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &Value,
        violations: &mut Vec<String>,
    ) {
        let Some((m, _)) = self.method(method, path) else {
            violations.push(format!("{method} {path}: no such method"));
            return;
        };
        let params = m["parameters"].as_object().cloned().unwrap_or_default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or("");
            let declared = params.get(key).is_some_and(|p| p["location"] == "query")
                || self.common_parameter(key);
            if !declared {
                violations.push(format!(
                    "{method} {path}: undeclared query parameter `{key}`"
                ));
            }
        }
        for (name, p) in &params {
            if p["location"] == "query" && p["required"] == true && !query.contains(name.as_str()) {
                violations.push(format!("{method} {path}: missing query parameter `{name}`"));
            }
        }
        match (m.get("request"), body) {
            (Some(schema), body) => self.check(schema, body, "body", true, violations),
            (None, Value::Null) => {}
            (None, _) => violations.push(format!("{method} {path}: this method takes no body")),
        }
    }

    fn check_answer(&self, method: &str, path: &str, answer: &Answer) -> Vec<String> {
        let (found, _) = self
            .method(method, path)
            .unwrap_or_else(|| panic!("{method} {path} is not in the discovery document"));
        let mut errors = Vec::new();
        if answer.status < 300
            && let Some(schema) = found.get("response")
        {
            self.check(schema, &answer.body, "response", false, &mut errors);
        }
        errors
    }
}

/// The discovery document: its methods by path pattern, its schemas.
struct Discovery {
    doc: Value,
    /// (HTTP method, path regex pieces, method description).
    methods: Vec<(String, Vec<Segment>, Value)>,
}

#[derive(Debug)]
enum Segment {
    Literal(String),
    Variable,
}

impl Discovery {
    fn load() -> Self {
        let doc: Value = serde_json::from_str(DISCOVERY).expect("the discovery document");
        let mut methods = Vec::new();
        fn walk(resources: &Value, out: &mut Vec<(String, Vec<Segment>, Value)>) {
            for resource in resources.as_object().into_iter().flat_map(|o| o.values()) {
                for m in resource["methods"]
                    .as_object()
                    .into_iter()
                    .flat_map(|o| o.values())
                {
                    let flat = m["flatPath"].as_str().unwrap_or_default();
                    out.push((
                        m["httpMethod"].as_str().unwrap_or_default().to_owned(),
                        segments(flat),
                        m.clone(),
                    ));
                }
                walk(&resource["resources"], out);
            }
        }
        walk(&doc["resources"], &mut methods);
        Self { doc, methods }
    }

    /// The method serving `METHOD path`, and its id.
    fn method(&self, http_method: &str, path: &str) -> Option<(&Value, String)> {
        self.methods
            .iter()
            .find(|(m, pattern, _)| m == http_method && matches(pattern, path))
            .map(|(_, _, m)| (m, m["id"].as_str().unwrap_or_default().to_owned()))
    }

    fn common_parameter(&self, key: &str) -> bool {
        self.doc["parameters"].get(key).is_some()
    }

    /// Checks `value` against a discovery schema; `request` also refuses
    /// output-only fields.
    fn check(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        request: bool,
        errors: &mut Vec<String>,
    ) {
        if let Some(name) = schema["$ref"].as_str() {
            let resolved = &self.doc["schemas"][name];
            return self.check(resolved, value, at, request, errors);
        }
        let kind = schema["type"].as_str().unwrap_or("any");
        match (kind, value) {
            ("any", _) => {}
            ("object", Value::Object(fields)) => {
                let properties = schema["properties"].as_object();
                for (key, field) in fields {
                    let here = format!("{at}.{key}");
                    match properties.and_then(|p| p.get(key)) {
                        Some(property) => {
                            if request && property["readOnly"] == true {
                                errors.push(format!("{here}: output only"));
                            }
                            self.check(property, field, &here, request, errors);
                        }
                        None => match schema.get("additionalProperties") {
                            Some(additional) => {
                                self.check(additional, field, &here, request, errors)
                            }
                            None => errors.push(format!("{here}: unknown field")),
                        },
                    }
                }
            }
            ("array", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    self.check(
                        &schema["items"],
                        item,
                        &format!("{at}[{i}]"),
                        request,
                        errors,
                    );
                }
            }
            ("string", Value::String(text)) => {
                if let Some(allowed) = schema["enum"].as_array()
                    && !allowed.iter().any(|a| a == text)
                {
                    errors.push(format!("{at}: `{text}` is not one of the enum's values"));
                }
                if schema["format"] == "google-duration"
                    && !(text.ends_with('s') && text[..text.len() - 1].parse::<f64>().is_ok())
                {
                    errors.push(format!("{at}: `{text}` is not a duration like `3.5s`"));
                }
            }
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {}
            ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => {}
            (_, Value::Null) => {}
            (kind, other) => errors.push(format!("{at}: expected {kind}, got {other}")),
        }
    }
}

fn segments(flat_path: &str) -> Vec<Segment> {
    // `v2/projects/{projectsId}/jobs/{jobsId}:run` → literals and variables;
    // a `:verb` stays a literal suffix of its segment's variable.
    let mut out = Vec::new();
    for part in flat_path.split('/') {
        if let Some(rest) = part.strip_prefix('{') {
            let (_, suffix) = rest.split_once('}').expect("a closing brace");
            out.push(Segment::Variable);
            if !suffix.is_empty() {
                out.push(Segment::Literal(suffix.to_owned()));
            }
        } else {
            out.push(Segment::Literal(part.to_owned()));
        }
    }
    out
}

fn matches(pattern: &[Segment], path: &str) -> bool {
    let mut parts: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part.split_once(':') {
            Some((value, verb)) => {
                parts.push(value.to_owned());
                parts.push(format!(":{verb}"));
            }
            None => parts.push(part.to_owned()),
        }
    }
    pattern.len() == parts.len()
        && pattern
            .iter()
            .zip(&parts)
            .all(|(segment, part)| match segment {
                Segment::Literal(l) => l == part,
                Segment::Variable => !part.is_empty() && !part.starts_with(':'),
            })
}

// ---- the executor under test ----

fn executor(fake: &FakeCloudRun) -> (CloudRunExecutor, mpsc::UnboundedReceiver<ExecutorEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let executor = CloudRunExecutor::new(
        CloudRunOptions {
            project: "ork-test".into(),
            region: "europe-west1".into(),
            endpoint: fake.url.clone(),
            auth: Auth::Bearer("test-token".into()),
            service_account: Some("ork-tasks@ork-test.iam.gserviceaccount.com".into()),
            worker_image: "europe-docker.pkg.dev/ork-test/ork/ork-worker:1".into(),
            server_url: "https://ork.example.com".into(),
            extra_env: vec![],
        },
        tx,
    );
    (executor, rx)
}

fn launch(task_run_id: &str, attempt: u32, timeout_seconds: u32) -> Launch {
    fake_api::launch(
        task_run_id,
        attempt,
        timeout_seconds,
        ContainerSpec {
            image: "europe-docker.pkg.dev/ork-test/ml/train:3".into(),
            pull_policy: ImagePullPolicy::IfNotPresent,
            cpu: Some("1".into()),
            memory: Some("512Mi".into()),
        },
    )
}

fn operation(name: &str, done: bool, metadata: Option<Value>) -> Value {
    let mut op = json!({"name": format!("{PARENT}/operations/{name}"), "done": done});
    if let Some(mut metadata) = metadata {
        metadata["@type"] = json!("type.googleapis.com/google.cloud.run.v2.Execution");
        op["metadata"] = metadata;
    }
    op
}

fn execution(job: &str, id: &str, conditions: Value) -> Value {
    json!({
        "name": format!("{job}/executions/{id}"),
        "job": job.rsplit('/').next(),
        "taskCount": 1,
        "conditions": conditions,
    })
}

fn running() -> Value {
    json!([{"type": "Completed", "state": "CONDITION_RECONCILING", "message": "Started."}])
}

fn completed(state: &str, reason: Option<&str>, message: &str) -> Value {
    let mut c = json!({"type": "Completed", "state": state, "message": message});
    if let Some(reason) = reason {
        c["executionReason"] = json!(reason);
    }
    json!([{"type": "ResourcesAvailable", "state": "CONDITION_SUCCEEDED"}, c])
}

/// The job the executor creates for the launch's image and limits: found
/// by the first GET of a job under the parent.
fn job_of(fake: &FakeCloudRun) -> String {
    fake.seen()
        .iter()
        .find(|s| s.method == "GET" && s.path.contains("/jobs/ork-"))
        .map(|s| s.path.trim_start_matches("v2/").to_owned())
        .expect("the executor read its job")
}

/// Scripts the job's creation (not found, created by an operation polled
/// to done) and one run per launch, dispatches them, and returns the job's
/// name (its id is a hash of its content).
async fn start(
    fake: &FakeCloudRun,
    executor: &CloudRunExecutor,
    launches: &[(&Launch, &str)],
) -> String {
    let jobs = format!("v2/{PARENT}/jobs");
    fake.on(
        "GET",
        &format!("{jobs}/*"),
        vec![error(404, "Resource not found.")],
    );
    fake.on("POST", &jobs, vec![ok(operation("create-1", false, None))]);
    fake.on(
        "GET",
        &format!("v2/{PARENT}/operations/create-1"),
        vec![ok(operation("create-1", true, None))],
    );
    let job_pattern = format!("{PARENT}/jobs/ork-x");
    let runs = launches
        .iter()
        .map(|(_, id)| {
            ok(operation(
                &format!("run-{id}"),
                false,
                Some(execution(&job_pattern, id, running())),
            ))
        })
        .collect();
    fake.on("POST", &format!("{jobs}/*:run"), runs);
    for (launch, id) in launches {
        fake.on(
            "GET",
            &format!("{jobs}/*/executions/{id}"),
            vec![ok(execution(&job_pattern, id, running()))],
        );
        executor.dispatch(launch).await.expect("dispatch");
    }
    job_of(fake)
}

#[tokio::test(flavor = "multi_thread")]
async fn start_poll_and_ends_keep_the_contract_and_say_why() {
    let fake = fake_cloud_run().await;
    let (executor, mut events) = executor(&fake);
    let failing = launch("0195a4e2-0000-7000-8000-00000000000a", 1, 600);
    let succeeding = launch("0195a4e2-0000-7000-8000-00000000000b", 1, 600);
    let timing_out = launch("0195a4e2-0000-7000-8000-00000000000c", 2, 30);
    let job = start(
        &fake,
        &executor,
        &[
            (&failing, "e-fail"),
            (&succeeding, "e-ok"),
            (&timing_out, "e-slow"),
        ],
    )
    .await;

    // The job: created once, with the worker installed by a dependency.
    let seen = fake.seen();
    let creates: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/jobs"))
        .collect();
    assert_eq!(creates.len(), 1, "one job for one image and limits");
    let body = &creates[0].body;
    let template = &body["template"]["template"];
    assert_eq!(template["maxRetries"], 0);
    assert_eq!(
        template["serviceAccount"],
        "ork-tasks@ork-test.iam.gserviceaccount.com"
    );
    assert_eq!(template["volumes"][0]["emptyDir"]["medium"], "MEMORY");
    let task = &template["containers"][0];
    assert_eq!(task["image"], "europe-docker.pkg.dev/ork-test/ml/train:3");
    assert_eq!(task["command"], json!(["/ork/bin/ork-worker"]));
    assert_eq!(task["dependsOn"], json!(["ork-worker"]));
    assert_eq!(
        task["resources"]["limits"],
        json!({"cpu": "1", "memory": "512Mi"})
    );
    let install = &template["containers"][1];
    assert_eq!(
        install["command"],
        json!(["/ork-worker", "install", "/ork/bin/ork-worker"])
    );
    assert!(seen.iter().all(|s| s.authorization == "Bearer test-token"));

    // Each run: the attempt's environment and a timeout backstop.
    let runs: Vec<&Seen> = seen.iter().filter(|s| s.path.ends_with(":run")).collect();
    assert_eq!(runs.len(), 3);
    let overrides = &runs[0].body["overrides"];
    assert_eq!(overrides["timeout"], "660s");
    assert_eq!(runs[2].body["overrides"]["timeout"], "90s");
    let env: BTreeMap<String, String> = overrides["containerOverrides"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(overrides["containerOverrides"][0]["name"], "task");
    assert_eq!(env["ORK_SERVER"], "https://ork.example.com");
    assert_eq!(env["ORK_TASK_RUN_ID"], failing.fence.task_run_id);
    assert_eq!(env["ORK_TOKEN"], failing.fence.token);
    assert_eq!(env["ORK_WORK_DIR"], "/ork/work");

    // The ends: a non-zero exit, a success without a report, a timeout.
    let exec = |id: &str| format!("v2/{PARENT}/jobs/*/executions/{id}");
    fake.on(
        "GET",
        &format!("{}/tasks", exec("e-fail")),
        vec![ok(json!({"tasks": [{
            "name": format!("{job}/executions/e-fail/tasks/e-fail-task0"),
            "lastAttemptResult": {"exitCode": 3, "status": {"code": 2, "message": "The container exited with an error."}}
        }]}))],
    );
    fake.on(
        "GET",
        &exec("e-fail"),
        vec![ok(execution(
            &job,
            "e-fail",
            completed(
                "CONDITION_FAILED",
                Some("NON_ZERO_EXIT_CODE"),
                "Task e-fail-task0 failed.",
            ),
        ))],
    );
    fake.on(
        "GET",
        &exec("e-ok"),
        vec![ok(execution(
            &job,
            "e-ok",
            completed(
                "CONDITION_SUCCEEDED",
                None,
                "Execution completed successfully.",
            ),
        ))],
    );
    fake.on(
        "GET",
        &format!("{}/tasks", exec("e-slow")),
        vec![ok(json!({"tasks": [{
            "name": format!("{job}/executions/e-slow/tasks/e-slow-task0"),
            "lastAttemptResult": {"status": {"code": 4, "message": "Task e-slow-task0 exceeded its timeout of 90s."}}
        }]}))],
    );
    fake.on(
        "GET",
        &exec("e-slow"),
        vec![ok(execution(
            &job,
            "e-slow",
            completed("CONDITION_FAILED", None, "Task e-slow-task0 failed."),
        ))],
    );

    let mut ends = HashMap::new();
    for _ in 0..3 {
        let (fence, description, kind) = next_event(&mut events).await;
        ends.insert(fence.task_run_id, (description, kind));
    }
    assert_eq!(
        ends[&failing.fence.task_run_id],
        (
            "the container exited with code 3 before its worker reported a result: The container exited with an error.".to_owned(),
            FailureKind::Lost
        )
    );
    assert_eq!(
        ends[&succeeding.fence.task_run_id],
        (
            "the job execution succeeded (exit code 0) before its worker reported a result"
                .to_owned(),
            FailureKind::Lost
        )
    );
    assert_eq!(
        ends[&timing_out.fence.task_run_id],
        (
            "Cloud Run stopped the execution at its timeout: Task e-slow-task0 exceeded its timeout of 90s.".to_owned(),
            FailureKind::Timeout
        )
    );
    fake.assert_contract_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_cancels_the_execution_and_reports_nothing() {
    let fake = fake_cloud_run().await;
    let (executor, mut events) = executor(&fake);
    let attempt = launch("0195a4e2-0000-7000-8000-00000000000d", 1, 600);
    let job = start(&fake, &executor, &[(&attempt, "e-cancel")]).await;
    let execution_path = format!("v2/{PARENT}/jobs/*/executions/e-cancel");
    fake.on(
        "POST",
        &format!("{execution_path}:cancel"),
        vec![ok(operation(
            "cancel-1",
            false,
            Some(execution(&job, "e-cancel", running())),
        ))],
    );
    executor.cancel(&attempt.fence).await.expect("cancel");
    assert!(
        fake.seen()
            .iter()
            .any(|s| s.method == "POST" && glob(&format!("{execution_path}:cancel"), &s.path)),
        "executions.cancel was called"
    );
    // The execution then ends cancelled: ork decided that, no event.
    fake.on(
        "GET",
        &execution_path,
        vec![ok(execution(
            &job,
            "e-cancel",
            completed(
                "CONDITION_FAILED",
                Some("CANCELLED"),
                "Execution was cancelled.",
            ),
        ))],
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(8), events.recv())
            .await
            .is_err(),
        "no event for a cancelled attempt"
    );
    fake.assert_contract_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_runs_wait_out_retry_after_and_refusals_are_not_retried() {
    let fake = fake_cloud_run().await;
    let (executor, _events) = executor(&fake);
    let first = launch("0195a4e2-0000-7000-8000-00000000000e", 1, 600);
    let job = start(&fake, &executor, &[(&first, "e-first")]).await;

    let second = launch("0195a4e2-0000-7000-8000-00000000000f", 1, 600);
    fake.on(
        "POST",
        &format!("v2/{job}:run"),
        vec![
            Answer {
                headers: vec![("retry-after", "2".into())],
                ..fake_api::answer(
                    429,
                    json!({"error": {"code": 429, "message": "Quota exceeded for quota metric 'Job runs'.", "status": "RESOURCE_EXHAUSTED"}}),
                )
            },
            ok(operation("run-2", false, Some(execution(&job, "e-second", running())))),
        ],
    );
    fake.on(
        "GET",
        &format!("v2/{job}/executions/e-second"),
        vec![ok(execution(&job, "e-second", running()))],
    );
    executor
        .dispatch(&second)
        .await
        .expect("dispatched after the throttle");
    let runs: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with(":run"))
        .collect();
    let (throttled, retried) = (&runs[runs.len() - 2], &runs[runs.len() - 1]);
    assert!(
        retried.at.duration_since(throttled.at) >= Duration::from_secs(2),
        "Retry-After: 2 was honoured"
    );

    // A refusal (a bad image, say) fails the dispatch at once, as a
    // rejection the scheduler does not retry.
    let third = launch("0195a4e2-0000-7000-8000-000000000010", 1, 600);
    fake.on(
        "POST",
        &format!("v2/{job}:run"),
        vec![error(
            400,
            "Image 'europe-docker.pkg.dev/ork-test/ml/train:3' not found.",
        )],
    );
    let before = fake.seen().len();
    let err = executor.dispatch(&third).await.expect_err("refused");
    assert!(
        matches!(err, ork_server::executor::Error::Rejected(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("HTTP 400: Image"), "{err}");
    assert_eq!(fake.seen().len(), before + 1, "a refusal is not retried");
    fake.assert_contract_kept();
}

//! The `containerapp` executor against Azure Container Apps' published
//! contract: no emulator of Azure Resource Manager's Microsoft.App jobs
//! exists, so a local HTTP server stands in for it. It checks every request
//! the executor makes against the OpenAPI 2.0 spec `2024-03-01`
//! (`fixtures/containerapp/`, see the README there; `$ref`s resolved across
//! its files): the operation exists, `api-version` and the declared query
//! parameters, and the body against the operation's schema (no unknown or
//! read-only field, required fields, types and enums). The responses it
//! replays are checked against the same spec. Scripted per test: start,
//! poll, success, failure (ARM exposes no exit code), stop for cancel and
//! timeout, throttling (a 429 whose `Retry-After` must be waited out), and
//! a refusal that is not retried.

mod fake_api;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use fake_api::{Answer, Contract, FakeApi, Seen, next_event, ok};
use ork_domain::ImagePullPolicy;
use ork_server::executor::cloud_api::Auth;
use ork_server::executor::{
    ContainerAppExecutor, ContainerAppOptions, ContainerSpec, Executor, ExecutorEvent, Launch,
};
use ork_server::state::FailureKind;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const JOBS: &str = include_str!("fixtures/containerapp/Jobs.json");
const COMMON: &str = include_str!("fixtures/containerapp/CommonDefinitions.json");
const TYPES: &str = include_str!("fixtures/containerapp/types.json");
const SUBSCRIPTION: &str = "00000000-0000-0000-0000-0000000000aa";
const GROUP: &str = "ork-rg";
const API_VERSION: &str = "2024-03-01";
/// ARM's async-operation status resource the job's PUT points at: ARM's
/// common long-running operation protocol, not part of Jobs.json.
const OPERATION_STATUS: &str = "subscriptions/00000000-0000-0000-0000-0000000000aa/providers/Microsoft.App/locations/westeurope/containerappOperationStatuses/op-1";

fn jobs() -> String {
    format!("subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.App/jobs")
}

/// The stand-in Resource Manager.
type FakeArm = FakeApi<Spec>;

async fn fake_arm() -> FakeArm {
    FakeApi::start(Spec::load()).await
}

fn error(status: u16, code: &str, message: &str) -> Answer {
    fake_api::answer(status, json!({"error": {"code": code, "message": message}}))
}

impl Contract for Spec {
    fn name(&self) -> &'static str {
        "Container Apps 2024-03-01"
    }

    fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &Value,
        violations: &mut Vec<String>,
    ) {
        // ARM's long-running-operation status is not part of Jobs.json.
        if path == OPERATION_STATUS {
            return;
        }
        let Some((template, operation)) = self.operation(method, path) else {
            violations.push(format!("{method} {path}: no such operation"));
            return;
        };
        let at = format!("{method} {template}");
        let parameters: Vec<&Value> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| match p["$ref"].as_str() {
                Some(r) => self.resolve("Jobs.json", r).map(|(_, p)| p),
                None => Some(p),
            })
            .collect();
        let given: HashMap<&str, &str> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| p.split_once('=').unwrap_or((p, "")))
            .collect();
        for (key, value) in &given {
            if !parameters
                .iter()
                .any(|p| p["in"] == "query" && p["name"] == *key)
            {
                violations.push(format!("{at}: undeclared query parameter `{key}`"));
            }
            if *key == "api-version" && *value != API_VERSION {
                violations.push(format!("{at}: api-version {value}, not {API_VERSION}"));
            }
        }
        for p in &parameters {
            let name = p["name"].as_str().unwrap_or("");
            if p["in"] == "query" && p["required"] == true && !given.contains_key(name) {
                violations.push(format!("{at}: missing query parameter `{name}`"));
            }
        }
        match (parameters.iter().find(|p| p["in"] == "body"), body) {
            (Some(p), Value::Null) if p["required"] == true => {
                violations.push(format!("{at}: the body is required"));
            }
            (Some(_), Value::Null) => {}
            (Some(p), body) => {
                self.check("Jobs.json", &p["schema"], body, "body", true, violations)
            }
            (None, Value::Null) => {}
            (None, _) => violations.push(format!("{at}: this operation takes no body")),
        }
    }

    fn check_answer(&self, method: &str, path: &str, answer: &Answer) -> Vec<String> {
        let mut errors = Vec::new();
        if path == OPERATION_STATUS {
            return errors;
        }
        let (_, operation) = self
            .operation(method, &path.replace('*', "x"))
            .unwrap_or_else(|| panic!("{method} {path} is not in the spec"));
        if answer.status >= 300 {
            return errors;
        }
        let schema = &operation["responses"][answer.status.to_string()]["schema"];
        if schema.is_object() {
            self.check(
                "Jobs.json",
                schema,
                &answer.body,
                "response",
                false,
                &mut errors,
            );
        }
        errors
    }
}

/// The vendored OpenAPI 2.0 documents, by file name, for `$ref`s across
/// them.
struct Spec {
    docs: HashMap<&'static str, Value>,
}

impl Spec {
    fn load() -> Self {
        let parse = |text: &str| serde_json::from_str::<Value>(text).expect("a spec file parses");
        Self {
            docs: HashMap::from([
                ("Jobs.json", parse(JOBS)),
                ("CommonDefinitions.json", parse(COMMON)),
                ("types.json", parse(TYPES)),
            ]),
        }
    }

    /// `file#/a/b` seen from `doc`: the document it lands in and the value.
    fn resolve(&self, doc: &'static str, reference: &str) -> Option<(&'static str, &Value)> {
        let (file, pointer) = reference.split_once('#')?;
        let doc = if file.is_empty() {
            doc
        } else {
            let name = file.rsplit('/').next()?;
            *self.docs.keys().find(|k| **k == name)?
        };
        Some((doc, self.docs[doc].pointer(pointer)?))
    }

    /// The operation serving `METHOD path`: its path template and object.
    fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let paths = self.docs["Jobs.json"]["paths"].as_object()?;
        paths.iter().find_map(|(template, item)| {
            let template_parts: Vec<&str> = template.trim_start_matches('/').split('/').collect();
            let parts: Vec<&str> = path.split('/').collect();
            let fits = template_parts.len() == parts.len()
                && template_parts.iter().zip(&parts).all(|(t, p)| {
                    if t.starts_with('{') {
                        !p.is_empty()
                    } else {
                        t == p
                    }
                });
            let operation = item.get(method.to_ascii_lowercase())?;
            fits.then(|| (template.clone(), operation))
        })
    }

    /// The properties, required fields and `additionalProperties` of an
    /// object schema, with its `allOf` parents merged in.
    fn shape<'a>(
        &'a self,
        doc: &'static str,
        schema: &'a Value,
        properties: &mut Vec<(&'static str, String, &'a Value)>,
        required: &mut Vec<String>,
        additional: &mut Option<(&'static str, &'a Value)>,
    ) {
        let (doc, schema) = match schema["$ref"].as_str() {
            Some(r) => match self.resolve(doc, r) {
                Some(found) => found,
                None => return,
            },
            None => (doc, schema),
        };
        for parent in schema["allOf"].as_array().into_iter().flatten() {
            self.shape(doc, parent, properties, required, additional);
        }
        for (name, property) in schema["properties"].as_object().into_iter().flatten() {
            properties.push((doc, name.clone(), property));
        }
        for name in schema["required"].as_array().into_iter().flatten() {
            required.extend(name.as_str().map(str::to_owned));
        }
        if let Some(a) = schema.get("additionalProperties") {
            *additional = Some((doc, a));
        }
    }

    /// Checks `value` against a schema of document `doc`; `request` also
    /// refuses read-only fields.
    fn check(
        &self,
        doc: &'static str,
        schema: &Value,
        value: &Value,
        at: &str,
        request: bool,
        errors: &mut Vec<String>,
    ) {
        if let Some(r) = schema["$ref"].as_str() {
            match self.resolve(doc, r) {
                Some((doc, resolved)) => self.check(doc, resolved, value, at, request, errors),
                None => errors.push(format!("{at}: `{r}` is not vendored")),
            }
            return;
        }
        let is_object = schema["type"] == "object"
            || schema.get("properties").is_some()
            || schema.get("allOf").is_some();
        let kind = if is_object {
            "object"
        } else {
            schema["type"].as_str().unwrap_or("any")
        };
        match (kind, value) {
            ("any", _) | (_, Value::Null) => {}
            ("object", Value::Object(fields)) => {
                let (mut properties, mut required, mut additional) = (Vec::new(), Vec::new(), None);
                self.shape(doc, schema, &mut properties, &mut required, &mut additional);
                for name in &required {
                    if !fields.contains_key(name) {
                        errors.push(format!("{at}.{name}: required"));
                    }
                }
                for (key, field) in fields {
                    let here = format!("{at}.{key}");
                    match properties.iter().find(|(_, name, _)| name == key) {
                        Some((doc, _, property)) => {
                            if request && property["readOnly"] == true {
                                errors.push(format!("{here}: read-only"));
                            }
                            self.check(doc, property, field, &here, request, errors);
                        }
                        None => match additional {
                            Some((doc, a)) => self.check(doc, a, field, &here, request, errors),
                            // A bare `type: object` (free-form metadata).
                            None if properties.is_empty() => {}
                            None => errors.push(format!("{here}: unknown field")),
                        },
                    }
                }
            }
            ("array", Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{at}[{i}]");
                    self.check(doc, &schema["items"], item, &here, request, errors);
                }
            }
            ("string", Value::String(text)) => {
                if let Some(allowed) = schema["enum"].as_array()
                    && !allowed.iter().any(|a| a == text)
                {
                    errors.push(format!("{at}: `{text}` is not one of the enum's values"));
                }
            }
            ("integer", Value::Number(n)) if n.is_i64() || n.is_u64() => {}
            ("number", Value::Number(_)) | ("boolean", Value::Bool(_)) => {}
            (kind, other) => errors.push(format!("{at}: expected {kind}, got {other}")),
        }
    }
}

// ---- the executor under test ----

fn executor(fake: &FakeArm) -> (ContainerAppExecutor, mpsc::UnboundedReceiver<ExecutorEvent>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let executor = ContainerAppExecutor::new(
        ContainerAppOptions {
            subscription: SUBSCRIPTION.into(),
            resource_group: GROUP.into(),
            environment: format!(
                "/subscriptions/{SUBSCRIPTION}/resourceGroups/{GROUP}/providers/Microsoft.App/managedEnvironments/ork-env"
            ),
            region: "westeurope".into(),
            endpoint: fake.url.clone(),
            auth: Auth::Bearer("test-token".into()),
            worker_image: "orkregistry.azurecr.io/ork-worker:1".into(),
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
            image: "orkregistry.azurecr.io/ml/train:3".into(),
            pull_policy: ImagePullPolicy::IfNotPresent,
            cpu: Some("500m".into()),
            memory: Some("1Gi".into()),
        },
    )
}

/// A `JobExecution` of the job in `status`.
fn execution(name: &str, status: &str) -> Value {
    json!({
        "name": name,
        "id": format!("/{}/ork-x/executions/{name}", jobs()),
        "type": "Microsoft.App/jobs/executions",
        "properties": {"status": status, "startTime": "2026-11-29T08:00:00Z"},
    })
}

/// The job as ARM answers its PUT: provisioning in progress.
fn job_answer(name: &str) -> Value {
    json!({
        "id": format!("/{}/{name}", jobs()),
        "name": name,
        "type": "Microsoft.App/jobs",
        "location": "West Europe",
        "properties": {"provisioningState": "InProgress", "configuration": {"triggerType": "Manual", "replicaTimeout": 660}},
    })
}

/// Scripts the job's creation (not found; PUT answered 201 with an
/// `Azure-AsyncOperation` polled to `Succeeded`) and one start per launch,
/// dispatches them, and returns the job's name.
async fn start(
    fake: &FakeArm,
    executor: &ContainerAppExecutor,
    launches: &[(&Launch, &str)],
) -> String {
    let jobs = jobs();
    fake.on(
        "GET",
        &format!("{jobs}/*"),
        vec![error(
            404,
            "ResourceNotFound",
            "The Resource 'Microsoft.App/jobs/ork-x' was not found.",
        )],
    );
    fake.on(
        "PUT",
        &format!("{jobs}/*"),
        vec![Answer {
            status: 201,
            headers: vec![(
                "azure-asyncoperation",
                format!("{}/{OPERATION_STATUS}?api-version={API_VERSION}", fake.url),
            )],
            body: job_answer("ork-x"),
        }],
    );
    fake.on(
        "GET",
        OPERATION_STATUS,
        vec![
            ok(json!({"id": format!("/{OPERATION_STATUS}"), "name": "op-1", "status": "InProgress"})),
            ok(json!({"id": format!("/{OPERATION_STATUS}"), "name": "op-1", "status": "Succeeded"})),
        ],
    );
    let starts = launches
        .iter()
        .map(|(_, id)| ok(json!({"name": id, "id": format!("/{jobs}/ork-x/executions/{id}")})))
        .collect();
    fake.on("POST", &format!("{jobs}/*/start"), starts);
    for (launch, id) in launches {
        fake.on(
            "GET",
            &format!("{jobs}/*/executions/{id}"),
            vec![ok(execution(id, "Running"))],
        );
        executor.dispatch(launch).await.expect("dispatch");
    }
    fake.seen()
        .iter()
        .find(|s| s.method == "PUT")
        .map(|s| s.path.rsplit('/').next().expect("a job name").to_owned())
        .expect("the executor created its job")
}

#[tokio::test(flavor = "multi_thread")]
async fn start_poll_and_ends_keep_the_contract_and_say_why() {
    let fake = fake_arm().await;
    let (executor, mut events) = executor(&fake);
    let failing = launch("0195a4e2-0000-7000-8000-00000000000a", 1, 600);
    let succeeding = launch("0195a4e2-0000-7000-8000-00000000000b", 1, 600);
    let stopped = launch("0195a4e2-0000-7000-8000-00000000000c", 2, 600);
    let job = start(
        &fake,
        &executor,
        &[
            (&failing, "ork-x-fail"),
            (&succeeding, "ork-x-ok"),
            (&stopped, "ork-x-stopped"),
        ],
    )
    .await;
    assert!(job.starts_with("ork-") && job.len() <= 32, "{job}");

    // The job: created once (after its async operation succeeded), manual,
    // no retries, the worker installed by an init container into EmptyDir.
    let seen = fake.seen();
    let puts: Vec<&Seen> = seen.iter().filter(|s| s.method == "PUT").collect();
    assert_eq!(puts.len(), 1, "one job for one image, limits and timeout");
    assert_eq!(puts[0].query, format!("api-version={API_VERSION}"));
    assert_eq!(
        seen.iter().filter(|s| s.path == OPERATION_STATUS).count(),
        2,
        "the async operation was polled to Succeeded"
    );
    let body = &puts[0].body;
    assert_eq!(body["location"], "westeurope");
    let properties = &body["properties"];
    assert!(
        properties["environmentId"]
            .as_str()
            .unwrap()
            .ends_with("/managedEnvironments/ork-env")
    );
    let configuration = &properties["configuration"];
    assert_eq!(configuration["triggerType"], "Manual");
    assert_eq!(
        configuration["replicaTimeout"], 660,
        "the task's timeout and a margin"
    );
    assert_eq!(configuration["replicaRetryLimit"], 0);
    let template = &properties["template"];
    assert_eq!(
        template["volumes"],
        json!([{"name": "ork", "storageType": "EmptyDir"}])
    );
    let install = &template["initContainers"][0];
    assert_eq!(install["image"], "orkregistry.azurecr.io/ork-worker:1");
    assert_eq!(
        install["command"],
        json!(["/ork-worker", "install", "/ork/bin/ork-worker"])
    );
    let task = &template["containers"][0];
    assert_eq!(task["image"], "orkregistry.azurecr.io/ml/train:3");
    assert_eq!(task["command"], json!(["/ork/bin/ork-worker"]));
    assert_eq!(task["resources"], json!({"cpu": 0.5, "memory": "1Gi"}));
    assert_eq!(task["volumeMounts"][0]["volumeName"], "ork");
    assert!(seen.iter().all(|s| s.authorization == "Bearer test-token"));

    // Each start: the attempt's environment in a template override.
    let starts: Vec<&Seen> = seen.iter().filter(|s| s.path.ends_with("/start")).collect();
    assert_eq!(starts.len(), 3);
    let container = &starts[0].body["containers"][0];
    assert_eq!(container["name"], "task");
    let env: BTreeMap<String, String> = container["env"]
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
    assert_eq!(env["ORK_SERVER"], "https://ork.example.com");
    assert_eq!(env["ORK_TASK_RUN_ID"], failing.fence.task_run_id);
    assert_eq!(env["ORK_TOKEN"], failing.fence.token);
    assert_eq!(env["ORK_WORK_DIR"], "/ork/work");

    // The ends, polled from each execution.
    let exec = |id: &str| format!("{}/*/executions/{id}", jobs());
    fake.on(
        "GET",
        &exec("ork-x-fail"),
        vec![ok(execution("ork-x-fail", "Failed"))],
    );
    fake.on(
        "GET",
        &exec("ork-x-ok"),
        vec![ok(execution("ork-x-ok", "Succeeded"))],
    );
    fake.on(
        "GET",
        &exec("ork-x-stopped"),
        vec![ok(execution("ork-x-stopped", "Stopped"))],
    );
    let mut ends = HashMap::new();
    for _ in 0..3 {
        let (fence, description, kind) = next_event(&mut events).await;
        ends.insert(fence.task_run_id, (description, kind));
    }
    let (description, kind) = &ends[&failing.fence.task_run_id];
    assert_eq!(*kind, FailureKind::Lost);
    assert!(
        description.contains("failed before its worker reported a result")
            && description.contains("does not say the exit code"),
        "{description}"
    );
    assert_eq!(
        ends[&succeeding.fence.task_run_id],
        (
            "the job execution succeeded (exit code 0) before its worker reported a result"
                .to_owned(),
            FailureKind::Lost
        )
    );
    assert!(
        ends[&stopped.fence.task_run_id]
            .0
            .contains("stopped from outside ork")
    );
    fake.assert_contract_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_timeout_stop_the_execution_and_report_nothing() {
    let fake = fake_arm().await;
    let (executor, mut events) = executor(&fake);
    // ork's timeout and a cancel both end in `Executor::cancel`.
    let cancelled = launch("0195a4e2-0000-7000-8000-00000000000d", 1, 600);
    let timed_out = launch("0195a4e2-0000-7000-8000-00000000000e", 1, 600);
    start(
        &fake,
        &executor,
        &[(&cancelled, "ork-x-cancel"), (&timed_out, "ork-x-timeout")],
    )
    .await;
    let jobs = jobs();
    fake.on(
        "POST",
        &format!("{jobs}/*/executions/*/stop"),
        vec![ok(Value::Null)],
    );
    executor.cancel(&cancelled.fence).await.expect("cancel");
    executor.cancel(&timed_out.fence).await.expect("timeout");
    let stops: Vec<String> = fake
        .seen()
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/stop"))
        .map(|s| s.path)
        .collect();
    assert_eq!(stops.len(), 2);
    assert!(
        stops[0].ends_with("/executions/ork-x-cancel/stop"),
        "{stops:?}"
    );
    assert!(
        stops[1].ends_with("/executions/ork-x-timeout/stop"),
        "{stops:?}"
    );
    // The executions then end stopped: ork decided that, no event.
    for id in ["ork-x-cancel", "ork-x-timeout"] {
        fake.on(
            "GET",
            &format!("{jobs}/*/executions/{id}"),
            vec![ok(execution(id, "Stopped"))],
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_secs(8), events.recv())
            .await
            .is_err(),
        "no event for a stopped attempt"
    );
    // Stopping what is already gone is not an error.
    fake.on(
        "POST",
        &format!("{jobs}/*/executions/*/stop"),
        vec![error(404, "ResourceNotFound", "gone")],
    );
    let again = launch("0195a4e2-0000-7000-8000-00000000000f", 1, 600);
    fake.on(
        "POST",
        &format!("{jobs}/*/start"),
        vec![ok(json!({"name": "ork-x-again"}))],
    );
    fake.on(
        "GET",
        &format!("{jobs}/*/executions/ork-x-again"),
        vec![ok(execution("ork-x-again", "Running"))],
    );
    executor.dispatch(&again).await.expect("dispatch");
    executor
        .cancel(&again.fence)
        .await
        .expect("a gone execution is stopped");
    fake.assert_contract_kept();
}

#[tokio::test(flavor = "multi_thread")]
async fn throttled_starts_wait_out_retry_after_and_refusals_are_not_retried() {
    let fake = fake_arm().await;
    let (executor, _events) = executor(&fake);
    let first = launch("0195a4e2-0000-7000-8000-000000000010", 1, 600);
    start(&fake, &executor, &[(&first, "ork-x-first")]).await;
    let jobs = jobs();

    let second = launch("0195a4e2-0000-7000-8000-000000000011", 1, 600);
    fake.on(
        "POST",
        &format!("{jobs}/*/start"),
        vec![
            Answer {
                headers: vec![("retry-after", "2".into())],
                ..error(429, "TooManyRequests", "The request is being throttled.")
            },
            ok(json!({"name": "ork-x-second"})),
        ],
    );
    fake.on(
        "GET",
        &format!("{jobs}/*/executions/ork-x-second"),
        vec![ok(execution("ork-x-second", "Running"))],
    );
    executor
        .dispatch(&second)
        .await
        .expect("dispatched after the throttle");
    let starts: Vec<Seen> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/start"))
        .collect();
    let (throttled, retried) = (&starts[starts.len() - 2], &starts[starts.len() - 1]);
    assert!(
        retried.at.duration_since(throttled.at) >= Duration::from_secs(2),
        "Retry-After: 2 was honoured"
    );

    // A refusal (an image the registry does not have, say) fails the
    // dispatch at once, as a rejection the scheduler does not retry.
    let third = launch("0195a4e2-0000-7000-8000-000000000012", 1, 600);
    fake.on(
        "POST",
        &format!("{jobs}/*/start"),
        vec![error(
            400,
            "InvalidParameterValueInContainerTemplate",
            "The image 'orkregistry.azurecr.io/ml/train:3' was not found.",
        )],
    );
    let before = fake.seen().len();
    let err = executor.dispatch(&third).await.expect_err("refused");
    assert!(
        matches!(err, ork_server::executor::Error::Rejected(_)),
        "{err:?}"
    );
    assert!(err.to_string().contains("HTTP 400: The image"), "{err}");
    assert_eq!(fake.seen().len(), before + 1, "a refusal is not retried");
    // And a 5xx on start is not repeated either (it could start twice).
    fake.on(
        "POST",
        &format!("{jobs}/*/start"),
        vec![error(503, "ServiceUnavailable", "try later")],
    );
    let before = fake.seen().len();
    let err = executor.dispatch(&third).await.expect_err("unavailable");
    assert!(
        matches!(err, ork_server::executor::Error::Unavailable(_)),
        "{err:?}"
    );
    assert_eq!(
        fake.seen().len(),
        before + 1,
        "an unsafe call is not repeated"
    );
    fake.assert_contract_kept();
}

#[test]
fn the_checker_refuses_what_the_spec_refuses() {
    let spec = Spec::load();
    let path = format!("{}/ork-x", jobs());
    let mut errors = Vec::new();
    spec.check_request(
        "PUT",
        &path,
        &format!("api-version={API_VERSION}&x=1"),
        &json!({
            "name": "ork-x",
            "properties": {
                "configuration": {"triggerType": "Sometimes"},
                "template": {"containers": [{"name": "task", "colour": "blue", "resources": {"cpu": "half"}}]},
            },
        }),
        &mut errors,
    );
    let errors = errors.join("\n");
    for expected in [
        "undeclared query parameter `x`",
        "body.location: required",
        "body.name: read-only",
        "body.properties.configuration.replicaTimeout: required",
        "`Sometimes` is not one of the enum's values",
        "body.properties.template.containers[0].colour: unknown field",
        "body.properties.template.containers[0].resources.cpu: expected number",
    ] {
        assert!(errors.contains(expected), "{expected} not in:\n{errors}");
    }
    let mut errors = Vec::new();
    spec.check_request(
        "POST",
        &format!("{path}/run"),
        "",
        &Value::Null,
        &mut errors,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("no such operation"));
}

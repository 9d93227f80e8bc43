//! A local HTTP server standing in for a cloud API that has no emulator,
//! shared by the contract tests of the serverless executors. It records
//! every request, checks it against the API's published contract (a
//! [`Contract`]: a discovery document, an OpenAPI spec) and replays the
//! answers a test scripted for it, each checked against the same contract
//! before it is served.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use ork_proto::v1;
use ork_server::executor::{ContainerSpec, ExecutorEvent, Launch};
use ork_server::state::{FailureKind, Fence};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// An API's published contract, as the fake server checks it.
pub trait Contract: Send + Sync + 'static {
    /// The contract's name in failure messages.
    fn name(&self) -> &'static str;
    /// Appends to `violations` what is wrong with a request the executor
    /// made (no such method, undeclared query parameter, a body that breaks
    /// the request schema).
    fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &Value,
        violations: &mut Vec<String>,
    );
    /// What is wrong with a scripted answer to `METHOD path` (`*` matches
    /// within the path); panics when the contract has no such method, so a
    /// test cannot script a call the API does not have.
    fn check_answer(&self, method: &str, path: &str, answer: &Answer) -> Vec<String>;
}

/// One request the executor made.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Read by the Container Apps test only (ARM's `api-version`).
    #[allow(dead_code)]
    pub query: String,
    pub body: Value,
    pub at: Instant,
    pub authorization: String,
}

/// A scripted answer.
#[derive(Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// `null` sends an empty body.
    pub body: Value,
}

/// A 200 with `body`.
pub fn ok(body: Value) -> Answer {
    answer(200, body)
}

/// An answer with `status` and `body`.
pub fn answer(status: u16, body: Value) -> Answer {
    Answer {
        status,
        headers: vec![],
        body,
    }
}

#[derive(Default)]
struct Script {
    /// Answers by `METHOD path`, in order; the last one repeats.
    answers: HashMap<String, VecDeque<Answer>>,
    seen: Vec<Seen>,
    violations: Vec<String>,
}

/// The stand-in API on an ephemeral loopback port.
pub struct FakeApi<C> {
    pub url: String,
    script: Arc<Mutex<Script>>,
    contract: Arc<C>,
}

impl<C: Contract> FakeApi<C> {
    pub async fn start(contract: C) -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let contract = Arc::new(contract);
        let app = {
            let script = script.clone();
            let contract = contract.clone();
            axum::Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    let script = script.clone();
                    let contract = contract.clone();
                    async move { serve(&script, &*contract, method, uri, headers, body) }
                },
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url,
            script,
            contract,
        }
    }

    /// Scripts the answers to `METHOD path` (`*` matches within the path),
    /// each checked against the contract first.
    pub fn on(&self, method: &str, path: &str, answers: Vec<Answer>) {
        for a in &answers {
            let errors = self.contract.check_answer(method, path, a);
            assert!(
                errors.is_empty(),
                "a scripted answer to {method} {path} breaks the {} contract: {errors:?}",
                self.contract.name()
            );
        }
        self.script
            .lock()
            .expect("script")
            .answers
            .insert(format!("{method} {path}"), answers.into());
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.script.lock().expect("script").seen.clone()
    }

    pub fn assert_contract_kept(&self) {
        let script = self.script.lock().expect("script");
        assert!(
            script.violations.is_empty(),
            "requests that break the {} contract: {:#?}",
            self.contract.name(),
            script.violations
        );
    }
}

fn serve(
    script: &Mutex<Script>,
    contract: &impl Contract,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_start_matches('/').to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap_or_else(|_| json!("<not JSON>"))
    };
    let mut violations = Vec::new();
    contract.check_request(method.as_str(), &path, &query, &body, &mut violations);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !authorization.starts_with("Bearer ") {
        violations.push(format!("{method} {path}: no bearer token"));
    }
    let mut script = script.lock().expect("script");
    script.violations.extend(violations);
    script.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        query,
        body,
        at: Instant::now(),
        authorization,
    });
    let key = format!("{method} {path}");
    // The most specific scripted pattern.
    let pattern = script
        .answers
        .keys()
        .filter(|p| glob(p, &key))
        .max_by_key(|p| p.len())
        .cloned();
    let Some(queue) = pattern.and_then(|p| script.answers.get_mut(&p)) else {
        return (StatusCode::NOT_FOUND, format!("nothing scripted for {key}")).into_response();
    };
    let a = if queue.len() > 1 {
        queue.pop_front().expect("an answer")
    } else {
        queue.front().cloned().expect("an answer")
    };
    let text = if a.body.is_null() {
        String::new()
    } else {
        a.body.to_string()
    };
    let mut response = (
        StatusCode::from_u16(a.status).expect("status"),
        [("content-type", "application/json")],
        text,
    )
        .into_response();
    for (name, value) in a.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header"));
    }
    response
}

/// `pattern` with at most one `*`, matching any text.
pub fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, suffix)) => {
            text.len() >= prefix.len() + suffix.len()
                && text.starts_with(prefix)
                && text.ends_with(suffix)
        }
    }
}

/// The launch of attempt `attempt` of a task run of workflow `ml` in
/// `container`.
pub fn launch(
    task_run_id: &str,
    attempt: u32,
    timeout_seconds: u32,
    container: ContainerSpec,
) -> Launch {
    Launch {
        fence: Fence {
            task_run_id: task_run_id.into(),
            attempt,
            token: format!("token-{task_run_id}-{attempt}"),
        },
        spec: v1::TaskSpec {
            run_id: "0195a4e2-0000-7000-8000-000000000001".into(),
            task_name: "train".into(),
            timeout_seconds,
            ..Default::default()
        },
        workflow: "ml".into(),
        container: Some(container),
    }
}

/// The executor's next event: which attempt ended, why, and as what.
pub async fn next_event(
    events: &mut mpsc::UnboundedReceiver<ExecutorEvent>,
) -> (Fence, String, FailureKind) {
    let event = tokio::time::timeout(Duration::from_secs(60), events.recv())
        .await
        .expect("an event within a minute")
        .expect("the executor is alive");
    let ExecutorEvent::Exited {
        fence,
        description,
        kind,
        ..
    } = event;
    (fence, description, kind)
}

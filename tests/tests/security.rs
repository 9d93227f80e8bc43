//! Authentication, least privilege and TLS, against real servers:
//! - every gRPC method and REST route, enumerated from the descriptors and
//!   the route table, refuses a missing, wrong, expired or revoked token and
//!   a token of too small a role;
//! - a launched worker's credential is valid only for its own attempt's
//!   calls and useless once the attempt ended; a pool worker cannot report
//!   another worker's attempt;
//! - the CLI and the Rust SDK work end to end over TLS with a token, and
//!   mutual TLS refuses a client without the right certificate;
//! - a server never serves an unauthenticated non-loopback listener unless
//!   told to, and the first admin token is shown once or taken from a file.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _};
use ork_proto::json::to_proto;
use ork_proto::v1;
use ork_server::api::gateway::ROUTES;
use ork_server::auth::roles::{self, Access, DescribedMethod};
use ork_tests::{TestServer, binary, free_port, ork_with, output, secure_options, task};
use ork_worker::connect::ConnectOptions;
use serde_json::json;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Calling any method by path, with raw bytes

/// Sends and receives message bytes as they are, so any method can be called
/// by its path alone.
#[derive(Clone, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0u8; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Calls `method` with an empty request (no message for a client stream)
/// and `bearer`; returns the code of the first thing the server answers.
async fn call_code(channel: &Channel, method: &DescribedMethod, bearer: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    let messages: Vec<Vec<u8>> = if method.client_streaming {
        Vec::new()
    } else {
        vec![Vec::new()]
    };
    let mut request = tonic::Request::new(futures::stream::iter(messages));
    if let Some(bearer) = bearer {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {bearer}").parse().expect("header"),
        );
    }
    let path = tonic::codegen::http::uri::PathAndQuery::try_from(method.path.as_str())
        .expect("method path");
    match grpc.streaming(request, path, RawCodec).await {
        Err(status) => status.code(),
        Ok(response) => {
            let mut stream = response.into_inner();
            match tokio::time::timeout(Duration::from_secs(20), stream.message()).await {
                Ok(Ok(_)) => Code::Ok,
                Ok(Err(status)) => status.code(),
                Err(_) => panic!("{} answered nothing in 20 s", method.path),
            }
        }
    }
}

/// What a REST route answers to `bearer`: status and the body's `code`.
async fn rest_code(
    url: &str,
    route: &ork_server::api::gateway::RestRoute,
    bearer: Option<&str>,
) -> (u16, String) {
    let path = route
        .path
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                "x"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/");
    let client = reqwest::Client::new();
    let mut request = match route.method {
        ork_server::api::gateway::HttpMethod::Get => client.get(format!("{url}{path}")),
        ork_server::api::gateway::HttpMethod::Post => {
            client.post(format!("{url}{path}")).body("{}")
        }
        ork_server::api::gateway::HttpMethod::Delete => client.delete(format!("{url}{path}")),
    };
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("REST call");
    let status = response.status().as_u16();
    let challenge = response.headers().get("www-authenticate").is_some();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status == 401 {
        assert!(
            challenge,
            "{} {path}: a 401 names the Bearer scheme",
            route.method.as_str()
        );
    }
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

/// The tokens of the matrix, one per case.
struct Credentials {
    admin: String,
    operator: String,
    viewer: String,
    worker: String,
    expired: String,
    revoked: String,
}

impl Credentials {
    /// The token of the smallest role `access` allows, and of every role
    /// below it.
    fn allowed_and_too_small(&self, access: Access) -> (&str, Vec<(&'static str, &str)>) {
        match access {
            Access::Public => (&self.viewer, Vec::new()),
            Access::Viewer => (&self.viewer, vec![("worker", self.worker.as_str())]),
            Access::Operator => (
                &self.operator,
                vec![
                    ("viewer", self.viewer.as_str()),
                    ("worker", self.worker.as_str()),
                ],
            ),
            Access::Admin => (
                &self.admin,
                vec![
                    ("operator", self.operator.as_str()),
                    ("viewer", self.viewer.as_str()),
                    ("worker", self.worker.as_str()),
                ],
            ),
            Access::Worker => (
                &self.worker,
                vec![
                    ("admin", self.admin.as_str()),
                    ("operator", self.operator.as_str()),
                    ("viewer", self.viewer.as_str()),
                ],
            ),
        }
    }
}

async fn make_credentials(server: &TestServer) -> Credentials {
    let admin = server.admin_token();
    let mut c = server.clients_with_token(&admin).await;
    let expired = c.create_token("soon-expired", "viewer", 1).await;
    let created = Instant::now();
    let credentials = Credentials {
        operator: c.create_token("operator", "operator", 0).await,
        viewer: c.create_token("viewer", "viewer", 0).await,
        worker: c.create_token("worker", "worker", 0).await,
        revoked: c.create_token("revoked", "admin", 0).await,
        expired,
        admin,
    };
    c.tokens
        .revoke_token(v1::RevokeTokenRequest {
            name: "revoked".to_owned(),
        })
        .await
        .expect("revoke");
    // Expiry is a point in time: wait until it has passed.
    tokio::time::sleep(Duration::from_millis(1100).saturating_sub(created.elapsed())).await;
    credentials
}

const WRONG: &str = "ork_thisTokenWasNeverMadeByTheServerXXXXXXXXXXXXX";

#[tokio::test(flavor = "multi_thread")]
async fn every_method_and_route_refuses_bad_credentials_and_too_small_roles() {
    let dir = tempfile::tempdir().expect("dir");
    let mut options = secure_options(dir.path());
    options.metrics_token =
        Some(ork_server::options::BearerToken::new(METRICS_TOKEN).expect("metrics token"));
    let server = TestServer::start_with(dir, options).await;
    let creds = make_credentials(&server).await;
    let channel = Channel::from_shared(server.url())
        .expect("url")
        .connect()
        .await
        .expect("connect");

    let methods = roles::described_methods(ork_server::api::DESCRIPTOR_SETS);
    assert!(methods.len() >= 27, "{methods:#?}");
    let mut checked = 0;
    for method in &methods {
        let access = roles::method_access(&method.path)
            .unwrap_or_else(|| panic!("{} has no role", method.path));
        let path = &method.path;
        if access == Access::Public {
            let code = call_code(&channel, method, None).await;
            assert_eq!(code, Code::Ok, "{path} is public");
            continue;
        }
        for (what, bearer) in [
            ("no", None),
            ("a wrong", Some(WRONG)),
            ("an expired", Some(creds.expired.as_str())),
            ("a revoked", Some(creds.revoked.as_str())),
        ] {
            let code = call_code(&channel, method, bearer).await;
            assert_eq!(code, Code::Unauthenticated, "{path} with {what} token");
        }
        let (allowed, too_small) = creds.allowed_and_too_small(access);
        for (role, bearer) in too_small {
            let code = call_code(&channel, method, Some(bearer)).await;
            assert_eq!(code, Code::PermissionDenied, "{path} with a {role} token");
        }
        let code = call_code(&channel, method, Some(allowed)).await;
        assert!(
            !matches!(code, Code::Unauthenticated | Code::PermissionDenied),
            "{path} with a token of its role got {code:?}"
        );
        checked += 1;
    }
    assert!(checked >= 25);

    let url = server.url();
    for route in ROUTES {
        let method = roles::route_method_path(route);
        let access = roles::method_access(&method).expect("role");
        let what = format!("{} {}", route.method.as_str(), route.path);
        for (name, bearer) in [
            ("no", None),
            ("a wrong", Some(WRONG)),
            ("an expired", Some(creds.expired.as_str())),
            ("a revoked", Some(creds.revoked.as_str())),
        ] {
            let (status, code) = rest_code(&url, route, bearer).await;
            assert_eq!(
                (status, code.as_str()),
                (401, "UNAUTHENTICATED"),
                "{what} with {name} token"
            );
        }
        let (allowed, too_small) = creds.allowed_and_too_small(access);
        for (role, bearer) in too_small {
            let (status, code) = rest_code(&url, route, Some(bearer)).await;
            assert_eq!(
                (status, code.as_str()),
                (403, "PERMISSION_DENIED"),
                "{what} with a {role} token"
            );
        }
        let (status, _) = rest_code(&url, route, Some(allowed)).await;
        assert!(
            !matches!(status, 401 | 403),
            "{what} with a token of its role got {status}"
        );
    }

    // Health and the API description need no token; anything else does.
    let http = reqwest::Client::new();
    for path in ["/healthz", "/openapi.json"] {
        let status = http
            .get(format!("{url}{path}"))
            .send()
            .await
            .expect("GET")
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }
    let status = http
        .get(format!("{url}/nope"))
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(
        status.as_u16(),
        401,
        "unknown paths are not disclosed without a token"
    );
    let status = http
        .get(format!("{url}/nope"))
        .bearer_auth(&creds.viewer)
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(status.as_u16(), 404);

    // `/metrics` with tokens on: a reading API token or the metrics token;
    // nothing else, and the metrics token opens nothing else.
    let scrape = |bearer: Option<&str>| {
        let mut request = http.get(format!("{url}/metrics"));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        async move { request.send().await.expect("GET").status().as_u16() }
    };
    assert_eq!(scrape(None).await, 401, "/metrics with no token");
    assert_eq!(
        scrape(Some(WRONG)).await,
        401,
        "/metrics with a wrong token"
    );
    assert_eq!(
        scrape(Some(creds.revoked.as_str())).await,
        401,
        "/metrics with a revoked token"
    );
    assert_eq!(
        scrape(Some(creds.worker.as_str())).await,
        403,
        "/metrics with a worker token"
    );
    assert_eq!(scrape(Some(creds.viewer.as_str())).await, 200);
    assert_eq!(scrape(Some(METRICS_TOKEN)).await, 200);
    let status = http
        .get(format!("{url}/workflows"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(
        status.as_u16(),
        401,
        "the metrics token is for /metrics only"
    );
}

const METRICS_TOKEN: &str = "scrape-secret-0123456789";

// ---------------------------------------------------------------------------
// Least privilege for workers

/// Every file below `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out
}

fn attempt(task_run_id: &str, attempt: u32, token: &str) -> Option<v1::AttemptRef> {
    Some(v1::AttemptRef {
        task_run_id: task_run_id.to_owned(),
        attempt,
        token: token.to_owned(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attempt_credential_serves_only_its_attempt_and_dies_with_it() {
    let dir = tempfile::tempdir().expect("dir");
    let objects = dir.path().join("objects");
    let mut options = secure_options(dir.path());
    // Outputs above 1 KiB go to the object store, so that a forged large
    // output below would be written there if anything were.
    options.inline_output_limit = 1024;
    let server = TestServer::start_with(dir, options).await;
    let mut admin = server.clients_with_token(&server.admin_token()).await;
    let yaml = "name: creds\ntasks:\n  - name: leak\n    file: leak.sh\n  - name: other\n    file: leak.sh\n";
    // The task hands its own credential out through its output, as a
    // compromised task could.
    let leak = "#!/bin/sh\nprintf '{\"token\":\"%s\",\"id\":\"%s\",\"attempt\":%s,\"api_token\":\"%s\"}' \"$ORK_ATTEMPT_TOKEN\" \"$ORK_TASK_RUN_ID\" \"$ORK_ATTEMPT\" \"${ORK_TOKEN:-}\" > \"$ORK_OUTPUT\"\n";
    admin
        .deploy(yaml, &[("leak.sh", leak)])
        .await
        .expect("deploy");
    let run = admin.start_run("creds", json!({})).await;
    let run = admin.wait_run(&run.id, WAIT).await;
    assert_eq!(
        run.status, "success",
        "launched workers authenticate with their attempt: {run:#?}"
    );
    let leaked = output(task(&run, "leak"));
    let other = output(task(&run, "other"));
    let token = leaked["token"].as_str().expect("token");
    let id = leaked["id"].as_str().expect("id");
    let n = u32::try_from(leaked["attempt"].as_u64().expect("attempt")).expect("u32");
    assert!(
        token.len() >= 32,
        "an attempt token carries at least 128 bits: {token}"
    );
    assert_eq!(
        leaked["api_token"], "",
        "the task does not see its supervisor's ORK_TOKEN (the attempt credential), so an `ork` CLI it starts never sends that as an API token"
    );

    let mut w = server.clients_with_token(token).await.workers;
    fn code<T>(result: Result<T, tonic::Status>) -> Code {
        result.err().map_or(Code::Ok, |s| s.code())
    }
    // Its attempt ended: nothing it asks for is given, nothing it says counts.
    let stale = Code::FailedPrecondition;
    assert_eq!(
        code(
            w.get_task_spec(v1::GetTaskSpecRequest {
                attempt: attempt(id, n, token)
            })
            .await
        ),
        stale
    );
    assert_eq!(
        code(
            w.start_task(v1::StartTaskRequest {
                attempt: attempt(id, n, token)
            })
            .await
        ),
        stale
    );
    assert_eq!(
        code(
            w.heartbeat(v1::HeartbeatRequest {
                attempt: attempt(id, n, token)
            })
            .await
        ),
        stale
    );
    let entries = vec![v1::LogEntry {
        stream: "stdout".into(),
        line: "forged".into(),
        time: None,
    }];
    assert_eq!(
        code(
            w.append_logs(v1::AppendLogsRequest {
                attempt: attempt(id, n, token),
                entries
            })
            .await
        ),
        stale
    );
    assert_eq!(
        code(
            w.fail_task(v1::FailTaskRequest {
                metrics: Default::default(),
                attempt: attempt(id, n, token),
                error: "forged".into(),
                non_retryable: true
            })
            .await
        ),
        stale
    );
    // Repeating a report is answered as a lost reply would be, and changes nothing.
    let _ = w
        .complete_task(v1::CompleteTaskRequest {
            metrics: Default::default(),
            attempt: attempt(id, n, token),
            output: Some(to_proto(&json!({"forged": true}))),
        })
        .await;
    let after = admin.get_run(&run.id).await;
    assert_eq!(
        output(task(&after, "leak")),
        leaked,
        "the output is unchanged"
    );
    assert_eq!(after.status, "success");
    assert!(
        admin
            .logs(&run.id, "leak")
            .await
            .iter()
            .all(|l| l.line != "forged")
    );

    // It never served another attempt, nor anything but worker calls.
    let other_id = other["id"].as_str().expect("id");
    let other_token = other["token"].as_str().expect("token");
    let denied = w
        .heartbeat(v1::HeartbeatRequest {
            attempt: attempt(other_id, 1, other_token),
        })
        .await
        .expect_err("another attempt");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    // A caller that does not hold an attempt's token writes nothing, not
    // even a large output (kept in the object store): the fence is checked
    // before the upload. Its own credential for an attempt: the layer lets
    // it through (it names that credential); the fence does not.
    let forged = "not-the-attempt-token";
    let mut forger = server.clients_with_token(forged).await.workers;
    let big = json!({"forged": "x".repeat(4096)});
    for n in [1, 2] {
        let refused = forger
            .complete_task(v1::CompleteTaskRequest {
                metrics: Default::default(),
                attempt: attempt(other_id, n, forged),
                output: Some(to_proto(&big)),
            })
            .await
            .expect_err("not the attempt's token");
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    let written = walk(&objects);
    assert!(
        !written
            .iter()
            .any(|p| p.contains(&format!("outputs/{other_id}"))),
        "nothing written for a forged report: {written:#?}"
    );
    let mut as_client = server.clients_with_token(token).await;
    let refused = as_client
        .runs
        .list_runs(v1::ListRunsRequest::default())
        .await
        .expect_err("not an API token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
}

/// A raw pool session of worker token `token` serving handler `h`.
async fn open_session(
    server: &TestServer,
    token: &str,
    name: &str,
) -> (
    tokio::sync::mpsc::Sender<v1::SessionRequest>,
    tonic::Streaming<v1::SessionResponse>,
) {
    let mut workers = server.clients_with_token(token).await.workers;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(v1::SessionRequest {
        message: Some(v1::session_request::Message::Attach(v1::WorkerAttach {
            name: name.to_owned(),
            handlers: vec!["h".to_owned()],
            slots: 1,
            sdk: "test".to_owned(),
        })),
    })
    .await
    .expect("attach");
    let mut inbound = workers
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("session")
        .into_inner();
    let first = inbound.message().await.expect("attached").expect("message");
    assert!(
        matches!(
            first.message,
            Some(v1::session_response::Message::Attached(_))
        ),
        "{first:?}"
    );
    (tx, inbound)
}

/// The next assignment on a session, skipping pings.
async fn next_assignment(inbound: &mut tonic::Streaming<v1::SessionResponse>) -> v1::AttemptRef {
    loop {
        let message = inbound.message().await.expect("session").expect("open");
        if let Some(v1::session_response::Message::Assignment(a)) = message.message {
            return a.attempt.expect("attempt");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pool_worker_cannot_report_another_workers_attempt() {
    let dir = tempfile::tempdir().expect("dir");
    let options = secure_options(dir.path());
    let server = TestServer::start_with(dir, options).await;
    let mut admin = server.clients_with_token(&server.admin_token()).await;
    let a = admin.create_token("pool-a", "worker", 0).await;
    let b = admin.create_token("pool-b", "worker", 0).await;
    admin
        .deploy(
            "name: pooled\ntasks:\n  - name: p\n    executor: workers\n    handler: h\n",
            &[],
        )
        .await
        .expect("deploy");

    // Only A attaches, so the attempt goes to A.
    let (_a_tx, mut a_in) = open_session(&server, &a, "a").await;
    let (_b_tx, _b_in) = open_session_without_handler_load(&server, &b).await;
    let run = admin.start_run("pooled", json!({})).await;
    let assigned = next_assignment(&mut a_in).await;

    let mut as_b = server.clients_with_token(&b).await.workers;
    let complete = |attempt: v1::AttemptRef| v1::CompleteTaskRequest {
        metrics: Default::default(),
        attempt: Some(attempt),
        output: Some(to_proto(&json!({"by": "b"}))),
    };
    let denied = as_b
        .complete_task(complete(assigned.clone()))
        .await
        .expect_err("B");
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    assert!(
        denied.message().contains("another worker"),
        "{}",
        denied.message()
    );
    let denied = as_b
        .fail_task(v1::FailTaskRequest {
            metrics: Default::default(),
            attempt: Some(assigned.clone()),
            error: "b".into(),
            non_retryable: true,
        })
        .await
        .expect_err("B fails it");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = admin
        .workers
        .complete_task(complete(assigned.clone()))
        .await
        .expect_err("admin");
    assert_eq!(
        denied.code(),
        Code::PermissionDenied,
        "worker calls are for workers"
    );

    let mut as_a = server.clients_with_token(&a).await.workers;
    as_a.start_task(v1::StartTaskRequest {
        attempt: Some(assigned.clone()),
    })
    .await
    .expect("start");
    as_a.complete_task(v1::CompleteTaskRequest {
        metrics: Default::default(),
        attempt: Some(assigned.clone()),
        output: Some(to_proto(&json!({"by": "a"}))),
    })
    .await
    .expect("A completes its own attempt");
    let run = admin.wait_run(&run.id, WAIT).await;
    assert_eq!(run.status, "success");
    assert_eq!(output(task(&run, "p")), json!({"by": "a"}));
    // Still A's after it ended: B cannot touch it either.
    let denied = as_b
        .complete_task(complete(assigned))
        .await
        .expect_err("B after");
    assert_eq!(denied.code(), Code::PermissionDenied);
}

/// A session of `token` that serves a handler no task uses, so it attaches
/// (the token works) but receives nothing.
async fn open_session_without_handler_load(
    server: &TestServer,
    token: &str,
) -> (
    tokio::sync::mpsc::Sender<v1::SessionRequest>,
    tonic::Streaming<v1::SessionResponse>,
) {
    let mut workers = server.clients_with_token(token).await.workers;
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tx.send(v1::SessionRequest {
        message: Some(v1::session_request::Message::Attach(v1::WorkerAttach {
            name: "b".to_owned(),
            handlers: vec!["unused".to_owned()],
            slots: 1,
            sdk: "test".to_owned(),
        })),
    })
    .await
    .expect("attach");
    let inbound = workers
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("B attaches with its worker token")
        .into_inner();
    (tx, inbound)
}

// ---------------------------------------------------------------------------
// `ork server` processes

/// An `ork` server process; killed on drop.
struct ServerProcess {
    child: Child,
    url: String,
    stderr: PathBuf,
}

impl ServerProcess {
    /// Starts `ork ARGS` and waits for its "listening on URL" line.
    fn start(dir: &Path, args: &[&str]) -> Self {
        static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let stderr = dir.join(format!("server-{n}.log"));
        let child = Command::new(binary("ork"))
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("ORK_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("log"))
            .spawn()
            .expect("spawn ork");
        // Owned from here, so a failed start is still killed (on drop).
        let mut process = Self {
            child,
            url: String::new(),
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = process.stderr();
            if let Some(url) = text
                .lines()
                .find_map(|l| l.split("listening on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                process.url = url.to_owned();
                return process;
            }
            assert!(
                Instant::now() < deadline,
                "ork did not start in 60 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn server_args(dir: &Path, listen: &str) -> Vec<String> {
    vec![
        "server".into(),
        "--listen".into(),
        listen.into(),
        "--state".into(),
        format!("sqlite://{}", dir.join("ork.db").display()),
        "--objects".into(),
        format!("file://{}", dir.join("objects").display()),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
        "--worker-binary".into(),
        binary("ork-worker").display().to_string(),
        "--heartbeat-interval".into(),
        "1".into(),
    ]
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn no_listener_off_loopback_serves_without_authentication() {
    let dir = tempfile::tempdir().expect("dir");
    // `ork dev` has no tokens by default: off loopback it refuses to start.
    let out = Command::new(binary("ork"))
        .args(["dev", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("dev"))
        .stdin(Stdio::null())
        .output()
        .expect("ork dev");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without authentication")
            && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    // Nor does the library, whatever starts it.
    let mut options = ork_tests::test_options(&dir.path().join("lib"));
    options.listen = "0.0.0.0:0".parse().expect("addr");
    let refused = ork_server::Server::bind(options)
        .await
        .err()
        .expect("refused");
    assert!(
        matches!(refused, ork_server::Error::Unprotected { .. }),
        "{refused}"
    );

    // `ork server --listen 0.0.0.0:…` starts only with authentication: it
    // made a first admin token, and a call without a token is refused.
    let args = server_args(dir.path(), "0.0.0.0:0");
    let server = ServerProcess::start(dir.path(), &strs(&args));
    let port = server.url.rsplit(':').next().expect("port").to_owned();
    let local = format!("http://127.0.0.1:{port}");
    let status = reqwest::get(format!("{local}/workflows"))
        .await
        .expect("GET")
        .status();
    assert_eq!(status.as_u16(), 401, "{}", server.stderr());
    assert!(
        server.stderr().contains("created the first admin token"),
        "{}",
        server.stderr()
    );
    drop(server);

    // With --insecure-no-auth it serves, warning loudly at every start.
    let mut args = server_args(dir.path(), "0.0.0.0:0");
    args.push("--insecure-no-auth".into());
    let server = ServerProcess::start(dir.path(), &strs(&args));
    let port = server.url.rsplit(':').next().expect("port").to_owned();
    let status = reqwest::get(format!("http://127.0.0.1:{port}/workflows"))
        .await
        .expect("GET")
        .status();
    assert_eq!(status.as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server.stderr().contains("authentication is OFF") {
        assert!(Instant::now() < deadline, "{}", server.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_admin_token_is_shown_once_or_taken_from_a_file() {
    let dir = tempfile::tempdir().expect("dir");
    let args = server_args(dir.path(), "127.0.0.1:0");
    let first = ServerProcess::start(dir.path(), &strs(&args));
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        let text = first.stderr();
        if let Some(token) = text.lines().map(str::trim).find(|l| l.starts_with("ork_")) {
            break token.to_owned();
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = ork_with(&first.url, &["token", "list"], &[("ORK_TOKEN", &token)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bootstrap"));
    drop(first);
    // The next start of the same database shows nothing: tokens exist.
    let second = ServerProcess::start(dir.path(), &strs(&args));
    let out = ork_with(&second.url, &["workflow", "list"], &[("ORK_TOKEN", &token)]);
    assert!(out.status.success(), "the first token still works");
    std::thread::sleep(Duration::from_millis(300));
    // The token is printed on a line of its own (log lines name modules
    // such as `ork_server`, so look for a line that starts with it).
    let shown = second.stderr();
    assert!(
        !shown.lines().any(|l| l.trim().starts_with("ork_")),
        "{shown}"
    );
    drop(second);

    // With a file: a fresh server writes its token there, privately.
    let fresh = tempfile::tempdir().expect("dir");
    let file = fresh.path().join("admin.token");
    let mut args = server_args(fresh.path(), "127.0.0.1:0");
    args.extend(["--bootstrap-token-file".into(), file.display().to_string()]);
    let server = ServerProcess::start(fresh.path(), &strs(&args));
    let written = std::fs::read_to_string(&file).expect("token file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "only its owner may read it");
    }
    assert!(
        !server.stderr().contains(written.trim()),
        "not printed when written to a file"
    );
    let out = ork_with(
        &server.url,
        &["workflow", "list"],
        &[("ORK_TOKEN", written.trim())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(server);

    // A token given in a file is registered as it is.
    let given = tempfile::tempdir().expect("dir");
    let file = given.path().join("admin.token");
    let chosen = ork_server::auth::credentials::generate().expect("random");
    std::fs::write(&file, format!("{chosen}\n")).expect("write");
    let mut args = server_args(given.path(), "127.0.0.1:0");
    args.extend(["--bootstrap-token-file".into(), file.display().to_string()]);
    let server = ServerProcess::start(given.path(), &strs(&args));
    let out = ork_with(
        &server.url,
        &["workflow", "list"],
        &[("ORK_TOKEN", &chosen)],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ork_with(&server.url, &["workflow", "list"], &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requires a token") && stderr.contains("ORK_TOKEN"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_made_listed_and_revoked_with_the_cli() {
    let dir = tempfile::tempdir().expect("dir");
    let options = secure_options(dir.path());
    let server = TestServer::start_with(dir, options).await;
    let admin = server.admin_token();
    let url = server.url();
    let as_admin = [("ORK_TOKEN", admin.as_str())];
    let out = ork_with(
        &url,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--role",
            "viewer",
            "--expires",
            "30d",
        ],
        &as_admin,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ci = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(ci.starts_with("ork_"), "{ci}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("shown only this once"));

    let out = ork_with(&url, &["token", "list"], &as_admin);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("ci") && table.contains("viewer") && table.contains("active"),
        "{table}"
    );
    assert!(!table.contains(&ci), "secrets are never listed");

    let as_ci = [("ORK_TOKEN", ci.as_str())];
    assert!(
        ork_with(&url, &["workflow", "list"], &as_ci)
            .status
            .success()
    );
    let out = ork_with(&url, &["token", "list"], &as_ci);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs an admin token"));

    let out = ork_with(&url, &["token", "revoke", "ci"], &as_admin);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ork_with(&url, &["workflow", "list"], &as_ci);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token `ci` was revoked"));
    let out = ork_with(&url, &["token", "list", "-o", "json"], &as_admin);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let ci_row = list
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["name"] == "ci")
        .expect("ci");
    assert!(ci_row["revoked_at"].is_string(), "{ci_row}");
}

// ---------------------------------------------------------------------------
// TLS

const TLS_WORKFLOW: &str = r#"
name: tls
tasks:
  - name: launched
    file: hello.sh
  - name: pooled
    depends_on: [launched]
    executor: workers
    handler: double
    input: { n: 21 }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_and_the_rust_sdk_work_over_mutual_tls_with_a_token() {
    let dir = tempfile::tempdir().expect("dir");
    let certs = ork_tests::certs::generate(&dir.path().join("certs"));
    let port = free_port();
    let token_file = dir.path().join("admin.token");
    let mut args = server_args(dir.path(), &format!("127.0.0.1:{port}"));
    for (flag, path) in [
        ("--tls-cert", &certs.server_cert),
        ("--tls-key", &certs.server_key),
        ("--tls-client-ca", &certs.ca),
        ("--tls-worker-ca", &certs.ca),
        ("--tls-worker-cert", &certs.client_cert),
        ("--tls-worker-key", &certs.client_key),
        ("--bootstrap-token-file", &token_file),
    ] {
        args.extend([flag.to_owned(), path.display().to_string()]);
    }
    let server = ServerProcess::start(dir.path(), &strs(&args));
    let url = format!("https://127.0.0.1:{port}");
    assert_eq!(server.url, url, "{}", server.stderr());
    let admin = std::fs::read_to_string(&token_file)
        .expect("token")
        .trim()
        .to_owned();
    let ca = certs.ca.display().to_string();
    let cert = certs.client_cert.display().to_string();
    let key = certs.client_key.display().to_string();
    let env = [
        ("ORK_TOKEN", admin.as_str()),
        ("ORK_CA_CERT", ca.as_str()),
        ("ORK_CLIENT_CERT", cert.as_str()),
        ("ORK_CLIENT_KEY", key.as_str()),
    ];

    // A pool worker of the Rust SDK, over mutual TLS with a worker token.
    let out = ork_with(
        &url,
        &["token", "create", "--name", "pool", "--role", "worker"],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worker_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = ork_worker::pool::Worker::new(url.clone())
        .connect_options(ConnectOptions::default())
        .token(worker_token)
        .ca_cert(&certs.ca)
        .client_identity(&certs.client_cert, &certs.client_key)
        .name("tls-worker")
        .task(ork_worker::pool::task(
            "double",
            |_ctx, input: serde_json::Value| async move {
                Ok(json!({ "n": input["n"].as_i64().unwrap_or_default() * 2 }))
            },
        ));
    let worker = tokio::spawn(async move {
        worker
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    // The CLI deploys and runs: the launched task's ork-worker reaches the
    // server over mutual TLS with its attempt credential.
    let wf_dir = dir.path().join("wf");
    std::fs::create_dir_all(&wf_dir).expect("dir");
    std::fs::write(wf_dir.join("tls.yaml"), TLS_WORKFLOW).expect("yaml");
    std::fs::write(wf_dir.join("hello.sh"), "#!/bin/sh\necho hello over tls\n").expect("sh");
    let yaml = wf_dir.join("tls.yaml").display().to_string();
    let out = ork_with(&url, &["workflow", "deploy", &yaml], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ork_with(&url, &["run", "start", "tls", "--wait", "-o", "json"], &env);
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        server.stderr()
    );
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("run json");
    let pooled = run["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .find(|t| t["name"] == "pooled")
        .expect("pooled");
    assert_eq!(pooled["output"]["n"].as_f64(), Some(42.0), "{run}");

    // REST on the same port, over the same TLS.
    let rest = Command::new("curl")
        .args([
            "-sS", "--fail", "--cacert", &ca, "--cert", &cert, "--key", &key,
        ])
        .args(["-H", &format!("authorization: Bearer {admin}")])
        .arg(format!("{url}/workflows"))
        .output()
        .expect("curl");
    assert!(
        rest.status.success(),
        "{}",
        String::from_utf8_lossy(&rest.stderr)
    );
    assert!(String::from_utf8_lossy(&rest.stdout).contains("\"tls\""));

    // Mutual TLS refuses a client without a certificate, or with one from
    // another CA; and a client refuses a server it cannot verify.
    let no_cert = [("ORK_TOKEN", admin.as_str()), ("ORK_CA_CERT", ca.as_str())];
    let out = ork_with(&url, &["workflow", "list"], &no_cert);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_cert = certs.other_client_cert.display().to_string();
    let other_key = certs.other_client_key.display().to_string();
    let intruder = [
        ("ORK_TOKEN", admin.as_str()),
        ("ORK_CA_CERT", ca.as_str()),
        ("ORK_CLIENT_CERT", other_cert.as_str()),
        ("ORK_CLIENT_KEY", other_key.as_str()),
    ];
    let out = ork_with(&url, &["workflow", "list"], &intruder);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let other_ca = certs.other_ca.display().to_string();
    let untrusted = [
        ("ORK_TOKEN", admin.as_str()),
        ("ORK_CA_CERT", other_ca.as_str()),
        ("ORK_CLIENT_CERT", cert.as_str()),
        ("ORK_CLIENT_KEY", key.as_str()),
    ];
    let out = ork_with(&url, &["workflow", "list"], &untrusted);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let curl = Command::new("curl")
        .args(["-sS", "--cacert", &ca, &format!("{url}/healthz")])
        .output()
        .expect("curl");
    assert!(
        !curl.status.success(),
        "no client certificate, no REST either"
    );
    // Plain text is not served on a TLS port.
    let plain = ork_with(
        &format!("http://127.0.0.1:{port}"),
        &["workflow", "list"],
        &[("ORK_TOKEN", admin.as_str())],
    );
    assert_ne!(plain.status.code(), Some(0));

    let _ = stop.send(());
    worker.await.expect("join").expect("worker stops cleanly");
}

//! The `gs://` client's side of the wire, against a local HTTP server that
//! records every request and answers from a script: which credentials go
//! out (none with `STORAGE_EMULATOR_HOST`; a signed, cached service-account
//! JWT otherwise), which failures are retried, and how errors read.
//! Google's own endpoints are not reachable here; the data calls themselves
//! are covered by the conformance suite against fake-gcs-server.
#![cfg(feature = "gcs")]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use ork_server::objects::{self, Settings};

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Script {
    seen: Vec<Seen>,
    /// Answers in order; when empty, 200 with [`OBJECT`].
    answers: VecDeque<(StatusCode, String)>,
}

const OBJECT: &str = r#"{"name":"p/x.json","size":"2","updated":"2026-11-29T00:45:18.362Z","etag":"e1","generation":"17"}"#;

struct FakeGcs {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeGcs {
    async fn start() -> Self {
        let script = Arc::new(Mutex::new(Script::default()));
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        Self {
            addr,
            script,
            _server: server,
        }
    }

    fn answer(&self, status: u16, body: &str) {
        self.script.lock().unwrap().answers.push_back((
            StatusCode::from_u16(status).expect("status"),
            body.to_owned(),
        ));
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.script.lock().unwrap().seen)
    }

    /// `gs://bucket/p` at this server, over plain HTTP, with `settings`.
    fn open(&self, extra: &str, settings: &Settings) -> Arc<dyn ObjectStore> {
        let url = format!(
            "gs://bucket/p?base_url=http://{}&allow_http=true{extra}",
            self.addr
        );
        objects::open(&url, settings).unwrap_or_else(|e| panic!("{url}: {e}"))
    }
}

async fn answer(
    State(script): State<Arc<Mutex<Script>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let mut script = script.lock().unwrap();
    script.seen.push(Seen {
        method,
        uri,
        headers,
        body,
    });
    let (status, body) = script
        .answers
        .pop_front()
        .unwrap_or((StatusCode::OK, OBJECT.to_owned()));
    (status, [("content-type", "application/json")], body)
}

/// A fresh RSA key as a service-account key file, and its public key.
fn service_account(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let key = KeyPair::generate(KeySize::Rsa2048).expect("rsa key");
    let der = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'_>>::as_der(&key).expect("pkcs8");
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ascii"))
        .collect();
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    );
    let file = serde_json::json!({
        "type": "service_account",
        "project_id": "ork-test",
        "private_key_id": "key-1",
        "private_key": pem,
        "client_email": "ork@ork-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:1/token",
    });
    let path = dir.join("service-account.json");
    std::fs::write(&path, file.to_string()).expect("write the key file");
    (path, key.public_key().as_ref().to_vec())
}

fn settings(pairs: &[(&str, &str)]) -> Settings {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[tokio::test]
async fn the_emulator_host_means_no_credentials_even_with_a_key_file() {
    let gcs = FakeGcs::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (key_file, _) = service_account(dir.path());
    let store = objects::open(
        "gs://bucket/p",
        &settings(&[
            ("STORAGE_EMULATOR_HOST", &gcs.addr.to_string()),
            (
                "GOOGLE_APPLICATION_CREDENTIALS",
                key_file.to_str().expect("utf-8"),
            ),
        ]),
    )
    .expect("open");
    store
        .put(&Path::from("x.json"), PutPayload::from_static(b"{}"))
        .await
        .expect("put");
    let seen = gcs.seen();
    assert_eq!(seen.len(), 1);
    let put = &seen[0];
    assert_eq!(put.method, Method::POST);
    assert_eq!(put.uri.path(), "/upload/storage/v1/b/bucket/o");
    assert!(
        put.uri
            .query()
            .is_some_and(|q| q.contains("uploadType=multipart")),
        "{:?}",
        put.uri
    );
    assert!(
        put.headers.get("authorization").is_none(),
        "{:?}",
        put.headers
    );
    let body = String::from_utf8_lossy(&put.body);
    assert!(body.contains(r#""name":"p/x.json""#), "{body}");
}

#[tokio::test]
async fn a_service_account_key_signs_one_bearer_jwt_and_reuses_it() {
    let gcs = FakeGcs::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let (key_file, public_key) = service_account(dir.path());
    let store = gcs.open(
        "",
        &settings(&[(
            "GOOGLE_APPLICATION_CREDENTIALS",
            key_file.to_str().expect("utf-8"),
        )]),
    );
    store
        .put(&Path::from("x.json"), PutPayload::from_static(b"{}"))
        .await
        .expect("put");
    let head = store.head(&Path::from("x.json")).await.expect("head");
    assert_eq!((head.location.as_ref(), head.size), ("x.json", 2));
    let seen = gcs.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].uri.path(), "/storage/v1/b/bucket/o/p%2Fx.json");
    let bearer = |s: &Seen| {
        s.headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_else(|| panic!("no bearer token: {:?}", s.headers))
            .to_owned()
    };
    let token = bearer(&seen[0]);
    assert_eq!(
        bearer(&seen[1]),
        token,
        "the token is cached, not signed again"
    );

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "{token}");
    let decode = |part: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
    };
    let header = decode(parts[0]);
    let claims = decode(parts[1]);
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["kid"], "key-1");
    assert_eq!(claims["iss"], "ork@ork-test.iam.gserviceaccount.com");
    assert!(
        claims["scope"]
            .as_str()
            .is_some_and(|s| s.contains("auth/cloud-platform")),
        "{claims}"
    );
    let lifetime = claims["exp"].as_u64().unwrap_or(0) - claims["iat"].as_u64().unwrap_or(0);
    assert_eq!(lifetime, 3600);
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("signature");
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public_key)
        .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
        .expect("the JWT is signed by the service account's key");
}

#[tokio::test]
async fn transient_failures_are_retried_and_others_are_not() {
    let gcs = FakeGcs::start().await;
    let store = gcs.open("&skip_signature=true", &Settings::new());
    let path = Path::from("x.json");

    gcs.answer(
        503,
        r#"{"error":{"code":503,"message":"backend unavailable"}}"#,
    );
    gcs.answer(429, r#"{"error":{"code":429,"message":"slow down"}}"#);
    store.head(&path).await.expect("head after a 503 and a 429");
    assert_eq!(gcs.seen().len(), 3);

    gcs.answer(
        404,
        r#"{"error":{"code":404,"message":"No such object: bucket/p/x.json"}}"#,
    );
    let err = store.head(&path).await.expect_err("404");
    assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("No such object"), "{err}");
    assert_eq!(gcs.seen().len(), 1, "a 404 is not retried");

    gcs.answer(403, r#"{"error":{"code":403,"message":"denied"}}"#);
    let err = store
        .put(&path, PutPayload::from_static(b"{}"))
        .await
        .expect_err("403");
    assert!(
        matches!(err, object_store::Error::PermissionDenied { .. }),
        "{err}"
    );
    assert_eq!(gcs.seen().len(), 1);

    gcs.answer(412, r#"{"error":{"code":412,"message":"conditionNotMet"}}"#);
    let err = store
        .put_opts(
            &path,
            PutPayload::from_static(b"{}"),
            object_store::PutMode::Create.into(),
        )
        .await
        .expect_err("412");
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "{err}"
    );
    let seen = gcs.seen();
    assert!(
        seen[0]
            .uri
            .query()
            .is_some_and(|q| q.contains("ifGenerationMatch=0")),
        "{:?}",
        seen[0].uri
    );
}

#[tokio::test]
async fn error_text_from_the_server_is_bounded_and_printable() {
    let gcs = FakeGcs::start().await;
    let store = gcs.open("&skip_signature=true", &Settings::new());
    let hostile = format!(
        "{{\"error\":{{\"message\":\"bad\\u001b[31m\\n{}\"}}}}",
        "x".repeat(100_000)
    );
    gcs.answer(400, &hostile);
    let err = store
        .head(&Path::from("x.json"))
        .await
        .expect_err("400")
        .to_string();
    assert!(err.len() < 1_000, "{} bytes", err.len());
    assert!(!err.chars().any(char::is_control), "{err:?}");
    // Cut at 64 KiB the JSON no longer parses: the raw text is shown, cut.
    assert!(err.contains("HTTP 400 Bad Request: {\"error\""), "{err}");

    gcs.answer(400, "{\"error\":{\"message\":\"bad\\u001b[31m\\nname\"}}");
    let err = store
        .head(&Path::from("x.json"))
        .await
        .expect_err("400")
        .to_string();
    assert!(
        err.ends_with("HTTP 400 Bad Request: bad [31m name"),
        "{err:?}"
    );
}

//! One JSON API request: its URL, the bearer token from the credential
//! chain, retries of transient failures with backoff, bounded reads of
//! response bodies, and the translation of failures into object_store's
//! error kinds.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use http::{Method, StatusCode};
use object_store::client::{HttpClient, HttpError, HttpErrorKind, HttpRequestBody, HttpResponse};
use object_store::gcp::GcpCredentialProvider;
use object_store::{PutPayload, RetryConfig};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::de::DeserializeOwned;

/// What object_store calls this store in its errors.
pub(super) const STORE: &str = "GCS";

/// Largest JSON document read from the API (a listing page of 1,000
/// objects is well under 1 MiB); an error body is cut at 64 KiB.
const MAX_JSON: usize = 16 << 20;
const MAX_ERROR_BODY: usize = 64 << 10;

/// Everything but RFC 3986's unreserved characters is escaped, in object
/// names within a path segment and in query values alike: `+` stays a plus,
/// a space is `%20`, `/` inside a name is `%2F`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

pub(super) fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

/// Why a request failed, before the caller names the object concerned.
#[derive(Debug, thiserror::Error)]
pub(super) enum Error {
    #[error("{method} {url}: HTTP {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        message: String,
    },
    #[error("{method} {url}: {source}")]
    Http {
        method: Method,
        url: String,
        source: HttpError,
    },
    #[error("cannot get a Google credential: {0}")]
    Credential(#[source] object_store::Error),
    #[error("unexpected response from Cloud Storage: {0}")]
    Response(String),
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The object_store error for a request about `path`. A 412 means
    /// "already exists" to a create-if-absent write, and a failed
    /// precondition to anything else.
    pub fn into_store(self, path: &str, create: bool) -> object_store::Error {
        let path = path.to_owned();
        let source = Box::new(self);
        match source.status() {
            Some(StatusCode::NOT_FOUND) => object_store::Error::NotFound { path, source },
            Some(StatusCode::PRECONDITION_FAILED) if create => {
                object_store::Error::AlreadyExists { path, source }
            }
            Some(StatusCode::PRECONDITION_FAILED) => {
                object_store::Error::Precondition { path, source }
            }
            Some(StatusCode::NOT_MODIFIED) => object_store::Error::NotModified { path, source },
            Some(StatusCode::UNAUTHORIZED) => object_store::Error::Unauthenticated { path, source },
            Some(StatusCode::FORBIDDEN) => object_store::Error::PermissionDenied { path, source },
            _ if matches!(*source, Self::Unsupported(_)) => {
                object_store::Error::NotSupported { source }
            }
            _ => object_store::Error::Generic {
                store: STORE,
                source,
            },
        }
    }
}

/// A request to send (and, on a transient failure, send again).
pub(super) struct Request {
    pub method: Method,
    pub url: String,
    pub content_type: Option<String>,
    pub range: Option<String>,
    pub body: Option<PutPayload>,
}

impl Request {
    pub fn new(method: Method, url: String) -> Self {
        Self {
            method,
            url,
            content_type: None,
            range: None,
            body: None,
        }
    }
}

/// The HTTP side of the store: where the API is, who we are, how patient.
#[derive(Debug)]
pub(super) struct Client {
    http: HttpClient,
    /// `https://storage.googleapis.com`, or the emulator's address.
    base_url: String,
    bucket: String,
    /// `None` talks to the server anonymously (an emulator).
    credentials: Option<GcpCredentialProvider>,
    retry: RetryConfig,
}

impl Client {
    pub fn new(
        http: HttpClient,
        base_url: &str,
        bucket: &str,
        credentials: Option<GcpCredentialProvider>,
        retry: RetryConfig,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            credentials,
            retry,
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `…/storage/v1/b/{bucket}/o` plus `rest` (already encoded).
    pub fn objects_url(&self, rest: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o{rest}",
            self.base_url,
            encode(&self.bucket)
        )
    }

    /// `…/storage/v1/b/{bucket}/o/{name}`.
    pub fn object_url(&self, name: &str) -> String {
        self.objects_url(&format!("/{}", encode(name)))
    }

    pub fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base_url,
            encode(&self.bucket)
        )
    }

    /// Sends `request`, retrying connection failures, timeouts and the
    /// statuses Google documents as transient (408, 429, 5xx) with
    /// exponential backoff and jitter, within the retry budget. Every call
    /// ork makes is safe to repeat: writes put the same bytes again or carry
    /// a generation precondition. Returns successful responses only.
    pub async fn send(&self, request: &Request) -> Result<HttpResponse, Error> {
        let started = Instant::now();
        let mut backoff = self.retry.backoff.init_backoff;
        let mut retries = 0;
        loop {
            let outcome = self.send_once(request).await;
            let transient = match &outcome {
                Ok(response) => is_transient(response.status()),
                Err(Error::Http { source, .. }) => matches!(
                    source.kind(),
                    HttpErrorKind::Connect
                        | HttpErrorKind::Request
                        | HttpErrorKind::Timeout
                        | HttpErrorKind::Interrupted
                ),
                Err(_) => false,
            };
            let out_of_budget = retries >= self.retry.max_retries
                || started.elapsed() + backoff > self.retry.retry_timeout;
            if !transient || out_of_budget {
                let response = outcome?;
                return if response.status().is_success() {
                    Ok(response)
                } else {
                    Err(self.status_error(request, response).await)
                };
            }
            tracing::debug!(url = %request.url, retries, "retrying a Cloud Storage request");
            tokio::time::sleep(backoff).await;
            retries += 1;
            backoff = next_backoff(backoff, &self.retry);
        }
    }

    async fn send_once(&self, request: &Request) -> Result<HttpResponse, Error> {
        let http_error = |source| Error::Http {
            method: request.method.clone(),
            url: request.url.clone(),
            source,
        };
        let mut builder = http::Request::builder()
            .method(request.method.clone())
            .uri(&request.url);
        if let Some(bearer) = self.bearer().await? {
            builder = builder.header(AUTHORIZATION, format!("Bearer {bearer}"));
        }
        if let Some(content_type) = &request.content_type {
            builder = builder.header(CONTENT_TYPE, content_type);
        }
        if let Some(range) = &request.range {
            builder = builder.header(RANGE, range);
        }
        let body = match &request.body {
            Some(payload) => {
                builder = builder.header(CONTENT_LENGTH, payload.content_length());
                HttpRequestBody::from(payload.clone())
            }
            None if request.method == Method::POST => {
                builder = builder.header(CONTENT_LENGTH, 0);
                HttpRequestBody::empty()
            }
            None => HttpRequestBody::empty(),
        };
        let http_request = builder
            .body(body)
            .map_err(|e| Error::Response(format!("cannot build the request: {e}")))?;
        self.http.execute(http_request).await.map_err(http_error)
    }

    async fn bearer(&self) -> Result<Option<String>, Error> {
        let Some(credentials) = &self.credentials else {
            return Ok(None);
        };
        let credential = credentials
            .get_credential()
            .await
            .map_err(Error::Credential)?;
        // A service-account key with `disable_oauth` yields an empty token.
        Ok(Some(credential.bearer.clone()).filter(|b| !b.is_empty()))
    }

    /// The status and the API's own message (`{"error": {"message": …}}`),
    /// cut short and stripped of control characters: it is shown in logs.
    async fn status_error(&self, request: &Request, response: HttpResponse) -> Error {
        let status = response.status();
        let body = read_limited(response, MAX_ERROR_BODY, true)
            .await
            .unwrap_or_default();
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        let mut message: String = message
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(500)
            .collect();
        if message.trim().is_empty() {
            message = status.canonical_reason().unwrap_or("no message").to_owned();
        }
        Error::Status {
            method: request.method.clone(),
            url: request.url.clone(),
            status,
            message: message.trim().to_owned(),
        }
    }

    /// Sends `request` and decodes the JSON resource it answers with.
    pub async fn json<T: DeserializeOwned>(&self, request: &Request) -> Result<T, Error> {
        let response = self.send(request).await?;
        let body = read_limited(response, MAX_JSON, false).await?;
        serde_json::from_slice(&body).map_err(|e| Error::Response(format!("{}: {e}", request.url)))
    }
}

fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// Decorrelated jitter: a random wait between the first backoff and
/// `base` times the last one, capped.
fn next_backoff(last: Duration, retry: &RetryConfig) -> Duration {
    let low = retry.backoff.init_backoff.as_secs_f64();
    let high = (last.as_secs_f64() * retry.backoff.base).max(low);
    let next = low + rand::random::<f64>() * (high - low);
    Duration::from_secs_f64(next.min(retry.backoff.max_backoff.as_secs_f64()))
}

/// Reads a response body of at most `limit` bytes: past it, an error, or
/// (`truncate`) the first `limit` bytes.
async fn read_limited(
    response: HttpResponse,
    limit: usize,
    truncate: bool,
) -> Result<Bytes, Error> {
    let mut stream = response.into_body().bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::Response(format!("reading the response: {e}")))?;
        if body.len() + chunk.len() > limit {
            if truncate {
                body.extend_from_slice(&chunk[..limit - body.len()]);
                break;
            }
            return Err(Error::Response(format!(
                "the response is larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_as_one_component() {
        assert_eq!(
            encode("runs/r1/a b+c~é.json"),
            "runs%2Fr1%2Fa%20b%2Bc~%C3%A9.json"
        );
        assert_eq!(encode("a-b_c.d"), "a-b_c.d");
    }

    #[test]
    fn backoff_grows_with_jitter_and_stays_capped() {
        let retry = RetryConfig::default();
        let mut wait = retry.backoff.init_backoff;
        for _ in 0..50 {
            let next = next_backoff(wait, &retry);
            assert!(next >= retry.backoff.init_backoff && next <= retry.backoff.max_backoff);
            assert!(next.as_secs_f64() <= wait.as_secs_f64() * retry.backoff.base + 1e-9);
            wait = next;
        }
    }

    #[test]
    fn only_documented_transient_statuses_are_retried() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 412, 416, 501] {
            assert!(!is_transient(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}

//! One JSON request to a cloud control plane (Cloud Run's Admin API, Azure
//! Resource Manager), for the serverless executors that speak plain REST:
//! the bearer token, bounded reads, and retries that respect the API's
//! throttling — a 429 waits as long as its `Retry-After` says (capped), and
//! a 5xx or a broken connection backs off exponentially, but only for calls
//! that are safe to repeat (a repeated "run" could start a second
//! execution). Over object_store's HTTP client, so no second HTTP stack.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpRequestBody, HttpResponse, ReqwestConnector,
};
use object_store::gcp::GcpCredentialProvider;
use serde_json::Value;

pub use http::{HeaderMap, Method};

/// Largest JSON document read from an API; an error body is cut shorter.
const MAX_JSON: usize = 8 << 20;
const MAX_ERROR_BODY: usize = 16 << 10;
/// Attempts of one call, the first included.
const MAX_ATTEMPTS: u32 = 6;
/// The longest `Retry-After` honoured; longer waits are cut to this.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Where a bearer token comes from.
#[derive(Debug, Clone)]
pub enum Auth {
    /// Google's chain as object_store implements it (service-account key,
    /// `gcloud` credentials, the metadata server), tokens cached.
    Google(GcpCredentialProvider),
    /// A token given as is.
    Bearer(String),
    /// An Azure Resource Manager token: a service principal's client
    /// secret, else the managed identity endpoint; cached until shortly
    /// before it expires.
    Azure(Arc<AzureToken>),
}

/// Where Azure tokens for Resource Manager come from.
#[derive(Debug, Clone)]
pub enum AzureCredential {
    /// `AZURE_TENANT_ID`, `AZURE_CLIENT_ID`, `AZURE_CLIENT_SECRET`:
    /// the OAuth client-credentials grant at `authority`
    /// (`https://login.microsoftonline.com` unless `AZURE_AUTHORITY_HOST`).
    ClientSecret {
        authority: String,
        tenant: String,
        client_id: String,
        secret: String,
    },
    /// `IDENTITY_ENDPOINT` and `IDENTITY_HEADER`, as App Service, Functions
    /// and Container Apps provide them.
    ManagedIdentity { endpoint: String, header: String },
}

impl AzureCredential {
    /// From the environment: a client secret if all three variables are
    /// set, else the managed identity endpoint; `None` if neither.
    pub fn from_env() -> Option<Self> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        if let (Some(tenant), Some(client_id), Some(secret)) = (
            var("AZURE_TENANT_ID"),
            var("AZURE_CLIENT_ID"),
            var("AZURE_CLIENT_SECRET"),
        ) {
            let authority = var("AZURE_AUTHORITY_HOST")
                .unwrap_or_else(|| "https://login.microsoftonline.com".to_owned());
            return Some(Self::ClientSecret {
                authority: authority.trim_end_matches('/').to_owned(),
                tenant,
                client_id,
                secret,
            });
        }
        Some(Self::ManagedIdentity {
            endpoint: var("IDENTITY_ENDPOINT")?,
            header: var("IDENTITY_HEADER")?,
        })
    }
}

/// An Azure credential and its cached token.
#[derive(Debug)]
pub struct AzureToken {
    credential: AzureCredential,
    /// The resource the token is for, e.g. `https://management.azure.com/`.
    resource: String,
    cached: tokio::sync::Mutex<Option<(String, Instant)>>,
}

impl AzureToken {
    pub fn new(credential: AzureCredential, resource: &str) -> Self {
        Self {
            credential,
            resource: resource.to_owned(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self, http: &HttpClient) -> Result<String, ApiError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, until)) = cached.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let enc = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        let request = match &self.credential {
            AzureCredential::ClientSecret {
                authority,
                tenant,
                client_id,
                secret,
            } => {
                let form = format!(
                    "grant_type=client_credentials&client_id={}&client_secret={}&scope={}",
                    enc(client_id),
                    enc(secret),
                    enc(&format!("{}.default", self.resource)),
                );
                http::Request::builder()
                    .method(Method::POST)
                    .uri(format!("{authority}/{}/oauth2/v2.0/token", enc(tenant)))
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(CONTENT_LENGTH, form.len())
                    .body(HttpRequestBody::from(form.into_bytes()))
            }
            AzureCredential::ManagedIdentity { endpoint, header } => http::Request::builder()
                .method(Method::GET)
                .uri(format!(
                    "{endpoint}?resource={}&api-version=2019-08-01",
                    enc(&self.resource)
                ))
                .header("X-IDENTITY-HEADER", header.as_str())
                .body(HttpRequestBody::empty()),
        }
        .map_err(|e| ApiError::new(None, format!("cannot build a token request: {e}")))?;
        let response = http
            .execute(request)
            .await
            .map_err(|e| ApiError::new(None, format!("cannot get an Azure token: {e}")))?;
        if !response.status().is_success() {
            let e = status_error(response).await;
            return Err(ApiError::new(
                e.status,
                format!("cannot get an Azure token: {}", e.message),
            ));
        }
        let body: Value = serde_json::from_slice(&read_limited(response, MAX_ERROR_BODY).await?)
            .map_err(|e| ApiError::new(None, format!("an Azure token answer is not JSON: {e}")))?;
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| ApiError::new(None, "an Azure token answer has no access_token"))?
            .to_owned();
        // `expires_in` is a number from Entra ID, a string from the
        // managed identity endpoint.
        let lifetime = body["expires_in"]
            .as_u64()
            .or_else(|| body["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(300);
        let until = Instant::now() + Duration::from_secs(lifetime.saturating_sub(120).max(30));
        *cached = Some((token.clone(), until));
        Ok(token)
    }
}

/// A failed call: the HTTP status when there was one, and the API's own
/// message (control characters removed: it ends up in task errors).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: Option<u16>,
    pub message: String,
}

impl ApiError {
    fn new(status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// A 4xx other than 408 and 429: the request itself is wrong.
    pub fn is_refusal(&self) -> bool {
        self.status
            .is_some_and(|s| (400..500).contains(&s) && s != 408 && s != 429)
    }
}

/// A JSON API at `base` (scheme and host).
#[derive(Debug)]
pub struct ApiClient {
    http: HttpClient,
    base: String,
    auth: Auth,
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    /// The JSON body; `Null` when empty.
    pub body: Value,
}

impl Answer {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Whether a call may be sent again after a failure that may have been
/// processed (a 5xx, a dropped connection). A 429 is always retried: the
/// API did not act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Safe,
    Unsafe,
}

impl ApiClient {
    pub fn new(base: &str, auth: Auth) -> Result<Self, ApiError> {
        let allow_http = base.starts_with("http://");
        let http = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(allow_http))
            .map_err(|e| ApiError::new(None, format!("cannot make an HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            auth,
        })
    }

    /// `METHOD base/path` with an optional JSON body; the JSON answer.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Value, ApiError> {
        Ok(self.call_full(method, path, body, repeat).await?.body)
    }

    /// The URL of `path`: relative to the base, or an absolute URL under it
    /// (as long-running operations point at); the token is never sent
    /// elsewhere.
    fn url(&self, path: &str) -> Result<String, ApiError> {
        if path.starts_with("http://") || path.starts_with("https://") {
            if path.starts_with(&format!("{}/", self.base)) {
                return Ok(path.to_owned());
            }
            return Err(ApiError::new(
                None,
                format!(
                    "refusing to send a token to {path}: not under {}",
                    self.base
                ),
            ));
        }
        Ok(format!("{}/{}", self.base, path.trim_start_matches('/')))
    }

    /// As [`Self::call`], with the answer's status and headers.
    pub async fn call_full(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        repeat: Repeat,
    ) -> Result<Answer, ApiError> {
        let url = self.url(path)?;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        loop {
            let outcome = self.send_once(&method, &url, body).await;
            let wait = match &outcome {
                Ok(response) if response.status().as_u16() == 429 => {
                    Some(retry_after(response).unwrap_or(backoff))
                }
                Ok(response)
                    if matches!(response.status().as_u16(), 500 | 502 | 503 | 504)
                        && repeat == Repeat::Safe =>
                {
                    Some(retry_after(response).unwrap_or(backoff))
                }
                Err(_) if repeat == Repeat::Safe => Some(backoff),
                _ => None,
            };
            match wait {
                Some(wait) if attempt < MAX_ATTEMPTS => {
                    tracing::debug!(%url, attempt, ?wait, "retrying a cloud API call");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    backoff = (backoff * 2).min(MAX_RETRY_AFTER);
                }
                _ => {
                    let response = outcome?;
                    let status = response.status();
                    if status.is_success() {
                        let headers = response.headers().clone();
                        let body = read_limited(response, MAX_JSON).await?;
                        let body = if body.is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_slice(&body).map_err(|e| {
                                ApiError::new(None, format!("{method} {url}: not JSON: {e}"))
                            })?
                        };
                        return Ok(Answer {
                            status: status.as_u16(),
                            headers,
                            body,
                        });
                    }
                    return Err(status_error(response).await);
                }
            }
        }
    }

    async fn send_once(
        &self,
        method: &Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<HttpResponse, ApiError> {
        let mut builder = http::Request::builder().method(method.clone()).uri(url);
        let token = match &self.auth {
            Auth::Bearer(token) => token.clone(),
            Auth::Azure(token) => token.get(&self.http).await?,
            Auth::Google(provider) => provider
                .get_credential()
                .await
                .map_err(|e| ApiError::new(None, format!("cannot get a Google token: {e}")))?
                .bearer
                .clone(),
        };
        builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        let body = match body {
            Some(json) => {
                let bytes = json.to_string().into_bytes();
                builder = builder
                    .header(CONTENT_TYPE, "application/json")
                    .header(CONTENT_LENGTH, bytes.len());
                HttpRequestBody::from(bytes)
            }
            None => {
                if *method == Method::POST {
                    builder = builder.header(CONTENT_LENGTH, 0);
                }
                HttpRequestBody::empty()
            }
        };
        let request = builder
            .body(body)
            .map_err(|e| ApiError::new(None, format!("cannot build the request: {e}")))?;
        self.http
            .execute(request)
            .await
            .map_err(|e| ApiError::new(None, format!("{method} {url}: {e}")))
    }
}

/// `Retry-After` in seconds (the form these APIs send), capped.
fn retry_after(response: &HttpResponse) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The status and the API's message: Google's and Azure's error bodies
/// both put it at `error.message`.
async fn status_error(response: HttpResponse) -> ApiError {
    let status = response.status();
    let body = read_limited(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    let message: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(500)
        .collect();
    ApiError::new(
        Some(status.as_u16()),
        format!("HTTP {}: {}", status.as_u16(), message.trim()),
    )
}

/// At most `limit` bytes of a body (an error past it).
async fn read_limited(response: HttpResponse, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = response.into_body().bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::new(None, format!("reading a response: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::new(
                None,
                format!("a response is larger than {limit} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

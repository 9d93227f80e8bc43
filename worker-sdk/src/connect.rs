//! Connecting to an ork server the way every Rust client of ork does (the
//! CLI, `ork-worker`, pool workers): plain HTTP/2 or TLS (a CA file to trust,
//! a client certificate for mutual TLS), with a bearer credential on every
//! call.
//!
//! The settings come from [`ConnectOptions`], which reads the same variables
//! in every ork client and SDK: `ORK_TOKEN`, `ORK_CA_CERT`,
//! `ORK_CLIENT_CERT`, `ORK_CLIENT_KEY` and `ORK_TLS_SERVER_NAME`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::Error;

/// A channel that sends the bearer credential with every call.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// How to reach and authenticate to a server.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    /// The credential sent as `authorization: Bearer ...`: an API token, or
    /// a launched worker's attempt token.
    pub token: Option<String>,
    /// A PEM file of the CA (or self-signed certificate) to trust; without
    /// it, an `https://` server is checked against the system's roots.
    pub ca_cert: Option<PathBuf>,
    /// A PEM client certificate and its key, for servers that require mutual
    /// TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The name to check the server's certificate for, when it differs from
    /// the URL's host (a worker reaching its server over loopback).
    pub server_name: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    // The token is a credential: keep it out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl ConnectOptions {
    /// From `ORK_TOKEN`, `ORK_CA_CERT`, `ORK_CLIENT_CERT`, `ORK_CLIENT_KEY`
    /// and `ORK_TLS_SERVER_NAME` (empty values count as unset).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`ConnectOptions::from_env`], through `get`.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        Self {
            token: var("ORK_TOKEN").map(|t| t.trim().to_owned()),
            ca_cert: var("ORK_CA_CERT").map(PathBuf::from),
            client_cert: var("ORK_CLIENT_CERT").map(PathBuf::from),
            client_key: var("ORK_CLIENT_KEY").map(PathBuf::from),
            server_name: var("ORK_TLS_SERVER_NAME"),
        }
    }

    /// The same settings with another credential.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// An endpoint for `url` (`http://host:port`, `https://host:port`, or a
    /// bare `host:port` taken as `http://`) with these TLS settings.
    pub fn endpoint(&self, url: &str) -> Result<Endpoint, Error> {
        let url = normalize_url(url);
        let endpoint = Endpoint::from_shared(url.clone()).map_err(|e| Error::InvalidUrl {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let wants_tls = self.ca_cert.is_some()
            || self.client_cert.is_some()
            || self.client_key.is_some()
            || self.server_name.is_some();
        if !url.starts_with("https://") {
            if wants_tls {
                return Err(Error::Config(format!(
                    "TLS settings are given (a CA, a client certificate or a server name) but the server URL {url} is not https://; use https://, or unset ORK_CA_CERT / ORK_CLIENT_CERT / ORK_CLIENT_KEY / ORK_TLS_SERVER_NAME"
                )));
            }
            return Ok(endpoint);
        }
        let mut tls = ClientTlsConfig::new();
        tls = match &self.ca_cert {
            Some(path) => tls.ca_certificate(Certificate::from_pem(read("CA certificate", path)?)),
            None => tls.with_native_roots(),
        };
        match (&self.client_cert, &self.client_key) {
            (Some(cert), Some(key)) => {
                tls = tls.identity(Identity::from_pem(
                    read("client certificate", cert)?,
                    read("client key", key)?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "a client certificate needs its key and the key its certificate: give both (--client-cert and --client-key, or ORK_CLIENT_CERT and ORK_CLIENT_KEY)".to_owned(),
                ));
            }
        }
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        endpoint
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("TLS settings for {url}: {}", innermost(&e))))
    }

    /// The interceptor that adds the credential to every call.
    pub fn bearer(&self) -> Result<Bearer, Error> {
        let value = match &self.token {
            None => None,
            Some(token) => Some(
                MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                    Error::Config(
                        "the token holds characters a header cannot carry; copy it again from `ork token create`".to_owned(),
                    )
                })?,
            ),
        };
        Ok(Bearer(value))
    }

    /// A channel to `url` that connects on first use.
    pub fn connect_lazy(&self, url: &str) -> Result<AuthChannel, Error> {
        let channel = self
            .endpoint(url)?
            .connect_timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(InterceptedService::new(channel, self.bearer()?))
    }
}

/// Adds `authorization: Bearer ...` to every call (nothing without a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Accepts `host:port` as well as a full URL.
pub fn normalize_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::Config(format!("cannot read the {what} {}: {e}", path.display())))
}

/// The innermost cause of an error, which says most.
pub(crate) fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut source = err;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_usual_variables() {
        let vars = [
            ("ORK_TOKEN", " ork_abc\n"),
            ("ORK_CA_CERT", "/etc/ork/ca.pem"),
            ("ORK_CLIENT_CERT", ""),
            ("ORK_TLS_SERVER_NAME", "ork.internal"),
        ];
        let options = ConnectOptions::from_lookup(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        });
        assert_eq!(options.token.as_deref(), Some("ork_abc"));
        assert_eq!(options.ca_cert, Some(PathBuf::from("/etc/ork/ca.pem")));
        assert_eq!(options.client_cert, None, "empty is unset");
        assert_eq!(options.server_name.as_deref(), Some("ork.internal"));
        assert!(
            !format!("{options:?}").contains("ork_abc"),
            "the token is redacted"
        );
    }

    #[test]
    fn tls_settings_need_an_https_url_and_complete_pairs() {
        let tls = ConnectOptions {
            ca_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
            ..ConnectOptions::default()
        };
        let err = tls
            .endpoint("http://127.0.0.1:1")
            .expect_err("http with a CA");
        assert!(err.to_string().contains("not https://"), "{err}");
        let err = tls
            .endpoint("https://127.0.0.1:1")
            .expect_err("missing CA file");
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        let half = ConnectOptions {
            client_cert: Some(PathBuf::from("/x")),
            ..ConnectOptions::default()
        };
        let err = half
            .endpoint("https://127.0.0.1:1")
            .expect_err("cert without key");
        assert!(err.to_string().contains("needs its key"), "{err}");
        assert!(ConnectOptions::default().endpoint("127.0.0.1:7400").is_ok());
    }
}

//! Object-store selection by URL: `file://`, `memory://`, and (behind the
//! `s3`, `gcs` and `azure` cargo features) `s3://`, `gs://` and `az://`.
//!
//! Nothing here reads the environment: the caller gathers the settings (the
//! usual `AWS_*`, `GOOGLE_*` and `AZURE_*` variables, see
//! [`settings_from_vars`]) and passes them in. Options in the URL's query
//! (`s3://bucket/prefix?endpoint=http://127.0.0.1:9000&allow_http=true`)
//! override those settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::prefix::PrefixStore;

use super::{Error, check_segment};

/// Object-store settings by name: environment-style (`AWS_REGION`) or
/// `object_store` config keys (`aws_region`), case-insensitive.
pub type Settings = BTreeMap<String, String>;

/// Variable name prefixes the cloud backends understand.
const PREFIXES: &[&str] = &["AWS_", "GOOGLE_", "AZURE_", "STORAGE_EMULATOR_HOST"];

/// Keeps the variables (from `std::env::vars()`, typically) that configure an
/// object store. Done by the caller so configuration flows in from the top.
pub fn settings_from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Settings {
    vars.into_iter()
        .filter(|(k, _)| PREFIXES.iter().any(|p| k.starts_with(p)))
        .collect()
}

/// Opens the object store named by a URL.
pub fn open(url: &str, settings: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        let fail = |e: &dyn std::fmt::Display| Error::Open {
            url: url.to_owned(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(path).map_err(|e| fail(&e))?;
        let store =
            object_store::local::LocalFileSystem::new_with_prefix(path).map_err(|e| fail(&e))?;
        return Ok(Arc::new(store));
    }
    let parsed = CloudUrl::parse(url)?;
    let store: Arc<dyn ObjectStore> = match parsed.scheme.as_str() {
        "s3" => s3(&parsed, settings)?,
        "gs" => gcs(&parsed, settings)?,
        "az" | "azure" => azure(&parsed, settings)?,
        _ => return Err(Error::UnsupportedUrl(url.to_owned())),
    };
    if parsed.prefix.is_empty() {
        Ok(store)
    } else {
        // Parsed, not built from parts: `Path::from_iter` would percent-encode
        // non-ASCII letters, and `gs://b/été` must write under `été/`.
        let prefix =
            object_store::path::Path::parse(parsed.prefix.join("/")).map_err(|e| parsed.fail(e))?;
        Ok(Arc::new(PrefixStore::new(store, prefix)))
    }
}

/// `scheme://bucket/prefix/parts?key=value`, checked.
#[derive(Debug)]
#[cfg_attr(
    not(any(feature = "s3", feature = "gcs", feature = "azure")),
    allow(dead_code)
)]
struct CloudUrl {
    url: String,
    scheme: String,
    bucket: String,
    prefix: Vec<String>,
    query: Vec<(String, String)>,
}

#[cfg_attr(
    not(any(feature = "s3", feature = "gcs", feature = "azure")),
    allow(dead_code)
)]
impl CloudUrl {
    fn parse(url: &str) -> Result<Self, Error> {
        let fail = |message: String| Error::Open {
            url: url.to_owned(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|_| Error::UnsupportedUrl(url.to_owned()))?;
        let bucket = parsed.host_str().unwrap_or_default().to_owned();
        if bucket.is_empty() {
            return Err(fail(
                "the url names no bucket or container: write SCHEME://BUCKET/PREFIX".into(),
            ));
        }
        // The path as written: URL parsing would quietly resolve `a/../b`.
        let raw = url.split_once("://").map_or("", |(_, rest)| rest);
        let raw = raw.split(['?', '#']).next().unwrap_or_default();
        for segment in raw.split('/').skip(1).filter(|s| !s.is_empty()) {
            check_segment(&percent_decode(segment).map_err(fail)?)
                .map_err(|e| fail(e.to_string()))?;
        }
        let mut prefix = Vec::new();
        for segment in parsed.path().split('/').filter(|s| !s.is_empty()) {
            let segment = percent_decode(segment).map_err(fail)?;
            check_segment(&segment).map_err(|e| fail(e.to_string()))?;
            prefix.push(segment);
        }
        let query = parsed
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        Ok(Self {
            url: url.to_owned(),
            scheme: parsed.scheme().to_owned(),
            bucket,
            prefix,
            query,
        })
    }

    fn fail(&self, message: impl std::fmt::Display) -> Error {
        Error::Open {
            url: self.url.clone(),
            message: message.to_string(),
        }
    }

    /// Settings then URL options, applied in that order (the URL wins).
    /// Unknown variables in `settings` are skipped (the environment holds many);
    /// an unknown URL option is an error, since someone wrote it on purpose.
    fn configure<K: std::str::FromStr>(
        &self,
        settings: &Settings,
        family: &str,
        mut apply: impl FnMut(K, &str),
    ) -> Result<(), Error> {
        for (k, v) in settings {
            let key = k.to_ascii_lowercase();
            if key.starts_with(family)
                && let Ok(parsed) = key.parse::<K>()
            {
                apply(parsed, v);
            }
        }
        for (k, v) in &self.query {
            let parsed = k
                .to_ascii_lowercase()
                .parse::<K>()
                .map_err(|_| self.fail(format!("unknown option `{k}` in the url query")))?;
            apply(parsed, v);
        }
        Ok(())
    }
}

/// Percent-decoding of a URL path segment (RFC 3986): `%2B` and a literal
/// `+` are both a plus, `%20` a space. Never form-decoding, where `+` would
/// turn into a space.
fn percent_decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| format!("the prefix segment `{s}` is not UTF-8 once percent-decoded"))
}

#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn is_true(v: Option<&String>) -> bool {
    v.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on"))
}

#[cfg(feature = "s3")]
fn s3(url: &CloudUrl, settings: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let mut builder = AmazonS3Builder::new();
    url.configure(settings, "aws_", |k: AmazonS3ConfigKey, v| {
        builder = std::mem::take(&mut builder).with_config(k, v);
    })?;
    let builder = builder.with_bucket_name(&url.bucket);
    check_plain_http(
        url,
        builder.get_config_value(&AmazonS3ConfigKey::Endpoint),
        builder.get_config_value(&AmazonS3ConfigKey::Client(
            object_store::ClientConfigKey::AllowHttp,
        )),
        "AWS_ALLOW_HTTP=true",
    )?;
    Ok(Arc::new(builder.build().map_err(|e| url.fail(e))?))
}

#[cfg(not(feature = "s3"))]
fn s3(url: &CloudUrl, _: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    Err(Error::FeatureDisabled {
        url: url.url.clone(),
        feature: "s3",
    })
}

/// `gs://` goes over the JSON API ([`super::gcs`]). Like Google's own client
/// libraries, `STORAGE_EMULATOR_HOST` (`host:port` or a URL) points it at an
/// emulator and sends no credentials at all; otherwise the credentials are
/// Google's usual chain as object_store implements it:
/// `GOOGLE_APPLICATION_CREDENTIALS` (a service-account key or `gcloud` user
/// credentials), `~/.config/gcloud/application_default_credentials.json`,
/// then the metadata server. Settings and URL options (`base_url`,
/// `bearer_token`, `skip_signature`, `allow_http`, timeouts, proxy) override.
#[cfg(feature = "gcs")]
fn gcs(url: &CloudUrl, settings: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
    use object_store::{ClientConfigKey, ClientOptions, RetryConfig};

    use super::gcs::{Config, DEFAULT_BASE_URL, GoogleCloudStorageJson};

    let emulator = settings
        .get("STORAGE_EMULATOR_HOST")
        .filter(|h| !h.is_empty());
    let mut base_url = None;
    let mut client_options = ClientOptions::new();
    if let Some(host) = emulator {
        base_url = Some(if host.contains("://") {
            host.clone()
        } else {
            format!("http://{host}")
        });
        client_options = client_options.with_allow_http(true);
    }
    let mut credentials = GoogleCloudStorageBuilder::new();
    url.configure(settings, "google_", |k: GoogleConfigKey, v| {
        match k {
            GoogleConfigKey::BaseUrl => base_url = Some(v.to_owned()),
            GoogleConfigKey::Client(key) => {
                client_options = std::mem::take(&mut client_options).with_config(key, v);
            }
            _ => {}
        }
        credentials = std::mem::take(&mut credentials).with_config(k, v);
    })?;
    check_plain_http(
        url,
        base_url.clone(),
        client_options.get_config_value(&ClientConfigKey::AllowHttp),
        "GOOGLE_ALLOW_HTTP=true",
    )?;
    let anonymous = emulator.is_some()
        || is_true(
            credentials
                .get_config_value(&GoogleConfigKey::SkipSignature)
                .as_ref(),
        );
    // object_store's GCS client is built only for its credential provider
    // (it reads key files now and fetches tokens lazily); its data calls are
    // never used.
    let credentials = if anonymous {
        None
    } else {
        let built = credentials
            .with_bucket_name(&url.bucket)
            .build()
            .map_err(|e| url.fail(e))?;
        Some(built.credentials().clone())
    };
    let store = GoogleCloudStorageJson::new(Config {
        base_url: base_url.unwrap_or_else(|| DEFAULT_BASE_URL.to_owned()),
        bucket: url.bucket.clone(),
        client_options,
        credentials,
        retry: RetryConfig::default(),
    })
    .map_err(|e| url.fail(e))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "gcs"))]
fn gcs(url: &CloudUrl, _: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    Err(Error::FeatureDisabled {
        url: url.url.clone(),
        feature: "gcs",
    })
}

#[cfg(feature = "azure")]
fn azure(url: &CloudUrl, settings: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    let mut builder = MicrosoftAzureBuilder::new();
    url.configure(settings, "azure_", |k: AzureConfigKey, v| {
        builder = std::mem::take(&mut builder).with_config(k, v);
    })?;
    let builder = builder.with_container_name(&url.bucket);
    let emulator = is_true(
        builder
            .get_config_value(&AzureConfigKey::UseEmulator)
            .as_ref(),
    );
    if !emulator
        && builder
            .get_config_value(&AzureConfigKey::AccountName)
            .is_none()
    {
        return Err(url.fail(
            "no storage account: set AZURE_STORAGE_ACCOUNT_NAME (or ?account_name=...), \
             or AZURE_STORAGE_USE_EMULATOR=true for azurite",
        ));
    }
    if !emulator {
        check_plain_http(
            url,
            builder.get_config_value(&AzureConfigKey::Endpoint),
            builder.get_config_value(&AzureConfigKey::Client(
                object_store::ClientConfigKey::AllowHttp,
            )),
            "AZURE_ALLOW_HTTP=true",
        )?;
    }
    Ok(Arc::new(builder.build().map_err(|e| url.fail(e))?))
}

#[cfg(not(feature = "azure"))]
fn azure(url: &CloudUrl, _: &Settings) -> Result<Arc<dyn ObjectStore>, Error> {
    Err(Error::FeatureDisabled {
        url: url.url.clone(),
        feature: "azure",
    })
}

/// The HTTP client refuses plain HTTP unless told; say so when opening,
/// rather than on the first request.
#[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
fn check_plain_http(
    url: &CloudUrl,
    endpoint: Option<String>,
    allow_http: Option<String>,
    setting: &str,
) -> Result<(), Error> {
    match endpoint {
        Some(endpoint) if endpoint.starts_with("http://") && !is_true(allow_http.as_ref()) => {
            Err(url.fail(format!(
                "endpoint {endpoint} is plain HTTP: set {setting} (or ?allow_http=true) to allow it"
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(feature = "s3", feature = "gcs", feature = "azure"))]
    fn settings(pairs: &[(&str, &str)]) -> Settings {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn open_err(url: &str, s: &Settings) -> String {
        match open(url, s) {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn keeps_only_object_store_variables() {
        let vars = vec![
            ("AWS_REGION".to_owned(), "eu-west-1".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
            ("AZURE_STORAGE_ACCOUNT_NAME".to_owned(), "acct".to_owned()),
            (
                "STORAGE_EMULATOR_HOST".to_owned(),
                "localhost:4443".to_owned(),
            ),
        ];
        let kept = settings_from_vars(vars);
        assert_eq!(
            kept.keys().collect::<Vec<_>>(),
            [
                "AWS_REGION",
                "AZURE_STORAGE_ACCOUNT_NAME",
                "STORAGE_EMULATOR_HOST"
            ]
        );
    }

    #[test]
    fn rejects_unknown_schemes_and_traversal_in_the_prefix() {
        assert!(open_err("ftp://x/y", &Settings::new()).contains("unsupported object store url"));
        assert!(
            open_err("s3://bucket/a/../b", &Settings::new())
                .contains("invalid object path segment `..`")
        );
        assert!(open_err("s3://bucket/a/%2E%2E/b", &Settings::new()).contains("`..`"));
        assert!(open_err("s3:///prefix", &Settings::new()).contains("names no bucket"));
    }

    #[cfg(feature = "s3")]
    #[test]
    fn s3_urls_take_settings_and_query_options() {
        let s = settings(&[
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_PROFILE", "x"),
        ]);
        open("s3://bucket/some/prefix?region=eu-west-1", &s).expect("opens");
        let err = open_err("s3://bucket?endpoint=http://127.0.0.1:1", &s);
        assert!(
            err.contains("s3://bucket?endpoint=http://127.0.0.1:1")
                && err.contains("AWS_ALLOW_HTTP"),
            "{err}"
        );
        open(
            "s3://bucket?endpoint=http://127.0.0.1:1&allow_http=true",
            &s,
        )
        .expect("opens");
        let err = open_err("s3://bucket?colour=blue", &s);
        assert!(err.contains("unknown option `colour`"), "{err}");
    }

    #[cfg(feature = "gcs")]
    #[test]
    fn gcs_urls_accept_an_emulator_host_and_refuse_silent_plain_http() {
        let s = settings(&[("STORAGE_EMULATOR_HOST", "127.0.0.1:4443")]);
        open("gs://bucket/prefix", &s).expect("opens");
        let plain = "gs://bucket?base_url=http://127.0.0.1:1&skip_signature=true";
        let err = open_err(plain, &Settings::new());
        assert!(
            err.contains(plain) && err.contains("GOOGLE_ALLOW_HTTP=true"),
            "{err}"
        );
        open(&format!("{plain}&allow_http=true"), &Settings::new()).expect("opens");
        let err = open_err("gs://bucket?colour=blue", &s);
        assert!(err.contains("unknown option `colour`"), "{err}");
        let err = open_err(
            "gs://bucket/p",
            &settings(&[("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")]),
        );
        assert!(err.contains("gs://bucket/p"), "{err}");
    }

    #[test]
    fn prefixes_are_percent_decoded_not_form_decoded() {
        let url = CloudUrl::parse("gs://bucket/a+b/%2B%20c/h%C3%A9/ü?x=1").expect("parses");
        assert_eq!(url.prefix, ["a+b", "+ c", "hé", "ü"]);
        let err = CloudUrl::parse("gs://bucket/%FF")
            .expect_err("not UTF-8")
            .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[cfg(feature = "azure")]
    #[test]
    fn azure_urls_need_an_account_or_the_emulator() {
        let err = open_err("az://container/prefix", &Settings::new());
        assert!(
            err.contains("AZURE_STORAGE_ACCOUNT_NAME") && err.contains("az://container/prefix"),
            "{err}"
        );
        open(
            "az://container/prefix",
            &settings(&[("AZURE_STORAGE_USE_EMULATOR", "true")]),
        )
        .expect("opens");
    }
}

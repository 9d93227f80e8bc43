//! `gs://` over Cloud Storage's JSON API (`/storage/v1`, uploads through
//! `/upload/storage/v1?uploadType=multipart`), as an [`ObjectStore`], so the
//! mirror, the reader and `PrefixStore` use it like every other backend.
//!
//! Why not object_store's own GCS client: it uploads through the XML API
//! (`PUT /bucket/object`), which the emulator that runs here
//! (fake-gcs-server) rejects, so writes could not be tested. Why not the
//! `google-cloud-storage` crate: for the handful of calls ork makes it
//! brings a second HTTP stack (reqwest 0.12 beside object_store's 0.13),
//! gRPC and a dozen Google crates. This module is those calls over
//! object_store's own HTTP client (its timeouts, proxy and TLS options), and
//! it takes its bearer tokens from object_store's Google credential chain
//! (service-account key, `gcloud` user credentials, or the metadata server,
//! each cached until near expiry), so no authentication is written here.
//!
//! Supported: put (overwrite, create-if-absent, update-if-generation), get
//! (ranges, a given generation, ETag and date preconditions), head, list
//! (recursive, with an offset, and with a delimiter), delete, copy
//! (overwrite and create-if-absent). Not supported: multipart uploads,
//! whose `put_multipart_opts` returns [`object_store::Error::NotImplemented`]
//! (ork writes small documents in one request; a single upload takes up to
//! 5 TiB); object tags are ignored, as object_store's GCS client does
//! (Cloud Storage has none). An object's version is its generation.

mod client;
mod resource;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use http::Method;
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::gcp::GcpCredentialProvider;
use object_store::path::Path;
use object_store::{
    ClientOptions, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RetryConfig,
};

use client::{Client, Error, Request, STORE, encode};
use resource::{LIST_FIELDS, NewObject, Object, ObjectsPage, RewriteProgress};

/// Where Cloud Storage is when nothing says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://storage.googleapis.com";

/// How to reach one bucket.
pub struct Config {
    /// The API's scheme and host, e.g. [`DEFAULT_BASE_URL`] or an emulator's
    /// `http://127.0.0.1:4443`.
    pub base_url: String,
    pub bucket: String,
    /// Timeouts, proxy, TLS and plain-HTTP permission of the HTTP client,
    /// and content types by file suffix.
    pub client_options: ClientOptions,
    /// `None` sends no credentials (an emulator).
    pub credentials: Option<GcpCredentialProvider>,
    pub retry: RetryConfig,
}

/// A Cloud Storage bucket over the JSON API.
#[derive(Debug, Clone)]
pub struct GoogleCloudStorageJson {
    client: Arc<Client>,
    client_options: Arc<ClientOptions>,
}

impl GoogleCloudStorageJson {
    pub fn new(config: Config) -> object_store::Result<Self> {
        let http = ReqwestConnector::default().connect(&config.client_options)?;
        Ok(Self {
            client: Arc::new(Client::new(
                http,
                &config.base_url,
                &config.bucket,
                config.credentials,
                config.retry,
            )),
            client_options: Arc::new(config.client_options),
        })
    }

    async fn object(&self, location: &Path, generation: Option<&str>) -> Result<Object, Error> {
        let mut url = self.client.object_url(location.as_ref());
        if let Some(generation) = generation {
            url.push_str(&format!("?generation={}", encode(generation)));
        }
        self.client.json(&Request::new(Method::GET, url)).await
    }

    async fn head_result(&self, location: &Path, options: &GetOptions) -> Result<GetResult, Error> {
        let object = self.object(location, options.version.as_deref()).await?;
        let meta = object.meta()?;
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream::empty().boxed()),
            range: 0..meta.size,
            attributes: object.attributes(),
            meta,
            extensions: Default::default(),
        })
    }

    /// One page of a listing; `prefix` is the raw name prefix.
    async fn page(
        &self,
        prefix: &str,
        delimiter: bool,
        start_offset: Option<&str>,
        token: Option<&str>,
    ) -> Result<ObjectsPage, Error> {
        // Cloud Storage's default and largest page, said explicitly so that
        // emulators (which return everything at once otherwise) page too.
        let mut query = vec![("fields", LIST_FIELDS), ("maxResults", "1000")];
        if !prefix.is_empty() {
            query.push(("prefix", prefix));
        }
        if delimiter {
            query.push(("delimiter", "/"));
        }
        if let Some(offset) = start_offset {
            query.push(("startOffset", offset));
        }
        if let Some(token) = token {
            query.push(("pageToken", token));
        }
        let url = self.client.objects_url(&query_string(&query));
        self.client.json(&Request::new(Method::GET, url)).await
    }

    /// Every object under `prefix`, page by page, lazily.
    fn list_stream(
        &self,
        prefix: Option<&Path>,
        offset: Option<&Path>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let store = self.clone();
        let prefix = name_prefix(prefix);
        // `startOffset` is inclusive, object_store's offset exclusive.
        let offset = offset.map(|o| o.as_ref().to_owned());
        let first = Some(None::<String>);
        stream::try_unfold(first, move |token| {
            let (store, prefix, offset) = (store.clone(), prefix.clone(), offset.clone());
            async move {
                let Some(token) = token else {
                    return Ok::<_, object_store::Error>(None);
                };
                let page = store
                    .page(&prefix, false, offset.as_deref(), token.as_deref())
                    .await
                    .map_err(|e| e.into_store(&prefix, false))?;
                let metas = page
                    .items
                    .iter()
                    .map(Object::meta)
                    .filter(|m| match (m, &offset) {
                        (Ok(m), Some(offset)) => m.location.as_ref() > offset.as_str(),
                        _ => true,
                    })
                    .map(|m| m.map_err(|e| e.into_store(&prefix, false)))
                    .collect::<Vec<_>>();
                Ok(Some((stream::iter(metas), page.next_page_token.map(Some))))
            }
        })
        .try_flatten()
        .boxed()
    }

    async fn delete_one(&self, location: &Path) -> object_store::Result<()> {
        let url = self.client.object_url(location.as_ref());
        self.client
            .send(&Request::new(Method::DELETE, url))
            .await
            .map_err(|e| e.into_store(location.as_ref(), false))?;
        Ok(())
    }
}

impl fmt::Display for GoogleCloudStorageJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GoogleCloudStorageJson({})", self.client.bucket())
    }
}

/// `a/b` lists the objects under `a/b/`, not `a/bc`.
fn name_prefix(prefix: Option<&Path>) -> String {
    match prefix.map(Path::as_ref) {
        None | Some("") => String::new(),
        Some(p) => format!("{p}/"),
    }
}

fn query_string(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| format!("{}{k}={}", if i == 0 { '?' } else { '&' }, encode(v)))
        .collect()
}

fn not_implemented(operation: &str) -> object_store::Error {
    object_store::Error::NotImplemented {
        operation: operation.to_owned(),
        implementer: "GoogleCloudStorageJson".to_owned(),
    }
}

#[async_trait]
impl ObjectStore for GoogleCloudStorageJson {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let name = location.as_ref();
        let (precondition, create) = match &opts.mode {
            PutMode::Overwrite => (None, false),
            PutMode::Create => (Some("0".to_owned()), true),
            PutMode::Update(version) => {
                let Some(generation) = &version.version else {
                    return Err(Error::Unsupported(
                        "a conditional update on Cloud Storage needs the object's generation \
                         (UpdateVersion::version, from a put or head); an ETag alone cannot be matched"
                            .into(),
                    )
                    .into_store(name, false));
                };
                (Some(generation.clone()), false)
            }
        };
        let fail = |e: Error| e.into_store(name, create);
        let metadata = NewObject::new(
            name,
            &opts.attributes,
            self.client_options.get_content_type(location),
        )
        .map_err(fail)?;
        let (content_type, body) = resource::multipart_body(&metadata, &payload).map_err(fail)?;
        let mut query = vec![
            ("uploadType", "multipart"),
            ("fields", "name,size,updated,etag,generation"),
        ];
        if let Some(generation) = &precondition {
            query.push(("ifGenerationMatch", generation));
        }
        let mut request = Request::new(
            Method::POST,
            format!("{}{}", self.client.upload_url(), query_string(&query)),
        );
        request.content_type = Some(content_type);
        request.body = Some(body);
        let object: Object = self.client.json(&request).await.map_err(fail)?;
        Ok(PutResult {
            e_tag: object.etag,
            version: object.generation,
            extensions: Default::default(),
        })
    }

    /// Not implemented: see the module documentation.
    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(not_implemented("put_multipart_opts (multipart uploads)"))
    }

    /// One request for a plain read. With ETag or date preconditions, the
    /// metadata is read and checked first, and the bytes are then read
    /// with `ifGenerationMatch`, so they are those of the object checked.
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let name = location.as_ref();
        let fail = |e: Error| e.into_store(name, false);
        if options.head {
            let result = self.head_result(location, &options).await.map_err(fail)?;
            options.check_preconditions(&result.meta)?;
            return Ok(result);
        }
        if let Some(range) = &options.range {
            range.is_valid().map_err(|e| object_store::Error::Generic {
                store: STORE,
                source: Box::new(e),
            })?;
        }
        let mut query = vec![("alt", "media".to_owned())];
        if let Some(version) = &options.version {
            query.push(("generation", version.clone()));
        }
        let conditional = options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some();
        if conditional {
            let head = self.head_result(location, &options).await.map_err(fail)?;
            options.check_preconditions(&head.meta)?;
            if let Some(generation) = head.meta.version {
                query.push(("ifGenerationMatch", generation));
            }
        }
        let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut request = Request::new(
            Method::GET,
            format!("{}{}", self.client.object_url(name), query_string(&pairs)),
        );
        request.range = options.range.as_ref().map(ToString::to_string);
        let response = self.client.send(&request).await.map_err(fail)?;
        let download = resource::download(location, response.headers()).map_err(fail)?;
        if options.range.is_some() && response.status() != http::StatusCode::PARTIAL_CONTENT {
            let whole = download.meta.size;
            let wanted = options.range.as_ref().map(|r| r.as_range(whole));
            // A suffix longer than the object is the whole object.
            if !matches!(wanted, Some(Ok(r)) if r == (0..whole)) {
                return Err(fail(Error::Response(format!(
                    "asked for {} of `{name}` and got the whole object",
                    request.range.unwrap_or_default()
                ))));
            }
        }
        let path = name.to_owned();
        let payload = response
            .into_body()
            .bytes_stream()
            .map_err(move |e| object_store::Error::Generic {
                store: STORE,
                source: format!("reading `{path}`: {e}").into(),
            })
            .boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            meta: download.meta,
            range: download.range,
            attributes: download.attributes,
            extensions: Default::default(),
        })
    }

    /// Ten deletes at a time (the JSON API's batch endpoint takes
    /// `multipart/mixed` requests and is not worth it for ork's few deletes).
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let store = self.clone();
        locations
            .map(move |location| {
                let store = store.clone();
                async move {
                    let location = location?;
                    store.delete_one(&location).await?;
                    Ok(location)
                }
            })
            .buffered(10)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_stream(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_stream(prefix, Some(offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let prefix = name_prefix(prefix);
        let fail = |e: Error| e.into_store(&prefix, false);
        let mut result = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut token = None;
        loop {
            let page = self
                .page(&prefix, true, None, token.as_deref())
                .await
                .map_err(fail)?;
            for object in &page.items {
                result.objects.push(object.meta().map_err(fail)?);
            }
            for p in &page.prefixes {
                result
                    .common_prefixes
                    .push(resource::location(p.trim_end_matches('/')).map_err(fail)?);
            }
            match page.next_page_token {
                Some(next) => token = Some(next),
                None => return Ok(result),
            }
        }
    }

    /// A server-side rewrite, repeated while Cloud Storage reports
    /// progress (large objects across locations or storage classes).
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let create = matches!(options.mode, CopyMode::Create);
        let fail = |e: Error| e.into_store(to.as_ref(), create);
        let base = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.client.object_url(from.as_ref()),
            encode(self.client.bucket()),
            encode(to.as_ref())
        );
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("fields", "done,rewriteToken")];
            if create {
                query.push(("ifGenerationMatch", "0"));
            }
            if let Some(token) = &token {
                query.push(("rewriteToken", token));
            }
            let mut request = Request::new(Method::POST, format!("{base}{}", query_string(&query)));
            request.content_type = Some("application/json".into());
            request.body = Some(PutPayload::from_static(b"{}"));
            let progress: RewriteProgress = self.client.json(&request).await.map_err(|e| {
                // The source missing is a 404 too: name it, not the target.
                if e.status() == Some(http::StatusCode::NOT_FOUND) {
                    e.into_store(from.as_ref(), false)
                } else {
                    fail(e)
                }
            })?;
            if progress.done {
                return Ok(());
            }
            token = Some(
                progress
                    .rewrite_token
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        fail(Error::Response(
                            "a rewrite that is not done returned no rewriteToken".into(),
                        ))
                    })?,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_at_a_segment_and_queries_encode_values() {
        assert_eq!(name_prefix(None), "");
        assert_eq!(name_prefix(Some(&Path::from(""))), "");
        assert_eq!(name_prefix(Some(&Path::from("a/b c"))), "a/b c/");
        assert_eq!(
            query_string(&[("prefix", "a+b c/"), ("delimiter", "/")]),
            "?prefix=a%2Bb%20c%2F&delimiter=%2F"
        );
        assert_eq!(query_string(&[]), "");
    }
}

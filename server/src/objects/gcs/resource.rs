//! The JSON API's resources as ork reads them (objects, listing pages,
//! rewrite progress), and their translation to and from object_store's
//! types: metadata, attributes, and the `multipart/related` upload body.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::HeaderMap;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectMeta, PutPayload};
use serde::{Deserialize, Serialize};

use super::client::Error;

/// The fields of an object resource ork uses. Sizes and generations are
/// int64 values, which the JSON API writes as strings.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Object {
    pub name: String,
    pub size: String,
    pub updated: DateTime<Utc>,
    #[serde(default)]
    pub etag: Option<String>,
    #[serde(default)]
    pub generation: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub cache_control: Option<String>,
    #[serde(default)]
    pub content_disposition: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_language: Option<String>,
    #[serde(default)]
    pub storage_class: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The fields a listing asks for: on Cloud Storage a full object resource
/// is about ten times larger.
pub(super) const LIST_FIELDS: &str =
    "items(name,size,updated,etag,generation),prefixes,nextPageToken";

/// One page of `GET /storage/v1/b/{bucket}/o`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectsPage {
    #[serde(default)]
    pub items: Vec<Object>,
    #[serde(default)]
    pub prefixes: Vec<String>,
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// A step of `POST .../rewriteTo/...`: large copies take several calls.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RewriteProgress {
    pub done: bool,
    #[serde(default)]
    pub rewrite_token: Option<String>,
}

impl Object {
    pub fn meta(&self) -> Result<ObjectMeta, Error> {
        Ok(ObjectMeta {
            location: location(&self.name)?,
            last_modified: self.updated,
            size: parse_size(&self.size)?,
            e_tag: self.etag.clone(),
            version: self.generation.clone(),
        })
    }

    pub fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        let fields = [
            (Attribute::ContentType, &self.content_type),
            (Attribute::CacheControl, &self.cache_control),
            (Attribute::ContentDisposition, &self.content_disposition),
            (Attribute::ContentEncoding, &self.content_encoding),
            (Attribute::ContentLanguage, &self.content_language),
            (Attribute::StorageClass, &self.storage_class),
        ];
        for (attribute, value) in fields {
            if let Some(value) = value {
                attributes.insert(attribute, value.clone().into());
            }
        }
        for (k, v) in &self.metadata {
            attributes.insert(Attribute::Metadata(k.clone().into()), v.clone().into());
        }
        attributes
    }
}

/// An object name as a path, as object_store's own clients read them: a
/// trailing `/` (the console's folder placeholders) is dropped, and names
/// it cannot represent (`a//b`) are errors rather than different paths.
pub(super) fn location(name: &str) -> Result<Path, Error> {
    Path::parse(name).map_err(|e| Error::Response(format!("object name `{name}`: {e}")))
}

fn parse_size(size: &str) -> Result<u64, Error> {
    size.parse()
        .map_err(|_| Error::Response(format!("object size `{size}` is not a number")))
}

/// The metadata part of an upload: the object's name and attributes.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewObject<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_language: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<&'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<&'a str, &'a str>,
}

impl<'a> NewObject<'a> {
    /// `default_type` applies when the attributes name no content type.
    pub fn new(
        name: &'a str,
        attributes: &'a Attributes,
        default_type: Option<&'a str>,
    ) -> Result<Self, Error> {
        let mut object = NewObject {
            name,
            content_type: default_type,
            ..Default::default()
        };
        for (attribute, value) in attributes {
            let value: &str = value.as_ref();
            match attribute {
                Attribute::ContentType => object.content_type = Some(value),
                Attribute::CacheControl => object.cache_control = Some(value),
                Attribute::ContentDisposition => object.content_disposition = Some(value),
                Attribute::ContentEncoding => object.content_encoding = Some(value),
                Attribute::ContentLanguage => object.content_language = Some(value),
                Attribute::StorageClass => object.storage_class = Some(value),
                Attribute::Metadata(key) => {
                    object.metadata.insert(key.as_ref(), value);
                }
                other => {
                    return Err(Error::Unsupported(format!(
                        "the attribute {other:?} has no Cloud Storage equivalent"
                    )));
                }
            }
        }
        Ok(object)
    }
}

/// The body of an `uploadType=multipart` upload (what Google's own client
/// libraries send for small objects): the metadata as JSON, then the bytes.
/// Returns the request's content type and body; the payload's chunks are
/// shared, not copied.
pub(super) fn multipart_body(
    metadata: &NewObject<'_>,
    payload: &PutPayload,
) -> Result<(String, PutPayload), Error> {
    let json = serde_json::to_string(metadata)
        .map_err(|e| Error::Response(format!("cannot encode the object metadata: {e}")))?;
    let boundary = boundary_absent_from(payload);
    let media_type = metadata
        .content_type
        .unwrap_or("application/octet-stream")
        .replace(['\r', '\n'], "");
    let head = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json}\r\n\
         --{boundary}\r\nContent-Type: {media_type}\r\n\r\n"
    );
    let tail = format!("\r\n--{boundary}--\r\n");
    let body = std::iter::once(Bytes::from(head))
        .chain(payload.iter().cloned())
        .chain(std::iter::once(Bytes::from(tail)))
        .collect();
    Ok((format!("multipart/related; boundary={boundary}"), body))
}

/// A random boundary, checked against the payload so an object that
/// happens to contain it cannot end its own part early.
fn boundary_absent_from(payload: &PutPayload) -> String {
    loop {
        let boundary = format!("ork-{}", uuid::Uuid::new_v4().simple());
        let needle = boundary.as_bytes();
        // Chunk edges are checked by also scanning the joined neighbours.
        let chunks: Vec<&[u8]> = payload.iter().map(|b| b.as_ref()).collect();
        let found = chunks
            .iter()
            .any(|chunk| chunk.windows(needle.len()).any(|w| w == needle))
            || chunks.windows(2).any(|pair| {
                let edge = [
                    &pair[0][pair[0].len().saturating_sub(needle.len())..],
                    &pair[1][..pair[1].len().min(needle.len())],
                ]
                .concat();
                edge.windows(needle.len()).any(|w| w == needle)
            });
        if !found {
            return boundary;
        }
    }
}

/// What a media download's headers say about the object.
pub(super) struct Download {
    pub meta: ObjectMeta,
    pub range: std::ops::Range<u64>,
    pub attributes: Attributes,
}

/// Reads a `?alt=media` response's headers: the generation, ETag and
/// Last-Modified describe the object, `Content-Range` (on 206) the part sent.
pub(super) fn download(location: &Path, headers: &HeaderMap) -> Result<Download, Error> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let required = |name: &str| {
        text(name).ok_or_else(|| {
            Error::Response(format!("the download of `{location}` has no {name} header"))
        })
    };
    let last_modified = DateTime::parse_from_rfc2822(required("Last-Modified")?)
        .map_err(|e| Error::Response(format!("Last-Modified: {e}")))?
        .with_timezone(&Utc);
    let (range, size) = match text("content-range") {
        Some(content_range) => parse_content_range(content_range)?,
        None => {
            // The stored length: with decompressive transcoding the
            // Content-Length is that of the bytes sent, not of the object.
            let size = parse_size(
                text("x-goog-stored-content-length").unwrap_or(required("Content-Length")?),
            )?;
            (0..size, size)
        }
    };
    let mut attributes = Attributes::new();
    for (attribute, header) in [
        (Attribute::ContentType, "content-type"),
        (Attribute::CacheControl, "cache-control"),
        (Attribute::ContentDisposition, "content-disposition"),
        (Attribute::ContentLanguage, "content-language"),
    ] {
        if let Some(value) = text(header) {
            attributes.insert(attribute, AttributeValue::from(value.to_owned()));
        }
    }
    if let Some(encoding) = text("x-goog-stored-content-encoding").filter(|e| *e != "identity") {
        attributes.insert(Attribute::ContentEncoding, encoding.to_owned().into());
    }
    for (name, value) in headers {
        if let (Some(key), Ok(value)) = (name.as_str().strip_prefix("x-goog-meta-"), value.to_str())
        {
            attributes.insert(
                Attribute::Metadata(key.to_owned().into()),
                value.to_owned().into(),
            );
        }
    }
    Ok(Download {
        meta: ObjectMeta {
            location: location.clone(),
            last_modified,
            size,
            e_tag: text("etag").map(unquote),
            version: text("x-goog-generation").map(str::to_owned),
        },
        range,
        attributes,
    })
}

/// The JSON resource writes an ETag bare, the download header quoted: one
/// form everywhere, so the two compare equal.
fn unquote(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_owned()
}

/// `bytes 2-4/11` → (2..5, 11).
fn parse_content_range(value: &str) -> Result<(std::ops::Range<u64>, u64), Error> {
    let bad = || Error::Response(format!("unexpected Content-Range `{value}`"));
    let (span, total) = value
        .strip_prefix("bytes ")
        .and_then(|v| v.split_once('/'))
        .ok_or_else(bad)?;
    let (first, last) = span.split_once('-').ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    let total: u64 = total.parse().map_err(|_| bad())?;
    if first > last || last >= total {
        return Err(bad());
    }
    Ok((first..last + 1, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse_and_bad_ones_are_errors() {
        assert_eq!(parse_content_range("bytes 2-4/11").unwrap(), (2..5, 11));
        assert_eq!(parse_content_range("bytes 0-0/1").unwrap(), (0..1, 1));
        for bad in [
            "bytes */11",
            "bytes 5-2/11",
            "bytes 0-11/11",
            "items 0-1/2",
            "",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn downloads_read_the_object_from_the_headers() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("last-modified", "Sun, 29 Nov 2026 00:45:18 GMT"),
            ("content-length", "3"),
            ("content-range", "bytes 2-4/11"),
            ("content-type", "text/plain"),
            ("etag", "\"XrY7u+Ae7tCTyyK7j1rNww==\""),
            ("x-goog-generation", "1795913118362072"),
            ("x-goog-meta-k", "v"),
            ("x-goog-stored-content-encoding", "identity"),
        ] {
            headers.insert(k, v.parse().unwrap());
        }
        let d = download(&Path::from("a/b"), &headers).unwrap();
        assert_eq!((d.range, d.meta.size), (2..5, 11));
        assert_eq!(d.meta.e_tag.as_deref(), Some("XrY7u+Ae7tCTyyK7j1rNww=="));
        assert_eq!(d.meta.version.as_deref(), Some("1795913118362072"));
        assert_eq!(
            d.meta.last_modified.to_rfc3339(),
            "2026-11-29T00:45:18+00:00"
        );
        assert_eq!(
            d.attributes
                .get(&Attribute::Metadata("k".into()))
                .map(|v| v.as_ref()),
            Some("v")
        );
        assert!(d.attributes.get(&Attribute::ContentEncoding).is_none());

        headers.remove("content-range");
        headers.insert("x-goog-stored-content-length", "11".parse().unwrap());
        let d = download(&Path::from("a/b"), &headers).unwrap();
        assert_eq!((d.range, d.meta.size), (0..11, 11));

        headers.remove("last-modified");
        let err = download(&Path::from("a/b"), &headers).err().unwrap();
        assert!(err.to_string().contains("Last-Modified"), "{err}");
    }

    #[test]
    fn the_multipart_body_carries_metadata_then_the_bytes() {
        let attributes = Attributes::from_iter([
            (Attribute::CacheControl, "no-cache"),
            (Attribute::Metadata("run".into()), "r1"),
        ]);
        let object =
            NewObject::new("runs/r1/run.json", &attributes, Some("application/json")).unwrap();
        let payload = PutPayload::from_iter([Bytes::from("{\"a\":"), Bytes::from("1}")]);
        let (content_type, body) = multipart_body(&object, &payload).unwrap();
        let boundary = content_type
            .strip_prefix("multipart/related; boundary=")
            .unwrap();
        let body: Vec<u8> = body.iter().flat_map(|b| b.to_vec()).collect();
        let body = String::from_utf8(body).unwrap();
        assert_eq!(
            body,
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n\
                 {{\"name\":\"runs/r1/run.json\",\"contentType\":\"application/json\",\
                 \"cacheControl\":\"no-cache\",\"metadata\":{{\"run\":\"r1\"}}}}\r\n\
                 --{boundary}\r\nContent-Type: application/json\r\n\r\n{{\"a\":1}}\r\n\
                 --{boundary}--\r\n"
            )
        );
    }

    #[test]
    fn listing_pages_and_objects_parse() {
        let page: ObjectsPage = serde_json::from_str(
            r#"{"kind":"storage#objects","prefixes":["a/b/"],"nextPageToken":"t",
                "items":[{"name":"a/x y+z/é","size":"11","updated":"2026-11-29T00:45:18.362063Z",
                          "etag":"e","generation":"17","contentType":"text/plain","metadata":{"k":"v"}}]}"#,
        )
        .unwrap();
        assert_eq!(page.next_page_token.as_deref(), Some("t"));
        let meta = page.items[0].meta().unwrap();
        assert_eq!(meta.location.as_ref(), "a/x y+z/é");
        assert_eq!((meta.size, meta.version.as_deref()), (11, Some("17")));
        assert_eq!(page.items[0].attributes().len(), 2);
        assert_eq!(location("folder/").unwrap().as_ref(), "folder");
        assert!(location("a//b").is_err());
    }
}

//! The web UI: a static single-page app, built from `ui/` into the committed
//! `ui/dist/` and embedded in the binary at compile time, served at `/ui/` on
//! the API port. It holds no data and no private routes: the page reads
//! everything through the public REST API, like `curl` does.
//!
//! Every response carries a strict Content-Security-Policy (scripts and
//! styles only from this origin, no inline code, no other origin to connect
//! to), so text a task controls that somehow reached the page as markup still
//! could not run. `GET /` from a browser (an `Accept` that names `text/html`)
//! is redirected here; every other request to `/` is left to the gateway, so
//! REST and gRPC clients see no difference.

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::header::{
    ACCEPT, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS, X_FRAME_OPTIONS,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};
use sha2::{Digest as _, Sha256};

/// The built app (`ui/dist/`, produced by `ui/build.mjs`).
static DIST: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/../ui/dist");

/// Where the app is served.
pub const BASE_PATH: &str = "/ui/";

/// The page that boots the app; every app path without a file of its own
/// (`/ui/runs/ID`) serves it, and the app routes on the URL.
const INDEX: &str = "index.html";

/// Nothing but this origin's own files: no inline script or style, no
/// `eval`, no connection elsewhere, no framing, no form posting away.
pub const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Strong validators of every embedded file, computed once, so a browser
/// revalidates (`Cache-Control: no-cache`) for the price of a 304.
static ETAGS: LazyLock<HashMap<&'static str, String>> = LazyLock::new(|| {
    let mut etags = HashMap::new();
    let mut pending = vec![&DIST];
    while let Some(dir) = pending.pop() {
        pending.extend(dir.dirs());
        for file in dir.files() {
            if let Some(path) = file.path().to_str() {
                let digest = Sha256::digest(file.contents());
                let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
                etags.insert(path, format!("\"{hex}\""));
            }
        }
    }
    etags
});

/// The UI's routes; `with_ui` adds them and the browser redirect to a router.
fn routes() -> Router {
    Router::new()
        .route(
            "/ui",
            get(|| async { Redirect::permanent(BASE_PATH).into_response() }),
        )
        .route("/ui/", get(|headers: HeaderMap| async move { serve("", &headers) }))
        .route(
            "/ui/{*path}",
            get(|Path(path): Path<String>, headers: HeaderMap| async move { serve(&path, &headers) }),
        )
}

/// `rest` with the UI's routes, and `GET /` redirected to the UI for
/// browsers only. The routes are added after `rest`'s layers, so a layer
/// already on `rest` (authentication) does not apply to the UI's files.
pub fn with_ui(rest: Router) -> Router {
    rest.merge(routes())
        .layer(middleware::from_fn(redirect_browsers))
}

async fn redirect_browsers(request: Request, next: Next) -> Response {
    if request.method() == Method::GET
        && request.uri().path() == "/"
        && wants_html(request.headers())
    {
        return Redirect::to(BASE_PATH).into_response();
    }
    next.run(request).await
}

/// True when the client asks for HTML (a browser navigating), not JSON.
fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            item.split(';')
                .next()
                .is_some_and(|media| media.trim().eq_ignore_ascii_case("text/html"))
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json" | "map") => "application/json",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The file at `path` under `/ui/`, or the app's page for an app path. A
/// missing file that looks like one (it has an extension) is a 404, so a
/// broken asset link fails loudly instead of loading the page as script.
fn serve(path: &str, headers: &HeaderMap) -> Response {
    let name = match DIST.get_file(path) {
        Some(_) => path,
        None if path
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains('.')) =>
        {
            return with_security_headers(
                (
                    StatusCode::NOT_FOUND,
                    [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                    "not found",
                )
                    .into_response(),
            );
        }
        None => INDEX,
    };
    let Some(file) = DIST.get_file(name) else {
        return with_security_headers(
            (
                StatusCode::NOT_FOUND,
                [(CONTENT_TYPE, "text/plain; charset=utf-8")],
                "the web UI was not built into this binary",
            )
                .into_response(),
        );
    };
    let etag = ETAGS.get(name).map(String::as_str).unwrap_or_default();
    let fresh = headers
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(CONTENT_TYPE, content_type(name))], file.contents()).into_response()
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(etag) {
        h.insert(ETAG, value);
    }
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_security_headers(response)
}

fn with_security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(value).expect("header"));
        headers
    }

    #[test]
    fn only_html_accepts_are_browsers() {
        assert!(wants_html(&accept(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(wants_html(&accept("TEXT/HTML")));
        assert!(!wants_html(&accept("application/json")));
        assert!(!wants_html(&accept("*/*")));
        assert!(!wants_html(&HeaderMap::new()));
    }

    #[test]
    fn the_built_app_is_embedded_and_references_no_other_origin() {
        let index = DIST
            .get_file(INDEX)
            .and_then(|f| f.contents_utf8())
            .expect("ui/dist/index.html is embedded");
        assert!(!index.contains("<script>"), "no inline script: {index}");
        assert!(!index.contains("http://") && !index.contains("https://"));
        assert!(ETAGS.contains_key(INDEX));
    }

    #[test]
    fn app_paths_serve_the_page_and_missing_files_are_404() {
        let page = serve("runs/0190-abc", &HeaderMap::new());
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(page.headers()[CONTENT_SECURITY_POLICY], POLICY);
        let missing = serve("assets/nope.js", &HeaderMap::new());
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[CONTENT_SECURITY_POLICY], POLICY);
    }

    #[test]
    fn a_matching_etag_is_not_modified() {
        let first = serve("", &HeaderMap::new());
        let etag = first.headers()[ETAG].clone();
        let mut headers = HeaderMap::new();
        headers.insert(IF_NONE_MATCH, etag);
        assert_eq!(serve("", &headers).status(), StatusCode::NOT_MODIFIED);
    }
}

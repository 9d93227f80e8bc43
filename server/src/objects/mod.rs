//! The object-store mirror: every committed state change is copied into a
//! bucket (a local folder by default) so a run can be audited, and its outputs
//! read, without the server.
//!
//! Layout, built only from ids the server generated and names the domain
//! validated (no user-controlled path segments):
//!
//! ```text
//! workflows/{name}/{version}/workflow.yaml
//! workflows/{name}/{version}/files/{path}
//! runs/{run_id}/run.json
//! runs/{run_id}/tasks/{task}[.{index}]/attempts/{n}/{spec,status,output}.json, log.txt
//! ```

mod mirror;

use std::sync::Arc;

use object_store::ObjectStore;

pub use mirror::{Mirror, MirrorHandle};

/// Errors of the object-store layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unsupported object store url `{0}`: use file:///PATH or memory://")]
    UnsupportedUrl(String),
    #[error("cannot open object store at {url}: {message}")]
    Open { url: String, message: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("state: {0}")]
    State(#[from] crate::state::Error),
    #[error("invalid object path segment `{0}`")]
    InvalidSegment(String),
}

/// Opens the object store named by a URL.
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, Error> {
    if url == "memory://" || url == "memory:" {
        return Ok(Arc::new(object_store::memory::InMemory::new()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        std::fs::create_dir_all(path)
            .map_err(|e| Error::Open { url: url.to_owned(), message: e.to_string() })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| Error::Open { url: url.to_owned(), message: e.to_string() })?;
        return Ok(Arc::new(store));
    }
    Err(Error::UnsupportedUrl(url.to_owned()))
}

/// Builds an object path from segments, refusing any segment that could step
/// outside its folder. Ids and names are validated upstream; this is the last
/// line of defence.
pub fn object_path(segments: &[&str]) -> Result<object_store::path::Path, Error> {
    for s in segments {
        if s.is_empty() || *s == "." || *s == ".." || s.contains(['/', '\\', '\0']) {
            return Err(Error::InvalidSegment((*s).to_owned()));
        }
    }
    Ok(object_store::path::Path::from_iter(segments.iter().copied()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_path_rejects_traversal() {
        assert!(object_path(&["runs", "..", "x"]).is_err());
        assert!(object_path(&["runs", "a/b"]).is_err());
        assert!(object_path(&["runs", ""]).is_err());
        assert_eq!(object_path(&["runs", "r1", "run.json"]).unwrap().as_ref(), "runs/r1/run.json");
    }
}

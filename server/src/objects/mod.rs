//! The object-store mirror: every committed state change is copied into a
//! bucket (a local folder by default) so a run can be audited, and its outputs
//! read, without the server.
//!
//! Layout, built only from ids the server generated and names the domain
//! validated (no user-controlled path segments); [`layout`] owns the keys:
//!
//! ```text
//! workflows/{name}/{version}/workflow.yaml
//! workflows/{name}/{version}/files/{path}
//! runs/{run_id}/run.json                      (an ork.v1.Run in proto3 JSON)
//! runs/{run_id}/tasks/{task}[.{index}]/attempts/{n}/{spec,status,output}.json, log.txt
//! ```

#[cfg(feature = "gcs")]
mod gcs;
pub mod layout;
mod mirror;
mod open;
mod outputs;
mod reader;

use object_store::path::Path;

pub use mirror::Mirror;
pub use open::{Settings, open, settings_from_vars};
pub use outputs::ObjectOutputs;
pub use reader::{AttemptRecord, read_run, read_run_attempts};

/// Errors of the object-store layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "unsupported object store url `{0}`: use file:///PATH, memory://, s3://BUCKET/PREFIX, \
         gs://BUCKET/PREFIX or az://CONTAINER/PREFIX"
    )]
    UnsupportedUrl(String),
    #[error("object store url `{url}` needs ork built with the `{feature}` cargo feature")]
    FeatureDisabled { url: String, feature: &'static str },
    #[error("cannot open object store at `{url}`: {message}")]
    Open { url: String, message: String },
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    #[error("state: {0}")]
    State(#[from] crate::state::Error),
    #[error(
        "invalid object path segment `{0}`: ids and names may not be empty, `.`, `..` or contain `/`"
    )]
    InvalidSegment(String),
    #[error("{path} is not valid: {message}")]
    Corrupt { path: String, message: String },
    #[error("run `{0}` is not in the object store (no runs/{0}/run.json)")]
    RunNotFound(String),
}

/// Builds an object path from segments, refusing any segment that could step
/// outside its folder. Ids and names are validated upstream; this is the last
/// line of defence.
pub fn object_path(segments: &[&str]) -> Result<Path, Error> {
    for s in segments {
        check_segment(s)?;
    }
    Ok(Path::from_iter(segments.iter().copied()))
}

/// Refuses a segment that is empty, `.`, `..`, or holds a separator or NUL.
pub fn check_segment(s: &str) -> Result<(), Error> {
    if s.is_empty() || s == "." || s == ".." || s.contains(['/', '\\', '\0']) {
        return Err(Error::InvalidSegment(s.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_path_rejects_traversal() {
        assert!(object_path(&["runs", "..", "x"]).is_err());
        assert!(object_path(&["runs", "a/b"]).is_err());
        assert!(object_path(&["runs", ""]).is_err());
        assert_eq!(
            object_path(&["runs", "r1", "run.json"]).unwrap().as_ref(),
            "runs/r1/run.json"
        );
    }
}

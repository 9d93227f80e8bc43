//! The first admin token of a server that requires tokens.
//!
//! With `--bootstrap-token-file FILE`: when FILE exists, the token in it is
//! registered as the admin token `bootstrap` (once; a revoked one stays
//! revoked), so a deployment can hand the same secret to its servers and its
//! first client. When FILE does not exist and the server has no token yet, a
//! fresh token is written there (mode 0600). Without the option, the first
//! start makes one and returns it for the caller to show once.

use std::io::Write as _;
use std::path::Path;

use chrono::Utc;

use super::credentials;
use crate::state::tokens::{NewToken, Role, TokenStore};

/// The name of the first admin token.
pub const NAME: &str = "bootstrap";
/// Fewest characters after the prefix of a token given in a file: 32
/// characters of base64 are 192 bits.
const MIN_SECRET_CHARS: usize = 32;

/// Errors of bootstrapping; each names the file and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bootstrap token file {path}: {message}")]
    File { path: String, message: String },
    #[error("cannot make a random token: {0}")]
    Random(String),
    #[error("token store: {0}")]
    Store(#[from] crate::state::Error),
}

fn file_error(path: &Path, message: impl Into<String>) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn admin(token: &str) -> NewToken {
    NewToken {
        id: uuid::Uuid::now_v7().to_string(),
        name: NAME.to_owned(),
        role: Role::Admin,
        hash: credentials::hash(token),
        created_at: Utc::now(),
        expires_at: None,
        created_by: None,
    }
}

/// Makes sure the server has a first admin token. Returns the token when one
/// was made now and is written nowhere: the caller must show it, once.
pub async fn ensure(store: &dyn TokenStore, file: Option<&Path>) -> Result<Option<String>, Error> {
    let Some(path) = file else {
        let token = credentials::generate().map_err(|e| Error::Random(e.to_string()))?;
        return Ok(store
            .create_first_token(&admin(&token))
            .await?
            .then_some(token));
    };
    if !path.exists() {
        let token = credentials::generate().map_err(|e| Error::Random(e.to_string()))?;
        // Written before it is stored: a token that exists only in the
        // database would lock everyone out.
        match write_private(path, &token) {
            Ok(()) => {
                let new = admin(&token);
                if store.create_first_token(&new).await?
                    || store.token_by_hash(&new.hash).await?.is_some()
                {
                    return Ok(None);
                }
                // The server already had tokens: this one means nothing.
                let _ = std::fs::remove_file(path);
                tracing::info!(
                    file = %path.display(),
                    "the server already has tokens; no bootstrap token was written"
                );
                return Ok(None);
            }
            // Another replica sharing the file wrote it first: use its token.
            Err(WriteError::Exists) => {}
            Err(WriteError::Other(e)) => return Err(e),
        }
    }
    register_file(store, path).await
}

/// Registers the token a bootstrap file holds as the admin token `bootstrap`.
async fn register_file(store: &dyn TokenStore, path: &Path) -> Result<Option<String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| file_error(path, e.to_string()))?;
    let token = text.trim();
    if !credentials::is_api_token(token)
        || token.len() < credentials::PREFIX.len() + MIN_SECRET_CHARS
        || !token.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(file_error(
            path,
            format!(
                "it must hold one token: `{}` and at least {MIN_SECRET_CHARS} more characters (delete the file to have the server write a fresh one)",
                credentials::PREFIX
            ),
        ));
    }
    let new = admin(token);
    if !store.ensure_token(&new).await? && store.token_by_hash(&new.hash).await?.is_none() {
        tracing::warn!(
            file = %path.display(),
            "a live token named `{NAME}` already exists, so the token in the bootstrap file was not registered"
        );
    }
    Ok(None)
}

enum WriteError {
    Exists,
    Other(Error),
}

/// Creates `path` readable by its owner only, failing if it exists.
fn write_private(path: &Path, token: &str) -> Result<(), WriteError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            WriteError::Exists
        } else {
            WriteError::Other(file_error(path, format!("cannot create it: {e}")))
        }
    })?;
    writeln!(file, "{token}")
        .map_err(|e| WriteError::Other(file_error(path, format!("cannot write it: {e}"))))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> std::sync::Arc<dyn TokenStore> {
        crate::state::open_stores("sqlite::memory:", crate::state::Limits::default())
            .await
            .expect("store")
            .tokens
    }

    #[tokio::test]
    async fn replicas_sharing_a_file_agree_on_one_token() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("admin.token");
        let tokens = store().await;
        let (a, b) = tokio::join!(
            ensure(tokens.as_ref(), Some(&path)),
            ensure(tokens.as_ref(), Some(&path))
        );
        assert_eq!((a.expect("a"), b.expect("b")), (None, None));
        let token = std::fs::read_to_string(&path).expect("file");
        let found = tokens
            .token_by_hash(&credentials::hash(token.trim()))
            .await
            .expect("read")
            .expect("the file's token is the one registered");
        assert_eq!((found.name.as_str(), found.role), (NAME, Role::Admin));
        assert_eq!(tokens.list_tokens().await.expect("list").len(), 1);
    }

    #[tokio::test]
    async fn without_a_file_the_first_start_returns_the_token_once() {
        let tokens = store().await;
        let first = ensure(tokens.as_ref(), None).await.expect("first");
        let token = first.expect("made now");
        assert!(credentials::is_api_token(&token));
        assert_eq!(ensure(tokens.as_ref(), None).await.expect("second"), None);
    }

    #[tokio::test]
    async fn a_file_with_a_weak_token_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "ork_admin\n").expect("write");
        let err = ensure(store().await.as_ref(), Some(&path))
            .await
            .expect_err("weak");
        assert!(
            err.to_string().contains("at least 32 more characters"),
            "{err}"
        );
    }
}

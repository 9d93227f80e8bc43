//! The error type of the worker SDK.

use std::time::Duration;

/// Everything that can go wrong between a worker and the ork server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server no longer considers this attempt current (FAILED_PRECONDITION):
    /// a newer attempt exists or the task run already finished. The worker must
    /// stop; nothing it reports for this attempt will be recorded.
    #[error("attempt is no longer current, stop working on it: {0}")]
    Stale(String),

    /// The server answered with a status that retrying cannot fix.
    #[error("server rejected {call}: {code:?}: {message}")]
    Rpc {
        /// The WorkerService method, e.g. `CompleteTask`.
        call: &'static str,
        /// The gRPC status code.
        code: tonic::Code,
        /// The server's message.
        message: String,
    },

    /// The server stayed unreachable for the whole retry budget.
    #[error(
        "gave up on {call} after {elapsed:?} of retries, the server is unreachable: {last}; \
         check that ORK_SERVER points at a running ork server"
    )]
    Unreachable {
        /// The WorkerService method that could not be delivered.
        call: &'static str,
        /// How long the client kept trying.
        elapsed: Duration,
        /// The last transient error seen.
        last: String,
    },

    /// The server URL cannot be parsed.
    #[error("invalid server url {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },

    /// A required setting is missing or malformed.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The server answered with something the contract does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),

    /// A local file or process operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the worker was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with what was being done, for messages that say where
    /// it failed.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

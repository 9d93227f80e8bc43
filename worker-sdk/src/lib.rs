//! ork's Rust worker SDK, and the supervisor behind the `ork-worker` binary.
//!
//! # Modules
//!
//! - [`Client`] is a WorkerService client fenced to one attempt: every call
//!   carries the attempt's token, transient failures are retried with backoff,
//!   and a call for an attempt that is no longer current fails with
//!   [`Error::Stale`].
//! - [`launched`] runs any command as one task attempt (what `ork-worker` does).
//! - [`pool`] is a long-lived worker serving named handlers over one session.
//! - [`json`] converts between `serde_json::Value` and `google.protobuf.Value`.
//! - [`connect`] reaches a server over plain HTTP/2 or TLS with a bearer
//!   credential, from the variables every ork client reads (`ORK_TOKEN`,
//!   `ORK_CA_CERT`, `ORK_CLIENT_CERT`, `ORK_CLIENT_KEY`, `ORK_TLS_SERVER_NAME`).
//!
//! # Running a plain command as a task
//!
//! An executor starts `ork-worker` with `ORK_SERVER`, `ORK_TASK_RUN_ID`,
//! `ORK_ATTEMPT` and `ORK_TOKEN` set (optionally `ORK_WORK_DIR`,
//! `ORK_KEEP_WORK_DIR=1`, `ORK_KILL_GRACE_SECONDS`, and `ORK_SPEC_STDIN=1`
//! when it writes the attempt's spec to stdin instead of letting the worker
//! fetch it). The supervisor writes the
//! task's file (if it has one) into a fresh directory and runs, there, the
//! spec's `command` with the file's path appended (or alone, without a
//! file), or else the file by its extension: `.py` files with the spec's
//! `python` (default `python3`), `.sh` files with `bash`, anything else
//! directly. The task sees:
//!
//! | variable | meaning |
//! | --- | --- |
//! | `ORK_INPUT` | path of a JSON file holding the task's input |
//! | `ORK_OUTPUT` | path where the task may write its output as one JSON document (not created beforehand; missing or empty means `null`) |
//! | `ORK_RUN_ID`, `ORK_WORKFLOW`, `ORK_TASK_NAME` | which run and task this is |
//! | `ORK_TASK_RUN_ID`, `ORK_ATTEMPT`, `ORK_ATTEMPT_TOKEN`, `ORK_SERVER` | the attempt, for tasks that talk to the server themselves; `ORK_ATTEMPT_TOKEN` is the attempt's credential, valid only for its own `WorkerService` calls while it runs (`ORK_TOKEN`, an API token, is set only by the task's own `env`) |
//! | `ORK_CA_CERT`, `ORK_TLS_SERVER_NAME`, `ORK_CLIENT_CERT`, `ORK_CLIENT_KEY` | how to reach a TLS server, when it uses TLS |
//! | `ORK_PARALLEL_INDEX`, `ORK_PARALLEL_COUNT` | set only for the instances of a fan-out |
//! | `ORK_CONFIG_FILE` | path of the task's config file, when it has one |
//! | `ORK_DEADLINE` | RFC 3339 time after which the task is killed, when it has a timeout |
//! | `ORK_METRICS` | path of a file where the task may write figures to record, one `name value` line each (e.g. `rows 1200`) |
//! | `TRACEPARENT` | the W3C trace context of the attempt's span, to make the task's own spans part of its run's trace |
//!
//! plus the task's own `env` and the supervisor's environment. Its stdout and
//! stderr become its logs.
//!
//! # Exit codes of a task
//!
//! - `0`: success; the output is read from `ORK_OUTPUT`.
//! - `3`: failure that must **not** be retried (bad input, a permanent refusal).
//! - any other code, or death by a signal: failure, retried if the task allows.
//!
//! The error recorded for a failure is what the task wrote to the file named
//! by `ORK_ERROR` (an SDK's exception and traceback), else the exit code and
//! the last 20 lines of stderr.

mod client;
pub mod connect;
mod error;
pub use ork_proto::json;
pub mod launched;
mod logs;
pub mod metrics;
pub mod pool;
pub mod trace;

pub use client::{AttemptRef, Client, RetryPolicy};
pub use connect::ConnectOptions;
pub use error::Error;
pub use ork_proto::v1::{LogEntry, TaskSpec};

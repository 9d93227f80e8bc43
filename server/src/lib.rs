//! ork's control plane as a library: the state store, the object-store mirror,
//! the executors, the scheduler, the gRPC API and the web UI, composed by
//! [`Server`].

pub mod api;
pub mod auth;
pub mod executor;
pub mod hash;
pub mod metrics;
pub mod notify;
pub mod objects;
pub mod options;
pub mod reports;
pub mod scheduler;
pub mod secrets;
mod server;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod ui;
pub mod views;

pub use options::{AuthMode, AuthOptions, ClientLimits, DEFAULT_LISTEN, ServerOptions, TlsOptions};
pub use server::{Error, Server};

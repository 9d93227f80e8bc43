//! ork's control plane as a library: the state store, the object-store mirror,
//! the executors, the scheduler and the gRPC API, composed by [`Server`].

pub mod api;
pub mod executor;
pub mod hash;
pub mod metrics;
pub mod objects;
pub mod options;
pub mod scheduler;
pub mod secrets;
mod server;
pub mod state;
pub mod telemetry;

pub use options::{DEFAULT_LISTEN, ServerOptions};
pub use server::{Error, Server};

//! The `ork.v1` contract shared by the server, the CLI and every worker.
//!
//! Messages serialize to proto3 JSON (field names as written in the proto) so
//! the CLI's `--output json`, the REST gateway and gRPC all show one shape.

pub mod decode;
pub mod json;
pub mod time;
pub mod watch;

/// Generated code of package `ork.v1`.
#[allow(clippy::all, unreachable_pub, missing_docs, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("ork.v1");
    include!(concat!(env!("OUT_DIR"), "/ork.v1.serde.rs"));
}

/// Encoded `FileDescriptorSet` of every ork proto and its imports, for server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("ork_descriptor");

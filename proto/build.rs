//! Compiles `ork/v1/*.proto` with protox (no system protoc), then generates
//! prost messages, tonic services and pbjson serde impls from one descriptor set.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "ork/v1/workflow.proto",
    "ork/v1/run.proto",
    "ork/v1/worker.proto",
    "ork/v1/pool.proto",
    "ork/v1/token.proto",
    "ork/v1/schedule.proto",
    "ork/v1/event.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("ork_descriptor.bin");

    let fds = protox::Compiler::new(["."])?
        .include_imports(true)
        .include_source_info(true)
        .open_files(PROTOS)?
        .file_descriptor_set();
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(fds)?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .preserve_proto_field_names()
        .build(&[".ork.v1"])?;
    Ok(())
}

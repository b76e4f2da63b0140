//! Generates the protobuf types from `proto/`, the source of truth.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate so that a fresh clone
//! builds with nothing but the Rust toolchain; a `PROTOC` set in the
//! environment still wins.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    }
    let protos = [
        "proto/rtn/v1/client.proto",
        "proto/rtn/v1/relay.proto",
        "proto/rtn/v1/common.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    prost_build::Config::new().compile_protos(&protos, &["proto"])?;
    Ok(())
}

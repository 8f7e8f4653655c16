//! Compiles `proto/` with protox (pure Rust, so no system protoc), generates
//! the tonic client and server, and writes the descriptor set that the
//! checker serves through gRPC reflection.

use std::path::PathBuf;

use prost::Message;

const PROTO_ROOT: &str = "../../proto";
const FILES: &[&str] = &["tether/health/v1/health.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    let fds = protox::compile(FILES, [PROTO_ROOT])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tether_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}

//! Generates the server side of the Agones SDK services from the proto files in `proto/`,
//! the same files (and the same tonic-build) the `agones` crate builds its client from.

use std::process::Command;

fn main() {
    // prost-build runs `$PROTOC` or `protoc` from PATH; fail with the package to install
    // rather than with its generic "Could not find protoc" message.
    let protoc = std::env::var("PROTOC").unwrap_or_else(|_| "protoc".to_string());
    if Command::new(&protoc).arg("--version").output().is_err() {
        panic!(
            "arena-agones-double needs protoc to build the Agones SDK services: \
             install the Debian package protobuf-compiler (or set PROTOC)"
        );
    }
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_build::configure()
        .build_server(true)
        .build_client(false)
        .compile_protos(
            &["proto/sdk/sdk.proto", "proto/sdk/beta/beta.proto"],
            &["proto/sdk", "proto/googleapis", "proto/grpc-gateway"],
        )
        .expect("protoc could not compile the Agones proto files in tools/agones-double/proto");
}

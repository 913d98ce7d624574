//! Generates the member-to-member gRPC service from `proto/peer.proto` and the server
//! side of etcd's Auth service from `proto/auth.proto` (needs protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/peer.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/peer.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/auth.proto");
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_protos(&["proto/auth.proto"], &["proto"])?;
    Ok(())
}

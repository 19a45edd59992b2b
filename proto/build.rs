//! Generates the prost messages and tonic services from `proto/sus.proto` with a vendored `protoc`,
//! so that building needs nothing installed beyond cargo.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .bytes(".sus.v1.RaftRequest.payload")
        .bytes(".sus.v1.RaftReply.payload")
        .bytes(".sus.v1.SubmitRequest.content")
        .bytes(".sus.v1.AggregateReply.partial")
        .bytes(".sus.v1.ScanChunk.ipc")
        .compile_with_config(config, &["proto/sus.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/sus.proto");
    Ok(())
}

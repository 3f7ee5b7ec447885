//! Compiles the contract (`proto/sessionkeeper/v1/session.proto` and `transcript.proto`) with the
//! vendored `protoc` (no system protoc is needed) and writes the file descriptor set that gRPC
//! server reflection serves.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let includes = [std::path::PathBuf::from("proto"), protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("sessionkeeper_descriptor.bin"))
        .compile_with_config(
            config,
            &[
                std::path::PathBuf::from("proto/sessionkeeper/v1/session.proto"),
                std::path::PathBuf::from("proto/sessionkeeper/v1/transcript.proto"),
            ],
            &includes,
        )?;
    println!("cargo:rerun-if-changed=proto");
    // sqlx::migrate! embeds the migrations: rebuild when one is added.
    println!("cargo:rerun-if-changed=migrations");
    Ok(())
}

//! The generated gRPC contract (`proto/sessionkeeper/v1/session.proto`, `transcript.proto`) and its descriptor set for
//! server reflection. Clients in Rust (tests, the load generator) use these types too.

#![allow(clippy::all)]

tonic::include_proto!("sessionkeeper.v1");

/// The encoded `FileDescriptorSet` of the contract, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sessionkeeper_descriptor");

/// The fully qualified service name, as health checks and reflection name it (tonic generates it).
pub use session_service_server::SERVICE_NAME;

/// The fully qualified name of the transcript service.
pub use transcript_service_server::SERVICE_NAME as TRANSCRIPT_SERVICE_NAME;

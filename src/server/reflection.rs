//! gRPC server reflection, in both versions clients speak: `grpc.reflection.v1` (grpcurl ≥ 1.8.8,
//! current grpcui) and `grpc.reflection.v1alpha` (grpcurl before 1.8.8, Postman, k6, older grpcui,
//! Python's `grpc_reflection` client). Both describe the same services, each reflection service
//! included, so `grpcurl list` shows the same thing whichever version it asks. Reflection needs no
//! token (like health): it only describes the public contract.

use tonic_reflection::server::v1::{ServerReflection as V1, ServerReflectionServer as V1Server};
use tonic_reflection::server::v1alpha::{ServerReflection as V1Alpha, ServerReflectionServer as V1AlphaServer};
use tonic_reflection::server::{Builder, Error};

use crate::proto;

/// The descriptors both versions serve: the contract, health, and both reflection services.
fn described() -> Builder<'static> {
    Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        // Registered above, next to the other version's: not twice.
        .include_reflection_service(false)
}

/// The v1 and the v1alpha reflection services, to add to the server side by side.
pub fn services() -> Result<(V1Server<impl V1>, V1AlphaServer<impl V1Alpha>), Error> {
    Ok((described().build_v1()?, described().build_v1alpha()?))
}

//! The network edge: the gRPC service (handlers, conversions, the status mapping), health and
//! reflection, and the plain HTTP port with `/livez` and `/readyz`.

pub mod admission;
pub mod auth;
pub mod convert;
pub mod grpc;
pub mod health;
pub mod http;
pub mod observe;
mod status;
pub mod tls;

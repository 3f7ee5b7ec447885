//! The plain HTTP port: `/livez` and `/readyz` (200 or 503) mirror the gRPC health service, so
//! probes work when the gRPC port speaks TLS.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use super::health::Health;

pub fn router(health: Health) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(health)
}

fn probe(ok: bool, what: &'static str) -> (StatusCode, &'static str) {
    if ok {
        (StatusCode::OK, what)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ok\n")
    }
}

async fn livez(State(health): State<Health>) -> (StatusCode, &'static str) {
    probe(health.is_live(), "live\n")
}

async fn readyz(State(health): State<Health>) -> (StatusCode, &'static str) {
    probe(health.is_ready(), "ready\n")
}

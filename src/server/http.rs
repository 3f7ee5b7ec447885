//! The plain HTTP port: `/metrics` (Prometheus text) and `/livez`, `/readyz` (200 or 503), which
//! mirror the gRPC health service so probes work when the gRPC port speaks TLS.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::health::Health;
use crate::metrics::Metrics;
use crate::store::SessionStore;

#[derive(Debug, Clone)]
struct HttpState {
    health: Health,
    metrics: Arc<Metrics>,
    store: Arc<dyn SessionStore>,
}

pub fn router(health: Health, metrics: Arc<Metrics>, store: Arc<dyn SessionStore>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(HttpState { health, metrics, store })
}

fn probe(ok: bool, what: &'static str) -> (StatusCode, &'static str) {
    if ok {
        (StatusCode::OK, what)
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ok\n")
    }
}

async fn livez(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    probe(state.health.is_live(), "live\n")
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    probe(state.health.is_ready(), "ready\n")
}

async fn metrics_text(State(state): State<HttpState>) -> impl IntoResponse {
    let body = state
        .metrics
        .render(state.store.pool_stats(), &state.store.batch_stats());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        body,
    )
}

//! Liveness and readiness, one state behind the gRPC health service and the HTTP probes.
//! Liveness (`""`, `/livez`) is true while the process runs and is not shutting down; it never
//! depends on the database. Readiness (`sessionkeeper.v1.SessionService`, the same for
//! `sessionkeeper.v1.TranscriptService`, `/readyz`) is true while the store answers and its schema
//! is current, as checked by [`watch_store`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tonic_health::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthService, HealthServer};
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

use crate::proto::{SERVICE_NAME, TRANSCRIPT_SERVICE_NAME};

/// The services whose readiness is the store's: both are served by it.
const STORE_SERVICES: [&str; 2] = [SERVICE_NAME, TRANSCRIPT_SERVICE_NAME];
use crate::store::SessionStore;

/// How often readiness is re-checked, and how long one check may take.
const CHECK_INTERVAL: Duration = Duration::from_secs(1);
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    ready: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl Health {
    /// Starts live and not ready; also returns the gRPC health service to serve.
    pub async fn new() -> (Health, HealthServer<impl HealthService>) {
        let (reporter, server) = tonic_health::server::health_reporter();
        for service in STORE_SERVICES {
            reporter.set_service_status(service, ServingStatus::NotServing).await;
        }
        let health = Health {
            reporter,
            ready: Arc::new(AtomicBool::new(false)),
            stopping: Arc::new(AtomicBool::new(false)),
        };
        (health, server)
    }

    pub fn is_live(&self) -> bool {
        !self.stopping.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        self.is_live() && self.ready.load(Ordering::SeqCst)
    }

    /// Records the store's state; ignored once shutting down (readiness stays off).
    pub async fn set_ready(&self, ready: bool) {
        if !self.is_live() {
            return;
        }
        self.ready.store(ready, Ordering::SeqCst);
        let status = if ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        for service in STORE_SERVICES {
            self.reporter.set_service_status(service, status).await;
        }
    }

    /// Turns liveness and readiness off for good: the process is shutting down.
    pub async fn set_stopping(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.ready.store(false, Ordering::SeqCst);
        for service in STORE_SERVICES {
            self.reporter
                .set_service_status(service, ServingStatus::NotServing)
                .await;
        }
        self.reporter.set_service_status("", ServingStatus::NotServing).await;
    }
}

/// Checks the store now and then every second, and publishes readiness; logs each change with its
/// reason. Started once this process's migrations are in (see `app::bootstrap`), so a clean start
/// logs no "not ready" warning.
pub async fn watch_store(store: Arc<dyn SessionStore>, health: Health) {
    let mut was_ready = None;
    loop {
        let check = tokio::time::timeout(CHECK_TIMEOUT, store.check_ready()).await;
        let ready = matches!(check, Ok(Ok(())));
        if was_ready != Some(ready) {
            match &check {
                Ok(Ok(())) => info!(store = store.kind().as_str(), "store ready: serving"),
                Ok(Err(e)) => warn!(error = %e, "store not ready: not serving"),
                Err(_) => warn!(timeout = ?CHECK_TIMEOUT, "store readiness check timed out: not serving"),
            }
            was_ready = Some(ready);
        }
        health.set_ready(ready).await;
        tokio::time::sleep(CHECK_INTERVAL).await;
    }
}

//! A test server (the real `Application` on port 0 with a manual clock) and its clients. The frames,
//! keys and requests the tests send are the shared ones in `tests/support/fixtures.rs`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sessionkeeper::app::Application;
use sessionkeeper::clock::ManualClock;
use sessionkeeper::config::{Config, Settings};
use sessionkeeper::domain::{Binding, Policy, SessionKey, SessionRow};
use sessionkeeper::proto;
use sessionkeeper::proto::session_service_client::SessionServiceClient;
use sessionkeeper::store::SessionStore;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::support::wait::wait_until;
use crate::support::{self, Backend};

pub struct TestApp {
    pub client: SessionServiceClient<Channel>,
    pub health: HealthClient<Channel>,
    pub channel: Channel,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn SessionStore>,
    /// Finished background sweep passes (the first is the startup sweep).
    pub sweep_passes: tokio::sync::watch::Receiver<u64>,
    pub grpc_addr: std::net::SocketAddr,
    pub metrics_addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    /// Keeps the SQLite directory alive as long as the server.
    _dir: Option<Arc<tempfile::TempDir>>,
    pub backend: Backend,
    pub database_url: Option<String>,
}

/// The store and what it needs to be reopened by another server (a restart).
#[derive(Clone)]
pub struct StoreHandle {
    pub store: Arc<dyn SessionStore>,
    pub dir: Option<Arc<tempfile::TempDir>>,
    pub database_url: Option<String>,
    pub backend: Backend,
}

pub async fn new_store(backend: Backend) -> StoreHandle {
    match backend {
        Backend::Postgres => {
            let (store, schema) = support::postgres_store().await;
            StoreHandle {
                store,
                dir: None,
                database_url: Some(schema.url),
                backend,
            }
        }
        Backend::Sqlite => {
            let (store, dir) = support::sqlite_store().await;
            StoreHandle {
                store,
                dir: Some(Arc::new(dir)),
                database_url: None,
                backend,
            }
        }
    }
}

pub fn test_config(handle: &StoreHandle, policy: Policy) -> Config {
    test_config_with(handle, policy, Settings::default())
}

/// The test configuration, with `extra`'s security settings (tokens, TLS) applied.
pub fn test_config_with(handle: &StoreHandle, policy: Policy, extra: Settings) -> Config {
    let options = Settings {
        auth_tokens: extra.auth_tokens,
        tls_cert: extra.tls_cert,
        tls_key: extra.tls_key,
        tls_client_ca: extra.tls_client_ca,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        database_url: handle.database_url.clone(),
        data_dir: handle.dir.as_ref().map(|d| d.path().to_owned()),
        drain_timeout: Some(Duration::from_secs(5).into()),
        ..Settings::default()
    };
    let mut config = Config::load(&options).expect("test config");
    config.policy = policy;
    config
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> TestApp {
        Self::spawn_with(new_store(backend).await, Policy::default(), support::t0()).await
    }

    pub async fn spawn_with_policy(backend: Backend, policy: Policy) -> TestApp {
        Self::spawn_with(new_store(backend).await, policy, support::t0()).await
    }

    /// Starts the real application on `handle`'s store and waits until it is ready.
    /// Rows placed after this returns are not raced by the startup sweep.
    pub async fn spawn_with(handle: StoreHandle, policy: Policy, now: DateTime<Utc>) -> TestApp {
        let app = Self::start(handle, policy, now).await;
        app.wait_until_ready().await;
        let mut passes = app.sweep_passes.clone();
        tokio::time::timeout(Duration::from_secs(10), passes.wait_for(|n| *n >= 1))
            .await
            .expect("the startup sweep finishes")
            .expect("sweep counter");
        app
    }

    /// Starts the real application without waiting for readiness.
    pub async fn start(handle: StoreHandle, policy: Policy, now: DateTime<Utc>) -> TestApp {
        let config = test_config(&handle, policy);
        Self::start_with_config(handle, config, now).await
    }

    /// Starts the real application with a configuration of the test's own.
    pub async fn start_with_config(handle: StoreHandle, config: Config, now: DateTime<Utc>) -> TestApp {
        let clock = Arc::new(ManualClock::new(now));
        let app = Application::build(config, handle.store.clone(), clock.clone())
            .await
            .expect("build application");
        let sweep_passes = app.sweep_passes();
        let grpc_addr = app.grpc_addr();
        let metrics_addr = app.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{grpc_addr}"))
            .unwrap()
            .connect()
            .await
            .expect("connect to the test server");
        TestApp {
            client: SessionServiceClient::new(channel.clone()),
            health: HealthClient::new(channel.clone()),
            channel,
            clock,
            store: handle.store,
            sweep_passes,
            grpc_addr,
            metrics_addr,
            stop: Some(stop),
            server: Some(server),
            _dir: handle.dir,
            backend: handle.backend,
            database_url: handle.database_url,
        }
    }

    pub fn handle(&self) -> StoreHandle {
        StoreHandle {
            store: self.store.clone(),
            dir: self._dir.clone(),
            database_url: self.database_url.clone(),
            backend: self.backend,
        }
    }

    pub async fn service_status(&self, service: &str) -> Result<ServingStatus, tonic::Status> {
        let response = self
            .health
            .clone()
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await?;
        Ok(response.into_inner().status())
    }

    pub async fn wait_until_ready(&self) {
        wait_until(Duration::from_secs(5), "the test server becoming ready", || async {
            self.service_status(proto::SERVICE_NAME).await.ok() == Some(ServingStatus::Serving)
        })
        .await;
    }

    /// Stops the server (as SIGTERM would) and waits for it to exit cleanly.
    pub async fn stop(mut self) -> StoreHandle {
        let handle = self.handle();
        self.shutdown().await;
        handle
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server exits cleanly");
        }
    }

    /// Places a row as if a completed run stored it `age` ago.
    pub async fn put_row(&self, key: &SessionKey, session_id: &str, age: TimeDelta, binding: Binding) {
        let row = SessionRow {
            session_id: session_id.into(),
            binding,
            last_used_at: self.clock_now() - age,
            failure_count: 0,
        };
        let raw = match (&self.database_url, &self._dir) {
            (Some(url), _) => support::RawRows::postgres(url),
            (None, Some(dir)) => support::RawRows::sqlite(dir.path()).await,
            (None, None) => panic!("a test app has a database URL or a data dir"),
        };
        raw.put(key, &row).await;
        raw.close().await;
    }

    pub fn clock_now(&self) -> DateTime<Utc> {
        use sessionkeeper::clock::Clock;
        self.clock.now()
    }

    pub async fn get(&self, key: &proto::SessionKey, binding: Option<proto::Binding>) -> proto::GetResponse {
        self.client
            .clone()
            .get(proto::GetRequest {
                key: Some(key.clone()),
                binding,
                ..Default::default()
            })
            .await
            .expect("get")
            .into_inner()
    }

    pub async fn report(
        &self,
        request: proto::ReportResultRequest,
    ) -> Result<proto::ReportResultResponse, tonic::Status> {
        self.client.clone().report_result(request).await.map(|r| r.into_inner())
    }

    /// An HTTP GET on the metrics port: (status code, body).
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr, path).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

use crate::support::process::http_get;

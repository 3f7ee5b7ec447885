//! Startup as a testable handle: [`Application::build`] binds both listeners (port 0 in tests)
//! and wires the store, clock and policy it is given; [`Application::run_until_stopped`] serves
//! until the shutdown future resolves, then drains (SPEC §6: not ready at once, serve on for
//! `shutdown_delay`, then refuse new calls and wait for in-flight ones at most `drain_timeout`).
//! Migrations, readiness checks and sweeps run in the background: none delays listening, and
//! readiness is first checked after this process's own migrations.

use std::future::Future;
use std::net::SocketAddr;
#[cfg(unix)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tracing::{Instrument, info, warn};

use crate::clock::Clock;
use crate::config::{self, Config, StoreSettings};
use crate::metrics::{Metrics, SweepTrigger};
use crate::proto::session_service_server::SessionServiceServer;
use crate::proto::transcript_service_server::TranscriptServiceServer;
use crate::server::admission::AdmissionLayer;
use crate::server::auth::Authenticator;
use crate::server::grpc::SessionApi;
use crate::server::health::{self, Health};
use crate::server::http;
use crate::server::observe::ObserveLayer;
use crate::server::reflection;
use crate::server::tls::TlsReloader;
use crate::server::transcripts::TranscriptApi;
use crate::server::transport::{self, ConnectionLimits};
use crate::service::{Lifecycle, SharedPolicy};
use crate::store::postgres::PostgresStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{SessionStore, StoreError, TranscriptStore};
use crate::sweeper::{self, SweepScope};
use crate::transcripts::Transcripts;

/// Largest accepted request (SPEC §3): bigger ones are refused by the decoder.
const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest accepted TranscriptService request: a batch of entries of up to 1 MiB each (the SDK
/// adapters split bigger batches).
const MAX_TRANSCRIPT_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Opens the configured store: Postgres lazily (serve starts while it is down), SQLite at once.
pub async fn open_store(settings: &StoreSettings) -> Result<Arc<dyn SessionStore>, StoreError> {
    Ok(match settings {
        StoreSettings::Postgres(pg) => Arc::new(PostgresStore::connect_lazy(pg)?),
        StoreSettings::Sqlite(lite) => Arc::new(SqliteStore::open(lite).await?),
    })
}

pub struct Application {
    grpc_listener: TcpListener,
    metrics_listener: TcpListener,
    grpc_addr: SocketAddr,
    metrics_addr: SocketAddr,
    lifecycle: Arc<Lifecycle>,
    transcripts: Arc<Transcripts>,
    /// The handles startup keeps for itself (the service does not hand its own out).
    store: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
    /// The policy in force (the lifecycle reads it; SIGHUP replaces it).
    policy: SharedPolicy,
    tls: Option<TlsReloader>,
    auth: Option<Authenticator>,
    config: Config,
    /// Background sweep passes finished so far (the first is the startup sweep).
    sweep_passes: tokio::sync::watch::Sender<u64>,
}

impl Application {
    /// Binds the gRPC and metrics listeners and loads the TLS material; serves nothing yet.
    pub async fn build(config: Config, store: Arc<dyn SessionStore>, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let grpc_listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let metrics_listener = TcpListener::bind(config.metrics_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.metrics_listen))?;
        let tls = config.tls.as_ref().map(TlsReloader::load).transpose()?;
        let auth = config
            .auth_tokens
            .as_deref()
            .map(Authenticator::load)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let metrics = Arc::new(Metrics::new().folding_unknown_agents(config.metrics_fold_unknown_agents));
        let policy = SharedPolicy::new(config.policy.clone());
        let transcript_store: Arc<dyn TranscriptStore> = store.clone();
        let transcripts = Arc::new(Transcripts::new(
            transcript_store,
            clock.clone(),
            config.transcript_limits,
            metrics.clone(),
        ));
        let lifecycle = Arc::new(
            Lifecycle::new(store.clone(), clock, policy.clone(), metrics.clone()).with_semconv(config.semconv),
        );
        Ok(Application {
            grpc_addr: grpc_listener.local_addr()?,
            metrics_addr: metrics_listener.local_addr()?,
            grpc_listener,
            metrics_listener,
            lifecycle,
            transcripts,
            store,
            metrics,
            policy,
            tls,
            auth,
            config,
            sweep_passes: tokio::sync::watch::Sender::new(0),
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Counts finished background sweep passes; the first is the startup sweep.
    pub fn sweep_passes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sweep_passes.subscribe()
    }

    /// Serves until `shutdown` resolves, then drains and closes the store.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send) -> anyhow::Result<()> {
        let Application {
            grpc_listener,
            metrics_listener,
            grpc_addr,
            metrics_addr,
            lifecycle,
            transcripts,
            store,
            metrics,
            policy,
            tls,
            auth,
            config,
            sweep_passes,
        } = self;
        let (health, health_service) = Health::new().await;

        let mut background = JoinSet::new();
        background.spawn(bootstrap(
            store.clone(),
            lifecycle.clone(),
            health.clone(),
            config.migrate_on_start,
            policy.clone(),
            sweep_passes,
            transcripts.clone(),
        ));

        let (reflection_v1, reflection_v1alpha) = reflection::services()?;
        let sessions = InterceptedService::new(
            SessionServiceServer::new(SessionApi::new(lifecycle.clone())).max_decoding_message_size(MAX_MESSAGE_BYTES),
            authenticate(auth.clone()),
        );
        let transcript_service = InterceptedService::new(
            TranscriptServiceServer::new(TranscriptApi::new(transcripts))
                .max_decoding_message_size(MAX_TRANSCRIPT_MESSAGE_BYTES),
            authenticate(auth.clone()),
        );
        #[cfg(unix)]
        {
            let reloadable = Reloadable {
                auth: auth.clone(),
                tls: tls.clone(),
                policy: config.config_file.clone().map(|file| (file, policy.clone())),
            };
            // Always, and before the server says it listens: without a handler, SIGHUP's default
            // action would end the process.
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(hangups) => {
                    background.spawn(reload_on_sighup(hangups, reloadable));
                }
                Err(e) => warn!(
                    error = %e,
                    "cannot listen for SIGHUP; tokens, certificates and the policy will not be reloaded"
                ),
            }
        }

        let mut builder = transport::http2_limits(Server::builder())
            .layer(ObserveLayer::new(metrics.clone()).with_semconv(config.semconv))
            .layer(AdmissionLayer::new(config.max_concurrent_requests));
        if let Some(age) = config.max_connection_age {
            builder = builder.max_connection_age(age);
        }
        let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
        let drain_signal = {
            let mut rx = drain_rx.clone();
            async move {
                let _ = rx.wait_for(|drain| *drain).await;
            }
        };
        let router = builder
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(sessions)
            .add_service(transcript_service);
        let limits = ConnectionLimits {
            max_connections: config.max_connections,
            handshake_timeout: config.handshake_timeout,
        };
        let incoming = transport::incoming(grpc_listener, limits, tls);
        let mut grpc = tokio::spawn(router.serve_with_incoming_shutdown(incoming, drain_signal));

        let http_shutdown = {
            let mut rx = drain_rx;
            async move {
                let _ = rx.wait_for(|drain| *drain).await;
            }
        };
        let http_server = axum::serve(
            metrics_listener,
            http::router(health.clone(), metrics.clone(), store.clone()),
        )
        .with_graceful_shutdown(http_shutdown);
        let http = tokio::spawn(async move { http_server.await });
        info!(%grpc_addr, %metrics_addr, store = store.kind().as_str(), "sessionkeeper listening");

        tokio::select! {
            () = shutdown => {}
            served = &mut grpc => {
                background.abort_all();
                served.context("grpc server task failed")??;
                anyhow::bail!("grpc server stopped unexpectedly");
            }
        }

        info!(delay = ?config.shutdown_delay, "shutting down: not ready, still serving");
        health.set_stopping().await;
        tokio::time::sleep(config.shutdown_delay).await;
        info!(timeout = ?config.drain_timeout, "draining in-flight calls");
        let _ = drain_tx.send(true);
        match tokio::time::timeout(config.drain_timeout, &mut grpc).await {
            Ok(served) => served.context("grpc server task failed")??,
            Err(_) => {
                warn!(timeout = ?config.drain_timeout, "drain timed out; closing remaining connections");
                grpc.abort();
            }
        }
        background.abort_all();
        http.abort();
        // Closing waits for every connection to be given back and closed; a node that stopped
        // answering must not hold the exit (what was acknowledged is already committed).
        if tokio::time::timeout(STORE_CLOSE_WITHIN, store.close()).await.is_err() {
            warn!(within = ?STORE_CLOSE_WITHIN, "the store did not close in time; exiting without it");
        }
        info!("stopped");
        Ok(())
    }
}

/// How long shutdown waits for the store to close its connections.
const STORE_CLOSE_WITHIN: Duration = Duration::from_secs(3);

/// Brings the store up (migrating when asked), then runs the startup sweep and the periodic
/// sweeps and refreshes the transcript gauges, and watches readiness. A process that migrates watches readiness only once its
/// migrations are in: before that, "not ready" is expected, not news (a clean start logs no
/// warning); the retries below say why while the store is unreachable.
async fn bootstrap(
    store: Arc<dyn SessionStore>,
    lifecycle: Arc<Lifecycle>,
    health: Health,
    migrate: bool,
    policy: SharedPolicy,
    sweep_passes: tokio::sync::watch::Sender<u64>,
    transcripts: Arc<Transcripts>,
) {
    let readiness = health::watch_store(store.clone(), health);
    let sweeps = sweep_periodically(lifecycle, policy, sweep_passes);
    let gauges = refresh_transcript_gauges(transcripts);
    if migrate {
        wait_until_usable(&*store, true).await;
        info!("migrations applied");
        tokio::join!(readiness, sweeps, gauges);
    } else {
        let sweeps = async {
            wait_until_usable(&*store, false).await;
            tokio::join!(sweeps, gauges);
        };
        tokio::join!(readiness, sweeps);
    }
}

/// How often the transcript gauges (`sessionkeeper_transcript_bytes`, `..._entries`) are read.
const TRANSCRIPT_GAUGES_EVERY: Duration = Duration::from_secs(15);

/// Reads the transcript totals now, then every [`TRANSCRIPT_GAUGES_EVERY`], until the task is
/// aborted (at shutdown, like the sweeps). A failed read keeps the last values.
async fn refresh_transcript_gauges(transcripts: Arc<Transcripts>) {
    loop {
        if let Err(e) = transcripts.refresh_gauges().await {
            warn!(error = %e, "cannot read the transcript totals; the gauges keep their last values");
        }
        tokio::time::sleep(TRANSCRIPT_GAUGES_EVERY).await;
    }
}

/// Migrates (or checks that the schema is current), retrying with backoff until it works.
async fn wait_until_usable(store: &dyn SessionStore, migrate: bool) {
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = if migrate {
            store.migrate().await
        } else {
            store.check_ready().await
        };
        match attempt {
            Ok(()) => break,
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "store not usable yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Sweeps once now, then every `sweep_interval` of the policy in force (jittered), until the task
/// is aborted. Each finished pass (successful or not) bumps `passes`, so a caller can wait for the
/// startup sweep.
async fn sweep_periodically(lifecycle: Arc<Lifecycle>, policy: SharedPolicy, passes: tokio::sync::watch::Sender<u64>) {
    let mut trigger = SweepTrigger::Startup;
    loop {
        let span = tracing::info_span!("sweep", otel.name = "sweep", trigger = trigger.as_str());
        let pass = lifecycle
            .sweep(&SweepScope::default(), false, trigger)
            .instrument(span)
            .await;
        let trigger_name = trigger.as_str();
        match pass {
            Ok(summary) => info!(
                trigger = trigger_name,
                deleted = summary.deleted,
                transcripts_deleted = summary.transcripts_deleted,
                took_ms = summary.took.as_millis() as u64,
                "sweep finished"
            ),
            Err(e) => warn!(trigger = trigger_name, error = %e, "sweep failed; will retry at the next interval"),
        }
        passes.send_modify(|n| *n += 1);
        trigger = SweepTrigger::Periodic;
        tokio::time::sleep(sweeper::jittered(policy.current().sweep_interval)).await;
    }
}

/// The interceptor in front of SessionService and TranscriptService: with a tokens file, every call must carry a known
/// bearer token; its caller (never the token) goes on the request and on the call's span.
fn authenticate(
    auth: Option<Authenticator>,
) -> impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone {
    move |mut request: tonic::Request<()>| {
        if let Some(auth) = &auth {
            let caller = auth.authenticate(request.metadata())?;
            tracing::Span::current().record("caller", &*caller.name);
            request.extensions_mut().insert(caller);
        }
        Ok(request)
    }
}

/// What SIGHUP re-reads: the tokens file, the TLS material and the configuration file's policy.
#[cfg(unix)]
struct Reloadable {
    auth: Option<Authenticator>,
    tls: Option<TlsReloader>,
    policy: Option<(PathBuf, SharedPolicy)>,
}

/// Re-reads what is reloadable on SIGHUP; a bad file keeps what is in force, and says why.
#[cfg(unix)]
async fn reload_on_sighup(mut hangups: tokio::signal::unix::Signal, Reloadable { auth, tls, policy }: Reloadable) {
    while hangups.recv().await.is_some() {
        if auth.is_none() && tls.is_none() && policy.is_none() {
            info!("SIGHUP: nothing to reload (no tokens file, TLS or configuration file)");
        }
        if let Some((file, shared)) = &policy {
            match config::load_policy(file) {
                Ok(reloaded) => {
                    info!(
                        file = %file.display(),
                        agents = reloaded.agents.len(),
                        signatures = reloaded.signatures.len(),
                        "policy reloaded"
                    );
                    shared.replace(reloaded);
                }
                Err(e) => warn!(
                    file = %file.display(),
                    error = %e,
                    "policy reload failed; the previous policy stays in force"
                ),
            }
        }
        if let Some(auth) = &auth {
            match auth.reload() {
                Ok(count) => info!(tokens = count, "tokens file reloaded"),
                Err(e) => warn!(
                    file = %auth.path().display(),
                    error = %e,
                    "tokens file reload failed; the previous tokens stay in force"
                ),
            }
        }
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => info!("tls certificate reloaded"),
                Err(e) => warn!(
                    error = format!("{e:#}"),
                    "tls reload failed; the previous certificate stays in force"
                ),
            }
        }
    }
}

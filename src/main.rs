//! The `sessionkeeper` binary: parses the command line, loads and validates the configuration,
//! sets up logging and runs one command: `serve` (the default), `migrate` or `sweep`. Every
//! failure before serving is one line on stderr and a non-zero exit code: 2 for bad configuration,
//! 65 for a damaged embedded store, 75 for a data dir another process holds, 1 for anything else.

use std::process::ExitCode;
use std::sync::Arc;

use clap::error::ErrorKind;
use sessionkeeper::app::{Application, open_store};
use sessionkeeper::clock::SystemClock;
use sessionkeeper::config::{Cli, Command, Config, StoreSettings, load_policy};
use sessionkeeper::metrics::SweepTrigger;
use sessionkeeper::semconv::{self, SemconvMode};
use sessionkeeper::server::auth::Authenticator;
use sessionkeeper::service::{Lifecycle, SharedPolicy};
use sessionkeeper::store::StoreError;
use sessionkeeper::store::data_dir::{DataDirError, prepare_data_dir};
use sessionkeeper::sweeper::SweepScope;
use sessionkeeper::telemetry;
use tracing::warn;

/// The embedded store's file is damaged or empty (sysexits' EX_DATAERR): no restart can fix it,
/// so a supervisor can stop retrying (systemd's `RestartPreventExitStatus=65`).
const EXIT_STORE_DAMAGED: u8 = 65;
/// Another process holds the data dir (sysexits' EX_TEMPFAIL): it may work once that one exits.
const EXIT_DATA_DIR_IN_USE: u8 = 75;

fn main() -> ExitCode {
    let cli = match Cli::try_parse_scoped_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            eprintln!("{}", rendered.lines().next().unwrap_or("error: invalid command line"));
            return ExitCode::from(2);
        }
    };
    // `classify` reads a frame and prints; it opens nothing, so it needs no configuration.
    if let Some(Command::Classify { resumed, provider }) = &cli.command {
        return classify(resumed, provider, cli.options.config.as_deref());
    }
    // `inspect` is a client of a running server: it needs no configuration either.
    if let Some(Command::Inspect {
        key,
        target,
        token,
        tls_ca,
        json,
    }) = &cli.command
    {
        let target = sessionkeeper::inspect_command::Target {
            address: target.clone(),
            token: token.clone(),
            tls_ca: tls_ca.clone(),
        };
        return sessionkeeper::inspect_command::run(key, &target, *json);
    }
    let mut config = match Config::load(&cli.options) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Read once, here: the span code gets the parsed value through the configuration.
    config.semconv = SemconvMode::parse(std::env::var(semconv::OPT_IN_VARIABLE).ok().as_deref());
    let command = cli.command.unwrap_or(Command::Serve);
    // Loading the configuration touches nothing; the embedded store's directory is made, proven
    // writable and locked here, before any command uses it. The lock is held until the process
    // exits: one process per data dir.
    let _data_dir_lock = match &config.store {
        StoreSettings::Sqlite(lite) => match prepare_data_dir(&lite.data_dir) {
            Ok(lock) => Some(lock),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(match e {
                    DataDirError::NotWritable { .. } => 2,
                    DataDirError::InUse { .. } => EXIT_DATA_DIR_IN_USE,
                });
            }
        },
        StoreSettings::Postgres(_) => None,
    };
    // The server reads the tokens file when it starts; a bad one is a configuration error, found
    // here before anything is opened.
    if let (Command::Serve, Some(path)) = (&command, &config.auth_tokens)
        && let Err(e) = Authenticator::load(path)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = {
        let _inside = runtime.enter();
        match telemetry::init(config.log_format, config.log_level) {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("error: cannot set up tracing: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let outcome = runtime.block_on(run(command, config));
    // Spans still buffered are flushed before the process exits (SIGTERM included).
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            match e.downcast_ref::<StoreError>() {
                Some(StoreError::Damaged(_)) => ExitCode::from(EXIT_STORE_DAMAGED),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// `sessionkeeper classify`: one frame from stdin, the decision on stdout, under the policy of
/// `--config` when one is given (its TTLs, limit and signatures), else the default policy.
fn classify(resumed: &str, provider: &str, config_file: Option<&std::path::Path>) -> ExitCode {
    use std::io::Read;
    let mut input = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("error: cannot read the frame from stdin: {e}");
        return ExitCode::from(2);
    }
    let Some(result) = sessionkeeper::domain::result_from_output(&input) else {
        eprintln!(
            "error: no frame on stdin: pipe in the SDK's result frame, a stream-json transcript or the error text"
        );
        return ExitCode::from(2);
    };
    let policy = match config_file.map(load_policy).transpose() {
        Ok(policy) => policy.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    print!(
        "{}",
        sessionkeeper::classify_command::describe(&result, resumed, provider, &policy)
    );
    ExitCode::SUCCESS
}

async fn run(command: Command, config: Config) -> anyhow::Result<()> {
    let store = open_store(&config.store).await?;
    match command {
        Command::Serve => {
            if let StoreSettings::Sqlite(lite) = &config.store {
                warn!(
                    data_dir = %lite.data_dir.display(),
                    "NO DATABASE CONFIGURED: sessions are kept in an embedded SQLite file; run a single \
                     instance only, and set DATABASE_URL to use Postgres in production"
                );
            }
            if config.tls.is_none() && config.auth_tokens.is_none() && !config.listen.ip().is_loopback() {
                warn!(
                    listen = %config.listen,
                    "serving gRPC with neither TLS nor tokens on a non-loopback address: anyone who reaches the port \
                     can read and change every namespace"
                );
            }
            let shutdown = shutdown_signal();
            let app = Application::build(config, store, Arc::new(SystemClock)).await?;
            app.run_until_stopped(shutdown).await
        }
        Command::Classify { .. } => unreachable!("classify runs before the configuration is loaded"),
        Command::Inspect { .. } => unreachable!("inspect runs before the configuration is loaded"),
        Command::Migrate => {
            store.migrate().await.map_err(|e| anyhow::anyhow!("migrate: {e}"))?;
            println!("migrations applied");
            Ok(())
        }
        Command::Sweep {
            dry_run,
            namespace,
            agent,
        } => {
            store.check_ready().await.map_err(|e| anyhow::anyhow!("sweep: {e}"))?;
            let policy = SharedPolicy::new(config.policy);
            let lifecycle =
                Lifecycle::new(store, Arc::new(SystemClock), policy, Arc::default()).with_semconv(config.semconv);
            let scope = SweepScope { namespace, agent };
            let summary = lifecycle
                .sweep(&scope, dry_run, SweepTrigger::Cli)
                .await
                .map_err(|e| anyhow::anyhow!("sweep: {e}"))?;
            let verb = if dry_run { "would delete" } else { "deleted" };
            println!(
                "{verb} {} expired sessions and {} transcripts in {:?}",
                summary.deleted, summary.transcripts_deleted, summary.took
            );
            Ok(())
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C). The handlers are installed when this is called, before
/// the server listens, not when the future is first polled: a SIGTERM that arrives as soon as the
/// server says it listens is a graceful shutdown, never the default action's abrupt exit.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let received = |stream: Option<tokio::signal::unix::Signal>| async move {
                match stream {
                    Some(mut stream) => {
                        stream.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = received(terminate) => {}
                () = received(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

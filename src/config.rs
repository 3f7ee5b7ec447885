//! Configuration: one [`Settings`] struct declares every setting once; clap fills it from flags
//! and environment variables, serde from the TOML file, [`Settings::defaults`] holds the built-in
//! values, and figment layers them (flags over environment over file over defaults, SPEC §6).
//! [`Config::load`] then validates the merged settings into a [`Config`]; every problem becomes one
//! [`ConfigError`] line that names the setting. Loading has no side effects: the data dir is made
//! and checked at startup, not here. [`load_policy`] re-reads the file's `[policy]` on SIGHUP.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use figment::Figment;
use figment::providers::Serialized;
use serde::{Deserialize, Serialize};
use serde_with::{DeserializeFromStr, SerializeDisplay};

use crate::domain::{AgentPolicy, Policy, check_name, operator_signature};
use crate::semconv::SemconvMode;
use crate::store::postgres::PostgresSettings;
use crate::store::sqlite::SqliteSettings;
use crate::transcripts::{
    DEFAULT_MAX_ENTRY_BYTES, DEFAULT_MAX_TRANSCRIPT_BYTES, MAX_ENTRY_BYTES_CEILING, TranscriptLimits,
};

#[derive(Debug, Parser)]
#[command(
    name = "sessionkeeper",
    version,
    about = "Owns the lifecycle of AI-agent SDK session ids"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub options: Settings,
}

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
    /// Classify one result frame read on stdin (the SDK's JSON frame, a stream-json transcript
    /// whose last `result` line counts, or an exception's text) and say what a report would do;
    /// needs no server and no database.
    Classify {
        /// The session id the run was asked to resume (empty: a fresh run).
        #[arg(long, default_value = "")]
        resumed: String,
        /// The binding's provider (`claude`, `codex`, `gemini`, …; empty: every signature).
        #[arg(long, default_value = "")]
        provider: String,
    },
    /// Ask a running server what it keeps about one conversation (its stored row, the tombstone of
    /// its last cleared id) and print it as a timeline; needs no database.
    Inspect {
        /// The conversation: NAMESPACE/AGENT/CONVERSATION (the conversation may hold `/`).
        key: String,
        /// The server's gRPC address (`https://…` with TLS).
        #[arg(long, env = "SESSIONKEEPER_TARGET", default_value = "http://127.0.0.1:50051")]
        target: String,
        /// Bearer token, when the server requires one.
        #[arg(long, env = "SESSIONKEEPER_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of the CA that signed the server's certificate (with an `https://` target).
        #[arg(long, env = "SESSIONKEEPER_TLS_CA")]
        tls_ca: Option<std::path::PathBuf>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete expired sessions now and exit.
    Sweep {
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this namespace.
        #[arg(long)]
        namespace: Option<String>,
        /// Only this agent.
        #[arg(long)]
        agent: Option<String>,
    },
}

/// Flags only `serve` reads: `migrate --help` and `sweep --help` do not show them, and their
/// command lines refuse them. The environment and the file may still set them, since one
/// environment serves every command of a deployment.
const SERVE_ONLY: &[&str] = &[
    "listen",
    "metrics_listen",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "auth_tokens",
    "max_concurrent_requests",
    "max_connections",
    "handshake_timeout",
    "migrate_on_start",
    "shutdown_delay",
    "drain_timeout",
    "max_connection_age",
    "transcript_max_entry_bytes",
    "transcript_max_bytes",
    "metrics_fold_unknown_agents",
];

impl Cli {
    /// Parses the command line like [`Parser::try_parse_from`], except that `migrate` and `sweep`
    /// show and take only the flags they use.
    pub fn try_parse_scoped_from<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut command = Cli::command();
        // A subcommand that has its own (hidden) copy of a global flag does not get the global one.
        let serve_only: Vec<clap::Arg> = command
            .get_arguments()
            .filter(|arg| SERVE_ONLY.contains(&arg.get_id().as_str()))
            .map(|arg| arg.clone().global(false).hide(true))
            .collect();
        for name in ["migrate", "sweep", "classify", "inspect"] {
            command = command.mut_subcommand(name, |sub| sub.args(serve_only.clone()));
        }
        let matches = command.try_get_matches_from_mut(args)?;
        if let Some((name @ ("migrate" | "sweep" | "classify" | "inspect"), sub)) = matches.subcommand() {
            let given = SERVE_ONLY.iter().find(|id| {
                [&matches, sub]
                    .iter()
                    .any(|m| m.value_source(id) == Some(ValueSource::CommandLine))
            });
            if let Some(id) = given {
                let flag = format!("--{}", id.replace('_', "-"));
                return Err(command.error(
                    ErrorKind::ArgumentConflict,
                    format!("{flag} configures `serve`; `sessionkeeper {name}` does not use it"),
                ));
            }
        }
        Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The level of every log line; when set, it wins over `RUST_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// A listen address: `IP:PORT`, or `HOST:PORT` resolved once at start (`localhost:50051`). A name
/// that resolves to several addresses listens on the first IPv4 one (else the first IPv6 one).
/// Flags, environment and file all parse it with [`FromStr`], so every source reports the same error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(addr) = text.parse() {
            return Ok(ListenAddr(addr));
        }
        let resolved: Vec<SocketAddr> = text
            .to_socket_addrs()
            .map_err(|e| {
                format!(
                    "invalid address {text:?}: {e} (expected HOST:PORT or IP:PORT, such as localhost:50051 or 0.0.0.0:50051)"
                )
            })?
            .collect();
        resolved
            .iter()
            .find(|addr| addr.is_ipv4())
            .or(resolved.first())
            .map(|addr| ListenAddr(*addr))
            .ok_or_else(|| format!("invalid address {text:?}: resolves to no address"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A duration written as humans write it (`500ms`, `10s`, `2h`), parsed by `humantime` in every
/// source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, SerializeDisplay, DeserializeFromStr)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        humantime::parse_duration(text)
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {text:?}: {e} (expected a duration such as 500ms, 10s, 2h)"))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl From<Duration> for HumanDuration {
    fn from(duration: Duration) -> Self {
        HumanDuration(duration)
    }
}

/// Every setting, declared once. Flags and environment variables fill it through clap (a flag wins
/// over its variable), the TOML file through serde (the same snake_case names, plus `[policy]`),
/// and [`Settings::defaults`] holds the built-in values; [`Config::load`] layers them with figment
/// (flags and environment over file over defaults) and then validates the result. Every field is
/// optional so that each source may leave it out.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// gRPC listen address, IP:PORT or HOST:PORT [default: 0.0.0.0:50051]
    #[arg(long, env = "SESSIONKEEPER_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<ListenAddr>,
    /// HTTP listen address of /metrics, /livez and /readyz, IP:PORT or HOST:PORT [default: 0.0.0.0:9090]
    #[arg(long, env = "SESSIONKEEPER_METRICS_LISTEN", global = true, value_name = "ADDR")]
    pub metrics_listen: Option<ListenAddr>,
    /// Postgres URL; without one, sessions live in an embedded SQLite file in --data-dir
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Directory of the embedded store's file [default: ./data]
    #[arg(long, env = "SESSIONKEEPER_DATA_DIR", global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// TOML configuration file (settings and [policy])
    #[arg(long, env = "SESSIONKEEPER_CONFIG", global = true, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC over TLS
    #[arg(long, env = "SESSIONKEEPER_TLS_CERT", global = true, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "SESSIONKEEPER_TLS_KEY", global = true, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: clients must present a certificate it signed (mutual TLS)
    #[arg(long, env = "SESSIONKEEPER_TLS_CLIENT_CA", global = true, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Tokens file: every SessionService call then needs `authorization: Bearer <token>` [default: none]
    #[arg(long, env = "SESSIONKEEPER_AUTH_TOKENS", global = true, value_name = "FILE")]
    pub auth_tokens: Option<PathBuf>,
    /// Log format [default: text]
    #[arg(long, env = "SESSIONKEEPER_LOG_FORMAT", global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level; when set, it wins over RUST_LOG [default: RUST_LOG, else info]
    #[arg(long, env = "SESSIONKEEPER_LOG_LEVEL", global = true, value_name = "LEVEL")]
    pub log_level: Option<LogLevel>,
    /// Apply migrations at startup, under the database's migration lock [default: true]
    #[arg(long, env = "SESSIONKEEPER_MIGRATE_ON_START", global = true, value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub migrate_on_start: Option<bool>,
    /// Most connections in the Postgres pool [default: 16]
    #[arg(long, env = "SESSIONKEEPER_DB_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub db_max_connections: Option<u32>,
    /// Longest wait for a database connection before a call fails UNAVAILABLE [default: 1s]
    #[arg(
        long,
        env = "SESSIONKEEPER_DB_ACQUIRE_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub db_acquire_timeout: Option<HumanDuration>,
    /// Longest wait for a row another session has locked before a call fails UNAVAILABLE [default: 2s]
    #[arg(long, env = "SESSIONKEEPER_DB_LOCK_TIMEOUT", global = true, value_name = "DURATION")]
    pub db_lock_timeout: Option<HumanDuration>,
    /// Longest run of one database statement before a call fails UNAVAILABLE [default: 5s]
    #[arg(
        long,
        env = "SESSIONKEEPER_DB_STATEMENT_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub db_statement_timeout: Option<HumanDuration>,
    /// API calls (SessionService, TranscriptService) in flight at once; more are answered RESOURCE_EXHAUSTED at once [default: 64]
    #[arg(long, env = "SESSIONKEEPER_MAX_CONCURRENT_REQUESTS", global = true, value_name = "N")]
    pub max_concurrent_requests: Option<usize>,
    /// Client connections open at once; a new one over the limit is closed at once [default: 1000]
    #[arg(long, env = "SESSIONKEEPER_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Longest time a new connection may take to finish its TLS handshake and send the HTTP/2
    /// preface before it is closed [default: 10s]
    #[arg(
        long,
        env = "SESSIONKEEPER_HANDSHAKE_TIMEOUT",
        global = true,
        value_name = "DURATION"
    )]
    pub handshake_timeout: Option<HumanDuration>,
    /// On SIGTERM, stay serving but not ready this long before draining [default: 0s]
    #[arg(long, env = "SESSIONKEEPER_SHUTDOWN_DELAY", global = true, value_name = "DURATION")]
    pub shutdown_delay: Option<HumanDuration>,
    /// Longest wait for in-flight calls after SIGTERM [default: 10s]
    #[arg(long, env = "SESSIONKEEPER_DRAIN_TIMEOUT", global = true, value_name = "DURATION")]
    pub drain_timeout: Option<HumanDuration>,
    /// Close client connections after this age, so clients rebalance [default: none]
    #[arg(
        long,
        env = "SESSIONKEEPER_MAX_CONNECTION_AGE",
        global = true,
        value_name = "DURATION"
    )]
    pub max_connection_age: Option<HumanDuration>,
    /// Largest transcript entry, in bytes; a bigger one is refused INVALID_ARGUMENT [default: 1048576 (1 MiB)]
    #[arg(
        long,
        env = "SESSIONKEEPER_TRANSCRIPT_MAX_ENTRY_BYTES",
        global = true,
        value_name = "BYTES"
    )]
    pub transcript_max_entry_bytes: Option<u64>,
    /// Largest transcript, in bytes of entries; an append past it is refused FAILED_PRECONDITION
    /// [default: 67108864 (64 MiB)]
    #[arg(
        long,
        env = "SESSIONKEEPER_TRANSCRIPT_MAX_BYTES",
        global = true,
        value_name = "BYTES"
    )]
    pub transcript_max_bytes: Option<u64>,
    /// Count the metrics' `agent` label of agents not named in `[policy.agents.*]` as `(other)`,
    /// so callers' agent names cannot grow the series without bound [default: false]
    #[arg(long, env = "SESSIONKEEPER_METRICS_FOLD_UNKNOWN_AGENTS", global = true, value_name = "BOOL",
          num_args = 0..=1, default_missing_value = "true",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub metrics_fold_unknown_agents: Option<bool>,
    /// The lifecycle policy: only the file sets it (`[policy]`), and SIGHUP reloads it.
    #[arg(skip)]
    pub policy: Option<PolicySettings>,
}

impl Settings {
    /// The built-in value of every setting that has one (the bottom layer).
    pub fn defaults() -> Settings {
        Settings {
            listen: Some(ListenAddr(([0, 0, 0, 0], 50051).into())),
            metrics_listen: Some(ListenAddr(([0, 0, 0, 0], 9090).into())),
            data_dir: Some(PathBuf::from("./data")),
            log_format: Some(LogFormat::Text),
            migrate_on_start: Some(true),
            db_max_connections: Some(16),
            db_acquire_timeout: Some(Duration::from_secs(1).into()),
            db_lock_timeout: Some(Duration::from_secs(2).into()),
            db_statement_timeout: Some(Duration::from_secs(5).into()),
            max_concurrent_requests: Some(64),
            max_connections: Some(1000),
            handshake_timeout: Some(Duration::from_secs(10).into()),
            shutdown_delay: Some(Duration::ZERO.into()),
            drain_timeout: Some(Duration::from_secs(10).into()),
            transcript_max_entry_bytes: Some(DEFAULT_MAX_ENTRY_BYTES),
            transcript_max_bytes: Some(DEFAULT_MAX_TRANSCRIPT_BYTES),
            metrics_fold_unknown_agents: Some(false),
            ..Settings::default()
        }
    }
}

/// `[policy]` in the file. Its defaults are the domain's ([`Policy::default`]).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    pub default_ttl: Option<HumanDuration>,
    pub unknown_failure_limit: Option<u32>,
    pub sweep_interval: Option<HumanDuration>,
    pub agents: BTreeMap<String, AgentSettings>,
    /// Operator-added signatures (`[[policy.signatures]]`), tried before the built-in table.
    pub signatures: Vec<SignatureSettings>,
    /// Delay between a session id going away and its transcripts' deletion (`0s`: at once).
    pub transcript_grace: Option<HumanDuration>,
    /// How long a tombstone counts after its id went away (none: the agent's TTL).
    pub tombstone_ttl: Option<HumanDuration>,
    /// Events a conversation's history keeps (default 20; at most 16 KiB together).
    pub history_events: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    pub ttl: HumanDuration,
}

/// One operator-added signature: `class`, the text it `contains`, and optionally the `provider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureSettings {
    pub class: String,
    pub contains: String,
    #[serde(default)]
    pub provider: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn new(message: impl Into<String>) -> Self {
        ConfigError(message.into())
    }
}

/// Where sessions are kept.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Postgres(PostgresSettings),
    Sqlite(SqliteSettings),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// The validated configuration of one process.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub metrics_listen: SocketAddr,
    pub store: StoreSettings,
    pub tls: Option<TlsSettings>,
    /// The tokens file; none means no token is required.
    pub auth_tokens: Option<PathBuf>,
    pub log_format: LogFormat,
    /// None: `RUST_LOG` decides (default `info`).
    pub log_level: Option<LogLevel>,
    pub migrate_on_start: bool,
    /// SessionService calls admitted at once; the rest are shed.
    pub max_concurrent_requests: usize,
    /// Client connections open at once; a new one over the limit is closed at once.
    pub max_connections: usize,
    /// Longest time from accept to a complete TLS handshake and HTTP/2 preface.
    pub handshake_timeout: Duration,
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub max_connection_age: Option<Duration>,
    /// The largest transcript entry and transcript.
    pub transcript_limits: TranscriptLimits,
    /// Count agents the policy does not name as one `agent` label value.
    pub metrics_fold_unknown_agents: bool,
    pub policy: Policy,
    /// The file the policy came from; SIGHUP reads its `[policy]` again.
    pub config_file: Option<PathBuf>,
    /// The semantic conventions of the spans: SPEC §6's names from [`Config::load`]; the binary
    /// sets it from `OTEL_SEMCONV_STABILITY_OPT_IN` (read once, beside the other `OTEL_*`).
    pub semconv: SemconvMode,
}

const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// `[policy] transcript_grace` at most: a grace period is for a late retry, not an archive.
const MAX_TRANSCRIPT_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);

impl Config {
    /// Layers `given` (flags and environment, as clap resolved them) over the file it names, over
    /// [`Settings::defaults`], and validates the result. Pure apart from reading the file: nothing
    /// is created or probed here (the data dir is checked when the store opens).
    pub fn load(given: &Settings) -> Result<Config, ConfigError> {
        let file = match &given.config {
            Some(path) => read_file(path)?,
            None => Settings::default(),
        };
        let merged: Settings = Figment::from(Serialized::defaults(Settings::defaults()))
            .merge(Serialized::defaults(file))
            .merge(Serialized::defaults(given))
            .extract()
            .map_err(|e| ConfigError::new(e.to_string().replace('\n', " ")))?;
        Config::validate(merged, given.config.clone())
    }

    fn validate(s: Settings, config_file: Option<PathBuf>) -> Result<Config, ConfigError> {
        let policy = resolve_policy(s.policy.unwrap_or_default())?;
        let database_url = s.database_url.filter(|url| !url.is_empty());
        let db_max_connections = required("db_max_connections", s.db_max_connections)?;
        if db_max_connections == 0 {
            return Err(ConfigError::new("db_max_connections: must be at least 1"));
        }
        let acquire_timeout = required("db_acquire_timeout", s.db_acquire_timeout)?.0;
        if acquire_timeout.is_zero() {
            return Err(ConfigError::new("db_acquire_timeout: must be longer than 0s"));
        }
        let store = match database_url {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::new(
                        "database_url: must be a postgres:// or postgresql:// URL",
                    ));
                }
                let lock_timeout = required("db_lock_timeout", s.db_lock_timeout)?.0;
                let statement_timeout = required("db_statement_timeout", s.db_statement_timeout)?.0;
                for (name, timeout) in [
                    ("db_lock_timeout", lock_timeout),
                    ("db_statement_timeout", statement_timeout),
                ] {
                    if timeout < Duration::from_millis(1) {
                        return Err(ConfigError::new(format!("{name}: must be at least 1ms")));
                    }
                }
                StoreSettings::Postgres(PostgresSettings {
                    url,
                    max_connections: db_max_connections,
                    acquire_timeout,
                    lock_timeout,
                    statement_timeout,
                })
            }
            None => StoreSettings::Sqlite(SqliteSettings {
                data_dir: required("data_dir", s.data_dir)?,
                max_connections: db_max_connections.min(4),
                acquire_timeout,
            }),
        };
        let tls = resolve_tls(s.tls_cert, s.tls_key, s.tls_client_ca)?;
        let max_concurrent_requests = required("max_concurrent_requests", s.max_concurrent_requests)?;
        if max_concurrent_requests == 0 {
            return Err(ConfigError::new("max_concurrent_requests: must be at least 1"));
        }
        let max_connections = required("max_connections", s.max_connections)?;
        if max_connections == 0 {
            return Err(ConfigError::new("max_connections: must be at least 1"));
        }
        let handshake_timeout = required("handshake_timeout", s.handshake_timeout)?.0;
        if handshake_timeout < Duration::from_millis(1) {
            return Err(ConfigError::new("handshake_timeout: must be at least 1ms"));
        }
        let transcript_limits = resolve_transcript_limits(
            required("transcript_max_entry_bytes", s.transcript_max_entry_bytes)?,
            required("transcript_max_bytes", s.transcript_max_bytes)?,
        )?;
        Ok(Config {
            // The tokens file is read (and its errors reported) by the server at startup.
            auth_tokens: s.auth_tokens,
            listen: required("listen", s.listen)?.0,
            metrics_listen: required("metrics_listen", s.metrics_listen)?.0,
            store,
            tls,
            log_format: required("log_format", s.log_format)?,
            log_level: s.log_level,
            migrate_on_start: required("migrate_on_start", s.migrate_on_start)?,
            max_concurrent_requests,
            max_connections,
            handshake_timeout,
            shutdown_delay: required("shutdown_delay", s.shutdown_delay)?.0,
            drain_timeout: required("drain_timeout", s.drain_timeout)?.0,
            max_connection_age: s.max_connection_age.map(|age| age.0),
            transcript_limits,
            metrics_fold_unknown_agents: required("metrics_fold_unknown_agents", s.metrics_fold_unknown_agents)?,
            policy,
            config_file,
            semconv: SemconvMode::default(),
        })
    }
}

/// Reads the policy of a configuration file again (SIGHUP), validated as at start.
pub fn load_policy(path: &Path) -> Result<Policy, ConfigError> {
    resolve_policy(read_file(path)?.policy.unwrap_or_default())
}

/// A setting [`Settings::defaults`] gives a value; its absence is a bug of this file, reported
/// like any configuration error rather than a panic.
fn required<T>(name: &str, value: Option<T>) -> Result<T, ConfigError> {
    value.ok_or_else(|| ConfigError::new(format!("{name}: no value and no default")))
}

fn read_file(path: &Path) -> Result<Settings, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(format!("config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1));
        let message = e.message().trim().replace('\n', " ");
        match line {
            Some(line) => ConfigError::new(format!("config file {} line {line}: {message}", path.display())),
            None => ConfigError::new(format!("config file {}: {message}", path.display())),
        }
    })
}

/// The most `[policy] history_events` allowed: 16 KiB holds no more events of 64 bytes.
const MAX_HISTORY_EVENTS: u32 = crate::domain::MAX_HISTORY_BYTES / crate::domain::EVENT_OVERHEAD_BYTES;

fn resolve_policy(file: PolicySettings) -> Result<Policy, ConfigError> {
    let defaults = Policy::default();
    let signatures = file
        .signatures
        .iter()
        .enumerate()
        .map(|(i, row)| {
            operator_signature(&row.class, &row.contains, &row.provider)
                .map_err(|problem| ConfigError::new(format!("policy.signatures[{}]: {problem}", i + 1)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = Policy {
        default_ttl: file.default_ttl.map_or(defaults.default_ttl, |d| d.0),
        unknown_failure_limit: file.unknown_failure_limit.unwrap_or(defaults.unknown_failure_limit),
        sweep_interval: file.sweep_interval.map_or(defaults.sweep_interval, |d| d.0),
        agents: file
            .agents
            .into_iter()
            .map(|(agent, p)| (agent, AgentPolicy { ttl: p.ttl.0 }))
            .collect(),
        signatures,
        transcript_grace: file.transcript_grace.map_or(defaults.transcript_grace, |d| d.0),
        tombstone_ttl: file.tombstone_ttl.map(|d| d.0),
        history_events: file.history_events.unwrap_or(defaults.history_events),
    };
    check_ttl("policy.default_ttl", policy.default_ttl)?;
    if let Some(ttl) = policy.tombstone_ttl {
        check_ttl("policy.tombstone_ttl", ttl)?;
    }
    if policy.transcript_grace > MAX_TRANSCRIPT_GRACE {
        return Err(ConfigError::new(format!(
            "policy.transcript_grace: at most {} days",
            MAX_TRANSCRIPT_GRACE.as_secs() / 86_400
        )));
    }
    if !(1..=MAX_HISTORY_EVENTS).contains(&policy.history_events) {
        return Err(ConfigError::new(format!(
            "policy.history_events: must be from 1 to {MAX_HISTORY_EVENTS} (16 KiB holds no more)"
        )));
    }
    if policy.unknown_failure_limit == 0 {
        return Err(ConfigError::new("policy.unknown_failure_limit: must be at least 1"));
    }
    if policy.sweep_interval < Duration::from_secs(1) {
        return Err(ConfigError::new("policy.sweep_interval: must be at least 1s"));
    }
    for (agent, agent_policy) in &policy.agents {
        check_name("agent", agent)
            .map_err(|e| ConfigError::new(format!("policy.agents.{agent}: not a valid agent name: {}", e.problem)))?;
        check_ttl(&format!("policy.agents.{agent}.ttl"), agent_policy.ttl)?;
    }
    Ok(policy)
}

fn check_ttl(name: &str, ttl: Duration) -> Result<(), ConfigError> {
    if ttl.is_zero() {
        return Err(ConfigError::new(format!("{name}: must be longer than 0s")));
    }
    if ttl > MAX_TTL {
        return Err(ConfigError::new(format!("{name}: must be at most 100 years")));
    }
    Ok(())
}

fn resolve_transcript_limits(max_entry_bytes: u64, max_transcript_bytes: u64) -> Result<TranscriptLimits, ConfigError> {
    if max_entry_bytes == 0 {
        return Err(ConfigError::new("transcript_max_entry_bytes: must be at least 1"));
    }
    if max_entry_bytes > MAX_ENTRY_BYTES_CEILING {
        return Err(ConfigError::new(format!(
            "transcript_max_entry_bytes: must be at most {MAX_ENTRY_BYTES_CEILING} (an entry must fit one load chunk under gRPC's 4 MiB receive limit)"
        )));
    }
    if max_transcript_bytes == 0 {
        return Err(ConfigError::new("transcript_max_bytes: must be at least 1"));
    }
    if max_entry_bytes > max_transcript_bytes {
        return Err(ConfigError::new(format!(
            "transcript_max_entry_bytes: {max_entry_bytes} is more than transcript_max_bytes ({max_transcript_bytes})"
        )));
    }
    Ok(TranscriptLimits {
        max_entry_bytes,
        max_transcript_bytes,
    })
}

fn resolve_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<TlsSettings>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsSettings { cert, key, client_ca })),
        (None, None) if client_ca.is_some() => Err(ConfigError::new(
            "tls_client_ca: needs tls_cert and tls_key (mutual TLS runs over TLS)",
        )),
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::new("tls_key: required with tls_cert")),
        (None, Some(_)) => Err(ConfigError::new("tls_cert: required with tls_key")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    fn options_with(config: &tempfile::NamedTempFile, data_dir: &Path) -> Settings {
        Settings {
            config: Some(config.path().to_owned()),
            data_dir: Some(data_dir.to_owned()),
            ..Settings::default()
        }
    }

    #[test]
    fn the_policy_file_sets_ttls_limits_and_agents() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(
            "[policy]\ndefault_ttl = \"12h\"\nunknown_failure_limit = 3\nsweep_interval = \"5m\"\n\
             transcript_grace = \"10m\"\ntombstone_ttl = \"3h\"\nhistory_events = 7\n[policy.agents.reviewer]\nttl = \"2h\"\n",
        );
        let config = Config::load(&options_with(&f, dir.path())).unwrap();
        assert_eq!(config.policy.history_events, 7);
        assert_eq!(config.policy.tombstone_ttl, Some(Duration::from_secs(3 * 3600)));
        assert_eq!(config.policy.transcript_grace, Duration::from_secs(600));
        assert_eq!(config.policy.default_ttl, Duration::from_secs(12 * 3600));
        assert_eq!(config.policy.unknown_failure_limit, 3);
        assert_eq!(config.policy.sweep_interval, Duration::from_secs(300));
        assert_eq!(config.policy.ttl("reviewer"), Duration::from_secs(7200));
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = file("listen = \"127.0.0.1:1111\"\ndrain_timeout = \"3s\"\n");
        let mut options = options_with(&f, dir.path());
        options.listen = Some("127.0.0.1:2222".parse().unwrap());
        options.db_max_connections = Some(3);
        let config = Config::load(&options).unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222".parse().unwrap());
        assert!(matches!(config.store, StoreSettings::Sqlite(ref lite) if lite.max_connections == 3));
        assert_eq!(
            config.drain_timeout,
            Duration::from_secs(3),
            "the file wins over the default"
        );
    }

    #[test]
    fn transcript_limits_come_from_the_file_and_flags() {
        let dir = tempfile::tempdir().unwrap();
        let f = file("transcript_max_bytes = 2000000\ntranscript_max_entry_bytes = 5\n");
        let mut options = options_with(&f, dir.path());
        options.transcript_max_entry_bytes = Some(1000);
        let config = Config::load(&options).unwrap();
        assert_eq!(
            config.transcript_limits,
            TranscriptLimits {
                max_entry_bytes: 1000,
                max_transcript_bytes: 2_000_000
            }
        );
    }

    #[test]
    fn folding_unknown_agents_is_off_by_default_and_set_by_the_file_or_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let plain = Settings {
            data_dir: Some(dir.path().to_owned()),
            ..Settings::default()
        };
        assert!(!Config::load(&plain).unwrap().metrics_fold_unknown_agents);
        let f = file("metrics_fold_unknown_agents = true\n");
        assert!(
            Config::load(&options_with(&f, dir.path()))
                .unwrap()
                .metrics_fold_unknown_agents
        );
        let mut options = options_with(&f, dir.path());
        options.metrics_fold_unknown_agents = Some(false);
        assert!(
            !Config::load(&options).unwrap().metrics_fold_unknown_agents,
            "the flag wins"
        );
        let cli = Cli::try_parse_scoped_from(["sessionkeeper", "--metrics-fold-unknown-agents"]).unwrap();
        assert_eq!(cli.options.metrics_fold_unknown_agents, Some(true));
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let options = Settings {
            data_dir: Some(dir.path().to_owned()),
            ..Settings::default()
        };
        let config = Config::load(&options).unwrap();
        assert_eq!(config.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(config.metrics_listen, "0.0.0.0:9090".parse().unwrap());
        assert!(config.migrate_on_start);
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        assert_eq!(config.max_connections, 1000);
        assert_eq!(config.handshake_timeout, Duration::from_secs(10));
        assert_eq!(config.transcript_limits.max_entry_bytes, 1024 * 1024);
        assert_eq!(config.transcript_limits.max_transcript_bytes, 64 * 1024 * 1024);
        assert!(matches!(config.store, StoreSettings::Sqlite(_)));
        assert_eq!(config.policy, Policy::default());
    }

    #[test]
    fn a_transcript_entry_limit_must_fit_one_load_chunk() {
        assert!(resolve_transcript_limits(MAX_ENTRY_BYTES_CEILING, 64 << 20).is_ok());
        let refused = resolve_transcript_limits(MAX_ENTRY_BYTES_CEILING + 1, 64 << 20).unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("transcript_max_entry_bytes: must be at most 4190208"),
            "{refused}"
        );
        assert!(resolve_transcript_limits(0, 64 << 20).is_err());
        assert!(resolve_transcript_limits(2000, 1000).is_err());
    }

    #[test]
    fn bad_files_fail_with_one_line_naming_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[policy]\ndefault_ttl = \"forever\"\n",
                "line 2",
                "invalid duration \"forever\"",
            ),
            (
                "[policy]\nttl_default = \"1h\"\n",
                "line ",
                "unknown field `ttl_default`",
            ),
            ("lisen = \"0.0.0.0:1\"\n", "line 1", "unknown field `lisen`"),
            (
                "[policy]\nunknown_failure_limit = 0\n",
                "",
                "policy.unknown_failure_limit: must be at least 1",
            ),
            (
                "[policy.agents.reviewer]\nttl = \"0s\"\n",
                "",
                "policy.agents.reviewer.ttl: must be longer than 0s",
            ),
            (
                "[policy.agents.\"re viewer\"]\nttl = \"1h\"\n",
                "",
                "not a valid agent name",
            ),
            ("database_url = \"mysql://x\"\n", "", "database_url: must be a postgres"),
            ("tls_cert = \"/c.pem\"\n", "", "tls_key: required with tls_cert"),
            ("max_connections = 0\n", "", "max_connections: must be at least 1"),
            (
                "handshake_timeout = \"0s\"\n",
                "",
                "handshake_timeout: must be at least 1ms",
            ),
            (
                "transcript_max_entry_bytes = 0\n",
                "",
                "transcript_max_entry_bytes: must be at least 1",
            ),
            (
                "[policy]\ntombstone_ttl = \"0s\"\n",
                "",
                "policy.tombstone_ttl: must be longer than 0s",
            ),
            (
                "[policy]\nhistory_events = 0\n",
                "",
                "policy.history_events: must be from 1 to 256",
            ),
            (
                "[policy]\nhistory_events = 257\n",
                "",
                "policy.history_events: must be from 1 to 256",
            ),
            (
                "[policy]\ntranscript_grace = \"31d\"\n",
                "",
                "policy.transcript_grace: at most 30 days",
            ),
            (
                "transcript_max_bytes = 0\n",
                "",
                "transcript_max_bytes: must be at least 1",
            ),
            (
                "transcript_max_bytes = 1000\n",
                "",
                "transcript_max_entry_bytes: 1048576 is more than transcript_max_bytes (1000)",
            ),
        ];
        for (text, line, expected) in cases {
            let f = file(text);
            let err = Config::load(&options_with(&f, dir.path())).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains(line), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn loading_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("not-yet");
        let options = Settings {
            data_dir: Some(data_dir.clone()),
            ..Settings::default()
        };
        Config::load(&options).unwrap();
        assert!(
            !data_dir.exists(),
            "the data dir is made when the store opens, not while parsing"
        );
    }

    #[test]
    fn every_source_parses_durations_and_addresses_alike() {
        assert_eq!(
            "90s".parse::<HumanDuration>().unwrap(),
            HumanDuration(Duration::from_secs(90))
        );
        let err = "10 parsecs".parse::<HumanDuration>().unwrap_err();
        assert!(err.starts_with("invalid duration \"10 parsecs\""), "{err}");
        assert_eq!(
            "localhost:7".parse::<ListenAddr>().unwrap().0,
            SocketAddr::from(([127, 0, 0, 1], 7))
        );
        let err = "nowhere".parse::<ListenAddr>().unwrap_err();
        assert!(err.starts_with("invalid address \"nowhere\""), "{err}");
    }

    #[test]
    fn operator_signatures_are_read_lowercased_and_validated() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(
            "[[policy.signatures]]\nclass = \"transient\"\ncontains = \"Gateway Hiccup\"\nprovider = \"Claude\"\n\
             [[policy.signatures]]\nclass = \"session_gone\"\ncontains = \"workspace wiped\"\n",
        );
        let config = Config::load(&options_with(&f, dir.path())).unwrap();
        let rows = &config.policy.signatures;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].class, crate::domain::ResultClass::Transient);
        assert_eq!(rows[0].label(), "gateway hiccup");
        assert_eq!(rows[0].provider, "claude");
        assert_eq!(rows[1].provider, "");
        assert_eq!(load_policy(f.path()).unwrap(), config.policy);

        for (text, expected) in [
            (
                "[[policy.signatures]]\nclass = \"success\"\ncontains = \"x\"\n",
                "policy.signatures[1]: class \"success\" is not one of session_gone, invalid_session_id, quota, auth, transient",
            ),
            (
                "[[policy.signatures]]\nclass = \"quota\"\ncontains = \"  \"\n",
                "policy.signatures[1]: contains is empty",
            ),
            (
                "[[policy.signatures]]\nclass = \"quota\"\ntext = \"x\"\n",
                "unknown field `text`",
            ),
        ] {
            let f = file(text);
            let err = Config::load(&options_with(&f, dir.path())).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }
}

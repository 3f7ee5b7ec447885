//! Configuration: command-line flags, environment variables and an optional TOML file, merged
//! with flags over environment over file over built-in defaults (SPEC §6), then validated into a
//! [`Config`]. Every problem becomes one [`ConfigError`] line that names the setting.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::domain::{AgentPolicy, Policy, check_name};
use crate::store::postgres::PostgresSettings;
use crate::store::sqlite::SqliteSettings;

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
    pub options: Options,
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
    "migrate_on_start",
    "shutdown_delay",
    "drain_timeout",
    "max_connection_age",
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
        for name in ["migrate", "sweep", "classify"] {
            command = command.mut_subcommand(name, |sub| sub.args(serve_only.clone()));
        }
        let matches = command.try_get_matches_from_mut(args)?;
        if let Some((name @ ("migrate" | "sweep" | "classify"), sub)) = matches.subcommand() {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The level of every log line; when set, it wins over `RUST_LOG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
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
fn parse_listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved: Vec<SocketAddr> = text
        .to_socket_addrs()
        .map_err(|e| format!("{e} (expected HOST:PORT or IP:PORT, such as localhost:50051 or 0.0.0.0:50051)"))?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{text} resolves to no address"))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (expected a duration such as 500ms, 10s, 2h)"))
}

/// Settings that flags and environment variables can give; every one also has a file key.
#[derive(Debug, Clone, Default, Args)]
pub struct Options {
    /// gRPC listen address, IP:PORT or HOST:PORT [default: 0.0.0.0:50051]
    #[arg(long, env = "SESSIONKEEPER_LISTEN", global = true, value_name = "ADDR", value_parser = parse_listen_addr)]
    pub listen: Option<SocketAddr>,
    /// HTTP listen address of /metrics, /livez and /readyz, IP:PORT or HOST:PORT [default: 0.0.0.0:9090]
    #[arg(long, env = "SESSIONKEEPER_METRICS_LISTEN", global = true, value_name = "ADDR",
          value_parser = parse_listen_addr)]
    pub metrics_listen: Option<SocketAddr>,
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
    #[arg(long, env = "SESSIONKEEPER_DB_ACQUIRE_TIMEOUT", global = true, value_name = "DURATION",
          value_parser = parse_duration)]
    pub db_acquire_timeout: Option<Duration>,
    /// SessionService calls in flight at once; more are answered RESOURCE_EXHAUSTED at once [default: 64]
    #[arg(long, env = "SESSIONKEEPER_MAX_CONCURRENT_REQUESTS", global = true, value_name = "N")]
    pub max_concurrent_requests: Option<usize>,
    /// On SIGTERM, stay serving but not ready this long before draining [default: 0s]
    #[arg(long, env = "SESSIONKEEPER_SHUTDOWN_DELAY", global = true, value_name = "DURATION",
          value_parser = parse_duration)]
    pub shutdown_delay: Option<Duration>,
    /// Longest wait for in-flight calls after SIGTERM [default: 10s]
    #[arg(long, env = "SESSIONKEEPER_DRAIN_TIMEOUT", global = true, value_name = "DURATION",
          value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
    /// Close client connections after this age, so clients rebalance [default: none]
    #[arg(long, env = "SESSIONKEEPER_MAX_CONNECTION_AGE", global = true, value_name = "DURATION",
          value_parser = parse_duration)]
    pub max_connection_age: Option<Duration>,
}

/// The TOML file: the same settings as the flags (snake_case), plus `[policy]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default, deserialize_with = "listen_addr_opt")]
    listen: Option<SocketAddr>,
    #[serde(default, deserialize_with = "listen_addr_opt")]
    metrics_listen: Option<SocketAddr>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    auth_tokens: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<LogLevel>,
    migrate_on_start: Option<bool>,
    db_max_connections: Option<u32>,
    max_concurrent_requests: Option<usize>,
    #[serde(default, deserialize_with = "duration_opt")]
    db_acquire_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_opt")]
    shutdown_delay: Option<Duration>,
    #[serde(default, deserialize_with = "duration_opt")]
    drain_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "duration_opt")]
    max_connection_age: Option<Duration>,
    #[serde(default)]
    policy: PolicyFile,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default, deserialize_with = "duration_opt")]
    default_ttl: Option<Duration>,
    unknown_failure_limit: Option<u32>,
    #[serde(default, deserialize_with = "duration_opt")]
    sweep_interval: Option<Duration>,
    #[serde(default)]
    agents: BTreeMap<String, AgentPolicyFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentPolicyFile {
    #[serde(deserialize_with = "duration")]
    ttl: Duration,
}

fn duration<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(de)?;
    parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

fn duration_opt<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    duration(de).map(Some)
}

fn listen_addr_opt<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(de)?;
    parse_listen_addr(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid address {text:?}: {e}")))
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
    pub shutdown_delay: Duration,
    pub drain_timeout: Duration,
    pub max_connection_age: Option<Duration>,
    pub policy: Policy,
}

const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

impl Config {
    /// Merges `options` (flags and environment, as clap resolved them) over the file they name,
    /// over the defaults, and validates the result.
    pub fn load(options: &Options) -> Result<Config, ConfigError> {
        let file = match &options.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let o = options.clone();
        let policy = resolve_policy(file.policy)?;
        let database_url = o.database_url.or(file.database_url).filter(|url| !url.is_empty());
        let db_max_connections = o.db_max_connections.or(file.db_max_connections).unwrap_or(16);
        if db_max_connections == 0 {
            return Err(ConfigError::new("db_max_connections: must be at least 1"));
        }
        let acquire_timeout = o
            .db_acquire_timeout
            .or(file.db_acquire_timeout)
            .unwrap_or(Duration::from_secs(1));
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
                StoreSettings::Postgres(PostgresSettings {
                    url,
                    max_connections: db_max_connections,
                    acquire_timeout,
                })
            }
            None => {
                let data_dir = o.data_dir.or(file.data_dir).unwrap_or_else(|| PathBuf::from("./data"));
                check_writable(&data_dir)?;
                StoreSettings::Sqlite(SqliteSettings {
                    data_dir,
                    max_connections: db_max_connections.min(4),
                    acquire_timeout,
                })
            }
        };
        let tls = resolve_tls(
            o.tls_cert.or(file.tls_cert),
            o.tls_key.or(file.tls_key),
            o.tls_client_ca.or(file.tls_client_ca),
        )?;
        let max_concurrent_requests = o.max_concurrent_requests.or(file.max_concurrent_requests).unwrap_or(64);
        if max_concurrent_requests == 0 {
            return Err(ConfigError::new("max_concurrent_requests: must be at least 1"));
        }
        // The tokens file is read (and its errors reported) by the server at startup.
        let auth_tokens = o.auth_tokens.or(file.auth_tokens);
        Ok(Config {
            auth_tokens,
            listen: o.listen.or(file.listen).unwrap_or(([0, 0, 0, 0], 50051).into()),
            metrics_listen: o
                .metrics_listen
                .or(file.metrics_listen)
                .unwrap_or(([0, 0, 0, 0], 9090).into()),
            store,
            tls,
            log_format: o.log_format.or(file.log_format).unwrap_or(LogFormat::Text),
            log_level: o.log_level.or(file.log_level),
            migrate_on_start: o.migrate_on_start.or(file.migrate_on_start).unwrap_or(true),
            max_concurrent_requests,
            shutdown_delay: o.shutdown_delay.or(file.shutdown_delay).unwrap_or(Duration::ZERO),
            drain_timeout: o
                .drain_timeout
                .or(file.drain_timeout)
                .unwrap_or(Duration::from_secs(10)),
            max_connection_age: o.max_connection_age.or(file.max_connection_age),
            policy,
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
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

fn resolve_policy(file: PolicyFile) -> Result<Policy, ConfigError> {
    let defaults = Policy::default();
    let policy = Policy {
        default_ttl: file.default_ttl.unwrap_or(defaults.default_ttl),
        unknown_failure_limit: file.unknown_failure_limit.unwrap_or(defaults.unknown_failure_limit),
        sweep_interval: file.sweep_interval.unwrap_or(defaults.sweep_interval),
        agents: file
            .agents
            .into_iter()
            .map(|(agent, p)| (agent, AgentPolicy { ttl: p.ttl }))
            .collect(),
    };
    check_ttl("policy.default_ttl", policy.default_ttl)?;
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

/// Creates the data dir if needed and proves a file can be written in it.
fn check_writable(dir: &Path) -> Result<(), ConfigError> {
    let fail = |e: std::io::Error| ConfigError::new(format!("data_dir {}: not writable: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let probe = dir.join(".sessionkeeper-write-probe");
    std::fs::write(&probe, b"ok").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)?;
    Ok(())
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

    fn options_with(config: &tempfile::NamedTempFile, data_dir: &Path) -> Options {
        Options {
            config: Some(config.path().to_owned()),
            data_dir: Some(data_dir.to_owned()),
            ..Options::default()
        }
    }

    #[test]
    fn the_policy_file_sets_ttls_limits_and_agents() {
        let dir = tempfile::tempdir().unwrap();
        let f = file(
            "[policy]\ndefault_ttl = \"12h\"\nunknown_failure_limit = 3\nsweep_interval = \"5m\"\n\
             [policy.agents.reviewer]\nttl = \"2h\"\n",
        );
        let config = Config::load(&options_with(&f, dir.path())).unwrap();
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
        let config = Config::load(&options).unwrap();
        assert_eq!(config.listen, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(
            config.drain_timeout,
            Duration::from_secs(3),
            "the file wins over the default"
        );
    }

    #[test]
    fn defaults_apply_without_file_or_flags() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            data_dir: Some(dir.path().to_owned()),
            ..Options::default()
        };
        let config = Config::load(&options).unwrap();
        assert_eq!(config.listen, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(config.metrics_listen, "0.0.0.0:9090".parse().unwrap());
        assert!(config.migrate_on_start);
        assert_eq!(config.drain_timeout, Duration::from_secs(10));
        assert!(matches!(config.store, StoreSettings::Sqlite(_)));
        assert_eq!(config.policy, Policy::default());
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
        ];
        for (text, line, expected) in cases {
            let f = file(text);
            let err = Config::load(&options_with(&f, dir.path())).unwrap_err().to_string();
            assert!(err.contains(expected) && err.contains(line), "{text:?} gave {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }

    #[test]
    fn an_unwritable_data_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("a-file");
        std::fs::write(&blocker, b"x").unwrap();
        let options = Options {
            data_dir: Some(blocker.join("data")),
            ..Options::default()
        };
        let err = Config::load(&options).unwrap_err().to_string();
        assert!(err.starts_with("data_dir ") && err.contains("not writable"), "{err}");
    }
}

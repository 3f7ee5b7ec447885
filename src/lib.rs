//! sessionkeeper: a gRPC service that owns the lifecycle of AI-agent SDK session ids. The modules
//! follow the request's path: `server` decodes and validates, `service` loads, decides and saves
//! (`transcripts` keeps Agent SDK transcripts the same way), `domain` holds the pure rules, `store`
//! persists (Postgres or an embedded SQLite file). `app` wires them into a process; `config` and
//! `telemetry` are its edges (`semconv`: the trace conventions chosen at start-up).

pub mod app;
pub mod classify_command;
pub mod clock;
pub mod config;
pub mod domain;
pub mod inspect_command;
pub mod metrics;
pub mod proto;
pub mod semconv;
pub mod server;
pub mod service;
pub mod store;
pub mod sweeper;
pub mod telemetry;
pub mod transcripts;

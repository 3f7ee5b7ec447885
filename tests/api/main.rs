//! The gRPC API end to end: real servers on port 0 against real Postgres (a fresh schema per test)
//! and the embedded SQLite store, driven by a real tonic client; and the real binary, started,
//! signalled and killed as an operator would.

#[path = "../support/mod.rs"]
mod support;

mod helpers;

mod binary;
mod classify_command;
mod cli;
mod connections;
mod get;
mod health;
mod input;
mod inspect;
mod inspect_cli;
mod observability;
mod orchestrator_loop;
mod overload;
mod policy_reload;
mod readme;
mod readme_inspect;
mod report;
mod security;
mod signatures_readme;
mod sweep;
mod tombstones;
mod traces;
mod transcript_lifecycle;
mod transcripts;

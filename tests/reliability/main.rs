//! Reliability through the real thing: a private Postgres cluster
//! stopped and restarted under load, SIGTERM to the real binary under load, three replicas racing
//! on one Postgres, PgBouncer, locked rows, failover to a standby, a replica whose clock is off
//! (libfaketime), the embedded store's files (a full disk, damaged and empty files, the data dir's
//! lock), abuse of the gRPC port (HTTP/2 clients that never read, descriptor exhaustion under
//! `prlimit`, silent handshakes, the connection limit), and bad input at scale (properties, random
//! payloads, oversized messages).
//! Every test is bounded in time and uses loopback only; measurements are printed with
//! `--nocapture` (lines starting OUTAGE, STALE, SHUTDOWN, DRAIN, REPLICAS, FUZZ, POOLER, FAILOVER,
//! CLOCK, DISK, DAMAGED, ABUSE).

#[path = "../support/mod.rs"]
mod support;

mod load;
mod pg_cluster;

mod abuse;
mod bad_payloads;
mod clock;
mod embedded_store;
mod failover;
mod outage;
mod pooler;
mod postgres_tls;
mod replicas;
mod report_contention;
mod request_validation;
mod shutdown;

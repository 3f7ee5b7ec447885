//! Failover through the real thing: a private primary with a streaming standby made by
//! `pg_basebackup -R`, a socat TCP proxy as "the database address" that the test repoints, and the
//! real binary behind it. A node that turns read-only answers UNAVAILABLE (never INTERNAL) and
//! unreadies the replica; writes succeed again soon after the address leads to a primary; with
//! synchronous replication no acknowledged report is missing on the promoted standby, even when
//! the old primary hung (SIGSTOP: its TCP connections stay open, nothing answers).
//! Measurements print as FAILOVER lines with `--nocapture`.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionkeeper::proto::session_service_client::SessionServiceClient;
use sessionkeeper::proto::{self, Action};
use sessionkeeper::store::SessionStore;
use sessionkeeper::store::postgres::PostgresStore;
use sqlx::Connection;
use tonic::Code;
use tonic::transport::Channel;

use crate::pg_cluster::{PgCluster, free_port};
use crate::support;
use crate::support::fixtures::{key, report_request, success};
use crate::support::process::{Server, accepts_connections};
use crate::support::wait::{wait_for, wait_for_every, wait_until};

/// How soon writes must succeed again once a primary is reachable at the address.
const RECOVERY_WITHIN: Duration = Duration::from_secs(5);

/// "The database address": a socat listener forwarding to one cluster. Repointing starts a new
/// listener on the same port; connections already made keep going where they went, as they do
/// when a DNS name or a virtual IP moves.
struct Address {
    port: u16,
    listener: Option<Child>,
}

impl Address {
    async fn to(target: u16) -> Address {
        let mut address = Address {
            port: free_port(),
            listener: None,
        };
        address.repoint(target).await;
        address
    }

    async fn repoint(&mut self, target: u16) {
        if let Some(mut old) = self.listener.take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        // Until the port accepts connections; a socat that exited (it could not bind the port
        // yet) is started again.
        let port = self.port;
        let mut listener: Option<Child> = None;
        wait_until(
            Duration::from_secs(20),
            &format!("socat listening on {port} again"),
            || {
                let running = listener
                    .as_mut()
                    .is_some_and(|child| child.try_wait().unwrap().is_none());
                if !running {
                    listener = Some(
                        Command::new("socat")
                            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
                            .arg(format!("TCP:127.0.0.1:{target}"))
                            .stderr(Stdio::null())
                            .spawn()
                            .expect("socat is installed (Debian package socat; scripts/test installs it)"),
                    );
                }
                async move { running && accepts_connections(port).await }
            },
        )
        .await;
        self.listener = listener;
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/sessionkeeper", self.port)
    }
}

impl Drop for Address {
    fn drop(&mut self) {
        if let Some(mut listener) = self.listener.take() {
            let _ = listener.kill();
            let _ = listener.wait();
        }
        // The forked children that still carry old connections.
        let _ = Command::new("pkill")
            .args(["-f", &format!("TCP-LISTEN:{},bind", self.port)])
            .status();
    }
}

/// Runs each statement on its own (ALTER SYSTEM refuses to run in a multi-statement query).
async fn sql(url: &str, statements: &[&'static str]) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    for statement in statements {
        sqlx::raw_sql(*statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.ok();
}

/// Waits until a new session on `url` sees `setting = value`. `pg_reload_conf()` only signals the
/// postmaster, which re-reads the files and then signals every backend; until it has, a pooled
/// session's next transaction still runs under the old setting. A new session forks from the
/// postmaster, so once one sees the value, every existing backend has been signalled and applies
/// it before its next command.
async fn wait_for_setting(url: &str, setting: &'static str, value: &str) {
    wait_until(
        Duration::from_secs(10),
        &format!("a new session seeing {setting} = {value:?}"),
        || async move {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            let (current,): (String,) = sqlx::query_as("SELECT current_setting($1)")
                .bind(setting)
                .fetch_one(&mut conn)
                .await
                .unwrap();
            conn.close().await.ok();
            current == value
        },
    )
    .await;
}

async fn migrate(url: &str) {
    let store = PostgresStore::connect_lazy(&support::pg_settings(url)).unwrap();
    store.migrate().await.expect("migrate the primary directly");
    store.close().await;
}

fn report(conversation: &str, session_id: &str) -> proto::ReportResultRequest {
    report_request(&key(conversation), "", success(session_id, 1), "")
}

/// The real binary with the database at `address`, with this acquire timeout.
fn serve_behind(address: &Address, name: &str, acquire_timeout: &str) -> Server {
    let url = address.url();
    Server::start(name, move |c| {
        c.env("DATABASE_URL", url)
            .args(["--migrate-on-start=false", "--db-acquire-timeout", acquire_timeout]);
    })
}

async fn write(client: &mut SessionServiceClient<Channel>, n: usize) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(report(&format!("c-{n}"), &format!("s-{n}")));
    request.set_timeout(Duration::from_secs(10));
    let reply = client.report_result(request).await?.into_inner();
    assert_eq!(reply.action(), Action::Stored);
    Ok(())
}

/// Writes until one succeeds; returns how long that took and the write's number. Every failure
/// must be UNAVAILABLE.
async fn until_a_write_succeeds(client: &SessionServiceClient<Channel>, first: usize) -> (Duration, usize) {
    let started = Instant::now();
    let mut n = first;
    let last = wait_for_every(
        Duration::from_millis(50),
        Duration::from_secs(30),
        "writes coming back",
        || {
            n += 1;
            let (mut client, n) = (client.clone(), n);
            async move {
                match write(&mut client, n).await {
                    Ok(()) => Some(n),
                    Err(e) => {
                        assert_eq!(e.code(), Code::Unavailable, "never INTERNAL: {e:?}");
                        None
                    }
                }
            }
        },
    )
    .await;
    (started.elapsed(), last)
}

/// The primary turns read-only under the replica's pooled connections (as a demoted primary
/// does): writes are UNAVAILABLE and the replica unready. Then the standby is promoted and the
/// address repointed to it: writes succeed again within 5 s, and keep succeeding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_turning_read_only_is_unavailable_and_writes_return_once_the_address_leads_to_a_primary() {
    let primary = PgCluster::start().await;
    migrate(&primary.url()).await;
    let standby = PgCluster::standby_of(&primary).await;
    let mut address = Address::to(primary.port).await;
    // 2 s to get a connection, not the default 1 s: the warm-up below opens eight fresh connections
    // at once through the proxy while the other reliability tests load both cores (a first CI run
    // saw one take longer than 1 s). Nothing this test measures depends on it.
    let server = serve_behind(&address, "read-only", "2s");
    server.wait_ready(Duration::from_secs(30)).await;
    let mut client = server.client().await;
    // Warm the pool: several connections to the primary sit in it.
    let warm: Vec<_> = (0..8)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move { write(&mut client, 1000 + i).await })
        })
        .collect();
    for task in warm {
        task.await.unwrap().expect("a write to the primary");
    }

    sql(
        &primary.url(),
        &[
            "ALTER SYSTEM SET default_transaction_read_only = on",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    wait_for_setting(&primary.url(), "default_transaction_read_only", "on").await;
    let mut n = 2000;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut unavailable = 0;
    while unavailable < 5 {
        n += 1;
        let err = write(&mut client, n)
            .await
            .expect_err("no write succeeds on a read-only node");
        assert_eq!(
            err.code(),
            Code::Unavailable,
            "a read-only node is UNAVAILABLE, never INTERNAL: {err:?}"
        );
        unavailable += 1;
        assert!(Instant::now() < deadline);
    }
    wait_until(
        Duration::from_secs(10),
        "readiness turning NOT_SERVING on a read-only node",
        || async { server.readyz().await == 503 },
    )
    .await;

    standby.promote().await;
    address.repoint(standby.port).await;
    let (recovered, last) = until_a_write_succeeds(&client, n).await;
    assert!(
        recovered < RECOVERY_WITHIN,
        "writes came back {recovered:?} after the repoint"
    );
    for i in 1..=20 {
        write(&mut client, last + i).await.expect("every later write succeeds");
    }
    server.wait_ready(Duration::from_secs(10)).await;
    println!("FAILOVER read-only node: {unavailable} writes UNAVAILABLE; writes back {recovered:?} after the repoint");
    server.stop().await;
}

/// Synchronous replication; the primary hangs mid-traffic (SIGSTOP); the standby is promoted and
/// the address repointed: writes come back within 5 s, and every report acknowledged before,
/// during or after is on the promoted node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_over_from_a_hung_primary_recovers_in_time_and_loses_no_acknowledged_report() {
    let primary = PgCluster::start().await;
    migrate(&primary.url()).await;
    let standby = PgCluster::standby_of(&primary).await;
    sql(
        &primary.url(),
        &[
            "ALTER DATABASE sessionkeeper SET synchronous_commit = on",
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ],
    )
    .await;
    wait_for_setting(&primary.url(), "synchronous_standby_names", "*").await;
    let mut address = Address::to(primary.port).await;
    // The default acquire timeout: it is also how long the readiness check waits for a pooled
    // connection's BEGIN before it judges the node hung, which the recovery time includes.
    let server = serve_behind(&address, "hung-primary", "1s");
    server.wait_ready(Duration::from_secs(30)).await;

    // Writers report new keys without pause; every acknowledged one is remembered.
    let acknowledged: Arc<Mutex<BTreeMap<usize, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let base = server.client().await;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
            let mut client = base.clone();
            tokio::spawn(async move {
                let mut n = w * 1_000_000;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    match write(&mut client, n).await {
                        Ok(()) => {
                            acknowledged.lock().unwrap().insert(n, Instant::now());
                        }
                        Err(e) => assert_eq!(e.code(), Code::Unavailable, "never INTERNAL: {e:?}"),
                    }
                }
            })
        })
        .collect();
    let before = |count: usize| {
        let acknowledged = acknowledged.clone();
        async move {
            wait_until(
                Duration::from_secs(30),
                &format!("{count} reports acknowledged"),
                || {
                    let seen = acknowledged.lock().unwrap().len();
                    async move { seen >= count }
                },
            )
            .await;
        }
    };
    before(50).await;

    primary.hang();
    let hung_at = Instant::now();
    standby.promote().await;
    address.repoint(standby.port).await;
    let repointed = Instant::now();
    let acknowledged_at_repoint = acknowledged.lock().unwrap().len();
    let recovered = wait_for(Duration::from_secs(30), "writes coming back after the failover", || {
        let latest = acknowledged.lock().unwrap().values().max().copied();
        async move { latest.filter(|at| *at > repointed).map(|at| at - repointed) }
    })
    .await;
    if recovered >= RECOVERY_WITHIN {
        // What the server saw: its warnings and everything but the per-report lines.
        let seen: Vec<String> = server
            .log_events()
            .iter()
            .filter(|e| e["message"] != "report applied")
            .map(|e| e.to_string())
            .collect();
        panic!(
            "writes came back {recovered:?} after the repoint (hang → repoint {:?}); the server logged:\n{}",
            repointed - hung_at,
            seen.join("\n")
        );
    }
    before(acknowledged_at_repoint + 50).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for writer in writers {
        writer.await.expect("a writer saw INTERNAL");
    }

    // Every acknowledged report is on the promoted node.
    let mut promoted = sqlx::PgConnection::connect(&standby.url()).await.unwrap();
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT conversation, session_id FROM session")
        .fetch_all(&mut promoted)
        .await
        .unwrap();
    let present: BTreeMap<String, String> = rows.into_iter().collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let missing: Vec<usize> = acknowledged
        .keys()
        .filter(|n| present.get(&format!("c-{n}")) != Some(&format!("s-{n}")))
        .copied()
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged reports missing on the promoted node: {missing:?}"
    );
    println!(
        "FAILOVER hung primary: promoted and repointed {:?} after the hang; writes back {recovered:?} after the \
         repoint; {} reports acknowledged, 0 missing on the promoted node",
        repointed - hung_at,
        acknowledged.len()
    );
    promoted.close().await.ok();
    server.stop().await;
    primary.resume();
}

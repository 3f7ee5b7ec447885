//! A database outage on a private Postgres cluster that the test stops and
//! starts under load. Calls fail fast with UNAVAILABLE, readiness turns off while liveness stays on
//! (an orchestrator must not restart pods for a database outage), and the service recovers by
//! itself. Stale pooled connections after a restart do not fail the first call.

use std::time::{Duration, Instant};

use sessionkeeper::proto::{self, Action, Decision};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::load::{Call, Load, describe};
use crate::pg_cluster::PgCluster;
use std::cell::Cell;

use crate::load::ms;
use crate::support::fixtures::{get_request, key_in, report_request, success};
use crate::support::process::{Server, health_status, http_get};
use crate::support::wait::{wait_for, wait_until};

/// SPEC §6: with Postgres gone, a call fails within this.
const FAIL_FAST: Duration = Duration::from_secs(2);
/// "Within a few seconds": readiness must follow the database at least this fast, both ways.
const FOLLOW_WITHIN: Duration = Duration::from_secs(5);

fn start_server(cluster: &PgCluster, name: &str, extra: &[&str]) -> Server {
    let url = cluster.url();
    let extra: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    Server::start(name, move |c| {
        c.env("DATABASE_URL", url)
            .args(["--db-acquire-timeout", "1s"])
            .args(extra);
    })
}

/// Polls `/readyz` and the readiness health service until both say `ready`; returns how long each
/// took from `since`. Liveness is checked on every poll: it never changes.
async fn wait_readiness(server: &Server, probe: &Channel, ready: bool, since: Instant) -> (Duration, Duration) {
    let (readyz_at, health_at) = (Cell::new(None), Cell::new(None));
    let want_http = if ready { 200 } else { 503 };
    let want_grpc = if ready {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    let what = format!("readiness turning {}", if ready { "on" } else { "off" });
    let (readyz_at, health_at) = (&readyz_at, &health_at);
    wait_until(FOLLOW_WITHIN + Duration::from_secs(5), &what, move || async move {
        if readyz_at.get().is_none() && server.readyz().await == want_http {
            readyz_at.set(Some(since.elapsed()));
        }
        if health_at.get().is_none() && health_status(probe, proto::SERVICE_NAME).await.ok() == Some(want_grpc) {
            health_at.set(Some(since.elapsed()));
        }
        assert_eq!(server.livez().await, 200, "/livez stays 200");
        assert_eq!(
            health_status(probe, "").await.ok(),
            Some(ServingStatus::Serving),
            "liveness (health \"\") stays SERVING"
        );
        readyz_at.get().is_some() && health_at.get().is_some()
    })
    .await;
    (readyz_at.get().unwrap(), health_at.get().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_outage_fails_calls_unavailable_in_2s_readiness_off_liveness_on_and_recovers_by_itself() {
    let cluster = PgCluster::start().await;
    let mut server = start_server(&cluster, "outage", &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    let pid = server.pid();
    let probe = server.channel().await;
    let mut channels = Vec::new();
    for _ in 0..4 {
        channels.push(server.channel().await);
    }
    let load = Load::start(channels, "outage", Duration::from_millis(10));
    // Measures time passing: one second of load on the healthy database, before the outage.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let healthy = load.calls();
    assert!(healthy.len() >= 20, "the load runs ({} calls)", healthy.len());
    let failed: Vec<&Call> = healthy.iter().filter(|c| c.code != Code::Ok).collect();
    assert!(
        failed.is_empty(),
        "calls fail before the outage: {}",
        describe(&failed, healthy[0].start)
    );

    // Postgres goes away (open sessions are terminated) while the load runs.
    let stop_begin = Instant::now();
    cluster.pg_ctl_stop_fast().await;
    let down = Instant::now();
    let (readyz_off, health_off) = wait_readiness(&server, &probe, false, down).await;
    let detected = readyz_off.max(health_off);

    // Stay down a while: readiness stays off, liveness on, the process keeps running.
    let up_after = Instant::now() + Duration::from_secs(3);
    while Instant::now() < up_after {
        assert_eq!(server.readyz().await, 503, "/readyz stays 503 while Postgres is down");
        assert_eq!(server.livez().await, 200, "/livez stays 200 while Postgres is down");
        assert_eq!(health_status(&probe, "").await.ok(), Some(ServingStatus::Serving));
        assert!(server.exit_status().is_none(), "the process keeps running");
        // Measures time passing: all of it, Postgres stays down and readiness off.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Postgres comes back; nobody touches sessionkeeper.
    let up_begin = Instant::now();
    cluster.pg_ctl_start().await;
    let up = Instant::now();
    let (readyz_on, health_on) = wait_readiness(&server, &probe, true, up).await;
    let ready_again = up + readyz_on.max(health_on);
    let client = proto::session_service_client::SessionServiceClient::new(probe.clone());
    let probe_key = key_in("outage", "after-recovery");
    let call_ok = wait_for(
        (FOLLOW_WITHIN * 2).saturating_sub(up.elapsed()),
        "a call succeeding after Postgres is back",
        || {
            let (mut client, request) = (client.clone(), get_request(&probe_key));
            async move { client.get(request).await.is_ok().then(|| up.elapsed()) }
        },
    )
    .await;
    // Measures time passing: the load runs one more second on the recovered database.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let calls = load.stop().await;
    let origin = calls[0].start;

    // Every call is bounded, and a clean status, whatever phase it ran in.
    let slow: Vec<&Call> = calls.iter().filter(|c| c.took() > FAIL_FAST).collect();
    assert!(
        slow.is_empty(),
        "calls took over {FAIL_FAST:?}: {}",
        describe(&slow, origin)
    );
    let unclean: Vec<&Call> = calls
        .iter()
        .filter(|c| !matches!(c.code, Code::Ok | Code::Unavailable))
        .collect();
    assert!(
        unclean.is_empty(),
        "calls ended with neither OK nor UNAVAILABLE: {}",
        describe(&unclean, origin)
    );
    // Calls made entirely while Postgres was down fail with UNAVAILABLE.
    let during: Vec<&Call> = calls.iter().filter(|c| c.start >= down && c.end <= up_begin).collect();
    assert!(
        during.len() >= 4,
        "load ran through the outage ({} calls)",
        during.len()
    );
    let not_unavailable: Vec<&Call> = during.iter().copied().filter(|c| c.code != Code::Unavailable).collect();
    assert!(
        not_unavailable.is_empty(),
        "calls during the outage: {}",
        describe(&not_unavailable, origin)
    );
    // Once ready again, every call succeeds.
    let after: Vec<&Call> = calls.iter().filter(|c| c.start >= ready_again).collect();
    assert!(after.len() >= 8, "load ran after recovery ({} calls)", after.len());
    let failed_after: Vec<&Call> = after.iter().copied().filter(|c| c.code != Code::Ok).collect();
    assert!(
        failed_after.is_empty(),
        "calls failed after readiness returned: {}",
        describe(&failed_after, origin)
    );
    // The same process throughout, and it says why it was not ready.
    assert_eq!(server.pid(), pid);
    assert!(server.exit_status().is_none(), "never restarted, never exited");
    let logs = server.log_events();
    assert!(
        logs.iter().any(|e| e["message"] == "store not ready: not serving"),
        "the outage is logged"
    );

    let worst = during.iter().map(|c| c.took()).max().unwrap_or_default();
    let mean = during.iter().map(|c| c.took()).sum::<Duration>() / u32::try_from(during.len()).unwrap();
    eprintln!(
        "OUTAGE: pg_ctl stop -m fast took {}; readiness off after {} (/readyz {}, grpc health {}); \
         {} calls during the outage, all UNAVAILABLE, mean {} worst {}",
        ms(down - stop_begin),
        ms(detected),
        ms(readyz_off),
        ms(health_off),
        during.len(),
        ms(mean),
        ms(worst)
    );
    eprintln!(
        "OUTAGE: pg_ctl start took {}; readiness back after {} (/readyz {}, grpc health {}); first call OK \
         after {}; {} calls after recovery, all OK",
        ms(up - up_begin),
        ms(readyz_on.max(health_on)),
        ms(readyz_on),
        ms(health_on),
        ms(call_ok),
        after.len()
    );
    server.stop().await;
    drop(cluster);
}

/// Warms the pool with concurrent calls, so that it holds several open connections.
async fn burst(clients: &[proto::session_service_client::SessionServiceClient<Channel>], round: usize) -> Vec<Code> {
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let key = key_in("stale", &format!("c{i}"));
            let outcome = if (i + round).is_multiple_of(2) {
                client.get(get_request(&key)).await.map(drop)
            } else {
                let request = report_request(&key, "", success(&format!("s{i}-r{round}"), 3), "");
                client.report_result(request).await.map(drop)
            };
            outcome.map_or_else(|s| s.code(), |()| Code::Ok)
        }));
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes
}

async fn idle_connections(server: &Server) -> i64 {
    let (status, body) = http_get(server.metrics, "/metrics").await;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix("sessionkeeper_store_connections{state=\"idle\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("sessionkeeper_store_connections{state=\"idle\"} is exported")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stale_pooled_connections_after_a_postgres_restart_do_not_fail_the_first_call() {
    let cluster = PgCluster::start().await;
    let server = start_server(&cluster, "stale", &["--db-max-connections", "8"]);
    server.wait_ready(Duration::from_secs(20)).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(server.client().await);
    }
    for restart in 0..2 {
        for round in 0..5 {
            let codes = burst(&clients, round).await;
            assert!(codes.iter().all(|c| *c == Code::Ok), "warm-up calls: {codes:?}");
        }
        let idle = idle_connections(&server).await;
        assert!(idle >= 2, "the pool holds connections before the restart ({idle} idle)");

        cluster.pg_ctl_restart_fast().await;
        // The first call after the restart, then every pooled connection at once.
        let mut client = clients[0].clone();
        let started = Instant::now();
        let first = client.get(get_request(&key_in("stale", "c0"))).await;
        let first_took = started.elapsed();
        let first = first.unwrap_or_else(|s| {
            panic!(
                "restart {restart}: the first call after a Postgres restart failed: {s:?}\n{}",
                cluster.server_log()
            )
        });
        let first = first.into_inner();
        assert!(matches!(first.decision(), Decision::Resume | Decision::StartFresh));
        let request = report_request(
            &key_in("stale", "c1"),
            "",
            success(&format!("after-restart-{restart}"), 3),
            "",
        );
        let stored = client
            .report_result(request)
            .await
            .expect("a report right after the restart");
        assert_eq!(stored.into_inner().action(), Action::Stored);
        let codes = burst(&clients, restart).await;
        assert!(
            codes.iter().all(|c| *c == Code::Ok),
            "restart {restart}: calls on the stale pool: {codes:?}"
        );
        eprintln!(
            "STALE: restart {restart}: {idle} idle pooled connections before pg_ctl restart -m fast; first call OK in \
             {}, then {} concurrent calls OK",
            ms(first_took),
            codes.len()
        );
    }
    assert_eq!(server.readyz().await, 200);
    server.stop().await;
    drop(cluster);
}

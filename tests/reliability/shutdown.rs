//! Graceful shutdown of the real binary under load. On SIGTERM readiness turns
//! off at once, calls are served through `--shutdown-delay`, then new connections are refused,
//! in-flight calls complete, and the process exits 0 within delay + drain timeout even while
//! clients hold idle HTTP/2 connections open.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sessionkeeper::proto::{self, Action, Decision};
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::load::ms;
use crate::load::{Call, Load, describe};
use crate::support::fixtures::{get_request, key_in, report_request, success};
use crate::support::process::{Server, health_status, http_get};
use crate::support::wait::wait_for_every;

const DELAY: Duration = Duration::from_secs(1);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// Readiness must be off this soon after SIGTERM ("at once"): measured 5–10 ms on a quiet machine,
/// up to ~180 ms with the whole suite on 2 busy cores; far below the delay, which is what matters.
const AT_ONCE: Duration = Duration::from_millis(400);
/// Process teardown after the drain (closing the store, flushing).
const EXIT_SLACK: Duration = Duration::from_millis(1500);
/// Load clients, each on its own connection (the embedded store syncs every commit: keep it steady).
const CLIENTS: usize = 4;

fn start_server(data_dir: &std::path::Path, name: &str, delay: Duration) -> Server {
    let data_dir = data_dir.to_owned();
    Server::start(name, move |c| {
        c.arg("--data-dir")
            .arg(data_dir)
            .arg("--shutdown-delay")
            .arg(humantime_secs(delay))
            .arg("--drain-timeout")
            .arg(humantime_secs(DRAIN_TIMEOUT));
    })
}

fn humantime_secs(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A client that opened an HTTP/2 connection (preface and SETTINGS) and then never reads nor
/// writes again: the most stubborn idle client.
async fn idle_raw_http2_connection(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    // An empty SETTINGS frame: length 0, type 4, no flags, stream 0.
    stream.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await.unwrap();
    stream
}

/// Polls `check` every 2 ms until it is true; returns when, after `since` (at most the delay).
async fn first_true<F, Fut>(since: Instant, check: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let within = DELAY.saturating_sub(since.elapsed());
    wait_for_every(Duration::from_millis(2), within, "turning off after SIGTERM", || {
        let checked = check();
        async move { checked.await.then(|| since.elapsed()) }
    })
    .await
}

/// A one-message request stream whose message is sent only when the test says so: the call is
/// open on the server (headers received, handler waiting for the body) until then.
struct HeldMessage(Option<oneshot::Receiver<proto::GetRequest>>);

impl tokio_stream::Stream for HeldMessage {
    type Item = proto::GetRequest;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(rx) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rx).poll(cx) {
            Poll::Ready(message) => {
                self.0 = None;
                Poll::Ready(message.ok())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Starts a Get whose request body is held back; returns the sender that releases it and the call.
async fn held_get(
    server: &Server,
) -> (
    oneshot::Sender<proto::GetRequest>,
    tokio::task::JoinHandle<(Instant, Result<proto::GetResponse, tonic::Status>)>,
) {
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.expect("ready");
    let (release, held) = oneshot::channel();
    let call = tokio::spawn(async move {
        let path = PathAndQuery::from_static("/sessionkeeper.v1.SessionService/Get");
        let codec = tonic_prost::ProstCodec::<proto::GetRequest, proto::GetResponse>::default();
        let outcome = async {
            let response = grpc
                .streaming(tonic::Request::new(HeldMessage(Some(held))), path, codec)
                .await?;
            let mut messages = response.into_inner();
            let message = messages.message().await?;
            message.ok_or_else(|| tonic::Status::internal("no response message"))
        };
        let outcome = tokio::time::timeout(Duration::from_secs(15), outcome)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("held call never answered")));
        (Instant::now(), outcome)
    });
    (release, call)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_under_load_unreadies_at_once_serves_the_delay_drains_in_flight_calls_refuses_connections_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), "shutdown", DELAY);
    server.wait_ready(Duration::from_secs(20)).await;
    let probe = server.channel().await;

    // A conversation with a stored session, for the call held open across the drain.
    let held_key = key_in("shutdown", "held");
    let mut client = server.client().await;
    let stored = client
        .report_result(report_request(&held_key, "", success("held-session", 3), ""))
        .await
        .expect("store the held call's session")
        .into_inner();
    assert_eq!(stored.action(), Action::Stored);
    // An idle, well-behaved client (one call, then nothing) and an idle raw HTTP/2 connection.
    let idle_channel = server.channel().await;
    proto::session_service_client::SessionServiceClient::new(idle_channel.clone())
        .get(get_request(&held_key))
        .await
        .expect("a call on the idle channel");
    let idle_raw = idle_raw_http2_connection(server.grpc).await;

    let mut channels = Vec::new();
    for _ in 0..CLIENTS {
        channels.push(server.channel().await);
    }
    let load = Load::start(channels, "shutdown", Duration::from_millis(2));
    let (release, held) = held_get(&server).await;
    // Measures time passing: half a second of load, through which the held call stays open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the held call waits for its body");

    let sigterm = Instant::now();
    server.signal("-TERM");
    // Readiness: /readyz and the readiness health service turn off at once. Each probe polls on
    // its own task, so one slow probe does not delay noticing another.
    let metrics = server.metrics;
    let readyz = tokio::spawn(first_true(sigterm, move || async move {
        http_get(metrics, "/readyz").await.0 == 503
    }));
    let health_channel = probe.clone();
    let health = tokio::spawn(first_true(sigterm, move || {
        let channel = health_channel.clone();
        async move { health_status(&channel, proto::SERVICE_NAME).await.ok() == Some(ServingStatus::NotServing) }
    }));
    let live_channel = probe.clone();
    let live = tokio::spawn(first_true(sigterm, move || {
        let channel = live_channel.clone();
        async move { health_status(&channel, "").await.ok() == Some(ServingStatus::NotServing) }
    }));
    let (readyz_off, health_off, live_off) = (readyz.await.unwrap(), health.await.unwrap(), live.await.unwrap());
    assert!(
        readyz_off <= AT_ONCE,
        "/readyz turned 503 only {readyz_off:?} after SIGTERM"
    );
    assert!(
        health_off <= AT_ONCE,
        "readiness health turned off only {health_off:?} after SIGTERM"
    );

    // After the delay the drain starts: new connections are refused.
    tokio::time::sleep_until((sigterm + DELAY + Duration::from_millis(300)).into()).await;
    let drain_logged = server
        .log_read_at("draining in-flight calls")
        .expect("the drain has started");
    let refused = tokio::net::TcpStream::connect(server.grpc).await;
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection during the drain is refused, got {refused:?}"
    );
    assert!(!held.is_finished(), "the held call is still in flight during the drain");

    // The call that was in flight when the drain began completes normally.
    let _ = release.send(get_request(&held_key));
    let released = Instant::now();
    let (held_done, held_outcome) = held.await.unwrap();
    let held_answer = held_outcome.expect("the in-flight call completes during the drain");
    assert_eq!(held_answer.decision(), Decision::Resume);
    assert_eq!(held_answer.session_id, "held-session");

    let status = server.wait_exit(DELAY + DRAIN_TIMEOUT + EXIT_SLACK).await;
    let exited = Instant::now();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(
        exited - sigterm <= DELAY + DRAIN_TIMEOUT + EXIT_SLACK,
        "exit took {:?} after SIGTERM",
        exited - sigterm
    );
    drop(idle_raw);
    drop(idle_channel);
    let calls = load.stop().await;

    // Calls started during the delay were all served.
    let origin = sigterm;
    let in_delay: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start >= sigterm && c.start + Duration::from_millis(50) < sigterm + DELAY)
        .collect();
    assert!(
        in_delay.len() >= 10,
        "load ran through the delay ({} calls)",
        in_delay.len()
    );
    let failed_in_delay: Vec<&Call> = in_delay.iter().copied().filter(|c| c.code != Code::Ok).collect();
    assert!(
        failed_in_delay.is_empty(),
        "calls failed during the shutdown delay: {}",
        describe(&failed_in_delay, origin)
    );
    // No call that started before the drain failed; later ones end with a clean UNAVAILABLE.
    let before_drain: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start + Duration::from_millis(20) < drain_logged)
        .collect();
    let failed_before_drain: Vec<&Call> = before_drain.iter().copied().filter(|c| c.code != Code::Ok).collect();
    assert!(
        failed_before_drain.is_empty(),
        "calls started before the drain failed: {}",
        describe(&failed_before_drain, origin)
    );
    let (late, cancelled) = check_late_calls(&calls, drain_logged, origin);
    let timed_out = server
        .log_events()
        .iter()
        .any(|e| e["message"].as_str().is_some_and(|m| m.contains("drain timed out")));
    let last_ok = calls
        .iter()
        .filter(|c| c.code == Code::Ok)
        .map(|c| c.end)
        .max()
        .unwrap();
    eprintln!(
        "SHUTDOWN: readiness off {} after SIGTERM (/readyz {}, grpc health {}, liveness {}); {} calls served \
         during the {DELAY:?} delay, {} calls before the drain, all OK; drain started {} after SIGTERM; \
         last load call OK {} after SIGTERM; the in-flight call released {} into the drain completed in {}; \
         exit 0 {} after the drain started ({} after SIGTERM) with an idle tonic channel and an idle raw \
         HTTP/2 connection open (drain timed out: {timed_out}); {late} calls made after the drain began failed \
         ({cancelled} CANCELLED, the rest UNAVAILABLE)",
        ms(readyz_off.max(health_off)),
        ms(readyz_off),
        ms(health_off),
        ms(live_off),
        in_delay.len(),
        before_drain.len(),
        ms(drain_logged - sigterm),
        ms(last_ok - sigterm),
        ms(released - drain_logged),
        ms(held_done - released),
        ms(exited - drain_logged),
        ms(exited - sigterm),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_drain_under_load_ends_well_within_the_drain_timeout_while_an_idle_client_keeps_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start_server(dir.path(), "drain", Duration::ZERO);
    server.wait_ready(Duration::from_secs(20)).await;
    // A well-behaved client that made one call and then keeps its connection idle.
    let idle_channel = server.channel().await;
    proto::session_service_client::SessionServiceClient::new(idle_channel.clone())
        .get(get_request(&key_in("drain", "idle")))
        .await
        .expect("a call on the idle channel");
    let mut channels = Vec::new();
    for _ in 0..CLIENTS {
        channels.push(server.channel().await);
    }
    let load = Load::start(channels, "drain", Duration::from_millis(2));
    // Measures time passing: a second of load before SIGTERM, so that calls are in flight.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let served_before = load.calls().len();
    let sigterm = Instant::now();
    server.signal("-TERM");
    let status = server.wait_exit(DRAIN_TIMEOUT + EXIT_SLACK).await;
    let exited = Instant::now();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let drain_logged = server
        .log_read_at("draining in-flight calls")
        .expect("the drain was logged");
    drop(idle_channel);
    let calls = load.stop().await;
    let early_failures: Vec<&Call> = calls
        .iter()
        .filter(|c| c.start + Duration::from_millis(20) < drain_logged && c.code != Code::Ok)
        .collect();
    assert!(
        early_failures.is_empty(),
        "calls started before the drain failed: {}",
        describe(&early_failures, sigterm)
    );
    let (late, cancelled) = check_late_calls(&calls, drain_logged, sigterm);
    let drain = exited - drain_logged;
    eprintln!(
        "DRAIN: {served_before} calls in the second before SIGTERM from {CLIENTS} clients; with no shutdown delay, the \
         drain under load took {} (SIGTERM to exit 0: {}) with an idle client connection open (drain timeout \
         {DRAIN_TIMEOUT:?}); {late} calls made after the drain began failed ({cancelled} of them CANCELLED, the \
         rest UNAVAILABLE)",
        ms(drain),
        ms(exited - sigterm)
    );
    assert!(
        drain < DRAIN_TIMEOUT / 2,
        "the drain took {drain:?}: an idle well-behaved client connection held it"
    );
    assert!(
        !server
            .log_events()
            .iter()
            .any(|e| e["message"].as_str().is_some_and(|m| m.contains("drain timed out"))),
        "the drain timed out"
    );
}

/// Calls made once the drain began may fail, cleanly: UNAVAILABLE (the listener is closed), or
/// CANCELLED when the request raced the server closing its connection (hyper never sent it; tonic
/// reports that as CANCELLED). Returns (failed late calls, CANCELLED among them).
fn check_late_calls(calls: &[Call], drain_logged: Instant, origin: Instant) -> (usize, usize) {
    let unclean: Vec<&Call> = calls
        .iter()
        .filter(|c| match c.code {
            Code::Ok => false,
            Code::Unavailable | Code::Cancelled => c.start + Duration::from_millis(20) < drain_logged,
            _ => true,
        })
        .collect();
    assert!(
        unclean.is_empty(),
        "calls ended with neither OK nor, after the drain began, UNAVAILABLE or CANCELLED: {}",
        describe(&unclean, origin)
    );
    let late: Vec<&Call> = calls.iter().filter(|c| c.code != Code::Ok).collect();
    let cancelled = late.iter().filter(|c| c.code == Code::Cancelled).count();
    (late.len(), cancelled)
}

/// A SIGTERM sent the moment the server says it listens is a graceful shutdown (exit 0), never
/// the default action's abrupt exit: the handlers are installed before the server listens. Forty
/// starts, each signalled as soon as its "sessionkeeper listening" line is read (a helper's lock
/// test saw half of such early SIGTERMs end the process by the signal when the handler was
/// installed only once the shutdown future was first polled).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_as_soon_as_the_server_listens_is_a_graceful_exit() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..40 {
        let mut server = start_server(dir.path(), &format!("early-term-{i}"), Duration::ZERO);
        server.signal("-TERM");
        let status = server.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "start {i}: an early SIGTERM exits 0, got {status}");
    }
}

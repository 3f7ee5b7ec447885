//! The gRPC port under abuse, through the real binary and raw sockets:
//! 200 HTTP/2 connections that each open 1,000 Get streams and never read a byte back, a flood of
//! idle connections past the process's descriptor limit (`prlimit`), connections that never send
//! the HTTP/2 preface, and connections over `--max-connections`. Memory is the server's peak RSS
//! (`VmHWM`), CPU its own `utime + stime`, both from `/proc/<pid>`.
//!
//! The abusive clients write HTTP/2 frames by hand (one literal-only HPACK block) instead of using
//! the `h2` crate or Python's `h2`: the `h2` crate's client reads its socket in its connection task
//! and waits for the server's stream limit, so it cannot be a client that never reads; Python's
//! `h2` could, but would need a venv and a pinned install in scripts/test for what is forty lines
//! here. Measurements are printed as lines starting `ABUSE`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::Message;
use sessionkeeper::proto::Decision;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::fixtures::{get_request, key_in};
use crate::support::process::Server;
use crate::support::wait::wait_until;

/// The two heavy tests here do not overlap: each measures one server on 2 shared cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const MIB: u64 = 1024 * 1024;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// One HTTP/2 frame (RFC 9113 §4.1).
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).unwrap();
    let mut frame = Vec::with_capacity(9 + payload.len());
    frame.extend_from_slice(&length.to_be_bytes()[1..]);
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK "literal header field without indexing, new name", without Huffman coding (RFC 7541
/// §6.2.2): every name and value here is under 127 bytes, so each length is one byte.
fn literal_header(block: &mut Vec<u8>, name: &str, value: &str) {
    assert!(name.len() < 127 && value.len() < 127);
    block.push(0);
    block.push(name.len() as u8);
    block.extend_from_slice(name.as_bytes());
    block.push(value.len() as u8);
    block.extend_from_slice(value.as_bytes());
}

/// Everything a client that opens `streams` Get calls writes: the preface, an empty SETTINGS and,
/// for each call, HEADERS and one DATA frame carrying the message with END_STREAM.
fn get_calls(addr: SocketAddr, streams: u32) -> Vec<u8> {
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/sessionkeeper.v1.SessionService/Get"),
        (":authority", &addr.to_string()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal_header(&mut headers, name, value);
    }
    let message = get_request(&key_in("abuse", "never-reads")).encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&message);

    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(SETTINGS, 0, 0, &[]));
    for n in 0..streams {
        let stream = 1 + 2 * n;
        bytes.extend(frame(HEADERS, END_HEADERS, stream, &headers));
        bytes.extend(frame(DATA, END_STREAM, stream, &body));
    }
    bytes
}

/// A field of `/proc/<pid>/status` in bytes (`VmRSS`, `VmHWM`: the kernel writes kB).
fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("/proc/{pid}/status has {field}"));
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// CPU time the process has used so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The command name (field 2) may hold spaces; the fields after its `)` are space-separated.
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
}

fn clock_ticks_per_second() -> u64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf CLK_TCK");
    String::from_utf8(output.stdout).unwrap().trim().parse().unwrap()
}

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Bytes on their way to the server's established connections on `port` that it has not read yet:
/// the server sockets' receive queues plus the clients' send queues (`/proc/net/tcp`, loopback).
fn bytes_not_yet_read_by_server(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of = |address: &str| u16::from_str_radix(address.rsplit(':').next()?, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, state, queues) = (fields[1], fields[2], fields[3], fields[4]);
            let (tx, rx) = queues.split_once(':')?;
            let (tx, rx) = (u64::from_str_radix(tx, 16).ok()?, u64::from_str_radix(rx, 16).ok()?);
            // 01 is ESTABLISHED.
            if state != "01" {
                None
            } else if port_of(local) == Some(port) {
                Some(rx)
            } else if port_of(remote) == Some(port) {
                Some(tx)
            } else {
                None
            }
        })
        .sum()
}

/// The server's sockets of connections to `port` it has not closed yet (ESTABLISHED, or
/// CLOSE_WAIT: the client closed first), from `/proc/net/tcp`.
fn server_connections(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields[1]
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && matches!(fields[3], "01" | "08")
        })
        .count()
}

/// The server's answered Get calls by status code, from `/metrics` (`OK=…, RESOURCE_EXHAUSTED=…`).
async fn get_calls_answered(server: &Server) -> String {
    let (_, metrics) = crate::support::process::http_get(server.metrics, "/metrics").await;
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("sessionkeeper_rpc_duration_seconds_count{code=\"")?;
            let (code, rest) = rest.split_once("\",method=\"Get\"} ")?;
            (rest != "0").then(|| format!("{code}={rest}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Get on a new connection of its own: how long connecting and the call took, or what went wrong
/// (the call is bounded to 30 s).
async fn get_on_a_new_connection(server: &Server, conversation: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let call = async {
        let mut client = server.client().await;
        client.get(get_request(&key_in("abuse", conversation))).await
    };
    match tokio::time::timeout(Duration::from_secs(30), call).await {
        Ok(Ok(answer)) if answer.get_ref().decision() == Decision::StartFresh => Ok(started.elapsed()),
        Ok(Ok(answer)) => Err(format!("unexpected answer {:?}", answer.into_inner())),
        Ok(Err(status)) => Err(format!("failed: {status:?}")),
        Err(_) => Err("no answer within 30 s".to_owned()),
    }
}

/// [`get_on_a_new_connection`] that must succeed.
async fn served_on_a_new_connection(server: &Server, conversation: &str) -> Duration {
    get_on_a_new_connection(server, conversation)
        .await
        .unwrap_or_else(|e| panic!("{}: a Get on a new connection: {e}", server.name))
}

fn start_server(data_dir: &std::path::Path, name: &str, extra: &[&str]) -> Server {
    let data_dir = data_dir.to_owned();
    let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
    Server::start(name, move |c| {
        c.arg("--data-dir").arg(data_dir).args(extra);
    })
}

const NEVER_READING_CONNECTIONS: usize = 200;
const STREAMS_PER_CONNECTION: u32 = 1_000;
/// The Helm chart's memory limit is 256 MiB; the peak must stay well under it.
const PEAK_RSS_LIMIT: u64 = 200 * MIB;
const OTHER_CLIENT_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_keep_the_server_under_its_memory_budget_and_others_are_served() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "never-read", &[]);
    server.wait_ready(Duration::from_secs(20)).await;
    served_on_a_new_connection(&server, "warm-up").await;
    let baseline = proc_status_bytes(server.pid(), "VmRSS");

    let calls = std::sync::Arc::new(get_calls(server.grpc, STREAMS_PER_CONNECTION));
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for _ in 0..NEVER_READING_CONNECTIONS {
        let calls = calls.clone();
        let addr = server.grpc;
        writers.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            // Refused or reset by the server is fine: what matters is what the server holds.
            let _ = stream.write_all(&calls).await;
            stream
        });
    }
    // Kept open and never read until the end of the test.
    let mut never_reading = Vec::new();
    while let Some(stream) = tokio::time::timeout(Duration::from_secs(60), writers.join_next())
        .await
        .expect("every never-reading client wrote its calls within 60 s")
    {
        never_reading.push(stream.unwrap());
    }
    let written = started.elapsed();

    let during_load = get_on_a_new_connection(&server, "during-load").await;
    println!(
        "ABUSE never-read: written in {written:?}, peak RSS so far {} MiB, another client's Get: {during_load:?}",
        proc_status_bytes(server.pid(), "VmHWM") / MIB
    );
    let what = "the server reading everything the never-reading clients sent";
    wait_until(Duration::from_secs(120), what, || {
        let pending = bytes_not_yet_read_by_server(server.grpc.port());
        async move { pending == 0 }
    })
    .await;
    let consumed = started.elapsed();
    let after_load = get_on_a_new_connection(&server, "after-load").await;

    let peak = proc_status_bytes(server.pid(), "VmHWM");
    let now = proc_status_bytes(server.pid(), "VmRSS");
    let answered = get_calls_answered(&server).await;
    println!(
        "ABUSE never-read: {NEVER_READING_CONNECTIONS} connections x {STREAMS_PER_CONNECTION} Get streams, never read: \
         written in {written:?}, consumed by the server in {consumed:?}; RSS baseline {} MiB, peak {} MiB, \
         now {} MiB; Gets answered by code: {answered}; another client's Get: {during_load:?} during the flood, \
         {after_load:?} once the server had taken it in",
        baseline / MIB,
        peak / MIB,
        now / MIB,
    );
    assert!(
        peak < PEAK_RSS_LIMIT,
        "peak RSS {} MiB under never-reading clients, limit {} MiB",
        peak / MIB,
        PEAK_RSS_LIMIT / MIB
    );
    for (when, took) in [("during", during_load), ("after", after_load)] {
        let took = took.unwrap_or_else(|e| panic!("another client's Get {when} the flood: {e}"));
        assert!(
            took < OTHER_CLIENT_WITHIN,
            "another client's Get {when} the flood took {took:?}, limit {OTHER_CLIENT_WITHIN:?}"
        );
    }
    // A client that opens streams past the server's limit has its connection closed
    // (ENHANCE_YOUR_CALM) instead of having every refused stream held for it.
    let what = "the server closing every connection that ignored its stream limit";
    wait_until(Duration::from_secs(10), what, || {
        let open = server_connections(server.grpc.port());
        async move { open == 0 }
    })
    .await;
    drop(never_reading);
}

const DESCRIPTOR_LIMIT: u32 = 256;
const IDLE_CONNECTIONS: usize = 300;
const CPU_WINDOW: Duration = Duration::from_secs(5);
const CPU_LIMIT: Duration = Duration::from_millis(1500);
const SERVING_AGAIN_WITHIN: Duration = Duration::from_secs(2);
const DESCRIPTORS_WARNING: &str = "cannot accept connections: out of file descriptors or memory; retrying with backoff";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_descriptor_flood_neither_spins_the_accept_loop_nor_stops_existing_connections() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    // The idle connections must outlive the measurement: no handshake timeout during it.
    let server = start_server(dir.path(), "descriptors", &["--handshake-timeout", "120s"]);
    server.wait_ready(Duration::from_secs(20)).await;
    let mut existing = server.client().await;
    existing
        .get(get_request(&key_in("abuse", "existing")))
        .await
        .expect("a Get before the flood");

    let limit = format!("--nofile={DESCRIPTOR_LIMIT}:{DESCRIPTOR_LIMIT}");
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), &limit])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --pid {} {limit}: {status}", server.pid());

    let mut idle = Vec::with_capacity(IDLE_CONNECTIONS);
    for _ in 0..IDLE_CONNECTIONS {
        // The kernel completes the TCP handshake from its backlog even when the server cannot accept.
        idle.push(TcpStream::connect(server.grpc).await.expect("connect an idle client"));
    }
    let what = "the server holding as many descriptors as its limit allows";
    wait_until(Duration::from_secs(10), what, || {
        let open = open_descriptors(server.pid());
        async move { open + 8 >= DESCRIPTOR_LIMIT as usize }
    })
    .await;

    let cpu_before = cpu_time(server.pid());
    // The measured window: a fixed sleep is what this test measures.
    tokio::time::sleep(CPU_WINDOW).await;
    let cpu = cpu_time(server.pid()) - cpu_before;
    let descriptors = open_descriptors(server.pid());

    let existing_get = tokio::time::timeout(
        Duration::from_secs(5),
        existing.get(get_request(&key_in("abuse", "existing"))),
    )
    .await;

    drop(idle);
    let closed = Instant::now();
    let served_again = get_on_a_new_connection(&server, "after-the-flood").await;
    let serving_again = closed.elapsed();
    let warnings = server
        .log_events()
        .iter()
        .filter(|e| e["message"] == DESCRIPTORS_WARNING)
        .count();
    println!(
        "ABUSE descriptors: limit {DESCRIPTOR_LIMIT}, {IDLE_CONNECTIONS} idle connections, {descriptors} descriptors \
         open; server CPU {cpu:?} over {CPU_WINDOW:?}; {warnings} warning(s); a new connection's Get answered \
         {serving_again:?} after the idle connections closed"
    );
    assert!(
        cpu < CPU_LIMIT,
        "server CPU {cpu:?} over {CPU_WINDOW:?}, limit {CPU_LIMIT:?}"
    );
    assert_eq!(warnings, 1, "one warning for the whole episode, naming the problem");
    let existing_get = existing_get.expect("the existing connection's Get within 5 s during the flood");
    existing_get.expect("the existing connection is served during the flood");
    served_again.unwrap_or_else(|e| panic!("a new connection's Get after the flood: {e}"));
    assert!(
        serving_again < SERVING_AGAIN_WITHIN,
        "serving new connections {serving_again:?} after the flood ended, limit {SERVING_AGAIN_WITHIN:?}"
    );
    server
        .wait_for_log(Duration::from_secs(5), "accepting again", |e| {
            e["message"] == "accepting connections again"
        })
        .await;
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_millis(500);

/// Reads until the peer closes (EOF or reset); None when it is still open after `within`.
async fn closed_by_peer_within(stream: &mut (impl AsyncRead + Unpin), within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0_u8; 4096];
    let read_until_closed = async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read_until_closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// Whether the peer has not closed the stream: reads what is there without waiting.
fn still_open(stream: &TcpStream) -> bool {
    let mut buffer = [0_u8; 4096];
    loop {
        match stream.try_read(&mut buffer) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_sends_the_http2_preface_is_closed_after_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "handshake", &["--handshake-timeout", "500ms"]);
    server.wait_ready(Duration::from_secs(20)).await;

    let mut silent = TcpStream::connect(server.grpc).await.unwrap();
    let mut talking = TcpStream::connect(server.grpc).await.unwrap();
    talking.write_all(PREFACE).await.unwrap();
    talking.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();

    let closed_after = closed_by_peer_within(&mut silent, Duration::from_secs(10))
        .await
        .expect("a connection that never sends the preface is closed within 10 s");
    println!(
        "ABUSE handshake: a silent connection was closed {closed_after:?} after connecting (timeout {HANDSHAKE_TIMEOUT:?})"
    );
    assert!(
        closed_after >= HANDSHAKE_TIMEOUT - Duration::from_millis(50),
        "closed after {closed_after:?}, before the handshake timeout {HANDSHAKE_TIMEOUT:?}"
    );
    assert!(
        still_open(&talking),
        "a connection that sent the preface outlives the handshake timeout"
    );
    served_on_a_new_connection(&server, "after-silent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_handshake_timeout_covers_both_the_tls_handshake_and_the_preface() {
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let server = start_server(
        dir.path(),
        "handshake-tls",
        &[
            "--handshake-timeout",
            "2s",
            "--tls-cert",
            cert_file.to_str().unwrap(),
            "--tls-key",
            key_file.to_str().unwrap(),
        ],
    );
    server.wait_ready(Duration::from_secs(20)).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));

    // Longer than plaintext's: a debug build's TLS handshake on a busy machine takes a while.
    let timeout = Duration::from_secs(2);
    let connected = Instant::now();
    let mut no_tls = TcpStream::connect(server.grpc).await.unwrap();
    let tcp = TcpStream::connect(server.grpc).await.unwrap();
    let mut no_preface = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("a TLS handshake within the handshake timeout");

    closed_by_peer_within(&mut no_tls, Duration::from_secs(15))
        .await
        .expect("a connection that never starts TLS is closed within 15 s");
    let without_tls = connected.elapsed();
    closed_by_peer_within(&mut no_preface, Duration::from_secs(15))
        .await
        .expect("a TLS connection that never sends the HTTP/2 preface is closed within 15 s");
    let without_preface = connected.elapsed();
    println!(
        "ABUSE handshake over TLS: after connecting, no ClientHello closed at {without_tls:?}, TLS but no preface \
         closed at {without_preface:?} (timeout {timeout:?})"
    );
    for closed_at in [without_tls, without_preface] {
        assert!(
            closed_at >= timeout - Duration::from_millis(50),
            "closed at {closed_at:?}, before the handshake timeout {timeout:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_max_connections_are_closed_at_once_and_a_freed_slot_is_reused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), "max-connections", &["--max-connections", "3"]);
    server.wait_ready(Duration::from_secs(20)).await;

    let mut held = Vec::new();
    for n in 0..3 {
        let mut client = server.client().await;
        client
            .get(get_request(&key_in("abuse", &format!("held-{n}"))))
            .await
            .expect("a Get within the connection limit");
        held.push(client);
    }
    let mut over = TcpStream::connect(server.grpc).await.unwrap();
    let closed_after = closed_by_peer_within(&mut over, Duration::from_secs(5))
        .await
        .expect("a connection over --max-connections is closed at once");
    println!("ABUSE max-connections: a 4th connection over a limit of 3 was closed after {closed_after:?}");
    server
        .wait_for_log(Duration::from_secs(5), "the connection limit warning", |e| {
            e["message"] == "connection limit reached; closing new connections until one ends"
        })
        .await;

    drop(held.pop());
    let what = "the server closing its side of the dropped connection";
    wait_until(Duration::from_secs(10), what, || {
        let open = server_connections(server.grpc.port());
        async move { open == 2 }
    })
    .await;
    served_on_a_new_connection(&server, "freed-slot").await;
}

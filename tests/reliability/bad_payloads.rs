//! Bad input at scale: thousands of random, mutated and randomly filled payloads sent as
//! gRPC request bodies to each SessionService method of the real binary (on Postgres), raw HTTP/2 bodies with
//! lying gRPC frame headers, and oversized (5 MiB) messages; every answer is a clean status, and
//! afterwards the server still serves: a valid Get succeeds, health is SERVING, the process lives.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use prost::bytes::{Buf, BufMut};
use sessionkeeper::proto::{self, Decision};
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::load::ms;
use crate::support;
use crate::support::fixtures::{get_request, key_in, report_request, success};
use crate::support::process::{Server, health_status};

/// Random protobuf-level payloads (framed correctly by the client), split over the four methods:
/// random bytes, mutated valid requests, random wire data, and well-formed messages with random fields.
const PAYLOADS: usize = 5_000;
/// Raw HTTP/2 bodies: random gRPC frame headers (flags, lengths) and bodies.
const RAW_BODIES: usize = 1_000;
const OVERSIZED_BYTES: usize = 5 * 1024 * 1024;
const CLIENTS: usize = 8;

const METHODS: [&str; 4] = ["Get", "ReportResult", "Sweep", "Forget"];

fn path(method: &str) -> PathAndQuery {
    PathAndQuery::try_from(format!("/sessionkeeper.v1.SessionService/{method}")).unwrap()
}

/// Sends and receives raw message bytes: the client frames them, the server decodes them.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn random_bytes(rng: &mut fastrand::Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.u8(..)).collect()
}

fn random_len(rng: &mut fastrand::Rng) -> usize {
    match rng.u8(0..4) {
        0 => rng.usize(0..16),
        1 | 2 => rng.usize(0..256),
        _ => rng.usize(0..8192),
    }
}

/// Well-formed protobuf wire data with random field numbers, wire types and values: strings that
/// are not UTF-8, wrong wire types for known fields, nested garbage, huge varints, lying lengths.
fn random_fields(rng: &mut fastrand::Rng, depth: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.usize(0..8) {
        let field = rng.u64(1..16);
        let wire = rng.u64(0..6);
        varint(&mut out, (field << 3) | wire);
        match wire {
            0 => {
                let value = if rng.bool() { rng.u64(..) } else { rng.u64(0..600) };
                varint(&mut out, value);
            }
            1 => out.extend(random_bytes(rng, 8)),
            2 => {
                let body = if depth < 3 && rng.bool() {
                    random_fields(rng, depth + 1)
                } else {
                    let len = rng.usize(0..64);
                    random_bytes(rng, len)
                };
                let len = if rng.u8(0..10) == 0 {
                    rng.u64(..)
                } else {
                    body.len() as u64
                };
                varint(&mut out, len);
                out.extend(body);
            }
            5 => out.extend(random_bytes(rng, 4)),
            _ => {}
        }
    }
    out
}

/// A valid request of the method, encoded, with random but valid-looking fields.
fn valid_request(rng: &mut fastrand::Rng, method: &str) -> Vec<u8> {
    let key = key_in("fuzz", &format!("c{}", rng.u32(0..50)));
    match method {
        "Get" => get_request(&key).encode_to_vec(),
        "ReportResult" => {
            let resumed = if rng.bool() {
                format!("s{}", rng.u32(0..9))
            } else {
                String::new()
            };
            let result = if rng.bool() {
                success(&format!("s{}", rng.u32(0..9)), 3)
            } else {
                crate::support::fixtures::no_conversation_found(&resumed, &format!("{resumed}-failed-frame"))
            };
            let report_id = if rng.bool() {
                format!("r{}", rng.u32(0..1000))
            } else {
                String::new()
            };
            report_request(&key, &resumed, result, &report_id).encode_to_vec()
        }
        "Sweep" => proto::SweepRequest {
            namespace: "fuzz".into(),
            agent: if rng.bool() { "coder".into() } else { String::new() },
            dry_run: rng.bool(),
        }
        .encode_to_vec(),
        _ => proto::ForgetRequest { key: Some(key) }.encode_to_vec(),
    }
}

/// A random string: printable ASCII, control characters, any Unicode scalar, signature text.
fn random_string(rng: &mut fastrand::Rng) -> String {
    let len = match rng.u8(0..8) {
        0 => 0,
        1 => rng.usize(250..300),
        2 => rng.usize(4000..4200),
        _ => rng.usize(1..40),
    };
    (0..len)
        .map(|_| match rng.u8(0..10) {
            0 => char::from(rng.u8(0..0x20)),
            1 => char::from_u32(rng.u32(0x80..0x11_0000)).unwrap_or('\u{FFFD}'),
            2 => ['\u{7f}', '\u{85}', '\u{200b}', '\u{130}', 'é', '😀', ' ', '/'][rng.usize(0..8)],
            _ => char::from(rng.u8(0x20..0x7f)),
        })
        .collect()
}

/// A name that is valid half of the time.
fn random_name(rng: &mut fastrand::Rng, valid: &str) -> String {
    if rng.bool() {
        valid.to_owned()
    } else {
        random_string(rng)
    }
}

/// A well-formed message of the method whose fields are random: it decodes, and reaches the
/// validation and (when valid) the store.
fn random_message(rng: &mut fastrand::Rng, method: &str) -> Vec<u8> {
    let key = |rng: &mut fastrand::Rng| {
        rng.u8(0..10).ne(&0).then(|| proto::SessionKey {
            namespace: random_name(rng, "fuzz"),
            agent: random_name(rng, "coder"),
            conversation: random_name(rng, "c1"),
        })
    };
    let binding = |rng: &mut fastrand::Rng| {
        rng.bool().then(|| proto::Binding {
            provider: random_string(rng),
            host: random_string(rng),
            config_dir: random_string(rng),
            cwd: random_string(rng),
        })
    };
    match method {
        "Get" => proto::GetRequest {
            key: key(rng),
            binding: binding(rng),
            ..Default::default()
        }
        .encode_to_vec(),
        "ReportResult" => proto::ReportResultRequest {
            key: key(rng),
            resumed_session_id: random_string(rng),
            binding: binding(rng),
            result: rng.u8(0..10).ne(&0).then(|| proto::AgentResult {
                is_error: rng.bool(),
                subtype: if rng.bool() {
                    "success".into()
                } else {
                    random_string(rng)
                },
                session_id: random_string(rng),
                num_turns: rng.u32(0..3),
                errors: (0..rng.usize(0..4)).map(|_| random_string(rng)).collect(),
                terminal_reason: random_string(rng),
                api_error_status: [0, 401, 429, 500, rng.u32(..)][rng.usize(0..5)],
                exception: random_string(rng),
                result_text: random_string(rng),
            }),
            report_id: random_string(rng),
        }
        .encode_to_vec(),
        "Sweep" => proto::SweepRequest {
            namespace: random_name(rng, "fuzz"),
            agent: random_name(rng, "coder"),
            dry_run: rng.bool(),
        }
        .encode_to_vec(),
        _ => proto::ForgetRequest { key: key(rng) }.encode_to_vec(),
    }
}

fn mutate(rng: &mut fastrand::Rng, mut bytes: Vec<u8>) -> Vec<u8> {
    for _ in 0..rng.usize(1..6) {
        let at = rng.usize(0..=bytes.len());
        match rng.u8(0..6) {
            0 if at < bytes.len() => bytes[at] ^= 1 << rng.u8(0..8),
            1 => bytes.insert(at, rng.u8(..)),
            2 if at < bytes.len() => {
                bytes.remove(at);
            }
            3 => bytes.truncate(at),
            4 if at < bytes.len() => bytes[at] = [0x00, 0x7f, 0x80, 0xff][rng.usize(0..4)],
            _ => {
                let from = rng.usize(0..=at);
                let slice = bytes[from..at].to_vec();
                bytes.extend(slice);
            }
        }
    }
    bytes
}

fn payload(rng: &mut fastrand::Rng, method: &str) -> Vec<u8> {
    match rng.u8(0..10) {
        0..=2 => {
            let len = random_len(rng);
            random_bytes(rng, len)
        }
        3..=5 => {
            let valid = valid_request(rng, method);
            mutate(rng, valid)
        }
        6 => random_fields(rng, 0),
        _ => random_message(rng, method),
    }
}

/// A gRPC-framed raw body whose frame header may lie: random compressed flag, a length that is
/// too short, too long or huge, several frames, trailing garbage.
fn raw_body(rng: &mut fastrand::Rng, method: &str) -> Vec<u8> {
    if rng.u8(0..5) == 0 {
        let len = rng.usize(0..64);
        return random_bytes(rng, len);
    }
    let mut body = Vec::new();
    for _ in 0..rng.usize(1..3) {
        let message = if rng.bool() {
            valid_request(rng, method)
        } else {
            payload(rng, method)
        };
        let flag = match rng.u8(0..4) {
            0 => 1,
            1 => rng.u8(..),
            _ => 0,
        };
        let len = match rng.u8(0..5) {
            0 => rng.u32(..),
            1 => (message.len() as u32).saturating_add(rng.u32(1..100)),
            2 => (message.len() as u32).saturating_sub(rng.u32(1..10)),
            _ => message.len() as u32,
        };
        body.push(flag);
        body.extend(len.to_be_bytes());
        body.extend(message);
    }
    if rng.u8(0..4) == 0 {
        let len = rng.usize(1..9);
        body.extend(random_bytes(rng, len));
    }
    body
}

/// The gRPC status of a raw HTTP/2 exchange: from the headers (trailers-only) or the trailers.
async fn send_raw(
    channel: &mut Channel,
    grpc: std::net::SocketAddr,
    method: &str,
    body: Vec<u8>,
) -> Result<(Code, String), String> {
    use axum::body::HttpBody;
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{grpc}{}", path(method)))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(tonic::body::Body::new(axum::body::Body::from(body)))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .map_err(|e| format!("channel not ready: {e}"))?;
    let response = channel
        .call(request)
        .await
        .map_err(|e| format!("transport error: {e}"))?;
    let status_of = |headers: &http::HeaderMap| {
        headers.get("grpc-status").map(|v| {
            let code = Code::from_i32(v.to_str().unwrap_or("2").parse().unwrap_or(2));
            let message = headers
                .get("grpc-message")
                .map(|m| percent_decode(m.as_bytes()))
                .unwrap_or_default();
            (code, message)
        })
    };
    if let Some(status) = status_of(response.headers()) {
        return Ok(status);
    }
    let http_status = response.status();
    let mut body = response.into_body();
    while let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("body error: {e}"))?;
        if let Some(status) = frame.trailers_ref().and_then(status_of) {
            return Ok(status);
        }
    }
    Err(format!("HTTP {http_status} without grpc-status"))
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a status is a clean answer to bad input.
fn clean(code: Code, message: &str, raw_framing: bool) -> bool {
    match code {
        Code::Ok | Code::InvalidArgument | Code::AlreadyExists => true,
        // Overload shedding is a clean answer too (counted separately).
        Code::ResourceExhausted => true,
        // tonic's decoder: not protobuf, or (raw bodies) a broken gRPC frame.
        Code::Internal => {
            message.contains("failed to decode Protobuf message")
                || (raw_framing
                    && ["protocol error", "Unexpected EOF", "Missing request message"]
                        .iter()
                        .any(|m| message.contains(m)))
        }
        Code::OutOfRange => raw_framing,
        _ => false,
    }
}

#[derive(Default)]
struct Tally {
    by_code: BTreeMap<String, usize>,
    unclean: Vec<String>,
    slowest: Duration,
}

impl Tally {
    fn record(
        &mut self,
        kind: &str,
        method: &str,
        outcome: Result<(Code, String), String>,
        took: Duration,
        raw: bool,
        payload: &[u8],
    ) {
        self.slowest = self.slowest.max(took);
        let label = match &outcome {
            Ok((code, _)) => format!("{kind} {code:?}"),
            Err(_) => format!("{kind} transport error"),
        };
        *self.by_code.entry(label).or_default() += 1;
        let is_clean = matches!(&outcome, Ok((code, message)) if clean(*code, message, raw));
        if !is_clean || took > Duration::from_secs(5) {
            let head: String = payload.iter().take(48).map(|b| format!("{b:02x}")).collect();
            self.unclean.push(format!(
                "{kind} {method} ({} bytes, {head}…) took {took:?}: {outcome:?}",
                payload.len()
            ));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousands_of_random_payloads_and_oversized_messages_leave_the_server_serving() {
    let schema = support::fresh_pg_schema().await;
    let url = schema.url.clone();
    let mut server = Server::start("fuzz", move |c| {
        c.env("DATABASE_URL", url);
    });
    server.wait_ready(Duration::from_secs(30)).await;
    let seed = std::env::var("SESSIONKEEPER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..CLIENTS {
        let channel = server.channel().await;
        let tally = tally.clone();
        let grpc_addr = server.grpc;
        tasks.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(worker as u64));
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            let mut raw_channel = channel;
            for case in (worker..PAYLOADS).step_by(CLIENTS) {
                let method = METHODS[case % METHODS.len()];
                let body = payload(&mut rng, method);
                let start = Instant::now();
                let call = async {
                    grpc.ready().await.map_err(|e| format!("channel not ready: {e}"))?;
                    match grpc
                        .unary(tonic::Request::new(body.clone()), path(method), RawCodec)
                        .await
                    {
                        Ok(_) => Ok((Code::Ok, String::new())),
                        Err(status) => Ok((status.code(), status.message().to_owned())),
                    }
                };
                let outcome = tokio::time::timeout(Duration::from_secs(10), call)
                    .await
                    .unwrap_or_else(|_| Err("no answer within 10 s".into()));
                tally
                    .lock()
                    .unwrap()
                    .record("payload", method, outcome, start.elapsed(), false, &body);
            }
            for case in (worker..RAW_BODIES).step_by(CLIENTS) {
                let method = METHODS[case % METHODS.len()];
                let body = raw_body(&mut rng, method);
                let start = Instant::now();
                let outcome = tokio::time::timeout(
                    Duration::from_secs(10),
                    send_raw(&mut raw_channel, grpc_addr, method, body.clone()),
                )
                .await
                .unwrap_or_else(|_| Err("no answer within 10 s".into()));
                tally
                    .lock()
                    .unwrap()
                    .record("raw", method, outcome, start.elapsed(), true, &body);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("fuzz worker");
    }

    // Oversized messages (5 MiB > the 4 MiB limit) to every method, framed honestly and as a raw
    // frame header that claims 5 MiB.
    let mut oversized = Vec::new();
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    let mut raw_channel = server.channel().await;
    for method in METHODS {
        let big = proto::GetRequest {
            key: Some(key_in("fuzz", &"x".repeat(OVERSIZED_BYTES))),
            binding: None,
            ..Default::default()
        }
        .encode_to_vec();
        assert!(big.len() > OVERSIZED_BYTES);
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(tonic::Request::new(big.clone()), path(method), RawCodec)
            .await
            .expect_err("a 5 MiB message is refused");
        assert!(
            matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
            "{method}: a 5 MiB message got {status:?}"
        );
        oversized.push(status.code());
        let mut claim = vec![0u8];
        claim.extend((OVERSIZED_BYTES as u32).to_be_bytes());
        claim.extend(&big[..1024]);
        let (code, message) = send_raw(&mut raw_channel, server.grpc, method, claim)
            .await
            .unwrap_or_else(|e| panic!("{method}: a frame claiming 5 MiB: {e}"));
        assert!(
            matches!(code, Code::OutOfRange | Code::ResourceExhausted),
            "{method}: a frame claiming 5 MiB got {code:?} {message}"
        );
        oversized.push(code);
    }
    let took = started.elapsed();

    // Still serving: a valid call on a new connection, health, readiness, the same process.
    let mut client = server.client().await;
    let probe_key = key_in("fuzz", "after-the-storm");
    let stored = client
        .report_result(report_request(&probe_key, "", success("still-here", 3), ""))
        .await
        .expect("a valid report after the fuzzing")
        .into_inner();
    assert_eq!(stored.session_id, "still-here");
    let answer = client
        .get(get_request(&probe_key))
        .await
        .expect("a valid Get after the fuzzing")
        .into_inner();
    assert_eq!(
        (answer.decision(), answer.session_id.as_str()),
        (Decision::Resume, "still-here")
    );
    let channel = server.channel().await;
    assert_eq!(health_status(&channel, "").await.unwrap(), ServingStatus::Serving);
    assert_eq!(
        health_status(&channel, proto::SERVICE_NAME).await.unwrap(),
        ServingStatus::Serving
    );
    assert_eq!(server.readyz().await, 200);
    assert!(server.exit_status().is_none(), "the process is alive");
    let panics: Vec<String> = server
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "the server panicked: {panics:?}");

    let tally = std::mem::take(&mut *tally.lock().unwrap());
    eprintln!(
        "FUZZ: seed {seed} (SESSIONKEEPER_FUZZ_SEED to replay): {PAYLOADS} random protobuf payloads + \
         {RAW_BODIES} raw gRPC bodies over the 4 methods from {CLIENTS} clients, and {} oversized 5 MiB messages, \
         in {}; slowest answer {}; answers: {:?}; oversized: {oversized:?}",
        oversized.len(),
        ms(took),
        ms(tally.slowest),
        tally.by_code
    );
    assert!(
        tally.unclean.is_empty(),
        "{} payloads got no clean answer, e.g.:\n{}",
        tally.unclean.len(),
        tally.unclean.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    let answered: usize = tally.by_code.values().sum();
    assert_eq!(answered, PAYLOADS + RAW_BODIES);
    server.stop().await;
}

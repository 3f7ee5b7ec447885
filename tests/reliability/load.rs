//! Steady load from a few tonic clients (one HTTP/2 connection each): Get and ReportResult in turn,
//! every call timed and its status recorded, until stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionkeeper::proto::session_service_client::SessionServiceClient;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Channel;

use crate::support::fixtures::{get_request, key_in, report_request, success};

/// One call: when it started and ended (client side) and how it ended.
#[derive(Debug, Clone)]
pub struct Call {
    pub worker: usize,
    pub method: &'static str,
    pub start: Instant,
    pub end: Instant,
    pub code: Code,
    pub message: String,
}

impl Call {
    pub fn took(&self) -> Duration {
        self.end - self.start
    }
}

/// No call of the load may take longer than this on the client; past it, it counts as hung.
const CALL_BOUND: Duration = Duration::from_secs(10);

pub struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<Mutex<Vec<Call>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    /// One worker per channel; each pauses `pause` between calls.
    pub fn start(channels: Vec<Channel>, namespace: &str, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
        let workers = channels
            .into_iter()
            .enumerate()
            .map(|(worker, channel)| {
                let stop = stop.clone();
                let calls = calls.clone();
                let namespace = namespace.to_owned();
                tokio::spawn(async move {
                    let mut client = SessionServiceClient::new(channel);
                    let mut seq = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        seq += 1;
                        let key = key_in(&namespace, &format!("w{worker}-c{}", seq % 8));
                        let start = Instant::now();
                        let (method, outcome) = if seq.is_multiple_of(2) {
                            let call = client.get(get_request(&key));
                            ("Get", tokio::time::timeout(CALL_BOUND, call).await.map(|r| r.map(drop)))
                        } else {
                            let request = report_request(&key, "", success(&format!("w{worker}-s{seq}"), 3), "");
                            let call = client.report_result(request);
                            (
                                "ReportResult",
                                tokio::time::timeout(CALL_BOUND, call).await.map(|r| r.map(drop)),
                            )
                        };
                        let end = Instant::now();
                        let (code, message) = match outcome {
                            Ok(Ok(())) => (Code::Ok, String::new()),
                            Ok(Err(status)) if refused_by_goaway(&status) => {
                                (Code::Unavailable, format!("refused by GOAWAY ({})", status.message()))
                            }
                            Ok(Err(status)) => (status.code(), status.message().to_owned()),
                            Err(_) => (Code::DeadlineExceeded, format!("no answer within {CALL_BOUND:?}")),
                        };
                        calls.lock().unwrap().push(Call {
                            worker,
                            method,
                            start,
                            end,
                            code,
                            message,
                        });
                        // Paces the load: one call per worker every `pause` (time passing, not a wait).
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load { stop, calls, workers }
    }

    /// The calls finished so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Stops the workers after their current call; returns every call.
    pub async fn stop(self) -> Vec<Call> {
        self.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            worker.await.expect("load worker");
        }
        self.calls.lock().unwrap().clone()
    }
}

/// A call the server refused with its graceful GOAWAY: the stream's id was above the last one
/// the server said it would process, so the server never saw it. gRPC's HTTP/2 mapping makes such
/// a stream UNAVAILABLE (safe to retry), but tonic reports the GOAWAY's NO_ERROR reason as
/// INTERNAL ("h2 protocol error"); a call sent in the instant the drain begins can meet it.
fn refused_by_goaway(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_remote() && h2.reason() == Some(h2::Reason::NO_ERROR);
        }
        source = err.source();
    }
    false
}

/// A short description of failed calls, for assertion messages.
pub fn describe(calls: &[&Call], origin: Instant) -> String {
    calls
        .iter()
        .take(10)
        .map(|c| {
            let at = if c.start >= origin {
                format!("+{:?}", c.start - origin)
            } else {
                format!("-{:?}", origin - c.start)
            };
            format!(
                "[w{} {} at {at} took {:?}: {:?} {}]",
                c.worker,
                c.method,
                c.took(),
                c.code,
                c.message
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Milliseconds with one decimal, for the measurements the tests print.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

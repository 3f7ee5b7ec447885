//! The real `sessionkeeper serve` as a child process, shared by the integration test binaries: its
//! JSON log lines are collected, its ports come from the "sessionkeeper listening" line, and it
//! gets real signals. Plus the probes every test needs: HTTP GET, gRPC health and an open port.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessionkeeper::proto::session_service_client::SessionServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use super::wait::{wait_for_every, wait_until};

/// Names the binary the process tests run, when set (scripts/test points it at the optimised
/// build it made from the same tree, the binary users run); otherwise cargo's test build.
pub const TEST_BINARY: &str = "SESSIONKEEPER_TEST_BINARY";

/// The binary with a clean environment: no inherited database URL or sessionkeeper settings.
pub fn sessionkeeper() -> Command {
    let binary = std::env::var_os(TEST_BINARY).unwrap_or_else(|| env!("CARGO_BIN_EXE_sessionkeeper").into());
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars() {
        if name == "DATABASE_URL" || name.starts_with("SESSIONKEEPER_") || name.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    command.env("RUST_LOG", "info").stdin(Stdio::null());
    command
}

/// A running `sessionkeeper serve` whose JSON log lines are collected. Killed when dropped.
pub struct Server {
    child: Child,
    /// Every JSON log line, with the instant the test read it.
    logs: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
    /// Lines on stderr (a panic message lands there), also echoed to the test's stderr.
    stderr_lines: Arc<Mutex<Vec<String>>>,
    pub grpc: SocketAddr,
    pub metrics: SocketAddr,
    pub name: String,
}

impl Server {
    /// `serve` on free loopback ports, with JSON logs; `configure` adds flags and environment.
    pub fn start(name: &str, configure: impl FnOnce(&mut Command)) -> Server {
        Server::start_with_args(
            name,
            &["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"],
            configure,
        )
    }

    /// The binary with exactly these arguments (plus `--log-format json`): they must make it serve
    /// and log where it listens.
    pub fn start_with_args(name: &str, args: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        let mut command = sessionkeeper();
        command
            .args(args)
            .args(["--log-format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn sessionkeeper serve");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let stderr_lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let stderr_sink = stderr_lines.clone();
        let label = name.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[{label} stderr] {line}");
                stderr_sink.lock().unwrap().push(line);
            }
        });
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if event["message"] == "sessionkeeper listening" {
                        let _ = tx.send(event.clone());
                    }
                    sink.lock().unwrap().push((Instant::now(), event));
                }
            }
        });
        let listening = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{name}: the server logs where it listens"));
        let addr = |field: &str| listening[field].as_str().unwrap().parse().unwrap();
        Server {
            grpc: addr("grpc_addr"),
            metrics: addr("metrics_addr"),
            child,
            logs,
            stderr_lines,
            name: name.to_owned(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new HTTP/2 connection to the gRPC port.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("{}: connect: {e}", self.name))
    }

    pub async fn client(&self) -> SessionServiceClient<Channel> {
        SessionServiceClient::new(self.channel().await)
    }

    pub async fn readyz(&self) -> u16 {
        http_get(self.metrics, "/readyz").await.0
    }

    pub async fn livez(&self) -> u16 {
        http_get(self.metrics, "/livez").await.0
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let what = format!("{}: /readyz answering 200", self.name);
        wait_until(within, &what, || async { self.readyz().await == 200 }).await;
    }

    pub fn log_events(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().iter().map(|(_, e)| e.clone()).collect()
    }

    /// Whether some logged event contains `needle` anywhere.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .any(|(_, e)| e.to_string().contains(needle))
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    /// When the test read the first log line with this message.
    pub fn log_read_at(&self, message: &str) -> Option<Instant> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .find(|(_, e)| e["message"] == message)
            .map(|(at, _)| *at)
    }

    /// Waits until a logged event satisfies `matches`.
    pub async fn wait_for_log(&self, within: Duration, what: &str, matches: impl Fn(&serde_json::Value) -> bool) {
        let what = format!("{}: logging {what}", self.name);
        wait_until(within, &what, || {
            let logged = self.logs.lock().unwrap().iter().any(|(_, e)| matches(e));
            async move { logged }
        })
        .await;
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", self.child.id());
    }

    /// None while the process runs.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits (without blocking the runtime) for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let what = format!("{}: exiting", self.name);
        let child = &mut self.child;
        // Polled every 5 ms: the shutdown tests time the exit.
        wait_for_every(Duration::from_millis(5), within, &what, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }

    /// SIGTERM and a clean exit (code 0) within 15 s. A process still running then fails the test
    /// with its last log lines (what it was waiting for).
    pub async fn stop(mut self) {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(status) = self.exit_status() {
                break status;
            }
            if Instant::now() > deadline {
                let logs = self.log_events();
                let tail: Vec<String> = logs[logs.len().saturating_sub(20)..]
                    .iter()
                    .map(|e| e.to_string())
                    .collect();
                panic!(
                    "{}: still running 15 s after SIGTERM; its last log lines:\n{}",
                    self.name,
                    tail.join("\n")
                );
            }
            tokio::time::sleep(super::wait::POLL).await;
        };
        assert!(status.success(), "{}: SIGTERM exits 0, got {status}", self.name);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP/1.1 GET with a 5 s bound: (status code, body); status 0 when there is no answer.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
        .unwrap_or((0, String::new()))
}

/// The gRPC health status of `service`, bounded to 5 s.
pub async fn health_status(channel: &Channel, service: &str) -> Result<ServingStatus, tonic::Status> {
    let mut client = HealthClient::new(channel.clone());
    let check = client.check(HealthCheckRequest {
        service: service.into(),
    });
    match tokio::time::timeout(Duration::from_secs(5), check).await {
        Ok(answer) => Ok(answer?.into_inner().status()),
        Err(_) => Err(tonic::Status::deadline_exceeded("health check took over 5 s")),
    }
}

/// Does something accept TCP connections on 127.0.0.1:`port`?
pub async fn accepts_connections(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

/// Waits until something (a proxy or pooler the test started) accepts TCP connections on
/// 127.0.0.1:`port`.
pub async fn wait_for_port(port: u16, within: Duration, what: &str) {
    wait_until(within, &format!("{what} listening on {port}"), || {
        accepts_connections(port)
    })
    .await;
}

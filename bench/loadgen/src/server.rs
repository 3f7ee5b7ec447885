//! The server's side of a measured window, read from outside the server: its CPU time (utime +
//! stime of `/proc/<pid>/stat`, every thread) and the store's batch counters scraped from its
//! `/metrics`, once when the window opens and once when it closes. Only reads; a probe that cannot
//! read something reports it missing rather than failing the run.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

const BATCHES: &str = "sessionkeeper_store_batches_total";
const BATCHED_CALLS: &str = "sessionkeeper_store_batched_calls_total";

/// Where to read the server from.
#[derive(Debug, Clone)]
pub struct Probe {
    pub pid: Option<u32>,
    /// `http://host:port/path` of the server's Prometheus exposition.
    pub metrics_url: Option<String>,
    /// Clock ticks a second (`getconf CLK_TCK`), the unit of utime and stime.
    pub clock_ticks: u64,
}

/// The counters at one instant.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    cpu_ticks: Option<u64>,
    /// operation → (batches, calls); empty when `/metrics` was not read.
    batches: BTreeMap<String, (u64, u64)>,
    scraped: bool,
}

impl Probe {
    pub fn is_set(&self) -> bool {
        self.pid.is_some() || self.metrics_url.is_some()
    }

    /// Reads both counters (blocking I/O on a blocking thread: a loopback scrape, milliseconds).
    pub async fn snapshot(&self) -> anyhow::Result<Snapshot> {
        let probe = self.clone();
        tokio::task::spawn_blocking(move || {
            let cpu_ticks = match probe.pid {
                Some(pid) => Some(cpu_ticks(pid)?),
                None => None,
            };
            let (batches, scraped) = match &probe.metrics_url {
                Some(url) => (batch_counters(&scrape(url)?), true),
                None => (BTreeMap::new(), false),
            };
            Ok(Snapshot {
                cpu_ticks,
                batches,
                scraped,
            })
        })
        .await
        .context("the server probe thread panicked")?
    }

    /// What the server spent between `before` and `after`, per call for `calls` calls.
    pub fn window(&self, before: &Snapshot, after: &Snapshot, calls: u64) -> Value {
        let cpu_s = match (before.cpu_ticks, after.cpu_ticks) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / self.clock_ticks.max(1) as f64),
            _ => None,
        };
        let mut batches = serde_json::Map::new();
        for (operation, (b_after, c_after)) in &after.batches {
            let (b_before, c_before) = before.batches.get(operation).copied().unwrap_or((0, 0));
            let (b, c) = (b_after.saturating_sub(b_before), c_after.saturating_sub(c_before));
            batches.insert(
                operation.clone(),
                json!({
                    "batches": b,
                    "calls": c,
                    "mean_batch": if b > 0 { Some(round2(c as f64 / b as f64)) } else { None },
                }),
            );
        }
        json!({
            "pid": self.pid,
            "clock_ticks": self.clock_ticks,
            "cpu_s": cpu_s.map(round3),
            "cpu_us_per_call": cpu_s.filter(|_| calls > 0).map(|s| round2(s * 1e6 / calls as f64)),
            "metrics_scraped": after.scraped,
            "batches": batches,
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// utime + stime of the whole process, in clock ticks (fields 14 and 15 of `/proc/<pid>/stat`;
/// the command name before them is in parentheses and may hold spaces).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in the stat line")?;
    // Fields from the state (field 3) on: utime is field 14, stime field 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> anyhow::Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("no field {n} in /proc/{pid}/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// One plain HTTP/1.0 GET (the metrics port speaks HTTP/1 without TLS); the body.
fn scrape(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .context("the metrics URL must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = authority
        .to_socket_addrs()
        .with_context(|| format!("bad metrics address {authority:?}"))?
        .next()
        .with_context(|| format!("no address for {authority:?}"))?;
    let timeout = Duration::from_secs(5);
    let mut stream =
        TcpStream::connect_timeout(&address, timeout).with_context(|| format!("cannot connect to {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("cannot read {url}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of headers in the response")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{url} answered {:?}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}

/// operation → (batches, calls) from an exposition.
fn batch_counters(exposition: &str) -> BTreeMap<String, (u64, u64)> {
    let mut counters: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.split_once('{') else {
            continue;
        };
        if name != BATCHES && name != BATCHED_CALLS {
            continue;
        }
        let Some(operation) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("operation=\""))
            .map(|v| v.trim_end_matches('}').trim_end_matches('"'))
        else {
            continue;
        };
        let entry = counters.entry(operation.to_owned()).or_default();
        if name == BATCHES {
            entry.0 = value as u64;
        } else {
            entry.1 = value as u64;
        }
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_counters_are_read_by_operation() {
        let text = "# TYPE sessionkeeper_store_batches_total counter\n\
                    sessionkeeper_store_batches_total{operation=\"load\"} 10\n\
                    sessionkeeper_store_batched_calls_total{operation=\"load\"} 45\n\
                    sessionkeeper_store_batches_total{operation=\"report\"} 2\n\
                    sessionkeeper_decisions_total{decision=\"resume\",reason=\"\"} 9\n";
        let counters = batch_counters(text);
        assert_eq!(counters.get("load"), Some(&(10, 45)));
        assert_eq!(counters.get("report"), Some(&(2, 0)));
        assert_eq!(counters.len(), 2);
    }
}

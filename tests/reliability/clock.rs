//! Clocks through the real thing: a replica whose clock is off the database's, made with
//! libfaketime (Debian's `faketime`: an `LD_PRELOAD` library that shifts the process's wall clock
//! and leaves its monotonic clock alone). Such a replica would stamp rows that outlive their TTL by
//! the skew (or expire other replicas' rows early): it is NOT_SERVING and refuses every call
//! UNAVAILABLE, naming the skew, while a replica with a true clock on the same database serves.

use std::time::Duration;

use sessionkeeper::proto::Decision;
use tonic::Code;

use crate::support;
use crate::support::fixtures::{get_request, key, report_request, success};
use crate::support::process::Server;

/// Where scripts/test says Debian's faketime put the library.
const LIBFAKETIME: &str = "SESSIONKEEPER_TEST_LIBFAKETIME";
const DEBIAN_LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn libfaketime() -> String {
    let path = std::env::var(LIBFAKETIME).unwrap_or_else(|_| DEBIAN_LIBFAKETIME.to_owned());
    assert!(
        std::path::Path::new(&path).exists(),
        "{path} is missing: install Debian's faketime (scripts/test does) or set {LIBFAKETIME}"
    );
    path
}

/// A replica on `url` whose wall clock is shifted by `offset` (libfaketime syntax: "+1h", "-10m").
fn skewed(name: &str, url: &str, offset: &str) -> Server {
    let (url, offset, library) = (url.to_owned(), offset.to_owned(), libfaketime());
    Server::start(name, move |c| {
        c.env("DATABASE_URL", url)
            .env("LD_PRELOAD", library)
            .env("FAKETIME", offset)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_clock_is_off_the_databases_is_not_ready_and_refuses_every_call() {
    let schema = support::fresh_pg_schema().await;
    // A replica with a true clock migrates the schema and serves.
    let url = schema.url.clone();
    let honest = Server::start("clock-true", move |c| {
        c.env("DATABASE_URL", url);
    });
    honest.wait_ready(Duration::from_secs(30)).await;
    let mut honest_client = honest.client().await;

    for (offset, direction) in [("+1h", "ahead of"), ("-10m", "behind")] {
        let server = skewed(&format!("clock{offset}"), &schema.url, offset);
        server
            .wait_for_log(Duration::from_secs(20), "the clock-skew warning", |e| {
                e["message"] == "clock skew: refusing calls"
                    && e["level"] == "WARN"
                    && e["error"].as_str().is_some_and(|t| t.contains(direction))
            })
            .await;
        assert_eq!(server.readyz().await, 503, "{offset}: NOT_SERVING");
        let mut client = server.client().await;
        let conversation = format!("skewed{offset}");
        let err = client
            .report_result(report_request(&key(&conversation), "", success("s-skewed", 1), ""))
            .await
            .expect_err("a report from a skewed replica is refused");
        assert_eq!(err.code(), Code::Unavailable, "{offset}: {err:?}");
        assert!(err.message().contains("clock"), "{offset}: {}", err.message());
        let err = client
            .get(get_request(&key(&conversation)))
            .await
            .expect_err("a Get on a skewed replica is refused (its expiry judgement is off too)");
        assert_eq!(err.code(), Code::Unavailable, "{offset}: {err:?}");

        // Nothing was stored; the replica with a true clock serves the same database.
        let answer = honest_client
            .get(get_request(&key(&conversation)))
            .await
            .expect("the true replica serves")
            .into_inner();
        assert_eq!(answer.decision(), Decision::StartFresh, "{offset}: nothing stored");
        println!("CLOCK {offset}: NOT_SERVING, report and Get UNAVAILABLE naming the skew");
        server.stop().await;
    }
    assert_eq!(honest.readyz().await, 200);
    honest.stop().await;
}

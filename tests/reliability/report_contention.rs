//! Reports contending for one row and one report id across replicas: three real `sessionkeeper`
//! processes on one Postgres database of their own, 64 calls in flight. Per key (holding id A),
//! report id R1 goes to all three replicas at once (twice a success storing C, once a gone report
//! about A, as a client does that retries a dispatch after the agent ended differently), while
//! R2 (a success storing D) and R3 (a gone report about A) race them. No call may fail or take
//! 2 s, every call with one report id gets one answer, a gone report about A never removes C or D,
//! and Postgres never has to break a deadlock (`pg_stat_database.deadlocks` stays put).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sessionkeeper::proto::session_service_client::SessionServiceClient;
use sessionkeeper::proto::{self, Action};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::load::ms;
use crate::support;
use crate::support::fixtures::{get_request, key_in, no_conversation_found, report_request, success};
use crate::support::process::Server;
use crate::support::wait::wait_until;

const REPLICAS: usize = 3;
const KEYS: usize = 200;
const IN_FLIGHT: usize = 64;
/// The slowest acceptable call: far above a normal report, far below a deadlock's cost (1 s to
/// detect it, then a retry), so a product that deadlocks fails here rather than on a bad day.
const SLOWEST_CALL: Duration = Duration::from_secs(2);

/// The five reports sent for one key, at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Call {
    /// R1 with a success storing C, through two replicas.
    R1SuccessC(usize),
    /// R1 with a gone report about A, through the third replica.
    R1GoneA,
    /// R2: a success storing D.
    R2SuccessD,
    /// R3: a gone report about A.
    R3GoneA,
}

impl Call {
    const ALL: [Call; 5] = [
        Call::R1SuccessC(0),
        Call::R1SuccessC(1),
        Call::R1GoneA,
        Call::R2SuccessD,
        Call::R3GoneA,
    ];

    fn report_id(self, i: usize) -> String {
        match self {
            Call::R1SuccessC(_) | Call::R1GoneA => format!("r1-{i}"),
            Call::R2SuccessD => format!("r2-{i}"),
            Call::R3GoneA => format!("r3-{i}"),
        }
    }

    /// Which replica this call of key `i` goes through: R1's three copies to three different
    /// replicas, and the assignment rotates with the key.
    fn replica(self, i: usize) -> usize {
        let slot = match self {
            Call::R1SuccessC(n) => n,
            Call::R1GoneA => 2,
            Call::R2SuccessD => 0,
            Call::R3GoneA => 1,
        };
        (i + slot) % REPLICAS
    }

    fn request(self, i: usize) -> proto::ReportResultRequest {
        let key = key_in("contention", &format!("conversation-{i}"));
        let a = format!("A-{i}");
        let result = match self {
            Call::R1SuccessC(_) => success(&format!("C-{i}"), 3),
            Call::R2SuccessD => success(&format!("D-{i}"), 3),
            Call::R1GoneA | Call::R3GoneA => no_conversation_found(&a, &format!("{a}-failed-frame")),
        };
        report_request(&key, &a, result, &self.report_id(i))
    }
}

async fn deadlocks(url: &str, database: &str) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect for statistics");
    let count: i64 = sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut conn)
        .await
        .expect("read pg_stat_database");
    conn.close().await.ok();
    count
}

/// Waits until no backend serves `database` any more: a backend flushes its statistics (its
/// deadlock count among them) before it leaves `pg_stat_activity`.
async fn wait_for_backends_to_exit(url: &str, database: &str) {
    use sqlx::Connection;
    let what = format!("no backend serving {database} after the servers stopped");
    wait_until(Duration::from_secs(20), &what, || async {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("connect for activity");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .fetch_one(&mut conn)
            .await
            .expect("read pg_stat_activity");
        conn.close().await.ok();
        left == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_report_id_across_replicas_racing_other_reports_never_fails_deadlocks_or_loses_a_stored_id() {
    let database = support::fresh_pg_database().await;
    let stats_url = support::test_database_url();
    let servers: Vec<Server> = (0..REPLICAS)
        .map(|r| {
            let url = database.url.clone();
            Server::start(&format!("contention-{r}"), move |c| {
                c.env("DATABASE_URL", url);
            })
        })
        .collect();
    let mut clients: Vec<SessionServiceClient<Channel>> = Vec::new();
    for server in &servers {
        server.wait_ready(Duration::from_secs(30)).await;
        clients.push(server.client().await);
    }
    {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database.url).await.expect("connect");
        sqlx::query(
            "INSERT INTO session (namespace, agent, conversation, session_id, provider, host, config_dir, cwd, \
             last_used_at) \
             SELECT 'contention', 'coder', 'conversation-' || g, 'A-' || g, 'claude', 'pod-a', \
             '/home/agent/.claude', '/work/repo', now() FROM generate_series(0, $1 - 1) AS g",
        )
        .bind(i64::try_from(KEYS).unwrap())
        .execute(&mut conn)
        .await
        .expect("seed every key with A");
        conn.close().await.ok();
    }
    // Warm pools, as a replica that has served a while has: the measured calls wait for locks,
    // not for new connections.
    let mut warm_up = JoinSet::new();
    for (r, client) in clients.iter().enumerate() {
        for n in 0..IN_FLIGHT / REPLICAS {
            let mut client = client.clone();
            warm_up.spawn(async move {
                let conversation = format!("conversation-{}", (r * IN_FLIGHT + n) % KEYS);
                client
                    .get(get_request(&key_in("contention", &conversation)))
                    .await
                    .expect("warm-up get");
            });
        }
    }
    warm_up.join_all().await;
    let deadlocks_before = deadlocks(&stats_url, &database.name).await;

    let started = Instant::now();
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut calls = JoinSet::new();
    for i in 0..KEYS {
        for call in Call::ALL {
            let mut client = clients[call.replica(i)].clone();
            let in_flight = in_flight.clone();
            calls.spawn(async move {
                let _permit = in_flight.acquire_owned().await.expect("semaphore");
                let sent = Instant::now();
                let answer = client.report_result(call.request(i)).await;
                (i, call, sent.elapsed(), answer.map(tonic::Response::into_inner))
            });
        }
    }
    let mut answers: BTreeMap<usize, Vec<(Call, proto::ReportResultResponse)>> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    let mut slow = Vec::new();
    let mut latencies = Vec::new();
    while let Some(done) = calls.join_next().await {
        let (i, call, took, answer) = done.expect("call task");
        slowest = slowest.max(took);
        latencies.push(took);
        if took >= SLOWEST_CALL {
            slow.push(format!("key {i} {call:?}: {}", ms(took)));
        }
        match answer {
            Ok(answer) => answers.entry(i).or_default().push((call, answer)),
            Err(status) => failures.push(format!("key {i} {call:?}: {:?} {}", status.code(), status.message())),
        }
    }
    let took = started.elapsed();
    latencies.sort();
    let percentile = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    for server in servers {
        server.stop().await;
    }
    wait_for_backends_to_exit(&stats_url, &database.name).await;
    let deadlocks_after = deadlocks(&stats_url, &database.name).await;

    let final_rows: BTreeMap<String, String> = {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&database.url).await.expect("connect");
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT conversation, session_id FROM session WHERE namespace = 'contention'")
                .fetch_all(&mut conn)
                .await
                .expect("read the rows");
        conn.close().await.ok();
        rows.into_iter().collect()
    };
    database.drop_now().await;

    let mut tally: BTreeMap<String, u32> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (i, key_answers) in &answers {
        let i = *i;
        if key_answers.len() != Call::ALL.len() {
            continue; // the failed calls are reported below
        }
        let of = |wanted: &dyn Fn(Call) -> bool| -> Vec<&proto::ReportResultResponse> {
            key_answers.iter().filter(|(c, _)| wanted(*c)).map(|(_, a)| a).collect()
        };
        let r1 = of(&|c| matches!(c, Call::R1SuccessC(_) | Call::R1GoneA));
        let r2 = of(&|c| c == Call::R2SuccessD)[0];
        let r3 = of(&|c| c == Call::R3GoneA)[0];
        if r1.iter().any(|a| *a != r1[0]) {
            wrong.push(format!("key {i}: R1's answers differ: {r1:?}"));
        }
        let r1 = r1[0];
        let (c, d) = (format!("C-{i}"), format!("D-{i}"));
        if (r2.action(), r2.session_id.as_str()) != (Action::Stored, d.as_str()) {
            wrong.push(format!("key {i}: R2 answered {r2:?}"));
        }
        // The ids a STORED answer put in the row; the row must end with one of them.
        let mut stored = vec![d.clone()];
        match r1.action() {
            Action::Stored if r1.session_id == c => stored.push(c.clone()),
            // The gone payload won R1: A was still stored (cleared) or C/D already was (superseded).
            Action::Cleared if r1.retry_fresh && r1.session_id.is_empty() => {}
            Action::Superseded if !r1.retry_fresh && (r1.session_id == d) => {}
            _ => wrong.push(format!("key {i}: R1 answered {r1:?}")),
        }
        match r3.action() {
            Action::Cleared if r3.retry_fresh && r3.session_id.is_empty() => {}
            Action::Superseded if stored.contains(&r3.session_id) => {}
            _ => wrong.push(format!("key {i}: R3 answered {r3:?}")),
        }
        let conversation = format!("conversation-{i}");
        match final_rows.get(&conversation) {
            Some(id) if stored.contains(id) => {}
            other => wrong.push(format!(
                "key {i}: the row holds {other:?}, not one of the stored ids {stored:?} (R1 {r1:?}, R3 {r3:?})"
            )),
        }
        *tally
            .entry(format!("R1 {:?} / R3 {:?}", r1.action(), r3.action()))
            .or_default() += 1;
    }
    eprintln!(
        "CONTENTION: {} calls ({KEYS} keys x 5) over {REPLICAS} replicas, {IN_FLIGHT} in flight, in {}; p50 {}, p99 {}, \
         slowest {}; failed {}; deadlocks {deadlocks_before} -> {deadlocks_after}; outcomes {tally:?}",
        KEYS * Call::ALL.len(),
        ms(took),
        ms(percentile(50)),
        ms(percentile(99)),
        ms(slowest),
        failures.len(),
    );
    assert!(failures.is_empty(), "{} calls failed: {failures:#?}", failures.len());
    assert!(
        slow.is_empty(),
        "{} calls took {SLOWEST_CALL:?} or more: {slow:#?}",
        slow.len()
    );
    assert!(wrong.is_empty(), "{} wrong outcomes: {wrong:#?}", wrong.len());
    assert_eq!(
        deadlocks_after, deadlocks_before,
        "Postgres broke deadlocks between concurrent reports"
    );
}

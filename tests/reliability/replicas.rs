//! Replicas: three real `sessionkeeper` processes on one Postgres (a fresh schema per test).
//! Success reports race late gone reports on the same keys across replicas and no newer id is ever
//! lost; concurrent sweeps from every replica delete each expired row exactly once; a report_id
//! repeated across replicas gets the first answer everywhere.

use std::time::{Duration, Instant};

use sessionkeeper::proto::session_service_client::SessionServiceClient;
use sessionkeeper::proto::{self, Action, Decision, ResultClass};
use tonic::Code;
use tonic::transport::Channel;

use crate::load::ms;
use crate::support;
use crate::support::fixtures::{get_request, key_in, no_conversation_found, report_request, success};
use crate::support::process::Server;

const REPLICAS: usize = 3;

struct Replicas {
    servers: Vec<Server>,
    clients: Vec<SessionServiceClient<Channel>>,
    schema: support::PgSchema,
}

impl Replicas {
    /// Starts the replicas at once on a fresh schema (they race to migrate it) and waits until
    /// each is ready and has finished its startup sweep.
    async fn start(name: &str) -> Replicas {
        let schema = support::fresh_pg_schema().await;
        let servers: Vec<Server> = (0..REPLICAS)
            .map(|i| {
                let url = schema.url.clone();
                Server::start(&format!("{name}-{i}"), move |c| {
                    c.env("DATABASE_URL", url);
                })
            })
            .collect();
        let mut clients = Vec::new();
        for server in &servers {
            server.wait_ready(Duration::from_secs(30)).await;
            server
                .wait_for_log(Duration::from_secs(30), "the startup sweep", |e| {
                    e["message"] == "sweep finished" && e["trigger"] == "startup"
                })
                .await;
            clients.push(server.client().await);
        }
        Replicas {
            servers,
            clients,
            schema,
        }
    }

    fn client(&self, i: usize) -> SessionServiceClient<Channel> {
        self.clients[i % REPLICAS].clone()
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

async fn pg(schema: &support::PgSchema) -> sqlx::PgConnection {
    use sqlx::Connection;
    sqlx::PgConnection::connect(&schema.url)
        .await
        .expect("connect to the test schema")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// The success report and the late gone report are sent at the same instant.
    Concurrent,
    /// The success report is answered before the gone report is sent: the gone report is late.
    SuccessFirst,
    /// The gone report is answered before the success report is sent.
    GoneFirst,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_gone_reports_racing_success_reports_across_replicas_never_lose_the_newer_id() {
    let replicas = Replicas::start("race").await;
    const KEYS: usize = 300;
    const IN_PARALLEL: usize = 12;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_PARALLEL));
    for i in 0..KEYS {
        let permit = semaphore.clone().acquire_owned().await.unwrap();
        // Key i: stored through replica i, B reported through i + 1, the gone report through i + 2.
        let (mut storer, mut winner, mut late) = (replicas.client(i), replicas.client(i + 1), replicas.client(i + 2));
        let order = [
            Order::Concurrent,
            Order::Concurrent,
            Order::SuccessFirst,
            Order::GoneFirst,
        ][i % 4];
        tasks.spawn(async move {
            let _permit = permit;
            let key = key_in("race", &format!("conversation-{i}"));
            let (a, b) = (format!("A-{i}"), format!("B-{i}"));
            let stored = storer
                .report_result(report_request(&key, "", success(&a, 3), &format!("store-{i}")))
                .await
                .expect("store A")
                .into_inner();
            assert_eq!(
                (stored.action(), stored.session_id.as_str()),
                (Action::Stored, a.as_str())
            );
            // The run that resumed A succeeded with B; an older run's late report says A is gone.
            let success_b = report_request(&key, &a, success(&b, 3), &format!("success-{i}"));
            let gone_a = report_request(
                &key,
                &a,
                no_conversation_found(&a, &format!("{a}-failed-frame")),
                &format!("gone-{i}"),
            );
            let (won, gone) = match order {
                Order::Concurrent => {
                    let (won, gone) = tokio::join!(winner.report_result(success_b), late.report_result(gone_a));
                    (won, gone)
                }
                Order::SuccessFirst => {
                    let won = winner.report_result(success_b).await;
                    (won, late.report_result(gone_a).await)
                }
                Order::GoneFirst => {
                    let gone = late.report_result(gone_a).await;
                    (winner.report_result(success_b).await, gone)
                }
            };
            let won = won.expect("success report").into_inner();
            assert_eq!(
                (won.action(), won.session_id.as_str()),
                (Action::Stored, b.as_str()),
                "key {i}"
            );
            let gone = gone.expect("gone report").into_inner();
            assert_eq!(gone.result_class(), ResultClass::SessionGone, "key {i}");
            match gone.action() {
                // A was still stored: cleared, and the caller runs the turn fresh.
                Action::Cleared => {
                    assert!(gone.retry_fresh && gone.session_id.is_empty(), "key {i}: {gone:?}");
                    assert_ne!(order, Order::SuccessFirst, "key {i}: a late gone report cleared B");
                }
                // B was already stored: nothing changes, the caller resumes B.
                Action::Superseded => {
                    assert!(!gone.retry_fresh && gone.session_id == b, "key {i}: {gone:?}");
                    assert_ne!(order, Order::GoneFirst, "key {i}");
                }
                other => panic!("key {i}: a gone report about A answered {other:?}"),
            }
            // Whichever replica is asked, the conversation resumes B.
            let seen = storer.get(get_request(&key)).await.expect("get").into_inner();
            assert_eq!(
                (seen.decision(), seen.session_id.as_str()),
                (Decision::Resume, b.as_str()),
                "key {i}: the newer id was lost"
            );
            (order, gone.action())
        });
    }
    let mut tally = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (order, action) = done.expect("key task");
        *tally.entry(format!("{order:?}/{action:?}")).or_insert(0u32) += 1;
    }
    // Read back through every replica and straight from the table.
    for r in 0..REPLICAS {
        let mut client = replicas.client(r);
        for i in (r..KEYS).step_by(7) {
            let seen = client
                .get(get_request(&key_in("race", &format!("conversation-{i}"))))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(seen.session_id, format!("B-{i}"), "replica {r}, key {i}");
        }
    }
    let mut conn = pg(&replicas.schema).await;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT conversation, session_id FROM session WHERE namespace = 'race'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(rows.len(), KEYS, "one row per key");
    for (conversation, session_id) in rows {
        let i = conversation.trim_start_matches("conversation-");
        assert_eq!(session_id, format!("B-{i}"), "{conversation}");
    }
    eprintln!(
        "REPLICAS/race: {KEYS} keys over {REPLICAS} replicas ({IN_PARALLEL} keys at a time) in {}: every key \
         ends with B; gone-report outcomes by order: {tally:?}",
        ms(started.elapsed())
    );
    replicas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sweeps_from_every_replica_delete_each_expired_row_exactly_once_and_the_counts_add_up() {
    let replicas = Replicas::start("sweep").await;
    const EXPIRED: i64 = 30_000;
    const FRESH: i64 = 1_000;
    let mut conn = pg(&replicas.schema).await;
    // Expired rows (last used 30 days ago; the default TTL is 24 h) over three agents and two
    // namespaces, and fresh rows that must survive.
    let seeded = Instant::now();
    sqlx::query(
        "INSERT INTO session (namespace, agent, conversation, session_id, last_used_at) \
         SELECT 'ns-' || (g % 2), 'agent-' || (g % 3), 'expired-' || g, 'sid-' || g, \
                now() - interval '30 days' - g * interval '1 second' \
         FROM generate_series(1, $1) AS g",
    )
    .bind(EXPIRED)
    .execute(&mut conn)
    .await
    .expect("seed expired rows");
    sqlx::query(
        "INSERT INTO session (namespace, agent, conversation, session_id, last_used_at) \
         SELECT 'ns-' || (g % 2), 'agent-' || (g % 3), 'fresh-' || g, 'sid-' || g, now() \
         FROM generate_series(1, $1) AS g",
    )
    .bind(FRESH)
    .execute(&mut conn)
    .await
    .expect("seed fresh rows");
    let seeded = seeded.elapsed();

    // Two sweeps from each replica, all at once.
    let started = Instant::now();
    let mut sweeps = tokio::task::JoinSet::new();
    for i in 0..REPLICAS * 2 {
        let mut client = replicas.client(i);
        sweeps.spawn(async move {
            let response = client
                .sweep(proto::SweepRequest::default())
                .await
                .unwrap_or_else(|s| panic!("sweep {i}: {s:?}"));
            (i % REPLICAS, response.into_inner().deleted)
        });
    }
    let mut counts = Vec::new();
    while let Some(done) = sweeps.join_next().await {
        counts.push(done.expect("sweep task"));
    }
    let took = started.elapsed();
    counts.sort();
    let total: u64 = counts.iter().map(|(_, deleted)| deleted).sum();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM session WHERE conversation LIKE 'expired-%'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    let fresh_left: i64 = sqlx::query_scalar("SELECT count(*) FROM session WHERE conversation LIKE 'fresh-%'")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    eprintln!(
        "REPLICAS/sweep: {EXPIRED} expired + {FRESH} fresh rows seeded in {}; {} concurrent sweeps from \
         {REPLICAS} replicas took {}; deleted per sweep (replica, count): {counts:?}; total {total}",
        ms(seeded),
        counts.len(),
        ms(took)
    );
    assert_eq!(left, 0, "no expired row is left");
    assert_eq!(fresh_left, FRESH, "no fresh row is deleted");
    assert_eq!(
        total,
        u64::try_from(EXPIRED).unwrap(),
        "the deleted counts add up to the expired rows"
    );
    // A sweep now finds nothing, through any replica.
    for r in 0..REPLICAS {
        let again = replicas.client(r).sweep(proto::SweepRequest::default()).await.unwrap();
        assert_eq!(again.into_inner().deleted, 0);
    }
    replicas.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_report_id_repeated_across_replicas_returns_the_first_answer_everywhere() {
    let replicas = Replicas::start("idem").await;
    const IDS: usize = 60;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..IDS {
        let clients: Vec<_> = (0..REPLICAS).map(|r| replicas.client(r)).collect();
        tasks.spawn(async move {
            let key = key_in("idem", &format!("conversation-{i}"));
            let report_id = format!("dispatch-{i}");
            // The conversation holds A (stored without a report id). The report id then comes with a
            // different payload through each replica (replica 0: a gone report about A; replicas 1
            // and 2: a success, each with its own id), so the answers agree only if every repeat
            // returns the first answer. Mode 0: all three at once. Mode 1: the gone report first,
            // alone, then all three at once. Mode 2: replica 1's success first, then all at once.
            let a = format!("A-{i}");
            clients[i % REPLICAS]
                .clone()
                .report_result(report_request(&key, "", success(&a, 3), ""))
                .await
                .expect("store A");
            let variant = |r: usize| {
                if r == 0 {
                    report_request(
                        &key,
                        &a,
                        no_conversation_found(&a, &format!("{a}-failed-frame")),
                        &report_id,
                    )
                } else {
                    report_request(&key, "", success(&format!("S-{i}-replica-{r}"), 3), &report_id)
                }
            };
            let mode = i % 3;
            let alone = match mode {
                1 => Some(
                    clients[1]
                        .clone()
                        .report_result(variant(0))
                        .await
                        .expect("gone report alone"),
                ),
                2 => Some(
                    clients[2]
                        .clone()
                        .report_result(variant(1))
                        .await
                        .expect("success alone"),
                ),
                _ => None,
            }
            .map(tonic::Response::into_inner);
            let concurrent = clients.iter().enumerate().map(|(r, client)| {
                let mut client = client.clone();
                let request = variant(r);
                async move { client.report_result(request).await }
            });
            let answers: Vec<proto::ReportResultResponse> = futures_join_all(concurrent)
                .await
                .into_iter()
                .map(|a| a.expect("report").into_inner())
                .collect();
            let first = alone.unwrap_or_else(|| answers[0].clone());
            assert!(
                answers.iter().all(|a| *a == first),
                "id {i}: repeats across replicas disagree with the first answer {first:?}: {answers:?}"
            );
            match mode {
                1 => assert_eq!((first.action(), first.retry_fresh), (Action::Cleared, true), "id {i}"),
                2 => assert_eq!(
                    (first.action(), first.session_id.clone()),
                    (Action::Stored, format!("S-{i}-replica-1"))
                ),
                _ => {}
            }
            // Sequential repeats, through every replica, with every payload: still the first answer.
            for round in 0..2 {
                for (r, client) in clients.iter().enumerate() {
                    let again = client
                        .clone()
                        .report_result(variant((r + round) % REPLICAS))
                        .await
                        .expect("repeat")
                        .into_inner();
                    assert_eq!(again, first, "id {i}: a repeat through replica {r}");
                }
            }
            // The stored row is what the first answer said, as every replica sees it.
            for client in &clients {
                let seen = client.clone().get(get_request(&key)).await.unwrap().into_inner();
                if first.session_id.is_empty() {
                    assert_eq!(seen.decision(), Decision::StartFresh, "id {i}");
                } else {
                    assert_eq!(
                        (seen.decision(), seen.session_id.as_str()),
                        (Decision::Resume, first.session_id.as_str()),
                        "id {i}: the stored row differs from the first answer"
                    );
                }
            }
            // The same report_id for another key of the namespace: ALREADY_EXISTS on every replica.
            for client in &clients {
                let other = report_request(
                    &crate::support::fixtures::key_in("idem", &format!("other-{i}")),
                    "",
                    success("x", 3),
                    &report_id,
                );
                let refused = client.clone().report_result(other).await.unwrap_err();
                assert_eq!(refused.code(), Code::AlreadyExists, "id {i}: {refused:?}");
            }
            let winner = if first.action() == Action::Cleared {
                "the gone report".to_owned()
            } else {
                first
                    .session_id
                    .rsplit('-')
                    .next()
                    .map(|r| format!("replica {r}'s success payload"))
                    .unwrap_or_default()
            };
            format!("{:?} by {winner}", first.action())
        });
    }
    let mut tally = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        *tally.entry(done.expect("id task")).or_insert(0u32) += 1;
    }
    eprintln!(
        "REPLICAS/idempotency: {IDS} report ids, each sent to {REPLICAS} replicas at once with different \
         payloads (for a third of them after a gone report alone, for a third after a success alone), then \
         repeated 6 times through every replica: every answer equals the first ({tally:?}) in {}",
        ms(started.elapsed())
    );
    replicas.stop().await;
}

/// Awaits every future concurrently, keeping their order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::new();
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

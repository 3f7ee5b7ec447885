//! Waiting for a condition with a deadline: a test that waits for something to happen polls for
//! it and fails loudly, naming what it waited for, when the deadline passes. A fixed sleep is only
//! for a test that measures time passing (and says so where it sleeps).

use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const POLL: Duration = Duration::from_millis(10);

/// Polls `probe` every [`POLL`] until it returns `Some`, and returns that value; panics naming
/// `what` when `within` passes first.
pub async fn wait_for<T, F, Fut>(within: Duration, what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_every(POLL, within, what, probe).await
}

/// [`wait_for`] with a poll interval of the caller's (a test timing a transition to the
/// millisecond polls more often).
pub async fn wait_for_every<T, F, Fut>(every: Duration, within: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(every).await;
    }
}

/// Polls `condition` every [`POLL`] until it holds; panics naming `what` when `within` passes first.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_for(within, what, || {
        let holds = condition();
        async move { holds.await.then_some(()) }
    })
    .await
}

/// A blocking [`wait_until`], for a test that waits outside an async runtime (a child process).
pub fn wait_until_blocking(within: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(POLL);
    }
}

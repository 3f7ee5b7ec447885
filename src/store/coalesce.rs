//! Natural batching of concurrent store calls: a call joins the queue and, while fewer than
//! `max_in_flight` batches run, starts one; a running batch takes whatever is waiting (up to
//! `max_batch`) each time its previous round returns. No fixed delay: a lone call runs at once,
//! and batches grow only with concurrency. Batches run on their own tasks, so a caller that gives
//! up (a client deadline) never abandons the others' answers; its own answer is dropped.
//! It counts the batches it runs and the calls they carry (two relaxed atomic additions per batch,
//! outside the lock), so `/metrics` can show the mean batch size.
//! A batch that finds the store unavailable also fails the calls queued behind it, at once and
//! with the same error: while the database is down each batch waits out its connection timeout,
//! and a call must not wait out one timeout per batch ahead of it (SPEC: UNAVAILABLE fast). A
//! call that queues after that starts a batch of its own, so the store is tried again at once.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::{BatchStats, StoreError};

type Reply<V> = oneshot::Sender<Result<V, StoreError>>;

/// The queue of one kind of call (loads of a key, say), answered in batches.
pub(crate) struct Coalescer<K, V> {
    state: Mutex<State<K, V>>,
    max_in_flight: usize,
    max_batch: usize,
    /// Batches run since the start (each `run` call), and the calls they carried.
    batches: AtomicU64,
    calls: AtomicU64,
}

struct State<K, V> {
    waiting: VecDeque<(K, Reply<V>)>,
    running: usize,
}

impl<K, V> std::fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("max_in_flight", &self.max_in_flight)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

/// Gives a running batch's slot back should its task end without doing so (a panic): calls that
/// queue later can start batches again.
struct Slot<'a, K, V> {
    coalescer: &'a Coalescer<K, V>,
    held: bool,
}

impl<K, V> Drop for Slot<'_, K, V> {
    fn drop(&mut self) {
        if self.held {
            self.coalescer.lock().running -= 1;
        }
    }
}

impl<K, V> Coalescer<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Send + 'static, V: Send + 'static> Coalescer<K, V> {
    pub(crate) fn new(max_in_flight: usize, max_batch: usize) -> Self {
        Coalescer {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                running: 0,
            }),
            max_in_flight: max_in_flight.max(1),
            max_batch: max_batch.max(1),
            batches: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }

    /// The batches run so far and the calls they carried, under the name `operation`.
    pub(crate) fn stats(&self, operation: &'static str) -> BatchStats {
        BatchStats {
            operation,
            batches: self.batches.load(Ordering::Relaxed),
            calls: self.calls.load(Ordering::Relaxed),
        }
    }

    /// Answers `key` in a batch. `run` answers a batch's keys in order, one value per key; its
    /// error is every caller's in that batch.
    pub(crate) async fn call<F, Fut>(self: &Arc<Self>, key: K, run: F) -> Result<V, StoreError>
    where
        F: Fn(Vec<K>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<V>, StoreError>> + Send,
    {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut state = self.lock();
            state.waiting.push_back((key, reply));
            let start = state.running < self.max_in_flight;
            if start {
                state.running += 1;
            }
            start
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drain(run).await });
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Other("the batch ended without an answer".into())))
    }

    /// Runs batches until nothing waits.
    async fn drain<F, Fut>(&self, run: F)
    where
        F: Fn(Vec<K>) -> Fut,
        Fut: Future<Output = Result<Vec<V>, StoreError>>,
    {
        let mut slot = Slot {
            coalescer: self,
            held: true,
        };
        loop {
            let batch: Vec<(K, Reply<V>)> = {
                let mut state = self.lock();
                if state.waiting.is_empty() {
                    // Under the same lock as the check: a call that queues after this starts a
                    // batch of its own.
                    state.running -= 1;
                    slot.held = false;
                    return;
                }
                let n = state.waiting.len().min(self.max_batch);
                state.waiting.drain(..n).collect()
            };
            let (keys, replies): (Vec<K>, Vec<Reply<V>>) =
                batch.into_iter().filter(|(_, reply)| !reply.is_closed()).unzip();
            if keys.is_empty() {
                continue;
            }
            let expected = keys.len();
            self.batches.fetch_add(1, Ordering::Relaxed);
            self.calls.fetch_add(expected as u64, Ordering::Relaxed);
            match run(keys).await {
                Ok(values) if values.len() == expected => {
                    for (reply, value) in replies.into_iter().zip(values) {
                        let _ = reply.send(Ok(value));
                    }
                }
                Ok(values) => {
                    let problem = format!("a batch of {expected} calls got {} answers", values.len());
                    for reply in replies {
                        let _ = reply.send(Err(StoreError::Other(problem.clone().into())));
                    }
                }
                Err(e) => {
                    let queued = if e.is_unavailable() {
                        std::mem::take(&mut self.lock().waiting)
                    } else {
                        VecDeque::new()
                    };
                    let queued = queued.into_iter().map(|(_, reply)| reply);
                    for reply in replies.into_iter().chain(queued) {
                        let _ = reply.send(Err(e.for_another_caller()));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::*;

    type Answers = std::pin::Pin<Box<dyn Future<Output = Result<Vec<u32>, StoreError>> + Send>>;

    /// A batch runner that records each batch's keys, waits for a permit per batch, and answers
    /// key × 10, or fails the batches holding a key over 1000: the store unavailable for a key
    /// over 2000, another error for one up to 2000.
    #[derive(Clone, Default)]
    struct Recorder {
        batches: Arc<StdMutex<Vec<Vec<u32>>>>,
        gate: Option<Arc<Semaphore>>,
    }

    impl Recorder {
        fn gated() -> (Recorder, Arc<Semaphore>) {
            let gate = Arc::new(Semaphore::new(0));
            (
                Recorder {
                    batches: Arc::default(),
                    gate: Some(gate.clone()),
                },
                gate,
            )
        }

        fn runner(&self) -> impl Fn(Vec<u32>) -> Answers + Send + 'static {
            let this = self.clone();
            move |keys: Vec<u32>| {
                let this = this.clone();
                Box::pin(async move {
                    this.batches.lock().unwrap().push(keys.clone());
                    if let Some(gate) = &this.gate {
                        gate.acquire().await.unwrap().forget();
                    }
                    if keys.iter().any(|k| *k > 2000) {
                        return Err(StoreError::Unavailable("the batch failed".into()));
                    }
                    if keys.iter().any(|k| *k > 1000) {
                        return Err(StoreError::Other("the batch failed".into()));
                    }
                    Ok(keys.iter().map(|k| k * 10).collect())
                })
            }
        }

        fn batches(&self) -> Vec<Vec<u32>> {
            self.batches.lock().unwrap().clone()
        }
    }

    /// Lets spawned tasks run until `done` holds (bounded).
    async fn until(done: impl Fn() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the condition never held");
    }

    #[tokio::test]
    async fn a_lone_call_runs_at_once_as_a_batch_of_one() {
        let coalescer = Arc::new(Coalescer::new(4, 128));
        let recorder = Recorder::default();
        assert_eq!(coalescer.call(7, recorder.runner()).await.unwrap(), 70);
        assert_eq!(recorder.batches(), vec![vec![7]]);
        assert_eq!(coalescer.lock().running, 0, "the batch gave its slot back");
    }

    #[tokio::test]
    async fn calls_waiting_when_a_batch_returns_are_answered_together_each_with_its_own_value() {
        let coalescer = Arc::new(Coalescer::new(1, 128));
        let (recorder, gate) = Recorder::gated();
        let first = tokio::spawn({
            let (coalescer, run) = (coalescer.clone(), recorder.runner());
            async move { coalescer.call(1, run).await }
        });
        until(|| recorder.batches().len() == 1).await;
        let waiting: Vec<_> = (2..=5)
            .map(|k| {
                let (coalescer, run) = (coalescer.clone(), recorder.runner());
                tokio::spawn(async move { coalescer.call(k, run).await })
            })
            .collect();
        until(|| coalescer.lock().waiting.len() == 4).await;
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 10);
        for (k, call) in (2..=5).zip(waiting) {
            assert_eq!(call.await.unwrap().unwrap(), k * 10);
        }
        assert_eq!(recorder.batches(), vec![vec![1], vec![2, 3, 4, 5]]);
    }

    #[tokio::test]
    async fn a_batch_takes_at_most_max_batch_calls() {
        let coalescer = Arc::new(Coalescer::new(1, 3));
        let (recorder, gate) = Recorder::gated();
        let mut calls = Vec::new();
        for k in 1..=7 {
            let (coalescer, run) = (coalescer.clone(), recorder.runner());
            calls.push(tokio::spawn(async move { coalescer.call(k, run).await }));
            // The first call's batch starts before the others queue.
            until(|| !recorder.batches().is_empty()).await;
        }
        until(|| coalescer.lock().waiting.len() == 6).await;
        gate.add_permits(10);
        for (k, call) in (1..=7).zip(calls) {
            assert_eq!(call.await.unwrap().unwrap(), k * 10);
        }
        let sizes: Vec<usize> = recorder.batches().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 3, 3]);
        assert_eq!(
            coalescer.stats("load"),
            BatchStats {
                operation: "load",
                batches: 3,
                calls: 7
            },
            "every batch and call is counted"
        );
    }

    /// Runs `keys` through a coalescer of one batch at a time and at most two calls per batch,
    /// the first alone and the rest queued behind it; answers per key: value or unavailable.
    async fn answers_of(keys: &[u32]) -> (Vec<(u32, Result<u32, bool>)>, Vec<Vec<u32>>) {
        let coalescer = Arc::new(Coalescer::new(1, 2));
        let (recorder, gate) = Recorder::gated();
        let mut calls = Vec::new();
        for &k in keys {
            let (coalescer, run) = (coalescer.clone(), recorder.runner());
            calls.push(tokio::spawn(async move { (k, coalescer.call(k, run).await) }));
            // The first call's batch starts before the others queue.
            until(|| !recorder.batches().is_empty()).await;
        }
        until(|| coalescer.lock().waiting.len() == keys.len() - 1).await;
        gate.add_permits(10);
        let mut answers = Vec::new();
        for call in calls {
            let (k, answer) = call.await.unwrap();
            answers.push((k, answer.map_err(|e| e.is_unavailable())));
        }
        (answers, recorder.batches())
    }

    #[tokio::test]
    async fn a_failed_batch_fails_its_own_callers_only() {
        let (answers, batches) = answers_of(&[1, 2, 1500, 4, 5]).await;
        // Batches [1], [2, 1500], [4, 5]: the middle one failed, for both its callers.
        assert_eq!(
            answers,
            vec![
                (1, Ok(10)),
                (2, Err(false)),
                (1500, Err(false)),
                (4, Ok(40)),
                (5, Ok(50))
            ]
        );
        assert_eq!(batches, vec![vec![1], vec![2, 1500], vec![4, 5]]);
    }

    #[tokio::test]
    async fn a_batch_that_finds_the_store_unavailable_fails_the_calls_queued_behind_it_at_once() {
        let (answers, batches) = answers_of(&[1, 2, 3000, 4, 5]).await;
        // Batches [1], [2, 3000]: the store was unavailable, so [4, 5] are not run but answered
        // UNAVAILABLE with it.
        assert_eq!(
            answers,
            vec![
                (1, Ok(10)),
                (2, Err(true)),
                (3000, Err(true)),
                (4, Err(true)),
                (5, Err(true))
            ]
        );
        assert_eq!(batches, vec![vec![1], vec![2, 3000]]);
    }

    #[tokio::test]
    async fn a_call_after_an_unavailable_batch_tries_the_store_again() {
        let coalescer = Arc::new(Coalescer::new(1, 128));
        let recorder = Recorder::default();
        assert!(
            coalescer
                .call(3000, recorder.runner())
                .await
                .unwrap_err()
                .is_unavailable()
        );
        assert_eq!(coalescer.call(3, recorder.runner()).await.unwrap(), 30);
        assert_eq!(recorder.batches(), vec![vec![3000], vec![3]]);
    }

    #[tokio::test]
    async fn a_caller_that_gives_up_is_skipped_and_the_others_are_answered() {
        let coalescer = Arc::new(Coalescer::new(1, 128));
        let (recorder, gate) = Recorder::gated();
        let first = tokio::spawn({
            let (coalescer, run) = (coalescer.clone(), recorder.runner());
            async move { coalescer.call(1, run).await }
        });
        until(|| recorder.batches().len() == 1).await;
        let gives_up = tokio::spawn({
            let (coalescer, run) = (coalescer.clone(), recorder.runner());
            async move { coalescer.call(2, run).await }
        });
        let stays = tokio::spawn({
            let (coalescer, run) = (coalescer.clone(), recorder.runner());
            async move { coalescer.call(3, run).await }
        });
        until(|| coalescer.lock().waiting.len() == 2).await;
        gives_up.abort();
        assert!(gives_up.await.unwrap_err().is_cancelled());
        gate.add_permits(2);
        assert_eq!(first.await.unwrap().unwrap(), 10);
        assert_eq!(stays.await.unwrap().unwrap(), 30);
        assert_eq!(
            recorder.batches(),
            vec![vec![1], vec![3]],
            "the abandoned key is not run"
        );
        assert_eq!(coalescer.stats("load").calls, 2, "nor counted");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thousands_of_calls_from_many_tasks_are_all_answered() {
        let coalescer = Arc::new(Coalescer::new(2, 16));
        let recorder = Recorder::default();
        let calls: Vec<_> = (0..4000u32)
            .map(|k| {
                let (coalescer, run) = (coalescer.clone(), recorder.runner());
                tokio::spawn(async move {
                    if k % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                    (k, coalescer.call(k % 1000, run).await)
                })
            })
            .collect();
        for call in calls {
            let (k, answer) = tokio::time::timeout(Duration::from_secs(30), call)
                .await
                .expect("every call is answered")
                .unwrap();
            assert_eq!(answer.unwrap(), (k % 1000) * 10);
        }
        // The last batch gives its slot back after its answers are sent: wait for it.
        until(|| coalescer.lock().running == 0).await;
        assert!(coalescer.lock().waiting.is_empty());
    }
}

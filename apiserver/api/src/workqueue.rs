//! A rate-limited work queue of keys for controllers (client-go's workqueue semantics).
//!
//! - A key waiting in the queue is there once, however often it is added.
//! - A key is handed to one worker at a time: added again while a worker holds it, it
//!   is queued only when that worker calls [`WorkQueue::done`].
//! - [`WorkQueue::add_rate_limited`] delays a key by the larger of its own exponential
//!   backoff (base · 2^failures, capped) and an overall token bucket, so a storm of
//!   failing keys cannot hammer the apiserver; [`WorkQueue::forget`] resets the backoff.
//! - Bounded: at most `capacity` distinct keys wait (queued or delayed); more are refused.
//!
//! Time comes from `tokio::time`, so tests run on paused time.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Sizes and rates of a queue.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Most distinct keys waiting (queued or delayed) at once.
    pub capacity: usize,
    /// Backoff of a key's first failure; doubles per failure.
    pub base_delay: Duration,
    /// Backoff cap.
    pub max_delay: Duration,
    /// Overall rate of rate-limited re-adds (token bucket refill, per second).
    pub qps: f64,
    /// Token bucket size.
    pub burst: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        // client-go's defaults for controllers, with a lower backoff cap.
        QueueConfig {
            capacity: 100_000,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_secs(300),
            qps: 10.0,
            burst: 100,
        }
    }
}

/// The queue refused a key: `capacity` keys are already waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("work queue full ({capacity} keys waiting)")]
pub struct QueueFull {
    pub capacity: usize,
}

/// A cheap-to-clone handle to one queue.
pub struct WorkQueue<K> {
    shared: Arc<Shared<K>>,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        WorkQueue {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<K> {
    state: Mutex<State<K>>,
    notify: Notify,
    config: QueueConfig,
}

struct State<K> {
    /// Keys ready for a worker, in order.
    queue: VecDeque<K>,
    /// Keys that must be processed (queued, or re-added while being processed).
    dirty: HashSet<K>,
    /// Keys a worker holds.
    processing: HashSet<K>,
    /// Delayed keys by (ready time, sequence) and each one's ready time.
    delayed: BTreeMap<(Instant, u64), K>,
    delayed_at: HashMap<K, (Instant, u64)>,
    seq: u64,
    /// Failures per key since its last `forget`.
    failures: HashMap<K, u32>,
    tokens: f64,
    tokens_at: Instant,
    shutting_down: bool,
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        let tokens = f64::from(config.burst);
        WorkQueue {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    queue: VecDeque::new(),
                    dirty: HashSet::new(),
                    processing: HashSet::new(),
                    delayed: BTreeMap::new(),
                    delayed_at: HashMap::new(),
                    seq: 0,
                    failures: HashMap::new(),
                    tokens,
                    tokens_at: Instant::now(),
                    shutting_down: false,
                }),
                notify: Notify::new(),
                config,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        // A worker that panicked while holding the lock leaves consistent state (every
        // change is a single collection update), so the poison is ignored.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waiting(state: &State<K>) -> usize {
        state.dirty.len() + state.delayed_at.len()
    }

    /// Queues a key now (no-op if it is already queued or after shutdown).
    pub fn add(&self, key: K) -> Result<(), QueueFull> {
        let mut st = self.lock();
        self.add_locked(&mut st, key)
    }

    fn add_locked(&self, st: &mut State<K>, key: K) -> Result<(), QueueFull> {
        if st.shutting_down || st.dirty.contains(&key) {
            return Ok(());
        }
        if Self::waiting(st) >= self.shared.config.capacity && !st.delayed_at.contains_key(&key) {
            return Err(QueueFull {
                capacity: self.shared.config.capacity,
            });
        }
        if let Some(at) = st.delayed_at.remove(&key) {
            st.delayed.remove(&at);
        }
        st.dirty.insert(key.clone());
        if !st.processing.contains(&key) {
            st.queue.push_back(key);
            self.shared.notify.notify_one();
        }
        Ok(())
    }

    /// Queues a key after `delay` (an earlier pending delay for it wins).
    pub fn add_after(&self, key: K, delay: Duration) -> Result<(), QueueFull> {
        if delay.is_zero() {
            return self.add(key);
        }
        let mut st = self.lock();
        if st.shutting_down || st.dirty.contains(&key) {
            return Ok(());
        }
        let ready = Instant::now() + delay;
        match st.delayed_at.get(&key) {
            Some((at, _)) if *at <= ready => return Ok(()),
            Some(old) => {
                let old = *old;
                st.delayed.remove(&old);
            }
            None => {
                if Self::waiting(&st) >= self.shared.config.capacity {
                    return Err(QueueFull {
                        capacity: self.shared.config.capacity,
                    });
                }
            }
        }
        st.seq += 1;
        let slot = (ready, st.seq);
        st.delayed.insert(slot, key.clone());
        st.delayed_at.insert(key, slot);
        // A worker asleep until a later deadline must re-plan.
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Queues a key after its backoff: max(per-key exponential, overall token bucket).
    pub fn add_rate_limited(&self, key: K) -> Result<(), QueueFull> {
        let delay = {
            let mut st = self.lock();
            let cfg = &self.shared.config;
            let failures = st.failures.entry(key.clone()).or_insert(0);
            let exp = 2u32.saturating_pow((*failures).min(31));
            *failures = failures.saturating_add(1);
            let per_key = cfg.base_delay.saturating_mul(exp).min(cfg.max_delay);
            // Token bucket: refill since the last reservation, then take one token; a
            // deficit is how long until that token exists.
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(st.tokens_at).as_secs_f64();
            st.tokens = (st.tokens + elapsed * cfg.qps).min(f64::from(cfg.burst));
            st.tokens_at = now;
            st.tokens -= 1.0;
            let bucket = if st.tokens >= 0.0 || cfg.qps <= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((-st.tokens / cfg.qps).min(cfg.max_delay.as_secs_f64()))
            };
            per_key.max(bucket)
        };
        self.add_after(key, delay)
    }

    /// Resets a key's failure count (after it was processed successfully).
    pub fn forget(&self, key: &K) {
        self.lock().failures.remove(key);
    }

    /// How often a key was re-added with backoff since its last `forget`.
    pub fn num_requeues(&self, key: &K) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The next key to process, waiting for one; `None` once shut down and drained.
    /// The caller must call [`WorkQueue::done`] with it when finished.
    pub async fn get(&self) -> Option<K> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Registered before looking, so a wake-up between the look and the wait
            // is not lost.
            notified.as_mut().enable();
            let next_ready = {
                let mut st = self.lock();
                let now = Instant::now();
                while let Some((&slot, _)) = st.delayed.first_key_value() {
                    if slot.0 > now {
                        break;
                    }
                    if let Some(key) = st.delayed.remove(&slot) {
                        st.delayed_at.remove(&key);
                        if !st.dirty.contains(&key) {
                            st.dirty.insert(key.clone());
                            if !st.processing.contains(&key) {
                                st.queue.push_back(key);
                            }
                        }
                    }
                }
                if let Some(key) = st.queue.pop_front() {
                    st.dirty.remove(&key);
                    st.processing.insert(key.clone());
                    if !st.queue.is_empty() {
                        // Pass the wake-up on to another idle worker.
                        self.shared.notify.notify_one();
                    }
                    return Some(key);
                }
                if st.shutting_down {
                    return None;
                }
                st.delayed.first_key_value().map(|(slot, _)| slot.0)
            };
            match next_ready {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks a key processed; if it was added meanwhile it is queued again now.
    pub fn done(&self, key: &K) {
        let mut st = self.lock();
        st.processing.remove(key);
        if st.dirty.contains(key) {
            st.queue.push_back(key.clone());
            self.shared.notify.notify_one();
        }
    }

    /// Stops accepting keys; `get` returns the keys still queued, then `None`.
    pub fn shut_down(&self) {
        self.lock().shutting_down = true;
        self.shared.notify.notify_waiters();
    }

    /// Keys queued and ready (not counting delayed or in-process ones).
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// No key is ready.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(capacity: usize) -> WorkQueue<String> {
        WorkQueue::new(QueueConfig {
            capacity,
            ..QueueConfig::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn keys_are_deduplicated_and_handed_out_in_order() {
        let q = queue(10);
        for k in ["a", "b", "a", "c", "b"] {
            q.add(k.to_string()).unwrap();
        }
        assert_eq!(q.len(), 3);
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(q.get().await.as_deref(), Some("b"));
        assert_eq!(q.get().await.as_deref(), Some("c"));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_being_processed_is_not_handed_out_again_until_done() {
        let q = queue(10);
        q.add("a".to_string()).unwrap();
        let k = q.get().await.unwrap();
        q.add("a".to_string()).unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(60), q.get())
                .await
                .is_err(),
            "a second worker must not get a key in process"
        );
        q.done(&k);
        assert_eq!(
            q.get().await.as_deref(),
            Some("a"),
            "the re-add is deferred, not lost"
        );
        q.done(&"a".to_string());
        assert!(
            tokio::time::timeout(Duration::from_secs(60), q.get())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_exponentially_and_forget_resets() {
        let q = WorkQueue::new(QueueConfig {
            base_delay: Duration::from_millis(100),
            ..QueueConfig::default()
        });
        let mut waited = Vec::new();
        for _ in 0..4 {
            let start = Instant::now();
            q.add_rate_limited("k").unwrap();
            let k = q.get().await.unwrap();
            waited.push(start.elapsed().as_millis());
            q.done(&k);
        }
        assert_eq!(waited, [100, 200, 400, 800]);
        assert_eq!(q.num_requeues(&"k"), 4);
        q.forget(&"k");
        let start = Instant::now();
        q.add_rate_limited("k").unwrap();
        q.get().await.unwrap();
        assert_eq!(start.elapsed().as_millis(), 100);
    }

    #[tokio::test(start_paused = true)]
    async fn the_token_bucket_limits_the_overall_rate() {
        let q = WorkQueue::new(QueueConfig {
            base_delay: Duration::from_millis(1),
            qps: 2.0,
            burst: 1,
            ..QueueConfig::default()
        });
        let start = Instant::now();
        for k in ["a", "b", "c"] {
            q.add_rate_limited(k).unwrap();
        }
        let mut at = Vec::new();
        for _ in 0..3 {
            let k = q.get().await.unwrap();
            at.push((k, start.elapsed().as_millis()));
            q.done(&k);
        }
        // One token at once, then one every 500 ms.
        assert_eq!(at, [("a", 1), ("b", 500), ("c", 1000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_delay_wins_and_an_add_cancels_the_delay() {
        let q = queue(10);
        q.add_after("a".to_string(), Duration::from_secs(10))
            .unwrap();
        q.add_after("a".to_string(), Duration::from_secs(2))
            .unwrap();
        q.add_after("a".to_string(), Duration::from_secs(5))
            .unwrap();
        let start = Instant::now();
        assert_eq!(q.get().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        q.done(&"a".to_string());
        q.add_after("b".to_string(), Duration::from_secs(10))
            .unwrap();
        q.add("b".to_string()).unwrap();
        assert_eq!(q.get().await.as_deref(), Some("b"));
        q.done(&"b".to_string());
        assert!(
            tokio::time::timeout(Duration::from_secs(60), q.get())
                .await
                .is_err(),
            "the cancelled delayed copy must not come back"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_queue_is_bounded() {
        let q = queue(2);
        q.add("a".to_string()).unwrap();
        q.add_after("b".to_string(), Duration::from_secs(1))
            .unwrap();
        assert_eq!(q.add("c".to_string()), Err(QueueFull { capacity: 2 }));
        assert!(
            q.add_after("c".to_string(), Duration::from_secs(1))
                .is_err()
        );
        // Keys already waiting can still be re-added.
        q.add("a".to_string()).unwrap();
        q.add("b".to_string()).unwrap();
        assert_eq!(q.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_then_ends_every_worker() {
        let q = queue(10);
        let worker = {
            let q = q.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some(k) = q.get().await {
                    q.done(&k);
                    got.push(k);
                }
                got
            })
        };
        q.add("a".to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        q.add("b".to_string()).unwrap();
        q.shut_down();
        q.add("ignored".to_string()).unwrap();
        assert_eq!(worker.await.unwrap(), ["a", "b"]);
    }
}

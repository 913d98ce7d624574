//! The scheduler: picks a node for every pod that has none and binds it there.
//!
//! One loop owns the [`cache::Cache`] and reads three sources: the pod informer (bound
//! pods are accounted on their node, unbound pods are queued), the node informer, and
//! the work queue of pods to place. For a queued pod it runs the filters ([`filter`]),
//! scores the nodes that fit ([`score`]), assumes the pod on the winner and hands the
//! binding to a bounded set of tasks ([`bind`]); a failed binding un-assumes the pod and
//! requeues it with backoff. A pod no node can take gets PodScheduled=False with the
//! reasons and a FailedScheduling event, and waits in the unschedulable set until a node
//! changes in a way that could matter or a pod frees resources; it is then requeued with
//! per-pod exponential backoff (and at the latest after `unschedulable_flush`).

pub mod bind;
pub mod cache;
pub mod filter;
pub mod resources;
pub mod score;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use api::{
    Client, Informer, InformerConfig, InformerEvent, ListParams, Node, Pod, QueueConfig, Store,
    WorkQueue, object_key,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use crate::meta::pod_is_terminal;
use bind::{Outcome, Work};
pub use score::Strategy;

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or empty) are ours.
    pub scheduler_name: String,
    pub strategy: Strategy,
    /// Bindings (and unschedulable status writes) in flight at once.
    pub bind_concurrency: usize,
    /// Unschedulable pods are retried at least this often even if nothing changed.
    pub unschedulable_flush: Duration,
    /// Backoff of a pod that failed to schedule or bind: first and largest delay.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Most pods waiting to be scheduled at once.
    pub queue_capacity: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: "default-scheduler".into(),
            strategy: Strategy::LeastAllocated,
            bind_concurrency: 256,
            unschedulable_flush: Duration::from_secs(60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            queue_capacity: 500_000,
        }
    }
}

/// Scheduled events written at once; more are dropped.
const EVENT_CONCURRENCY: usize = 32;

/// Whether this scheduler must place the pod: unbound, ours, alive.
fn needs_scheduling(pod: &Pod, scheduler_name: &str) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|n| n.is_empty() || n == scheduler_name)
        && pod.metadata.deletion_timestamp.is_none()
        && !pod_is_terminal(pod)
}

fn bound_node(pod: &Pod) -> Option<&str> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
}

/// Whether a node change may let an unschedulable pod fit (heartbeats change nothing
/// that matters, and there may be thousands of them a minute).
fn node_change_matters(old: &Node, new: &Node) -> bool {
    let alloc = |n: &Node| {
        n.status
            .as_ref()
            .map(|s| (s.allocatable.clone(), s.capacity.clone()))
    };
    old.metadata.labels != new.metadata.labels
        || old.spec != new.spec
        || alloc(old) != alloc(new)
        || filter::node_is_ready(old) != filter::node_is_ready(new)
}

struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    cache: cache::Cache,
    pods: Store<Pod>,
    queue: WorkQueue<String>,
    /// Pods that fit nowhere, waiting for a change.
    unschedulable: HashSet<String>,
    /// Pods whose binding is in flight (not to be placed again meanwhile).
    in_flight: HashSet<String>,
    permits: Arc<Semaphore>,
    /// Bounds the Scheduled events written at once (beyond: dropped).
    event_permits: Arc<Semaphore>,
    outcomes: mpsc::Sender<Outcome>,
}

/// Runs the scheduler until `shutdown` (e.g. the end of a leadership term).
pub async fn run(client: Client, config: SchedulerConfig, shutdown: CancellationToken) {
    let informer_config = InformerConfig::default();
    let (pod_informer, pods, mut pod_events) = Informer::<Pod, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        informer_config.clone(),
    );
    let (node_informer, nodes, mut node_events) = Informer::<Node, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        informer_config,
    );
    tokio::spawn(pod_informer.run(shutdown.clone()));
    tokio::spawn(node_informer.run(shutdown.clone()));

    let queue = WorkQueue::new(QueueConfig {
        capacity: config.queue_capacity,
        base_delay: config.backoff_initial,
        max_delay: config.backoff_max,
        qps: 100_000.0,
        burst: 100_000,
    });
    let (outcomes, mut outcome_rx) = mpsc::channel(1024);
    let mut s = Scheduler {
        client,
        permits: Arc::new(Semaphore::new(config.bind_concurrency.max(1))),
        event_permits: Arc::new(Semaphore::new(EVENT_CONCURRENCY)),
        config,
        cache: cache::Cache::default(),
        pods,
        queue: queue.clone(),
        unschedulable: HashSet::new(),
        in_flight: HashSet::new(),
        outcomes,
    };
    // Place nothing before both caches hold the whole cluster: a partial node list
    // would pack pods onto the first nodes listed.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { nodes.wait_synced().await; s.pods.wait_synced().await } => {}
    }
    let mut flush = tokio::time::interval(s.config.unschedulable_flush);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(strategy = ?s.config.strategy, "scheduler started");
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(ev) = node_events.recv() => s.on_node(ev),
            Some(outcome) = outcome_rx.recv() => s.on_outcome(outcome),
            Some(ev) = pod_events.recv() => s.on_pod(ev),
            Some(key) = queue.get() => {
                s.schedule(&key).await;
                queue.done(&key);
            }
            _ = flush.tick() => s.retry_unschedulable(),
        }
    }
    queue.shut_down();
    tracing::info!("scheduler stopped");
}

impl Scheduler {
    fn on_node(&mut self, ev: InformerEvent<Node>) {
        match ev {
            InformerEvent::Added(n) => {
                self.cache.set_node(n);
                self.retry_unschedulable();
            }
            InformerEvent::Updated { old, new } => {
                let matters = node_change_matters(&old, &new);
                self.cache.set_node(new);
                if matters {
                    self.retry_unschedulable();
                }
            }
            InformerEvent::Resync(n) => self.cache.set_node(n),
            InformerEvent::Deleted(n) => self
                .cache
                .remove_node(n.metadata.name.as_deref().unwrap_or("")),
        }
    }

    fn on_pod(&mut self, ev: InformerEvent<Pod>) {
        let (pod, deleted) = match ev {
            InformerEvent::Added(p) | InformerEvent::Resync(p) => (p, false),
            InformerEvent::Updated { new, .. } => (new, false),
            InformerEvent::Deleted(p) => (p, true),
        };
        let key = object_key(pod.as_ref());
        if deleted || pod_is_terminal(&pod) {
            let held = self.cache.node_of(&key).is_some();
            self.cache.remove_pod(&key);
            self.unschedulable.remove(&key);
            if held {
                // Resources were freed: a waiting pod may fit now.
                self.retry_unschedulable();
            }
            return;
        }
        if let Some(node) = bound_node(&pod) {
            match resources::pod_requests(&pod) {
                Ok(r) => self.cache.set_pod(&key, node, r),
                Err(e) => {
                    tracing::warn!(pod = %key, error = %e, "bound pod with unreadable requests")
                }
            }
            self.unschedulable.remove(&key);
            return;
        }
        if needs_scheduling(&pod, &self.config.scheduler_name)
            && !self.in_flight.contains(&key)
            && !self.unschedulable.contains(&key)
            && self.cache.node_of(&key).is_none()
            && let Err(e) = self.queue.add(key)
        {
            tracing::warn!(error = %e, "scheduling queue full");
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        self.in_flight.remove(&outcome.key);
        match outcome.result {
            Ok(()) => self.queue.forget(&outcome.key),
            Err(e) => {
                // Un-assume; the next event or the backoff retries it.
                if outcome.bound_to.is_some() {
                    self.cache.remove_pod(&outcome.key);
                }
                tracing::debug!(pod = %outcome.key, error = %e, "binding failed; retrying with backoff");
                if let Err(e) = self.queue.add_rate_limited(outcome.key) {
                    tracing::warn!(error = %e, "scheduling queue full");
                }
            }
        }
    }

    fn retry_unschedulable(&mut self) {
        for key in std::mem::take(&mut self.unschedulable) {
            if let Err(e) = self.queue.add_rate_limited(key) {
                tracing::warn!(error = %e, "scheduling queue full");
                break;
            }
        }
    }

    /// Places one pod (or records why it cannot be placed).
    async fn schedule(&mut self, key: &str) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        if !needs_scheduling(&pod, &self.config.scheduler_name)
            || self.in_flight.contains(key)
            || self.cache.node_of(key).is_some()
        {
            return;
        }
        let requests = match resources::pod_requests(&pod) {
            Ok(r) => r,
            Err(e) => {
                self.mark_unschedulable(key, pod, format!("invalid resource requests: {e}"))
                    .await;
                return;
            }
        };
        match self.cache.choose(&pod, &requests, self.config.strategy) {
            Ok(node) => {
                self.cache.set_pod(key, &node, requests);
                self.in_flight.insert(key.to_string());
                self.spawn(Work::Bind { pod, node }).await;
            }
            Err(message) => self.mark_unschedulable(key, pod, message).await,
        }
    }

    async fn mark_unschedulable(&mut self, key: &str, pod: Arc<Pod>, message: String) {
        tracing::debug!(pod = %key, %message, "unschedulable");
        self.unschedulable.insert(key.to_string());
        if bind::has_unschedulable_condition(&pod, &message) {
            return;
        }
        self.spawn(Work::Unschedulable { pod, message }).await;
    }

    async fn spawn(&self, work: Work) {
        // Waiting here (instead of queueing without bound) slows scheduling to the
        // apiserver's pace.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        let client = self.client.clone();
        let outcomes = self.outcomes.clone();
        let events = self.event_permits.clone();
        tokio::spawn(async move {
            let outcome = bind::perform(&client, work, &events).await;
            drop(permit);
            if let Some(o) = outcome {
                let _ = outcomes.send(o).await;
            }
        });
    }
}

//! The agent: owns one worker task per pod bound to the node, feeds them pod updates and
//! the runtime's container events, and sweeps orphans (containers of pods the node no
//! longer has, found by label) once it knows the full set of desired pods. Stopping the
//! agent stops its tasks but leaves the containers running, so the next agent adopts them.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api::k8s_openapi::api::core::v1::Pod;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backoff::BackoffConfig;
use crate::error::{AgentError, Result};
use crate::runtime::{ContainerRuntime, ListFilter, RuntimeEvent};
use crate::sink::StatusSink;
use crate::spec::PodKey;
use crate::worker::{PodWorker, WorkerContext, WorkerMsg};

/// Bound on queued commands to the agent and on queued updates to one worker.
const COMMAND_QUEUE: usize = 256;
const WORKER_QUEUE: usize = 16;
/// Wait before reopening a broken runtime event stream.
const EVENTS_RETRY: Duration = Duration::from_secs(1);

/// How an agent behaves.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node's name; containers carry it as a label, so agents sharing one Docker
    /// daemon never touch each other's containers.
    pub node_name: String,
    /// Reported as the pods' hostIP.
    pub host_ip: Option<IpAddr>,
    /// Every worker resyncs at least this often (the relist), events or not.
    pub resync_period: Duration,
    pub backoff: BackoffConfig,
    /// The most pods the agent runs at once; more are refused with an error.
    pub max_pods: usize,
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            host_ip: None,
            resync_period: Duration::from_secs(10),
            backoff: BackoffConfig::default(),
            max_pods: 110,
        }
    }
}

enum Command {
    /// The complete set of pods bound to the node.
    SetPods(Vec<Pod>),
    Shutdown(oneshot::Sender<()>),
}

struct WorkerHandle {
    tx: mpsc::Sender<WorkerMsg>,
    /// The resourceVersion of the pod last sent to the worker: an unchanged pod is not
    /// sent again (every complete set would otherwise wake every worker).
    sent_rv: Option<String>,
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

/// A running agent. Dropping it without `shutdown` stops it the same way.
pub struct Agent {
    tx: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
}

impl Agent {
    /// Starts the agent's loop on the current tokio runtime.
    pub fn start(
        runtime: Arc<dyn ContainerRuntime>,
        config: AgentConfig,
        sink: Arc<dyn StatusSink>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let http = reqwest::Client::builder()
            // Probes go straight to the pod, never through a proxy from the environment.
            .no_proxy()
            .build()
            .unwrap_or_default();
        let ctx = Arc::new(WorkerContext {
            runtime,
            config,
            sink,
            http,
        });
        let task = tokio::spawn(run(ctx, rx));
        Self {
            tx,
            task: Some(task),
        }
    }

    /// Declares the complete set of pods bound to this node (level-based: pods missing
    /// from the set are terminated). The first call also lets the orphan sweep begin.
    pub async fn set_pods(&self, pods: Vec<Pod>) -> Result<()> {
        self.tx
            .send(Command::SetPods(pods))
            .await
            .map_err(|_| AgentError::ShuttingDown)
    }

    /// Stops the agent's tasks, leaving the containers as they are.
    pub async fn shutdown(mut self) {
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(done_tx)).await.is_ok() {
            let _ = done_rx.await;
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct State {
    ctx: Arc<WorkerContext>,
    workers: HashMap<String, WorkerHandle>,
    /// Whether a complete pod set has arrived; before it, nothing is an orphan.
    synced: bool,
    /// Workers stopping their pod's containers: not orphans while they are at it.
    terminating: HashMap<String, WorkerHandle>,
}

async fn run(ctx: Arc<WorkerContext>, mut rx: mpsc::Receiver<Command>) {
    let mut state = State {
        ctx: ctx.clone(),
        workers: HashMap::new(),
        synced: false,
        terminating: HashMap::new(),
    };
    let mut events = open_events(&ctx).await;
    let mut relist = tokio::time::interval(ctx.config.resync_period);
    relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(Command::SetPods(pods)) => state.set_pods(pods),
                Some(Command::Shutdown(done)) => {
                    state.stop_workers().await;
                    let _ = done.send(());
                    return;
                }
                None => {
                    state.stop_workers().await;
                    return;
                }
            },
            event = next_event(&mut events) => match event {
                Some(event) => state.on_event(&event),
                None => {
                    tokio::time::sleep(EVENTS_RETRY).await;
                    events = open_events(&ctx).await;
                    // Events may have been missed meanwhile: every worker relists.
                    state.wake_all();
                }
            },
            _ = relist.tick() => state.relist().await,
        }
    }
}

async fn open_events(ctx: &WorkerContext) -> Option<BoxStream<'static, RuntimeEvent>> {
    match ctx.runtime.events(&ctx.config.node_name).await {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!(error = %e, "cannot open runtime events; relying on the relist");
            None
        }
    }
}

async fn next_event(events: &mut Option<BoxStream<'static, RuntimeEvent>>) -> Option<RuntimeEvent> {
    match events {
        Some(stream) => stream.next().await,
        None => None,
    }
}

impl State {
    fn set_pods(&mut self, pods: Vec<Pod>) {
        let mut desired = HashSet::new();
        for pod in pods {
            let key = match PodKey::of(&pod) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a pod");
                    continue;
                }
            };
            desired.insert(key.uid.clone());
            self.upsert(key, pod);
        }
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|uid| !desired.contains(*uid))
            .cloned()
            .collect();
        for uid in gone {
            if let Some(worker) = self.workers.remove(&uid) {
                // The worker stops and removes the containers, then ends by itself.
                terminate(&worker);
                self.terminating.insert(uid, worker);
            }
        }
        self.synced = true;
    }

    fn upsert(&mut self, key: PodKey, pod: Pod) {
        self.workers.retain(|_, w| !w.task.is_finished());
        if let Some(worker) = self.workers.get_mut(&key.uid) {
            let rv = pod.metadata.resource_version.clone();
            if rv.is_some() && rv == worker.sent_rv {
                return;
            }
            // A full queue means the worker is behind; the next set_pods brings it up to date.
            if worker.tx.try_send(WorkerMsg::Update(Box::new(pod))).is_ok() {
                worker.sent_rv = rv;
            }
            return;
        }
        if self.workers.len() >= self.ctx.config.max_pods {
            tracing::warn!(pod = %key, max_pods = self.ctx.config.max_pods, "node is full; not running the pod");
            return;
        }
        let (tx, rx) = mpsc::channel(WORKER_QUEUE);
        let sent_rv = pod.metadata.resource_version.clone();
        let wake = Arc::new(Notify::new());
        let worker = PodWorker::new(key.clone(), pod, self.ctx.clone(), wake.clone());
        let task = tokio::spawn(worker.run(rx));
        self.workers.insert(
            key.uid,
            WorkerHandle {
                tx,
                sent_rv,
                wake,
                task,
            },
        );
    }

    fn on_event(&self, event: &RuntimeEvent) {
        if let Some(worker) = event.pod_uid.as_ref().and_then(|uid| self.workers.get(uid)) {
            worker.wake.notify_one();
        }
    }

    fn wake_all(&self) {
        for worker in self.workers.values() {
            worker.wake.notify_one();
        }
    }

    /// Containers of this node whose pod has no worker, once the pod set is known: the
    /// pod was deleted while no agent ran. They are stopped with the grace period their
    /// labels carry and removed.
    async fn relist(&mut self) {
        self.workers.retain(|_, w| !w.task.is_finished());
        self.terminating.retain(|_, w| !w.task.is_finished());
        if !self.synced {
            return;
        }
        let filter = ListFilter {
            node_name: self.ctx.config.node_name.clone(),
            pod_uid: None,
        };
        let containers = match self.ctx.runtime.list(&filter).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "relist failed");
                return;
            }
        };
        for c in containers.into_iter().filter(|c| {
            !self.workers.contains_key(&c.labels.pod_uid)
                && !self.terminating.contains_key(&c.labels.pod_uid)
        }) {
            tracing::info!(container = %c.id, pod = %c.labels.pod_name, "removing an orphaned container");
            let runtime = self.ctx.runtime.clone();
            let grace = Duration::from_secs(c.labels.grace_s.into());
            // In the background, so a long grace period does not hold up the agent.
            tokio::spawn(async move {
                if c.state.is_running() {
                    runtime.stop(&c.id, grace).await.ok();
                }
                if let Err(e) = runtime.remove(&c.id).await {
                    tracing::warn!(container = %c.id, error = %e, "removing an orphan failed");
                }
            });
        }
    }

    async fn stop_workers(&mut self) {
        for (_, worker) in self.workers.drain() {
            worker.task.abort();
            let _ = worker.task.await;
        }
    }
}

fn terminate(worker: &WorkerHandle) {
    // Must arrive even when the worker's queue is full.
    let tx = worker.tx.clone();
    tokio::spawn(async move {
        let _ = tx.send(WorkerMsg::Terminate).await;
    });
}

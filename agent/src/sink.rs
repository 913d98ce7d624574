//! Where the pod workers send what they learn: a `StatusSink`. The apiserver writer (the
//! status subresource) will be one; `StatusBoard` is the in-memory one that keeps the
//! latest status per pod and lets tests and the standalone binary wait on changes.
//! Sinks must not block: workers call them in their sync loop.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use api::k8s_openapi::api::core::v1::PodStatus;
use tokio::sync::watch;

use crate::spec::PodKey;

/// Receives pod status changes and terminations. Calls must return quickly.
pub trait StatusSink: Send + Sync + 'static {
    /// The pod's status changed (only changes are sent).
    fn pod_status(&self, key: &PodKey, status: &PodStatus);
    /// The pod's containers are all stopped and removed after its deletion.
    fn pod_terminated(&self, key: &PodKey);
    /// Something worth an Event on the pod happened (`warning`: type Warning, else
    /// Normal), with the kubelet's reasons: Started, Killing, BackOff, Failed.
    fn pod_event(&self, _key: &PodKey, _warning: bool, _reason: &str, _message: &str) {}
}

#[derive(Default)]
struct Board {
    statuses: HashMap<PodKey, PodStatus>,
    terminated: HashSet<PodKey>,
}

/// The latest status of every pod, with change notification.
pub struct StatusBoard {
    board: Mutex<Board>,
    changes: watch::Sender<u64>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        Self {
            board: Mutex::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl StatusBoard {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Board> {
        self.board.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest status of the pod `namespace/name` (any uid).
    pub fn get(&self, namespace: &str, name: &str) -> Option<PodStatus> {
        self.lock()
            .statuses
            .iter()
            .find(|(k, _)| k.namespace == namespace && k.name == name)
            .map(|(_, s)| s.clone())
    }

    pub fn is_terminated(&self, namespace: &str, name: &str) -> bool {
        self.lock()
            .terminated
            .iter()
            .any(|k| k.namespace == namespace && k.name == name)
    }

    /// Waits until `done` holds for the pod's status, at most `timeout`; returns the last
    /// status seen either way (`Err` when the wait ran out).
    pub async fn wait_for(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        done: impl Fn(&PodStatus) -> bool,
    ) -> Result<PodStatus, Option<PodStatus>> {
        let mut rx = self.changes.subscribe();
        let wait = async {
            loop {
                if let Some(status) = self.get(namespace, name)
                    && done(&status)
                {
                    return status;
                }
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| self.get(namespace, name))
    }

    /// Waits until the pod is reported terminated, at most `timeout`.
    pub async fn wait_terminated(&self, namespace: &str, name: &str, timeout: Duration) -> bool {
        let mut rx = self.changes.subscribe();
        let wait = async {
            while !self.is_terminated(namespace, name) {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }
}

impl StatusSink for StatusBoard {
    fn pod_status(&self, key: &PodKey, status: &PodStatus) {
        self.lock().statuses.insert(key.clone(), status.clone());
        self.changes.send_modify(|n| *n += 1);
    }

    fn pod_terminated(&self, key: &PodKey) {
        {
            let mut board = self.lock();
            board.statuses.remove(key);
            board.terminated.insert(key.clone());
        }
        self.changes.send_modify(|n| *n += 1);
    }
}

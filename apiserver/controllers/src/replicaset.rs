//! The ReplicaSet controller: keeps `spec.replicas` active pods for every ReplicaSet.
//!
//! A sync counts the active pods the ReplicaSet controls (by the controller
//! ownerReference's uid), creates the missing ones from the template in slow-start
//! batches (1, 2, 4, ... so a template the apiserver refuses costs one call, not
//! hundreds), or deletes the surplus (unscheduled before scheduled, pending before
//! running, not ready before ready, newest first), then writes the status (replicas,
//! ready, available, observedGeneration). Expectations keep a sync that runs before the
//! watch shows its own writes from acting twice.

use std::cmp::Reverse;
use std::sync::Arc;
use std::time::Duration;

use api::{
    Client, DeleteParams, Informer, InformerConfig, InformerEvent, ListParams, ObjectMeta, Pod,
    PostParams, ReplicaSet, ReplicaSetStatus, Store, WorkQueue,
};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{Requeue, enqueue, queue_config, run_workers};
use crate::expectations::Expectations;
use crate::meta::{
    controller_of, controller_ref, is_controlled_by, pod_is_active, pod_is_available, pod_is_ready,
    selector_matches,
};

/// Most pod creations or deletions sent at once for one ReplicaSet.
pub const BURST_REPLICAS: usize = 500;
/// Workers syncing ReplicaSets in parallel.
const WORKERS: usize = 8;

/// What a ReplicaSet sync needs.
#[derive(Clone)]
pub struct ReplicaSetController {
    client: Client,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
    expectations: Arc<Expectations>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let cfg = InformerConfig::default();
    let (rs_inf, sets, mut rs_events) = Informer::<ReplicaSet, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        cfg.clone(),
    );
    let (pod_inf, pods, mut pod_events) =
        Informer::<Pod, _>::for_client(client.clone(), None, ListParams::default(), cfg);
    tokio::spawn(rs_inf.run(shutdown.clone()));
    tokio::spawn(pod_inf.run(shutdown.clone()));
    let c = ReplicaSetController {
        client,
        sets: sets.clone(),
        pods: pods.clone(),
        expectations: Arc::new(Expectations::new(Duration::from_secs(60))),
    };
    let queue: WorkQueue<String> = WorkQueue::new(queue_config());
    let q = queue.clone();
    let exp = c.expectations.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = rs_events.recv() => enqueue(&q, ev.key()),
                Some(ev) = pod_events.recv() => on_pod(&q, &exp, ev),
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { sets.wait_synced().await; pods.wait_synced().await } => {}
    }
    run_workers("replicaset", queue, WORKERS, shutdown, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

/// The `namespace/name` of the ReplicaSet controlling a pod.
fn owner_key(pod: &Pod) -> Option<String> {
    let r = controller_of(&pod.metadata).filter(|r| r.kind == "ReplicaSet")?;
    Some(api::key_of(pod.metadata.namespace.as_deref(), &r.name))
}

fn on_pod(queue: &WorkQueue<String>, exp: &Expectations, ev: InformerEvent<Pod>) {
    let (pod, added, deleted) = match &ev {
        InformerEvent::Added(p) => (p, true, false),
        InformerEvent::Deleted(p) => (p, false, true),
        InformerEvent::Updated { new, .. } => (new, false, false),
        InformerEvent::Resync(p) => (p, false, false),
    };
    let Some(key) = owner_key(pod) else { return };
    if added {
        exp.creation_observed(&key);
    }
    if deleted {
        exp.deletion_observed(&key);
    }
    enqueue(queue, key);
}

/// Slow-start batch sizes for `n` operations: 1, 2, 4, ... capped at [`BURST_REPLICAS`].
pub fn slow_start_batches(n: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = n.min(BURST_REPLICAS);
    let mut size = 1;
    while left > 0 {
        let b = size.min(left);
        out.push(b);
        left -= b;
        size *= 2;
    }
    out
}

/// Orders pods so the ones to delete first come first: unscheduled, then pending, then
/// not ready, then the most recently created.
pub fn deletion_order(pods: &mut [Arc<Pod>]) {
    let rank = |p: &Pod| {
        let bound = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Running") => 2,
            _ => 1,
        };
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        (bound, phase, pod_is_ready(p), Reverse(created))
    };
    pods.sort_by_key(|p| rank(p));
}

/// A new pod from the ReplicaSet's template, owned by it.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.metadata.name.as_deref().unwrap_or("rs"))),
            namespace: rs.metadata.namespace.clone(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            owner_references: Some(vec![controller_ref("ReplicaSet", "apps/v1", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// The status a ReplicaSet should show for its active pods.
pub fn compute_status(rs: &ReplicaSet, pods: &[Arc<Pod>], now: api::Timestamp) -> ReplicaSetStatus {
    let spec = rs.spec.as_ref();
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    let prior = rs.status.clone().unwrap_or_default();
    ReplicaSetStatus {
        replicas: pods.len() as i32,
        fully_labeled_replicas: Some(count(&|p: &Pod| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            template_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&|p: &Pod| pod_is_ready(p))),
        available_replicas: Some(count(&|p: &Pod| pod_is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: prior.conditions,
        terminating_replicas: prior.terminating_replicas,
    }
}

impl ReplicaSetController {
    /// The active pods `rs` controls.
    fn owned_pods(&self, rs: &ReplicaSet) -> Vec<Arc<Pod>> {
        let ns = rs.metadata.namespace.as_deref();
        let uid = rs.metadata.uid.as_deref();
        self.pods
            .list()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == ns)
            .filter(|p| is_controlled_by(&p.metadata, uid) && pod_is_active(p))
            .collect()
    }

    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let Some(rs) = self.sets.get(key) else {
            self.expectations.remove(key);
            return Ok(None);
        };
        let selector = rs
            .spec
            .as_ref()
            .map(|s| s.selector.clone())
            .unwrap_or_default();
        if let Err(e) = selector_matches(&selector, None) {
            return Err(Error::invalid("ReplicaSet", key, e));
        }
        let mut pods = self.owned_pods(&rs);
        let mut manage_error = None;
        if rs.metadata.deletion_timestamp.is_none() && self.expectations.satisfied(key) {
            let want = rs
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1)
                .max(0) as usize;
            if pods.len() < want {
                manage_error = self.create_pods(key, &rs, want - pods.len()).await.err();
            } else if pods.len() > want {
                deletion_order(&mut pods);
                let surplus: Vec<Arc<Pod>> = pods.drain(..pods.len() - want).collect();
                manage_error = self.delete_pods(key, &surplus).await.err();
            }
        }
        let now = api::now();
        let status = compute_status(&rs, &pods, now);
        let ready_not_available = status.ready_replicas != status.available_replicas;
        if rs.status.as_ref() != Some(&status) {
            let mut updated = (*rs).clone();
            updated.status = Some(status);
            self.client
                .update_status(&updated, &PostParams::default())
                .await?;
        }
        if let Some(e) = manage_error {
            return Err(e);
        }
        // Pods ready but inside minReadySeconds become available later: look again.
        Ok(ready_not_available.then(|| Duration::from_secs(1)))
    }

    async fn create_pods(&self, key: &str, rs: &ReplicaSet, n: usize) -> Result<(), Error> {
        let batches = slow_start_batches(n);
        let total: usize = batches.iter().sum();
        self.expectations.expect(key, total as i64, 0);
        let pod = pod_from_template(rs);
        let params = PostParams::default();
        let mut sent = 0;
        for size in batches {
            let calls = (0..size).map(|_| self.client.create(&pod, &params));
            let results = futures::future::join_all(calls).await;
            sent += size;
            let mut first_error = None;
            for r in results {
                if let Err(e) = r {
                    // Never created: it will never be observed.
                    self.expectations.creation_observed(key);
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                for _ in sent..total {
                    self.expectations.creation_observed(key);
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn delete_pods(&self, key: &str, pods: &[Arc<Pod>]) -> Result<(), Error> {
        let pods = &pods[..pods.len().min(BURST_REPLICAS)];
        self.expectations.expect(key, 0, pods.len() as i64);
        let calls = pods.iter().map(|p| {
            let params = DeleteParams {
                precondition_uid: p.metadata.uid.clone(),
                ..Default::default()
            };
            let ns = p.metadata.namespace.clone();
            let name = p.metadata.name.clone().unwrap_or_default();
            async move {
                self.client
                    .delete::<Pod>(ns.as_deref(), &name, &params)
                    .await
            }
        });
        let mut first_error = None;
        for r in futures::future::join_all(calls).await {
            match r {
                Ok(_) => {}
                Err(e) if e.is_not_found() => self.expectations.deletion_observed(key),
                Err(e) => {
                    self.expectations.deletion_observed(key);
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{PodCondition, PodSpec, PodStatus, ReplicaSetSpec, Time};

    #[test]
    fn slow_start_doubles_up_to_the_burst() {
        assert_eq!(slow_start_batches(0), Vec::<usize>::new());
        assert_eq!(slow_start_batches(1), vec![1]);
        assert_eq!(slow_start_batches(10), vec![1, 2, 4, 3]);
        assert_eq!(
            slow_start_batches(10_000).iter().sum::<usize>(),
            BURST_REPLICAS
        );
    }

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created_s: i64) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(api::Timestamp::from_second(created_s).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn surplus_pods_are_deleted_least_useful_first() {
        let mut pods = vec![
            pod("running-old", Some("n"), "Running", true, 100),
            pod("running-new", Some("n"), "Running", true, 200),
            pod("unbound", None, "Pending", false, 50),
            pod("pending", Some("n"), "Pending", false, 300),
            pod("notready", Some("n"), "Running", false, 10),
        ];
        deletion_order(&mut pods);
        let names: Vec<_> = pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "unbound",
                "pending",
                "notready",
                "running-new",
                "running-old"
            ]
        );
    }

    #[test]
    fn pods_from_the_template_carry_the_owner_and_labels() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("ns".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                template: Some(api::PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "web".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec::default()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod_from_template(&rs);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        assert_eq!(p.metadata.namespace.as_deref(), Some("ns"));
        assert!(is_controlled_by(&p.metadata, Some("u-1")));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
    }

    #[test]
    fn status_counts_ready_and_available() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                generation: Some(3),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                min_ready_seconds: Some(10),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut ready_long_ago = (*pod("a", Some("n"), "Running", true, 0)).clone();
        ready_long_ago
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_transition_time = Some(Time(api::Timestamp::from_second(0).unwrap()));
        let mut ready_now = ready_long_ago.clone();
        ready_now
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_transition_time = Some(Time(api::Timestamp::from_second(995).unwrap()));
        let pods = vec![
            Arc::new(ready_long_ago),
            Arc::new(ready_now),
            pod("c", None, "Pending", false, 0),
        ];
        let s = compute_status(&rs, &pods, api::Timestamp::from_second(1000).unwrap());
        assert_eq!(s.replicas, 3);
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(
            s.available_replicas,
            Some(1),
            "one pod is ready for only 5 of 10 s"
        );
        assert_eq!(s.observed_generation, Some(3));
    }
}

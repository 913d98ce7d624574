//! The garbage collector: dependents by `metadata.ownerReferences`, as Kubernetes'.
//!
//! It keeps a graph of every object of the watched kinds (uid → owners, finalizers,
//! deletion mark; owner uid → dependents), fed by one informer per kind, and works a
//! queue of uids:
//!
//! - **Background** (the default): an object all of whose owners are gone is deleted.
//!   "Gone" is checked against the API before acting (an owner not in the graph is
//!   fetched; it is gone only if the server says 404 or a different uid lives under
//!   its name), and remembered (uids are never reused).
//! - **Foreground** (`foregroundDeletion` finalizer, set by the apiserver for
//!   `propagationPolicy: Foreground`): the owner's dependents are deleted; once no
//!   dependent with `blockOwnerDeletion: true` is left, the finalizer is removed, which
//!   lets the apiserver remove the owner.
//! - **Orphan** (`orphan` finalizer, `propagationPolicy: Orphan`): the owner's reference
//!   is removed from every dependent, then the finalizer, and the owner goes.
//!
//! A dependent that still has a live owner keeps living; references to owners that are
//! gone or being deleted in the foreground are then removed from it, as Kubernetes does.
//! Every write is a JSON patch guarded by a `test` of the uid (and of the
//! resourceVersion for finalizer changes) or a DELETE with a uid precondition, so a
//! stale graph leads to a refused write and a retry, never to touching the wrong object.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::{
    Client, ClusterRole, ClusterRoleBinding, ConfigMap, Deployment, Endpoints, Informer,
    InformerConfig, InformerEvent, Lease, ListParams, Namespace, Node, Object, ObjectMeta,
    OwnerReference, Pod, ReplicaSet, Role, RoleBinding, Secret, Service, ServiceAccount, WorkQueue,
};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{Requeue, enqueue, queue_config, run_workers};
use crate::discovery::{self, Resources};

const WORKERS: usize = 8;
/// The finalizers the collector acts on.
pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";
/// Most owner uids remembered as gone.
const ABSENT_CAP: usize = 1_000_000;

/// One object as the graph sees it.
#[derive(Debug, Clone)]
struct GraphNode {
    api_version: String,
    kind: String,
    namespace: Option<String>,
    name: String,
    resource_version: String,
    owners: Vec<OwnerReference>,
    finalizers: Vec<String>,
    deleting: bool,
}

impl GraphNode {
    fn from_meta(api_version: &str, kind: &str, m: &ObjectMeta) -> Self {
        GraphNode {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
            namespace: m.namespace.clone().filter(|n| !n.is_empty()),
            name: m.name.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone().unwrap_or_default(),
            owners: m.owner_references.clone().unwrap_or_default(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
        }
    }

    fn has_finalizer(&self, f: &str) -> bool {
        self.finalizers.iter().any(|x| x == f)
    }
}

#[derive(Default)]
struct Graph {
    nodes: HashMap<String, GraphNode>,
    /// owner uid → uids of objects that name it.
    dependents: HashMap<String, HashSet<String>>,
    /// uids known to be gone for good.
    absent: HashSet<String>,
}

impl Graph {
    fn dependents_of(&self, uid: &str) -> Vec<(String, GraphNode)> {
        self.dependents
            .get(uid)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    fn unlink(&mut self, uid: &str, owners: &[OwnerReference]) {
        for o in owners {
            if let Some(set) = self.dependents.get_mut(&o.uid) {
                set.remove(uid);
                if set.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
    }

    /// Applies a change; returns the uids to look at.
    fn apply(&mut self, change: Change) -> Vec<String> {
        let mut wake = Vec::new();
        match change {
            Change::Upsert(uid, node) => {
                let old_owners = self
                    .nodes
                    .get(&uid)
                    .map(|n| n.owners.clone())
                    .unwrap_or_default();
                self.unlink(&uid, &old_owners);
                for o in &node.owners {
                    self.dependents
                        .entry(o.uid.clone())
                        .or_default()
                        .insert(uid.clone());
                }
                // Owners this object stopped naming may have been waiting for it.
                for o in &old_owners {
                    if !node.owners.iter().any(|n| n.uid == o.uid) {
                        wake.push(o.uid.clone());
                    }
                }
                let interesting = !node.owners.is_empty()
                    || (node.deleting
                        && (node.has_finalizer(FOREGROUND) || node.has_finalizer(ORPHAN)));
                if interesting {
                    wake.push(uid.clone());
                }
                self.nodes.insert(uid, node);
            }
            Change::Delete(uid) => {
                if let Some(node) = self.nodes.remove(&uid) {
                    self.unlink(&uid, &node.owners);
                    // A foreground-deleting owner may have waited for this one.
                    wake.extend(node.owners.iter().map(|o| o.uid.clone()));
                }
                if self.absent.len() >= ABSENT_CAP {
                    self.absent.clear();
                }
                self.absent.insert(uid.clone());
                // Its dependents may now be orphans.
                wake.extend(self.dependents.get(&uid).into_iter().flatten().cloned());
            }
        }
        wake
    }
}

enum Change {
    Upsert(String, GraphNode),
    Delete(String),
}

/// Feeds one kind's informer into the graph channel.
fn watch_kind<T: Object>(
    client: &Client,
    tx: mpsc::Sender<Change>,
    synced: &mut Vec<api::Store<T>>,
    shutdown: &CancellationToken,
) {
    let (inf, store, mut events) = Informer::<T, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        InformerConfig::default(),
    );
    tokio::spawn(inf.run(shutdown.clone()));
    synced.push(store);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = events.recv() => match ev { Some(ev) => ev, None => return },
            };
            let change = match ev {
                InformerEvent::Added(o)
                | InformerEvent::Resync(o)
                | InformerEvent::Updated { new: o, .. } => {
                    let m = o.metadata();
                    let Some(uid) = m.uid.clone() else { continue };
                    Change::Upsert(uid, GraphNode::from_meta(T::API_VERSION, T::KIND, m))
                }
                InformerEvent::Deleted(o) => {
                    let Some(uid) = o.metadata().uid.clone() else {
                        continue;
                    };
                    Change::Delete(uid)
                }
            };
            if tx.send(change).await.is_err() {
                return;
            }
        }
    });
}

async fn wait_all<T>(stores: Vec<api::Store<T>>) {
    for s in stores {
        s.wait_synced().await;
    }
}

#[derive(Clone)]
struct Collector {
    client: Client,
    graph: Arc<Mutex<Graph>>,
    resources: Arc<Resources>,
}

/// Runs the collector until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let resources = loop {
        match Resources::discover(&client).await {
            Ok(r) => break r,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                }
            }
        }
    };
    let (tx, mut rx) = mpsc::channel::<Change>(4096);
    // Every kind the server serves that can own or be owned (Events are left out:
    // many, short-lived, and never owners).
    let (mut a, mut b, mut c, mut d, mut e, mut f, mut g) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut h, mut i, mut j, mut k, mut l, mut m, mut n, mut o) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    watch_kind::<Pod>(&client, tx.clone(), &mut a, &shutdown);
    watch_kind::<ReplicaSet>(&client, tx.clone(), &mut b, &shutdown);
    watch_kind::<Deployment>(&client, tx.clone(), &mut c, &shutdown);
    watch_kind::<Service>(&client, tx.clone(), &mut d, &shutdown);
    watch_kind::<Endpoints>(&client, tx.clone(), &mut e, &shutdown);
    watch_kind::<ServiceAccount>(&client, tx.clone(), &mut f, &shutdown);
    watch_kind::<Lease>(&client, tx.clone(), &mut g, &shutdown);
    watch_kind::<Node>(&client, tx.clone(), &mut h, &shutdown);
    watch_kind::<Namespace>(&client, tx.clone(), &mut i, &shutdown);
    watch_kind::<Role>(&client, tx.clone(), &mut j, &shutdown);
    watch_kind::<RoleBinding>(&client, tx.clone(), &mut k, &shutdown);
    watch_kind::<ClusterRole>(&client, tx.clone(), &mut l, &shutdown);
    watch_kind::<ClusterRoleBinding>(&client, tx.clone(), &mut m, &shutdown);
    watch_kind::<ConfigMap>(&client, tx.clone(), &mut n, &shutdown);
    watch_kind::<Secret>(&client, tx.clone(), &mut o, &shutdown);
    drop(tx);

    let graph = Arc::new(Mutex::new(Graph::default()));
    let queue: WorkQueue<String> = WorkQueue::new(queue_config());
    {
        let graph = graph.clone();
        let q = queue.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = stop.cancelled() => return,
                    c = rx.recv() => match c { Some(c) => c, None => return },
                };
                let wake = graph
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .apply(change);
                for uid in wake {
                    enqueue(&q, uid);
                }
            }
        });
    }
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async {
            wait_all(a).await; wait_all(b).await; wait_all(c).await; wait_all(d).await;
            wait_all(e).await; wait_all(f).await; wait_all(g).await; wait_all(h).await;
            wait_all(i).await; wait_all(j).await; wait_all(k).await; wait_all(l).await;
            wait_all(m).await; wait_all(n).await; wait_all(o).await;
        } => {}
    }
    tracing::info!("garbage collector synced");
    let collector = Collector {
        client,
        graph,
        resources: Arc::new(resources),
    };
    run_workers("garbagecollector", queue, WORKERS, shutdown, move |uid| {
        let c = collector.clone();
        async move { c.sync(&uid).await }
    })
    .await;
}

/// What an owner reference points at, as far as we can tell.
#[derive(Debug, PartialEq, Eq)]
enum OwnerState {
    /// Exists and is not being deleted in the foreground.
    Solid,
    /// Exists, with deletionTimestamp and the `foregroundDeletion` finalizer.
    Waiting,
    /// Gone (404, or another uid under its name).
    Dangling,
}

impl Collector {
    fn node(&self, uid: &str) -> Option<GraphNode> {
        self.graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .nodes
            .get(uid)
            .cloned()
    }

    fn dependents(&self, uid: &str) -> Vec<(String, GraphNode)> {
        self.graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dependents_of(uid)
    }

    fn has_dependents(&self, uid: &str) -> bool {
        self.graph
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dependents
            .get(uid)
            .is_some_and(|s| !s.is_empty())
    }

    fn path_of(&self, node: &GraphNode) -> Result<String, Error> {
        let r = self
            .resources
            .by_kind(&node.api_version, &node.kind)
            .ok_or_else(|| {
                Error::invalid(
                    "object",
                    &node.name,
                    format!("{} {} is not served", node.api_version, node.kind),
                )
            })?;
        Ok(r.object_path(node.namespace.as_deref(), &node.name))
    }

    async fn sync(&self, uid: &str) -> Result<Requeue, Error> {
        let Some(node) = self.node(uid) else {
            return Ok(None);
        };
        if node.deleting {
            if node.has_finalizer(ORPHAN) {
                return self.orphan_dependents(uid, &node).await;
            }
            if node.has_finalizer(FOREGROUND) {
                return self.delete_dependents_first(uid, &node).await;
            }
            return Ok(None);
        }
        if node.owners.is_empty() {
            return Ok(None);
        }
        let mut states = Vec::new();
        for o in &node.owners {
            states.push(self.owner_state(o, node.namespace.as_deref()).await?);
        }
        let solid = states.contains(&OwnerState::Solid);
        let waiting = states.contains(&OwnerState::Waiting);
        let path = self.path_of(&node)?;
        if solid {
            if states.iter().all(|s| *s == OwnerState::Solid) {
                return Ok(None);
            }
            // Keep the live owners only.
            let keep: Vec<&OwnerReference> = node
                .owners
                .iter()
                .zip(&states)
                .filter(|(_, s)| **s == OwnerState::Solid)
                .map(|(o, _)| o)
                .collect();
            self.set_owners(&path, uid, &keep).await?;
            return Ok(None);
        }
        // No live owner: the object goes; in the foreground when an owner is being
        // deleted in the foreground and this object has dependents of its own.
        let policy = if waiting && self.has_dependents(uid) {
            Some("Foreground")
        } else {
            None
        };
        tracing::debug!(%path, ?policy, "deleting an object whose owners are gone");
        discovery::delete(&self.client, &path, uid, policy).await?;
        Ok(None)
    }

    async fn owner_state(
        &self,
        owner: &OwnerReference,
        namespace: Option<&str>,
    ) -> Result<OwnerState, Error> {
        {
            let g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
            if g.absent.contains(&owner.uid) {
                return Ok(OwnerState::Dangling);
            }
            if let Some(n) = g.nodes.get(&owner.uid) {
                return Ok(if n.deleting && n.has_finalizer(FOREGROUND) {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                });
            }
        }
        // Not in the graph: ask the server (the graph may lag behind a new owner).
        let Some(r) = self.resources.by_kind(&owner.api_version, &owner.kind) else {
            // A kind discovery does not know cannot be checked: never delete on a guess
            // (Kubernetes' collector, too, leaves such dependents alone).
            tracing::debug!(kind = %owner.kind, api_version = %owner.api_version, "owner of an unknown kind; left alone");
            return Ok(OwnerState::Solid);
        };
        let ns = if r.namespaced { namespace } else { None };
        let live = discovery::get(&self.client, &r.object_path(ns, &owner.name)).await?;
        let state = match live {
            Some(o) if o.pointer("/metadata/uid").and_then(Value::as_str) == Some(&owner.uid) => {
                let deleting = o.pointer("/metadata/deletionTimestamp").is_some();
                let fg = o
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|f| f.as_str() == Some(FOREGROUND)));
                if deleting && fg {
                    OwnerState::Waiting
                } else {
                    OwnerState::Solid
                }
            }
            _ => OwnerState::Dangling,
        };
        if state == OwnerState::Dangling {
            let mut g = self.graph.lock().unwrap_or_else(|p| p.into_inner());
            if g.absent.len() >= ABSENT_CAP {
                g.absent.clear();
            }
            g.absent.insert(owner.uid.clone());
        }
        Ok(state)
    }

    /// Replaces an object's ownerReferences, guarded by its uid.
    async fn set_owners(
        &self,
        path: &str,
        uid: &str,
        owners: &[&OwnerReference],
    ) -> Result<(), Error> {
        let mut ops = vec![json!({"op": "test", "path": "/metadata/uid", "value": uid})];
        if owners.is_empty() {
            ops.push(json!({"op": "remove", "path": "/metadata/ownerReferences"}));
        } else {
            ops.push(
                json!({"op": "replace", "path": "/metadata/ownerReferences", "value": owners}),
            );
        }
        match discovery::json_patch(&self.client, path, &Value::Array(ops)).await {
            Ok(_) => Ok(()),
            Err(Error::Api(api::Error::Api(a))) if a.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes `finalizer` from an object, guarded by its resourceVersion.
    async fn remove_finalizer(
        &self,
        uid: &str,
        node: &GraphNode,
        finalizer: &str,
    ) -> Result<(), Error> {
        let path = self.path_of(node)?;
        let rest: Vec<&String> = node.finalizers.iter().filter(|f| *f != finalizer).collect();
        let ops = json!([
            {"op": "test", "path": "/metadata/uid", "value": uid},
            {"op": "test", "path": "/metadata/resourceVersion", "value": node.resource_version},
            {"op": "replace", "path": "/metadata/finalizers", "value": rest},
        ]);
        match discovery::json_patch(&self.client, &path, &ops).await {
            Ok(_) => Ok(()),
            Err(Error::Api(api::Error::Api(a))) if a.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Orphan: drop the owner's reference from every dependent, then the finalizer.
    async fn orphan_dependents(&self, uid: &str, node: &GraphNode) -> Result<Requeue, Error> {
        for (dep_uid, dep) in self.dependents(uid) {
            let keep: Vec<&OwnerReference> = dep.owners.iter().filter(|o| o.uid != uid).collect();
            self.set_owners(&self.path_of(&dep)?, &dep_uid, &keep)
                .await?;
        }
        // The graph learns of the patches through the watch; the finalizer goes only
        // once it shows no dependent left (a later sync if not yet).
        if !self.dependents(uid).is_empty() {
            return Ok(Some(Duration::from_millis(200)));
        }
        self.remove_finalizer(uid, node, ORPHAN).await?;
        Ok(None)
    }

    /// Foreground: delete the dependents; drop the finalizer once none that blocks is
    /// left.
    async fn delete_dependents_first(&self, uid: &str, node: &GraphNode) -> Result<Requeue, Error> {
        let deps = self.dependents(uid);
        let mut blocking = 0;
        for (dep_uid, dep) in &deps {
            let blocks = dep
                .owners
                .iter()
                .any(|o| o.uid == uid && o.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if dep.deleting {
                continue;
            }
            // A dependent with another live owner is not ours to delete: only the
            // reference goes (handled by its own sync, woken here).
            let policy = if self.has_dependents(dep_uid) {
                Some("Foreground")
            } else {
                None
            };
            let mut other_live_owner = false;
            for o in dep.owners.iter().filter(|o| o.uid != uid) {
                if self.owner_state(o, dep.namespace.as_deref()).await? == OwnerState::Solid {
                    other_live_owner = true;
                }
            }
            if other_live_owner {
                let keep: Vec<&OwnerReference> =
                    dep.owners.iter().filter(|o| o.uid != uid).collect();
                self.set_owners(&self.path_of(dep)?, dep_uid, &keep).await?;
                continue;
            }
            discovery::delete(&self.client, &self.path_of(dep)?, dep_uid, policy).await?;
        }
        if blocking > 0 {
            // Woken again when a dependent goes; the delay is only a safety net.
            return Ok(Some(Duration::from_secs(5)));
        }
        self.remove_finalizer(uid, node, FOREGROUND).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            block_owner_deletion: Some(block),
            controller: Some(true),
        }
    }

    fn node(owners: Vec<OwnerReference>, finalizers: &[&str], deleting: bool) -> GraphNode {
        GraphNode {
            api_version: "v1".into(),
            kind: "Pod".into(),
            namespace: Some("default".into()),
            name: "p".into(),
            resource_version: "1".into(),
            owners,
            finalizers: finalizers.iter().map(|s| s.to_string()).collect(),
            deleting,
        }
    }

    #[test]
    fn graph_links_dependents_and_wakes_them_when_the_owner_goes() {
        let mut g = Graph::default();
        let wake = g.apply(Change::Upsert("rs".into(), node(vec![], &[], false)));
        assert!(wake.is_empty(), "an ownerless live object needs no work");
        let wake = g.apply(Change::Upsert(
            "p1".into(),
            node(vec![owner("rs", true)], &[], false),
        ));
        assert_eq!(wake, vec!["p1".to_string()]);
        g.apply(Change::Upsert(
            "p2".into(),
            node(vec![owner("rs", true)], &[], false),
        ));
        assert_eq!(g.dependents_of("rs").len(), 2);
        let mut wake = g.apply(Change::Delete("rs".into()));
        wake.sort();
        assert_eq!(wake, vec!["p1".to_string(), "p2".to_string()]);
        assert!(g.absent.contains("rs"));
    }

    #[test]
    fn a_dependent_going_wakes_its_foreground_owner() {
        let mut g = Graph::default();
        let wake = g.apply(Change::Upsert(
            "rs".into(),
            node(vec![], &[FOREGROUND], true),
        ));
        assert_eq!(wake, vec!["rs".to_string()]);
        g.apply(Change::Upsert(
            "p1".into(),
            node(vec![owner("rs", true)], &[], false),
        ));
        let wake = g.apply(Change::Delete("p1".into()));
        assert_eq!(wake, vec!["rs".to_string()]);
        assert!(g.dependents_of("rs").is_empty());
        // A reference removed (orphaning) also wakes the former owner.
        g.apply(Change::Upsert(
            "p2".into(),
            node(vec![owner("rs", true)], &[], false),
        ));
        let wake = g.apply(Change::Upsert("p2".into(), node(vec![], &[], false)));
        assert_eq!(wake, vec!["rs".to_string()]);
        assert!(g.dependents_of("rs").is_empty());
    }
}

//! The Deployment controller: one ReplicaSet per pod template, named
//! `<deployment>-<pod-template-hash>`, and the move from the old ones to the new one.
//!
//! A sync finds the ReplicaSets the Deployment controls (controller ownerReference
//! uid), picks the one whose template equals the Deployment's (ignoring the hash label)
//! as the new one — creating it, with the next revision, if none does, or giving an old
//! one the next revision when a rollback (`kubectl rollout undo` copies an old
//! template back) made it current again — then scales: RollingUpdate by the steps of
//! [`crate::rollout`], Recreate by scaling the old ones to zero and waiting until their
//! pods are gone before scaling the new one up. It deletes old empty ReplicaSets beyond
//! `revisionHistoryLimit`, sets the Deployment's revision annotation and writes the
//! status ([`status`]). Every ReplicaSet write carries its resourceVersion, so a sync
//! that acted on a stale cache is refused and retried rather than acting twice.

pub mod status;

use std::sync::Arc;
use std::time::Duration;

use api::{
    Client, DeleteParams, Deployment, Informer, InformerConfig, InformerEvent, LabelSelector,
    ListParams, ObjectMeta, Patch, Pod, PostParams, ReplicaSet, ReplicaSetSpec, Store, WorkQueue,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{Requeue, enqueue, queue_config, run_workers};
use crate::meta::{controller_of, controller_ref, is_controlled_by, selector_matches};
use crate::rollout::{
    self, HASH_LABEL, REVISION_ANNOTATION, SetCounts, equal_ignoring_hash, revision, template_hash,
};

const WORKERS: usize = 4;

/// What a Deployment sync needs.
#[derive(Clone)]
pub struct DeploymentController {
    client: Client,
    deployments: Store<Deployment>,
    sets: Store<ReplicaSet>,
    pods: Store<Pod>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let cfg = InformerConfig::default();
    let (d_inf, deployments, mut d_events) = Informer::<Deployment, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        cfg.clone(),
    );
    let (rs_inf, sets, mut rs_events) = Informer::<ReplicaSet, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        cfg.clone(),
    );
    let (pod_inf, pods, mut pod_events) =
        Informer::<Pod, _>::for_client(client.clone(), None, ListParams::default(), cfg);
    tokio::spawn(d_inf.run(shutdown.clone()));
    tokio::spawn(rs_inf.run(shutdown.clone()));
    tokio::spawn(pod_inf.run(shutdown.clone()));
    let queue: WorkQueue<String> = WorkQueue::new(queue_config());
    let q = queue.clone();
    let stop = shutdown.clone();
    let rs_store = sets.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = d_events.recv() => enqueue(&q, ev.key()),
                Some(ev) = rs_events.recv() => {
                    if let Some(k) = owner_key(&rs_meta(&ev)) { enqueue(&q, k) }
                }
                Some(ev) = pod_events.recv() => {
                    // Recreate waits for old pods to be gone: a pod deletion of a
                    // ReplicaSet we control wakes its Deployment.
                    if let InformerEvent::Deleted(p) = ev
                        && let Some(r) = controller_of(&p.metadata)
                        && let Some(rs) = rs_store.get(&api::key_of(p.metadata.namespace.as_deref(), &r.name))
                        && let Some(k) = owner_key(&rs.metadata)
                    {
                        enqueue(&q, k)
                    }
                }
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async {
            deployments.wait_synced().await;
            sets.wait_synced().await;
            pods.wait_synced().await;
        } => {}
    }
    let c = DeploymentController {
        client,
        deployments,
        sets,
        pods,
    };
    run_workers("deployment", queue, WORKERS, shutdown, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

fn rs_meta(ev: &InformerEvent<ReplicaSet>) -> ObjectMeta {
    match ev {
        InformerEvent::Added(o)
        | InformerEvent::Deleted(o)
        | InformerEvent::Resync(o)
        | InformerEvent::Updated { new: o, .. } => o.metadata.clone(),
    }
}

/// The `namespace/name` of the Deployment controlling an object.
fn owner_key(meta: &ObjectMeta) -> Option<String> {
    let r = controller_of(meta).filter(|r| r.kind == "Deployment")?;
    Some(api::key_of(meta.namespace.as_deref(), &r.name))
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn set_counts(rs: &ReplicaSet) -> SetCounts {
    let s = rs.status.as_ref();
    SetCounts {
        spec: spec_replicas(rs),
        pods: s.map_or(0, |s| s.replicas),
        available: s.and_then(|s| s.available_replicas).unwrap_or(0),
    }
}

/// The new ReplicaSet for a Deployment's current template (not yet created).
pub fn new_replica_set(d: &Deployment, hash: &str, revision: i64, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let name = d.metadata.name.clone().unwrap_or_default();
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: Some([(REVISION_ANNOTATION.to_string(), revision.to_string())].into()),
            owner_references: Some(vec![controller_ref("Deployment", "apps/v1", &d.metadata)]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

impl DeploymentController {
    /// The ReplicaSets `d` controls, oldest revision first.
    fn owned_sets(&self, d: &Deployment) -> Vec<Arc<ReplicaSet>> {
        let ns = d.metadata.namespace.as_deref();
        let uid = d.metadata.uid.as_deref();
        let mut sets: Vec<Arc<ReplicaSet>> = self
            .sets
            .list()
            .into_iter()
            .filter(|rs| {
                rs.metadata.namespace.as_deref() == ns && is_controlled_by(&rs.metadata, uid)
            })
            .collect();
        sets.sort_by_key(|rs| (revision(&rs.metadata), rs.metadata.name.clone()));
        sets
    }

    /// Pods of `sets` still present (for Recreate: no old pod may run beside a new one).
    fn pods_of(&self, sets: &[&ReplicaSet]) -> usize {
        let uids: Vec<&str> = sets
            .iter()
            .filter_map(|rs| rs.metadata.uid.as_deref())
            .collect();
        self.pods
            .list()
            .iter()
            .filter(|p| controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str())))
            .count()
    }

    async fn scale(&self, rs: &ReplicaSet, replicas: i32) -> Result<(), Error> {
        if spec_replicas(rs) == replicas {
            return Ok(());
        }
        let mut updated = rs.clone();
        if let Some(s) = updated.spec.as_mut() {
            s.replicas = Some(replicas);
        }
        tracing::debug!(rs = ?rs.metadata.name, replicas, "scaling replica set");
        self.client.update(&updated, &PostParams::default()).await?;
        Ok(())
    }

    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let Some(d) = self.deployments.get(key) else {
            return Ok(None);
        };
        if d.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        let spec = d.spec.clone().unwrap_or_default();
        selector_matches(&spec.selector, None).map_err(|e| Error::invalid("Deployment", key, e))?;
        let replicas = spec.replicas.unwrap_or(1).max(0);
        let strategy = spec.strategy.clone().unwrap_or_default();
        let rolling = strategy.rolling_update.clone().unwrap_or_default();
        let recreate = strategy.type_.as_deref() == Some("Recreate");
        let (surge, unavailable) = if recreate {
            (0, replicas)
        } else {
            rollout::surge_and_unavailable(
                rolling.max_surge.as_ref(),
                rolling.max_unavailable.as_ref(),
                replicas,
            )
            .map_err(|e| Error::invalid("Deployment", key, e))?
        };

        let sets = self.owned_sets(&d);
        let max_revision = sets
            .iter()
            .map(|rs| revision(&rs.metadata))
            .max()
            .unwrap_or(0);
        let current = sets
            .iter()
            .find(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| equal_ignoring_hash(t, &spec.template))
            })
            .cloned();
        let mut progressed = false;
        let paused = spec.paused == Some(true);
        let new_rs: Option<Arc<ReplicaSet>> = match current {
            Some(rs) if revision(&rs.metadata) < max_revision => {
                // A rollback made an old template current: it becomes the newest revision.
                let mut updated = (*rs).clone();
                updated
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(REVISION_ANNOTATION.into(), (max_revision + 1).to_string());
                let written = self.client.update(&updated, &PostParams::default()).await?;
                progressed = true;
                Some(Arc::new(written))
            }
            Some(rs) => Some(rs),
            None if paused => None,
            None => {
                let collision = d
                    .status
                    .as_ref()
                    .and_then(|s| s.collision_count)
                    .unwrap_or(0);
                let hash = template_hash(&spec.template, collision);
                let initial = if recreate {
                    0
                } else {
                    let old: Vec<SetCounts> = sets.iter().map(|rs| set_counts(rs)).collect();
                    rollout::scale_up_target(replicas, surge, &SetCounts::default(), &old)
                };
                let rs = new_replica_set(&d, &hash, max_revision + 1, initial);
                progressed = true;
                match self.client.create(&rs, &PostParams::default()).await {
                    Ok(created) => Some(Arc::new(created)),
                    Err(e) if e.is_already_exists() => {
                        // A ReplicaSet of that name with another template: a hash
                        // collision. A new collision count gives a new name next time.
                        let mut bumped = (*d).clone();
                        let status = bumped.status.get_or_insert_with(Default::default);
                        status.collision_count = Some(collision + 1);
                        self.client
                            .update_status(&bumped, &PostParams::default())
                            .await?;
                        return Ok(Some(Duration::from_millis(10)));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        let new_uid = new_rs.as_ref().and_then(|rs| rs.metadata.uid.clone());
        let old: Vec<&Arc<ReplicaSet>> = sets
            .iter()
            .filter(|rs| rs.metadata.uid != new_uid || new_uid.is_none())
            .collect();

        if !paused && let Some(new_rs) = new_rs.as_ref() {
            progressed |= if recreate {
                self.recreate(new_rs, &old, replicas).await?
            } else {
                self.rolling(new_rs, &old, replicas, surge, unavailable)
                    .await?
            };
        }
        self.cleanup(&spec, &old).await?;
        if let Some(rs) = new_rs.as_ref() {
            self.annotate_revision(&d, revision(&rs.metadata)).await?;
        }

        let prior = d.status.as_ref();
        let mut all: Vec<&ReplicaSet> = old.iter().map(|rs| rs.as_ref()).collect();
        if let Some(rs) = new_rs.as_deref() {
            all.push(rs);
        }
        // Counts that moved since the last status are progress too.
        let now = api::now();
        let status = status::compute(&d, new_rs.as_deref(), &all, unavailable, progressed, now);
        let moved = prior.is_none_or(|p| {
            (
                p.updated_replicas,
                p.ready_replicas,
                p.available_replicas,
                p.replicas,
            ) != (
                status.updated_replicas,
                status.ready_replicas,
                status.available_replicas,
                status.replicas,
            )
        }) || prior.and_then(|p| p.observed_generation) != d.metadata.generation;
        let status = if moved && !progressed {
            status::compute(&d, new_rs.as_deref(), &all, unavailable, true, now)
        } else {
            status
        };
        let complete = status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some(status::REASON_NEW_RS_AVAILABLE)
        });
        if status::differs(prior, &status) || moved {
            let mut updated = (*d).clone();
            updated.status = Some(status);
            self.client
                .update_status(&updated, &PostParams::default())
                .await?;
        }
        // An unfinished rollout is looked at again so the deadline is noticed.
        let deadline_s = spec.progress_deadline_seconds.unwrap_or(600).max(1) as u64;
        Ok((!complete && !paused).then(|| Duration::from_secs(deadline_s.min(30))))
    }

    /// One RollingUpdate step; true if anything was scaled.
    async fn rolling(
        &self,
        new_rs: &ReplicaSet,
        old: &[&Arc<ReplicaSet>],
        replicas: i32,
        surge: i32,
        unavailable: i32,
    ) -> Result<bool, Error> {
        let old_counts: Vec<SetCounts> = old.iter().map(|rs| set_counts(rs)).collect();
        let new_counts = set_counts(new_rs);
        let target = rollout::scale_up_target(replicas, surge, &new_counts, &old_counts);
        let mut scaled = false;
        if target != new_counts.spec {
            self.scale(new_rs, target).await?;
            scaled = true;
        }
        let new_after = SetCounts {
            spec: target,
            ..new_counts
        };
        let targets = rollout::scale_down_old(replicas, unavailable, &new_after, &old_counts);
        for (rs, t) in old.iter().zip(targets) {
            if t != spec_replicas(rs) {
                self.scale(rs, t).await?;
                scaled = true;
            }
        }
        Ok(scaled)
    }

    /// Recreate: old ReplicaSets to zero, wait for their pods to go, then the new one
    /// to full size. True if anything was scaled.
    async fn recreate(
        &self,
        new_rs: &ReplicaSet,
        old: &[&Arc<ReplicaSet>],
        replicas: i32,
    ) -> Result<bool, Error> {
        let mut scaled = false;
        for rs in old {
            if spec_replicas(rs) != 0 {
                self.scale(rs, 0).await?;
                scaled = true;
            }
        }
        let old_sets: Vec<&ReplicaSet> = old.iter().map(|rs| rs.as_ref()).collect();
        let old_pods_remain = scaled
            || old
                .iter()
                .any(|rs| rs.status.as_ref().is_some_and(|s| s.replicas > 0))
            || self.pods_of(&old_sets) > 0;
        if old_pods_remain {
            return Ok(scaled);
        }
        if spec_replicas(new_rs) != replicas {
            self.scale(new_rs, replicas).await?;
            scaled = true;
        }
        Ok(scaled)
    }

    /// Deletes the oldest empty old ReplicaSets beyond `revisionHistoryLimit`.
    async fn cleanup(
        &self,
        spec: &api::DeploymentSpec,
        old: &[&Arc<ReplicaSet>],
    ) -> Result<(), Error> {
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&&Arc<ReplicaSet>> = old
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            })
            .collect();
        if empty.len() <= limit {
            return Ok(());
        }
        for rs in &empty[..empty.len() - limit] {
            let params = DeleteParams {
                precondition_uid: rs.metadata.uid.clone(),
                ..Default::default()
            };
            match self
                .client
                .delete::<ReplicaSet>(
                    rs.metadata.namespace.as_deref(),
                    rs.metadata.name.as_deref().unwrap_or(""),
                    &params,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Sets the Deployment's revision annotation (what `kubectl rollout history` shows).
    async fn annotate_revision(&self, d: &Deployment, rev: i64) -> Result<(), Error> {
        if revision(&d.metadata) == rev {
            return Ok(());
        }
        let patch = Patch::Merge(
            json!({"metadata": {"annotations": {REVISION_ANNOTATION: rev.to_string()}}}),
        );
        self.client
            .patch::<Deployment>(
                d.metadata.namespace.as_deref(),
                d.metadata.name.as_deref().unwrap_or(""),
                &patch,
                &PostParams::default(),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{DeploymentSpec, PodTemplateSpec};

    #[test]
    fn the_new_replica_set_is_named_selected_and_owned_by_the_template_hash() {
        let template = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(api::PodSpec::default()),
        };
        let d = Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                uid: Some("d-1".into()),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                selector: LabelSelector {
                    match_labels: Some([("app".to_string(), "web".to_string())].into()),
                    ..Default::default()
                },
                template: template.clone(),
                ..Default::default()
            }),
            status: None,
        };
        let hash = template_hash(&template, 0);
        let rs = new_replica_set(&d, &hash, 4, 2);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(revision(&rs.metadata), 4);
        assert!(is_controlled_by(&rs.metadata, Some("d-1")));
        let spec = rs.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.selector.match_labels.unwrap()[HASH_LABEL], hash);
        let t = spec.template.unwrap();
        assert!(
            equal_ignoring_hash(&t, &template),
            "the copy differs only by the hash label"
        );
        assert_eq!(t.metadata.unwrap().labels.unwrap()["app"], "web");
    }
}

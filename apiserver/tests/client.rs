//! The `api` crate's typed client, informer and leader election against real apiserver
//! processes (over real etcd 3.4 and kvstore): typed CRUD with resourceVersion
//! preconditions and typed errors, subresources, watch, failover between apiservers,
//! an informer re-listing after a 410, and two electors on one Lease. Also checks that
//! the client's type-to-URL mapping agrees with the server's resource table.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use api::informer::{ApiListWatch, ListerWatcher};
use api::leader::{ElectionConfig, LeaderElector, Leadership};
use api::{
    CancellationToken, Client, Config, Container, DeleteParams, Deleted, Informer, InformerConfig,
    Lease, ListParams, Object, ObjectMeta, Patch, Pod, PodSpec, PostParams, WatchEvent,
    WatchParams, WatchStream,
};
use common::{Backend, Cluster};
use futures::StreamExt;
use serde_json::json;

/// Every stored resource the server serves, with the type the client maps it to.
macro_rules! check_types {
    ($seen:ident; $($ty:ty),* $(,)?) => {$(
        let info = apiserver::resources::lookup(<$ty as api::k8s_openapi::Resource>::GROUP,
                                                <$ty as api::k8s_openapi::Resource>::URL_PATH_SEGMENT)
            .unwrap_or_else(|| panic!("server does not serve {}", <$ty as api::k8s_openapi::Resource>::KIND));
        assert_eq!(info.kind, <$ty as api::k8s_openapi::Resource>::KIND);
        assert_eq!(info.version, <$ty as api::k8s_openapi::Resource>::VERSION);
        assert_eq!(info.namespaced, <$ty as Object>::NAMESPACED, "{}", info.kind);
        assert_eq!(info.group_version_path(), <$ty as Object>::group_version_path());
        $seen.push(info.plural);
    )*};
}

#[test]
fn client_paths_agree_with_the_servers_resource_table() {
    let mut seen = Vec::new();
    check_types!(seen; api::Namespace, api::Node, api::Pod, api::Service, api::Endpoints,
        api::Event, api::ServiceAccount, api::ConfigMap, api::Secret, api::Lease,
        api::Deployment, api::ReplicaSet,
        api::Role, api::RoleBinding, api::ClusterRole, api::ClusterRoleBinding);
    for r in apiserver::resources::RESOURCES.iter().filter(|r| r.stored) {
        assert!(seen.contains(&r.plural), "no client type for {}", r.plural);
    }
}

/// A resourceVersion from before the apiserver's watch cache started: once the store is
/// compacted, a watch from it cannot be served from the cache or the store.
const STALE_RV: &str = "1";

fn client_for(c: &Cluster, servers: &[String]) -> Result<Client> {
    let mut config = Config::new(servers)?.with_token(c.admin_token());
    if let Some(ca) = c.ca_pem() {
        config = config.with_ca_pem(ca);
    }
    config.retry_backoff = Duration::from_millis(50);
    Ok(Client::new(config)?)
}

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some("nginx".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn typed_crud(backend: Backend) -> Result<()> {
    let c = Cluster::start(backend).await?;
    // The admin kubeconfig the server wrote is enough to connect (TLS with its CA).
    let client = Client::from_kubeconfig(&c.kubeconfig())?;
    let pp = PostParams::default();

    let created = client.create(&pod("web-1"), &pp).await?;
    let rv1 = created.metadata.resource_version.clone().context("no rv")?;
    let err = client.create(&pod("web-1"), &pp).await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");

    // Update with the object's resourceVersion; a second update from the stale copy
    // is a typed conflict and writes nothing.
    let mut changed = created.clone();
    changed.spec.as_mut().unwrap().containers[0].image = Some("nginx:2".into());
    let updated = client.update(&changed, &pp).await?;
    assert_ne!(
        updated.metadata.resource_version.as_deref(),
        Some(rv1.as_str())
    );
    let err = client.update(&changed, &pp).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");

    // Patches of all three kinds.
    let merged: Pod = client
        .patch(
            Some("default"),
            "web-1",
            &Patch::Merge(json!({"metadata": {"labels": {"tier": "front"}}})),
            &pp,
        )
        .await?;
    assert_eq!(merged.metadata.labels.as_ref().unwrap()["tier"], "front");
    let strategic: Pod = client
        .patch(
            Some("default"),
            "web-1",
            &Patch::Strategic(json!({"spec": {"containers": [{"name": "c", "image": "nginx:3"}]}})),
            &pp,
        )
        .await?;
    let containers = &strategic.spec.as_ref().unwrap().containers;
    assert_eq!(
        containers.len(),
        1,
        "merged by name, not replaced or appended"
    );
    assert_eq!(containers[0].image.as_deref(), Some("nginx:3"));
    let json_patched: Pod = client
        .patch(
            Some("default"),
            "web-1",
            &Patch::Json(
                json!([{"op": "replace", "path": "/metadata/labels/app", "value": "api"}]),
            ),
            &pp,
        )
        .await?;
    assert_eq!(json_patched.metadata.labels.as_ref().unwrap()["app"], "api");

    // Status goes through /status only.
    let mut with_status = json_patched.clone();
    with_status.status = Some(api::PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    let after = client.update_status(&with_status, &pp).await?;
    assert_eq!(
        after.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    // Binding, then the pod names its node; a second bind is refused.
    client.bind("default", "web-1", "node-1").await?;
    let bound: Pod = client.get(Some("default"), "web-1").await?;
    assert_eq!(
        bound.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    assert!(client.bind("default", "web-1", "node-2").await.is_err());

    // Lists with selectors and paging.
    for i in 2..=5 {
        client.create(&pod(&format!("web-{i}")), &pp).await?;
    }
    let (all, rv) = client
        .list_all::<Pod>(Some("default"), &ListParams::default().limit(2))
        .await?;
    assert_eq!(all.len(), 5);
    assert!(!rv.is_empty());
    let (api_only, _) = client
        .list_all::<Pod>(Some("default"), &ListParams::default().labels("app=api"))
        .await?;
    assert_eq!(api_only.len(), 1);
    let (on_node, _) = client
        .list_all::<Pod>(None, &ListParams::default().fields("spec.nodeName=node-1"))
        .await?;
    assert_eq!(on_node.len(), 1);

    // Delete, then typed not-found.
    let deleted = client
        .delete::<Pod>(Some("default"), "web-2", &DeleteParams::default())
        .await?;
    assert!(matches!(deleted, Deleted::Gone));
    let err = client
        .get::<Pod>(Some("default"), "web-2")
        .await
        .unwrap_err();
    assert!(err.is_not_found(), "{err}");
    assert!(
        client
            .get_opt::<Pod>(Some("default"), "web-2")
            .await?
            .is_none()
    );

    // Scale subresource of a Deployment.
    let deploy: api::Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    }))?;
    client.create(&deploy, &pp).await?;
    let mut scale = client
        .get_scale::<api::Deployment>(Some("default"), "web")
        .await?;
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(1));
    scale.spec = Some(api::ScaleSpec { replicas: Some(3) });
    client
        .replace_scale::<api::Deployment>(Some("default"), "web", &scale)
        .await?;
    let scaled: api::Deployment = client.get(Some("default"), "web").await?;
    assert_eq!(scaled.spec.as_ref().and_then(|s| s.replicas), Some(3));

    // An event about the pod.
    let ev = client
        .create_event(
            &api::object_reference(&bound),
            "Normal",
            "Scheduled",
            "bound to node-1",
            "test",
        )
        .await?;
    assert_eq!(ev.involved_object.name.as_deref(), Some("web-1"));
    Ok(())
}

#[tokio::test]
async fn typed_crud_on_etcd() -> Result<()> {
    typed_crud(Backend::Etcd).await
}

#[tokio::test]
async fn typed_crud_on_kvstore() -> Result<()> {
    typed_crud(Backend::Kvstore).await
}

#[tokio::test]
async fn watch_from_a_lists_version_sees_later_changes_and_a_compacted_one_is_gone() -> Result<()> {
    let c = Cluster::start(Backend::Etcd).await?;
    let client = client_for(&c, &[c.url()])?;
    let pp = PostParams::default();
    client.create(&pod("a"), &pp).await?;
    let list = client
        .list::<Pod>(Some("default"), &ListParams::default())
        .await?;
    let mut stream = client
        .watch::<Pod>(
            Some("default"),
            &WatchParams::default(),
            &list.resource_version,
        )
        .await?;
    client.create(&pod("b"), &pp).await?;
    client
        .delete::<Pod>(Some("default"), "a", &DeleteParams::default())
        .await?;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(20), stream.next()).await? {
            Some(Ok(WatchEvent::Added(p))) => {
                seen.push(format!("added {}", p.metadata.name.unwrap()))
            }
            Some(Ok(WatchEvent::Deleted(p))) => {
                seen.push(format!("deleted {}", p.metadata.name.unwrap()))
            }
            Some(Ok(WatchEvent::Bookmark { .. })) => {}
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["added b", "deleted a"]);

    // Compact the store: a watch from a version older than both the store's history and
    // the apiserver's watch cache window (here: revision 1) is a typed 410.
    let mut etcd = c.etcd().await?;
    let rev = etcd.get("/", None).await?.header().unwrap().revision();
    etcd.compact(rev, None).await?;
    let gone = match client
        .watch::<Pod>(Some("default"), &WatchParams::default(), STALE_RV)
        .await
    {
        Err(e) => e,
        Ok(mut s) => s
            .next()
            .await
            .context("watch ended without the 410")?
            .unwrap_err(),
    };
    assert!(gone.is_gone(), "{gone}");
    Ok(())
}

#[tokio::test]
async fn the_client_fails_over_to_the_next_apiserver() -> Result<()> {
    let mut c = Cluster::start_n(Backend::Etcd, 2).await?;
    let client = client_for(&c, &[c.url_of(0), c.url_of(1)])?;
    client
        .create(&pod("before"), &PostParams::default())
        .await?;
    assert_eq!(
        client.current_server().as_str().trim_end_matches('/'),
        c.url_of(0)
    );
    c.kill_apiserver(0);
    client.create(&pod("after"), &PostParams::default()).await?;
    assert_eq!(
        client.current_server().as_str().trim_end_matches('/'),
        c.url_of(1)
    );
    let (pods, _) = client
        .list_all::<Pod>(Some("default"), &ListParams::default())
        .await?;
    assert_eq!(pods.len(), 2);
    Ok(())
}

/// The real list/watch, but the first watch starts from a compacted version (as an
/// informer whose watch fell behind a compaction would).
struct StaleFirstWatch {
    inner: ApiListWatch,
    stale: String,
    watches: Arc<AtomicUsize>,
    lists: Arc<AtomicUsize>,
}

impl ListerWatcher<Pod> for StaleFirstWatch {
    async fn list(&self) -> Result<(Vec<Pod>, String), api::Error> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        ListerWatcher::<Pod>::list(&self.inner).await
    }

    async fn watch(&self, rv: &str) -> Result<WatchStream<Pod>, api::Error> {
        let n = self.watches.fetch_add(1, Ordering::SeqCst);
        let from = if n == 0 { self.stale.as_str() } else { rv };
        ListerWatcher::<Pod>::watch(&self.inner, from).await
    }
}

#[tokio::test]
async fn an_informer_relists_after_a_410_and_keeps_up() -> Result<()> {
    let c = Cluster::start(Backend::Etcd).await?;
    let client = client_for(&c, &[c.url()])?;
    let pp = PostParams::default();
    client.create(&pod("a"), &pp).await?;
    client.create(&pod("b"), &pp).await?;
    let stale = STALE_RV.to_string();
    let mut etcd = c.etcd().await?;
    let rev = etcd.get("/", None).await?.header().unwrap().revision();
    etcd.compact(rev, None).await?;

    let lists = Arc::new(AtomicUsize::new(0));
    let source = StaleFirstWatch {
        inner: ApiListWatch::new(client.clone(), Some("default"), ListParams::default()),
        stale,
        watches: Arc::new(AtomicUsize::new(0)),
        lists: lists.clone(),
    };
    let (informer, store, mut events) = Informer::new(source, InformerConfig::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(informer.run(shutdown.clone()));
    assert!(store.wait_synced().await);

    client.create(&pod("c"), &pp).await?;
    // Events: a, b from the first list, then c from the watch after the re-list.
    let mut keys = Vec::new();
    while !keys.contains(&"default/c".to_string()) {
        let ev = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await?
            .context("informer ended")?;
        keys.push(ev.key());
    }
    assert_eq!(
        lists.load(Ordering::SeqCst),
        2,
        "the 410 made it re-list once"
    );
    let mut cached = store.keys();
    cached.sort();
    assert_eq!(cached, ["default/a", "default/b", "default/c"]);
    shutdown.cancel();
    Ok(())
}

fn election(identity: &str) -> ElectionConfig {
    let mut cfg = ElectionConfig::new("default", "test-election", identity);
    cfg.lease_duration = Duration::from_secs(4);
    cfg.renew_deadline = Duration::from_secs(3);
    cfg.retry_period = Duration::from_millis(500);
    cfg
}

#[tokio::test]
async fn two_electors_one_leader_and_takeover_after_the_leader_dies() -> Result<()> {
    let c = Cluster::start(Backend::Etcd).await?;
    let client = client_for(&c, &[c.url()])?;
    let (a, mut rx_a) = LeaderElector::for_client(client.clone(), election("a"));
    let (b, mut rx_b) = LeaderElector::for_client(client.clone(), election("b"));
    let shutdown = CancellationToken::new();
    let task_a = tokio::spawn(a.run(shutdown.clone()));
    rx_a.wait_for(Leadership::is_leader).await?;
    let task_b = tokio::spawn(b.run(shutdown.clone()));

    // b sees a as the holder and stays a follower while a renews.
    rx_b.wait_for(|s| matches!(s, Leadership::Follower { holder: Some(h) } if h == "a"))
        .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!rx_b.borrow().is_leader());
    let lease: Lease = client.get(Some("default"), "test-election").await?;
    assert_eq!(
        lease.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("a")
    );

    // a dies without releasing (its task is dropped): b takes over after expiry.
    task_a.abort();
    tokio::time::timeout(
        Duration::from_secs(30),
        rx_b.wait_for(Leadership::is_leader),
    )
    .await??;
    let lease: Lease = client.get(Some("default"), "test-election").await?;
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("b"));
    assert_eq!(spec.lease_transitions, Some(1));
    shutdown.cancel();
    task_b.await?;
    // b released the lease on shutdown.
    let lease: Lease = client.get(Some("default"), "test-election").await?;
    assert_eq!(lease.spec.unwrap().holder_identity, None);
    Ok(())
}

//! The scheduler and controllers inside the apiserver process (`--controllers`), HA data
//! dirs, namespace deletion, the garbage collector's three propagation policies and
//! leader failover — all against real processes (real etcd or a 3-member kvstore, the
//! real `apiserver` binary, the real kubectl), seen only through the API.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use api::{
    Client, DeleteParams, Deployment, Lease, ListParams, Namespace, Pod, PostParams,
    PropagationPolicy, ReplicaSet, Service, WatchEvent, WatchParams,
};
use common::{Backend, Cluster, HA_SEED_FILES, KvstoreCluster};
use futures::StreamExt;
use serde_json::json;

/// How long a wait for the controllers may take before the test fails.
const WAIT: Duration = Duration::from_secs(90);

/// An admin `api::Client` for the given apiservers, trusting only the first data
/// dir's CA.
fn client_for(c: &Cluster, urls: &[String]) -> Result<Client> {
    let ca = std::fs::read(c.data_dir().join("pki/ca.crt"))?;
    let cfg = api::Config::new(urls)?
        .with_ca_pem(ca)
        .with_token(c.admin_token());
    Ok(Client::new(cfg)?)
}

fn token_of(c: &Cluster, user: &str) -> Result<String> {
    let text = std::fs::read_to_string(c.token_file())?;
    text.lines()
        .find(|l| l.split(',').nth(1) == Some(user))
        .and_then(|l| l.split(',').next())
        .map(String::from)
        .with_context(|| format!("no token for {user}"))
}

/// Polls `f` until it returns Some, for at most [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => {}
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn deployment(name: &str, ns: &str, replicas: i32) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": "kvstore-busybox:latest"}]}
            }
        }
    }))?)
}

async fn pods_of(client: &Client, ns: &str, app: &str) -> Result<Vec<Pod>> {
    Ok(client
        .list_all::<Pod>(
            Some(ns),
            &ListParams::default().labels(&format!("app={app}")),
        )
        .await?
        .0)
}

async fn replicasets_of(client: &Client, ns: &str, app: &str) -> Result<Vec<ReplicaSet>> {
    Ok(client
        .list_all::<ReplicaSet>(
            Some(ns),
            &ListParams::default().labels(&format!("app={app}")),
        )
        .await?
        .0)
}

/// Creates a Deployment and waits until its ReplicaSet and all its pods exist.
async fn deploy(client: &Client, ns: &str, name: &str, replicas: i32) -> Result<Deployment> {
    let d = client
        .create(&deployment(name, ns, replicas)?, &PostParams::default())
        .await?;
    wait_for("the deployment's pods", || async {
        let pods = pods_of(client, ns, name).await?;
        let sets = replicasets_of(client, ns, name).await?;
        Ok((pods.len() == replicas as usize && sets.len() == 1).then_some(()))
    })
    .await?;
    Ok(d)
}

/// (type, kind, metadata) of a watch event with an object.
fn ev_meta<T: api::Object>(
    kind: &'static str,
    e: WatchEvent<T>,
) -> Option<(&'static str, &'static str, api::ObjectMeta)> {
    match e {
        WatchEvent::Added(o) => Some(("ADDED", kind, o.metadata().clone())),
        WatchEvent::Modified(o) => Some(("MODIFIED", kind, o.metadata().clone())),
        WatchEvent::Deleted(o) => Some(("DELETED", kind, o.metadata().clone())),
        _ => None,
    }
}

/// HA data dirs: a second apiserver started on a fresh data dir holding only copies of
/// pki/ca.crt, pki/ca.key, sa.key and tokens.csv issues its own serving certificate
/// from the shared CA, and accepts the same tokens: one client that trusts only the
/// first dir's CA works against both, with the admin and the component tokens.
#[tokio::test(flavor = "multi_thread")]
async fn ha_data_dirs_share_the_ca_and_the_tokens() -> Result<()> {
    let c = Cluster::start_ha(Backend::Etcd, 2, &[]).await?;
    let d0 = c.data_dir_of(0);
    let d1 = c.data_dir_of(1);
    assert_ne!(d0, d1);
    for f in HA_SEED_FILES {
        assert_eq!(
            std::fs::read(d0.join(f))?,
            std::fs::read(d1.join(f))?,
            "{f}"
        );
    }
    let cert0 = std::fs::read_to_string(d0.join("pki/apiserver.crt"))?;
    let cert1 = std::fs::read_to_string(d1.join("pki/apiserver.crt"))?;
    assert_ne!(
        cert0, cert1,
        "the second apiserver issues its own certificate"
    );
    for i in 0..2 {
        // Only server i in the list: no failover can hide a refusal.
        let admin = client_for(&c, &[c.url_of(i)])?;
        let (nss, _) = admin
            .list_all::<Namespace>(None, &ListParams::default())
            .await?;
        assert!(
            nss.iter()
                .any(|n| n.metadata.name.as_deref() == Some("kube-system")),
            "apiserver {i}"
        );
        let ca = std::fs::read(d0.join("pki/ca.crt"))?;
        let kcm = Client::new(
            api::Config::new([c.url_of(i)])?
                .with_ca_pem(ca.clone())
                .with_token(token_of(&c, "system:kube-controller-manager")?),
        )?;
        kcm.list_all::<ReplicaSet>(None, &ListParams::default())
            .await?;
        // A token no file holds is refused by both.
        let stranger = Client::new(
            api::Config::new([c.url_of(i)])?
                .with_ca_pem(ca)
                .with_token("not-a-token"),
        )?;
        let e = stranger
            .list_all::<Pod>(None, &ListParams::default())
            .await
            .expect_err("unknown token");
        assert!(e.to_string().contains("401"), "{e}");
    }
    Ok(())
}

/// `--controllers` with a bad strategy or inverted lease timings refuses to start with
/// a message naming the flag.
#[tokio::test(flavor = "multi_thread")]
async fn bad_controller_flags_are_refused_at_start() -> Result<()> {
    for (args, expect) in [
        (
            vec!["--controllers", "--scheduler-strategy", "Random"],
            "--scheduler-strategy",
        ),
        (
            vec![
                "--controllers",
                "--leader-elect-lease-duration-s",
                "5",
                "--leader-elect-renew-deadline-s",
                "5",
            ],
            "--leader-elect-renew-deadline-s",
        ),
    ] {
        let dir = tempfile::tempdir()?;
        let out = std::process::Command::new(common::apiserver_bin())
            .args(["--data-dir", &dir.path().display().to_string()])
            .args(["--secure-port", "0", "--etcd-servers", "http://127.0.0.1:1"])
            .args(&args)
            .output()?;
        assert!(!out.status.success(), "{args:?} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    Ok(())
}

/// One apiserver with `--controllers`: it takes both Leases under an identity naming
/// its address, runs the ReplicaSet/Deployment controllers (a Deployment gets its
/// ReplicaSet and pods with nothing else running), and the garbage collector:
/// `kubectl delete` (background) removes the ReplicaSet and pods; foreground removes
/// every dependent before the owner (ordered by the store revisions of the DELETED
/// events); `--cascade=orphan` leaves the ReplicaSet and its pods without the owner
/// reference.
#[tokio::test(flavor = "multi_thread")]
async fn controllers_in_the_apiserver_collect_garbage_by_policy() -> Result<()> {
    let c = Cluster::start_with_args(Backend::Etcd, 1, &["--controllers"]).await?;
    let client = client_for(&c, &[c.url()])?;
    let port = c.apiservers[0].secure_port;
    for name in ["kube-scheduler", "kube-controller-manager"] {
        let holder = wait_for("the lease", || async {
            let l = client.get_opt::<Lease>(Some("kube-system"), name).await?;
            Ok(l.and_then(|l| l.spec.and_then(|s| s.holder_identity)))
        })
        .await?;
        assert!(
            holder.starts_with(&format!("127.0.0.1:{port}_")),
            "{name} held by {holder}"
        );
    }

    // Background (kubectl's default).
    deploy(&client, "default", "bg", 3).await?;
    c.kubectl(&["delete", "deployment", "bg"])?.ok()?;
    wait_for("background collection", || async {
        let pods = pods_of(&client, "default", "bg").await?;
        let sets = replicasets_of(&client, "default", "bg").await?;
        Ok((pods.is_empty() && sets.is_empty()).then_some(()))
    })
    .await?;

    // Foreground: watch deletions, then compare their revisions.
    let fg = deploy(&client, "default", "fg", 3).await?;
    let rv_start = client
        .list::<Pod>(Some("default"), &ListParams::default().limit(1))
        .await?
        .resource_version;
    let params = WatchParams::default();
    let mut pod_watch = client
        .watch::<Pod>(Some("default"), &params, &rv_start)
        .await?;
    let mut rs_watch = client
        .watch::<ReplicaSet>(Some("default"), &params, &rv_start)
        .await?;
    let mut d_watch = client
        .watch::<Deployment>(Some("default"), &params, &rv_start)
        .await?;
    let answer = client
        .delete::<Deployment>(
            Some("default"),
            "fg",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..Default::default()
            },
        )
        .await?;
    match answer {
        api::Deleted::Pending(d) => {
            let fins = d.metadata.finalizers.unwrap_or_default();
            assert!(fins.contains(&"foregroundDeletion".to_string()), "{fins:?}");
        }
        api::Deleted::Gone => bail!("a foreground delete must wait for the dependents"),
    }
    let mut deleted_rv: BTreeMap<String, i64> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !deleted_rv.contains_key("deployment/fg") {
        let ev = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                Some(e) = pod_watch.next() => e.map(|e| ev_meta("pod", e)),
                Some(e) = rs_watch.next() => e.map(|e| ev_meta("replicaset", e)),
                Some(e) = d_watch.next() => e.map(|e| ev_meta("deployment", e)),
            }
        })
        .await
        .context("foreground deletion did not finish")??;
        if let Some(("DELETED", kind, m)) = ev {
            let rv: i64 = m.resource_version.unwrap_or_default().parse()?;
            deleted_rv.insert(format!("{kind}/{}", m.name.unwrap_or_default()), rv);
        }
    }
    let owner_rv = deleted_rv["deployment/fg"];
    let dependents: Vec<_> = deleted_rv
        .iter()
        .filter(|(k, _)| !k.starts_with("deployment/"))
        .collect();
    assert_eq!(dependents.len(), 4, "3 pods + 1 ReplicaSet: {deleted_rv:?}");
    for (k, rv) in &dependents {
        assert!(
            **rv < owner_rv,
            "{k} deleted at {rv}, after the owner at {owner_rv}"
        );
    }
    assert!(
        client
            .get_opt::<Deployment>(Some("default"), "fg")
            .await?
            .is_none()
    );
    let _ = fg;

    // Orphan.
    deploy(&client, "default", "orph", 2).await?;
    c.kubectl(&["delete", "deployment", "orph", "--cascade=orphan"])?
        .ok()?;
    wait_for("the orphaned deployment to go", || async {
        Ok(client
            .get_opt::<Deployment>(Some("default"), "orph")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    let sets = wait_for("the ReplicaSet to lose its owner reference", || async {
        let sets = replicasets_of(&client, "default", "orph").await?;
        Ok((sets.len() == 1
            && sets.iter().all(|s| {
                s.metadata
                    .owner_references
                    .as_ref()
                    .is_none_or(Vec::is_empty)
            }))
        .then_some(sets))
    })
    .await?;
    let rs_uid = sets[0].metadata.uid.clone().unwrap_or_default();
    let pods = pods_of(&client, "default", "orph").await?;
    assert_eq!(pods.len(), 2, "the orphans' pods stay");
    for p in &pods {
        let owners = p.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, rs_uid, "pods stay owned by the ReplicaSet");
    }
    // Still orphaned a while later (nothing re-adopts or collects them): the GC has
    // settled once a later background deletion has been fully processed.
    deploy(&client, "default", "later", 1).await?;
    c.kubectl(&["delete", "deployment", "later"])?.ok()?;
    wait_for("the later deployment's pods to go", || async {
        Ok(pods_of(&client, "default", "later")
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    assert_eq!(replicasets_of(&client, "default", "orph").await?.len(), 1);
    assert_eq!(pods_of(&client, "default", "orph").await?.len(), 2);
    Ok(())
}

/// Namespace deletion as Kubernetes does it: DELETE marks the namespace Terminating
/// (deletionTimestamp, `kubernetes` in spec.finalizers); new content is refused with
/// 403 "... because it is being terminated"; the namespace controller deletes every
/// object in it (it waits for one held by a finalizer), finalizes, and the namespace
/// goes. default, kube-system and kube-public cannot be deleted.
#[tokio::test(flavor = "multi_thread")]
async fn namespace_deletion_empties_then_removes_the_namespace() -> Result<()> {
    let c = Cluster::start_with_args(Backend::Etcd, 1, &["--controllers"]).await?;
    let client = client_for(&c, &[c.url()])?;
    let http = c.client();
    for ns in ["default", "kube-system", "kube-public"] {
        let r = http
            .delete(format!("{}/api/v1/namespaces/{ns}", c.url()))
            .send()
            .await?;
        assert_eq!(r.status().as_u16(), 403, "{ns}");
    }

    let team: Namespace = serde_json::from_value(json!({"metadata": {"name": "team"}}))?;
    client.create(&team, &PostParams::default()).await?;
    let ns: Namespace = client.get(None, "team").await?;
    assert_eq!(
        ns.spec.and_then(|s| s.finalizers),
        Some(vec!["kubernetes".to_string()])
    );
    deploy(&client, "team", "web", 2).await?;
    // A Service held by a finalizer of ours keeps the namespace Terminating until we
    // let it go, so the refusal below is observed deterministically.
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "held", "namespace": "team", "finalizers": ["test.example/hold"]},
        "spec": {"ports": [{"port": 80}]}
    }))?;
    client.create(&svc, &PostParams::default()).await?;
    let sa: api::ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "robot", "namespace": "team"}}))?;
    client.create(&sa, &PostParams::default()).await?;

    let r = http
        .delete(format!("{}/api/v1/namespaces/team", c.url()))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 202);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["status"]["phase"], "Terminating", "{body}");
    assert!(body["metadata"]["deletionTimestamp"].is_string(), "{body}");

    let e = client
        .create(&deployment("late", "team", 1)?, &PostParams::default())
        .await
        .expect_err("content in a terminating namespace");
    let msg = e.to_string();
    assert!(msg.contains("403"), "{msg}");
    assert!(
        msg.contains(
            "unable to create new content in namespace team because it is being terminated"
        ),
        "{msg}"
    );

    // Everything but the held Service goes; the namespace waits for it.
    wait_for("the namespace's contents to go", || async {
        let pods = client
            .list_all::<Pod>(Some("team"), &ListParams::default())
            .await?
            .0;
        let sets = client
            .list_all::<ReplicaSet>(Some("team"), &ListParams::default())
            .await?
            .0;
        let deps = client
            .list_all::<Deployment>(Some("team"), &ListParams::default())
            .await?
            .0;
        let sas = client
            .list_all::<api::ServiceAccount>(Some("team"), &ListParams::default())
            .await?
            .0;
        Ok((pods.is_empty() && sets.is_empty() && deps.is_empty() && sas.is_empty()).then_some(()))
    })
    .await?;
    let held: Service = client.get(Some("team"), "held").await?;
    assert!(held.metadata.deletion_timestamp.is_some());
    let ns: Namespace = client.get(None, "team").await?;
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    client
        .patch::<Service>(
            Some("team"),
            "held",
            &api::Patch::Merge(json!({"metadata": {"finalizers": null}})),
            &PostParams::default(),
        )
        .await?;
    wait_for("the namespace to go", || async {
        Ok(client
            .get_opt::<Namespace>(None, "team")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    // The name is free again.
    client.create(&team, &PostParams::default()).await?;
    Ok(())
}

/// Three apiservers with `--controllers` over a 3-member kvstore, short lease timings.
/// A 30-replica Deployment is created and the process holding kube-controller-manager
/// is SIGKILLed while its ReplicaSet controller is still creating pods (slow start).
/// Another process takes the Lease: its acquireTime is within the lease duration (plus
/// the retry period in which a follower looks) of the dead holder's last renewTime.
/// Afterwards, watches that saw everything from before the Deployment was created show
/// exactly one ReplicaSet and exactly 30 pods ever created, all with distinct names,
/// and the Deployment reports 30 replicas.
#[tokio::test(flavor = "multi_thread")]
async fn killing_the_lease_holder_hands_over_without_double_creation() -> Result<()> {
    const LEASE_S: u64 = 6;
    const RETRY_S: u64 = 1;
    const REPLICAS: usize = 30;
    let kv = KvstoreCluster::start(3).await?;
    let mut c = Cluster::start_ha_on(
        kv,
        3,
        &[
            "--controllers",
            "--leader-elect-lease-duration-s",
            &LEASE_S.to_string(),
            "--leader-elect-renew-deadline-s",
            "4",
            "--leader-elect-retry-period-s",
            &RETRY_S.to_string(),
        ],
    )
    .await?;
    let urls: Vec<String> = (0..3).map(|i| c.url_of(i)).collect();
    let client = client_for(&c, &urls)?;
    let lease_of = |name: &'static str| {
        let client = client.clone();
        async move {
            let l: Lease = client.get(Some("kube-system"), name).await?;
            anyhow::Ok(l.spec.unwrap_or_default())
        }
    };
    let holder = wait_for("a controller-manager leader", || async {
        Ok(lease_of("kube-controller-manager").await?.holder_identity)
    })
    .await?;
    let holder_index = (0..3)
        .find(|&i| holder.starts_with(&format!("127.0.0.1:{}_", c.apiservers[i].secure_port)))
        .with_context(|| format!("holder {holder} is none of ours"))?;
    // From now on, talk only to the survivors.
    let survivors: Vec<String> = (0..3)
        .filter(|&i| i != holder_index)
        .map(|i| c.url_of(i))
        .collect();
    let client = client_for(&c, &survivors)?;

    // Watch everything from before the Deployment exists.
    let rv0 = client
        .list::<Pod>(Some("default"), &ListParams::default().limit(1))
        .await?
        .resource_version;
    let params = WatchParams::default();
    let mut pod_watch = client.watch::<Pod>(Some("default"), &params, &rv0).await?;
    let mut rs_watch = client
        .watch::<ReplicaSet>(Some("default"), &params, &rv0)
        .await?;

    client
        .create(
            &deployment("ha", "default", REPLICAS as i32)?,
            &PostParams::default(),
        )
        .await?;
    // Kill while the ReplicaSet controller is mid-way (some pods, not all).
    wait_for("the first pods", || async {
        Ok((!pods_of(&client, "default", "ha").await?.is_empty()).then_some(()))
    })
    .await?;
    let before = lease_of("kube-controller-manager").await?;
    c.kill_apiserver(holder_index);
    let last_renew = before.renew_time.context("renewTime")?.0.as_millisecond();
    let seen_pods_at_kill = pods_of(&client, "default", "ha").await?.len();

    let after = wait_for("another holder", || async {
        let l = lease_of("kube-controller-manager").await?;
        Ok(
            (l.holder_identity.as_deref() != Some(holder.as_str()) && l.holder_identity.is_some())
                .then_some(l),
        )
    })
    .await?;
    let acquired = after
        .acquire_time
        .context("acquireTime")?
        .0
        .as_millisecond();
    let gap_ms = acquired - last_renew;
    eprintln!(
        "takeover: {} -> {} after {gap_ms} ms (pods at kill: {seen_pods_at_kill}/{REPLICAS})",
        holder,
        after.holder_identity.clone().unwrap_or_default()
    );
    assert!(
        gap_ms <= ((LEASE_S + 2 * RETRY_S) * 1000) as i64,
        "takeover {gap_ms} ms after the last renewal; lease is {LEASE_S} s"
    );

    // Settle: the new leader finishes the job.
    wait_for("all replicas", || async {
        let d: Deployment = client.get(Some("default"), "ha").await?;
        let st = d.status.unwrap_or_default();
        Ok((st.replicas == Some(REPLICAS as i32)
            && pods_of(&client, "default", "ha").await?.len() == REPLICAS)
            .then_some(()))
    })
    .await?;
    // Drain the watches until every pod that exists now has been seen ADDED, then a
    // little longer for anything created late (a double creation would show up here).
    let current: BTreeSet<String> = pods_of(&client, "default", "ha")
        .await?
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    let mut pods_added: Vec<String> = Vec::new();
    let mut sets_added: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut caught_up_at: Option<tokio::time::Instant> = None;
    loop {
        let now = tokio::time::Instant::now();
        if caught_up_at.is_none() && current.iter().all(|n| pods_added.contains(n)) {
            caught_up_at = Some(now);
        }
        let until = match caught_up_at {
            Some(t) => t + Duration::from_secs(3),
            None => deadline,
        };
        if now >= until {
            break;
        }
        let ev = tokio::time::timeout_at(until, async {
            tokio::select! {
                Some(e) = pod_watch.next() => e.map(|e| ev_meta("pod", e)),
                Some(e) = rs_watch.next() => e.map(|e| ev_meta("replicaset", e)),
            }
        })
        .await;
        let ev = match ev {
            Ok(e) => e?,
            Err(_) => continue,
        };
        let Some(("ADDED", kind, m)) = ev else {
            continue;
        };
        let is_pod = kind == "pod";
        let name = m.name.unwrap_or_default();
        if !name.starts_with("ha-") {
            continue;
        }
        if is_pod {
            pods_added.push(name);
        } else {
            sets_added.push(name);
        }
    }
    ensure!(
        caught_up_at.is_some(),
        "the watch never showed every current pod as ADDED"
    );
    let unique: BTreeSet<&String> = pods_added.iter().collect();
    assert_eq!(
        sets_added.len(),
        1,
        "ReplicaSets ever created: {sets_added:?}"
    );
    assert_eq!(
        pods_added.len(),
        REPLICAS,
        "pods ever created: {pods_added:?}"
    );
    assert_eq!(unique.len(), REPLICAS, "pod names are unique");
    Ok(())
}

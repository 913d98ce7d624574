//! The endpoints controller: for every Service with a selector, an Endpoints object of
//! the same name listing the IPs of the selected pods — ready ones in `addresses`, the
//! others in `notReadyAddresses` — with the Service's ports resolved against each pod
//! (a named `targetPort` is looked up in the pod's container ports). Services without
//! a selector are left alone (their Endpoints are the user's).

use std::collections::BTreeMap;
use std::sync::Arc;

use api::{
    Client, EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Informer, InformerConfig,
    InformerEvent, IntOrString, ListParams, ObjectMeta, ObjectReference, Pod, PostParams, Service,
    Store, WorkQueue,
};
use tokio_util::sync::CancellationToken;

use crate::Error;
use crate::controller::{Requeue, enqueue, queue_config, run_workers};
use crate::meta::{pod_is_active, pod_is_ready};

const WORKERS: usize = 4;

#[derive(Clone)]
struct EndpointsController {
    client: Client,
    services: Store<Service>,
    pods: Store<Pod>,
    endpoints: Store<Endpoints>,
}

/// Runs the controller until `shutdown`.
pub async fn run(client: Client, shutdown: CancellationToken) {
    let cfg = InformerConfig::default();
    let (s_inf, services, mut s_events) = Informer::<Service, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        cfg.clone(),
    );
    let (p_inf, pods, mut p_events) =
        Informer::<Pod, _>::for_client(client.clone(), None, ListParams::default(), cfg.clone());
    let (e_inf, endpoints, mut e_events) =
        Informer::<Endpoints, _>::for_client(client.clone(), None, ListParams::default(), cfg);
    tokio::spawn(s_inf.run(shutdown.clone()));
    tokio::spawn(p_inf.run(shutdown.clone()));
    tokio::spawn(e_inf.run(shutdown.clone()));
    let queue: WorkQueue<String> = WorkQueue::new(queue_config());
    let q = queue.clone();
    let stop = shutdown.clone();
    let svc_store = services.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(ev) = s_events.recv() => enqueue(&q, ev.key()),
                Some(ev) = e_events.recv() => enqueue(&q, ev.key()),
                Some(ev) = p_events.recv() => on_pod(&q, &svc_store, ev),
            }
        }
    });
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { services.wait_synced().await; pods.wait_synced().await; endpoints.wait_synced().await } => {}
    }
    let c = EndpointsController {
        client,
        services,
        pods,
        endpoints,
    };
    run_workers("endpoints", queue, WORKERS, shutdown, move |key| {
        let c = c.clone();
        async move { c.sync(&key).await }
    })
    .await;
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A pod changed: every Service of its namespace that selects it (before or after).
fn on_pod(queue: &WorkQueue<String>, services: &Store<Service>, ev: InformerEvent<Pod>) {
    let pods: Vec<Arc<Pod>> = match ev {
        InformerEvent::Updated { old, new } => vec![old, new],
        InformerEvent::Added(p) | InformerEvent::Deleted(p) | InformerEvent::Resync(p) => vec![p],
    };
    for svc in services.list() {
        if svc.metadata.namespace == pods[0].metadata.namespace
            && pods.iter().any(|p| selects(&svc, p))
        {
            enqueue(queue, crate::meta::key_of_meta(&svc.metadata));
        }
    }
}

/// (name, port, protocol) of one Service port on one pod.
type ResolvedPort = (String, i32, String);

/// The port a Service port reaches on one pod (None: a named port the pod lacks).
fn resolve_port(port: &api::ServicePort, pod: &Pod) -> Option<i32> {
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

/// The subsets for a Service over its namespace's pods: pods grouped by their resolved
/// ports, addresses sorted by IP so equal inputs give equal objects.
pub fn subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut groups: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    for pod in pods.iter().filter(|p| selects(svc, p) && pod_is_active(p)) {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let resolved: Option<Vec<ResolvedPort>> = ports
            .iter()
            .map(|p| {
                resolve_port(p, pod).map(|n| {
                    (
                        p.name.clone().unwrap_or_default(),
                        n,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
            })
            .collect();
        let Some(resolved) = resolved else { continue };
        let address = EndpointAddress {
            ip,
            hostname: None,
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(ObjectReference {
                kind: Some("Pod".into()),
                namespace: pod.metadata.namespace.clone(),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
                ..Default::default()
            }),
        };
        let entry = groups.entry(resolved).or_default();
        if pod_is_ready(pod) {
            entry.0.push(address);
        } else {
            entry.1.push(address);
        }
    }
    groups
        .into_iter()
        .map(|(ports, (mut ready, mut not_ready))| {
            ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            not_ready.sort_by(|a, b| a.ip.cmp(&b.ip));
            EndpointSubset {
                addresses: (!ready.is_empty()).then_some(ready),
                not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
                ports: (!ports.is_empty()).then(|| {
                    ports
                        .into_iter()
                        .map(|(name, port, protocol)| EndpointPort {
                            name: (!name.is_empty()).then_some(name),
                            port,
                            protocol: Some(protocol),
                            app_protocol: None,
                        })
                        .collect()
                }),
            }
        })
        .collect()
}

impl EndpointsController {
    async fn sync(&self, key: &str) -> Result<Requeue, Error> {
        let Some(svc) = self.services.get(key) else {
            // The Service is gone: so are its Endpoints (GC would also do it via
            // ownerReferences; Kubernetes' endpoints carry none, so it is done here).
            if let Some(ep) = self.endpoints.get(key) {
                let (ns, name) = api::split_key(key);
                match self
                    .client
                    .delete::<Endpoints>(
                        ns,
                        name,
                        &api::DeleteParams {
                            precondition_uid: ep.metadata.uid.clone(),
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.is_not_found() || e.is_conflict() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(None);
        };
        if svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .is_none_or(|s| s.is_empty())
        {
            return Ok(None);
        }
        let ns = svc.metadata.namespace.clone();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .list()
            .into_iter()
            .filter(|p| p.metadata.namespace == ns)
            .collect();
        let subsets = subsets(&svc, &pods);
        let subsets = (!subsets.is_empty()).then_some(subsets);
        match self.endpoints.get(key) {
            Some(ep) if ep.subsets == subsets => {}
            Some(ep) => {
                let mut updated = (*ep).clone();
                updated.subsets = subsets;
                self.client.update(&updated, &PostParams::default()).await?;
            }
            None => {
                let ep = Endpoints {
                    metadata: ObjectMeta {
                        name: svc.metadata.name.clone(),
                        namespace: ns,
                        labels: svc.metadata.labels.clone(),
                        ..Default::default()
                    },
                    subsets,
                };
                match self.client.create(&ep, &PostParams::default()).await {
                    Ok(_) => {}
                    // Created meanwhile (our cache was behind): the next event syncs it.
                    Err(e) if e.is_already_exists() => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn pod(name: &str, ip: Option<&str>, ready: bool, app: &str) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                labels: Some([("app".to_string(), app.to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("http".into()),
                        container_port: 8080,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: ip.map(Into::into),
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
    fn ready_and_not_ready_pods_with_named_ports() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                ports: Some(vec![ServicePort {
                    port: 80,
                    target_port: Some(IntOrString::String("http".into())),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pods = vec![
            pod("b", Some("10.0.0.2"), true, "web"),
            pod("a", Some("10.0.0.1"), true, "web"),
            pod("c", Some("10.0.0.3"), false, "web"),
            pod("d", None, true, "web"),
            pod("e", Some("10.0.0.5"), true, "db"),
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.len(), 1);
        let ips: Vec<_> = s[0]
            .addresses
            .iter()
            .flatten()
            .map(|a| a.ip.clone())
            .collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2"]);
        let not_ready: Vec<_> = s[0]
            .not_ready_addresses
            .iter()
            .flatten()
            .map(|a| a.ip.clone())
            .collect();
        assert_eq!(not_ready, ["10.0.0.3"]);
        assert_eq!(s[0].ports.as_ref().unwrap()[0].port, 8080);
    }
}

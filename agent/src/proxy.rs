//! The service proxy (kube-proxy's role, userspace mode): for every TCP port of every
//! Service, a listener on `node-ip:<port>` that forwards each connection to the next
//! Ready endpoint address, round-robin.
//!
//! Services and Endpoints come from two informers; any event of either recomputes the
//! wanted set of (port → backends) at once, so an endpoint that turns unready leaves the
//! rotation as soon as the endpoints controller writes it. Listeners of deleted Services
//! (or ports) are closed; connections already forwarded continue. Two Services asking
//! for the same node port: the first by `namespace/name` wins, the other is logged.
//! A backend that refuses the connection is skipped for the next one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use api::{
    CancellationToken, Client, Endpoints, Informer, InformerConfig, InformerEvent, ListParams,
    Service, Store,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Bound on one backend connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Every this often the proxy re-reads its caches even without events (and retries
/// ports that could not be bound).
const RESYNC: Duration = Duration::from_secs(1);

/// One service port as the proxy serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// `namespace/name:portName` (for logs).
    pub service: String,
    pub backends: Vec<SocketAddr>,
}

/// What the proxy should listen on: node port → rule. Pure, for tests.
pub fn wanted(services: &[Arc<Service>], endpoints: &Store<Endpoints>) -> BTreeMap<u16, Rule> {
    let mut sorted: Vec<&Arc<Service>> = services.iter().collect();
    sorted.sort_by_key(|s| api::object_key(s.as_ref()));
    let mut out = BTreeMap::new();
    for svc in sorted {
        let key = api::object_key(svc.as_ref());
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        // Headless and ExternalName Services have no proxy (as with kube-proxy).
        if spec.type_.as_deref() == Some("ExternalName")
            || spec.cluster_ip.as_deref() == Some("None")
        {
            continue;
        }
        let eps = endpoints.get(&key);
        for port in spec.ports.iter().flatten() {
            if port.protocol.as_deref().is_some_and(|p| p != "TCP") {
                continue;
            }
            let Ok(node_port) = u16::try_from(port.port) else {
                continue;
            };
            let backends = backends(eps.as_deref(), port.name.as_deref());
            let rule = Rule {
                service: format!("{key}:{}", port.name.as_deref().unwrap_or("")),
                backends,
            };
            match out.get(&node_port) {
                Some(Rule { service, .. }) => {
                    tracing::debug!(port = node_port, winner = %service, loser = %rule.service, "port taken by another service");
                }
                None => {
                    out.insert(node_port, rule);
                }
            }
        }
    }
    out
}

/// The ready addresses of `eps` at the endpoint port named like the service port.
fn backends(eps: Option<&Endpoints>, port_name: Option<&str>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let Some(eps) = eps else { return out };
    for subset in eps.subsets.iter().flatten() {
        let ports = subset.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref().unwrap_or("") == port_name.unwrap_or(""))
            .or_else(|| (ports.len() == 1).then(|| &ports[0]));
        let Some(port) = port.and_then(|p| u16::try_from(p.port).ok()) else {
            continue;
        };
        for addr in subset.addresses.iter().flatten() {
            if let Ok(ip) = addr.ip.parse::<IpAddr>() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out.sort();
    out
}

/// The backends of one listener, swapped in place when endpoints change.
#[derive(Default)]
struct Pool {
    backends: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Pool {
    fn set(&self, backends: Vec<SocketAddr>) {
        *self.backends.write().unwrap_or_else(|p| p.into_inner()) = backends;
    }

    /// The backends in the order to try for one connection: the next in rotation first.
    fn order(&self) -> Vec<SocketAddr> {
        let b = self.backends.read().unwrap_or_else(|p| p.into_inner());
        if b.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % b.len();
        b[start..].iter().chain(&b[..start]).copied().collect()
    }
}

struct Listening {
    rule_service: String,
    pool: Arc<Pool>,
    stop: CancellationToken,
}

/// Runs the proxy on `ip` until `shutdown`.
pub async fn run(client: Client, ip: IpAddr, shutdown: CancellationToken) {
    let config = InformerConfig {
        resync: None,
        ..Default::default()
    };
    let (s_inf, services, s_events) = Informer::<Service, _>::for_client(
        client.clone(),
        None,
        ListParams::default(),
        config.clone(),
    );
    let (e_inf, endpoints, e_events) =
        Informer::<Endpoints, _>::for_client(client, None, ListParams::default(), config);
    tokio::spawn(s_inf.run(shutdown.clone()));
    tokio::spawn(e_inf.run(shutdown.clone()));
    let (changed_tx, mut changed) = mpsc::channel::<()>(1);
    forward(s_events, changed_tx.clone(), shutdown.clone());
    forward(e_events, changed_tx, shutdown.clone());
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = async { services.wait_synced().await; endpoints.wait_synced().await } => {}
    }
    let mut listening: HashMap<u16, Listening> = HashMap::new();
    let mut warned: HashSet<(u16, String)> = HashSet::new();
    let mut tick = tokio::time::interval(RESYNC);
    loop {
        let want = wanted(&services.list(), &endpoints);
        apply(ip, &want, &mut listening, &mut warned, &shutdown).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = changed.recv() => {}
            _ = tick.tick() => {}
        }
    }
    for (_, l) in listening.drain() {
        l.stop.cancel();
    }
}

/// Turns informer events into "something changed" pings (coalesced).
fn forward<T: Send + Sync + 'static>(
    mut events: mpsc::Receiver<InformerEvent<T>>,
    changed: mpsc::Sender<()>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.recv() => match e {
                    Some(_) => { let _ = changed.try_send(()); }
                    None => return,
                },
            }
        }
    });
}

async fn apply(
    ip: IpAddr,
    want: &BTreeMap<u16, Rule>,
    listening: &mut HashMap<u16, Listening>,
    warned: &mut HashSet<(u16, String)>,
    shutdown: &CancellationToken,
) {
    listening.retain(|port, l| {
        let keep = want.get(port).is_some_and(|r| r.service == l.rule_service);
        if !keep {
            tracing::info!(port, service = %l.rule_service, "closing service listener");
            l.stop.cancel();
        }
        keep
    });
    for (port, rule) in want {
        if let Some(l) = listening.get(port) {
            l.pool.set(rule.backends.clone());
            continue;
        }
        let addr = SocketAddr::new(ip, *port);
        match TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, service = %rule.service, backends = rule.backends.len(), "service listener open");
                let pool = Arc::new(Pool::default());
                pool.set(rule.backends.clone());
                let stop = shutdown.child_token();
                tokio::spawn(accept_loop(listener, pool.clone(), stop.clone()));
                listening.insert(
                    *port,
                    Listening {
                        rule_service: rule.service.clone(),
                        pool,
                        stop,
                    },
                );
            }
            // Retried on every resync; said once per port and service.
            Err(e) => {
                if warned.insert((*port, rule.service.clone())) {
                    tracing::warn!(%addr, service = %rule.service, error = %e, "cannot listen for a service; will keep trying");
                }
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, pool: Arc<Pool>, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((conn, _)) => {
                tokio::spawn(forward_conn(conn, pool.order()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn forward_conn(mut conn: TcpStream, order: Vec<SocketAddr>) {
    for backend in order {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
            Ok(Ok(mut upstream)) => {
                let _ = conn.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut conn, &mut upstream).await;
                return;
            }
            Ok(Err(e)) => tracing::debug!(%backend, error = %e, "backend refused; trying the next"),
            Err(_) => tracing::debug!(%backend, "backend connect timed out; trying the next"),
        }
    }
    // No backend: the client sees the connection closed.
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{
        EndpointAddress, EndpointPort, EndpointSubset, ObjectMeta, ServicePort, ServiceSpec,
    };

    fn svc(name: &str, port: i32) -> Arc<Service> {
        Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn pools_rotate() {
        let pool = Pool::default();
        let a: SocketAddr = "10.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        pool.set(vec![a, b]);
        assert_eq!(pool.order(), vec![a, b]);
        assert_eq!(pool.order(), vec![b, a]);
        assert_eq!(pool.order(), vec![a, b]);
        pool.set(vec![]);
        assert!(pool.order().is_empty());
    }

    #[test]
    fn backends_take_ready_addresses_at_the_named_port() {
        let eps = Endpoints {
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.1".into(),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![EndpointAddress {
                    ip: "10.0.0.9".into(),
                    ..Default::default()
                }]),
                ports: Some(vec![
                    EndpointPort {
                        name: Some("metrics".into()),
                        port: 9090,
                        ..Default::default()
                    },
                    EndpointPort {
                        name: Some("http".into()),
                        port: 8080,
                        ..Default::default()
                    },
                ]),
            }]),
            ..Default::default()
        };
        assert_eq!(
            backends(Some(&eps), Some("http")),
            vec!["10.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert!(backends(None, Some("http")).is_empty());
        // Services with the same port: the first by key wins.
        let (inf, store, _rx) = Informer::<Endpoints, _>::new(NoSource, InformerConfig::default());
        drop(inf);
        let mut headless = (*svc("h", 82)).clone();
        headless.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let w = wanted(
            &[svc("b", 80), svc("a", 80), svc("c", 81), Arc::new(headless)],
            &store,
        );
        assert_eq!(w[&80].service, "default/a:http");
        assert_eq!(w[&81].service, "default/c:http");
        assert!(!w.contains_key(&82), "headless services are not proxied");
    }

    struct NoSource;
    impl api::informer::ListerWatcher<Endpoints> for NoSource {
        async fn list(&self) -> Result<(Vec<Endpoints>, String), api::Error> {
            Ok((Vec::new(), "1".into()))
        }
        async fn watch(&self, _rv: &str) -> Result<api::WatchStream<Endpoints>, api::Error> {
            Err(api::Error::InvalidRequest("no watch".into()))
        }
    }
}

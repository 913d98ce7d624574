//! Resource arithmetic of the scheduler: what a pod requests and what a node offers, in
//! exact integer units (CPU in millicores, memory in bytes, pods as a count), parsed with
//! `api::quantity` so the scheduler and the apiserver agree on every quantity.

use std::collections::BTreeMap;

use api::quantity::parse_quantity;
use api::{Node, Pod, Quantity};

/// An amount of the resources the scheduler accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_millis: i128,
    pub memory_bytes: i128,
    pub pods: i128,
}

impl Resources {
    pub fn add(&mut self, other: &Resources) {
        self.cpu_millis += other.cpu_millis;
        self.memory_bytes += other.memory_bytes;
        self.pods += other.pods;
    }

    pub fn sub(&mut self, other: &Resources) {
        self.cpu_millis -= other.cpu_millis;
        self.memory_bytes -= other.memory_bytes;
        self.pods -= other.pods;
    }
}

fn quantity_of(
    map: Option<&BTreeMap<String, Quantity>>,
    name: &str,
) -> Result<Option<api::quantity::Quantity>, String> {
    match map.and_then(|m| m.get(name)) {
        None => Ok(None),
        Some(q) => parse_quantity(&q.0)
            .map(Some)
            .map_err(|e| format!("{name} quantity {:?}: {e}", q.0)),
    }
}

/// CPU and memory one container requests; a limit without a request counts as the
/// request (the apiserver's defaulting in Kubernetes does the same).
fn container_requests(c: &api::Container) -> Result<Resources, String> {
    let res = c.resources.as_ref();
    let requests = res.and_then(|r| r.requests.as_ref());
    let limits = res.and_then(|r| r.limits.as_ref());
    let get = |name: &str| -> Result<Option<api::quantity::Quantity>, String> {
        match quantity_of(requests, name)? {
            Some(q) => Ok(Some(q)),
            None => quantity_of(limits, name),
        }
    };
    Ok(Resources {
        cpu_millis: get("cpu")?.map_or(0, |q| q.millis()),
        memory_bytes: get("memory")?.map_or(0, |q| q.value()),
        pods: 0,
    })
}

/// What a pod needs on its node: the sum over its containers, or the largest init
/// container if that is more (init containers run one at a time, before the others),
/// plus the pod overhead, and one pod slot.
pub fn pod_requests(pod: &Pod) -> Result<Resources, String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(Resources {
            pods: 1,
            ..Default::default()
        });
    };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&container_requests(c)?);
    }
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c)?;
        sum.cpu_millis = sum.cpu_millis.max(r.cpu_millis);
        sum.memory_bytes = sum.memory_bytes.max(r.memory_bytes);
    }
    if let Some(overhead) = spec.overhead.as_ref() {
        sum.cpu_millis += quantity_of(Some(overhead), "cpu")?.map_or(0, |q| q.millis());
        sum.memory_bytes += quantity_of(Some(overhead), "memory")?.map_or(0, |q| q.value());
    }
    sum.pods = 1;
    Ok(sum)
}

/// What a node offers to pods: `status.allocatable`, else `status.capacity`. A node that
/// states no pod count gets Kubernetes' default of 110.
pub fn node_allocatable(node: &Node) -> Result<Resources, String> {
    let status = node.status.as_ref();
    let map = status
        .and_then(|s| s.allocatable.as_ref())
        .or_else(|| status.and_then(|s| s.capacity.as_ref()));
    Ok(Resources {
        cpu_millis: quantity_of(map, "cpu")?.map_or(0, |q| q.millis()),
        memory_bytes: quantity_of(map, "memory")?.map_or(0, |q| q.value()),
        pods: quantity_of(map, "pods")?.map_or(110, |q| q.value()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{Container, PodSpec, ResourceRequirements};

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect()
    }

    fn container(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Container {
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(q(requests)),
                limits: Some(q(limits)),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_add_containers_and_take_the_largest_init_container() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    container(&[("cpu", "250m"), ("memory", "64Mi")], &[]),
                    container(&[], &[("cpu", "1"), ("memory", "1Gi")]),
                ],
                init_containers: Some(vec![container(&[("cpu", "2")], &[])]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = pod_requests(&pod).unwrap();
        assert_eq!(r.cpu_millis, 2000, "init container's 2 CPUs beat 1.25");
        assert_eq!(r.memory_bytes, (64 << 20) + (1 << 30));
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn a_bad_quantity_is_an_error_not_zero() {
        let pod = Pod {
            spec: Some(PodSpec {
                containers: vec![container(&[("cpu", "lots")], &[])],
                ..Default::default()
            }),
            ..Default::default()
        };
        let err = pod_requests(&pod).unwrap_err();
        assert!(err.contains("cpu quantity \"lots\""), "{err}");
    }

    #[test]
    fn allocatable_falls_back_to_capacity_and_default_pod_count() {
        let node = Node {
            status: Some(api::NodeStatus {
                capacity: Some(q(&[("cpu", "4"), ("memory", "8Gi")])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let a = node_allocatable(&node).unwrap();
        assert_eq!((a.cpu_millis, a.memory_bytes, a.pods), (4000, 8 << 30, 110));
    }
}

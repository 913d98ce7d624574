//! The scheduler's view of the cluster: every node with its allocatable, and what each
//! node already carries (the requests of the pods bound there, plus the pods this
//! scheduler has chosen a node for whose binding is not yet visible in the watch —
//! "assumed" pods, so two pods in a row never both take the last free slot).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use api::{Node, Pod};

use super::filter::{self, Unfit};
use super::resources::{Resources, node_allocatable};
use super::score::{Strategy, score};

struct NodeEntry {
    node: Arc<Node>,
    allocatable: Result<Resources, String>,
}

/// Nodes and per-node usage. Owned by the scheduler's one loop (no locking).
#[derive(Default)]
pub struct Cache {
    /// By name, so iteration (and so tie-breaking) is in name order.
    nodes: BTreeMap<String, NodeEntry>,
    /// Pod key → (node, requests) of every pod that holds resources on a node.
    pods: HashMap<String, (String, Resources)>,
    /// Node → sum of its pods' requests (nodes not yet seen may appear here).
    used: HashMap<String, Resources>,
}

impl Cache {
    pub fn set_node(&mut self, node: Arc<Node>) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let allocatable = node_allocatable(&node);
        self.nodes.insert(name, NodeEntry { node, allocatable });
    }

    pub fn remove_node(&mut self, name: &str) {
        self.nodes.remove(name);
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Records that pod `key` holds `requests` on `node` (replacing what it held before).
    pub fn set_pod(&mut self, key: &str, node: &str, requests: Resources) {
        self.remove_pod(key);
        self.used
            .entry(node.to_string())
            .or_default()
            .add(&requests);
        self.pods
            .insert(key.to_string(), (node.to_string(), requests));
    }

    /// The pod no longer holds anything (deleted, finished, or its binding failed).
    pub fn remove_pod(&mut self, key: &str) {
        if let Some((node, requests)) = self.pods.remove(key) {
            let gone = match self.used.get_mut(&node) {
                Some(u) => {
                    u.sub(&requests);
                    u.pods <= 0
                }
                None => false,
            };
            if gone {
                self.used.remove(&node);
            }
        }
    }

    /// The node pod `key` is accounted on, if any.
    pub fn node_of(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(|(n, _)| n.as_str())
    }

    /// What `node` carries now.
    pub fn used_on(&self, node: &str) -> Resources {
        self.used.get(node).copied().unwrap_or_default()
    }

    /// The best node for the pod, or the summary of why no node fits.
    pub fn choose(
        &self,
        pod: &Pod,
        requests: &Resources,
        strategy: Strategy,
    ) -> Result<String, String> {
        let mut best: Option<(i128, &str)> = None;
        let mut reasons: BTreeMap<Unfit, usize> = BTreeMap::new();
        let zero = Resources::default();
        for (name, entry) in &self.nodes {
            let used = self.used.get(name).unwrap_or(&zero);
            match filter::fits(pod, requests, &entry.node, &entry.allocatable, used) {
                Ok(()) => {
                    let Ok(alloc) = &entry.allocatable else {
                        continue;
                    };
                    let s = score(strategy, requests, alloc, used);
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, name));
                    }
                }
                Err(why) => *reasons.entry(why).or_default() += 1,
            }
        }
        match best {
            Some((_, name)) => Ok(name.to_string()),
            None => Err(filter::summary(self.nodes.len(), &reasons)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{NodeCondition, NodeStatus, Quantity};

    fn node(name: &str, cpu: &str) -> Arc<Node> {
        Arc::new(Node {
            metadata: api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                allocatable: Some(
                    [
                        ("cpu".to_string(), Quantity(cpu.into())),
                        ("memory".to_string(), Quantity("8Gi".into())),
                    ]
                    .into(),
                ),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn place(cache: &mut Cache, n: usize, strategy: Strategy) -> BTreeMap<String, usize> {
        let req = Resources {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            pods: 1,
        };
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let chosen = cache.choose(&Pod::default(), &req, strategy).unwrap();
            cache.set_pod(&format!("p{i}"), &chosen, req);
            *counts.entry(chosen).or_default() += 1;
        }
        counts
    }

    #[test]
    fn spread_and_pack_ten_pods_over_three_nodes() {
        let mut cache = Cache::default();
        for n in ["a", "b", "c"] {
            cache.set_node(node(n, "4"));
        }
        let spread = place(&mut cache, 10, Strategy::LeastAllocated);
        assert_eq!(spread.values().copied().collect::<Vec<_>>(), vec![4, 3, 3]);

        let mut cache = Cache::default();
        for n in ["a", "b", "c"] {
            cache.set_node(node(n, "4"));
        }
        let packed = place(&mut cache, 10, Strategy::MostAllocated);
        assert_eq!(packed.values().copied().collect::<Vec<_>>(), vec![4, 4, 2]);
    }

    #[test]
    fn full_nodes_give_a_reason_and_freed_pods_make_room() {
        let mut cache = Cache::default();
        cache.set_node(node("a", "2"));
        place(&mut cache, 2, Strategy::LeastAllocated);
        let req = Resources {
            cpu_millis: 1000,
            memory_bytes: 0,
            pods: 1,
        };
        assert_eq!(
            cache.choose(&Pod::default(), &req, Strategy::LeastAllocated),
            Err("0/1 nodes are available: 1 Insufficient cpu.".into())
        );
        cache.remove_pod("p0");
        assert_eq!(cache.used_on("a").cpu_millis, 1000);
        assert_eq!(
            cache.choose(&Pod::default(), &req, Strategy::LeastAllocated),
            Ok("a".into())
        );
        // Re-accounting a pod replaces its old entry instead of adding twice.
        cache.set_pod("p1", "a", req);
        assert_eq!(cache.used_on("a").pods, 1);
        assert_eq!(cache.node_of("p1"), Some("a"));
    }
}

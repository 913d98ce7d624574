//! Filters: may this pod run on this node? Each failing filter gives the reason
//! Kubernetes' scheduler reports, and [`summary`] folds the reasons of every node into
//! the message of the PodScheduled=False condition and the FailedScheduling event
//! ("0/3 nodes are available: 3 Insufficient cpu.").

use std::collections::BTreeMap;

use api::{Node, Pod, Taint, Toleration};

use super::resources::Resources;

/// Why a node cannot take a pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    Unschedulable,
    NotReady,
    NodeSelector,
    Taint {
        key: String,
        value: String,
    },
    InsufficientCpu,
    InsufficientMemory,
    TooManyPods,
    /// The node's allocatable could not be parsed.
    BadNode(String),
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Unschedulable => write!(f, "node(s) were unschedulable"),
            Unfit::NotReady => write!(f, "node(s) were not ready"),
            Unfit::NodeSelector => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Unfit::Taint { key, value } => {
                write!(f, "node(s) had untolerated taint {{{key}: {value}}}")
            }
            Unfit::InsufficientCpu => write!(f, "Insufficient cpu"),
            Unfit::InsufficientMemory => write!(f, "Insufficient memory"),
            Unfit::TooManyPods => write!(f, "Too many pods"),
            Unfit::BadNode(why) => write!(f, "node(s) had invalid allocatable ({why})"),
        }
    }
}

/// The node's Ready condition is True.
pub fn node_is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

/// Whether `toleration` tolerates `taint` (Kubernetes' matching: empty key with Exists
/// tolerates everything; an empty effect matches every effect).
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = toleration.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = toleration.key.as_deref().unwrap_or("");
    let op = toleration.operator.as_deref().unwrap_or("Equal");
    if key.is_empty() {
        return op == "Exists";
    }
    if key != taint.key {
        return false;
    }
    match op {
        "Exists" => true,
        "Equal" | "" => {
            toleration.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint of the node that the pod does not tolerate.
fn untolerated_taint<'a>(pod: &Pod, node: &'a Node) -> Option<&'a Taint> {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

fn selector_fits(pod: &Pod, node: &Node) -> bool {
    let Some(selector) = pod.spec.as_ref().and_then(|s| s.node_selector.as_ref()) else {
        return true;
    };
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Checks one node: the first reason it cannot take the pod, or Ok. `allocatable` is the
/// node's, `used` the sum of the requests of pods bound (or assumed) there.
pub fn fits(
    pod: &Pod,
    requests: &Resources,
    node: &Node,
    allocatable: &Result<Resources, String>,
    used: &Resources,
) -> Result<(), Unfit> {
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return Err(Unfit::Unschedulable);
    }
    if !node_is_ready(node) {
        return Err(Unfit::NotReady);
    }
    if !selector_fits(pod, node) {
        return Err(Unfit::NodeSelector);
    }
    if let Some(t) = untolerated_taint(pod, node) {
        return Err(Unfit::Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
        });
    }
    let alloc = allocatable
        .as_ref()
        .map_err(|e| Unfit::BadNode(e.clone()))?;
    if used.pods + requests.pods > alloc.pods {
        return Err(Unfit::TooManyPods);
    }
    if requests.cpu_millis > 0 && used.cpu_millis + requests.cpu_millis > alloc.cpu_millis {
        return Err(Unfit::InsufficientCpu);
    }
    if requests.memory_bytes > 0 && used.memory_bytes + requests.memory_bytes > alloc.memory_bytes {
        return Err(Unfit::InsufficientMemory);
    }
    Ok(())
}

/// "0/N nodes are available: 2 Insufficient cpu, 1 node(s) were unschedulable."
pub fn summary(total_nodes: usize, reasons: &BTreeMap<Unfit, usize>) -> String {
    if total_nodes == 0 {
        return "0/0 nodes are available: no nodes registered.".into();
    }
    let parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::{NodeCondition, NodeSpec, NodeStatus, PodSpec};

    fn node(ready: bool) -> Node {
        Node {
            metadata: api::ObjectMeta {
                name: Some("n".into()),
                labels: Some([("disk".to_string(), "ssd".to_string())].into()),
                ..Default::default()
            },
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn res(cpu: i128, mem: i128, pods: i128) -> Resources {
        Resources {
            cpu_millis: cpu,
            memory_bytes: mem,
            pods,
        }
    }

    #[test]
    fn resources_fit_against_allocatable_minus_used() {
        let pod = Pod::default();
        let n = node(true);
        let alloc = Ok(res(1000, 1000, 10));
        assert_eq!(
            fits(&pod, &res(500, 100, 1), &n, &alloc, &res(500, 0, 1)),
            Ok(())
        );
        assert_eq!(
            fits(&pod, &res(501, 100, 1), &n, &alloc, &res(500, 0, 1)),
            Err(Unfit::InsufficientCpu)
        );
        assert_eq!(
            fits(&pod, &res(0, 901, 1), &n, &alloc, &res(0, 100, 1)),
            Err(Unfit::InsufficientMemory)
        );
        assert_eq!(
            fits(&pod, &res(0, 0, 1), &n, &alloc, &res(0, 0, 10)),
            Err(Unfit::TooManyPods)
        );
        assert_eq!(
            fits(&pod, &res(0, 0, 1), &n, &Err("x".into()), &res(0, 0, 0)),
            Err(Unfit::BadNode("x".into()))
        );
    }

    #[test]
    fn node_state_selector_and_taints_filter() {
        let alloc = Ok(res(1000, 1000, 10));
        let zero = Resources::default();
        let mut pod = Pod::default();
        assert_eq!(
            fits(&pod, &zero, &node(false), &alloc, &zero),
            Err(Unfit::NotReady)
        );
        let mut n = node(true);
        n.spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        assert_eq!(
            fits(&pod, &zero, &n, &alloc, &zero),
            Err(Unfit::Unschedulable)
        );

        pod.spec = Some(PodSpec {
            node_selector: Some([("disk".to_string(), "hdd".to_string())].into()),
            ..Default::default()
        });
        assert_eq!(
            fits(&pod, &zero, &node(true), &alloc, &zero),
            Err(Unfit::NodeSelector)
        );

        let mut n = node(true);
        n.spec = Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "dedicated".into(),
                value: Some("gpu".into()),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let mut pod = Pod::default();
        assert_eq!(
            fits(&pod, &zero, &n, &alloc, &zero),
            Err(Unfit::Taint {
                key: "dedicated".into(),
                value: "gpu".into()
            })
        );
        pod.spec = Some(PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("dedicated".into()),
                operator: Some("Equal".into()),
                value: Some("gpu".into()),
                effect: Some("NoSchedule".into()),
                ..Default::default()
            }]),
            ..Default::default()
        });
        assert_eq!(fits(&pod, &zero, &n, &alloc, &zero), Ok(()));
    }

    #[test]
    fn toleration_matching_rules() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let tol =
            |key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>| Toleration {
                key: key.map(Into::into),
                operator: Some(op.into()),
                value: value.map(Into::into),
                effect: effect.map(Into::into),
                ..Default::default()
            };
        assert!(tolerates(&tol(None, "Exists", None, None), &taint));
        assert!(tolerates(
            &tol(Some("k"), "Exists", None, Some("NoExecute")),
            &taint
        ));
        assert!(!tolerates(
            &tol(Some("k"), "Exists", None, Some("NoSchedule")),
            &taint
        ));
        assert!(!tolerates(
            &tol(Some("k"), "Equal", Some("w"), None),
            &taint
        ));
        assert!(!tolerates(&tol(None, "Equal", None, None), &taint));
    }

    #[test]
    fn summary_counts_reasons() {
        let mut reasons = BTreeMap::new();
        reasons.insert(Unfit::InsufficientCpu, 2);
        reasons.insert(Unfit::Unschedulable, 1);
        assert_eq!(
            summary(3, &reasons),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
    }
}

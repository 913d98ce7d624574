//! The labels that tie a runtime container to its pod and attempt. They are the agent's
//! only memory that survives its own restart: a new agent lists containers by these labels
//! and adopts them (running ones keep running, restart counts carry on).

use std::collections::HashMap;

use super::LabelMap;

pub const LABEL_NODE: &str = "io.kvstore.node";
pub const LABEL_POD_NAMESPACE: &str = "io.kvstore.pod.namespace";
pub const LABEL_POD_NAME: &str = "io.kvstore.pod.name";
pub const LABEL_POD_UID: &str = "io.kvstore.pod.uid";
pub const LABEL_CONTAINER_NAME: &str = "io.kvstore.container.name";
pub const LABEL_ATTEMPT: &str = "io.kvstore.container.attempt";
pub const LABEL_GRACE_S: &str = "io.kvstore.pod.termination-grace-s";

/// The parsed labels of one of our containers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerLabels {
    pub node_name: String,
    pub pod_namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
    /// 0 for the first run, +1 per restart: the pod status's restartCount.
    pub attempt: u32,
    /// The pod's termination grace period, so orphans found after an agent restart (their
    /// pod deleted meanwhile) are still stopped gently.
    pub grace_s: u32,
}

impl ContainerLabels {
    pub fn to_map(&self) -> LabelMap {
        [
            (LABEL_NODE, self.node_name.clone()),
            (LABEL_POD_NAMESPACE, self.pod_namespace.clone()),
            (LABEL_POD_NAME, self.pod_name.clone()),
            (LABEL_POD_UID, self.pod_uid.clone()),
            (LABEL_CONTAINER_NAME, self.container_name.clone()),
            (LABEL_ATTEMPT, self.attempt.to_string()),
            (LABEL_GRACE_S, self.grace_s.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `None` when a label is missing or malformed: such a container is not ours to touch.
    pub fn from_map(labels: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| labels.get(k).cloned();
        Some(Self {
            node_name: get(LABEL_NODE)?,
            pod_namespace: get(LABEL_POD_NAMESPACE)?,
            pod_name: get(LABEL_POD_NAME)?,
            pod_uid: get(LABEL_POD_UID)?,
            container_name: get(LABEL_CONTAINER_NAME)?,
            attempt: get(LABEL_ATTEMPT)?.parse().ok()?,
            grace_s: get(LABEL_GRACE_S)
                .and_then(|g| g.parse().ok())
                .unwrap_or(30),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects_partial_labels() {
        let labels = ContainerLabels {
            node_name: "n1".into(),
            pod_namespace: "default".into(),
            pod_name: "web".into(),
            pod_uid: "u1".into(),
            container_name: "c".into(),
            attempt: 3,
            grace_s: 5,
        };
        let map: HashMap<String, String> = labels.to_map().into_iter().collect();
        assert_eq!(ContainerLabels::from_map(&map), Some(labels));
        let mut partial = map.clone();
        partial.remove(LABEL_POD_UID);
        assert_eq!(ContainerLabels::from_map(&partial), None);
        let mut bad = map;
        bad.insert(LABEL_ATTEMPT.into(), "three".into());
        assert_eq!(ContainerLabels::from_map(&bad), None);
    }
}

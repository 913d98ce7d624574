//! Turns one container of a Kubernetes `Pod` into the runtime's `ContainerSpec`: image,
//! command and args, env, ports, CPU and memory limits, and the labels that let a later
//! agent adopt it.

use api::k8s_openapi::api::core::v1::{Container, Pod};

use crate::error::{AgentError, Result};
use crate::quantity;
use crate::runtime::{ContainerLabels, ContainerSpec, PortSpec};

/// Kubernetes' default termination grace period.
pub const DEFAULT_GRACE_S: u32 = 30;

/// The identity of a pod on this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl PodKey {
    /// Errors when the pod lacks a name or uid (the apiserver always sets both).
    pub fn of(pod: &Pod) -> Result<Self> {
        let meta = &pod.metadata;
        let name = meta
            .name
            .clone()
            .ok_or_else(|| AgentError::InvalidSpec("pod without metadata.name".into()))?;
        let uid = meta
            .uid
            .clone()
            .ok_or_else(|| AgentError::InvalidSpec(format!("pod {name} without metadata.uid")))?;
        Ok(Self {
            namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
            name,
            uid,
        })
    }
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// The pod's termination grace period in seconds.
pub fn grace_s(pod: &Pod) -> u32 {
    pod.spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .map(|g| g.clamp(0, i64::from(u32::MAX)) as u32)
        .unwrap_or(DEFAULT_GRACE_S)
}

/// Docker container names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]`; Kubernetes names are a
/// subset, so only a defensive replacement is needed.
fn name_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The runtime spec of `container`'s attempt `attempt` in `pod` on `node_name`.
pub fn container_spec(
    node_name: &str,
    pod: &Pod,
    key: &PodKey,
    container: &Container,
    attempt: u32,
) -> Result<ContainerSpec> {
    let image = container
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            AgentError::InvalidSpec(format!("container {} has no image", container.name))
        })?;
    let env = container
        .env
        .iter()
        .flatten()
        // valueFrom (secrets, config maps, field refs) is not carried out yet.
        .filter_map(|e| e.value.as_ref().map(|v| format!("{}={v}", e.name)))
        .collect();
    let mut ports = Vec::new();
    for p in container.ports.iter().flatten() {
        let container_port = u16::try_from(p.container_port)
            .map_err(|_| AgentError::InvalidSpec(format!("container port {}", p.container_port)))?;
        let host_port = p
            .host_port
            .filter(|h| *h != 0)
            .map(|h| {
                u16::try_from(h).map_err(|_| AgentError::InvalidSpec(format!("host port {h}")))
            })
            .transpose()?;
        ports.push(PortSpec {
            container_port,
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            host_port,
        });
    }
    let limits = container.resources.as_ref().and_then(|r| r.limits.as_ref());
    let nano_cpus = limits
        .and_then(|l| l.get("cpu"))
        .map(|q| quantity::cpu_millis(&q.0).map(|m| m * 1_000_000))
        .transpose()?;
    let memory_bytes = limits
        .and_then(|l| l.get("memory"))
        .map(|q| quantity::memory_bytes(&q.0))
        .transpose()?;
    Ok(ContainerSpec {
        name: format!(
            "k8s_{}_{}_{}_{}_{attempt}",
            name_part(&container.name),
            name_part(&key.name),
            name_part(&key.namespace),
            name_part(&key.uid),
        ),
        image,
        entrypoint: container.command.clone().filter(|c| !c.is_empty()),
        cmd: container.args.clone().filter(|a| !a.is_empty()),
        env,
        working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
        ports,
        nano_cpus,
        memory_bytes,
        labels: ContainerLabels {
            node_name: node_name.to_string(),
            pod_namespace: key.namespace.clone(),
            pod_name: key.name.clone(),
            pod_uid: key.uid.clone(),
            container_name: container.name.clone(),
            attempt,
            grace_s: grace_s(pod),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::k8s_openapi::api::core::v1::{ContainerPort, EnvVar, PodSpec, ResourceRequirements};
    use api::k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    fn pod(container: Container) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("prod".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![container],
                termination_grace_period_seconds: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn maps_image_command_env_ports_limits_and_labels() {
        let container = Container {
            name: "main".into(),
            image: Some("kvstore-busybox:latest".into()),
            command: Some(vec!["httpd".into()]),
            args: Some(vec!["-f".into()]),
            env: Some(vec![EnvVar {
                name: "A".into(),
                value: Some("1".into()),
                ..Default::default()
            }]),
            ports: Some(vec![ContainerPort {
                container_port: 80,
                host_port: Some(8080),
                ..Default::default()
            }]),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("500m".into())),
                    ("memory".into(), Quantity("64Mi".into())),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pod(container.clone());
        let key = PodKey::of(&pod).unwrap();
        let spec = container_spec("n1", &pod, &key, &container, 2).unwrap();
        assert_eq!(spec.name, "k8s_main_web_prod_u-1_2");
        assert_eq!(spec.entrypoint, Some(vec!["httpd".to_string()]));
        assert_eq!(spec.cmd, Some(vec!["-f".to_string()]));
        assert_eq!(spec.env, vec!["A=1".to_string()]);
        assert_eq!(
            spec.ports,
            vec![PortSpec {
                container_port: 80,
                protocol: "tcp".into(),
                host_port: Some(8080)
            }]
        );
        assert_eq!(spec.nano_cpus, Some(500_000_000));
        assert_eq!(spec.memory_bytes, Some(64 << 20));
        assert_eq!(spec.labels.attempt, 2);
        assert_eq!(spec.labels.grace_s, 7);
        assert_eq!(spec.labels.node_name, "n1");
    }

    #[test]
    fn rejects_bad_quantities_and_missing_images() {
        let mut container = Container {
            name: "main".into(),
            image: Some("img".into()),
            resources: Some(ResourceRequirements {
                limits: Some(BTreeMap::from([("memory".into(), Quantity("lots".into()))])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let p = pod(container.clone());
        let key = PodKey::of(&p).unwrap();
        let err = container_spec("n1", &p, &key, &container, 0).unwrap_err();
        assert!(err.to_string().contains("memory quantity"), "{err}");
        container.resources = None;
        container.image = None;
        assert!(container_spec("n1", &p, &key, &container, 0).is_err());
        let mut nameless = p.clone();
        nameless.metadata.uid = None;
        assert!(PodKey::of(&nameless).is_err());
    }
}

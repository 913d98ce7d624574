//! Flat re-exports of the Kubernetes object types we serve (`api::Pod`, `api::Lease`, ...),
//! so users need not spell `k8s_openapi::api::core::v1::Pod`. The types are Kubernetes' own
//! (k8s-openapi, API v1.33): what kubectl sends and reads, field for field.

pub use k8s_openapi::ByteString;
pub use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, DeploymentStrategy,
    ReplicaSet, ReplicaSetCondition, ReplicaSetSpec, ReplicaSetStatus, RollingUpdateDeployment,
};
pub use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    SelfSubjectRulesReview, SelfSubjectRulesReviewSpec, SubjectAccessReviewStatus,
};
pub use k8s_openapi::api::autoscaling::v1::{Scale, ScaleSpec, ScaleStatus};
pub use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
pub use k8s_openapi::api::core::v1::{
    Binding, ConfigMap, Container, ContainerPort, ContainerState, ContainerStatus, EndpointAddress,
    EndpointPort, EndpointSubset, Endpoints, EnvVar, Event, EventSource, HTTPGetAction, Namespace,
    NamespaceSpec, NamespaceStatus, Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus,
    NodeSystemInfo, ObjectReference, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec, Probe,
    ResourceRequirements, Secret, Service, ServiceAccount, ServicePort, ServiceSpec, ServiceStatus,
    Taint, Toleration,
};
pub use k8s_openapi::api::rbac::v1::{
    AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
    Subject,
};
pub use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, LabelSelectorRequirement, ListMeta, MicroTime, ObjectMeta,
    OwnerReference, Status, StatusCause, StatusDetails, Time,
};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
pub use k8s_openapi::jiff::Timestamp;

/// The current wall-clock time as a Kubernetes timestamp (k8s-openapi builds jiff without
/// its clock, so it is read here from `SystemTime`).
pub fn now() -> Timestamp {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let nanos = i128::try_from(since_epoch.as_nanos()).unwrap_or(0);
    Timestamp::from_nanosecond(nanos).unwrap_or(Timestamp::UNIX_EPOCH)
}

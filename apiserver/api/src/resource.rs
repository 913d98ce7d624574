//! Which URL an object type lives at: [`Object`] ties a k8s-openapi type to its group,
//! version, plural and scope (taken from k8s-openapi's own `Resource` trait, so there is
//! no second table to keep in step), and builds collection, object and subresource paths.
//! The apiserver's table (`apiserver/src/resources.rs`) must agree; the apiserver's
//! `tests/client.rs` checks every served resource against it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::{
    ClusterResourceScope, ListableResource, Metadata, NamespaceResourceScope, Resource,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The scope of a top-level resource: namespaced or cluster-scoped.
pub trait Scope {
    /// True for `/namespaces/{ns}/<plural>`, false for `/<plural>`.
    const NAMESPACED: bool;
}

impl Scope for NamespaceResourceScope {
    const NAMESPACED: bool = true;
}

impl Scope for ClusterResourceScope {
    const NAMESPACED: bool = false;
}

/// A storable top-level object the client can get, list, watch and write.
///
/// Implemented for every k8s-openapi type that is a listable, top-level resource with
/// `ObjectMeta` (Pod, Node, Deployment, Lease, ClusterRole, ...).
pub trait Object:
    Resource
    + ListableResource
    + Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + std::fmt::Debug
    + 'static
{
    /// Namespaced (true) or cluster-scoped (false).
    const NAMESPACED: bool;

    /// The URL prefix of the group/version: `/api/v1` or `/apis/apps/v1`.
    fn group_version_path() -> String {
        if Self::GROUP.is_empty() {
            format!("/api/{}", Self::VERSION)
        } else {
            format!("/apis/{}/{}", Self::GROUP, Self::VERSION)
        }
    }

    /// The collection path: `/api/v1/namespaces/{ns}/pods`, or with `None` for a
    /// namespaced resource every namespace's objects (`/api/v1/pods`).
    fn collection_path(namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if Self::NAMESPACED => format!(
                "{}/namespaces/{}/{}",
                Self::group_version_path(),
                ns,
                Self::URL_PATH_SEGMENT
            ),
            _ => format!("{}/{}", Self::group_version_path(), Self::URL_PATH_SEGMENT),
        }
    }

    /// One object's path: `/api/v1/namespaces/{ns}/pods/{name}`, `/api/v1/nodes/{name}`.
    fn object_path(namespace: Option<&str>, name: &str) -> String {
        format!("{}/{}", Self::collection_path(namespace), name)
    }

    /// A subresource's path: `.../pods/{name}/status`.
    fn subresource_path(namespace: Option<&str>, name: &str, subresource: &str) -> String {
        format!("{}/{}", Self::object_path(namespace, name), subresource)
    }
}

impl<T> Object for T
where
    T: Resource
        + ListableResource
        + Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + std::fmt::Debug
        + 'static,
    T::Scope: Scope,
{
    const NAMESPACED: bool = <T::Scope as Scope>::NAMESPACED;
}

/// The cache key of an object: `namespace/name`, or `name` for cluster-scoped ones (the
/// same keys client-go's informers and work queues use).
pub fn object_key<T: Object>(object: &T) -> String {
    let meta = object.metadata();
    key_of(
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or(""),
    )
}

/// `namespace/name` or `name`.
pub fn key_of(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key back into (namespace, name).
pub fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once('/') {
        Some((ns, name)) => (Some(ns), name),
        None => (None, key),
    }
}

/// The object's namespace only when its type is namespaced (a stray namespace on a
/// cluster-scoped object must not change its path).
pub fn namespace_of<T: Object>(object: &T) -> Option<&str> {
    if T::NAMESPACED {
        object.metadata().namespace.as_deref()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::*;

    #[test]
    fn paths_follow_the_api_conventions() {
        assert_eq!(
            Pod::object_path(Some("default"), "web"),
            "/api/v1/namespaces/default/pods/web"
        );
        assert_eq!(Pod::collection_path(None), "/api/v1/pods");
        assert_eq!(Node::object_path(Some("ignored"), "n1"), "/api/v1/nodes/n1");
        assert_eq!(
            Deployment::subresource_path(Some("ns"), "d", "scale"),
            "/apis/apps/v1/namespaces/ns/deployments/d/scale"
        );
        assert_eq!(
            Lease::collection_path(Some("kube-system")),
            "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
        );
        assert_eq!(
            ClusterRoleBinding::object_path(None, "x"),
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/x"
        );
        const { assert!(Endpoints::NAMESPACED && !Namespace::NAMESPACED) };
    }

    #[test]
    fn keys_round_trip() {
        let mut pod = Pod::default();
        pod.metadata.namespace = Some("default".into());
        pod.metadata.name = Some("web".into());
        assert_eq!(object_key(&pod), "default/web");
        assert_eq!(split_key("default/web"), (Some("default"), "web"));
        assert_eq!(split_key("n1"), (None, "n1"));
        assert_eq!(key_of(Some(""), "n1"), "n1");
    }
}

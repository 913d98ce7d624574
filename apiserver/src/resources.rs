//! The table of resources the apiserver serves: one entry per resource, with what
//! discovery, routing, storage keys, OpenAPI, RBAC and `kubectl` need to know of it.
//!
//! Every other module asks this table instead of repeating resource names, so adding a
//! resource is one entry here (plus its schema and, if it has one, its Table columns).

/// One served resource (a plural name in one group/version).
#[derive(Debug)]
pub struct ResourceInfo {
    /// API group; "" for the core group (`/api/v1`).
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// The object kind, e.g. "Pod".
    pub kind: &'static str,
    /// The resource (URL) name, e.g. "pods".
    pub plural: &'static str,
    /// Singular name, e.g. "pod".
    pub singular: &'static str,
    /// kubectl's short names, e.g. ["po"].
    pub short_names: &'static [&'static str],
    /// Namespaced (`/namespaces/{ns}/pods/{name}`) or cluster-scoped (`/nodes/{name}`).
    pub namespaced: bool,
    /// Subresources served under `{name}/`: "status", "scale", "binding", "log".
    pub subresources: &'static [&'static str],
    /// Verbs discovery advertises for the main resource.
    pub verbs: &'static [&'static str],
    /// Discovery categories (kubectl `get all` uses "all").
    pub categories: &'static [&'static str],
    /// False for request-only kinds that are never stored (access reviews).
    pub stored: bool,
}

/// The verbs of a normal stored resource.
const CRUD: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Every resource the apiserver serves.
pub static RESOURCES: &[ResourceInfo] = &[
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        short_names: &["ns"],
        namespaced: false,
        subresources: &["status"],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        short_names: &["no"],
        namespaced: false,
        subresources: &["status"],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        short_names: &["po"],
        namespaced: true,
        subresources: &["status", "binding", "log"],
        verbs: CRUD,
        categories: &["all"],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        short_names: &["svc"],
        namespaced: true,
        subresources: &["status"],
        verbs: CRUD,
        categories: &["all"],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        short_names: &["ep"],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        short_names: &["ev"],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        short_names: &["cm"],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        short_names: &["sa"],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        short_names: &["deploy"],
        namespaced: true,
        subresources: &["status", "scale"],
        verbs: CRUD,
        categories: &["all"],
        stored: true,
    },
    ResourceInfo {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        short_names: &["rs"],
        namespaced: true,
        subresources: &["status", "scale"],
        verbs: CRUD,
        categories: &["all"],
        stored: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "Role",
        plural: "roles",
        singular: "role",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "RoleBinding",
        plural: "rolebindings",
        singular: "rolebinding",
        short_names: &[],
        namespaced: true,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        singular: "clusterrole",
        short_names: &[],
        namespaced: false,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        short_names: &[],
        namespaced: false,
        subresources: &[],
        verbs: CRUD,
        categories: &[],
        stored: true,
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectAccessReview",
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        short_names: &[],
        namespaced: false,
        subresources: &[],
        verbs: &["create"],
        categories: &[],
        stored: false,
    },
    ResourceInfo {
        group: "authorization.k8s.io",
        version: "v1",
        kind: "SelfSubjectRulesReview",
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        short_names: &[],
        namespaced: false,
        subresources: &[],
        verbs: &["create"],
        categories: &[],
        stored: false,
    },
];

impl ResourceInfo {
    /// `v1` for the core group, else `group/version` (an object's `apiVersion`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The URL prefix of the group/version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of these objects, e.g. "PodList".
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Store key prefix of every object of this resource: `/registry/pods/`.
    pub fn store_prefix(&self) -> String {
        format!("/registry/{}/", self.plural)
    }

    /// Store key prefix of one namespace's objects: `/registry/pods/default/`.
    pub fn store_namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.plural, namespace)
    }

    /// Store key of one object: `/registry/<plural>/<namespace>/<name>` or, for
    /// cluster-scoped resources, `/registry/<plural>/<name>`.
    pub fn store_key(&self, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/{}", self.plural, ns, name),
            _ => format!("/registry/{}/{}", self.plural, name),
        }
    }

    /// Whether `sub` is one of this resource's subresources.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
}

/// The resource served as `plural` in `group` (any version we serve).
pub fn lookup(group: &str, plural: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
}

/// The resource whose objects have this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

/// The distinct group/versions served, core first, in table order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_registry_layout() {
        let pods = lookup("", "pods").unwrap();
        assert_eq!(
            pods.store_key(Some("default"), "web-1"),
            "/registry/pods/default/web-1"
        );
        let nodes = lookup("", "nodes").unwrap();
        assert_eq!(nodes.store_key(None, "n1"), "/registry/nodes/n1");
        let deploy = by_kind("apps/v1", "Deployment").unwrap();
        assert_eq!(deploy.group_version_path(), "/apis/apps/v1");
        assert!(deploy.has_subresource("scale"));
        assert!(by_kind("v1", "Deployment").is_none());
    }

    #[test]
    fn plurals_are_unique_per_group_and_core_comes_first() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{}",
                    a.plural
                );
            }
        }
        assert_eq!(group_versions()[0], ("", "v1"));
    }
}

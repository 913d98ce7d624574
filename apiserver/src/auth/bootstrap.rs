//! The RBAC policy created at first start when missing, named as Kubernetes names it:
//! cluster-admin for `system:masters`; system:basic-user, system:discovery and
//! system:public-info-viewer for every authenticated user; admin, edit and view to bind
//! per namespace (their rules written out, not aggregated); and the roles of our own
//! components: system:kube-scheduler, system:kube-controller-manager and system:node.
//!
//! Every object carries `rbac.authorization.kubernetes.io/autoupdate: "true"`, as kube's
//! bootstrap objects do.

use serde_json::{Value, json};

const RBAC_API: &str = "rbac.authorization.k8s.io/v1";
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];
/// Discovery, version and health paths every user may read.
const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
];
const PUBLIC_INFO_URLS: &[&str] = &["/healthz", "/livez", "/readyz", "/version", "/version/"];

fn metadata(name: &str) -> Value {
    json!({
        "name": name,
        "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}
    })
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn urls(urls: &[&str], verbs: &[&str]) -> Value {
    json!({"nonResourceURLs": urls, "verbs": verbs})
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Value {
    json!({"apiVersion": RBAC_API, "kind": "ClusterRole", "metadata": metadata(name), "rules": rules})
}

fn binding(name: &str, role: &str, subjects: &[(&str, &str)]) -> Value {
    let subjects: Vec<Value> = subjects
        .iter()
        .map(|(kind, name)| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name}))
        .collect();
    json!({
        "apiVersion": RBAC_API, "kind": "ClusterRoleBinding", "metadata": metadata(name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": subjects
    })
}

fn concat(a: &[&'static str], b: &[&'static str]) -> Vec<&'static str> {
    a.iter().chain(b).copied().collect()
}

/// The namespaced workload resources view/edit/admin speak of.
const CORE_WORKLOAD: &[&str] = &[
    "pods",
    "pods/log",
    "pods/status",
    "services",
    "services/status",
    "endpoints",
    "events",
    "serviceaccounts",
    "configmaps",
];
const APPS_WORKLOAD: &[&str] = &[
    "deployments",
    "deployments/status",
    "deployments/scale",
    "replicasets",
    "replicasets/status",
    "replicasets/scale",
];

fn view_rules() -> Vec<Value> {
    vec![
        rule(&[""], CORE_WORKLOAD, READ),
        rule(&[""], &["namespaces", "namespaces/status"], READ),
        rule(&["apps"], APPS_WORKLOAD, READ),
        rule(&["coordination.k8s.io"], &["leases"], READ),
    ]
}

fn edit_rules() -> Vec<Value> {
    let mut rules = view_rules();
    let writable_core = [
        "pods",
        "services",
        "endpoints",
        "events",
        "serviceaccounts",
        "configmaps",
        "secrets",
    ];
    rules.push(rule(&[""], &writable_core, WRITE));
    // As Kubernetes: `view` may not read Secrets; `edit` (and `admin`) may.
    rules.push(rule(&[""], &["secrets"], READ));
    rules.push(rule(
        &["apps"],
        &[
            "deployments",
            "deployments/scale",
            "replicasets",
            "replicasets/scale",
        ],
        WRITE,
    ));
    rules.push(rule(&["coordination.k8s.io"], &["leases"], WRITE));
    rules
}

fn admin_rules() -> Vec<Value> {
    let mut rules = edit_rules();
    rules.push(rule(
        &["rbac.authorization.k8s.io"],
        &["roles", "rolebindings"],
        &concat(READ, WRITE),
    ));
    rules
}

/// Objects to create at first start if missing: cluster-admin + binding for group
/// system:masters, system:basic-user/system:discovery for system:authenticated (discovery,
/// /version, /healthz, self access reviews), system:kube-scheduler, system:kube-controller-manager,
/// system:node (for agents: group system:nodes), admin/edit/view aggregated-by-hand roles.
pub fn bootstrap_policy() -> Vec<Value> {
    let all = &["*"][..];
    let events = rule(&[""], &["events"], &["create", "patch", "update"]);
    let leases = rule(&["coordination.k8s.io"], &["leases"], &concat(READ, WRITE));
    vec![
        cluster_role("cluster-admin", vec![rule(all, all, all), urls(all, all)]),
        cluster_role(
            "system:basic-user",
            vec![rule(
                &["authorization.k8s.io"],
                &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                &["create"],
            )],
        ),
        cluster_role("system:discovery", vec![urls(DISCOVERY_URLS, &["get"])]),
        cluster_role(
            "system:public-info-viewer",
            vec![urls(PUBLIC_INFO_URLS, &["get"])],
        ),
        cluster_role("view", view_rules()),
        cluster_role("edit", edit_rules()),
        cluster_role("admin", admin_rules()),
        cluster_role(
            "system:kube-scheduler",
            vec![
                rule(&[""], &["pods", "nodes", "namespaces", "services"], READ),
                rule(&[""], &["pods/binding", "bindings"], &["create"]),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&["apps"], &["replicasets", "deployments"], READ),
                events.clone(),
                leases.clone(),
            ],
        ),
        cluster_role(
            "system:kube-controller-manager",
            vec![
                rule(
                    &[""],
                    &[
                        "pods",
                        "pods/status",
                        "endpoints",
                        "services",
                        "services/status",
                        "serviceaccounts",
                        "namespaces",
                        "namespaces/status",
                        "namespaces/finalize",
                        "nodes",
                        "nodes/status",
                    ],
                    &concat(READ, WRITE),
                ),
                rule(&["apps"], APPS_WORKLOAD, &concat(READ, WRITE)),
                // The garbage collector and the namespace controller act on every
                // resource (Kubernetes' generic-garbage-collector and
                // namespace-controller roles).
                rule(
                    all,
                    all,
                    &[
                        "get",
                        "list",
                        "watch",
                        "patch",
                        "update",
                        "delete",
                        "deletecollection",
                    ],
                ),
                events.clone(),
                leases.clone(),
            ],
        ),
        cluster_role(
            "system:node",
            vec![
                rule(
                    &[""],
                    &["nodes"],
                    &concat(READ, &["create", "update", "patch"]),
                ),
                rule(&[""], &["nodes/status"], &["patch", "update"]),
                rule(&[""], &["pods"], &concat(READ, &["create", "delete"])),
                rule(&[""], &["pods/status"], &["patch", "update"]),
                rule(&[""], &["services", "endpoints"], READ),
                events,
                leases,
            ],
        ),
        binding(
            "cluster-admin",
            "cluster-admin",
            &[("Group", "system:masters")],
        ),
        binding(
            "system:basic-user",
            "system:basic-user",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:discovery",
            "system:discovery",
            &[("Group", "system:authenticated")],
        ),
        binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            &[
                ("Group", "system:authenticated"),
                ("Group", "system:unauthenticated"),
            ],
        ),
        binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            &[("User", "system:kube-scheduler")],
        ),
        binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            &[("User", "system:kube-controller-manager")],
        ),
        binding("system:node", "system:node", &[("Group", "system:nodes")]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Attributes, Decision, RbacPolicy, UserInfo};
    use crate::resources::by_kind;
    use crate::validation::{FieldValidation, validate};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

    fn policy() -> RbacPolicy {
        let objs = bootstrap_policy();
        let roles: Vec<ClusterRole> = objs
            .iter()
            .filter(|o| o["kind"] == "ClusterRole")
            .map(|o| serde_json::from_value(o.clone()).unwrap())
            .collect();
        let bindings: Vec<ClusterRoleBinding> = objs
            .iter()
            .filter(|o| o["kind"] == "ClusterRoleBinding")
            .map(|o| serde_json::from_value(o.clone()).unwrap())
            .collect();
        RbacPolicy::new(vec![], roles, vec![], bindings)
    }

    fn can(
        p: &RbacPolicy,
        user: &str,
        groups: &[&str],
        verb: &str,
        group: &str,
        res: &str,
    ) -> bool {
        let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
        let a = Attributes {
            user: UserInfo {
                name: user.into(),
                uid: String::new(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            },
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "default".into(),
            name: "x".into(),
            resource_request: !res.starts_with('/'),
            path: res.into(),
        };
        p.authorize(&a) == Decision::Allow
    }

    #[test]
    fn every_object_is_valid_and_marked_autoupdate() {
        for o in bootstrap_policy() {
            let r = by_kind(
                o["apiVersion"].as_str().unwrap(),
                o["kind"].as_str().unwrap(),
            )
            .unwrap();
            assert_eq!(validate(r, &o, FieldValidation::Strict), Ok(vec![]), "{o}");
            assert_eq!(
                o["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"],
                "true"
            );
        }
    }

    #[test]
    fn bootstrap_roles_grant_what_their_users_need() {
        let p = policy();
        let auth = "system:authenticated";
        assert!(can(
            &p,
            "root",
            &["system:masters", auth],
            "delete",
            "apps",
            "deployments"
        ));
        assert!(can(&p, "bob", &[auth], "get", "", "/apis/apps/v1"));
        assert!(can(&p, "bob", &[auth], "get", "", "/version"));
        assert!(!can(&p, "bob", &[auth], "get", "", "/metrics"));
        assert!(!can(&p, "bob", &[auth], "list", "", "pods"));
        assert!(can(
            &p,
            "bob",
            &[auth],
            "create",
            "authorization.k8s.io",
            "selfsubjectaccessreviews"
        ));
        assert!(can(
            &p,
            "system:kube-scheduler",
            &[auth],
            "create",
            "",
            "pods/binding"
        ));
        assert!(!can(
            &p,
            "system:kube-scheduler",
            &[auth],
            "delete",
            "",
            "pods"
        ));
        assert!(can(
            &p,
            "system:kube-controller-manager",
            &[auth],
            "create",
            "",
            "pods"
        ));
        assert!(can(
            &p,
            "system:kube-controller-manager",
            &[auth],
            "update",
            "apps",
            "deployments/status"
        ));
        assert!(can(
            &p,
            "system:node:n1",
            &["system:nodes", auth],
            "patch",
            "",
            "nodes/status"
        ));
        assert!(can(
            &p,
            "system:node:n1",
            &["system:nodes", auth],
            "update",
            "coordination.k8s.io",
            "leases"
        ));
        assert!(!can(
            &p,
            "system:node:n1",
            &["system:nodes", auth],
            "delete",
            "apps",
            "deployments"
        ));
    }
}

//! RBAC authorization, as Kubernetes defines it: rules are only ever additive (no deny),
//! a ClusterRoleBinding grants its ClusterRole everywhere, a RoleBinding grants its Role
//! or ClusterRole inside its own namespace only. Rules match on verbs, API groups,
//! resources (`pods`, `pods/status`, `*`, `*/scale`), resource names, and for
//! non-resource requests on URL paths (exact, or a prefix ending in `*`).
//!
//! A policy is an immutable snapshot; the server builds a new one when its watch cache
//! sees a role or binding change, and swaps it in.

use std::collections::HashMap;

use k8s_openapi::api::authorization::v1::{NonResourceRule, ResourceRule};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

use super::{Attributes, Decision, UserInfo};

/// The roles and bindings in force, indexed for lookup.
pub struct RbacPolicy {
    /// Rules of each Role, by (namespace, name).
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    /// Rules of each ClusterRole, by name.
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    /// RoleBindings by namespace: (subjects, role reference).
    role_bindings: HashMap<String, Vec<(Vec<Subject>, RoleRef)>>,
    cluster_role_bindings: Vec<(Vec<Subject>, RoleRef)>,
}

fn has(list: &Option<Vec<String>>, want: &str) -> bool {
    list.as_deref()
        .is_some_and(|l| l.iter().any(|x| x == "*" || x == want))
}

/// Whether a subject names this user (a ServiceAccount subject without a namespace
/// means the binding's own namespace).
fn subject_applies(s: &Subject, user: &UserInfo, binding_namespace: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == user.name,
        "Group" => user.groups.contains(&s.name),
        "ServiceAccount" => {
            let ns = s
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            user.name == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

/// Whether a rule allows a resource request.
fn resource_rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !rule.verbs.iter().any(|v| v == "*" || *v == a.verb) {
        return false;
    }
    if !has(&rule.api_groups, &a.api_group) {
        return false;
    }
    let resource_ok = rule.resources.as_deref().is_some_and(|rs| {
        rs.iter().any(|r| {
            if a.subresource.is_empty() {
                r == "*" || *r == a.resource
            } else {
                r == "*"
                    || *r == format!("{}/{}", a.resource, a.subresource)
                    || *r == format!("*/{}", a.subresource)
                    || *r == format!("{}/*", a.resource)
            }
        })
    });
    if !resource_ok {
        return false;
    }
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        // A rule limited to names never allows a request without one (list, create).
        Some(names) => !a.name.is_empty() && names.contains(&a.name),
    }
}

/// Whether a rule allows a non-resource request (a URL path).
fn non_resource_rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !rule.verbs.iter().any(|v| v == "*" || *v == a.verb) {
        return false;
    }
    rule.non_resource_urls.as_deref().is_some_and(|urls| {
        urls.iter().any(|u| match u.strip_suffix('*') {
            Some(prefix) => a.path.starts_with(prefix),
            None => *u == a.path,
        })
    })
}

impl RbacPolicy {
    /// Indexes the roles and bindings (k8s_openapi::api::rbac::v1 types).
    pub fn new(
        roles: Vec<Role>,
        cluster_roles: Vec<ClusterRole>,
        role_bindings: Vec<RoleBinding>,
        cluster_role_bindings: Vec<ClusterRoleBinding>,
    ) -> Self {
        let roles = roles
            .into_iter()
            .map(|r| {
                let key = (
                    r.metadata.namespace.unwrap_or_default(),
                    r.metadata.name.unwrap_or_default(),
                );
                (key, r.rules.unwrap_or_default())
            })
            .collect();
        let cluster_roles = cluster_roles
            .into_iter()
            .map(|r| {
                (
                    r.metadata.name.unwrap_or_default(),
                    r.rules.unwrap_or_default(),
                )
            })
            .collect();
        let mut by_ns: HashMap<String, Vec<(Vec<Subject>, RoleRef)>> = HashMap::new();
        for b in role_bindings {
            by_ns
                .entry(b.metadata.namespace.unwrap_or_default())
                .or_default()
                .push((b.subjects.unwrap_or_default(), b.role_ref));
        }
        let cluster_role_bindings = cluster_role_bindings
            .into_iter()
            .map(|b| (b.subjects.unwrap_or_default(), b.role_ref))
            .collect();
        RbacPolicy {
            roles,
            cluster_roles,
            role_bindings: by_ns,
            cluster_role_bindings,
        }
    }

    /// The rules a role reference grants (in `namespace` for a Role).
    fn rules_of(&self, r: &RoleRef, namespace: &str) -> &[PolicyRule] {
        let rules = match r.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&r.name),
            "Role" => self.roles.get(&(namespace.to_string(), r.name.clone())),
            _ => None,
        };
        rules.map_or(&[], Vec::as_slice)
    }

    /// Every rule that applies to `user` in `namespace` ("" = cluster-wide only).
    fn applicable_rules<'a>(
        &'a self,
        user: &'a UserInfo,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a PolicyRule> + 'a {
        let cluster = self
            .cluster_role_bindings
            .iter()
            .filter(move |(subjects, _)| subjects.iter().any(|s| subject_applies(s, user, "")))
            .flat_map(move |(_, r)| self.rules_of(r, ""));
        let local = (!namespace.is_empty())
            .then(|| self.role_bindings.get(namespace))
            .flatten()
            .into_iter()
            .flatten()
            .filter(move |(subjects, _)| {
                subjects.iter().any(|s| subject_applies(s, user, namespace))
            })
            .flat_map(move |(_, r)| self.rules_of(r, namespace));
        cluster.chain(local)
    }

    /// Allow if any rule bound to the user (or one of its groups) allows the request.
    pub fn authorize(&self, attrs: &Attributes) -> Decision {
        let allowed = if attrs.resource_request {
            self.applicable_rules(&attrs.user, &attrs.namespace)
                .any(|r| resource_rule_allows(r, attrs))
        } else {
            // Non-resource URLs are granted by ClusterRoleBindings only.
            self.applicable_rules(&attrs.user, "")
                .any(|r| non_resource_rule_allows(r, attrs))
        };
        if allowed {
            return Decision::Allow;
        }
        let user = &attrs.user.name;
        let reason = if !attrs.resource_request {
            format!("User {user:?} cannot {} path {:?}", attrs.verb, attrs.path)
        } else {
            let resource = if attrs.subresource.is_empty() {
                attrs.resource.clone()
            } else {
                format!("{}/{}", attrs.resource, attrs.subresource)
            };
            let scope = if attrs.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", attrs.namespace)
            };
            format!(
                "User {user:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                attrs.verb, attrs.api_group
            )
        };
        Decision::Deny(reason)
    }

    /// The rules `user` has in `namespace`, for SelfSubjectRulesReview.
    pub fn rules_for(
        &self,
        user: &UserInfo,
        namespace: &str,
    ) -> (Vec<ResourceRule>, Vec<NonResourceRule>) {
        let mut resource_rules = Vec::new();
        let mut non_resource_rules = Vec::new();
        for r in self.applicable_rules(user, namespace) {
            if r.resources.as_ref().is_some_and(|x| !x.is_empty()) {
                resource_rules.push(ResourceRule {
                    api_groups: r.api_groups.clone(),
                    resource_names: r.resource_names.clone(),
                    resources: r.resources.clone(),
                    verbs: r.verbs.clone(),
                });
            }
            if r.non_resource_urls.as_ref().is_some_and(|x| !x.is_empty()) {
                non_resource_rules.push(NonResourceRule {
                    non_resource_urls: r.non_resource_urls.clone(),
                    verbs: r.verbs.clone(),
                });
            }
        }
        (resource_rules, non_resource_rules)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str], names: &[&str]) -> PolicyRule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        PolicyRule {
            api_groups: Some(v(groups)),
            resources: Some(v(resources)),
            resource_names: (!names.is_empty()).then(|| v(names)),
            verbs: v(verbs),
            non_resource_urls: None,
        }
    }

    fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: ns.map(str::to_string),
            name: Some(name.to_string()),
            ..Default::default()
        }
    }

    fn subject(kind: &str, name: &str, ns: Option<&str>) -> Subject {
        Subject {
            kind: kind.into(),
            name: name.into(),
            namespace: ns.map(str::to_string),
            api_group: None,
        }
    }

    fn role_ref(kind: &str, name: &str) -> RoleRef {
        RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn req(u: &UserInfo, verb: &str, group: &str, res: &str, ns: &str, name: &str) -> Attributes {
        let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
        Attributes {
            user: u.clone(),
            verb: verb.into(),
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            resource_request: true,
            path: String::new(),
        }
    }

    fn policy() -> RbacPolicy {
        let cluster_roles = vec![
            ClusterRole {
                metadata: meta(None, "admin-all"),
                rules: Some(vec![PolicyRule {
                    api_groups: Some(vec!["*".into()]),
                    resources: Some(vec!["*".into()]),
                    verbs: vec!["*".into()],
                    non_resource_urls: Some(vec!["*".into()]),
                    resource_names: None,
                }]),
                aggregation_rule: None,
            },
            ClusterRole {
                metadata: meta(None, "pod-reader"),
                rules: Some(vec![rule(
                    &["get", "list", "watch"],
                    &[""],
                    &["pods", "pods/log"],
                    &[],
                )]),
                aggregation_rule: None,
            },
            ClusterRole {
                metadata: meta(None, "health"),
                rules: Some(vec![PolicyRule {
                    verbs: vec!["get".into()],
                    non_resource_urls: Some(vec!["/healthz".into(), "/apis/*".into()]),
                    ..Default::default()
                }]),
                aggregation_rule: None,
            },
            ClusterRole {
                metadata: meta(None, "scaler"),
                rules: Some(vec![rule(
                    &["update", "patch"],
                    &["apps"],
                    &["*/scale"],
                    &[],
                )]),
                aggregation_rule: None,
            },
        ];
        let roles = vec![Role {
            metadata: meta(Some("team"), "one-deploy"),
            rules: Some(vec![rule(
                &["get", "update"],
                &["apps"],
                &["deployments"],
                &["web"],
            )]),
        }];
        let role_bindings = vec![
            RoleBinding {
                metadata: meta(Some("team"), "readers"),
                role_ref: role_ref("ClusterRole", "pod-reader"),
                subjects: Some(vec![subject("User", "alice", None)]),
            },
            RoleBinding {
                metadata: meta(Some("team"), "one"),
                role_ref: role_ref("Role", "one-deploy"),
                subjects: Some(vec![subject("ServiceAccount", "bot", None)]),
            },
            RoleBinding {
                metadata: meta(Some("other"), "missing-role"),
                role_ref: role_ref("Role", "one-deploy"),
                subjects: Some(vec![subject("User", "alice", None)]),
            },
        ];
        let cluster_role_bindings = vec![
            ClusterRoleBinding {
                metadata: meta(None, "admins"),
                role_ref: role_ref("ClusterRole", "admin-all"),
                subjects: Some(vec![subject("Group", "system:masters", None)]),
            },
            ClusterRoleBinding {
                metadata: meta(None, "health"),
                role_ref: role_ref("ClusterRole", "health"),
                subjects: Some(vec![subject("Group", "system:authenticated", None)]),
            },
            ClusterRoleBinding {
                metadata: meta(None, "scalers"),
                role_ref: role_ref("ClusterRole", "scaler"),
                subjects: Some(vec![subject("User", "hpa", None)]),
            },
        ];
        RbacPolicy::new(roles, cluster_roles, role_bindings, cluster_role_bindings)
    }

    #[test]
    fn cluster_admin_group_may_do_anything() {
        let p = policy();
        let admin = user("root", &["system:masters", "system:authenticated"]);
        assert_eq!(
            p.authorize(&req(&admin, "delete", "apps", "deployments", "x", "y")),
            Decision::Allow
        );
        let mut a = req(&admin, "get", "", "", "", "");
        a.resource_request = false;
        a.path = "/metrics".into();
        assert_eq!(p.authorize(&a), Decision::Allow);
    }

    #[test]
    fn role_binding_to_cluster_role_is_scoped_to_its_namespace() {
        let p = policy();
        let alice = user("alice", &["system:authenticated"]);
        assert_eq!(
            p.authorize(&req(&alice, "list", "", "pods", "team", "")),
            Decision::Allow
        );
        assert_eq!(
            p.authorize(&req(&alice, "get", "", "pods/log", "team", "p")),
            Decision::Allow
        );
        let Decision::Deny(reason) = p.authorize(&req(&alice, "list", "", "pods", "default", ""))
        else {
            panic!("allowed outside the namespace")
        };
        assert_eq!(
            reason,
            "User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        // All namespaces at once is a cluster-scope request: not granted by a RoleBinding.
        assert!(matches!(
            p.authorize(&req(&alice, "list", "", "pods", "", "")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.authorize(&req(&alice, "delete", "", "pods", "team", "p")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.authorize(&req(&alice, "get", "", "pods/status", "team", "p")),
            Decision::Deny(_)
        ));
        // A RoleBinding to a Role of another namespace grants nothing.
        assert!(matches!(
            p.authorize(&req(&alice, "get", "apps", "deployments", "other", "web")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn resource_names_and_service_accounts() {
        let p = policy();
        let bot = user(
            "system:serviceaccount:team:bot",
            &["system:serviceaccounts"],
        );
        assert_eq!(
            p.authorize(&req(&bot, "get", "apps", "deployments", "team", "web")),
            Decision::Allow
        );
        assert!(matches!(
            p.authorize(&req(&bot, "get", "apps", "deployments", "team", "db")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.authorize(&req(&bot, "list", "apps", "deployments", "team", "")),
            Decision::Deny(_)
        ));
        let other_bot = user("system:serviceaccount:other:bot", &[]);
        assert!(matches!(
            p.authorize(&req(
                &other_bot,
                "get",
                "apps",
                "deployments",
                "team",
                "web"
            )),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn subresource_wildcards() {
        let p = policy();
        let hpa = user("hpa", &[]);
        assert_eq!(
            p.authorize(&req(&hpa, "patch", "apps", "deployments/scale", "a", "d")),
            Decision::Allow
        );
        assert!(matches!(
            p.authorize(&req(&hpa, "patch", "apps", "deployments", "a", "d")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn non_resource_urls_with_prefix_wildcards() {
        let p = policy();
        let u = user("bob", &["system:authenticated"]);
        let nr = |path: &str, verb: &str| Attributes {
            user: u.clone(),
            verb: verb.into(),
            api_group: String::new(),
            resource: String::new(),
            subresource: String::new(),
            namespace: String::new(),
            name: String::new(),
            resource_request: false,
            path: path.into(),
        };
        assert_eq!(p.authorize(&nr("/healthz", "get")), Decision::Allow);
        assert_eq!(p.authorize(&nr("/apis/apps/v1", "get")), Decision::Allow);
        assert!(matches!(
            p.authorize(&nr("/healthz/x", "get")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.authorize(&nr("/healthz", "post")),
            Decision::Deny(_)
        ));
        assert!(matches!(
            p.authorize(&nr("/metrics", "get")),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn rules_for_lists_what_applies() {
        let p = policy();
        let alice = user("alice", &["system:authenticated"]);
        let (res, non) = p.rules_for(&alice, "team");
        assert_eq!(res.len(), 1);
        assert_eq!(res[0].resources.as_deref().unwrap(), ["pods", "pods/log"]);
        assert_eq!(non.len(), 1);
        let (res, _) = p.rules_for(&alice, "default");
        assert!(res.is_empty());
    }
}

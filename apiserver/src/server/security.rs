//! Authentication and authorization of each request: who is asking (bearer token:
//! the static token file or a signed service-account token) and whether RBAC lets them.
//!
//! The RBAC policy is built from the watch caches of the four RBAC resources and
//! rebuilt when any of them moved. A denial is re-checked once against caches brought
//! up to the store's current revision, so a binding written before a request always
//! counts for it (no 403 from a cache that lags a completed write).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;

use super::request::RequestInfo;
use crate::auth::{
    Attributes, AuthnError, Decision, MASTERS_GROUP, RbacPolicy, TokenAuthenticator, UserInfo,
};
use crate::error::{ApiError, ApiResult, Details, qualified};
use crate::store::Store;
use crate::watch_cache::{Caches, WatchCache, WatchFilter};

pub type User = UserInfo;

/// The user of the insecure (test) port when no token is sent.
pub fn insecure_admin() -> User {
    UserInfo {
        name: "system:admin".into(),
        uid: String::new(),
        groups: vec![MASTERS_GROUP.into(), "system:authenticated".into()],
    }
}

/// The user of an unauthenticated health probe.
pub fn anonymous() -> User {
    UserInfo {
        name: "system:anonymous".into(),
        uid: String::new(),
        groups: vec!["system:unauthenticated".into()],
    }
}

/// How long a denial waits for the RBAC caches to reach the store's revision.
const FRESHEN_TIMEOUT: Duration = Duration::from_secs(2);

/// The authenticator and authorizer.
pub struct Security {
    authn: TokenAuthenticator,
    store: Store,
    /// roles, clusterroles, rolebindings, clusterrolebindings.
    rbac_caches: [Arc<WatchCache>; 4],
    policy: RwLock<([i64; 4], Arc<RbacPolicy>)>,
}

impl Security {
    pub fn new(authn: TokenAuthenticator, store: Store, caches: &Caches) -> anyhow::Result<Self> {
        let get = |plural: &str| {
            let r = crate::resources::lookup("rbac.authorization.k8s.io", plural)
                .ok_or_else(|| anyhow::anyhow!("{plural} missing from the resource table"))?;
            caches
                .get(r)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no watch cache for {plural}"))
        };
        Ok(Self {
            authn,
            store,
            rbac_caches: [
                get("roles")?,
                get("clusterroles")?,
                get("rolebindings")?,
                get("clusterrolebindings")?,
            ],
            policy: RwLock::new((
                [-1; 4],
                Arc::new(RbacPolicy::new(vec![], vec![], vec![], vec![])),
            )),
        })
    }

    /// The user behind an `Authorization` header; 401 when missing, unknown or expired.
    pub fn authenticate(&self, header: Option<&str>) -> ApiResult<User> {
        self.authn
            .authenticate(header)
            .map_err(|e| ApiError::Unauthorized {
                message: match e {
                    AuthnError::Missing => "Unauthorized".to_string(),
                    other => format!("Unauthorized: {other}"),
                },
            })
    }

    /// Issues a service-account token (for components and tests).
    pub fn issue_token(&self, namespace: &str, name: &str, ttl: Duration) -> String {
        self.authn.issue_service_account_token(namespace, name, ttl)
    }

    fn current_policy(&self) -> Arc<RbacPolicy> {
        let revs = [0, 1, 2, 3].map(|i| self.rbac_caches[i].revision());
        {
            let guard = self.policy.read().unwrap_or_else(|e| e.into_inner());
            if guard.0 == revs {
                return guard.1.clone();
            }
        }
        let objects = |i: usize| -> Vec<Value> {
            let c = &self.rbac_caches[i];
            let filter = WatchFilter {
                key_prefix: c.resource.store_prefix(),
                predicate: None,
            };
            c.snapshot(&filter)
                .0
                .iter()
                .map(|o| o.value.clone())
                .collect()
        };
        fn typed<T: serde::de::DeserializeOwned>(vs: Vec<Value>) -> Vec<T> {
            vs.into_iter()
                .filter_map(|v| serde_json::from_value(v).ok())
                .collect()
        }
        let policy = Arc::new(RbacPolicy::new(
            typed::<Role>(objects(0)),
            typed::<ClusterRole>(objects(1)),
            typed::<RoleBinding>(objects(2)),
            typed::<ClusterRoleBinding>(objects(3)),
        ));
        let mut guard = self.policy.write().unwrap_or_else(|e| e.into_inner());
        *guard = (revs, policy.clone());
        policy
    }

    /// Decides `attrs`; a denial is re-checked on caches brought up to date.
    pub async fn decide(&self, attrs: &Attributes) -> Decision {
        if attrs.user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return Decision::Allow;
        }
        let first = self.current_policy().authorize(attrs);
        if first == Decision::Allow {
            return first;
        }
        if let Ok(rev) = self.store.current_revision().await {
            for c in &self.rbac_caches {
                let _ = c.wait_revision(rev, FRESHEN_TIMEOUT).await;
            }
        }
        self.current_policy().authorize(attrs)
    }

    /// Whether `user` may do what `info` asks; 403 with kube-apiserver's message if not.
    pub async fn authorize(&self, user: &User, info: &RequestInfo) -> ApiResult<()> {
        let attrs = Attributes {
            user: user.clone(),
            verb: info.verb.clone(),
            api_group: info.api_group.clone(),
            resource: info.resource.clone(),
            subresource: info.subresource.clone(),
            namespace: info.namespace.clone(),
            name: info.name.clone(),
            resource_request: info.is_resource,
            path: info.path.clone(),
        };
        match self.decide(&attrs).await {
            Decision::Allow => Ok(()),
            Decision::Deny(_) => Err(forbidden(user, info)),
        }
    }

    /// The rules of `user` in `namespace` (SelfSubjectRulesReview).
    pub fn rules_for(&self, user: &User, namespace: &str) -> (Value, Value) {
        if user.groups.iter().any(|g| g == MASTERS_GROUP) {
            return (
                serde_json::json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]),
                serde_json::json!([{"verbs": ["*"], "nonResourceURLs": ["*"]}]),
            );
        }
        let (r, n) = self.current_policy().rules_for(user, namespace);
        (
            serde_json::to_value(r).unwrap_or_default(),
            serde_json::to_value(n).unwrap_or_default(),
        )
    }
}

/// kube-apiserver's 403 message.
pub fn forbidden(user: &User, info: &RequestInfo) -> ApiError {
    let message = if info.is_resource {
        let res = if info.subresource.is_empty() {
            info.resource.clone()
        } else {
            format!("{}/{}", info.resource, info.subresource)
        };
        let mut m = format!(
            "{} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\"",
            if info.name.is_empty() {
                qualified(&info.api_group, &info.resource)
            } else {
                format!(
                    "{} \"{}\"",
                    qualified(&info.api_group, &info.resource),
                    info.name
                )
            },
            user.name,
            info.verb,
            res,
            info.api_group
        );
        if info.namespace.is_empty() || info.resource == "namespaces" {
            m.push_str(" at the cluster scope");
        } else {
            m.push_str(&format!(" in the namespace \"{}\"", info.namespace));
        }
        m
    } else {
        format!(
            "forbidden: User \"{}\" cannot {} path \"{}\"",
            user.name, info.verb, info.path
        )
    };
    ApiError::Forbidden {
        message,
        details: Details {
            name: info.name.clone(),
            group: info.api_group.clone(),
            kind: info.resource.clone(),
        },
    }
}

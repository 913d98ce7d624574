//! Request classification: what a URL and method ask for (kube-apiserver's
//! RequestInfo), and the query parameters handlers read.

use std::collections::HashMap;

use axum::http::Method;

use crate::error::{ApiError, ApiResult};
use crate::resources::{self, ResourceInfo};

/// A classified request.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// False for discovery, health, metrics, openapi, version.
    pub is_resource: bool,
    pub path: String,
    /// get list watch create update patch delete deletecollection (or the lowercased
    /// HTTP method for non-resource requests).
    pub verb: String,
    pub api_group: String,
    pub api_version: String,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

/// The resolved target of a resource request.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

impl RequestInfo {
    /// Classifies `path` (without query) under `method`; `watch_param` is `?watch=`.
    pub fn parse(method: &Method, path: &str, watch_param: bool) -> Self {
        let mut info = RequestInfo {
            is_resource: false,
            path: path.to_string(),
            verb: method.as_str().to_lowercase(),
            api_group: String::new(),
            api_version: String::new(),
            namespace: String::new(),
            resource: String::new(),
            subresource: String::new(),
            name: String::new(),
        };
        let parts: Vec<&str> = path
            .trim_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let rest: &[&str] = match parts.as_slice() {
            ["api", version, rest @ ..] if !rest.is_empty() => {
                info.api_version = version.to_string();
                rest
            }
            ["apis", group, version, rest @ ..] if !rest.is_empty() => {
                info.api_group = group.to_string();
                info.api_version = version.to_string();
                rest
            }
            _ => return info,
        };
        let mut rest = rest.to_vec();
        let mut watch = watch_param;
        if rest.first() == Some(&"watch") {
            watch = true;
            rest.remove(0);
        }
        if rest.first() == Some(&"namespaces") {
            // /namespaces/{ns}/{plural}/... is a namespaced resource; /namespaces,
            // /namespaces/{name} and /namespaces/{name}/status are the namespace itself.
            if rest.len() >= 3 && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize")) {
                info.namespace = rest[1].to_string();
                rest.drain(0..2);
            } else if rest.len() >= 2 {
                info.namespace = rest[1].to_string();
            }
        }
        info.is_resource = true;
        info.resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
        info.name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        info.subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        if rest.len() > 3 {
            info.subresource = rest[2..].join("/");
        }
        info.verb = match *method {
            Method::GET | Method::HEAD => {
                if watch {
                    "watch"
                } else if info.name.is_empty() {
                    "list"
                } else {
                    "get"
                }
            }
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => {
                if info.name.is_empty() {
                    "deletecollection"
                } else {
                    "delete"
                }
            }
            _ => "unknown",
        }
        .to_string();
        info
    }

    /// Resolves the resource table entry, or a 404.
    pub fn target(&self) -> ApiResult<Target> {
        let not_found = || ApiError::NotFound {
            message: format!(
                "the server could not find the requested resource ({})",
                self.path
            ),
            details: Default::default(),
        };
        let resource = resources::lookup(&self.api_group, &self.resource).ok_or_else(not_found)?;
        if resource.version != self.api_version {
            return Err(not_found());
        }
        let sub = (!self.subresource.is_empty()).then(|| self.subresource.clone());
        // `namespaces/{name}/finalize` (PUT only) is served but not advertised, as in
        // Kubernetes' discovery it is only listed under the namespace's own verbs.
        if let Some(s) = &sub
            && !resource.has_subresource(s)
            && !(resource.plural == "namespaces" && s == "finalize")
        {
            return Err(not_found());
        }
        let namespace = if resource.namespaced {
            (!self.namespace.is_empty()).then(|| self.namespace.clone())
        } else if self.resource == "namespaces" {
            None
        } else if !self.namespace.is_empty() {
            return Err(not_found());
        } else {
            None
        };
        let name = if self.resource == "namespaces" && !self.namespace.is_empty() {
            Some(self.namespace.clone())
        } else {
            (!self.name.is_empty()).then(|| self.name.clone())
        };
        if resource.namespaced && name.is_some() && namespace.is_none() {
            return Err(not_found());
        }
        Ok(Target {
            resource,
            namespace,
            name,
            subresource: sub,
        })
    }
}

/// Query parameters, first value of each.
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> ApiResult<Self> {
        let pairs: Vec<(String, String)> = match query {
            None => Vec::new(),
            Some(q) => serde_urlencoded_pairs(q)?,
        };
        let mut map = HashMap::new();
        for (k, v) in pairs {
            map.entry(k).or_insert(v);
        }
        Ok(Query(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A boolean parameter (`1`, `true`).
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "true" | "True"))
    }

    /// A non-negative integer parameter; 400 if it is not one.
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "invalid {key} {v:?}: not a non-negative integer"
                    ))
                }),
        }
    }

    /// `dryRun=All`.
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "unsupported dryRun value {v:?} (only \"All\")"
            ))),
        }
    }

    /// `resourceVersion` as a revision (None when absent or empty).
    pub fn resource_version(&self) -> ApiResult<Option<i64>> {
        match self.get("resourceVersion") {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .map(Some)
                .ok_or_else(|| ApiError::bad_request(format!("invalid resourceVersion {v:?}"))),
        }
    }
}

fn serde_urlencoded_pairs(q: &str) -> ApiResult<Vec<(String, String)>> {
    let uri: axum::http::Uri = format!("/?{q}")
        .parse()
        .map_err(|_| ApiError::bad_request("malformed query string"))?;
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map_err(|e| ApiError::bad_request(format!("malformed query string: {e}")))?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        let i = RequestInfo::parse(
            &Method::GET,
            "/api/v1/namespaces/default/pods/web/log",
            false,
        );
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str()
            ),
            ("get", "default", "pods", "web", "log")
        );
        let i = RequestInfo::parse(&Method::GET, "/api/v1/namespaces/default", false);
        assert_eq!(
            (i.resource.as_str(), i.namespace.as_str()),
            ("namespaces", "default")
        );
        let t = i.target().unwrap();
        assert_eq!(t.name.as_deref(), Some("default"));
        let i = RequestInfo::parse(&Method::PUT, "/api/v1/namespaces/x/status", false);
        assert_eq!(
            (i.resource.as_str(), i.verb.as_str()),
            ("namespaces", "update")
        );
        assert_eq!(i.target().unwrap().subresource.as_deref(), Some("status"));
        let i = RequestInfo::parse(&Method::GET, "/api/v1/watch/namespaces/d/pods", false);
        assert_eq!((i.verb.as_str(), i.resource.as_str()), ("watch", "pods"));
        let i = RequestInfo::parse(
            &Method::DELETE,
            "/apis/apps/v1/namespaces/d/deployments",
            false,
        );
        assert_eq!(i.verb, "deletecollection");
        let i = RequestInfo::parse(&Method::GET, "/apis/apps/v1", false);
        assert!(!i.is_resource);
        assert!(
            RequestInfo::parse(&Method::GET, "/api/v1/nodes/n1", false)
                .target()
                .is_ok()
        );
        assert!(
            RequestInfo::parse(&Method::GET, "/api/v1/pods/x", false)
                .target()
                .is_err()
        );
    }
}

//! What the server serves, read from its discovery documents (`/api/v1`, `/apis`,
//! `/apis/{group}/{version}`), and raw JSON calls on any resource by path: the
//! garbage collector and the namespace controller work on every resource, not on a
//! list of types compiled in.

use bytes::Bytes;
use reqwest::Method;
use serde_json::{Value, json};

use api::Client;

use crate::Error;

/// One served resource (not a subresource).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResource {
    /// `v1` or `apps/v1`.
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl ApiResource {
    fn prefix(&self) -> String {
        if self.api_version.contains('/') {
            format!("/apis/{}", self.api_version)
        } else {
            format!("/api/{}", self.api_version)
        }
    }

    /// The collection path (in `namespace` when namespaced).
    pub fn collection_path(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => {
                format!("{}/namespaces/{ns}/{}", self.prefix(), self.plural)
            }
            _ => format!("{}/{}", self.prefix(), self.plural),
        }
    }

    /// One object's path.
    pub fn object_path(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}/{name}", self.collection_path(namespace))
    }

    pub fn has_verb(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }
}

/// Every resource the server advertises.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub all: Vec<ApiResource>,
}

impl Resources {
    /// Reads discovery from the server.
    pub async fn discover(client: &Client) -> Result<Self, Error> {
        let mut group_versions = Vec::new();
        let core = client.get_json("/api").await?;
        for v in core["versions"].as_array().into_iter().flatten() {
            if let Some(v) = v.as_str() {
                group_versions.push(v.to_string());
            }
        }
        let groups = client.get_json("/apis").await?;
        for g in groups["groups"].as_array().into_iter().flatten() {
            for v in g["versions"].as_array().into_iter().flatten() {
                if let Some(gv) = v["groupVersion"].as_str() {
                    group_versions.push(gv.to_string());
                }
            }
        }
        let mut all = Vec::new();
        for gv in group_versions {
            let path = if gv.contains('/') {
                format!("/apis/{gv}")
            } else {
                format!("/api/{gv}")
            };
            let list = client.get_json(&path).await?;
            for r in list["resources"].as_array().into_iter().flatten() {
                let (Some(name), Some(kind)) = (r["name"].as_str(), r["kind"].as_str()) else {
                    continue;
                };
                if name.contains('/') {
                    continue;
                }
                all.push(ApiResource {
                    api_version: gv.clone(),
                    kind: kind.to_string(),
                    plural: name.to_string(),
                    namespaced: r["namespaced"].as_bool().unwrap_or(false),
                    verbs: r["verbs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect(),
                });
            }
        }
        Ok(Resources { all })
    }

    /// The resource of `apiVersion` + `kind` (as ownerReferences name owners).
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&ApiResource> {
        self.all
            .iter()
            .find(|r| r.api_version == api_version && r.kind == kind)
    }
}

/// What a raw call answered.
fn check(path: &str, method: &Method, code: u16, body: &Bytes) -> Result<Value, Error> {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if (200..300).contains(&code) {
        return Ok(value);
    }
    Err(Error::Api(api::Error::Api(api::ApiError {
        code,
        reason: value["reason"].as_str().unwrap_or("").to_string(),
        message: format!(
            "{method} {path}: {}",
            value["message"]
                .as_str()
                .map(String::from)
                .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
        ),
    })))
}

/// GET a path as JSON; `None` on 404.
pub async fn get(client: &Client, path: &str) -> Result<Option<Value>, Error> {
    let (code, body) = client.raw(Method::GET, path, None).await?;
    if code == 404 {
        return Ok(None);
    }
    check(path, &Method::GET, code, &body).map(Some)
}

/// DELETE one object with a propagation policy (None = the server's default) and its
/// uid as precondition (so a new object of the same name is never hit). A 404 or a
/// uid conflict counts as done: the object we meant is gone.
pub async fn delete(
    client: &Client,
    path: &str,
    uid: &str,
    policy: Option<&str>,
) -> Result<(), Error> {
    let mut options =
        json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": uid}});
    if let Some(p) = policy {
        options["propagationPolicy"] = json!(p);
    }
    let body = Bytes::from(options.to_string());
    let (code, resp) = client
        .raw(Method::DELETE, path, Some((body, "application/json")))
        .await?;
    if code == 404 || code == 409 {
        return Ok(());
    }
    check(path, &Method::DELETE, code, &resp).map(|_| ())
}

/// A JSON patch (RFC 6902) on one object.
pub async fn json_patch(client: &Client, path: &str, ops: &Value) -> Result<Value, Error> {
    let body = Bytes::from(ops.to_string());
    let (code, resp) = client
        .raw(
            Method::PATCH,
            path,
            Some((body, "application/json-patch+json")),
        )
        .await?;
    check(path, &Method::PATCH, code, &resp)
}

/// PUT a JSON body.
pub async fn put(client: &Client, path: &str, object: &Value) -> Result<Value, Error> {
    let body = Bytes::from(object.to_string());
    let (code, resp) = client
        .raw(Method::PUT, path, Some((body, "application/json")))
        .await?;
    check(path, &Method::PUT, code, &resp)
}

//! Subresources: `scale` (autoscaling/v1 Scale over spec.replicas), `binding` (sets a
//! pod's node once) and `log` (proxied to the node agent). `status` is handled by the
//! ordinary verbs with the spec/status split of `object::prepare_update`.

use std::time::Duration;

use serde_json::{Value, json};

use super::AppState;
use super::crud::{self, body_precondition};
use super::glue;
use super::reply::{Reply, decode_object};
use super::request::{Query, Target};
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::resources;

/// The Scale view of a deployment or replicaset.
fn to_scale(obj: &Value) -> Value {
    let m = object::meta(obj);
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

pub async fn get_scale(state: &AppState, target: &Target) -> ApiResult<Reply> {
    let main = Target {
        subresource: None,
        ..target.clone()
    };
    let cur = crud::get(state, &main).await?;
    Ok(Reply::ok(to_scale(&cur.value)))
}

/// PUT or PATCH of `scale`: only spec.replicas changes.
pub async fn write_scale(
    state: &AppState,
    target: &Target,
    query: &Query,
    content_type: &str,
    body: &[u8],
    is_patch: bool,
) -> ApiResult<Reply> {
    let main = Target {
        subresource: None,
        ..target.clone()
    };
    let resource = target.resource;
    let reply = crud::guaranteed_update(state, &main, query.dry_run()?, |current| {
        let scale_now = to_scale(current);
        let scale_new = if is_patch {
            glue::apply_patch(content_type, resource, &scale_now, body)?
        } else {
            decode_object(content_type, body)?
        };
        let replicas = scale_new
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .filter(|r| *r >= 0)
            .ok_or_else(|| {
                object::invalid(
                    resource,
                    main.name_or_empty(),
                    "spec.replicas",
                    "FieldValueInvalid",
                    "must be a non-negative integer",
                )
            })?;
        let precondition = if is_patch {
            None
        } else {
            body_precondition(&scale_new)?
        };
        let mut new = current.clone();
        new["spec"]["replicas"] = json!(replicas);
        if new != *current {
            let g = object::meta(current)
                .get("generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta_mut(&mut new)?.insert("generation".into(), json!(g));
        }
        Ok((new, precondition, Vec::new()))
    })
    .await?;
    Ok(Reply::ok(to_scale(&reply.body)))
}

/// POST pods/{name}/binding: sets spec.nodeName, once.
pub async fn bind(
    state: &AppState,
    target: &Target,
    query: &Query,
    content_type: &str,
    body: &[u8],
) -> ApiResult<Reply> {
    let binding = decode_object(content_type, body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("the binding needs target.name (the node)"))?
        .to_string();
    let main = Target {
        subresource: None,
        ..target.clone()
    };
    let pods = target.resource;
    let name = main.name_or_empty().to_string();
    crud::guaranteed_update(state, &main, query.dry_run()?, |current| {
        if object::str_field(current, "deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                pods.group,
                pods.plural,
                &name,
                "the pod is being deleted",
            ));
        }
        match current.pointer("/spec/nodeName").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => {
                return Err(ApiError::conflict(
                    pods.group,
                    pods.plural,
                    &name,
                    &format!("pod {name} is already assigned to node \"{n}\""),
                ));
            }
            _ => {}
        }
        let mut new = current.clone();
        new["spec"]["nodeName"] = json!(node);
        let precondition = object::meta(&binding)
            .get("resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        Ok((new, precondition, Vec::new()))
    })
    .await?;
    Ok(Reply::created(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// How long the log hop to a node agent may take to answer.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest log answer relayed.
const MAX_LOG_BYTES: usize = 8 * 1024 * 1024;

/// GET pods/{name}/log: to the agent of the pod's node at
/// `http://<node InternalIP>:<status.daemonEndpoints.kubeletEndpoint.Port>/containerLogs/<ns>/<pod>/<container>`
/// (kubelet's path), with the query passed on.
pub async fn log(
    state: &AppState,
    target: &Target,
    query: &Query,
) -> ApiResult<axum::response::Response> {
    let main = Target {
        subresource: None,
        ..target.clone()
    };
    let pod = crud::get(state, &main).await?.value;
    let pod_name = main.name_or_empty();
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "pod {pod_name} is not scheduled to a node yet, so it has no logs"
            ))
        })?;
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let container = match query.get("container") {
        Some(c) => c.to_string(),
        None if containers.len() == 1 => containers[0].clone(),
        None => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
    };
    let nodes = resources::lookup("", "nodes").expect("nodes is in the table");
    let node = crud::get(
        state,
        &Target {
            resource: nodes,
            namespace: None,
            name: Some(node_name.into()),
            subresource: None,
        },
    )
    .await
    .map_err(|_| ApiError::NotFound {
        message: format!("node \"{node_name}\" of pod {pod_name} not found"),
        details: Default::default(),
    })?
    .value;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0 && *p < 65536);
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|x| x.get("type").and_then(Value::as_str) == Some("InternalIP"))
        })
        .and_then(|x| x.get("address").and_then(Value::as_str));
    let (Some(port), Some(ip)) = (port, ip) else {
        return Err(ApiError::ServiceUnavailable {
            message: format!(
                "node \"{node_name}\" has no agent endpoint (status.daemonEndpoints.kubeletEndpoint.Port and an InternalIP address)"
            ),
        });
    };
    let ns = main.namespace.as_deref().unwrap_or("default");
    let mut url = format!("http://{ip}:{port}/containerLogs/{ns}/{pod_name}/{container}");
    let passed: Vec<String> = [
        "follow",
        "tailLines",
        "sinceSeconds",
        "timestamps",
        "previous",
        "limitBytes",
    ]
    .iter()
    .filter_map(|k| query.get(k).map(|v| format!("{k}={v}")))
    .collect();
    if !passed.is_empty() {
        url.push('?');
        url.push_str(&passed.join("&"));
    }
    let unavailable = |why: String| ApiError::ServiceUnavailable {
        message: format!("the agent of node \"{node_name}\" did not answer at {ip}:{port}: {why}"),
    };
    let uri: axum::http::Uri = url.parse().map_err(|e| unavailable(format!("{e}")))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<axum::body::Body>();
    let resp = tokio::time::timeout(LOG_TIMEOUT, client.get(uri))
        .await
        .map_err(|_| unavailable("timed out".into()))?
        .map_err(|e| unavailable(e.to_string()))?;
    let status = resp.status();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_LOG_BYTES);
    if !status.is_success() {
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        return Err(if status.as_u16() == 404 {
            ApiError::NotFound {
                message: format!("logs of {ns}/{pod_name}/{container}: {text}"),
                details: Default::default(),
            }
        } else {
            unavailable(format!("HTTP {status}: {text}"))
        });
    }
    let mut out = axum::response::Response::new(axum::body::Body::new(body));
    out.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain"),
    );
    Ok(out)
}

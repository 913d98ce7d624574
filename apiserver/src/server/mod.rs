//! Request handling: one entry point classifies each request, authenticates and
//! authorizes it, bounds mutating concurrency, runs the handler, and records metrics
//! and an audit line. Every error answer is a `Status` object.

pub mod crud;
pub mod discovery;
pub mod glue;
pub mod proto;
pub mod reply;
pub mod request;
pub mod reviews;
pub mod security;
pub mod subresources;
pub mod watch;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::audit::{Audit, AuditRecord};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::store::Store;
use crate::watch_cache::Caches;
use reply::{Reply, content_type, read_body};
use request::{Query, RequestInfo};
use security::{Security, User};

/// Everything a request handler may use.
pub struct AppState {
    pub store: Store,
    pub caches: Caches,
    pub metrics: Metrics,
    pub audit: Audit,
    pub security: Security,
    /// Bounds concurrently running mutating requests (429 beyond).
    pub mutating: Semaphore,
    /// The externally visible address (discovery).
    pub server_address: String,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy)]
pub enum Listener {
    Secure,
    /// Tests only: a request without a token is the admin.
    Insecure,
}

/// The axum router: every path goes through [`dispatch`].
pub fn router(state: Arc<AppState>, listener: Listener) -> axum::Router {
    axum::Router::new()
        .fallback(move |State(st): State<Arc<AppState>>, req: Request| dispatch(st, listener, req))
        .with_state(state)
}

async fn dispatch(state: Arc<AppState>, listener: Listener, req: Request) -> Response {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let query = Query::parse(parts.uri.query());
    let watch_flag = query.as_ref().map(|q| q.flag("watch")).unwrap_or(false);
    let info = RequestInfo::parse(&parts.method, parts.uri.path(), watch_flag);
    let auth_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let user = match (auth_header, listener) {
        (None, Listener::Insecure) => Ok(security::insecure_admin()),
        (h, _) => state.security.authenticate(h),
    };
    let result: ApiResult<Response> = async {
        let user = match &user {
            Ok(u) => u.clone(),
            // Health probes answer anyone (load balancers carry no token).
            Err(_) if is_public(&info) => security::anonymous(),
            Err(e) => {
                return Err(ApiError::Unauthorized {
                    message: e.to_string(),
                });
            }
        };
        let query = query?;
        if !is_public(&info) {
            state.security.authorize(&user, &info).await?;
        }
        handle(
            &state,
            &user,
            &info,
            &query,
            parts.method.clone(),
            &parts.headers,
            body,
        )
        .await
    }
    .await;
    let response = result.unwrap_or_else(IntoResponse::into_response);
    let code = response.status().as_u16();
    let elapsed = started.elapsed();
    let resource_label = if info.is_resource {
        info.resource.as_str()
    } else {
        ""
    };
    state
        .metrics
        .observe(&info.verb, resource_label, code, elapsed.as_secs_f64());
    if !(info.path == "/healthz"
        || info.path == "/livez"
        || info.path == "/readyz"
        || info.path == "/metrics")
    {
        let (name, groups) = match &user {
            Ok(u) => (u.name.as_str(), u.groups.as_slice()),
            Err(_) => ("", &[][..]),
        };
        let recorded = state.audit.record(AuditRecord {
            user: name,
            groups,
            verb: &info.verb,
            resource: &info.resource,
            subresource: &info.subresource,
            namespace: &info.namespace,
            name: &info.name,
            path: &info.path,
            code,
            latency_ms: elapsed.as_secs_f64() * 1000.0,
        });
        if !recorded {
            state.metrics.audit_dropped.inc();
        }
    }
    response
}

/// Paths anyone may read without RBAC (health probes).
fn is_public(info: &RequestInfo) -> bool {
    !info.is_resource && matches!(info.path.as_str(), "/healthz" | "/livez" | "/readyz")
}

fn json_reply(v: serde_json::Value) -> ApiResult<Response> {
    Ok(Reply::ok(v).into_response())
}

fn text(code: StatusCode, body: String) -> Response {
    let mut r = (code, body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn not_found(path: &str) -> ApiError {
    ApiError::NotFound {
        message: format!("the server could not find the requested resource ({path})"),
        details: Default::default(),
    }
}

async fn handle(
    state: &Arc<AppState>,
    user: &User,
    info: &RequestInfo,
    query: &Query,
    method: Method,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    if !info.is_resource {
        return non_resource(state, info, &method).await;
    }
    let target = info.target()?;
    let ct = content_type(headers);
    let table = table_request(headers, query);
    if !target.resource.stored {
        if method != Method::POST || target.name.is_some() {
            return Err(ApiError::MethodNotAllowed {
                message: format!("only create is allowed on {}", target.resource.plural),
            });
        }
        let bytes = read_body(body).await?;
        return reviews::review(state, user, target.resource, &ct, &bytes)
            .await
            .map(IntoResponse::into_response);
    }
    let mutating = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let _permit = if mutating {
        Some(
            state
                .mutating
                .try_acquire()
                .map_err(|_| ApiError::TooManyRequests {
                    message: "too many requests in flight; try again later".into(),
                    retry_after_s: 1,
                })?,
        )
    } else {
        None
    };
    let sub = target.subresource.as_deref();
    let reply: Reply = match (info.verb.as_str(), sub) {
        ("watch", None) => return watch::watch(state.clone(), &target, query, table).await,
        ("list", None) => {
            let (items, rev, next) = crud::list(state, &target, query).await?;
            Reply::ok(crud::list_body(
                target.resource,
                items,
                rev,
                next,
                table.as_deref(),
            ))
        }
        ("get", None | Some("status")) => {
            let obj = crud::get(state, &target).await?.value;
            match table.as_deref().and_then(|inc| {
                let rv = crate::object::str_field(&obj, "resourceVersion")
                    .unwrap_or("")
                    .to_string();
                glue::table(
                    target.resource,
                    std::slice::from_ref(&obj),
                    json!({"resourceVersion": rv}),
                    inc,
                )
            }) {
                Some(t) => Reply::ok(t),
                None => Reply::ok(obj),
            }
        }
        ("get", Some("scale")) => subresources::get_scale(state, &target).await?,
        ("get", Some("log")) => return subresources::log(state, &target, query).await,
        ("create", None) => {
            let bytes = read_body(body).await?;
            crud::create(state, &target, query, &ct, &bytes).await?
        }
        ("create", Some("binding")) => {
            let bytes = read_body(body).await?;
            subresources::bind(state, &target, query, &ct, &bytes).await?
        }
        ("update", Some("finalize")) if target.resource.plural == "namespaces" => {
            let bytes = read_body(body).await?;
            crud::update(state, &target, query, &ct, &bytes).await?
        }
        ("update", None | Some("status")) => {
            let bytes = read_body(body).await?;
            crud::update(state, &target, query, &ct, &bytes).await?
        }
        ("patch", None | Some("status")) => {
            let bytes = read_body(body).await?;
            crud::patch(state, &target, query, &ct, &bytes).await?
        }
        ("update", Some("scale")) => {
            let bytes = read_body(body).await?;
            subresources::write_scale(state, &target, query, &ct, &bytes, false).await?
        }
        ("patch", Some("scale")) => {
            let bytes = read_body(body).await?;
            subresources::write_scale(state, &target, query, &ct, &bytes, true).await?
        }
        ("delete", None) => {
            let bytes = read_body(body).await?;
            crud::delete(state, &target, query, &bytes).await?
        }
        ("deletecollection", None) => {
            let bytes = read_body(body).await?;
            crud::delete_collection(state, &target, query, &bytes).await?
        }
        (verb, _) => {
            return Err(ApiError::MethodNotAllowed {
                message: format!("{verb} is not supported on {}", info.path),
            });
        }
    };
    Ok(reply.into_response())
}

/// The `includeObject` of a Table request (`Accept: application/json;as=Table;...`).
fn table_request(headers: &axum::http::HeaderMap, query: &Query) -> Option<String> {
    let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
    let first = accept.split(',').next()?;
    first
        .contains("as=Table")
        .then(|| query.get("includeObject").unwrap_or("Metadata").to_string())
}

async fn non_resource(
    state: &Arc<AppState>,
    info: &RequestInfo,
    method: &Method,
) -> ApiResult<Response> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ApiError::MethodNotAllowed {
            message: format!("{method} is not allowed on {}", info.path),
        });
    }
    let path = info.path.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match parts.as_slice() {
        ["healthz"] | ["livez"] => Ok(text(StatusCode::OK, "ok".into())),
        ["readyz"] => match state.store.ping().await {
            Ok(()) => Ok(text(StatusCode::OK, "ok".into())),
            Err(e) => Ok(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("[-]etcd failed: {e}\nreadyz check failed"),
            )),
        },
        ["metrics"] => {
            let mut r = text(StatusCode::OK, state.metrics.render());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(r)
        }
        ["version"] => json_reply(discovery::version()),
        ["openapi", "v2"] => json_reply(crate::validation::openapi::openapi_v2()),
        ["openapi", "v3"] => json_reply(crate::validation::openapi::openapi_v3_root()),
        ["openapi", "v3", rest @ ..] => {
            crate::validation::openapi::openapi_v3_group_version(&rest.join("/"))
                .map(Reply::ok)
                .map(IntoResponse::into_response)
                .ok_or_else(|| not_found(&info.path))
        }
        ["api"] => json_reply(discovery::api_versions(&state.server_address)),
        ["api", v] => discovery::api_resource_list("", v)
            .map(Reply::ok)
            .map(IntoResponse::into_response)
            .ok_or_else(|| not_found(&info.path)),
        ["apis"] => json_reply(discovery::api_group_list()),
        ["apis", g] => discovery::api_group(g)
            .map(Reply::ok)
            .map(IntoResponse::into_response)
            .ok_or_else(|| not_found(&info.path)),
        ["apis", g, v] => discovery::api_resource_list(g, v)
            .map(Reply::ok)
            .map(IntoResponse::into_response)
            .ok_or_else(|| not_found(&info.path)),
        _ => Err(not_found(&info.path)),
    }
}

//! The log server: `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=`
//! streams a container's output from the runtime, as the apiserver's `pods/log` will
//! proxy it (the kubelet's path). The container is found by its labels: the newest
//! attempt, or the one before it with `previous=true`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::error::AgentError;
use crate::runtime::{ContainerRuntime, ListFilter, LogOptions};

#[derive(Clone)]
struct LogState {
    runtime: Arc<dyn ContainerRuntime>,
    node_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    #[serde(default)]
    follow: bool,
    tail_lines: Option<u64>,
    #[serde(default)]
    previous: bool,
}

/// The log server's routes, for the containers of `node_name`.
pub fn router(runtime: Arc<dyn ContainerRuntime>, node_name: impl Into<String>) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(LogState {
            runtime,
            node_name: node_name.into(),
        })
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

fn error(status: StatusCode, message: String) -> Response {
    (status, message).into_response()
}

async fn container_logs(
    State(state): State<LogState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> Response {
    let filter = ListFilter {
        node_name: state.node_name.clone(),
        pod_uid: None,
    };
    let mut attempts: Vec<_> = match state.runtime.list(&filter).await {
        Ok(all) => all
            .into_iter()
            .filter(|c| {
                c.labels.pod_namespace == namespace
                    && c.labels.pod_name == pod
                    && c.labels.container_name == container
            })
            .collect(),
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    attempts.sort_by_key(|c| std::cmp::Reverse(c.labels.attempt));
    let index = usize::from(query.previous);
    let Some(target) = attempts.get(index) else {
        let which = if query.previous { "a previous " } else { "a " };
        return error(
            StatusCode::NOT_FOUND,
            format!("{namespace}/{pod} has no {which}container named {container:?} on this node"),
        );
    };
    let options = LogOptions {
        follow: query.follow,
        tail_lines: query.tail_lines,
    };
    match state.runtime.logs(&target.id, options).await {
        Ok(stream) => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            Body::from_stream(stream),
        )
            .into_response(),
        Err(AgentError::ContainerNotFound { id }) => {
            error(StatusCode::NOT_FOUND, format!("container {id} is gone"))
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

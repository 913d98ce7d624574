//! `?watch=1`: streams one JSON event per line, from the watch cache, or — for a
//! resourceVersion older than the cache's ring — from a store watch of its own.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use etcd_client::{EventType as StoreEventType, GetOptions, WatchOptions};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::AppState;
use super::glue;
use super::request::{Query, Target};
use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::store::{decode_value, prefix_end, set_resource_version};
use crate::watch_cache::{CacheEvent, CachedObject, WatchFilter, WatchMessage, WatchStart};

/// Lines buffered between the event source and the HTTP connection (small: the
/// watcher's bounded channel in the watch cache is the buffer that counts).
const LINE_BUFFER: usize = 4;
/// A watch without timeoutSeconds ends after this long (clients re-watch), as
/// kube-apiserver's --min-request-timeout does.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How each event's object is written: as is, or as a one-row Table (kubectl get -w).
#[derive(Clone)]
struct Format {
    resource: &'static ResourceInfo,
    table: Option<String>,
}

pub async fn watch(
    state: Arc<AppState>,
    target: &Target,
    query: &Query,
    table: Option<String>,
) -> ApiResult<Response> {
    let resource = target.resource;
    let cache = state
        .caches
        .get(resource)
        .ok_or_else(|| ApiError::MethodNotAllowed {
            message: "this resource cannot be watched".into(),
        })?
        .clone();
    let mut predicate = glue::selector_predicate(
        resource,
        query.get("labelSelector"),
        query.get("fieldSelector"),
    )?;
    if let Some(name) = &target.name {
        predicate = Some(glue::name_predicate(name.clone()));
    }
    let filter = WatchFilter {
        key_prefix: target.prefix(),
        predicate,
    };
    let rv = query.resource_version()?;
    let from = match rv {
        None | Some(0) => None,
        Some(rv) => Some(rv),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .int("timeoutSeconds")?
        .map(|s| Duration::from_secs(s as u64))
        .unwrap_or(DEFAULT_TIMEOUT);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(LINE_BUFFER);
    let format = Format { resource, table };
    match cache.watch(from, filter, bookmarks).await? {
        WatchStart::Cached(sub) => {
            state.metrics.watch_started(resource.plural);
            let st = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(timeout, forward_cached(sub, &format, &tx)).await;
                st.metrics.watch_ended(resource.plural);
            });
        }
        WatchStart::FromStore(filter) => {
            let rv = from.unwrap_or(0);
            // A compacted position is a 410 before the stream starts.
            let mut kv = state.store.client().kv_client();
            if let Err(e) = kv
                .get(
                    "/registry/",
                    Some(GetOptions::new().with_count_only().with_revision(rv)),
                )
                .await
            {
                let err = ApiError::from(e);
                return Err(match err {
                    ApiError::Expired { .. } => {
                        ApiError::expired(format!("too old resource version: {rv}"))
                    }
                    other => other,
                });
            }
            let st = state.clone();
            state.metrics.watch_started(resource.plural);
            tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    timeout,
                    forward_store(st.clone(), filter, rv, &format, &tx),
                )
                .await;
                st.metrics.watch_ended(resource.plural);
            });
        }
    }
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

fn line(kind: &str, object_json: &str) -> Bytes {
    let mut s = String::with_capacity(object_json.len() + 32);
    s.push_str("{\"type\":\"");
    s.push_str(kind);
    s.push_str("\",\"object\":");
    s.push_str(object_json);
    s.push_str("}\n");
    Bytes::from(s)
}

fn message_line(format: &Format, msg: &WatchMessage) -> Bytes {
    let resource = format.resource;
    match msg {
        WatchMessage::Event(kind, obj) => match &format.table {
            None => line(kind.as_str(), &obj.json),
            Some(include) => {
                let rv = crate::object::str_field(&obj.value, "resourceVersion")
                    .unwrap_or("")
                    .to_string();
                let t = crate::table::to_table(
                    resource,
                    std::slice::from_ref(&obj.value),
                    json!({"resourceVersion": rv}),
                    include,
                );
                line(kind.as_str(), &t.to_string())
            }
        },
        WatchMessage::Bookmark(rev) => {
            let obj = json!({"kind": resource.kind, "apiVersion": resource.api_version(),
                "metadata": {"resourceVersion": rev.to_string()}});
            line("BOOKMARK", &obj.to_string())
        }
        WatchMessage::Error(status) => line("ERROR", &status.to_string()),
    }
}

async fn forward_cached(
    mut sub: crate::watch_cache::Subscription,
    format: &Format,
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
) {
    for msg in std::mem::take(&mut sub.initial) {
        if tx.send(Ok(message_line(format, &msg))).await.is_err() {
            return;
        }
    }
    while let Some(msg) = sub.rx.recv().await {
        let end = matches!(msg, WatchMessage::Error(_));
        if tx.send(Ok(message_line(format, &msg))).await.is_err() || end {
            return;
        }
    }
    if sub.cut_off.load(Ordering::Relaxed) {
        let status = ApiError::expired(
            "the watcher fell too far behind and was closed; watch again from the last resourceVersion seen",
        )
        .to_status();
        let _ = tx.send(Ok(line("ERROR", &status.to_string()))).await;
    }
}

/// A watch of its own on the store from `rv + 1`, for positions the cache no longer has.
async fn forward_store(
    state: Arc<AppState>,
    filter: WatchFilter,
    rv: i64,
    format: &Format,
    tx: &mpsc::Sender<Result<Bytes, Infallible>>,
) {
    let options = WatchOptions::new()
        .with_range(prefix_end(&filter.key_prefix))
        .with_prev_key()
        .with_start_revision(rv + 1);
    let mut client = state.store.client().watch_client();
    let send_error = |e: ApiError| line("ERROR", &e.to_status().to_string());
    let mut stream = match client.watch(filter.key_prefix.clone(), Some(options)).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Ok(send_error(ApiError::from(e)))).await;
            return;
        }
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Ok(send_error(ApiError::from(e)))).await;
                return;
            }
        };
        if resp.canceled() {
            let err = if resp.compact_revision() > 0 {
                ApiError::expired(format!("too old resource version: {rv}"))
            } else {
                ApiError::ServiceUnavailable {
                    message: format!("store watch canceled: {}", resp.cancel_reason()),
                }
            };
            let _ = tx.send(Ok(send_error(err))).await;
            return;
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let revision = kv.mod_revision();
            let prev = ev
                .prev_kv()
                .and_then(|p| decode_value(key.clone(), p.value(), p.mod_revision()).ok())
                .map(|p| CachedObject::new(p.value));
            let event = match ev.event_type() {
                StoreEventType::Put => {
                    let Ok(s) = decode_value(key.clone(), kv.value(), revision) else {
                        continue;
                    };
                    CacheEvent {
                        key,
                        revision,
                        object: CachedObject::new(s.value),
                        prev,
                        deleted: false,
                    }
                }
                StoreEventType::Delete => {
                    let Some(p) = prev else { continue };
                    let mut last: Value = p.value.clone();
                    set_resource_version(&mut last, revision);
                    CacheEvent {
                        key,
                        revision,
                        object: CachedObject::new(last),
                        prev: Some(p),
                        deleted: true,
                    }
                }
            };
            if let Some(msg) = filter.translate(&event)
                && tx.send(Ok(message_line(format, &msg))).await.is_err()
            {
                return;
            }
        }
    }
}

//! The Watch service: one task per stream reads create, cancel and progress requests and
//! registers watchers with the hub; all responses of the stream go through one bounded
//! channel, so a created response always precedes the watch's events.
//!
//! The service is served by hand rather than through the generated `WatchServer`, whose
//! codec only takes `WatchResponse` messages: ours ([`WatchCodec`]) also writes the
//! hub's pre-encoded event responses, so fan-out never re-encodes an event per watcher.

use std::collections::HashMap;
use std::sync::Arc;

use std::convert::Infallible;
use std::task::{Context, Poll};

use etcd_client::proto::{PbWatchRequest, PbWatchRequestUnion, PbWatchResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use super::Node;
use crate::auth::Caller;
use crate::watch::{Registered, WatchCodec, WatchItem, WatchOut, WatchSpec, WatcherKey};

/// Responses buffered per stream; when full, the stream's watchers fall back to history.
const STREAM_BUFFER: usize = 1024;
/// Most watches one stream may hold.
const MAX_WATCHES_PER_STREAM: usize = 100_000;
// rpc.proto WatchCreateRequest.FilterType.
const FILTER_NOPUT: i32 = 0;
const FILTER_NODELETE: i32 = 1;

/// The `etcdserverpb.Watch` gRPC service.
#[derive(Clone)]
pub struct WatchService {
    node: Arc<Node>,
    max_decoding_message_size: usize,
}

impl WatchService {
    pub fn new(node: Arc<Node>, max_decoding_message_size: usize) -> Self {
        WatchService {
            node,
            max_decoding_message_size,
        }
    }
}

impl NamedService for WatchService {
    const NAME: &'static str = "etcdserverpb.Watch";
}

impl<B> Service<http::Request<B>> for WatchService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != "/etcdserverpb.Watch/Watch" {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = WatchMethod(self.node.clone());
        let limit = self.max_decoding_message_size;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(WatchCodec).max_decoding_message_size(limit);
            Ok(grpc.streaming(method, req).await)
        })
    }
}

struct WatchMethod(Arc<Node>);

impl tonic::server::StreamingService<PbWatchRequest> for WatchMethod {
    type Response = WatchOut;
    type ResponseStream = ReceiverStream<WatchItem>;
    type Future = BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, req: Request<Streaming<PbWatchRequest>>) -> Self::Future {
        let node = self.0.clone();
        Box::pin(async move {
            // The stream's identity is fixed when it opens (etcd reads the token once).
            let caller = node.caller(&req)?;
            let (tx, rx) = mpsc::channel(STREAM_BUFFER);
            tokio::spawn(serve_stream(node, caller, req.into_inner(), tx));
            Ok(Response::new(ReceiverStream::new(rx)))
        })
    }
}

async fn serve_stream(
    node: Arc<Node>,
    caller: Caller,
    mut input: Streaming<PbWatchRequest>,
    tx: mpsc::Sender<WatchItem>,
) {
    let mut watches: HashMap<i64, WatcherKey> = HashMap::new();
    let mut next_id: i64 = 0;
    while let Some(msg) = input.next().await {
        let Ok(msg) = msg else { break };
        let sent = match msg.request_union {
            Some(PbWatchRequestUnion::CreateRequest(c)) => {
                let requested = c.watch_id;
                let id = if requested != 0 {
                    requested
                } else {
                    while watches.contains_key(&next_id) {
                        next_id += 1;
                    }
                    next_id
                };
                let current = node.hub.published_revision();
                if node.check_watch(&caller, &c.key, &c.range_end).is_err() {
                    // etcd answers a watch outside the caller's permissions with a
                    // created-and-canceled response, not a stream error.
                    let resp = PbWatchResponse {
                        header: Some(node.header(current)),
                        watch_id: -1,
                        created: true,
                        canceled: true,
                        // etcd puts the whole gRPC status text here.
                        cancel_reason: format!(
                            "rpc error: code = PermissionDenied desc = {}",
                            crate::error::Error::PermissionDenied
                        ),
                        ..Default::default()
                    };
                    tx.send(Ok(resp.into())).await.is_ok()
                } else if watches.contains_key(&id) || watches.len() >= MAX_WATCHES_PER_STREAM {
                    let reason = if watches.contains_key(&id) {
                        "mvcc: duplicate watch ID provided on the WatchStream"
                    } else {
                        "etcdserver: too many watches on one stream"
                    };
                    let resp = PbWatchResponse {
                        header: Some(node.header(current)),
                        watch_id: id,
                        created: true,
                        canceled: true,
                        cancel_reason: reason.into(),
                        ..Default::default()
                    };
                    tx.send(Ok(resp.into())).await.is_ok()
                } else {
                    let spec = WatchSpec {
                        watch_id: id,
                        key: c.key,
                        range_end: c.range_end,
                        start_revision: c.start_revision,
                        prev_kv: c.prev_kv,
                        no_put: c.filters.contains(&FILTER_NOPUT),
                        no_delete: c.filters.contains(&FILTER_NODELETE),
                        progress_notify: c.progress_notify,
                        fragment: c.fragment,
                    };
                    let created = PbWatchResponse {
                        header: Some(node.header(current)),
                        watch_id: id,
                        created: true,
                        ..Default::default()
                    };
                    if tx.send(Ok(created.into())).await.is_err() {
                        break;
                    }
                    match node.hub.register(spec, tx.clone()) {
                        Registered::Watching(key) => {
                            watches.insert(id, key);
                            true
                        }
                        Registered::Compacted { compact_revision } => {
                            let resp = PbWatchResponse {
                                header: Some(node.header(current)),
                                watch_id: id,
                                compact_revision,
                                canceled: true,
                                ..Default::default()
                            };
                            tx.send(Ok(resp.into())).await.is_ok()
                        }
                    }
                }
            }
            Some(PbWatchRequestUnion::CancelRequest(c)) => match watches.remove(&c.watch_id) {
                Some(key) => {
                    node.hub.cancel(key);
                    let resp = PbWatchResponse {
                        header: Some(node.header(node.hub.published_revision())),
                        watch_id: c.watch_id,
                        canceled: true,
                        ..Default::default()
                    };
                    tx.send(Ok(resp.into())).await.is_ok()
                }
                None => true,
            },
            Some(PbWatchRequestUnion::ProgressRequest(_)) => {
                // Only claim a revision every watch of this stream has fully received.
                let keys: Vec<WatcherKey> = watches.values().copied().collect();
                let rev = node.hub.progress_revision(&keys);
                let resp = PbWatchResponse {
                    header: Some(node.header(rev)),
                    watch_id: -1,
                    ..Default::default()
                };
                tx.send(Ok(resp.into())).await.is_ok()
            }
            None => true,
        };
        if !sent {
            break;
        }
    }
    for key in watches.into_values() {
        node.hub.cancel(key);
    }
}

//! Decoding a watch response: newline-delimited JSON events
//! (`{"type":"ADDED","object":{...}}`) into typed [`WatchEvent`]s.
//!
//! Lines are bounded ([`MAX_EVENT_LINE_BYTES`]), a BOOKMARK only carries a
//! resourceVersion, and an ERROR event with code 410 ends the stream with
//! `Err(Error::Api { code: 410 })` so an informer knows to re-list.

use std::pin::Pin;

use bytes::{Buf, BytesMut};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error};

/// Longest event line accepted: objects are at most 1.5 MiB in the store, so anything
/// far beyond that is a broken stream, not an event.
pub const MAX_EVENT_LINE_BYTES: usize = 8 << 20;

/// One event of a watch.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchEvent<T> {
    Added(T),
    Modified(T),
    /// The object as it was last (its resourceVersion is the deletion's).
    Deleted(T),
    /// No change, only progress: the watch may be resumed from this resourceVersion.
    Bookmark {
        resource_version: String,
    },
    /// An error the server reported inside the stream (other than 410, which is an
    /// `Err` so informers re-list).
    Error(Box<Status>),
}

impl<T> WatchEvent<T> {
    /// The object of an Added/Modified/Deleted event.
    pub fn object(&self) -> Option<&T> {
        match self {
            WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o) => Some(o),
            _ => None,
        }
    }
}

/// A stream of watch events.
pub type WatchStream<T> = Pin<Box<dyn Stream<Item = Result<WatchEvent<T>, Error>> + Send>>;

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// Decodes one event line.
pub fn decode_event<T: DeserializeOwned>(line: &[u8]) -> Result<WatchEvent<T>, Error> {
    let raw: RawEvent = serde_json::from_slice(line).map_err(|e| {
        Error::BadWatchEvent(format!(
            "{e}: {}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ))
    })?;
    let object = |v: serde_json::Value| {
        serde_json::from_value::<T>(v).map_err(|source| Error::Decode {
            what: format!("{} watch event object", raw.kind),
            source,
        })
    };
    match raw.kind.as_str() {
        "ADDED" => Ok(WatchEvent::Added(object(raw.object)?)),
        "MODIFIED" => Ok(WatchEvent::Modified(object(raw.object)?)),
        "DELETED" => Ok(WatchEvent::Deleted(object(raw.object)?)),
        "BOOKMARK" => {
            let rv = raw.object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if rv.is_empty() {
                return Err(Error::BadWatchEvent(
                    "BOOKMARK without metadata.resourceVersion".into(),
                ));
            }
            Ok(WatchEvent::Bookmark {
                resource_version: rv,
            })
        }
        "ERROR" => {
            let status: Status =
                serde_json::from_value(raw.object).map_err(|source| Error::Decode {
                    what: "ERROR watch event status".into(),
                    source,
                })?;
            if status.code == Some(410) {
                Err(Error::Api(ApiError::from_status(&status, 410)))
            } else {
                Ok(WatchEvent::Error(Box::new(status)))
            }
        }
        other => Err(Error::BadWatchEvent(format!(
            "unknown event type {other:?}"
        ))),
    }
}

struct LineState<S> {
    body: S,
    buf: BytesMut,
    done: bool,
}

/// Turns a response body into a stream of events. The stream ends when the body ends
/// (the server's `timeoutSeconds`), after a 410 error, or after any other error.
pub fn event_stream<T, S, E>(body: S) -> WatchStream<T>
where
    T: DeserializeOwned + Send + 'static,
    S: Stream<Item = Result<bytes::Bytes, E>> + Send + Unpin + 'static,
    E: Into<Error>,
{
    let state = LineState {
        body,
        buf: BytesMut::new(),
        done: false,
    };
    Box::pin(futures::stream::unfold(state, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(pos) = st.buf.iter().position(|b| *b == b'\n') {
                let line = st.buf.split_to(pos + 1);
                let line = trim(&line);
                if line.is_empty() {
                    continue;
                }
                let ev = decode_event::<T>(line);
                if ev.is_err() {
                    st.done = true;
                }
                return Some((ev, st));
            }
            if st.buf.len() > MAX_EVENT_LINE_BYTES {
                st.done = true;
                let err = Error::BadWatchEvent(format!(
                    "event line longer than {MAX_EVENT_LINE_BYTES} bytes"
                ));
                return Some((Err(err), st));
            }
            match st.body.next().await {
                Some(Ok(chunk)) => st.buf.extend_from_slice(chunk.chunk()),
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(e.into()), st));
                }
                None => {
                    // A last line without its newline still counts.
                    st.done = true;
                    let rest = st.buf.split();
                    let line = trim(&rest);
                    if line.is_empty() {
                        return None;
                    }
                    return Some((decode_event::<T>(line), st));
                }
            }
        }
    }))
}

fn trim(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    let start = line[..end]
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(end);
    &line[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Pod;
    use bytes::Bytes;

    fn body(chunks: &[&str]) -> impl Stream<Item = Result<Bytes, Error>> + Send + Unpin + 'static {
        let chunks: Vec<Result<Bytes, Error>> = chunks
            .iter()
            .map(|c| Ok(Bytes::from(c.to_string())))
            .collect();
        futures::stream::iter(chunks)
    }

    #[tokio::test]
    async fn events_split_across_chunks_are_decoded_in_order() {
        let stream = event_stream::<Pod, _, _>(body(&[
            r#"{"type":"ADDED","object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"5"}}}"#,
            "\n{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"na",
            "me\":\"a\",\"resourceVersion\":\"6\"}}}\n\n",
            r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"9"}}}"#,
            "\n",
            r#"{"type":"DELETED","object":{"metadata":{"name":"a","resourceVersion":"10"}}}"#,
        ]));
        let events: Vec<_> = stream.collect().await;
        assert_eq!(events.len(), 4);
        let names: Vec<String> = events
            .iter()
            .map(|e| match e.as_ref().unwrap() {
                WatchEvent::Added(p) => {
                    format!("added {}", p.metadata.resource_version.as_deref().unwrap())
                }
                WatchEvent::Modified(p) => format!(
                    "modified {}",
                    p.metadata.resource_version.as_deref().unwrap()
                ),
                WatchEvent::Deleted(p) => format!(
                    "deleted {}",
                    p.metadata.resource_version.as_deref().unwrap()
                ),
                WatchEvent::Bookmark { resource_version } => format!("bookmark {resource_version}"),
                WatchEvent::Error(_) => "error".into(),
            })
            .collect();
        assert_eq!(names, ["added 5", "modified 6", "bookmark 9", "deleted 10"]);
    }

    #[tokio::test]
    async fn a_410_error_event_ends_the_stream_as_gone() {
        let stream = event_stream::<Pod, _, _>(body(&[
            "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"InternalError\",\"message\":\"x\",\"code\":500}}\n",
            "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"status\":\"Failure\",\"reason\":\"Expired\",\"message\":\"too old resource version: 3 (9)\",\"code\":410}}\n",
            "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"never\"}}}\n",
        ]));
        let events: Vec<_> = stream.collect().await;
        assert_eq!(events.len(), 2, "nothing after the 410");
        assert!(matches!(&events[0], Ok(WatchEvent::Error(s)) if s.code == Some(500)));
        let err = events[1].as_ref().unwrap_err();
        assert!(err.is_gone(), "{err}");
        assert_eq!(err.api().unwrap().reason, "Expired");
    }

    #[tokio::test]
    async fn garbage_and_wrong_kinds_are_errors_not_panics() {
        let events: Vec<_> = event_stream::<Pod, _, _>(body(&["not json\n"]))
            .collect()
            .await;
        assert!(matches!(&events[..], [Err(Error::BadWatchEvent(_))]));
        let events: Vec<_> = event_stream::<Pod, _, _>(body(&[
            "{\"type\":\"ADDED\",\"object\":{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\"}}\n",
        ]))
        .collect()
        .await;
        assert!(matches!(&events[..], [Err(Error::Decode { .. })]));
        let events: Vec<_> =
            event_stream::<Pod, _, _>(body(&["{\"type\":\"SOMETHING\",\"object\":{}}\n"]))
                .collect()
                .await;
        assert!(matches!(&events[..], [Err(Error::BadWatchEvent(_))]));
    }
}

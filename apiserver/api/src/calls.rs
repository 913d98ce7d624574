//! The typed calls of [`Client`]: get, list (and a paging helper), create, update (with
//! the object's resourceVersion as precondition), status updates, patches, delete, bind,
//! scale, events, logs and watch.

use std::pin::Pin;

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use k8s_openapi::List;
use reqwest::{Method, Url};
use serde::Serialize;

use crate::client::{Client, RequestSpec, no_query};
use crate::error::Error;
use crate::params::{DeleteParams, ListParams, LogParams, Patch, PostParams, WatchParams};
use crate::resource::{Object, namespace_of};
use crate::types::{
    Binding, Event, EventSource, MicroTime, ObjectMeta, ObjectReference, Scale, Time,
};
use crate::watch::{WatchStream, event_stream};

/// Page size `list_all` asks for when the caller set none.
const DEFAULT_PAGE_SIZE: u32 = 500;
/// At most this many pages in one `list_all` (a continue loop must end).
const MAX_PAGES: usize = 100_000;

/// One page of a list.
#[derive(Debug, Clone)]
pub struct ObjectList<T> {
    pub items: Vec<T>,
    /// The store revision the list was read at (resume a watch from here).
    pub resource_version: String,
    /// Token of the next page; None on the last.
    pub continue_token: Option<String>,
}

/// What a delete answered.
#[derive(Debug, Clone)]
pub enum Deleted<T> {
    /// The object is gone.
    Gone,
    /// The object still exists with a deletionTimestamp (finalizers pending).
    Pending(T),
}

/// A stream of log bytes.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, Error>> + Send>>;

fn json_body<B: Serialize>(body: &B) -> Result<(Bytes, &'static str), Error> {
    let bytes = serde_json::to_vec(body).map_err(|source| Error::Decode {
        what: "request body".into(),
        source,
    })?;
    Ok((Bytes::from(bytes), "application/json"))
}

fn name_of<T: Object>(object: &T) -> Result<&str, Error> {
    object
        .metadata()
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| Error::InvalidRequest(format!("{} has no metadata.name", T::KIND)))
}

fn check_namespace<T: Object>(object: &T) -> Result<Option<&str>, Error> {
    let ns = namespace_of(object);
    if T::NAMESPACED && ns.is_none_or(str::is_empty) {
        return Err(Error::InvalidRequest(format!(
            "{} is namespaced: set metadata.namespace",
            T::KIND
        )));
    }
    Ok(ns)
}

impl Client {
    /// GET one object.
    pub async fn get<T: Object>(&self, namespace: Option<&str>, name: &str) -> Result<T, Error> {
        let path = T::object_path(namespace, name);
        self.send_json(&RequestSpec {
            method: Method::GET,
            path: &path,
            query: &no_query,
            body: None,
            timeout: self.request_timeout(),
        })
        .await
    }

    /// GET one object, `None` if it does not exist.
    pub async fn get_opt<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<T>, Error> {
        match self.get(namespace, name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of a list (`namespace` None = all namespaces).
    pub async fn list<T: Object>(
        &self,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<ObjectList<T>, Error> {
        let path = T::collection_path(namespace);
        let query = |u: &mut Url| params.apply(u);
        let list: List<T> = self
            .send_json(&RequestSpec {
                method: Method::GET,
                path: &path,
                query: &query,
                body: None,
                timeout: self.request_timeout(),
            })
            .await?;
        Ok(ObjectList {
            items: list.items,
            resource_version: list.metadata.resource_version.unwrap_or_default(),
            continue_token: list.metadata.continue_.filter(|c| !c.is_empty()),
        })
    }

    /// Every object, following `continue` tokens page by page; returns the items and the
    /// list's resourceVersion (the same on every page: the server keeps one snapshot).
    pub async fn list_all<T: Object>(
        &self,
        namespace: Option<&str>,
        params: &ListParams,
    ) -> Result<(Vec<T>, String), Error> {
        let mut params = params.clone();
        params.limit = Some(params.limit.unwrap_or(DEFAULT_PAGE_SIZE));
        params.continue_token = None;
        let mut items = Vec::new();
        let mut resource_version = String::new();
        for _ in 0..MAX_PAGES {
            let page = self.list::<T>(namespace, &params).await?;
            items.extend(page.items);
            if resource_version.is_empty() {
                resource_version = page.resource_version;
            }
            match page.continue_token {
                Some(token) => params.continue_token = Some(token),
                None => return Ok((items, resource_version)),
            }
        }
        Err(Error::InvalidRequest(format!(
            "list of {} did not end after {MAX_PAGES} pages",
            T::URL_PATH_SEGMENT
        )))
    }

    /// POST a new object (namespace from its metadata).
    pub async fn create<T: Object>(&self, object: &T, params: &PostParams) -> Result<T, Error> {
        let path = T::collection_path(check_namespace(object)?);
        let query = |u: &mut Url| params.apply(u);
        self.send_json(&RequestSpec {
            method: Method::POST,
            path: &path,
            query: &query,
            body: Some(json_body(object)?),
            timeout: self.request_timeout(),
        })
        .await
    }

    /// PUT the object; its `metadata.resourceVersion` is the precondition (409 if stale).
    pub async fn update<T: Object>(&self, object: &T, params: &PostParams) -> Result<T, Error> {
        self.put(object, None, params).await
    }

    /// PUT the object's status (`/status`), same precondition.
    pub async fn update_status<T: Object>(
        &self,
        object: &T,
        params: &PostParams,
    ) -> Result<T, Error> {
        self.put(object, Some("status"), params).await
    }

    async fn put<T: Object>(
        &self,
        object: &T,
        subresource: Option<&str>,
        params: &PostParams,
    ) -> Result<T, Error> {
        let ns = check_namespace(object)?;
        let name = name_of(object)?;
        if object
            .metadata()
            .resource_version
            .as_deref()
            .is_none_or(str::is_empty)
        {
            return Err(Error::InvalidRequest(format!(
                "update of {} {name}: metadata.resourceVersion is the precondition and must be set",
                T::KIND
            )));
        }
        let path = match subresource {
            Some(sub) => T::subresource_path(ns, name, sub),
            None => T::object_path(ns, name),
        };
        let query = |u: &mut Url| params.apply(u);
        self.send_json(&RequestSpec {
            method: Method::PUT,
            path: &path,
            query: &query,
            body: Some(json_body(object)?),
            timeout: self.request_timeout(),
        })
        .await
    }

    /// PATCH an object (merge, JSON or strategic merge patch).
    pub async fn patch<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        params: &PostParams,
    ) -> Result<T, Error> {
        self.patch_at::<T>(T::object_path(namespace, name), patch, params)
            .await
    }

    /// PATCH an object's status.
    pub async fn patch_status<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        patch: &Patch,
        params: &PostParams,
    ) -> Result<T, Error> {
        self.patch_at::<T>(
            T::subresource_path(namespace, name, "status"),
            patch,
            params,
        )
        .await
    }

    async fn patch_at<T: Object>(
        &self,
        path: String,
        patch: &Patch,
        params: &PostParams,
    ) -> Result<T, Error> {
        let (body, _) = json_body(patch.body())?;
        let query = |u: &mut Url| params.apply(u);
        self.send_json(&RequestSpec {
            method: Method::PATCH,
            path: &path,
            query: &query,
            body: Some((body, patch.content_type())),
            timeout: self.request_timeout(),
        })
        .await
    }

    /// DELETE an object (propagation policy and preconditions in `params`).
    pub async fn delete<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        params: &DeleteParams,
    ) -> Result<Deleted<T>, Error> {
        let path = T::object_path(namespace, name);
        let body: serde_json::Value = self
            .send_json(&RequestSpec {
                method: Method::DELETE,
                path: &path,
                query: &no_query,
                body: Some(json_body(&params.body())?),
                timeout: self.request_timeout(),
            })
            .await?;
        if body["kind"] == "Status" {
            return Ok(Deleted::Gone);
        }
        // The server answers the object itself; it is gone unless finalizers hold it.
        let object: T = serde_json::from_value(body).map_err(|source| Error::Decode {
            what: format!("DELETE {path}"),
            source,
        })?;
        let meta = object.metadata();
        if meta.deletion_timestamp.is_some()
            && meta.finalizers.as_ref().is_some_and(|f| !f.is_empty())
        {
            Ok(Deleted::Pending(object))
        } else {
            Ok(Deleted::Gone)
        }
    }

    /// Binds a pod to a node (POST `pods/{name}/binding`), as the scheduler does. The
    /// server refuses (409) a pod that is already bound.
    pub async fn bind(&self, namespace: &str, pod: &str, node: &str) -> Result<(), Error> {
        let binding = Binding {
            metadata: ObjectMeta {
                name: Some(pod.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            target: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(node.to_string()),
                ..Default::default()
            },
        };
        let path = crate::types::Pod::subresource_path(Some(namespace), pod, "binding");
        self.send_ok(&RequestSpec {
            method: Method::POST,
            path: &path,
            query: &no_query,
            body: Some(json_body(&binding)?),
            timeout: self.request_timeout(),
        })
        .await?;
        Ok(())
    }

    /// GET the `/scale` subresource (deployments, replicasets).
    pub async fn get_scale<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Scale, Error> {
        let path = T::subresource_path(namespace, name, "scale");
        self.send_json(&RequestSpec {
            method: Method::GET,
            path: &path,
            query: &no_query,
            body: None,
            timeout: self.request_timeout(),
        })
        .await
    }

    /// PUT the `/scale` subresource (its resourceVersion, if set, is the precondition).
    pub async fn replace_scale<T: Object>(
        &self,
        namespace: Option<&str>,
        name: &str,
        scale: &Scale,
    ) -> Result<Scale, Error> {
        let path = T::subresource_path(namespace, name, "scale");
        self.send_json(&RequestSpec {
            method: Method::PUT,
            path: &path,
            query: &no_query,
            body: Some(json_body(scale)?),
            timeout: self.request_timeout(),
        })
        .await
    }

    /// Records a core/v1 Event about `object` (type "Normal" or "Warning"), as
    /// controllers do: named `<object>.<nanoseconds hex>` in the object's namespace
    /// ("default" for cluster-scoped objects).
    pub async fn create_event(
        &self,
        object: &ObjectReference,
        event_type: &str,
        reason: &str,
        message: &str,
        component: &str,
    ) -> Result<Event, Error> {
        let now = crate::types::now();
        let namespace = object
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".into());
        let event = Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}",
                    object.name.as_deref().unwrap_or("unknown"),
                    now.as_nanosecond()
                )),
                namespace: Some(namespace),
                ..Default::default()
            },
            involved_object: object.clone(),
            type_: Some(event_type.to_string()),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            source: Some(EventSource {
                component: Some(component.to_string()),
                host: None,
            }),
            reporting_component: Some(component.to_string()),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            event_time: Some(MicroTime(now)),
            count: Some(1),
            ..Default::default()
        };
        self.create(&event, &PostParams::default()).await
    }

    /// A pod's log (`pods/{name}/log`) as a byte stream; with `follow` it stays open
    /// (bounded by `log_follow_timeout`).
    pub async fn logs(
        &self,
        namespace: &str,
        pod: &str,
        params: &LogParams,
    ) -> Result<ByteStream, Error> {
        let path = crate::types::Pod::subresource_path(Some(namespace), pod, "log");
        let query = |u: &mut Url| params.apply(u);
        let timeout = if params.follow {
            self.config().log_follow_timeout
        } else {
            self.request_timeout()
        };
        let resp = self
            .send_ok(&RequestSpec {
                method: Method::GET,
                path: &path,
                query: &query,
                body: None,
                timeout,
            })
            .await?;
        Ok(Box::pin(resp.bytes_stream().map_err(Error::Http)))
    }

    /// Watches objects from `resource_version` ("" = the current objects as ADDED
    /// first, then changes). An expired resourceVersion answers `Err(is_gone())`,
    /// either here or as the stream's last item.
    pub async fn watch<T: Object>(
        &self,
        namespace: Option<&str>,
        params: &WatchParams,
        resource_version: &str,
    ) -> Result<WatchStream<T>, Error> {
        let path = T::collection_path(namespace);
        let query = |u: &mut Url| params.apply(u, resource_version);
        let timeout = std::time::Duration::from_secs(params.timeout_s.into())
            + self.config().watch_timeout_margin;
        let resp = self
            .send_ok(&RequestSpec {
                method: Method::GET,
                path: &path,
                query: &query,
                body: None,
                timeout,
            })
            .await?;
        Ok(event_stream::<T, _, _>(resp.bytes_stream()))
    }
}

/// An `ObjectReference` to an object (for events and bindings).
pub fn object_reference<T: Object>(object: &T) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(T::API_VERSION.to_string()),
        kind: Some(T::KIND.to_string()),
        name: meta.name.clone(),
        namespace: namespace_of(object).map(str::to_string),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

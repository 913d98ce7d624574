//! An informer: list, then watch from the list's resourceVersion, keeping a local cache
//! (by `namespace/name`) that controllers read, and telling them what changed.
//!
//! - A watch that ends (the server's `timeoutSeconds`) is resumed from the last
//!   resourceVersion seen (events and BOOKMARKs move it), so nothing is missed or
//!   repeated.
//! - A 410 (compacted resourceVersion, as an answer or inside the stream) makes it
//!   re-list; the new list is compared with the cache so deletions missed meanwhile
//!   become Deleted events and changes become Updated events.
//! - Failed lists and watches are retried with a doubling, capped backoff.
//! - Every `resync` period each cached object is offered again as a Resync event, so
//!   level-based controllers re-check state they may have failed to act on.
//! - Events go through a bounded channel: a slow consumer slows the informer (whose
//!   watch then waits on the server's bounded buffer), it never grows memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::Error;
use crate::params::{ListParams, WatchParams};
use crate::resource::{Object, object_key};
use crate::watch::{WatchEvent, WatchStream};

/// Where an informer lists and watches: the apiserver ([`ApiListWatch`]) or, in unit
/// tests, a script.
pub trait ListerWatcher<T>: Send + Sync + 'static {
    /// All objects and the list's resourceVersion.
    fn list(&self) -> impl Future<Output = Result<(Vec<T>, String), Error>> + Send;
    /// Events after `resource_version`.
    fn watch(
        &self,
        resource_version: &str,
    ) -> impl Future<Output = Result<WatchStream<T>, Error>> + Send;
}

/// Lists and watches one resource on the apiserver (one namespace or all).
#[derive(Clone)]
pub struct ApiListWatch {
    pub client: Client,
    pub namespace: Option<String>,
    pub list: ListParams,
    pub watch: WatchParams,
}

impl ApiListWatch {
    /// Every object of the resource in `namespace` (None = all), with the selectors of
    /// `list` used for both the list and the watch.
    pub fn new(client: Client, namespace: Option<&str>, list: ListParams) -> Self {
        let watch = WatchParams::from_list(&list);
        ApiListWatch {
            client,
            namespace: namespace.map(str::to_string),
            list,
            watch,
        }
    }
}

impl<T: Object> ListerWatcher<T> for ApiListWatch {
    async fn list(&self) -> Result<(Vec<T>, String), Error> {
        self.client
            .list_all::<T>(self.namespace.as_deref(), &self.list)
            .await
    }

    async fn watch(&self, resource_version: &str) -> Result<WatchStream<T>, Error> {
        self.client
            .watch::<T>(self.namespace.as_deref(), &self.watch, resource_version)
            .await
    }
}

/// What changed in the cache.
#[derive(Debug, Clone)]
pub enum InformerEvent<T> {
    Added(Arc<T>),
    Updated {
        old: Arc<T>,
        new: Arc<T>,
    },
    Deleted(Arc<T>),
    /// Periodic re-delivery of a cached object (nothing changed).
    Resync(Arc<T>),
}

impl<T: Object> InformerEvent<T> {
    /// The `namespace/name` key of the object concerned.
    pub fn key(&self) -> String {
        match self {
            InformerEvent::Added(o)
            | InformerEvent::Deleted(o)
            | InformerEvent::Resync(o)
            | InformerEvent::Updated { new: o, .. } => object_key(o.as_ref()),
        }
    }
}

/// The informer's cache, readable from any task.
pub struct Store<T> {
    objects: Arc<RwLock<HashMap<String, Arc<T>>>>,
    synced: watch::Receiver<bool>,
}

impl<T> Clone for Store<T> {
    fn clone(&self) -> Self {
        Store {
            objects: self.objects.clone(),
            synced: self.synced.clone(),
        }
    }
}

impl<T> Store<T> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The object with this `namespace/name` (or `name`) key.
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().get(key).cloned()
    }

    /// Every cached object.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.read().values().cloned().collect()
    }

    /// Every cached key.
    pub fn keys(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// Number of cached objects.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// No object cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has been loaded.
    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits for the first list (false if the informer stopped before it).
    pub async fn wait_synced(&self) -> bool {
        let mut rx = self.synced.clone();
        rx.wait_for(|s| *s).await.is_ok()
    }
}

/// Timings and sizes of an informer.
#[derive(Debug, Clone)]
pub struct InformerConfig {
    /// Period of Resync events; None = never.
    pub resync: Option<Duration>,
    /// First retry delay after a failed list or watch; doubles per failure.
    pub backoff_base: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
    /// Capacity of the event channel.
    pub event_buffer: usize,
}

impl Default for InformerConfig {
    fn default() -> Self {
        InformerConfig {
            resync: Some(Duration::from_secs(300)),
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            event_buffer: 1024,
        }
    }
}

/// One informer; [`Informer::run`] keeps the cache until shutdown.
pub struct Informer<T, L> {
    source: L,
    config: InformerConfig,
    objects: Arc<RwLock<HashMap<String, Arc<T>>>>,
    synced: watch::Sender<bool>,
    events: mpsc::Sender<InformerEvent<T>>,
}

/// Why one watch ended.
enum WatchEnd {
    /// Resume from the last resourceVersion (stream ended, or failed and backed off).
    Resume,
    /// Re-list (410).
    Relist,
    Shutdown,
}

impl<T: Object> Informer<T, ApiListWatch> {
    /// An informer over the apiserver.
    pub fn for_client(
        client: Client,
        namespace: Option<&str>,
        list: ListParams,
        config: InformerConfig,
    ) -> (Self, Store<T>, mpsc::Receiver<InformerEvent<T>>) {
        Self::new(ApiListWatch::new(client, namespace, list), config)
    }
}

impl<T: Object, L: ListerWatcher<T>> Informer<T, L> {
    /// An informer, its cache and its event channel (drop the receiver if only the
    /// cache is wanted).
    pub fn new(
        source: L,
        config: InformerConfig,
    ) -> (Self, Store<T>, mpsc::Receiver<InformerEvent<T>>) {
        let (events, rx) = mpsc::channel(config.event_buffer.max(1));
        let (synced, synced_rx) = watch::channel(false);
        let objects = Arc::new(RwLock::new(HashMap::new()));
        let store = Store {
            objects: objects.clone(),
            synced: synced_rx,
        };
        (
            Informer {
                source,
                config,
                objects,
                synced,
                events,
            },
            store,
            rx,
        )
    }

    /// Lists, watches, re-lists on 410 and retries failures until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.backoff_base;
        let mut next_resync = self.config.resync.map(|p| Instant::now() + p);
        'list: loop {
            let listed = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = self.source.list() => r,
            };
            let mut resource_version = match listed {
                Ok((items, rv)) => {
                    if !self.replace(items, &shutdown).await {
                        return;
                    }
                    self.synced.send_replace(true);
                    backoff = self.config.backoff_base;
                    rv
                }
                Err(e) => {
                    tracing::warn!(resource = T::URL_PATH_SEGMENT, error = %e, "list failed; retrying");
                    if !self.pause(&mut backoff, &shutdown).await {
                        return;
                    }
                    continue 'list;
                }
            };
            loop {
                match self
                    .watch_once(
                        &mut resource_version,
                        &mut next_resync,
                        &mut backoff,
                        &shutdown,
                    )
                    .await
                {
                    WatchEnd::Resume => {}
                    WatchEnd::Relist => continue 'list,
                    WatchEnd::Shutdown => return,
                }
            }
        }
    }

    /// One watch from `resource_version`, applied to the cache until it ends.
    async fn watch_once(
        &self,
        resource_version: &mut String,
        next_resync: &mut Option<Instant>,
        backoff: &mut Duration,
        shutdown: &CancellationToken,
    ) -> WatchEnd {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return WatchEnd::Shutdown,
            r = self.source.watch(resource_version) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) if e.is_gone() => {
                tracing::info!(
                    resource = T::URL_PATH_SEGMENT,
                    "resourceVersion expired; re-listing"
                );
                return WatchEnd::Relist;
            }
            Err(e) => {
                tracing::warn!(resource = T::URL_PATH_SEGMENT, error = %e, "watch failed; retrying");
                return if self.pause(backoff, shutdown).await {
                    WatchEnd::Resume
                } else {
                    WatchEnd::Shutdown
                };
            }
        };
        loop {
            let resync_at = *next_resync;
            let item = tokio::select! {
                _ = shutdown.cancelled() => return WatchEnd::Shutdown,
                _ = sleep_until_opt(resync_at) => {
                    if !self.resync(shutdown).await {
                        return WatchEnd::Shutdown;
                    }
                    *next_resync = self.config.resync.map(|p| Instant::now() + p);
                    continue;
                }
                item = stream.next() => item,
            };
            match item {
                None => {
                    // The server closed the watch (timeoutSeconds): resume at once.
                    *backoff = self.config.backoff_base;
                    return WatchEnd::Resume;
                }
                Some(Ok(event)) => {
                    *backoff = self.config.backoff_base;
                    if let Some(rv) = self.apply(event, shutdown).await {
                        *resource_version = rv;
                    }
                    if shutdown.is_cancelled() {
                        return WatchEnd::Shutdown;
                    }
                }
                Some(Err(e)) if e.is_gone() => {
                    tracing::info!(resource = T::URL_PATH_SEGMENT, "watch expired; re-listing");
                    return WatchEnd::Relist;
                }
                Some(Err(e)) => {
                    tracing::warn!(resource = T::URL_PATH_SEGMENT, error = %e, "watch broke; resuming");
                    return if self.pause(backoff, shutdown).await {
                        WatchEnd::Resume
                    } else {
                        WatchEnd::Shutdown
                    };
                }
            }
        }
    }

    /// Applies one watch event; returns the resourceVersion to resume from.
    async fn apply(&self, event: WatchEvent<T>, shutdown: &CancellationToken) -> Option<String> {
        let (rv, out) = match event {
            WatchEvent::Added(o) | WatchEvent::Modified(o) => {
                let rv = o.metadata().resource_version.clone();
                let new = Arc::new(o);
                let old = self.write().insert(object_key(new.as_ref()), new.clone());
                let ev = match old {
                    Some(old) => InformerEvent::Updated { old, new },
                    None => InformerEvent::Added(new),
                };
                (rv, Some(ev))
            }
            WatchEvent::Deleted(o) => {
                let rv = o.metadata().resource_version.clone();
                let key = object_key(&o);
                self.write().remove(&key);
                (rv, Some(InformerEvent::Deleted(Arc::new(o))))
            }
            WatchEvent::Bookmark { resource_version } => (Some(resource_version), None),
            WatchEvent::Error(status) => {
                tracing::warn!(resource = T::URL_PATH_SEGMENT, message = ?status.message, "error event in watch");
                (None, None)
            }
        };
        if let Some(ev) = out {
            self.emit(ev, shutdown).await;
        }
        rv.filter(|rv| !rv.is_empty())
    }

    /// Replaces the cache with a fresh list, emitting the differences.
    async fn replace(&self, items: Vec<T>, shutdown: &CancellationToken) -> bool {
        let mut fresh: HashMap<String, Arc<T>> = items
            .into_iter()
            .map(|o| (object_key(&o), Arc::new(o)))
            .collect();
        let mut events = Vec::new();
        {
            let mut cache = self.write();
            for (key, old) in cache.iter() {
                match fresh.get(key) {
                    None => events.push(InformerEvent::Deleted(old.clone())),
                    Some(new)
                        if new.metadata().resource_version != old.metadata().resource_version =>
                    {
                        events.push(InformerEvent::Updated {
                            old: old.clone(),
                            new: new.clone(),
                        })
                    }
                    Some(_) => {}
                }
            }
            for (key, new) in &fresh {
                if !cache.contains_key(key) {
                    events.push(InformerEvent::Added(new.clone()));
                }
            }
            std::mem::swap(&mut *cache, &mut fresh);
        }
        for ev in events {
            self.emit(ev, shutdown).await;
        }
        !shutdown.is_cancelled()
    }

    async fn resync(&self, shutdown: &CancellationToken) -> bool {
        let all: Vec<Arc<T>> = self.read_all();
        for o in all {
            self.emit(InformerEvent::Resync(o), shutdown).await;
        }
        !shutdown.is_cancelled()
    }

    fn read_all(&self) -> Vec<Arc<T>> {
        self.objects
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<T>>> {
        self.objects.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends an event, waiting for room; a dropped receiver is fine (cache-only use).
    async fn emit(&self, event: InformerEvent<T>, shutdown: &CancellationToken) {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = self.events.send(event) => {}
        }
    }

    /// Sleeps the backoff (doubling it for next time); false on shutdown.
    async fn pause(&self, backoff: &mut Duration, shutdown: &CancellationToken) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(self.config.backoff_max);
        tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

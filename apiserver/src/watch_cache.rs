//! The watch cache: one per resource per apiserver process.
//!
//! ONE store prefix watch per resource (with prev_kv and progress notifications) feeds
//! a current-state map and a bounded ring of recent events. Every API watcher is a
//! bounded channel fed by the cache task with `try_send`: a watcher whose buffer is full
//! is cut off (its channel is closed and it is told why), so a slow client never stalls
//! the store watch, the writers, or the other watchers.
//!
//! Invariants: `revision` is the store revision up to which every event of the resource
//! has been applied to `state`, pushed to `history` and sent to every watcher; `history`
//! holds every event with a revision in `(oldest, revision]`. A watch from a
//! resourceVersion inside that window is replayed from the ring and registered under the
//! same lock, so it sees no gap and no duplicate; an older one is served by the caller
//! from a store watch of its own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{EventType as StoreEventType, WatchOptions};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use crate::error::{ApiError, ApiResult};
use crate::resources::ResourceInfo;
use crate::store::{Store, decode_value, prefix_end, set_resource_version};

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// An object with its JSON text, serialised once and shared by every watcher.
#[derive(Debug)]
pub struct CachedObject {
    pub value: Value,
    pub json: String,
}

impl CachedObject {
    pub fn new(value: Value) -> Arc<Self> {
        let json = serde_json::to_string(&value).unwrap_or_else(|_| "{}".into());
        Arc::new(Self { value, json })
    }
}

/// One change of one key, as the store reported it.
#[derive(Debug)]
pub struct CacheEvent {
    pub key: String,
    pub revision: i64,
    /// The new state (for a deletion: the last state, stamped with the deletion's revision).
    pub object: Arc<CachedObject>,
    /// The state before, if the key existed.
    pub prev: Option<Arc<CachedObject>>,
    pub deleted: bool,
}

/// What a watcher receives.
#[derive(Debug, Clone)]
pub enum WatchMessage {
    Event(EventType, Arc<CachedObject>),
    /// Every event up to this revision has been sent.
    Bookmark(i64),
    /// The watch ends with this Status (e.g. 410 after a compaction).
    Error(Value),
}

/// A selector over objects (label/field selectors, a name).
pub type Predicate = Box<dyn Fn(&Value) -> bool + Send + Sync>;

/// Which objects a watcher wants.
pub struct WatchFilter {
    /// Store key prefix (the resource's, or one namespace's).
    pub key_prefix: String,
    /// Label/field selector and name match; None = everything under the prefix.
    pub predicate: Option<Predicate>,
}

impl WatchFilter {
    pub fn matches(&self, key: &str, object: &Value) -> bool {
        key.starts_with(&self.key_prefix) && self.predicate.as_ref().is_none_or(|p| p(object))
    }

    /// The message this watcher gets for `event`, if any: an object moving into the
    /// selection is ADDED, one moving out is DELETED (as kube-apiserver does).
    pub fn translate(&self, event: &CacheEvent) -> Option<WatchMessage> {
        let now = !event.deleted && self.matches(&event.key, &event.object.value);
        let before = event
            .prev
            .as_ref()
            .is_some_and(|p| self.matches(&event.key, &p.value));
        let kind = match (before, now) {
            (true, true) => EventType::Modified,
            (false, true) => EventType::Added,
            (true, false) => EventType::Deleted,
            (false, false) => return None,
        };
        Some(WatchMessage::Event(kind, event.object.clone()))
    }
}

struct Slot {
    tx: mpsc::Sender<WatchMessage>,
    filter: Arc<WatchFilter>,
    bookmarks: bool,
    cut_off: Arc<AtomicBool>,
}

struct Inner {
    revision: i64,
    oldest: i64,
    state: BTreeMap<String, Arc<CachedObject>>,
    history: VecDeque<Arc<CacheEvent>>,
    watchers: HashMap<u64, Slot>,
}

/// A registered watcher: the replayed/initial messages, then the live channel.
pub struct Subscription {
    pub initial: Vec<WatchMessage>,
    pub rx: mpsc::Receiver<WatchMessage>,
    /// Set when the cache cut this watcher off for not keeping up.
    pub cut_off: Arc<AtomicBool>,
    id: u64,
    cache: Arc<WatchCache>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.cache.unregister(self.id);
    }
}

/// How a watch request is to be served.
pub enum WatchStart {
    /// Served by the cache.
    Cached(Subscription),
    /// The resourceVersion is older than the ring: the caller watches the store itself
    /// (with the filter handed back).
    FromStore(WatchFilter),
}

/// Sizes and periods of a cache.
#[derive(Debug, Clone, Copy)]
pub struct CacheConfig {
    pub watcher_buffer: usize,
    pub history_events: usize,
    pub bookmark_interval: Duration,
}

/// The cache of one resource.
pub struct WatchCache {
    pub resource: &'static ResourceInfo,
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    config: CacheConfig,
    /// The cache's revision, for waiters (0 until the first list).
    revision_tx: watch::Sender<i64>,
}

impl WatchCache {
    /// Starts the cache task of `resource` and returns the cache (not yet filled: see
    /// [`WatchCache::wait_revision`]).
    pub fn start(store: Store, resource: &'static ResourceInfo, config: CacheConfig) -> Arc<Self> {
        let (revision_tx, _) = watch::channel(0);
        let cache = Arc::new(Self {
            resource,
            inner: Mutex::new(Inner {
                revision: 0,
                oldest: 0,
                state: BTreeMap::new(),
                history: VecDeque::new(),
                watchers: HashMap::new(),
            }),
            next_id: AtomicU64::new(1),
            config,
            revision_tx,
        });
        tokio::spawn(run(cache.clone(), store));
        cache
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number of registered watchers (for /metrics).
    pub fn watcher_count(&self) -> usize {
        self.lock().watchers.len()
    }

    /// The revision the cache is current at.
    pub fn revision(&self) -> i64 {
        self.lock().revision
    }

    /// Waits (up to `timeout`) until the cache is current at `revision` or later.
    pub async fn wait_revision(&self, revision: i64, timeout: Duration) -> ApiResult<()> {
        let mut rx = self.revision_tx.subscribe();
        let wait = rx.wait_for(|r| *r >= revision.max(1));
        match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::Timeout {
                message: format!(
                    "Too large resource version: {revision}, current: {}",
                    self.revision()
                ),
            }),
        }
    }

    /// The current objects matching `filter`, and the revision they are current at.
    pub fn snapshot(&self, filter: &WatchFilter) -> (Vec<Arc<CachedObject>>, i64) {
        let inner = self.lock();
        let items = inner
            .state
            .range(filter.key_prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&filter.key_prefix))
            .filter(|(k, o)| filter.matches(k, &o.value))
            .map(|(_, o)| o.clone())
            .collect();
        (items, inner.revision)
    }

    /// Registers a watcher. `from` = None: the current objects as ADDED, then changes;
    /// Some(rv): every change after rv.
    pub async fn watch(
        self: &Arc<Self>,
        from: Option<i64>,
        filter: WatchFilter,
        bookmarks: bool,
    ) -> ApiResult<WatchStart> {
        if let Some(rv) = from {
            self.wait_revision(rv, Duration::from_secs(3)).await?;
        } else {
            self.wait_revision(1, Duration::from_secs(10)).await?;
        }
        let mut inner = self.lock();
        if let Some(rv) = from
            && rv < inner.oldest
        {
            return Ok(WatchStart::FromStore(filter));
        }
        let filter = Arc::new(filter);
        let initial: Vec<WatchMessage> = match from {
            None => inner
                .state
                .range(filter.key_prefix.clone()..)
                .take_while(|(k, _)| k.starts_with(&filter.key_prefix))
                .filter(|(k, o)| filter.matches(k, &o.value))
                .map(|(_, o)| WatchMessage::Event(EventType::Added, o.clone()))
                .collect(),
            Some(rv) => inner
                .history
                .iter()
                .filter(|e| e.revision > rv)
                .filter_map(|e| filter.translate(e))
                .collect(),
        };
        let (tx, rx) = mpsc::channel(self.config.watcher_buffer);
        let cut_off = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        inner.watchers.insert(
            id,
            Slot {
                tx,
                filter,
                bookmarks,
                cut_off: cut_off.clone(),
            },
        );
        drop(inner);
        Ok(WatchStart::Cached(Subscription {
            initial,
            rx,
            cut_off,
            id,
            cache: self.clone(),
        }))
    }

    fn unregister(&self, id: u64) {
        self.lock().watchers.remove(&id);
    }

    /// Replaces the state after a (re)list at `revision`; watchers registered before
    /// lost their position and are ended with 410 so they re-list.
    fn reset(&self, items: Vec<(String, Arc<CachedObject>)>, revision: i64) {
        let mut inner = self.lock();
        let had_state = inner.revision > 0;
        inner.state = items.into_iter().collect();
        inner.history.clear();
        inner.revision = revision;
        inner.oldest = revision;
        if had_state {
            let status = ApiError::expired(
                "the watch cache had to re-list (its position was compacted); re-list and watch again",
            )
            .to_status();
            for (_, slot) in inner.watchers.drain() {
                let _ = slot.tx.try_send(WatchMessage::Error(status.clone()));
            }
        }
        drop(inner);
        self.revision_tx.send_replace(revision);
    }

    /// Applies the events of one store revision and sends them to the watchers.
    fn apply(&self, events: Vec<CacheEvent>, revision: i64) {
        let mut inner = self.lock();
        if revision <= inner.revision {
            return;
        }
        for event in events {
            let event = Arc::new(event);
            if event.deleted {
                inner.state.remove(&event.key);
            } else {
                inner.state.insert(event.key.clone(), event.object.clone());
            }
            inner.watchers.retain(|_, slot| {
                let Some(msg) = slot.filter.translate(&event) else {
                    return true;
                };
                match slot.tx.try_send(msg) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Too slow: cut off, never wait (the writers and the other
                        // watchers must not depend on this client's pace).
                        slot.cut_off.store(true, Ordering::Relaxed);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                }
            });
            inner.history.push_back(event);
        }
        while inner.history.len() > self.config.history_events {
            if let Some(e) = inner.history.pop_front() {
                inner.oldest = e.revision;
            }
        }
        inner.revision = revision;
        drop(inner);
        self.revision_tx.send_replace(revision);
    }

    /// Records that the store has nothing new up to `revision`.
    fn progress(&self, revision: i64) {
        let mut inner = self.lock();
        if revision > inner.revision {
            inner.revision = revision;
            drop(inner);
            self.revision_tx.send_replace(revision);
        }
    }

    /// Sends a BOOKMARK to every watcher that asked for them (skipped when its buffer is
    /// full: a bookmark is never worth cutting a watcher off for).
    fn bookmark(&self) {
        let inner = self.lock();
        for slot in inner.watchers.values().filter(|s| s.bookmarks) {
            let _ = slot.tx.try_send(WatchMessage::Bookmark(inner.revision));
        }
    }
}

/// The cache task: list, watch from the list's revision, re-watch on errors, re-list
/// when the position was compacted.
async fn run(cache: Arc<WatchCache>, store: Store) {
    let prefix = cache.resource.store_prefix();
    let mut need_list = true;
    let mut backoff = Duration::from_millis(100);
    loop {
        if need_list {
            match list_all(&store, &prefix).await {
                Ok((items, revision)) => {
                    cache.reset(items, revision);
                    need_list = false;
                }
                Err(e) => {
                    tracing::warn!(
                        resource = cache.resource.plural,
                        "watch cache list failed: {e}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        match watch_store(&cache, &store, &prefix).await {
            WatchEnd::Compacted => need_list = true,
            WatchEnd::Broken(e) => {
                tracing::warn!(resource = cache.resource.plural, "store watch ended: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

enum WatchEnd {
    Compacted,
    Broken(String),
}

async fn list_all(
    store: &Store,
    prefix: &str,
) -> ApiResult<(Vec<(String, Arc<CachedObject>)>, i64)> {
    let mut items = Vec::new();
    let mut revision = 0;
    let mut start: Option<String> = None;
    loop {
        let page = store.list(prefix, start.as_deref(), 1000, revision).await?;
        if revision == 0 {
            revision = page.revision;
        }
        let last = page.items.last().map(|s| s.key.clone());
        for s in page.items {
            items.push((s.key, CachedObject::new(s.value)));
        }
        match (page.more, last) {
            (true, Some(last)) => start = Some(format!("{last}\0")),
            _ => return Ok((items, revision)),
        }
    }
}

async fn watch_store(cache: &Arc<WatchCache>, store: &Store, prefix: &str) -> WatchEnd {
    let from = cache.revision() + 1;
    let options = WatchOptions::new()
        .with_range(prefix_end(prefix))
        .with_prev_key()
        .with_progress_notify()
        .with_start_revision(from);
    let mut client = store.client().watch_client();
    let mut stream = match client.watch(prefix, Some(options)).await {
        Ok(s) => s,
        Err(e) => return WatchEnd::Broken(e.to_string()),
    };
    let mut bookmark_tick = tokio::time::interval(cache.config.bookmark_interval);
    bookmark_tick.tick().await;
    loop {
        tokio::select! {
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return WatchEnd::Broken("stream closed".into()),
                    Err(e) => return WatchEnd::Broken(e.to_string()),
                };
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        return WatchEnd::Compacted;
                    }
                    return WatchEnd::Broken(format!("watch canceled: {}", resp.cancel_reason()));
                }
                if resp.created() && resp.events().is_empty() {
                    continue;
                }
                if resp.events().is_empty() {
                    if let Some(h) = resp.header() {
                        cache.progress(h.revision());
                    }
                    continue;
                }
                // Group by revision: all events of one revision go out together.
                let mut batch: Vec<CacheEvent> = Vec::new();
                let mut batch_rev = 0;
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let rev = kv.mod_revision();
                    if rev != batch_rev && !batch.is_empty() {
                        cache.apply(std::mem::take(&mut batch), batch_rev);
                    }
                    batch_rev = rev;
                    let key = String::from_utf8_lossy(kv.key()).into_owned();
                    let prev = ev.prev_kv().and_then(|p| {
                        decode_value(key.clone(), p.value(), p.mod_revision()).ok()
                    });
                    let prev_obj = prev.map(|p| CachedObject::new(p.value));
                    let event = match ev.event_type() {
                        StoreEventType::Put => match decode_value(key.clone(), kv.value(), rev) {
                            Ok(s) => CacheEvent {
                                key,
                                revision: rev,
                                object: CachedObject::new(s.value),
                                prev: prev_obj,
                                deleted: false,
                            },
                            Err(e) => {
                                tracing::error!("skipping undecodable object: {e}");
                                continue;
                            }
                        },
                        StoreEventType::Delete => {
                            let Some(prev_obj) = prev_obj else { continue };
                            let mut last = prev_obj.value.clone();
                            set_resource_version(&mut last, rev);
                            CacheEvent {
                                key,
                                revision: rev,
                                object: CachedObject::new(last),
                                prev: Some(prev_obj),
                                deleted: true,
                            }
                        }
                    };
                    batch.push(event);
                }
                if !batch.is_empty() {
                    cache.apply(batch, batch_rev);
                }
            }
            _ = bookmark_tick.tick() => {
                // Ask the store where it is, so an idle resource's bookmarks advance.
                let _ = stream.request_progress().await;
                cache.bookmark();
            }
        }
    }
}

/// The set of caches, one per stored resource.
pub struct Caches {
    by_plural: HashMap<(&'static str, &'static str), Arc<WatchCache>>,
}

impl Caches {
    pub fn start(store: &Store, config: CacheConfig) -> Self {
        let by_plural = crate::resources::RESOURCES
            .iter()
            .filter(|r| r.stored)
            .map(|r| {
                (
                    (r.group, r.plural),
                    WatchCache::start(store.clone(), r, config),
                )
            })
            .collect();
        Self { by_plural }
    }

    pub fn get(&self, resource: &ResourceInfo) -> Option<&Arc<WatchCache>> {
        self.by_plural.get(&(resource.group, resource.plural))
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<WatchCache>> {
        self.by_plural.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(prev: Option<Value>, now: Value, deleted: bool) -> CacheEvent {
        CacheEvent {
            key: "/registry/pods/default/a".into(),
            revision: 7,
            object: CachedObject::new(now),
            prev: prev.map(CachedObject::new),
            deleted,
        }
    }

    fn labeled(team: &str) -> Value {
        json!({"metadata": {"name": "a", "labels": {"team": team}}})
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let filter = WatchFilter {
            key_prefix: "/registry/pods/default/".into(),
            predicate: Some(Box::new(|o: &Value| {
                o.pointer("/metadata/labels/team") == Some(&json!("x"))
            })),
        };
        let kind = |e: &CacheEvent| match filter.translate(e) {
            Some(WatchMessage::Event(k, _)) => Some(k),
            _ => None,
        };
        assert_eq!(
            kind(&event(None, labeled("x"), false)),
            Some(EventType::Added)
        );
        assert_eq!(kind(&event(None, labeled("y"), false)), None);
        assert_eq!(
            kind(&event(Some(labeled("x")), labeled("x"), false)),
            Some(EventType::Modified)
        );
        assert_eq!(
            kind(&event(Some(labeled("y")), labeled("x"), false)),
            Some(EventType::Added)
        );
        assert_eq!(
            kind(&event(Some(labeled("x")), labeled("y"), false)),
            Some(EventType::Deleted)
        );
        assert_eq!(
            kind(&event(Some(labeled("x")), labeled("x"), true)),
            Some(EventType::Deleted)
        );
        assert_eq!(kind(&event(Some(labeled("y")), labeled("y"), true)), None);
        let other_ns = WatchFilter {
            key_prefix: "/registry/pods/other/".into(),
            predicate: None,
        };
        assert!(
            other_ns
                .translate(&event(None, labeled("x"), false))
                .is_none()
        );
    }
}

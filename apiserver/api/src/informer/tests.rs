//! The informer against a scripted lister/watcher, on paused time: resume points,
//! re-lists on 410 with the differences as events, retries, resync.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::error::ApiError;
use crate::types::Pod;

type Events = Vec<Result<WatchEvent<Pod>, Error>>;
type Listing = Result<(Vec<Pod>, String), Error>;

#[derive(Default)]
struct Script {
    lists: Mutex<VecDeque<Listing>>,
    watches: Mutex<VecDeque<Result<Events, Error>>>,
    watched_from: Mutex<Vec<String>>,
    list_calls: AtomicUsize,
}

#[derive(Clone, Default)]
struct Fake(Arc<Script>);

impl Fake {
    fn list(&self, r: Result<(Vec<Pod>, &str), Error>) -> &Self {
        self.0
            .lists
            .lock()
            .unwrap()
            .push_back(r.map(|(v, rv)| (v, rv.to_string())));
        self
    }
    fn watch(&self, r: Result<Events, Error>) -> &Self {
        self.0.watches.lock().unwrap().push_back(r);
        self
    }
    fn watched_from(&self) -> Vec<String> {
        self.0.watched_from.lock().unwrap().clone()
    }
}

impl ListerWatcher<Pod> for Fake {
    async fn list(&self) -> Result<(Vec<Pod>, String), Error> {
        self.0.list_calls.fetch_add(1, Ordering::SeqCst);
        let next = self.0.lists.lock().unwrap().pop_front();
        match next {
            Some(r) => r,
            None => std::future::pending().await,
        }
    }

    async fn watch(&self, resource_version: &str) -> Result<WatchStream<Pod>, Error> {
        self.0
            .watched_from
            .lock()
            .unwrap()
            .push(resource_version.to_string());
        let next = self.0.watches.lock().unwrap().pop_front();
        match next {
            Some(Ok(events)) => Ok(Box::pin(futures::stream::iter(events))),
            Some(Err(e)) => Err(e),
            None => Ok(Box::pin(futures::stream::pending())),
        }
    }
}

fn pod(name: &str, rv: u32) -> Pod {
    let mut p = Pod::default();
    p.metadata.namespace = Some("default".into());
    p.metadata.name = Some(name.into());
    p.metadata.resource_version = Some(rv.to_string());
    p
}

fn gone() -> Error {
    Error::Api(ApiError {
        code: 410,
        reason: "Expired".into(),
        message: "too old resource version".into(),
    })
}

fn unavailable() -> Error {
    Error::Unavailable {
        attempts: 1,
        last: "refused".into(),
    }
}

/// "added default/a@1"-style descriptions of events.
fn describe(ev: &InformerEvent<Pod>) -> String {
    let rv = |p: &Arc<Pod>| p.metadata.resource_version.clone().unwrap();
    match ev {
        InformerEvent::Added(p) => format!("added {}@{}", ev.key(), rv(p)),
        InformerEvent::Updated { old, new } => {
            format!("updated {}@{}->{}", ev.key(), rv(old), rv(new))
        }
        InformerEvent::Deleted(p) => format!("deleted {}@{}", ev.key(), rv(p)),
        InformerEvent::Resync(p) => format!("resync {}@{}", ev.key(), rv(p)),
    }
}

async fn next_n(rx: &mut mpsc::Receiver<InformerEvent<Pod>>, n: usize, sort: bool) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(describe(&rx.recv().await.unwrap()));
    }
    if sort {
        out.sort();
    }
    out
}

fn start(
    fake: &Fake,
    config: InformerConfig,
) -> (
    Store<Pod>,
    mpsc::Receiver<InformerEvent<Pod>>,
    CancellationToken,
) {
    let (informer, store, rx) = Informer::new(fake.clone(), config);
    let shutdown = CancellationToken::new();
    tokio::spawn(informer.run(shutdown.clone()));
    (store, rx, shutdown)
}

#[tokio::test(start_paused = true)]
async fn lists_then_watches_from_the_lists_version_and_resumes_after_bookmarks() {
    let fake = Fake::default();
    fake.list(Ok((vec![pod("a", 1), pod("b", 2)], "2")))
        .watch(Ok(vec![
            Ok(WatchEvent::Added(pod("c", 3))),
            Ok(WatchEvent::Modified(pod("a", 4))),
            Ok(WatchEvent::Deleted(pod("b", 5))),
            Ok(WatchEvent::Bookmark {
                resource_version: "9".into(),
            }),
        ]));
    let (store, mut rx, shutdown) = start(&fake, InformerConfig::default());
    assert_eq!(
        next_n(&mut rx, 2, true).await,
        ["added default/a@1", "added default/b@2"]
    );
    assert!(store.wait_synced().await);
    assert_eq!(
        next_n(&mut rx, 3, false).await,
        [
            "added default/c@3",
            "updated default/a@1->4",
            "deleted default/b@5"
        ]
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // The first watch ended: the next one starts after the bookmark, not at the list.
    assert_eq!(fake.watched_from(), ["2", "9"]);
    let mut keys = store.keys();
    keys.sort();
    assert_eq!(keys, ["default/a", "default/c"]);
    assert_eq!(
        store
            .get("default/a")
            .unwrap()
            .metadata
            .resource_version
            .as_deref(),
        Some("4")
    );
    assert_eq!(
        fake.0.list_calls.load(Ordering::SeqCst),
        1,
        "no re-list without a 410"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn a_410_relists_and_reports_what_changed_meanwhile() {
    let fake = Fake::default();
    fake.list(Ok((vec![pod("a", 1), pod("b", 2)], "2")))
        .watch(Err(gone()))
        .list(Ok((vec![pod("a", 5), pod("c", 6)], "6")))
        .watch(Ok(vec![Ok(WatchEvent::Added(pod("d", 7))), Err(gone())]))
        .list(Ok((vec![pod("a", 5), pod("c", 6), pod("d", 7)], "7")));
    let (store, mut rx, shutdown) = start(&fake, InformerConfig::default());
    assert_eq!(
        next_n(&mut rx, 2, true).await,
        ["added default/a@1", "added default/b@2"]
    );
    // b was deleted and a changed while the watch could not see it.
    assert_eq!(
        next_n(&mut rx, 3, true).await,
        [
            "added default/c@6",
            "deleted default/b@2",
            "updated default/a@1->5"
        ]
    );
    assert_eq!(next_n(&mut rx, 1, false).await, ["added default/d@7"]);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(fake.0.list_calls.load(Ordering::SeqCst), 3);
    assert_eq!(fake.watched_from(), ["2", "6", "7"]);
    assert_eq!(store.len(), 3);
    assert!(
        rx.try_recv().is_err(),
        "the third list changed nothing, so no events"
    );
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn failed_lists_and_watches_are_retried_with_backoff() {
    let fake = Fake::default();
    fake.list(Err(unavailable()))
        .list(Err(unavailable()))
        .list(Ok((vec![pod("a", 1)], "1")))
        .watch(Err(unavailable()))
        .watch(Ok(vec![Err(Error::BadWatchEvent("garbage".into()))]))
        .watch(Ok(vec![Ok(WatchEvent::Modified(pod("a", 2)))]));
    let start_at = Instant::now();
    let (store, mut rx, shutdown) = start(&fake, InformerConfig::default());
    assert!(!store.has_synced());
    assert!(store.wait_synced().await);
    // 0.5 s then 1 s of backoff before the third list.
    assert_eq!(start_at.elapsed(), Duration::from_millis(1500));
    assert_eq!(
        next_n(&mut rx, 2, false).await,
        ["added default/a@1", "updated default/a@1->2"]
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    // Failed watches resume from the same version (no re-list); the one that ended
    // normally resumes after its last event.
    assert_eq!(fake.watched_from(), ["1", "1", "1", "2"]);
    assert_eq!(fake.0.list_calls.load(Ordering::SeqCst), 3);
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn cached_objects_are_offered_again_every_resync_period() {
    let fake = Fake::default();
    fake.list(Ok((vec![pod("a", 1), pod("b", 2)], "2")));
    let config = InformerConfig {
        resync: Some(Duration::from_secs(30)),
        ..InformerConfig::default()
    };
    let start_at = Instant::now();
    let (_store, mut rx, shutdown) = start(&fake, config);
    next_n(&mut rx, 2, true).await;
    assert_eq!(
        next_n(&mut rx, 2, true).await,
        ["resync default/a@1", "resync default/b@2"]
    );
    assert_eq!(start_at.elapsed(), Duration::from_secs(30));
    assert_eq!(
        next_n(&mut rx, 2, true).await,
        ["resync default/a@1", "resync default/b@2"]
    );
    assert_eq!(start_at.elapsed(), Duration::from_secs(60));
    shutdown.cancel();
}

//! Leader election against an in-memory lease store with compare-and-swap, on paused
//! time: one leader at a time, takeover only after expiry, step-down on lost renewals,
//! immediate handover on release.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::*;
use crate::error::ApiError;

#[derive(Clone, Default)]
struct MemoryLeases {
    lease: Arc<Mutex<(Option<Lease>, u64)>>,
}

/// One candidate's view of the shared lease; `down` cuts it off (like a partition).
#[derive(Clone)]
struct Handle {
    shared: MemoryLeases,
    down: Arc<AtomicBool>,
}

fn api_error(code: u16, reason: &str) -> Error {
    Error::Api(ApiError {
        code,
        reason: reason.into(),
        message: reason.into(),
    })
}

impl Handle {
    fn check(&self) -> Result<(), Error> {
        if self.down.load(Ordering::SeqCst) {
            Err(Error::Unavailable {
                attempts: 1,
                last: "down".into(),
            })
        } else {
            Ok(())
        }
    }
}

impl LeaseStore for Handle {
    async fn get(&self) -> Result<Option<Lease>, Error> {
        self.check()?;
        Ok(self.shared.lease.lock().unwrap().0.clone())
    }

    async fn create(&self, lease: &Lease) -> Result<Lease, Error> {
        self.check()?;
        let mut g = self.shared.lease.lock().unwrap();
        if g.0.is_some() {
            return Err(api_error(409, "AlreadyExists"));
        }
        g.1 += 1;
        let mut lease = lease.clone();
        lease.metadata.resource_version = Some(g.1.to_string());
        g.0 = Some(lease.clone());
        Ok(lease)
    }

    async fn update(&self, lease: &Lease) -> Result<Lease, Error> {
        self.check()?;
        let mut g = self.shared.lease.lock().unwrap();
        let current_rv =
            g.0.as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
        if current_rv != lease.metadata.resource_version {
            return Err(api_error(409, "Conflict"));
        }
        g.1 += 1;
        let mut lease = lease.clone();
        lease.metadata.resource_version = Some(g.1.to_string());
        g.0 = Some(lease.clone());
        Ok(lease)
    }
}

fn candidate(
    shared: &MemoryLeases,
    id: &str,
) -> (
    LeaderElector<Handle>,
    watch::Receiver<Leadership>,
    Arc<AtomicBool>,
) {
    let down = Arc::new(AtomicBool::new(false));
    let handle = Handle {
        shared: shared.clone(),
        down: down.clone(),
    };
    let (e, rx) = LeaderElector::new(handle, ElectionConfig::new("kube-system", "sched", id));
    (e, rx, down)
}

fn holder(shared: &MemoryLeases) -> Option<String> {
    shared
        .lease
        .lock()
        .unwrap()
        .0
        .as_ref()
        .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
}

fn transitions(shared: &MemoryLeases) -> i32 {
    shared
        .lease
        .lock()
        .unwrap()
        .0
        .as_ref()
        .unwrap()
        .spec
        .as_ref()
        .unwrap()
        .lease_transitions
        .unwrap()
}

async fn wait_leader(rx: &mut watch::Receiver<Leadership>) -> CancellationToken {
    loop {
        if let Leadership::Leader { term } = &*rx.borrow_and_update() {
            return term.clone();
        }
        rx.changed().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn one_leader_and_takeover_only_after_the_lease_expires() {
    let shared = MemoryLeases::default();
    let (a, mut rx_a, down_a) = candidate(&shared, "a");
    let shutdown = CancellationToken::new();
    tokio::spawn(a.run(shutdown.clone()));
    let term_a = wait_leader(&mut rx_a).await;
    assert_eq!(holder(&shared).as_deref(), Some("a"));

    let (b, mut rx_b, _) = candidate(&shared, "b");
    tokio::spawn(b.run(shutdown.clone()));
    // A minute of renewals: b never leads while a renews.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!rx_b.borrow().is_leader());
    assert!(matches!(&*rx_b.borrow(), Leadership::Follower { holder: Some(h) } if h == "a"));
    assert_eq!(transitions(&shared), 0);

    // a is cut off: it steps down by its renew deadline, and b takes over only once the
    // lease it last saw renewed has been unchanged for the full lease duration.
    let cut = Instant::now();
    down_a.store(true, Ordering::SeqCst);
    term_a.cancelled().await;
    let stepped_down = cut.elapsed();
    assert!(
        stepped_down <= Duration::from_secs(10) + Duration::from_secs(2),
        "{stepped_down:?}"
    );
    assert!(!rx_a.borrow().is_leader());
    let term_b = wait_leader(&mut rx_b).await;
    let took_over = cut.elapsed();
    assert!(
        took_over >= Duration::from_secs(13),
        "b took over after {took_over:?}"
    );
    assert!(took_over > stepped_down, "never two leaders at once");
    assert_eq!(holder(&shared).as_deref(), Some("b"));
    assert_eq!(transitions(&shared), 1);

    // a comes back and stays a follower.
    down_a.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(!rx_a.borrow().is_leader());
    assert!(!term_b.is_cancelled());
    shutdown.cancel();
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_the_lease_for_an_immediate_handover() {
    let shared = MemoryLeases::default();
    let (a, mut rx_a, _) = candidate(&shared, "a");
    let stop_a = CancellationToken::new();
    let task_a = tokio::spawn(a.run(stop_a.clone()));
    let term_a = wait_leader(&mut rx_a).await;

    let (b, mut rx_b, _) = candidate(&shared, "b");
    let stop_b = CancellationToken::new();
    tokio::spawn(b.run(stop_b.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;

    let released = Instant::now();
    stop_a.cancel();
    task_a.await.unwrap();
    assert!(term_a.is_cancelled());
    assert_eq!(holder(&shared), None, "released");
    wait_leader(&mut rx_b).await;
    assert!(
        released.elapsed() < Duration::from_secs(15),
        "no need to wait for expiry: {:?}",
        released.elapsed()
    );
    stop_b.cancel();
}

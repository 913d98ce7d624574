//! A watcher of the whole run prefix. It records every event with its arrival time and
//! resumes after any break from the last revision it saw + 1, on a member chosen at
//! random: after a stream error, a cancel, a silent stream (a paused or cut-off member
//! sends nothing), and now and then on purpose, to exercise the resume path.

use std::time::{Duration, Instant};

use etcd_client::{EventType, WatchOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::Endpoints;
use crate::history::{Clock, WatchEvent, WatchLog};

/// A stream silent this long is abandoned for another member.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
const CREATE_TIMEOUT: Duration = Duration::from_secs(2);

/// When to stop: after having seen `revision`, or at `deadline` regardless.
#[derive(Debug, Clone, Copy)]
pub struct StopAt {
    pub revision: i64,
    pub deadline: Instant,
}

pub struct Watcher {
    pub id: usize,
    pub prefix: String,
    pub start_revision: i64,
    pub seed: u64,
    pub clock: Clock,
}

impl Watcher {
    pub async fn run(
        self,
        mut endpoints: Endpoints,
        mut stop: watch::Receiver<Option<StopAt>>,
    ) -> WatchLog {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut log = WatchLog {
            watcher: self.id,
            start_revision: self.start_revision,
            ..Default::default()
        };
        let mut next_revision = self.start_revision;
        let done = |log: &WatchLog, stop: &Option<StopAt>| {
            stop.is_some_and(|s| {
                Instant::now() > s.deadline
                    || log.events.last().is_some_and(|e| e.revision >= s.revision)
            })
        };
        let mut first = true;
        loop {
            if done(&log, &stop.borrow()) {
                return log;
            }
            if !first {
                log.reconnects += 1;
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
            }
            first = false;
            let member = rng.random_range(0..endpoints.len());
            let Ok(mut client) = endpoints.client(member).await else {
                continue;
            };
            let opts = WatchOptions::new()
                .with_prefix()
                .with_start_revision(next_revision);
            let Ok(Ok(mut stream)) = tokio::time::timeout(
                CREATE_TIMEOUT,
                client.watch(self.prefix.as_str(), Some(opts)),
            )
            .await
            else {
                continue;
            };
            // On purpose, now and then: leave after a random number of responses.
            let leave_after: usize = rng.random_range(5..60);
            let mut responses = 0usize;
            loop {
                let msg = tokio::select! {
                    m = tokio::time::timeout(IDLE_TIMEOUT, stream.message()) => m,
                    _ = stop.changed() => {
                        if done(&log, &stop.borrow()) { return log; }
                        continue;
                    }
                };
                let Ok(Ok(Some(resp))) = msg else {
                    break;
                };
                if resp.canceled() {
                    break;
                }
                for ev in resp.events() {
                    let Some(kv) = ev.kv() else { continue };
                    let value = match ev.event_type() {
                        EventType::Put => Some(String::from_utf8_lossy(kv.value()).into_owned()),
                        EventType::Delete => None,
                    };
                    log.events.push(WatchEvent {
                        revision: kv.mod_revision(),
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value,
                        received_ns: self.clock.now_ns(),
                    });
                    next_revision = kv.mod_revision() + 1;
                }
                if done(&log, &stop.borrow()) {
                    return log;
                }
                responses += 1;
                if responses >= leave_after {
                    break;
                }
            }
        }
    }
}

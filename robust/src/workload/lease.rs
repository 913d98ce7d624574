//! A lease client: grants leases one after another, writes one key under each, and
//! either keeps the lease alive for a while (then lets it go) or never does. It records
//! until when the store promised each lease would live, for `check/lease.rs`.

use std::time::Duration;

use etcd_client::PutOptions;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::Endpoints;
use crate::history::{Clock, LeaseRecord};

const CALL_TIMEOUT: Duration = Duration::from_secs(2);
const KEEP_ALIVE_EVERY: Duration = Duration::from_millis(700);
/// TTL of leases kept alive, and of leases left to expire.
pub const KEPT_TTL_S: i64 = 3;
pub const EXPIRING_TTL_S: i64 = 2;

pub struct LeaseClient {
    pub id: usize,
    pub prefix: String,
    pub seed: u64,
    pub clock: Clock,
}

impl LeaseClient {
    pub async fn run(
        self,
        mut endpoints: Endpoints,
        stop: watch::Receiver<bool>,
    ) -> Vec<LeaseRecord> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut records = Vec::new();
        let mut n = 0u64;
        while !*stop.borrow() {
            n += 1;
            let member = rng.random_range(0..endpoints.len());
            let Ok(mut c) = endpoints.client(member).await else {
                continue;
            };
            let kept_alive = rng.random_bool(0.5);
            let ttl_s = if kept_alive {
                KEPT_TTL_S
            } else {
                EXPIRING_TTL_S
            };
            let grant_invoke_ns = self.clock.now_ns();
            let grant = tokio::time::timeout(CALL_TIMEOUT, c.lease_grant(ttl_s, None)).await;
            let Ok(Ok(grant)) = grant else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let key = format!("{}{}-{n}", self.prefix, self.id);
            let value = format!("l{}-{n}", self.id);
            let put = tokio::time::timeout(
                CALL_TIMEOUT,
                c.put(
                    key.as_str(),
                    value.as_str(),
                    Some(PutOptions::new().with_lease(grant.id())),
                ),
            )
            .await;
            let mut record = LeaseRecord {
                lease_id: grant.id(),
                key,
                value,
                kept_alive,
                ttl_s: grant.ttl(),
                grant_invoke_ns,
                put_revision: match put {
                    Ok(Ok(r)) => r.header().map(|h| h.revision()),
                    _ => None,
                },
                alive_until_ns: grant_invoke_ns + grant.ttl() as u64 * 1_000_000_000,
                keep_alives_ok: 0,
            };
            if kept_alive {
                let hold = Duration::from_millis(rng.random_range(2_000..6_000));
                keep_alive(
                    &mut endpoints,
                    &mut rng,
                    &mut record,
                    hold,
                    &self.clock,
                    &stop,
                )
                .await;
            } else {
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..500))).await;
            }
            records.push(record);
        }
        records
    }
}

/// Keeps `record`'s lease alive for `hold` (or until stopped), through any member,
/// moving on to another member when a stream breaks.
async fn keep_alive(
    endpoints: &mut Endpoints,
    rng: &mut StdRng,
    record: &mut LeaseRecord,
    hold: Duration,
    clock: &Clock,
    stop: &watch::Receiver<bool>,
) {
    let until = tokio::time::Instant::now() + hold;
    let mut stream = None;
    while tokio::time::Instant::now() < until && !*stop.borrow() {
        if stream.is_none() {
            let member = rng.random_range(0..endpoints.len());
            if let Ok(mut c) = endpoints.client(member).await
                && let Ok(Ok(s)) =
                    tokio::time::timeout(CALL_TIMEOUT, c.lease_keep_alive(record.lease_id)).await
            {
                stream = Some(s);
            }
        }
        if let Some((keeper, responses)) = &mut stream {
            let invoke_ns = clock.now_ns();
            let answer = tokio::time::timeout(CALL_TIMEOUT, async {
                keeper.keep_alive().await?;
                responses.message().await
            })
            .await;
            match answer {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {
                    record.keep_alives_ok += 1;
                    let promised = invoke_ns + r.ttl() as u64 * 1_000_000_000;
                    record.alive_until_ns = record.alive_until_ns.max(promised);
                }
                // The lease is gone (TTL 0): nothing more to keep.
                Ok(Ok(Some(_))) => return,
                _ => stream = None,
            }
        }
        tokio::time::sleep(KEEP_ALIVE_EVERY).await;
    }
}

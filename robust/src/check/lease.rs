//! Lease safety and liveness. Safety: a key attached to a lease is not deleted before
//! the time the store promised the lease would live (the invocation of the grant or of
//! the last successful keep-alive, plus the TTL it answered). A watcher receives the
//! delete after it was committed, so a delete *received* before that time was surely
//! committed too early. Liveness: once no one keeps a lease alive, its key is gone
//! within its TTL plus a grace (elections restart lease clocks).

use std::collections::HashSet;

use super::Anomaly;
use crate::history::{LeaseRecord, WatchLog};

pub fn check_not_early(leases: &[LeaseRecord], logs: &[WatchLog]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for lease in leases {
        let Some(put_revision) = lease.put_revision else {
            continue;
        };
        let first_delete = logs
            .iter()
            .flat_map(|l| l.events.iter())
            .filter(|e| e.key == lease.key && e.value.is_none() && e.revision > put_revision)
            .min_by_key(|e| e.received_ns);
        if let Some(e) = first_delete
            && e.received_ns < lease.alive_until_ns
        {
            anomalies.push(Anomaly::new(
                "lease-expired-early",
                format!(
                    "{} of lease {:x} (TTL {} s, {}, {} keep-alives answered) was deleted at revision {} and seen at {:.3}s, \
                     but the lease was promised until {:.3}s",
                    lease.key,
                    lease.lease_id,
                    lease.ttl_s,
                    if lease.kept_alive {
                        "kept alive"
                    } else {
                        "not kept alive"
                    },
                    lease.keep_alives_ok,
                    e.revision,
                    e.received_ns as f64 / 1e9,
                    lease.alive_until_ns as f64 / 1e9
                ),
            ));
        }
    }
    anomalies
}

/// `present`: the lease keys that still existed when read at `checked_ns`, after every
/// keep-alive had stopped. Faults were healed (and a leader elected) at `healed_ns`: a
/// new leader restarts every lease clock at its full TTL, so no lease need be gone before
/// `healed_ns + TTL` either.
pub fn check_expired(
    leases: &[LeaseRecord],
    present: &HashSet<String>,
    checked_ns: u64,
    healed_ns: u64,
    grace_ns: u64,
) -> Vec<Anomaly> {
    leases
        .iter()
        .filter(|l| l.put_revision.is_some() && present.contains(&l.key))
        .filter(|l| {
            let due = l
                .alive_until_ns
                .max(healed_ns + l.ttl_s.max(0) as u64 * 1_000_000_000);
            checked_ns > due + grace_ns
        })
        .map(|l| {
            Anomaly::new(
                "lease-not-expired",
                format!(
                    "{} of lease {:x} (TTL {} s) still exists at {:.3}s, promised only until {:.3}s",
                    l.key,
                    l.lease_id,
                    l.ttl_s,
                    checked_ns as f64 / 1e9,
                    l.alive_until_ns as f64 / 1e9
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::WatchEvent;

    const S: u64 = 1_000_000_000;

    fn lease(alive_until_s: u64) -> LeaseRecord {
        LeaseRecord {
            lease_id: 7,
            key: "l".into(),
            value: "v".into(),
            kept_alive: true,
            ttl_s: 2,
            grant_invoke_ns: 0,
            put_revision: Some(3),
            alive_until_ns: alive_until_s * S,
            keep_alives_ok: 3,
        }
    }

    fn deleted_at(received_s: u64) -> WatchLog {
        WatchLog {
            watcher: 0,
            start_revision: 1,
            events: vec![WatchEvent {
                revision: 9,
                key: "l".into(),
                value: None,
                received_ns: received_s * S,
            }],
            reconnects: 0,
        }
    }

    #[test]
    fn catches_a_key_deleted_while_its_lease_was_kept_alive() {
        assert!(check_not_early(&[lease(5)], &[deleted_at(6)]).is_empty());
        let early = check_not_early(&[lease(5)], &[deleted_at(4)]);
        assert_eq!(early[0].kind, "lease-expired-early");
    }

    #[test]
    fn catches_a_lease_that_never_expires() {
        let present = HashSet::from(["l".to_string()]);
        assert!(check_expired(&[lease(5)], &present, 6 * S, 0, 2 * S).is_empty());
        assert!(check_expired(&[lease(5)], &HashSet::new(), 10 * S, 0, 2 * S).is_empty());
        assert_eq!(
            check_expired(&[lease(5)], &present, 10 * S, 0, 2 * S)[0].kind,
            "lease-not-expired"
        );
        // A heal at 7 s restarts the clock: the 2 s lease may live until 9 s + grace.
        assert!(check_expired(&[lease(5)], &present, 10 * S, 7 * S, 2 * S).is_empty());
    }
}

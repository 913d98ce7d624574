//! Durability: every acknowledged write is in the history read back after every member
//! was killed with -9 and restarted, at the revision it was acknowledged with. (The
//! final reads after the restart also join the linearizability check.)

use std::collections::HashMap;

use super::Anomaly;
use super::watch::RefEvent;
use crate::history::{LeaseRecord, Op, Request, Response};

/// What an acknowledged write must have left in the history: (revision, key, value).
fn acknowledged(op: &Op) -> Option<(i64, &str, Option<&str>)> {
    match (&op.request, op.response.as_ref()?) {
        (Request::Put { value }, Response::Put { revision }) => {
            Some((*revision, &op.key, Some(value)))
        }
        (
            Request::Cas { value, .. },
            Response::Cas {
                succeeded: true,
                revision,
            },
        ) => Some((*revision, &op.key, Some(value))),
        (Request::Delete, Response::Delete { deleted, revision }) if *deleted > 0 => {
            Some((*revision, &op.key, None))
        }
        _ => None,
    }
}

pub fn check(ops: &[Op], leases: &[LeaseRecord], reference: &[RefEvent]) -> Vec<Anomaly> {
    let by_rev: HashMap<(i64, &str), &RefEvent> = reference
        .iter()
        .map(|e| ((e.revision, e.key.as_str()), e))
        .collect();
    let lease_writes = leases.iter().filter_map(|l| {
        l.put_revision
            .map(|rev| (rev, l.key.as_str(), Some(l.value.as_str())))
    });
    let mut anomalies = Vec::new();
    for (revision, key, value) in ops.iter().filter_map(acknowledged).chain(lease_writes) {
        match by_rev.get(&(revision, key)) {
            None => anomalies.push(Anomaly::new(
                "lost-write",
                format!(
                    "acknowledged write {key} = {value:?} at revision {revision} is not in the history after restart"
                ),
            )),
            Some(e) if e.value.as_deref() != value => anomalies.push(Anomaly::new(
                "lost-write",
                format!(
                    "acknowledged write {key} = {value:?} at revision {revision}; the history has {:?} there",
                    e.value
                ),
            )),
            Some(_) => {}
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, v: &str, rev: i64) -> Op {
        Op {
            client: 0,
            key: key.into(),
            request: Request::Put { value: v.into() },
            invoke_ns: 0,
            response: Some(Response::Put { revision: rev }),
            complete_ns: 1,
            error: None,
        }
    }

    #[test]
    fn catches_a_write_missing_after_restart() {
        let reference = vec![RefEvent {
            revision: 2,
            key: "a".into(),
            value: Some("1".into()),
        }];
        assert!(check(&[put("a", "1", 2)], &[], &reference).is_empty());
        let lost = check(&[put("a", "1", 2), put("a", "2", 3)], &[], &reference);
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0].kind, "lost-write");
    }
}

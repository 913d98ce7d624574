//! Checks of the register history that need no search: serializable reads return only
//! values that were written, a read's mod_revision is the revision its write was
//! acknowledged with, acknowledged writes have distinct revisions, and header revisions
//! never go back in real time (etcd's revision is one linearizable counter for all keys).

use std::collections::HashMap;

use super::Anomaly;
use crate::history::{Op, Request, Response};

/// The value an operation may write, if it writes one.
fn written_value(op: &Op) -> Option<&str> {
    match &op.request {
        Request::Put { value } | Request::Cas { value, .. } => Some(value),
        _ => None,
    }
}

/// Whether the operation was acknowledged as having created a revision.
fn created_revision(op: &Op) -> Option<i64> {
    match op.response.as_ref()? {
        Response::Put { revision } => Some(*revision),
        Response::Cas {
            succeeded: true,
            revision,
        } => Some(*revision),
        Response::Delete { deleted, revision } if *deleted > 0 => Some(*revision),
        _ => None,
    }
}

pub fn check(ops: &[Op]) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    // Value → (key, invocation, acknowledged revision). Values are unique per run.
    let mut writes: HashMap<&str, (&str, u64, Option<i64>)> = HashMap::new();
    for op in ops {
        if let Some(v) = written_value(op) {
            writes.insert(v, (&op.key, op.invoke_ns, created_revision(op)));
        }
    }
    let mut by_revision: HashMap<i64, &Op> = HashMap::new();
    for op in ops {
        if let Some(rev) = created_revision(op)
            && let Some(other) = by_revision.insert(rev, op)
        {
            anomalies.push(Anomaly::new(
                "duplicate-revision",
                format!(
                    "two acknowledged writes share revision {rev}: {:?} on {} and {:?} on {}",
                    other.request, other.key, op.request, op.key
                ),
            ));
        }
        let Some(Response::Get {
            value: Some(value),
            mod_revision,
            ..
        }) = &op.response
        else {
            continue;
        };
        match writes.get(value.as_str()) {
            None => anomalies.push(Anomaly::new(
                "phantom-read",
                format!(
                    "a read of {} returned {value:?}, which nobody wrote",
                    op.key
                ),
            )),
            Some((key, invoked, rev)) => {
                if *key != op.key || *invoked > op.complete_ns {
                    anomalies.push(Anomaly::new(
                        "phantom-read",
                        format!(
                            "a read of {} returned {value:?}, written to {key} only later or elsewhere",
                            op.key
                        ),
                    ));
                }
                if let Some(rev) = rev
                    && rev != mod_revision
                {
                    anomalies.push(Anomaly::new(
                        "wrong-mod-revision",
                        format!(
                            "a read of {} saw {value:?} at mod_revision {mod_revision}, but that write was acknowledged at revision {rev}",
                            op.key
                        ),
                    ));
                }
            }
        }
    }
    anomalies.extend(check_revision_order(ops));
    anomalies
}

/// An operation invoked after another completed must not answer an older revision.
/// Serializable reads are exempt (they may be served by a member behind the others).
fn check_revision_order(ops: &[Op]) -> Vec<Anomaly> {
    let answered: Vec<&Op> = ops
        .iter()
        .filter(|o| o.response.is_some())
        .filter(|o| !matches!(o.request, Request::Get { serializable: true }))
        .collect();
    let mut by_completion: Vec<(u64, i64, &Op)> = answered
        .iter()
        .map(|o| {
            (
                o.complete_ns,
                o.response.as_ref().map_or(0, Response::revision),
                *o,
            )
        })
        .collect();
    by_completion.sort_by_key(|x| x.0);
    let mut by_invocation = answered.clone();
    by_invocation.sort_by_key(|o| o.invoke_ns);
    let mut anomalies = Vec::new();
    let mut done = 0;
    let mut max_seen: Option<(i64, &Op)> = None;
    for op in by_invocation {
        while done < by_completion.len() && by_completion[done].0 < op.invoke_ns {
            let (_, rev, o) = by_completion[done];
            if max_seen.is_none_or(|(m, _)| rev > m) {
                max_seen = Some((rev, o));
            }
            done += 1;
        }
        let rev = op.response.as_ref().map_or(0, Response::revision);
        if let Some((m, before)) = max_seen
            && rev < m
            && anomalies.len() < 10
        {
            anomalies.push(Anomaly::new(
                "revision-went-back",
                format!(
                    "client {} {:?} on {} answered revision {rev} at {:.3}s, but client {} had already been answered revision {m} ({:?} on {})",
                    op.client,
                    op.request,
                    op.key,
                    op.invoke_ns as f64 / 1e9,
                    before.client,
                    before.request,
                    before.key
                ),
            ));
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, request: Request, response: Response, t: (u64, u64)) -> Op {
        Op {
            client: 0,
            key: key.into(),
            request,
            invoke_ns: t.0,
            response: Some(response),
            complete_ns: t.1,
            error: None,
        }
    }

    fn put(key: &str, v: &str, rev: i64, t: (u64, u64)) -> Op {
        op(
            key,
            Request::Put { value: v.into() },
            Response::Put { revision: rev },
            t,
        )
    }

    fn get(key: &str, v: Option<&str>, mod_rev: i64, rev: i64, ser: bool, t: (u64, u64)) -> Op {
        op(
            key,
            Request::Get { serializable: ser },
            Response::Get {
                value: v.map(String::from),
                mod_revision: mod_rev,
                revision: rev,
            },
            t,
        )
    }

    #[test]
    fn a_consistent_history_passes() {
        let h = [
            put("a", "1", 2, (0, 10)),
            put("b", "2", 3, (20, 30)),
            get("a", Some("1"), 2, 3, false, (40, 50)),
            get("a", Some("1"), 2, 2, true, (40, 50)),
        ];
        assert!(check(&h).is_empty(), "{:?}", check(&h));
    }

    #[test]
    fn catches_a_serializable_read_of_a_value_never_written() {
        let h = [
            put("a", "1", 2, (0, 10)),
            get("a", Some("garbage"), 2, 2, true, (40, 50)),
        ];
        assert_eq!(check(&h)[0].kind, "phantom-read");
    }

    #[test]
    fn catches_a_wrong_mod_revision_and_a_shared_revision() {
        let h = [
            put("a", "1", 2, (0, 10)),
            put("b", "2", 2, (20, 30)),
            get("a", Some("1"), 5, 5, false, (40, 50)),
        ];
        let kinds: Vec<&str> = check(&h).iter().map(|a| a.kind).collect();
        assert!(kinds.contains(&"duplicate-revision"), "{kinds:?}");
        assert!(kinds.contains(&"wrong-mod-revision"), "{kinds:?}");
    }

    #[test]
    fn catches_a_revision_going_back() {
        let h = [
            put("a", "1", 7, (0, 10)),
            get("b", None, 0, 4, false, (20, 30)),
        ];
        assert_eq!(check(&h)[0].kind, "revision-went-back");
    }
}

//! Linearizability of the register history, one key at a time (a history is
//! linearizable iff each key's sub-history is, since keys are independent registers).
//!
//! The search is Wing & Gong's, with the memoization Lowe added and porcupine uses: the
//! calls and returns, sorted by time, sit in a doubly linked list; the search linearizes
//! the earliest pending call whose effect the model accepts, lifting its call and return
//! out of the list, and backtracks when it reaches a return whose call it has not
//! linearized. A (set of linearized operations, model state) pair already explored is
//! never explored again. Indeterminate operations return at +∞: they may take effect
//! anywhere after their invocation, or never (last, after everything else).
//!
//! The model is a register holding a value or nothing: put, linearizable get, delete
//! (which answers how many keys it deleted) and compare-and-swap on the value.
//! Serializable gets may be stale and are left out (see `reads.rs`).

use std::collections::HashSet;

use crate::history::{Op, Request, Response};

/// The register's state: the key's value, `None` when absent.
type State = Option<String>;

/// The outcome for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVerdict {
    Linearizable,
    /// No order of the operations explains the answers.
    Violation {
        detail: String,
    },
    /// The search gave up after its step budget.
    Unknown,
}

/// The state after `op` runs in `state`, or `None` if its answer contradicts the model.
fn step(state: &State, op: &Op) -> Option<State> {
    match (&op.request, &op.response) {
        (Request::Put { value }, _) => Some(Some(value.clone())),
        (Request::Get { .. }, Some(Response::Get { value, .. })) => {
            (value == state).then(|| state.clone())
        }
        (Request::Get { .. }, _) => Some(state.clone()),
        (Request::Delete, Some(Response::Delete { deleted, .. })) => {
            (*deleted == i64::from(state.is_some())).then_some(None)
        }
        (Request::Delete, _) => Some(None),
        (Request::Cas { expected, value }, Some(Response::Cas { succeeded, .. })) => {
            let matches = expected == state;
            if matches != *succeeded {
                None
            } else if matches {
                Some(Some(value.clone()))
            } else {
                Some(state.clone())
            }
        }
        (Request::Cas { expected, value }, _) => {
            if expected == state {
                Some(Some(value.clone()))
            } else {
                Some(state.clone())
            }
        }
    }
}

/// The operations of one key that take part: linearizable gets that were answered, and
/// every write (answered or not).
fn relevant(op: &Op) -> bool {
    match op.request {
        Request::Get { serializable } => !serializable && op.response.is_some(),
        _ => true,
    }
}

struct Event {
    op: usize,
    is_call: bool,
    /// The index of the other event of the same op (call ↔ return).
    partner: usize,
}

/// Checks the operations of one key (in any order), from an absent key.
pub fn check_key(all: &[Op], step_budget: u64) -> KeyVerdict {
    let ops: Vec<&Op> = all.iter().filter(|o| relevant(o)).collect();
    let n = ops.len();
    if n == 0 {
        return KeyVerdict::Linearizable;
    }
    // (time, 0 = call / 1 = return, op): at equal times calls come first, so touching
    // operations count as concurrent (the permissive reading).
    let mut times: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * n);
    for (i, op) in ops.iter().enumerate() {
        times.push((op.invoke_ns, 0, i));
        let ret = if op.response.is_some() {
            op.complete_ns
        } else {
            u64::MAX
        };
        times.push((ret, 1, i));
    }
    times.sort();
    // Nodes 1..=2n are events, 0 is the head sentinel, 2n+1 the tail sentinel.
    let tail = 2 * n + 1;
    let mut events: Vec<Event> = Vec::with_capacity(2 * n + 2);
    events.push(Event {
        op: usize::MAX,
        is_call: false,
        partner: 0,
    });
    let mut call_node = vec![0usize; n];
    for &(_, kind, op) in &times {
        let node = events.len();
        if kind == 0 {
            call_node[op] = node;
            events.push(Event {
                op,
                is_call: true,
                partner: 0,
            });
        } else {
            let call = call_node[op];
            events[call].partner = node;
            events.push(Event {
                op,
                is_call: false,
                partner: call,
            });
        }
    }
    let mut next: Vec<usize> = (1..=tail).collect();
    next.push(tail);
    let mut prev: Vec<usize> = std::iter::once(0).chain(0..tail).collect();

    let words = n.div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, State)> = HashSet::new();
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut state: State = None;
    let mut entry = next[0];
    let mut steps = 0u64;
    // The deepest point reached, for the report: (depth, op that could not go next, state).
    let mut deepest: (usize, usize, State) = (0, 0, None);

    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, nx) = (prev[node], next[node]);
        next[p] = nx;
        prev[nx] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, node: usize| {
        let (p, nx) = (prev[node], next[node]);
        next[p] = node;
        prev[nx] = node;
    };

    while entry != tail {
        steps += 1;
        if steps > step_budget {
            return KeyVerdict::Unknown;
        }
        let ev = &events[entry];
        if ev.is_call {
            let op = ev.op;
            if let Some(new_state) = step(&state, ops[op]) {
                let mut bits = linearized.clone();
                bits[op / 64] |= 1 << (op % 64);
                if cache.insert((bits.clone(), new_state.clone())) {
                    let partner = ev.partner;
                    stack.push((entry, std::mem::replace(&mut state, new_state)));
                    linearized = bits;
                    unlink(&mut next, &mut prev, entry);
                    unlink(&mut next, &mut prev, partner);
                    entry = next[0];
                    continue;
                }
            }
            entry = next[entry];
        } else {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), ev.op, state.clone());
            }
            let Some((call, old_state)) = stack.pop() else {
                return violation(&ops, deepest);
            };
            let op = events[call].op;
            linearized[op / 64] &= !(1 << (op % 64));
            state = old_state;
            // Relink in reverse order of unlinking: the return first, then the call.
            relink(&mut next, &mut prev, events[call].partner);
            relink(&mut next, &mut prev, call);
            entry = next[call];
        }
    }
    KeyVerdict::Linearizable
}

fn violation(ops: &[&Op], (depth, stuck, state): (usize, usize, State)) -> KeyVerdict {
    let op = ops[stuck];
    let mut detail = format!(
        "after at most {depth} of {} operations linearized (register then {state:?}), no order explains \
         client {} {:?} -> {:?} (invoked {:.3}s, completed {:.3}s)",
        ops.len(),
        op.client,
        op.request,
        op.response,
        op.invoke_ns as f64 / 1e9,
        op.complete_ns as f64 / 1e9,
    );
    // The operations overlapping the stuck one, which a reader needs to see why.
    let mut around: Vec<&&Op> = ops
        .iter()
        .filter(|o| {
            let end = if o.response.is_some() {
                o.complete_ns
            } else {
                u64::MAX
            };
            end.saturating_add(2_000_000_000) >= op.invoke_ns && o.invoke_ns <= op.complete_ns
        })
        .collect();
    around.sort_by_key(|o| o.invoke_ns);
    for o in around.iter().take(20) {
        detail.push_str(&format!(
            "\n    [{:.3}s..{}] client {} {:?} -> {}",
            o.invoke_ns as f64 / 1e9,
            if o.response.is_some() {
                format!("{:.3}s", o.complete_ns as f64 / 1e9)
            } else {
                "?".into()
            },
            o.client,
            o.request,
            match &o.response {
                Some(r) => format!("{r:?}"),
                None => format!("indeterminate ({})", o.error.as_deref().unwrap_or("")),
            }
        ));
    }
    KeyVerdict::Violation { detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: usize, request: Request, response: Option<Response>, t: (u64, u64)) -> Op {
        Op {
            client,
            key: "k".into(),
            request,
            invoke_ns: t.0,
            response,
            complete_ns: t.1,
            error: None,
        }
    }
    fn put(c: usize, v: &str, t: (u64, u64)) -> Op {
        op(
            c,
            Request::Put { value: v.into() },
            Some(Response::Put { revision: 0 }),
            t,
        )
    }
    fn get(c: usize, v: Option<&str>, t: (u64, u64)) -> Op {
        op(
            c,
            Request::Get {
                serializable: false,
            },
            Some(Response::Get {
                value: v.map(String::from),
                mod_revision: 0,
                revision: 0,
            }),
            t,
        )
    }
    fn cas(c: usize, expected: Option<&str>, v: &str, ok: Option<bool>, t: (u64, u64)) -> Op {
        op(
            c,
            Request::Cas {
                expected: expected.map(String::from),
                value: v.into(),
            },
            ok.map(|succeeded| Response::Cas {
                succeeded,
                revision: 0,
            }),
            t,
        )
    }
    fn check(ops: &[Op]) -> KeyVerdict {
        check_key(ops, 1_000_000)
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            put(0, "a", (0, 10)),
            get(1, Some("a"), (20, 30)),
            cas(0, Some("a"), "b", Some(true), (40, 50)),
            get(1, Some("b"), (60, 70)),
        ];
        assert_eq!(check(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn concurrent_reads_may_see_either_side_of_a_write() {
        let h = [
            put(0, "a", (0, 10)),
            put(0, "b", (20, 100)),
            get(1, Some("b"), (30, 40)),
            get(2, Some("b"), (50, 60)),
            get(3, Some("b"), (110, 120)),
        ];
        assert_eq!(check(&h), KeyVerdict::Linearizable);
        let h2 = [
            put(0, "a", (0, 10)),
            put(0, "b", (20, 100)),
            get(1, Some("a"), (30, 40)),
        ];
        assert_eq!(check(&h2), KeyVerdict::Linearizable);
    }

    #[test]
    fn catches_a_stale_read() {
        let h = [
            put(0, "a", (0, 10)),
            put(0, "b", (20, 30)),
            // Invoked after "b" was acknowledged, yet sees "a".
            get(1, Some("a"), (40, 50)),
        ];
        assert!(matches!(check(&h), KeyVerdict::Violation { .. }));
    }

    #[test]
    fn catches_a_read_going_back_in_time() {
        let h = [
            put(0, "a", (0, 10)),
            put(0, "b", (20, 100)),
            get(1, Some("b"), (30, 40)),
            // After a reader saw "b", a later reader must not see "a".
            get(2, Some("a"), (50, 60)),
        ];
        assert!(matches!(check(&h), KeyVerdict::Violation { .. }));
    }

    #[test]
    fn catches_a_lost_write() {
        let h = [
            put(0, "a", (0, 10)),
            put(1, "b", (20, 30)),
            // The final read: "b" was acknowledged but is gone.
            get(2, None, (100, 110)),
        ];
        assert!(matches!(check(&h), KeyVerdict::Violation { .. }));
    }

    #[test]
    fn indeterminate_writes_may_or_may_not_happen() {
        let maybe = op(0, Request::Put { value: "x".into() }, None, (0, 5));
        let seen = [maybe.clone(), get(1, Some("x"), (100, 110))];
        assert_eq!(check(&seen), KeyVerdict::Linearizable);
        let unseen = [maybe.clone(), get(1, None, (100, 110))];
        assert_eq!(check(&unseen), KeyVerdict::Linearizable);
        // But it cannot take effect before it was invoked.
        let early = [
            get(1, Some("x"), (0, 10)),
            op(0, Request::Put { value: "x".into() }, None, (20, 25)),
        ];
        assert!(matches!(check(&early), KeyVerdict::Violation { .. }));
    }

    #[test]
    fn cas_and_delete_follow_the_register() {
        let h = [
            put(0, "a", (0, 10)),
            cas(1, Some("zzz"), "b", Some(false), (20, 30)),
            cas(1, Some("a"), "c", Some(true), (40, 50)),
            op(
                2,
                Request::Delete,
                Some(Response::Delete {
                    deleted: 1,
                    revision: 0,
                }),
                (60, 70),
            ),
            cas(1, None, "d", Some(true), (80, 90)),
            get(0, Some("d"), (100, 110)),
        ];
        assert_eq!(check(&h), KeyVerdict::Linearizable);
        // Two CAS from the same expected value cannot both succeed.
        let double = [
            put(0, "a", (0, 10)),
            cas(1, Some("a"), "b", Some(true), (20, 30)),
            cas(2, Some("a"), "c", Some(true), (20, 30)),
        ];
        assert!(matches!(check(&double), KeyVerdict::Violation { .. }));
        // A delete of an absent key deletes nothing.
        let phantom = [op(
            0,
            Request::Delete,
            Some(Response::Delete {
                deleted: 1,
                revision: 0,
            }),
            (0, 10),
        )];
        assert!(matches!(check(&phantom), KeyVerdict::Violation { .. }));
    }

    #[test]
    fn serializable_reads_are_not_checked_here() {
        let mut stale = get(1, Some("a"), (40, 50));
        stale.request = Request::Get { serializable: true };
        let h = [put(0, "a", (0, 10)), put(0, "b", (20, 30)), stale];
        assert_eq!(check(&h), KeyVerdict::Linearizable);
    }

    #[test]
    fn many_concurrent_operations_finish_within_budget() {
        let mut h = Vec::new();
        for i in 0..200u64 {
            let t = i * 10;
            h.push(put((i % 4) as usize, &format!("v{i}"), (t, t + 35)));
            h.push(get(
                4 + (i % 3) as usize,
                Some(&format!("v{i}")),
                (t + 5, t + 40),
            ));
        }
        assert_eq!(check(&h), KeyVerdict::Linearizable);
    }
}

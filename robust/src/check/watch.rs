//! Watch guarantees against the committed history: each watcher saw, over all its
//! reconnects, exactly the reference events from its start revision to the last
//! revision it saw, in revision order, with no gap, no duplicate and no event that was
//! never committed; and it kept up until the end of the run.
//!
//! The reference is the history read back after the run (a fresh watch from revision 1
//! over the whole prefix) and is itself checked against the acknowledged writes in
//! `durability.rs`, so a watch path that loses events cannot vouch for itself.

use super::Anomaly;
use crate::history::{WatchEvent, WatchLog};

/// One committed event of the reference history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefEvent {
    pub revision: i64,
    pub key: String,
    /// `None` for a delete.
    pub value: Option<String>,
}

/// `reference` in revision order; `must_reach` is the revision every watcher should
/// have seen events up to (the last reference event of the run), if any.
pub fn check(logs: &[WatchLog], reference: &[RefEvent], must_reach: Option<i64>) -> Vec<Anomaly> {
    let mut anomalies = Vec::new();
    for log in logs {
        anomalies.extend(check_one(log, reference, must_reach));
    }
    anomalies
}

fn describe(e: &WatchEvent) -> String {
    format!("rev {} {} {:?}", e.revision, e.key, e.value)
}

fn check_one(log: &WatchLog, reference: &[RefEvent], must_reach: Option<i64>) -> Vec<Anomaly> {
    let w = log.watcher;
    let mut anomalies = Vec::new();
    // Order: revisions never go back; the same event twice is a duplicate.
    for pair in log.events.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if (b.revision, &b.key) == (a.revision, &a.key) {
            anomalies.push(Anomaly::new(
                "watch-duplicate",
                format!("watcher {w} got {} twice", describe(b)),
            ));
        } else if b.revision < a.revision {
            anomalies.push(Anomaly::new(
                "watch-out-of-order",
                format!("watcher {w} got {} after {}", describe(b), describe(a)),
            ));
        }
    }
    let last_seen = log
        .events
        .last()
        .map_or(log.start_revision - 1, |e| e.revision);
    // Content: the reference between the start and the last revision seen, one to one.
    let expected: Vec<&RefEvent> = reference
        .iter()
        .filter(|e| e.revision >= log.start_revision && e.revision <= last_seen)
        .collect();
    let mut seen: Vec<&WatchEvent> = log.events.iter().collect();
    seen.sort_by_key(|e| e.revision);
    seen.dedup_by(|a, b| a.revision == b.revision && a.key == b.key);
    let (mut i, mut j) = (0, 0);
    let mut reported = 0;
    while (i < expected.len() || j < seen.len()) && reported < 5 {
        let exp = expected.get(i);
        let got = seen.get(j);
        match (exp, got) {
            (Some(e), Some(g)) if e.revision == g.revision && e.key == g.key => {
                if e.value != g.value {
                    anomalies.push(Anomaly::new(
                        "watch-wrong-event",
                        format!(
                            "watcher {w} got {} but revision {} committed {:?}",
                            describe(g),
                            e.revision,
                            e.value
                        ),
                    ));
                    reported += 1;
                }
                i += 1;
                j += 1;
            }
            (Some(e), g) if g.is_none_or(|g| (e.revision, &e.key) < (g.revision, &g.key)) => {
                anomalies.push(Anomaly::new(
                    "watch-gap",
                    format!(
                        "watcher {w} (from revision {}, {} reconnects) never got rev {} {} {:?}",
                        log.start_revision, log.reconnects, e.revision, e.key, e.value
                    ),
                ));
                reported += 1;
                i += 1;
            }
            (_, Some(g)) => {
                anomalies.push(Anomaly::new(
                    "watch-phantom",
                    format!(
                        "watcher {w} got {}, which the committed history does not have",
                        describe(g)
                    ),
                ));
                reported += 1;
                j += 1;
            }
            (None, None) => break,
            (Some(_), None) => unreachable!("covered by the gap arm"),
        }
    }
    if let Some(target) = must_reach
        && target >= log.start_revision
        && last_seen < target
    {
        anomalies.push(Anomaly::new(
            "watch-stuck",
            format!(
                "watcher {w} saw events only up to revision {last_seen}, the run committed up to {target}"
            ),
        ));
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(revision: i64, key: &str, value: Option<&str>) -> RefEvent {
        RefEvent {
            revision,
            key: key.into(),
            value: value.map(String::from),
        }
    }

    fn log(start: i64, events: &[(i64, &str, Option<&str>)]) -> WatchLog {
        WatchLog {
            watcher: 0,
            start_revision: start,
            events: events
                .iter()
                .map(|(rev, k, v)| WatchEvent {
                    revision: *rev,
                    key: k.to_string(),
                    value: v.map(String::from),
                    received_ns: 0,
                })
                .collect(),
            reconnects: 0,
        }
    }

    fn reference() -> Vec<RefEvent> {
        vec![
            r(2, "a", Some("1")),
            r(3, "b", Some("2")),
            r(4, "a", None),
            r(5, "b", Some("3")),
        ]
    }

    fn kinds(a: Vec<Anomaly>) -> Vec<&'static str> {
        a.into_iter().map(|a| a.kind).collect()
    }

    #[test]
    fn a_complete_watch_passes() {
        let l = log(
            3,
            &[(3, "b", Some("2")), (4, "a", None), (5, "b", Some("3"))],
        );
        assert!(check(&[l], &reference(), Some(5)).is_empty());
    }

    #[test]
    fn catches_a_duplicated_event() {
        let l = log(
            2,
            &[
                (2, "a", Some("1")),
                (3, "b", Some("2")),
                (3, "b", Some("2")),
                (4, "a", None),
                (5, "b", Some("3")),
            ],
        );
        assert_eq!(
            kinds(check(&[l], &reference(), Some(5))),
            ["watch-duplicate"]
        );
    }

    #[test]
    fn catches_a_gap() {
        let l = log(
            2,
            &[(2, "a", Some("1")), (4, "a", None), (5, "b", Some("3"))],
        );
        assert_eq!(kinds(check(&[l], &reference(), Some(5))), ["watch-gap"]);
    }

    #[test]
    fn catches_reordering_phantoms_wrong_values_and_stuck_watchers() {
        let reordered = log(
            2,
            &[
                (2, "a", Some("1")),
                (4, "a", None),
                (3, "b", Some("2")),
                (5, "b", Some("3")),
            ],
        );
        assert_eq!(
            kinds(check(&[reordered], &reference(), Some(5))),
            ["watch-out-of-order"]
        );
        let phantom = log(5, &[(5, "b", Some("3")), (6, "c", Some("x"))]);
        assert_eq!(
            kinds(check(&[phantom], &reference(), Some(5))),
            ["watch-phantom"]
        );
        let wrong = log(5, &[(5, "b", Some("4"))]);
        assert_eq!(
            kinds(check(&[wrong], &reference(), Some(5))),
            ["watch-wrong-event"]
        );
        let stuck = log(2, &[(2, "a", Some("1"))]);
        assert_eq!(
            kinds(check(&[stuck], &reference(), Some(5))),
            ["watch-stuck"]
        );
    }
}

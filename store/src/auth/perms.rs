//! Range permission checks. A request's keys `[key, range_end)` are allowed when one
//! interval of the union of the user's granted ranges holds all of them — etcd merges the
//! permissions of all of a user's roles the same way, so two adjacent grants together
//! allow a request spanning both.

use super::{PERM_READ, PERM_READWRITE, PERM_WRITE, Permission};

/// What a request does with its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

impl Access {
    /// Whether a permission of `perm_type` grants this access.
    pub fn allowed_by(self, perm_type: i32) -> bool {
        match self {
            Access::Read => perm_type == PERM_READ || perm_type == PERM_READWRITE,
            Access::Write => perm_type == PERM_WRITE || perm_type == PERM_READWRITE,
        }
    }
}

/// The keys of a request or a permission, in etcd's encoding: `range_end` empty is the
/// single key, `\0` is "every key from `key` on".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange<'a> {
    pub key: &'a [u8],
    pub range_end: &'a [u8],
}

impl<'a> KeyRange<'a> {
    pub fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        KeyRange { key, range_end }
    }

    /// As a half-open interval `[start, end)`; `end` `None` is unbounded.
    fn interval(self) -> (Vec<u8>, Option<Vec<u8>>) {
        if self.range_end.is_empty() {
            let mut end = self.key.to_vec();
            end.push(0);
            (self.key.to_vec(), Some(end))
        } else if self.range_end == [0] {
            (self.key.to_vec(), None)
        } else {
            (self.key.to_vec(), Some(self.range_end.to_vec()))
        }
    }
}

/// Whether the union of `granted` covers `range`.
pub fn covered<'p>(granted: impl Iterator<Item = &'p Permission>, range: KeyRange<'_>) -> bool {
    let (start, end) = range.interval();
    if end.as_ref().is_some_and(|e| *e <= start) {
        // An empty request range reads nothing; etcd allows it only when the key itself
        // would be allowed, so check the key alone.
        return covered_interval(granted, &start, Some(&with_zero(&start)));
    }
    covered_interval(granted, &start, end.as_ref())
}

fn with_zero(key: &[u8]) -> Vec<u8> {
    let mut k = key.to_vec();
    k.push(0);
    k
}

fn covered_interval<'p>(
    granted: impl Iterator<Item = &'p Permission>,
    start: &[u8],
    end: Option<&Vec<u8>>,
) -> bool {
    let mut intervals: Vec<(Vec<u8>, Option<Vec<u8>>)> = granted
        .map(|p| KeyRange::new(&p.key, &p.range_end).interval())
        .filter(|(s, e)| e.as_ref().is_none_or(|e| e > s))
        .collect();
    intervals.sort();
    // Merge overlapping or touching intervals, then look for one holding [start, end).
    let mut merged: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(intervals.len());
    for (s, e) in intervals {
        if let Some(last) = merged.last_mut() {
            let touches = last.1.as_ref().is_none_or(|le| s <= *le);
            if touches {
                last.1 = match (&last.1, e) {
                    (None, _) | (_, None) => None,
                    (Some(le), Some(e)) => Some(if e > *le { e } else { le.clone() }),
                };
                continue;
            }
        }
        merged.push((s, e));
    }
    merged.iter().any(|(s, e)| {
        s.as_slice() <= start
            && match (e, end) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(e), Some(end)) => end <= e,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: i32, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    fn ok(perms: &[Permission], key: &str, end: &str) -> bool {
        covered(perms.iter(), KeyRange::new(key.as_bytes(), end.as_bytes()))
    }

    #[test]
    fn single_key_permissions_allow_only_that_key() {
        let p = [perm(PERM_READ, "foo", "")];
        assert!(ok(&p, "foo", ""));
        assert!(!ok(&p, "foo1", ""));
        assert!(!ok(&p, "fo", ""));
        assert!(
            !ok(&p, "foo", "fop"),
            "a range starting at the key is more than it"
        );
    }

    #[test]
    fn ranges_must_lie_inside_the_union_of_grants() {
        let p = [perm(PERM_READ, "a/", "a0"), perm(PERM_READ, "a0", "a1")];
        assert!(ok(&p, "a/x", ""));
        assert!(ok(&p, "a/", "a0"));
        assert!(ok(&p, "a/", "a1"), "touching grants merge");
        assert!(!ok(&p, "a/", "a2"));
        assert!(!ok(&p, "b", ""));
        assert!(
            !ok(&p, "a/", "\0"),
            "an open range is not inside a bounded one"
        );
        let open = [perm(PERM_READ, "k", "\0")];
        assert!(ok(&open, "k", "\0"));
        assert!(ok(&open, "z", ""));
        assert!(!ok(&open, "a", ""));
        assert!(!ok(&[], "k", ""));
    }

    #[test]
    fn access_kinds_follow_the_permission_type() {
        assert!(Access::Read.allowed_by(PERM_READ));
        assert!(Access::Read.allowed_by(PERM_READWRITE));
        assert!(!Access::Read.allowed_by(PERM_WRITE));
        assert!(Access::Write.allowed_by(PERM_WRITE));
        assert!(!Access::Write.allowed_by(PERM_READ));
    }
}

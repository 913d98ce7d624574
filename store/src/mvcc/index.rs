//! The in-memory key index: for every key, the revisions of its retained history. Rebuilt
//! from the `kv` column family at start; updated by apply under the store's write lock.

use super::encoding::Revision;

/// Retained history of one key, oldest first.
#[derive(Debug, Clone, Default)]
pub struct KeyHistory {
    /// Every retained change of the key; `true` marks a tombstone (a delete).
    pub revs: Vec<(Revision, bool)>,
    /// Of the live generation (meaningful when the last entry is not a tombstone).
    pub create_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl KeyHistory {
    /// The revision holding the key's value as of `rev`, if the key existed then.
    pub fn visible_at(&self, rev: i64) -> Option<Revision> {
        let n = self.revs.partition_point(|(r, _)| r.main <= rev);
        match n.checked_sub(1).map(|i| self.revs[i]) {
            Some((r, false)) => Some(r),
            _ => None,
        }
    }

    /// The revision of the key's current value, if it is live now.
    pub fn live(&self) -> Option<Revision> {
        match self.revs.last() {
            Some((r, false)) => Some(*r),
            _ => None,
        }
    }

    /// Drops history below `rev`, keeping the newest put at or below it (so reads at `rev`
    /// still see the key). Returns the revisions removed; the history may become empty.
    pub fn compact(&mut self, rev: i64) -> Vec<Revision> {
        let n = self.revs.partition_point(|(r, _)| r.main <= rev);
        if n == 0 {
            return Vec::new();
        }
        // Keep the newest entry at or below `rev` unless it is a tombstone.
        let keep_from = match self.revs[n - 1] {
            (_, true) => n,
            (_, false) => n - 1,
        };
        self.revs.drain(..keep_from).map(|(r, _)| r).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rev(main: i64) -> Revision {
        Revision { main, sub: 0 }
    }

    #[test]
    fn visibility_follows_puts_and_tombstones() {
        let h = KeyHistory {
            revs: vec![(rev(2), false), (rev(5), true), (rev(7), false)],
            ..Default::default()
        };
        assert_eq!(h.visible_at(1), None);
        assert_eq!(h.visible_at(2), Some(rev(2)));
        assert_eq!(h.visible_at(4), Some(rev(2)));
        assert_eq!(h.visible_at(5), None);
        assert_eq!(h.visible_at(9), Some(rev(7)));
        assert_eq!(h.live(), Some(rev(7)));
    }

    #[test]
    fn compaction_keeps_what_reads_at_the_compacted_revision_need() {
        let mut h = KeyHistory {
            revs: vec![
                (rev(2), false),
                (rev(3), false),
                (rev(5), true),
                (rev(7), false),
            ],
            ..Default::default()
        };
        assert_eq!(h.compact(4), vec![rev(2)]);
        assert_eq!(h.visible_at(4), Some(rev(3)));
        assert_eq!(h.compact(6), vec![rev(3), rev(5)]);
        assert_eq!(h.revs, vec![(rev(7), false)]);
        let mut dead = KeyHistory {
            revs: vec![(rev(2), false), (rev(3), true)],
            ..Default::default()
        };
        assert_eq!(dead.compact(3), vec![rev(2), rev(3)]);
        assert!(dead.revs.is_empty());
    }
}

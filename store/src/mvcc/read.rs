//! Reads: Range at any retained revision (etcd's rules for limit, count, sort and filters)
//! and the history scan that feeds watches catching up.

use std::cmp::Ordering;
use std::ops::Bound;

use etcd_client::proto::{PbEvent, PbKeyValue, PbRangeRequest, PbRangeResponse, PbResponseHeader};

use super::encoding::{CF_KV, Revision, decode_entry};
use super::{MvccStore, State};
use crate::error::{Error, Result};

// etcd's enum values (rpc.proto RangeRequest.SortOrder / SortTarget, mvccpb Event.EventType).
const SORT_NONE: i32 = 0;
const SORT_ASCEND: i32 = 1;
const SORT_DESCEND: i32 = 2;
const TARGET_KEY: i32 = 0;
const TARGET_VERSION: i32 = 1;
const TARGET_CREATE: i32 = 2;
const TARGET_MOD: i32 = 3;
const TARGET_VALUE: i32 = 4;
pub const EVENT_PUT: i32 = 0;
pub const EVENT_DELETE: i32 = 1;

/// Lower and upper bound of a key range, as `BTreeMap::range` takes them.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A key range as etcd spells it: empty `end` is the single key, `"\0"` is every key from
/// `key` on, anything else is the half-open range `[key, end)`.
pub fn key_bounds<'a>(key: &'a [u8], end: &'a [u8]) -> Option<KeyBounds<'a>> {
    if end.is_empty() {
        return Some((Bound::Included(key), Bound::Included(key)));
    }
    if end == [0] {
        return Some((Bound::Included(key), Bound::Unbounded));
    }
    if end <= key {
        return None;
    }
    Some((Bound::Included(key), Bound::Excluded(end)))
}

/// Whether `k` falls in the etcd-style range (`key`, `end`).
pub fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
    if end.is_empty() {
        k == key
    } else if end == [0] {
        k >= key
    } else {
        k >= key && k < end
    }
}

/// Revisions of the keys in range that are visible at `rev`, in key order.
pub(crate) fn visible_revisions(state: &State, key: &[u8], end: &[u8], rev: i64) -> Vec<Revision> {
    let Some(bounds) = key_bounds(key, end) else {
        return Vec::new();
    };
    state
        .index
        .range::<[u8], _>(bounds)
        .filter_map(|(_, h)| h.visible_at(rev))
        .collect()
}

/// Checks a read revision against the store's bounds; `0` means "current".
pub(crate) fn resolve_revision(state: &State, requested: i64, current: i64) -> Result<i64> {
    if requested > current {
        return Err(Error::FutureRevision);
    }
    let rev = if requested <= 0 { current } else { requested };
    if rev < state.compact_rev {
        return Err(Error::Compacted);
    }
    Ok(rev)
}

/// Range as etcd 3.4 computes it, reading at `current` (the view's current revision;
/// inside a Txn that has written, the Txn's own revision). `fetch` loads a revision.
pub(crate) fn range_with(
    state: &State,
    fetch: &dyn Fn(Revision) -> Result<PbKeyValue>,
    req: &PbRangeRequest,
    current: i64,
) -> Result<PbRangeResponse> {
    let rev = resolve_revision(state, req.revision, current)?;
    let revs = visible_revisions(state, &req.key, &req.range_end, rev);
    let count = revs.len() as i64;
    let header = Some(PbResponseHeader {
        revision: current,
        ..Default::default()
    });
    if req.count_only {
        return Ok(PbRangeResponse {
            header,
            kvs: Vec::new(),
            more: false,
            count,
        });
    }
    // As etcd: only an explicit sort order or a filter makes it fetch everything; a
    // non-key target with order NONE sorts just the limit+1 keys fetched in key order.
    let filtered = req.sort_order != SORT_NONE
        || req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let fetch_n = if req.limit > 0 && !filtered {
        (req.limit as usize).saturating_add(1)
    } else {
        usize::MAX
    };
    let mut kvs = revs
        .iter()
        .take(fetch_n)
        .map(|r| fetch(*r))
        .collect::<Result<Vec<_>>>()?;
    kvs.retain(|kv| {
        !(req.max_mod_revision != 0 && kv.mod_revision > req.max_mod_revision
            || req.min_mod_revision != 0 && kv.mod_revision < req.min_mod_revision
            || req.max_create_revision != 0 && kv.create_revision > req.max_create_revision
            || req.min_create_revision != 0 && kv.create_revision < req.min_create_revision)
    });
    let mut order = req.sort_order;
    if req.sort_target != TARGET_KEY && order == SORT_NONE {
        order = SORT_ASCEND;
    }
    if order == SORT_ASCEND || order == SORT_DESCEND {
        let cmp = |a: &PbKeyValue, b: &PbKeyValue| -> Ordering {
            match req.sort_target {
                TARGET_VERSION => a.version.cmp(&b.version),
                TARGET_CREATE => a.create_revision.cmp(&b.create_revision),
                TARGET_MOD => a.mod_revision.cmp(&b.mod_revision),
                TARGET_VALUE => a.value.cmp(&b.value),
                _ => a.key.cmp(&b.key),
            }
        };
        if order == SORT_ASCEND {
            kvs.sort_by(cmp);
        } else {
            kvs.sort_by(|a, b| cmp(b, a));
        }
    }
    let mut more = false;
    if req.limit > 0 && kvs.len() > req.limit as usize {
        kvs.truncate(req.limit as usize);
        more = true;
    }
    if req.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(PbRangeResponse {
        header,
        kvs,
        more,
        count,
    })
}

impl MvccStore {
    /// Serves a Range request at the current revision.
    pub fn range(&self, req: &PbRangeRequest) -> Result<PbRangeResponse> {
        let state = self.read_state();
        range_with(&state, &|r| self.fetch(r), req, state.current_rev)
    }

    /// The key-value visible at `rev` for `key`, if any.
    pub fn get_at(&self, key: &[u8], rev: i64) -> Result<Option<PbKeyValue>> {
        let state = self.read_state();
        match state.index.get(key).and_then(|h| h.visible_at(rev)) {
            Some(r) => Ok(Some(self.fetch(r)?)),
            None => Ok(None),
        }
    }

    /// Events in revisions `from..=to` for keys in (`key`, `end`), in revision order, at
    /// most `max_revisions` revisions (whole revisions only). Returns the events and the
    /// last revision scanned. Fails with `Compacted` if `from` is below the compacted
    /// revision: history there is gone, and a watcher must learn that rather than miss it.
    pub fn history(
        &self,
        key: &[u8],
        end: &[u8],
        from: i64,
        to: i64,
        max_revisions: i64,
        prev_kv: bool,
    ) -> Result<(Vec<PbEvent>, i64)> {
        let state = self.read_state();
        if from < state.compact_rev {
            return Err(Error::Compacted);
        }
        let to = to
            .min(state.current_rev)
            .min(from.saturating_add(max_revisions - 1));
        let mut events = Vec::new();
        let start = Revision { main: from, sub: 0 }.to_key();
        let iter = self.db.iterator_cf(
            self.cf(CF_KV)?,
            rocksdb::IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in iter {
            let (k, v) = item?;
            let rev = Revision::from_key(&k)?;
            if rev.main > to {
                break;
            }
            let (kv, tombstone) = decode_entry(&v)?;
            if !in_range(&kv.key, key, end) {
                continue;
            }
            let prev = if prev_kv {
                match state
                    .index
                    .get(&kv.key)
                    .and_then(|h| h.visible_at(rev.main - 1))
                {
                    Some(r) => Some(self.fetch(r)?),
                    None => None,
                }
            } else {
                None
            };
            let (kind, kv) = if tombstone {
                (
                    EVENT_DELETE,
                    PbKeyValue {
                        key: kv.key,
                        mod_revision: rev.main,
                        ..Default::default()
                    },
                )
            } else {
                (EVENT_PUT, kv)
            };
            events.push(PbEvent {
                r#type: kind,
                kv: Some(kv),
                prev_kv: prev,
            });
        }
        Ok((events, to))
    }
}

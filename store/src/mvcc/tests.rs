//! Unit tests of the state machine over a real RocksDB in a temporary directory.

use etcd_client::proto::*;

use super::MvccStore;
use crate::command::{Command, CommandResult};
use crate::error::Error;

fn put(k: &str, v: &str) -> Command {
    Command::Put(PbPutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
}

fn apply(store: &MvccStore, cmds: Vec<Command>) -> Vec<Result<CommandResult, Error>> {
    let index = store.applied_index() + cmds.len() as u64;
    store
        .apply_batch(&cmds, index, &[], true, false)
        .unwrap()
        .into_iter()
        .map(|o| o.result)
        .collect()
}

fn get(store: &MvccStore, k: &str, rev: i64) -> Result<PbRangeResponse, Error> {
    store.range(&PbRangeRequest {
        key: k.into(),
        revision: rev,
        ..Default::default()
    })
}

#[test]
fn revisions_versions_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path()).unwrap();
    assert_eq!(store.current_revision(), 1);
    apply(&store, vec![put("a", "1"), put("a", "2"), put("b", "x")]);
    assert_eq!(store.current_revision(), 4);
    let kv = get(&store, "a", 0).unwrap().kvs.remove(0);
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    assert_eq!(get(&store, "a", 2).unwrap().kvs[0].value, b"1");
    assert!(get(&store, "b", 3).unwrap().kvs.is_empty());
    assert_eq!(get(&store, "a", 5), Err(Error::FutureRevision));

    // Deleting a missing key changes nothing, not even the revision.
    let r = apply(
        &store,
        vec![Command::DeleteRange(PbDeleteRequest {
            key: "zz".into(),
            ..Default::default()
        })],
    );
    assert!(matches!(&r[0], Ok(CommandResult::DeleteRange(d)) if d.deleted == 0));
    assert_eq!(store.current_revision(), 4);

    // Delete, then re-create: a new generation with a new create revision.
    apply(
        &store,
        vec![
            Command::DeleteRange(PbDeleteRequest {
                key: "a".into(),
                ..Default::default()
            }),
            put("a", "3"),
        ],
    );
    let kv = get(&store, "a", 0).unwrap().kvs.remove(0);
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (6, 6, 1));
}

#[test]
fn a_txn_is_one_revision_and_compaction_bounds_reads() {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path()).unwrap();
    apply(&store, vec![put("k", "v")]);
    let op = |k: &str| PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
            key: k.into(),
            value: b"t".to_vec(),
            ..Default::default()
        })),
    };
    let txn = Command::Txn(PbTxnRequest {
        compare: vec![PbCompare {
            result: 0,
            target: 2,
            key: b"k".to_vec(),
            range_end: vec![],
            target_union: Some(PbTargetUnion::ModRevision(2)),
        }],
        success: vec![op("x"), op("y")],
        failure: vec![],
    });
    let r = apply(&store, vec![txn]);
    assert!(matches!(&r[0], Ok(CommandResult::Txn(t)) if t.succeeded));
    assert_eq!(store.current_revision(), 3);
    assert_eq!(get(&store, "y", 0).unwrap().kvs[0].mod_revision, 3);

    apply(&store, vec![put("k", "v2")]);
    let r = apply(
        &store,
        vec![Command::Compact(PbCompactionRequest {
            revision: 3,
            physical: true,
        })],
    );
    assert!(r[0].is_ok());
    assert_eq!(get(&store, "k", 2), Err(Error::Compacted));
    assert_eq!(get(&store, "k", 3).unwrap().kvs[0].value, b"v");
    let again = apply(
        &store,
        vec![Command::Compact(PbCompactionRequest {
            revision: 3,
            physical: true,
        })],
    );
    assert_eq!(again[0].as_ref().unwrap_err(), &Error::Compacted);
}

#[test]
fn leases_delete_their_keys_in_one_revision_and_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = MvccStore::open(dir.path()).unwrap();
        apply(
            &store,
            vec![Command::LeaseGrant(PbLeaseGrantRequest { ttl: 30, id: 7 })],
        );
        let with_lease = |k: &str| {
            Command::Put(PbPutRequest {
                key: k.into(),
                value: b"v".to_vec(),
                lease: 7,
                ..Default::default()
            })
        };
        let r = apply(
            &store,
            vec![with_lease("a"), with_lease("b"), with_lease("c")],
        );
        assert!(r.iter().all(|x| x.is_ok()));
        let unknown = apply(
            &store,
            vec![Command::Put(PbPutRequest {
                key: b"d".to_vec(),
                lease: 8,
                ..Default::default()
            })],
        );
        assert_eq!(unknown[0].as_ref().unwrap_err(), &Error::LeaseNotFound);
    }
    let store = MvccStore::open(dir.path()).unwrap();
    assert_eq!(store.current_revision(), 4);
    assert_eq!(store.lease(7).unwrap().keys.len(), 3);
    assert_eq!(store.applied_index(), 5);
    apply(
        &store,
        vec![Command::LeaseRevoke(PbLeaseRevokeRequest { id: 7 })],
    );
    assert_eq!(store.current_revision(), 5, "all keys go in one revision");
    assert!(get(&store, "a", 0).unwrap().kvs.is_empty());
    assert!(store.lease(7).is_none());
}

#[test]
fn history_feeds_watchers_in_revision_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = MvccStore::open(dir.path()).unwrap();
    apply(
        &store,
        vec![put("w/a", "1"), put("other", "x"), put("w/a", "2")],
    );
    apply(
        &store,
        vec![Command::DeleteRange(PbDeleteRequest {
            key: "w/".into(),
            range_end: "w0".into(),
            prev_kv: false,
        })],
    );
    let (events, last) = store.history(b"w/", b"w0", 2, 100, 100, true).unwrap();
    assert_eq!(last, 5);
    let revs: Vec<i64> = events
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, vec![2, 4, 5]);
    assert_eq!(events[2].r#type, super::EVENT_DELETE);
    assert_eq!(events[2].prev_kv.as_ref().unwrap().value, b"2");
    apply(
        &store,
        vec![Command::Compact(PbCompactionRequest {
            revision: 4,
            physical: true,
        })],
    );
    assert_eq!(
        store.history(b"w/", b"w0", 3, 100, 100, false).unwrap_err(),
        Error::Compacted
    );
}

#[test]
fn auth_state_is_applied_persisted_and_carried_by_snapshots() {
    use crate::auth::{AuthCommand, ROOT};
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let store = MvccStore::open(a.path()).unwrap();
    let auth = |c: AuthCommand| Command::Auth(c);
    let results = apply(
        &store,
        vec![
            auth(AuthCommand::UserAdd {
                name: "root".into(),
                password_hash: Some("h".into()),
            }),
            auth(AuthCommand::Enable {
                token_secret: vec![1; 32],
            }),
            auth(AuthCommand::UserGrantRole {
                user: "root".into(),
                role: ROOT.into(),
            }),
            auth(AuthCommand::Enable {
                token_secret: vec![2; 32],
            }),
        ],
    );
    assert_eq!(results[0], Ok(CommandResult::Auth));
    assert_eq!(results[1], Err(Error::RootRoleNotExist));
    assert_eq!(results[3], Ok(CommandResult::Auth));
    assert!(store.auth_enabled());
    assert_eq!(
        store.current_revision(),
        1,
        "auth changes do not use KV revisions"
    );
    let state = store.auth().clone();
    assert_eq!(state.revision, 3);
    drop(store);

    // Reopened from disk, and restored elsewhere from a dump.
    let store = MvccStore::open(a.path()).unwrap();
    assert_eq!(*store.auth(), state);
    assert!(store.auth_enabled());
    let dump = store.dump().unwrap();
    let other = MvccStore::open(b.path()).unwrap();
    assert!(!other.auth_enabled());
    other.restore(&dump).unwrap();
    assert_eq!(*other.auth(), state);
    assert!(other.auth_enabled());
}

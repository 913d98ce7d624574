//! The register clients: each puts, reads (linearizable and serializable), deletes and
//! compare-and-swaps a few shared keys through a member chosen at random per operation,
//! recording every operation with its invocation and completion time. Every value
//! written is unique in the run (`c<client>-<n>`), so a read names the write it saw.

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;

use super::Endpoints;
use crate::history::{Clock, Op, Request, Response};

/// How long one operation may take before it is recorded as indeterminate.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

pub struct KvClient {
    pub id: usize,
    pub keys: Vec<String>,
    pub seed: u64,
    pub clock: Clock,
}

impl KvClient {
    /// Runs until `stop` turns true; returns the history of this client.
    pub async fn run(self, mut endpoints: Endpoints, stop: watch::Receiver<bool>) -> Vec<Op> {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut history = Vec::new();
        // The last value this client saw per key: CAS expectations that often hold.
        let mut known: HashMap<String, Option<String>> = HashMap::new();
        let mut seq = 0u64;
        while !*stop.borrow() {
            let key = self.keys[rng.random_range(0..self.keys.len())].clone();
            seq += 1;
            let value = format!("c{}-{seq}", self.id);
            let request = match rng.random_range(0..100) {
                0..30 => Request::Put { value },
                30..55 => Request::Get {
                    serializable: false,
                },
                55..65 => Request::Get { serializable: true },
                65..73 => Request::Delete,
                _ => Request::Cas {
                    expected: if rng.random_bool(0.8) {
                        known.get(&key).cloned().flatten()
                    } else {
                        None
                    },
                    value,
                },
            };
            let member = rng.random_range(0..endpoints.len());
            let op = execute(self.id, &mut endpoints, member, key, request, &self.clock).await;
            match (&op.request, &op.response) {
                (Request::Put { value }, Some(_)) => {
                    known.insert(op.key.clone(), Some(value.clone()));
                }
                (_, Some(Response::Get { value, .. })) => {
                    known.insert(op.key.clone(), value.clone());
                }
                (
                    Request::Cas { value, .. },
                    Some(Response::Cas {
                        succeeded: true, ..
                    }),
                ) => {
                    known.insert(op.key.clone(), Some(value.clone()));
                }
                _ => {}
            }
            let failed = op.response.is_none();
            history.push(op);
            if failed {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        history
    }
}

/// Runs one request against one member and records it.
pub async fn execute(
    client_id: usize,
    endpoints: &mut Endpoints,
    member: usize,
    key: String,
    request: Request,
    clock: &Clock,
) -> Op {
    let invoke_ns = clock.now_ns();
    let result = match endpoints.client(member).await {
        Ok(mut c) => tokio::time::timeout(OP_TIMEOUT, send(&mut c, &key, &request))
            .await
            .unwrap_or_else(|_| Err("client timeout".to_string())),
        Err(e) => Err(e.to_string()),
    };
    let complete_ns = clock.now_ns();
    let (response, error) = match result {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(e)),
    };
    Op {
        client: client_id,
        key,
        request,
        invoke_ns,
        response,
        complete_ns,
        error,
    }
}

async fn send(
    c: &mut etcd_client::Client,
    key: &str,
    request: &Request,
) -> Result<Response, String> {
    let header_rev = |h: Option<&etcd_client::ResponseHeader>| h.map_or(0, |h| h.revision());
    let e = |e: etcd_client::Error| e.to_string();
    Ok(match request {
        Request::Put { value } => {
            let r = c.put(key, value.as_str(), None).await.map_err(e)?;
            Response::Put {
                revision: header_rev(r.header()),
            }
        }
        Request::Get { serializable } => {
            let opts = serializable.then(|| GetOptions::new().with_serializable());
            let r = c.get(key, opts).await.map_err(e)?;
            let kv = r.kvs().first();
            Response::Get {
                value: kv.map(|kv| String::from_utf8_lossy(kv.value()).into_owned()),
                mod_revision: kv.map_or(0, |kv| kv.mod_revision()),
                revision: header_rev(r.header()),
            }
        }
        Request::Delete => {
            let r = c.delete(key, None).await.map_err(e)?;
            Response::Delete {
                deleted: r.deleted(),
                revision: header_rev(r.header()),
            }
        }
        Request::Cas { expected, value } => {
            let compare = match expected {
                Some(v) => Compare::value(key, CompareOp::Equal, v.as_str()),
                None => Compare::create_revision(key, CompareOp::Equal, 0),
            };
            let txn = Txn::new()
                .when([compare])
                .and_then([TxnOp::put(key, value.as_str(), None)]);
            let r = c.txn(txn).await.map_err(e)?;
            Response::Cas {
                succeeded: r.succeeded(),
                revision: header_rev(r.header()),
            }
        }
    })
}

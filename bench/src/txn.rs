//! `bench txn-put`: every client sends transactions without conditions whose success
//! branch puts `--txn-ops` keys (each transaction is one revision).

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use etcd_client::{Txn, TxnOp};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::clients::{self, REQUEST_TIMEOUT, Target};
use crate::put::{self, KeyArgs, KeyGen};
use crate::report::{Recorder, Report};

/// Options of `bench txn-put`.
#[derive(Debug, Clone, Args)]
pub struct TxnPutArgs {
    /// Number of transactions.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Puts in each transaction.
    #[arg(long, default_value_t = 1)]
    pub txn_ops: u64,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Size of each value in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Send every request to the leader's endpoint only.
    #[arg(long)]
    pub target_leader: bool,
}

/// Runs the workload and returns its report.
pub async fn run(target: &Target, args: &TxnPutArgs) -> Result<Report> {
    if args.txn_ops == 0 {
        bail!("--txn-ops must be at least 1");
    }
    let keys = Arc::new(KeyGen::new(&args.keys)?);
    let target = if args.target_leader {
        target.leader_only().await?
    } else {
        target.clone()
    };
    let conns = clients::connect(&target).await?;
    let value = Arc::new(put::value(args.val_size));
    let txn_ops = args.txn_ops;
    let (recorder, elapsed) = clients::run_clients(target.clients, args.total, |i, counter| {
        let mut kv = conns[i % conns.len()].kv_client();
        let keys = keys.clone();
        let value = value.clone();
        async move {
            let mut rec = Recorder::new();
            let mut rng = StdRng::from_os_rng();
            while let Some(op) = counter.next() {
                let puts: Vec<TxnOp> = match keys.distinct_keys(op, txn_ops, &mut rng) {
                    Ok(keys) => keys
                        .into_iter()
                        .map(|key| TxnOp::put(key, value.to_vec(), None))
                        .collect(),
                    Err(e) => {
                        rec.record_error(e);
                        continue;
                    }
                };
                rec.time(REQUEST_TIMEOUT, kv.txn(Txn::new().and_then(puts)))
                    .await;
            }
            rec
        }
    })
    .await?;
    Ok(recorder.report("txn-put", elapsed))
}

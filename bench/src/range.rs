//! `bench range`: every client reads `key` (or the range `key`..`end`),
//! linearizable (`--consistency l`, a quorum read) or serializable (`s`, served by the
//! member it reaches).

use std::sync::Arc;

use anyhow::Result;
use clap::{Args, ValueEnum};
use etcd_client::GetOptions;

use crate::clients::{self, REQUEST_TIMEOUT, Target};
use crate::put;
use crate::report::{Recorder, Report};

/// Read consistency, as etcd's benchmark spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Consistency {
    /// Linearizable: the member confirms it is up to date with a quorum.
    L,
    /// Serializable: the member answers from its local state.
    S,
}

impl Consistency {
    /// `l` or `s`.
    pub fn letter(self) -> &'static str {
        match self {
            Consistency::L => "l",
            Consistency::S => "s",
        }
    }
}

/// Options of `bench range`.
#[derive(Debug, Clone, Args)]
pub struct RangeArgs {
    /// The key to read (positional, as in etcd's `benchmark range key [end-range]`;
    /// `--key` is the global TLS key file).
    #[arg(default_value = "foo")]
    pub key: String,
    /// End of the range (exclusive); without it only the key is read.
    pub end: Option<String>,
    /// Read consistency: l (linearizable) or s (serializable).
    #[arg(long, value_enum, default_value = "l")]
    pub consistency: Consistency,
    /// Number of reads.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    /// Do not put the key (with an 8-byte value) before reading; by default it is put
    /// once, so every read finds one key.
    #[arg(long)]
    pub no_prepare: bool,
}

/// Runs the workload and returns its report.
pub async fn run(target: &Target, args: &RangeArgs) -> Result<Report> {
    let conns = clients::connect(target).await?;
    if !args.no_prepare {
        conns[0]
            .kv_client()
            .put(args.key.as_bytes(), put::value(8), None)
            .await?;
    }
    let mut options = GetOptions::new();
    if let Some(end) = &args.end {
        options = options.with_range(end.as_bytes());
    }
    if args.consistency == Consistency::S {
        options = options.with_serializable();
    }
    let key = Arc::new(args.key.clone().into_bytes());
    let (recorder, elapsed) = clients::run_clients(target.clients, args.total, |i, counter| {
        let mut kv = conns[i % conns.len()].kv_client();
        let key = key.clone();
        let options = options.clone();
        async move {
            let mut rec = Recorder::new();
            while counter.next().is_some() {
                rec.time(
                    REQUEST_TIMEOUT,
                    kv.get(key.as_slice(), Some(options.clone())),
                )
                .await;
            }
            rec
        }
    })
    .await?;
    Ok(recorder.report(&format!("range {}", args.consistency.letter()), elapsed))
}

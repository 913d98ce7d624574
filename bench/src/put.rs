//! `bench put`: every client puts keys of `--key-size` bytes with values of
//! `--val-size` bytes, drawn from `--key-space-size` keys (randomly, or in order with
//! `--sequential-keys`), optionally only at the leader. Also owns key generation, which
//! `txn-put` shares.

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clients::{self, REQUEST_TIMEOUT, Target};
use crate::report::{Recorder, Report};

/// Options of `bench put`.
#[derive(Debug, Clone, Args)]
pub struct PutArgs {
    /// Number of puts.
    #[arg(long, default_value_t = 10_000)]
    pub total: u64,
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Size of each value in bytes.
    #[arg(long, default_value_t = 8)]
    pub val_size: usize,
    /// Send every request to the leader's endpoint only (as etcd's benchmark
    /// `--target-leader`).
    #[arg(long)]
    pub target_leader: bool,
}

/// How keys are drawn.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Size of each key in bytes (the key number, zero-padded decimal).
    #[arg(long, default_value_t = 8)]
    pub key_size: usize,
    /// Number of distinct keys (etcd's benchmark default is 1: every put to one key).
    #[arg(long, default_value_t = 1)]
    pub key_space_size: u64,
    /// Use keys 0, 1, 2, ... in order instead of random ones.
    #[arg(long)]
    pub sequential_keys: bool,
}

/// Makes the keys of a put workload.
#[derive(Debug, Clone)]
pub struct KeyGen {
    key_size: usize,
    key_space_size: u64,
    sequential: bool,
}

impl KeyGen {
    /// Checks that every key number of the key space fits in `key_size` digits.
    pub fn new(args: &KeyArgs) -> Result<Self> {
        if args.key_space_size == 0 {
            bail!("--key-space-size must be at least 1");
        }
        let widest = digits(args.key_space_size - 1);
        if args.key_size < widest {
            bail!(
                "--key-size {} is too small for --key-space-size {} (needs {widest} bytes)",
                args.key_size,
                args.key_space_size
            );
        }
        Ok(Self {
            key_size: args.key_size,
            key_space_size: args.key_space_size,
            sequential: args.sequential_keys,
        })
    }

    /// The key of operation number `op`.
    pub fn key(&self, op: u64, rng: &mut impl Rng) -> Vec<u8> {
        let n = if self.sequential {
            op % self.key_space_size
        } else {
            rng.random_range(0..self.key_space_size)
        };
        self.format(n)
    }

    /// `count` distinct keys for operation number `op` (a transaction may not put one
    /// key twice): consecutive key numbers from where [`KeyGen::key`] would start,
    /// wrapping around the key space. Sequential keys continue across operations.
    pub fn distinct_keys(&self, op: u64, count: u64, rng: &mut impl Rng) -> Result<Vec<Vec<u8>>> {
        if count > self.key_space_size {
            bail!(
                "{count} distinct keys do not fit in --key-space-size {}",
                self.key_space_size
            );
        }
        let first = if self.sequential {
            op.wrapping_mul(count) % self.key_space_size
        } else {
            rng.random_range(0..self.key_space_size)
        };
        Ok((0..count)
            .map(|j| self.format((first + j) % self.key_space_size))
            .collect())
    }

    fn format(&self, n: u64) -> Vec<u8> {
        format!("{n:0width$}", width = self.key_size).into_bytes()
    }
}

/// Number of decimal digits of `n`.
fn digits(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// A value of `size` bytes (printable, so a run can be inspected with etcdctl).
pub fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Runs the workload and returns its report.
pub async fn run(target: &Target, args: &PutArgs) -> Result<Report> {
    let keys = Arc::new(KeyGen::new(&args.keys)?);
    let target = if args.target_leader {
        target.leader_only().await?
    } else {
        target.clone()
    };
    let conns = clients::connect(&target).await?;
    let value = Arc::new(value(args.val_size));
    let (recorder, elapsed) = clients::run_clients(target.clients, args.total, |i, counter| {
        let mut kv = conns[i % conns.len()].kv_client();
        let keys = keys.clone();
        let value = value.clone();
        async move {
            let mut rec = Recorder::new();
            let mut rng = StdRng::from_os_rng();
            while let Some(op) = counter.next() {
                let key = keys.key(op, &mut rng);
                rec.time(REQUEST_TIMEOUT, kv.put(key, value.to_vec(), None))
                    .await;
            }
            rec
        }
    })
    .await?;
    Ok(recorder.report("put", elapsed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(key_size: usize, key_space_size: u64, sequential_keys: bool) -> KeyArgs {
        KeyArgs {
            key_size,
            key_space_size,
            sequential_keys,
        }
    }

    #[test]
    fn sequential_keys_wrap_around_the_key_space() {
        let g = KeyGen::new(&args(8, 3, true)).unwrap();
        let mut rng = StdRng::from_os_rng();
        let keys: Vec<_> = (0..5).map(|op| g.key(op, &mut rng)).collect();
        assert_eq!(
            keys,
            [
                b"00000000".to_vec(),
                b"00000001".to_vec(),
                b"00000002".to_vec(),
                b"00000000".to_vec(),
                b"00000001".to_vec()
            ]
        );
    }

    #[test]
    fn random_keys_stay_inside_the_key_space_and_have_the_key_size() {
        let g = KeyGen::new(&args(6, 100, false)).unwrap();
        let mut rng = StdRng::from_os_rng();
        for op in 0..1000 {
            let key = g.key(op, &mut rng);
            assert_eq!(key.len(), 6);
            let n: u64 = std::str::from_utf8(&key).unwrap().parse().unwrap();
            assert!(n < 100);
        }
    }

    #[test]
    fn distinct_keys_never_repeat_within_one_operation() {
        let mut rng = rand::rng();
        let random = KeyGen::new(&args(4, 5, false)).unwrap();
        for op in 0..200 {
            let mut keys = random.distinct_keys(op, 5, &mut rng).unwrap();
            keys.sort();
            keys.dedup();
            assert_eq!(keys.len(), 5);
        }
        let sequential = KeyGen::new(&args(2, 10, true)).unwrap();
        assert_eq!(
            sequential.distinct_keys(3, 3, &mut rng).unwrap(),
            [b"09".to_vec(), b"00".to_vec(), b"01".to_vec()]
        );
        assert!(sequential.distinct_keys(0, 11, &mut rng).is_err());
    }

    #[test]
    fn key_size_must_hold_the_widest_key() {
        assert!(KeyGen::new(&args(2, 100, true)).is_ok()); // widest key is 99
        assert!(KeyGen::new(&args(2, 101, true)).is_err());
        assert!(KeyGen::new(&args(1, 1, true)).is_ok());
        assert!(KeyGen::new(&args(8, 0, true)).is_err());
    }

    #[test]
    fn digit_counts() {
        assert_eq!(digits(0), 1);
        assert_eq!(digits(9), 1);
        assert_eq!(digits(10), 2);
        assert_eq!(digits(99_999), 5);
        assert_eq!(digits(u64::MAX), 20);
    }

    #[test]
    fn values_have_the_requested_size() {
        assert_eq!(value(0), b"");
        assert_eq!(value(3), b"abc");
        assert_eq!(value(256).len(), 256);
    }
}

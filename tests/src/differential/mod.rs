//! Differential testing: the same seeded sequence of requests sent to a reference member
//! (real etcd) and a candidate member (kvstore), every pair of responses compared after
//! scrubbing member identity; then every retained revision is read back from both.

mod generate;
mod ops;
mod readable;

use std::collections::BTreeMap;

use anyhow::{Result, bail};

pub use generate::Generator;
pub use ops::{Op, Outcome};
pub use readable::readable;

use crate::{Backend, RawClient, Server};

/// Parameters of one run.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    /// The generator seed.
    pub seed: u64,
    /// How many generated operations.
    pub ops: usize,
    /// The member whose answers are right.
    pub reference: Backend,
    /// The member under test.
    pub candidate: Backend,
    /// Report every difference at the end instead of stopping at the first
    /// (`DIFF_KEEP_GOING=1`); after a differing write the members may diverge.
    pub keep_going: bool,
}

impl Run {
    /// A run of `ops` operations from `seed`, real etcd against kvstore. `DIFF_SEED` and
    /// `DIFF_OPS` in the environment override the seed and the count; `DIFF_CANDIDATE=etcd`
    /// compares real etcd with itself (to check the test, not the store).
    pub fn new(seed: u64, ops: usize) -> Self {
        let seed = std::env::var("DIFF_SEED")
            .ok()
            .and_then(|s| parse_seed(&s))
            .unwrap_or(seed);
        let ops = std::env::var("DIFF_OPS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(ops);
        let candidate = match std::env::var("DIFF_CANDIDATE").as_deref() {
            Ok("etcd") => Backend::Etcd,
            _ => Backend::Kvstore,
        };
        Run {
            seed,
            ops,
            reference: Backend::Etcd,
            candidate,
            keep_going: std::env::var_os("DIFF_KEEP_GOING").is_some(),
        }
    }

    /// Runs the sequence; fails at the first differing response.
    pub async fn execute(self) -> Result<()> {
        println!(
            "differential run: seed={} (DIFF_SEED={:#x}) ops={} reference={} candidate={}",
            self.seed,
            self.seed,
            self.ops,
            self.reference.name(),
            self.candidate.name()
        );
        let reference = Server::start(self.reference).await?;
        let candidate = Server::start(self.candidate).await?;
        let mut pair = Pair {
            run: self,
            reference: reference.raw().await?,
            candidate: candidate.raw().await?,
            swept_to: 0,
            revisions_compared: 0,
            differences: Vec::new(),
        };
        let mut generator = Generator::new(self.seed);
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        for index in 0..self.ops {
            let op = generator.next_op(index);
            if matches!(op, Op::Compact(_)) {
                // Compare the whole history before it may be compacted away.
                pair.sweep(generator.revision()).await?;
            }
            let expected = pair.compare(&format!("op #{index}"), &op).await?;
            *tally.entry(expected.label()).or_default() += 1;
            generator.observe(&op, &expected);
        }
        pair.sweep(generator.revision()).await?;
        pair.compare("final lease list", &Op::LeaseLeases).await?;
        if !pair.differences.is_empty() {
            bail!(
                "{} responses differ (seed={}); the first ones:\n{}",
                pair.differences.len(),
                self.seed,
                pair.differences[..pair.differences.len().min(10)].join("\n\n")
            );
        }
        println!(
            "differential run: seed={} passed: {} ops, final revision {}, {} revisions \
             read back from both; outcomes:",
            self.seed,
            self.ops,
            generator.revision(),
            pair.revisions_compared
        );
        for (label, n) in tally {
            println!("  {n:5}  {label}");
        }
        Ok(())
    }
}

/// The two members of a run.
struct Pair {
    run: Run,
    reference: RawClient,
    candidate: RawClient,
    /// Revisions up to this one were read back from both.
    swept_to: i64,
    revisions_compared: usize,
    /// Differences seen so far (only with `keep_going`).
    differences: Vec<String>,
}

impl Pair {
    /// Sends `op` to both members; returns the reference's answer if both agree.
    async fn compare(&mut self, what: &str, op: &Op) -> Result<Outcome> {
        let expected = op.execute(&mut self.reference).await;
        let actual = op.execute(&mut self.candidate).await;
        match self.run.check(what, op, &expected, &actual) {
            Err(e) if self.run.keep_going => self.differences.push(format!("{e:#}")),
            other => other?,
        }
        Ok(expected)
    }

    /// Reads every key at every revision after the last sweep up to `current`.
    async fn sweep(&mut self, current: i64) -> Result<()> {
        for revision in self.swept_to + 1..=current {
            let op = Generator::all_at(revision);
            let outcome = self
                .compare(&format!("history read at revision {revision}"), &op)
                .await?;
            if outcome.is_err() {
                bail!("reference refused a history read: {}", outcome.describe());
            }
            self.revisions_compared += 1;
        }
        self.swept_to = self.swept_to.max(current);
        Ok(())
    }
}

impl Run {
    fn check(&self, what: &str, op: &Op, expected: &Outcome, actual: &Outcome) -> Result<()> {
        if expected == actual {
            return Ok(());
        }
        let want = expected.describe();
        let got = actual.describe();
        let first_diff = want
            .lines()
            .zip(got.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .map(|(line, (a, b))| {
                format!(
                    "first difference at line {}:\n  {}: {a}\n  {}: {b}",
                    line + 1,
                    self.reference.name(),
                    self.candidate.name()
                )
            })
            .unwrap_or_else(|| "one answer is a prefix of the other".to_owned());
        bail!(
            "responses differ (seed={}, rerun with DIFF_SEED={}) at {what}:\n{}\n{first_diff}\n\
             ---- {} answered:\n{want}\n---- {} answered:\n{got}",
            self.seed,
            self.seed,
            op.describe(),
            self.reference.name(),
            self.candidate.name()
        )
    }
}

fn parse_seed(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

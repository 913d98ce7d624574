//! `bench watch`: `--watchers` watchers on one key prefix, spread over `--streams` watch
//! streams (and the streams over `--conns` connections), then `--put-clients` clients
//! put `--puts` keys under the prefix. Each value carries the time it was sent, so
//! every delivered event gives one put-to-delivery latency. Reports the events
//! delivered per second (first put to last delivery), that latency, and the put rate
//! the store kept up while it fed the watchers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use etcd_client::{WatchOptions, WatchResponseStream};

use crate::clients::{self, REQUEST_TIMEOUT, Target};
use crate::report::{Recorder, Report, per_second};

/// How long delivery may stall (no new event) after the last put before the run stops
/// and counts the missing events as errors.
const DELIVERY_STALL_LIMIT: Duration = Duration::from_secs(15);

/// Options of `bench watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Number of watchers, all on `--prefix`.
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Number of watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Number of puts under the prefix while watched.
    #[arg(long, default_value_t = 500)]
    pub puts: u64,
    /// Number of clients doing the puts.
    #[arg(long, default_value_t = 10)]
    pub put_clients: usize,
    /// The watched prefix.
    #[arg(long, default_value = "/bench-watch/")]
    pub prefix: String,
    /// Size of each value in bytes (at least 8: the send time).
    #[arg(long, default_value_t = 32)]
    pub val_size: usize,
}

/// The value of a put sent `sent_us` microseconds after the run's epoch.
fn stamped_value(sent_us: u64, size: usize) -> Vec<u8> {
    let mut value = sent_us.to_be_bytes().to_vec();
    value.resize(size.max(8), b'w');
    value
}

/// The send time carried by a value made by [`stamped_value`].
fn stamp_of(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// How many watchers stream `stream` of `streams` carries, `watchers` in all.
fn watchers_on_stream(watchers: usize, streams: usize, stream: usize) -> usize {
    watchers / streams + usize::from(stream < watchers % streams)
}

/// Microseconds since `epoch`.
fn micros_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Runs the workload and returns its report.
pub async fn run(target: &Target, args: &WatchArgs) -> Result<Report> {
    if args.streams == 0 || args.watchers < args.streams {
        bail!("--streams must be at least 1 and at most --watchers");
    }
    if args.put_clients == 0 {
        bail!("--put-clients must be at least 1");
    }
    let conns = clients::connect(target).await?;
    let epoch = Instant::now();
    let delivered = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Create every watcher and wait for its confirmation before the first put.
    let mut senders = Vec::with_capacity(args.streams);
    let mut receivers = Vec::with_capacity(args.streams);
    for s in 0..args.streams {
        let n = watchers_on_stream(args.watchers, args.streams, s);
        let mut wc = conns[s % conns.len()].watch_client();
        let options = WatchOptions::new().with_prefix();
        let mut stream = wc
            .watch(args.prefix.as_bytes(), Some(options.clone()))
            .await
            .context("open a watch stream")?;
        for _ in 1..n {
            stream
                .watch(args.prefix.as_bytes(), Some(options.clone()))
                .await?;
        }
        let (sender, mut answers) = stream.split();
        let mut created = 0;
        while created < n {
            let answer = tokio::time::timeout(REQUEST_TIMEOUT, answers.message())
                .await
                .context("watch creation timed out")??
                .context("watch stream closed during creation")?;
            if answer.canceled() {
                bail!("watch canceled at creation: {}", answer.cancel_reason());
            }
            created += usize::from(answer.created());
        }
        senders.push(sender);
        let expected = n as u64 * args.puts;
        receivers.push(tokio::spawn(receive(
            answers,
            expected,
            epoch,
            delivered.clone(),
            stop_rx.clone(),
        )));
    }

    // The puts, timed from the first one.
    let puts_started = Instant::now();
    let prefix = Arc::new(args.prefix.clone());
    let val_size = args.val_size;
    let (put_recorder, put_elapsed) =
        clients::run_clients(args.put_clients, args.puts, |i, counter| {
            let mut kv = conns[i % conns.len()].kv_client();
            let prefix = prefix.clone();
            async move {
                let mut rec = Recorder::new();
                while let Some(op) = counter.next() {
                    let key = format!("{prefix}{op:08}");
                    let value = stamped_value(micros_since(epoch), val_size);
                    rec.time(REQUEST_TIMEOUT, kv.put(key, value, None)).await;
                }
                rec
            }
        })
        .await?;

    // Wait for delivery while it makes progress.
    let expected = args.watchers as u64 * put_recorder.ops();
    let mut last_seen = delivered.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    while last_seen < expected && last_progress.elapsed() < DELIVERY_STALL_LIMIT {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = delivered.load(Ordering::Relaxed);
        if now != last_seen {
            last_seen = now;
            last_progress = Instant::now();
        }
    }
    let _ = stop_tx.send(true);
    let mut recorder = Recorder::new();
    let mut last_delivery = puts_started;
    for receiver in receivers {
        let (rec, last) = receiver.await.context("watch receiver panicked")?;
        recorder.merge(&rec);
        last_delivery = last_delivery.max(last);
    }
    drop(senders);

    let events = recorder.ops();
    for _ in events..expected {
        recorder.record_error("event not delivered");
    }
    let mut report = recorder.report(
        &format!("watch {} watchers/{} streams", args.watchers, args.streams),
        last_delivery.duration_since(puts_started),
    );
    let put_summary = put_recorder.summary();
    report.extra.insert(
        "puts_per_s".into(),
        per_second(put_recorder.ops(), put_elapsed.as_secs_f64()),
    );
    report.extra.insert("put_p99_ms".into(), put_summary.p99);
    report
        .extra
        .insert("put_errors".into(), put_recorder.errors() as f64);
    report
        .extra
        .insert("events_expected".into(), expected as f64);
    Ok(report)
}

/// Reads one stream's answers until it has seen `expected` events or is told to stop;
/// returns the delivery latencies and the time of the last event.
async fn receive(
    mut answers: WatchResponseStream,
    expected: u64,
    epoch: Instant,
    delivered: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> (Recorder, Instant) {
    let mut rec = Recorder::new();
    let mut seen = 0u64;
    let mut last = Instant::now();
    while seen < expected {
        let answer = tokio::select! {
            answer = answers.message() => answer,
            _ = stop.changed() => break,
        };
        let answer = match answer {
            Ok(Some(answer)) => answer,
            Ok(None) => {
                rec.record_error("watch stream closed");
                break;
            }
            Err(e) => {
                rec.record_error(e);
                break;
            }
        };
        if answer.canceled() {
            rec.record_error(format_args!("watch canceled: {}", answer.cancel_reason()));
            continue;
        }
        let now_us = micros_since(epoch);
        for event in answer.events() {
            match event.kv().and_then(|kv| stamp_of(kv.value())) {
                Some(sent_us) => {
                    rec.record(Duration::from_micros(now_us.saturating_sub(sent_us)));
                }
                None => rec.record_error("event without a send time"),
            }
            seen += 1;
        }
        if !answer.events().is_empty() {
            last = Instant::now();
            delivered.fetch_add(answer.events().len() as u64, Ordering::Relaxed);
        }
    }
    (rec, last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_value() {
        let v = stamped_value(123_456_789, 32);
        assert_eq!(v.len(), 32);
        assert_eq!(stamp_of(&v), Some(123_456_789));
        // Values are never shorter than the stamp.
        assert_eq!(stamped_value(7, 0).len(), 8);
        assert_eq!(stamp_of(b"short"), None);
    }

    #[test]
    fn watchers_spread_evenly_over_streams() {
        let spread: Vec<_> = (0..3).map(|s| watchers_on_stream(10, 3, s)).collect();
        assert_eq!(spread, [4, 3, 3]);
        let total: usize = (0..10).map(|s| watchers_on_stream(1000, 10, s)).sum();
        assert_eq!(total, 1000);
    }
}

//! Measurements and their output: per-client latency recording (HDR histograms in
//! microseconds), the summary of one run (throughput, p50/p90/p99/p99.9/max, errors),
//! and its text and JSON forms.

use std::collections::BTreeMap;
use std::fmt::{self, Display, Write as _};
use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram tracks exactly: one hour, in microseconds. Longer samples
/// are clamped to it (they are errors in practice: every request has a timeout).
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// Latencies and error counts of one client task; merged into a run's total at the end.
#[derive(Debug, Clone)]
pub struct Recorder {
    latency_us: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder: 3 significant digits from 1 µs to one hour.
    pub fn new() -> Self {
        Self {
            // The bounds are constants that `new_with_bounds` accepts.
            latency_us: Histogram::new_with_bounds(1, MAX_TRACKED_US, 3).expect("valid bounds"),
            errors: 0,
            first_error: None,
        }
    }

    /// Records one successful operation that took `latency`.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us
            .saturating_record(us.clamp(1, MAX_TRACKED_US));
    }

    /// Counts one failed operation, keeping the first message as a sample.
    pub fn record_error(&mut self, error: impl Display) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    /// Runs `op` with a `timeout`, recording its latency on success or an error
    /// otherwise; returns the value on success.
    pub async fn time<T, E: Display>(
        &mut self,
        timeout: Duration,
        op: impl Future<Output = Result<T, E>>,
    ) -> Option<T> {
        let started = std::time::Instant::now();
        match tokio::time::timeout(timeout, op).await {
            Ok(Ok(value)) => {
                self.record(started.elapsed());
                Some(value)
            }
            Ok(Err(e)) => {
                self.record_error(e);
                None
            }
            Err(_) => {
                self.record_error(format_args!("timed out after {timeout:?}"));
                None
            }
        }
    }

    /// Adds another recorder's samples and errors to this one.
    pub fn merge(&mut self, other: &Recorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        self.latency_us.add(&other.latency_us).expect("same bounds");
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Number of successful operations recorded.
    pub fn ops(&self) -> u64 {
        self.latency_us.len()
    }

    /// Number of failed operations.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The latency percentiles of what was recorded.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.latency_us.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            mean: self.latency_us.mean() / 1000.0,
            p50: ms(self.latency_us.value_at_quantile(0.50)),
            p90: ms(self.latency_us.value_at_quantile(0.90)),
            p99: ms(self.latency_us.value_at_quantile(0.99)),
            p999: ms(self.latency_us.value_at_quantile(0.999)),
            max: ms(self.latency_us.max()),
        }
    }

    /// The summary of a run that recorded into this recorder for `elapsed`.
    pub fn report(&self, workload: &str, elapsed: Duration) -> Report {
        let elapsed_s = elapsed.as_secs_f64();
        Report {
            workload: workload.to_owned(),
            ops: self.ops(),
            errors: self.errors,
            elapsed_s,
            throughput_per_s: per_second(self.ops(), elapsed_s),
            latency_ms: self.summary(),
            first_error: self.first_error.clone(),
            extra: BTreeMap::new(),
        }
    }
}

/// `count / seconds`, or 0 for an empty interval.
pub fn per_second(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
}

/// The outcome of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// What ran, with its shape (e.g. `put`, `range l`).
    pub workload: String,
    /// Operations that succeeded (for `watch`: events delivered).
    pub ops: u64,
    /// Operations that failed or timed out (for `watch`: events never delivered).
    pub errors: u64,
    /// Wall time of the measured phase.
    pub elapsed_s: f64,
    /// `ops / elapsed_s`.
    pub throughput_per_s: f64,
    /// Latency of the successful operations (for `watch`: put-to-delivery).
    pub latency_ms: LatencySummary,
    /// One error message, if there were errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Workload-specific figures (for `watch`: the put rate while watched).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, f64>,
}

impl Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "{}: {} ops in {:.2} s = {:.1} ops/s, {} errors",
            self.workload, self.ops, self.elapsed_s, self.throughput_per_s, self.errors
        )?;
        writeln!(
            f,
            "  latency ms: mean {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            l.mean, l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        for (name, value) in &self.extra {
            writeln!(f, "  {name}: {value:.1}")?;
        }
        if let Some(e) = &self.first_error {
            writeln!(f, "  first error: {e}")?;
        }
        Ok(())
    }
}

/// Prints `report` as text, or as one line of JSON when `json` is set.
pub fn print(report: &Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

/// Formats a number for a table: thousands separators for large values, three
/// significant decimals for small ones.
pub fn human(value: f64) -> String {
    if !value.is_finite() {
        return "-".to_owned();
    }
    if value.abs() >= 100.0 {
        let rounded = value.round() as i64;
        let digits = rounded.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if rounded < 0 {
            out.insert(0, '-');
        }
        out
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// `kvstore / etcd` as text, or `-` when the ratio is undefined.
pub fn ratio(kvstore: Option<f64>, etcd: Option<f64>) -> String {
    match (kvstore, etcd) {
        (Some(k), Some(e)) if e > 0.0 && k.is_finite() => format!("{:.2}", k / e),
        _ => "-".to_owned(),
    }
}

/// A markdown table with a header row; every row must have `header.len()` cells.
pub fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let line = |cells: &[String], out: &mut String| {
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    };
    line(
        &header.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>(),
        &mut out,
    );
    line(
        &header.iter().map(|_| "---".to_owned()).collect::<Vec<_>>(),
        &mut out,
    );
    for row in rows {
        debug_assert_eq!(row.len(), header.len());
        line(row, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut r = Recorder::new();
        for ms in 1..=1000u64 {
            r.record(Duration::from_millis(ms));
        }
        let s = r.summary();
        // Three significant digits: within 0.1 % of the exact value.
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.001 + 0.001;
        assert!(close(s.p50, 500.0), "p50 {}", s.p50);
        assert!(close(s.p90, 900.0), "p90 {}", s.p90);
        assert!(close(s.p99, 990.0), "p99 {}", s.p99);
        assert!(close(s.p999, 999.0), "p99.9 {}", s.p999);
        assert!(close(s.max, 1000.0), "max {}", s.max);
        assert!(close(s.mean, 500.5), "mean {}", s.mean);
        assert_eq!(r.ops(), 1000);
    }

    #[test]
    fn merge_adds_samples_and_keeps_the_first_error() {
        let mut a = Recorder::new();
        a.record(Duration::from_micros(100));
        let mut b = Recorder::new();
        b.record(Duration::from_micros(300));
        b.record_error("boom");
        b.record_error("later");
        a.merge(&b);
        assert_eq!(a.ops(), 2);
        assert_eq!(a.errors(), 2);
        let report = a.report("put", Duration::from_secs(2));
        assert_eq!(report.first_error.as_deref(), Some("boom"));
        assert!((report.throughput_per_s - 1.0).abs() < 1e-9);
        assert!((report.latency_ms.max - 0.3).abs() < 0.001);
    }

    #[test]
    fn empty_recorder_reports_zeroes() {
        let report = Recorder::new().report("range l", Duration::ZERO);
        assert_eq!(report.ops, 0);
        assert_eq!(report.throughput_per_s, 0.0);
        assert_eq!(report.latency_ms, LatencySummary::default());
    }

    #[test]
    fn sub_microsecond_and_huge_samples_are_clamped() {
        let mut r = Recorder::new();
        r.record(Duration::from_nanos(10));
        r.record(Duration::from_secs(10 * 3600));
        assert_eq!(r.ops(), 2);
        assert!(r.summary().max >= 3_600_000.0 * 0.999);
    }

    #[test]
    fn report_json_has_the_percentile_names() {
        let mut r = Recorder::new();
        r.record(Duration::from_millis(2));
        let json = serde_json::to_value(r.report("put", Duration::from_secs(1))).unwrap();
        assert!(json["latency_ms"]["p99.9"].is_number());
        assert_eq!(json["ops"], 1);
        assert!(json.get("first_error").is_none());
    }

    #[test]
    fn human_numbers() {
        assert_eq!(human(10_500.4), "10,500");
        assert_eq!(human(250_000.0), "250,000");
        assert_eq!(human(1_234_567.0), "1,234,567");
        assert_eq!(human(960.0), "960");
        assert_eq!(human(12.34), "12.3");
        assert_eq!(human(1.0), "1.000");
        assert_eq!(human(-2_500.0), "-2,500");
        assert_eq!(human(f64::NAN), "-");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(500.0), Some(1000.0)), "0.50");
        assert_eq!(ratio(Some(500.0), Some(0.0)), "-");
        assert_eq!(ratio(None, Some(1.0)), "-");
    }

    #[test]
    fn table_layout() {
        let t = markdown_table(
            &["a", "b"],
            &[vec!["1".into(), "2".into()], vec!["3".into(), "4".into()]],
        );
        assert_eq!(t, "| a | b |\n| --- | --- |\n| 1 | 2 |\n| 3 | 4 |\n");
    }
}

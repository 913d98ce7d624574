//! `/metrics` in the Prometheus text format: request counts and latencies by verb,
//! resource and code, and the registered watchers per resource.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The server's metrics (one registry per process).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    watchers: IntGaugeVec,
    pub audit_dropped: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "apiserver_request_total",
                "Requests by verb, resource and HTTP code.",
            ),
            &["verb", "resource", "code"],
        )
        .expect("valid metric");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "apiserver_request_duration_seconds",
                "Request latency by verb and resource (watches: time to first byte).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["verb", "resource"],
        )
        .expect("valid metric");
        let watchers = IntGaugeVec::new(
            Opts::new("apiserver_registered_watchers", "Open watches by resource."),
            &["resource"],
        )
        .expect("valid metric");
        let audit_dropped = prometheus::IntCounter::new(
            "apiserver_audit_dropped_total",
            "Audit records dropped because the audit writer fell behind.",
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(watchers.clone()),
            Box::new(audit_dropped.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            duration,
            watchers,
            audit_dropped,
        }
    }

    pub fn observe(&self, verb: &str, resource: &str, code: u16, seconds: f64) {
        self.requests
            .with_label_values(&[verb, resource, &code.to_string()])
            .inc();
        self.duration
            .with_label_values(&[verb, resource])
            .observe(seconds);
    }

    pub fn watch_started(&self, resource: &str) {
        self.watchers.with_label_values(&[resource]).inc();
    }

    pub fn watch_ended(&self, resource: &str) {
        self.watchers.with_label_values(&[resource]).dec();
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

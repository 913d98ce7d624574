//! The audit log: one JSON line per request (time, user, groups, verb, resource,
//! namespace, name, code, latency_ms), written by a background task behind a bounded
//! queue, so a slow disk never blocks a request (records are dropped and counted instead).

use std::io::Write;
use std::path::Path;

use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Records queued for the writer before new ones are dropped.
const AUDIT_QUEUE: usize = 10_000;

/// The sending side of the audit log.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Value>,
}

/// One request as the audit log records it.
pub struct AuditRecord<'a> {
    pub user: &'a str,
    pub groups: &'a [String],
    pub verb: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub path: &'a str,
    pub code: u16,
    pub latency_ms: f64,
}

impl Audit {
    /// Opens (appends to) `path` and starts the writer task.
    pub fn start(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, mut rx) = mpsc::channel::<Value>(AUDIT_QUEUE);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Some(first) = rx.blocking_recv() {
                    let _ = writeln!(out, "{first}");
                    while let Ok(more) = rx.try_recv() {
                        let _ = writeln!(out, "{more}");
                    }
                    let _ = out.flush();
                }
            })?;
        Ok(Self { tx })
    }

    /// Queues a record; false when it was dropped (queue full).
    pub fn record(&self, r: AuditRecord<'_>) -> bool {
        let line = json!({
            "time": crate::object::now_rfc3339(),
            "user": r.user,
            "groups": r.groups,
            "verb": r.verb,
            "resource": r.resource,
            "subresource": r.subresource,
            "namespace": r.namespace,
            "name": r.name,
            "path": r.path,
            "code": r.code,
            "latency_ms": (r.latency_ms * 1000.0).round() / 1000.0,
        });
        self.tx.try_send(line).is_ok()
    }
}

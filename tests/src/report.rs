//! Failure reports: a test body's members hand their logs here when they stop, and the
//! test wrapper prints them if the body failed.
//!
//! Bodies return `anyhow::Result`, so members are dropped (and their processes killed)
//! before the wrapper sees the error; the logs are kept per test in a task-local list.

use std::cell::RefCell;
use std::future::Future;

tokio::task_local! {
    static LOGS: RefCell<Vec<String>>;
}

/// Lines of each member log shown when a test fails.
const TAIL_LINES: usize = 200;

/// Runs a test body; on error, prints the logs of every member it started, then panics
/// with the error.
pub async fn run_test<F>(name: &str, body: F)
where
    F: Future<Output = anyhow::Result<()>>,
{
    let (result, logs) = LOGS
        .scope(RefCell::new(Vec::new()), async {
            let result = body.await;
            let logs = LOGS.with(|l| l.take());
            (result, logs)
        })
        .await;
    if let Err(e) = result {
        for log in logs {
            eprintln!("{log}");
        }
        panic!("{name} failed: {e:?}");
    }
}

/// Records a stopped member's log (last lines) for the running test's failure report.
pub(crate) fn record_log(label: &str, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES)..];
    let text = format!(
        "==== {label}: last {} log lines ====\n{}\n==== end of {label} log ====",
        tail.len(),
        tail.join("\n")
    );
    let _ = LOGS.try_with(|l| l.borrow_mut().push(text));
}

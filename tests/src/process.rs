//! A spawned child process whose output goes to a log file and which is killed (by its
//! own pid, with SIGKILL) when dropped.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

use anyhow::{Context, Result};

/// A running child process; stdout and stderr are appended to `log_path`.
#[derive(Debug)]
pub struct ManagedChild {
    child: Child,
    label: String,
}

impl ManagedChild {
    /// Starts `program args…` with both output streams appended to `log_path`.
    pub fn spawn(label: &str, program: &Path, args: &[String], log_path: &Path) -> Result<Self> {
        let log = open_log(log_path)?;
        let log_err = log.try_clone()?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .with_context(|| format!("spawn {label}: {} {}", program.display(), args.join(" ")))?;
        Ok(Self {
            child,
            label: label.to_owned(),
        })
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the child has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGKILL to the child's pid (nothing else) and reaps it.
    pub fn kill9(&mut self) {
        if self.exited().is_none() {
            // `Child::kill` is `kill(pid, SIGKILL)` on Unix.
            if let Err(e) = self.child.kill() {
                eprintln!("[harness] kill -9 {} ({}): {e}", self.pid(), self.label);
            }
        }
        let _ = self.child.wait();
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn open_log(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open log {}", path.display()))
}

/// Reads a log file for a failure report; never fails.
pub fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
}

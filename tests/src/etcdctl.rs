//! Running the real `etcdctl` (v3 API) against a member: one-shot commands with optional
//! stdin, and long-running ones (watch) whose output is read while they run.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// How long a one-shot etcdctl command may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct CmdOutput {
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Exit status.
    pub status: ExitStatus,
}

impl CmdOutput {
    /// Fails unless the command exited 0; returns stdout.
    pub fn ok(&self) -> Result<&str> {
        if !self.status.success() {
            bail!(
                "etcdctl failed ({}): stdout={:?} stderr={:?}",
                self.status,
                self.stdout,
                self.stderr
            );
        }
        Ok(&self.stdout)
    }
}

fn command(endpoint: &str, args: &[&str]) -> Command {
    let program = std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "etcdctl".to_owned());
    let mut cmd = Command::new(program);
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=20s")
        .args(args)
        .kill_on_drop(true);
    cmd
}

/// Runs `etcdctl --endpoints=ENDPOINT ARGS…`, feeding `stdin` if given.
pub async fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Result<CmdOutput> {
    let mut cmd = command(endpoint, args);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawn etcdctl")?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("etcdctl stdin")?;
        pipe.write_all(input.as_bytes()).await?;
        drop(pipe);
    }
    let output = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .with_context(|| format!("etcdctl {args:?} timed out"))??;
    Ok(CmdOutput {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        status: output.status,
    })
}

/// Starts a long-running `etcdctl` (e.g. `watch`) with stdout piped; it is killed (by its
/// pid) when the returned child is dropped.
pub fn spawn_etcdctl(endpoint: &str, args: &[&str]) -> Result<Child> {
    let mut cmd = command(endpoint, args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.spawn().context("spawn etcdctl")
}

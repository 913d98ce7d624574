//! Detached processes: started under `setsid` (their own session, so they outlive the
//! launcher and a Ctrl-C in its terminal), identified by pid and checked against
//! `/proc/<pid>/cmdline` before any signal, so a pid reused by another program is never
//! touched.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// Starts `program args…` detached, output appended to `log`; returns its pid.
/// `setsid` execs the program in place (the child is not a group leader), so the pid
/// returned is the program's own.
pub fn spawn_detached(program: &Path, args: &[String], log: &Path) -> Result<u32> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new("setsid")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("start {} (setsid)", program.display()))?;
    Ok(child.id())
}

/// Whether `pid` is a live (not zombie) process running `program`.
pub fn alive(pid: u32, program: &Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state is the first field after the parenthesised command name.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("");
    if state == "Z" || state == "X" {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or(&[]);
    let argv0 = String::from_utf8_lossy(argv0);
    let want = program.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // setsid may still be exec'ing for a moment: accept it as the same process.
    Path::new(argv0.as_ref())
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == want || n == "setsid")
}

/// Sends `signal` (`KILL`, `TERM`, ...) to `pid` with kill(1).
pub fn signal(pid: u32, signal: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// SIGTERM, then SIGKILL if it is still alive after `grace`; true if it was running.
pub fn stop(pid: u32, program: &Path, grace: Duration) -> bool {
    if !alive(pid, program) {
        return false;
    }
    let _ = signal(pid, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !alive(pid, program) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = signal(pid, "KILL");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid, program) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

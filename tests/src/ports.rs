//! Free loopback ports for spawned servers.
//!
//! A port is found by binding `127.0.0.1:0` and releasing it. Another process may take
//! it before the server binds it, so callers retry a failed start with new ports; within
//! this process a port is never handed out twice.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a loopback port that was free a moment ago and was not returned before by
/// this process.
pub fn free_port() -> u16 {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        let mut guard = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if guard.insert(port) {
            return port;
        }
    }
}

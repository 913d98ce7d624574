//! End-to-end test of etcdctl 3.4's `--endpoints=http://host:port` form against
//! `kvstore serve`: per-endpoint commands then send `:authority: http://host:port`,
//! which the client port must accept (see `store/src/server/authority.rs`).

mod common;
use common::free_port;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kvstore");

/// A single-member `kvstore serve`, killed (by its own pid) when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(BIN)
            .args(["serve", "--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = server.etcdctl(&format!("127.0.0.1:{port}"), &["endpoint", "health"]);
            if out.status.success() {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "server did not become healthy: {}\nserver log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                server.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn etcdctl(&self, endpoints: &str, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .arg(format!("--endpoints={endpoints}"))
            .args(["--command-timeout", "10s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .env_remove("ETCDCTL_ENDPOINTS")
            .stdin(Stdio::null())
            .output()
            .expect("cannot run etcdctl (is it on PATH?)")
    }

    /// Runs etcdctl against `http://127.0.0.1:<port>`; it must succeed. Returns stdout.
    fn ok_with_scheme(&self, args: &[&str]) -> String {
        let out = self.etcdctl(&format!("http://127.0.0.1:{}", self.port), args);
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

#[test]
fn etcdctl_with_http_endpoints() {
    let server = Server::start();

    let status: Value =
        serde_json::from_str(&server.ok_with_scheme(&["endpoint", "status", "-w", "json"]))
            .unwrap();
    let revision = &status[0]["Status"]["header"]["revision"];
    assert!(revision.as_i64().is_some_and(|r| r >= 1), "{status}");

    // (etcdctl reports health on stderr; success is what matters.)
    server.ok_with_scheme(&["endpoint", "health"]);

    assert_eq!(server.ok_with_scheme(&["put", "a", "b"]).trim(), "OK");
    assert_eq!(server.ok_with_scheme(&["get", "a"]), "a\nb\n");

    // Several requests on one connection (the rewritten authority is then referenced
    // from the HPACK dynamic table), and the revision moved on.
    let status: Value =
        serde_json::from_str(&server.ok_with_scheme(&["endpoint", "status", "-w", "json"]))
            .unwrap();
    assert!(
        status[0]["Status"]["header"]["revision"]
            .as_i64()
            .is_some_and(|r| r >= 2),
        "{status}"
    );
    let members = server.ok_with_scheme(&["member", "list", "-w", "json"]);
    assert!(members.contains("\"members\""), "{members}");
}

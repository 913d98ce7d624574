//! `cluster lb`: a TCP load balancer in front of the apiservers, as k3s runs for its
//! agents. Each accepted connection goes to the next backend in turn; a backend that
//! refuses or does not answer within a second is skipped for that connection, so
//! `kubectl` (whose kubeconfig has one server) keeps working while an apiserver is down.
//! TLS passes through untouched: the apiservers' certificates carry 127.0.0.1.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::net::{TcpListener, TcpStream};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves until the process is killed.
pub async fn run(listen: String, backends: Vec<String>) -> Result<()> {
    if backends.is_empty() {
        bail!("lb: no backends given");
    }
    let listener = TcpListener::bind(listen.as_str())
        .await
        .with_context(|| format!("lb: bind {listen}"))?;
    println!("lb: listening on {listen}, backends {}", backends.join(","));
    let backends = Arc::new(backends);
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("lb: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let backends = backends.clone();
        let start = next.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(e) = forward(client, &backends, start).await {
                eprintln!("lb: connection from {peer}: {e:#}");
            }
        });
    }
}

/// Backends are `host:port`; names are resolved at each connection (container names
/// in docker-compose).
async fn forward(mut client: TcpStream, backends: &[String], start: usize) -> Result<()> {
    let _ = client.set_nodelay(true);
    let mut errors = Vec::new();
    for i in 0..backends.len() {
        let backend = &backends[(start + i) % backends.len()];
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend.as_str())).await {
            Ok(Ok(mut upstream)) => {
                let _ = upstream.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                return Ok(());
            }
            Ok(Err(e)) => errors.push(format!("{backend}: {e}")),
            Err(_) => errors.push(format!("{backend}: connect timed out")),
        }
    }
    bail!("no backend answered ({})", errors.join("; "))
}

//! A fault-injecting TCP proxy for one directed peer link (member i → member j).
//!
//! Member i is started with `--experimental-peer-dial-map` sending its connections for
//! j's peer URL here; the proxy forwards them to j's real peer port. Its [`LinkMode`]
//! decides what happens to the bytes: passed, dropped (new connections are closed at
//! once and existing ones stall, as when packets are lost), or delayed. A stall is not a
//! reset: bytes held back flow again after a heal, as TCP would retransmit them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// What a link does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Pass,
    /// Refuse new connections, stall existing ones.
    Drop,
    /// Deliver every chunk this long after it was read.
    Delay {
        delay_ms: u64,
    },
}

/// Chunks read ahead of a delayed writer; bounds the memory of one direction.
const DELAY_QUEUE_CHUNKS: usize = 256;
const CHUNK_BYTES: usize = 16 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One directed link. Dropping it stops the accept loop and every connection.
pub struct LinkProxy {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
    target: Arc<Mutex<SocketAddr>>,
    shutdown: watch::Sender<bool>,
}

impl LinkProxy {
    /// Binds a loopback port (kept for the proxy's life, so it cannot be taken) and
    /// forwards to `target`.
    pub async fn start(target: SocketAddr) -> std::io::Result<LinkProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(LinkMode::Pass);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let target = Arc::new(Mutex::new(target));
        tokio::spawn(accept_loop(listener, mode_rx, target.clone(), shutdown_rx));
        Ok(LinkProxy {
            addr,
            mode,
            target,
            shutdown,
        })
    }

    /// The address members dial instead of the peer.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set_mode(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }

    /// Points the link at a new peer port (a member re-added under a new peer URL).
    pub fn set_target(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = target;
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

async fn accept_loop(
    listener: TcpListener,
    mode: watch::Receiver<LinkMode>,
    target: Arc<Mutex<SocketAddr>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((inbound, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *mode.borrow() == LinkMode::Drop {
            // Closing at once: the dialer sees a failed connection, as behind a partition
            // that answers with resets. Stalled handshakes would only add connect timeouts.
            drop(inbound);
            continue;
        }
        let to = *target.lock().unwrap_or_else(|e| e.into_inner());
        let mode = mode.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let Ok(Ok(outbound)) =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(to)).await
            else {
                return;
            };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let (ir, iw) = inbound.into_split();
            let (or, ow) = outbound.into_split();
            let mut a = shutdown.clone();
            let mut b = shutdown;
            tokio::select! {
                _ = pump(ir, ow, mode.clone()) => {}
                _ = pump(or, iw, mode) => {}
                _ = a.changed() => {}
                _ = b.changed() => {}
            }
        });
    }
}

/// Copies one direction, honouring the link's mode for every chunk. Ends when either
/// side closes; the caller then drops both halves, closing the other direction too.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<LinkMode>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(DELAY_QUEUE_CHUNKS);
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            // A dropped link stalls here: nothing is read, so the sender's window fills.
            while *mode.borrow_and_update() == LinkMode::Drop {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Bytes read just before a drop are held, not lost: wait out the drop first.
            while *mode.borrow_and_update() == LinkMode::Drop {
                if mode.changed().await.is_err() {
                    return;
                }
            }
            let delay = match *mode.borrow() {
                LinkMode::Delay { delay_ms } => Duration::from_millis(delay_ms),
                _ => Duration::ZERO,
            };
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
    };
    tokio::select! {
        _ = writer => {}
        _ = reader => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        s.read_exact(&mut buf).await?;
        Ok(buf)
    }

    #[tokio::test]
    async fn passes_stalls_and_resumes() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut s, b"hello").await.unwrap(), b"hello");

        proxy.set_mode(LinkMode::Drop);
        let stalled =
            tokio::time::timeout(Duration::from_millis(300), roundtrip(&mut s, b"lost?")).await;
        assert!(stalled.is_err(), "a dropped link must stall");
        // A new connection is closed at once.
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(1), fresh.read(&mut buf)).await;
        assert!(matches!(r, Ok(Ok(0)) | Ok(Err(_))), "{r:?}");

        proxy.set_mode(LinkMode::Pass);
        let mut rest = vec![0u8; 5];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"lost?");
    }

    #[tokio::test]
    async fn delays_every_chunk() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        proxy.set_mode(LinkMode::Delay { delay_ms: 150 });
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let t = std::time::Instant::now();
        assert_eq!(roundtrip(&mut s, b"x").await.unwrap(), b"x");
        // Both directions go through the proxy: two delays.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
}

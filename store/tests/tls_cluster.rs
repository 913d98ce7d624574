//! A three-member cluster with TLS everywhere (client and peer ports, client
//! certificates required on both), certificates from `kvstore certs`: it replicates,
//! and a member whose certificate another CA signed can neither talk to a member's peer
//! port nor disturb the cluster when it starts up claiming a place in it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BIN, free_port};
use etcd_client::{Client, ConnectOptions, GetOptions, TlsOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TlsMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl Drop for TlsMember {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn certs(dir: &Path, members: &[&str]) {
    let out = Command::new(BIN)
        .args(["certs", "--dir"])
        .arg(dir)
        .args(["--member", &members.join(","), "--client", "client"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Spawns `kvstore serve` with https:// URLs; `certs` holds NAME.pem, `ca` the CA it
/// trusts for clients and peers.
fn spawn(root: &Path, m: &TlsMember, initial_cluster: &str, certs: &Path, ca: &Path) -> Child {
    let file = |n: &str| certs.join(n).display().to_string();
    let log = std::fs::File::create(root.join(format!("{}.log", m.name))).unwrap();
    Command::new(BIN)
        .arg("serve")
        .args(["--name", &m.name])
        .arg("--data-dir")
        .arg(root.join(&m.name))
        .arg(format!(
            "--listen-client-urls=https://127.0.0.1:{}",
            m.client_port
        ))
        .arg(format!(
            "--listen-peer-urls=https://127.0.0.1:{}",
            m.peer_port
        ))
        .arg(format!(
            "--initial-advertise-peer-urls=https://127.0.0.1:{}",
            m.peer_port
        ))
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-cluster-token", "tls-test"])
        .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
        .arg(format!("--cert-file={}", file(&format!("{}.pem", m.name))))
        .arg(format!(
            "--key-file={}",
            file(&format!("{}-key.pem", m.name))
        ))
        .arg(format!("--trusted-ca-file={}", ca.display()))
        .arg("--client-cert-auth")
        .arg(format!(
            "--peer-cert-file={}",
            file(&format!("{}.pem", m.name))
        ))
        .arg(format!(
            "--peer-key-file={}",
            file(&format!("{}-key.pem", m.name))
        ))
        .arg(format!("--peer-trusted-ca-file={}", ca.display()))
        .arg("--peer-client-cert-auth")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

async fn client(port: u16, certs: &Path) -> Result<Client, etcd_client::Error> {
    let read = |n: &str| std::fs::read(certs.join(n)).unwrap();
    let tls = TlsOptions::new()
        .ca_certificate(etcd_client::Certificate::from_pem(read("ca.pem")))
        .identity(etcd_client::Identity::from_pem(
            read("client.pem"),
            read("client-key.pem"),
        ));
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10))
        .with_tls(tls);
    Client::connect([format!("https://127.0.0.1:{port}")], Some(options)).await
}

/// Opens a TLS connection to a peer port presenting `cert`, sends the HTTP/2 preface
/// and reports whether the server answered with any bytes (its SETTINGS frame).
async fn peer_port_answers(port: u16, ca: &Path, cert: &Path, key: &Path) -> bool {
    kvstore::tls::install_crypto_provider();
    let config = kvstore::tls::client_config(Some(ca), Some((cert, key)), false).unwrap();
    let Ok(mut tls) = kvstore::tls::connect(Arc::new(config), "127.0.0.1", port).await else {
        return false;
    };
    if tls
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_cluster_replicates_and_refuses_a_member_from_another_ca() {
    let root = tempfile::tempdir().unwrap();
    let main: PathBuf = root.path().join("certs");
    let other: PathBuf = root.path().join("other-ca");
    certs(&main, &["m1", "m2", "m3"]);
    certs(&other, &["m4"]);
    let mut members: Vec<TlsMember> = (1..=3)
        .map(|i| TlsMember {
            name: format!("m{i}"),
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        })
        .collect();
    let initial = members
        .iter()
        .map(|m| format!("{}=https://127.0.0.1:{}", m.name, m.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    let ca = main.join("ca.pem");
    for m in members.iter_mut() {
        m.child = Some(spawn(root.path(), m, &initial, &main, &ca));
    }
    let logs = || {
        (1..=4)
            .map(|i| {
                std::fs::read_to_string(root.path().join(format!("m{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };

    // A write through one member is replicated to all three over TLS peer links.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c1 = loop {
        if let Ok(mut c) = client(members[0].client_port, &main).await
            && c.put("tls/k", "v", None).await.is_ok()
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no write over TLS:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for m in &members {
        let mut c = client(m.client_port, &main).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = c
                .get("tls/k", Some(GetOptions::new().with_serializable()))
                .await
                .unwrap();
            if r.kvs().first().map(|kv| kv.value()) == Some(b"v".as_slice()) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not replicate:\n{}",
                m.name,
                logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let before = c1.status().await.unwrap();
    let members_before = c1.member_list().await.unwrap().members().len();

    // A peer certificate from the cluster's CA is served; one from another CA is not.
    let port = members[1].peer_port;
    assert!(peer_port_answers(port, &ca, &main.join("m1.pem"), &main.join("m1-key.pem")).await);
    assert!(
        !peer_port_answers(port, &ca, &other.join("m4.pem"), &other.join("m4-key.pem")).await,
        "a peer certificate from another CA was accepted"
    );

    // Refused handshakes the members logged so far (the probe above made some).
    let refusals = || {
        (1..=3)
            .map(|i| {
                std::fs::read_to_string(root.path().join(format!("m{i}.log")))
                    .unwrap_or_default()
                    .matches("TLS handshake refused")
                    .count()
            })
            .sum::<usize>()
    };
    let refused_before = refusals();

    // A rogue member with a foreign certificate claims a seat and campaigns.
    let rogue = TlsMember {
        name: "m4".into(),
        client_port: free_port(),
        peer_port: free_port(),
        child: None,
    };
    let rogue_cluster = format!("{initial},m4=https://127.0.0.1:{}", rogue.peer_port);
    let mut rogue = rogue;
    // It trusts the real CA (to reach the members' servers), but holds another CA's cert.
    rogue.child = Some(spawn(root.path(), &rogue, &rogue_cluster, &other, &ca));
    // Give it several election timeouts to try, while the cluster keeps serving writes.
    for i in 0..20 {
        c1.put(format!("tls/during-{i}"), "x", None).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let after = c1.status().await.unwrap();
    assert_eq!(
        after.leader(),
        before.leader(),
        "leadership moved:\n{}",
        logs()
    );
    assert_eq!(
        after.raft_term(),
        before.raft_term(),
        "the term moved:\n{}",
        logs()
    );
    assert_eq!(
        c1.member_list().await.unwrap().members().len(),
        members_before
    );
    // The members say why: they refused the rogue's handshakes.
    assert!(
        refusals() > refused_before,
        "no refused handshake logged:\n{}",
        logs()
    );
}

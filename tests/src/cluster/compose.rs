//! The docker-compose side of the launcher (`docker-compose.yml` at the top level):
//! `cluster compose-init` writes, once, what the containers share — the store's CA and
//! member/client certificates (`kvstore certs`, SANs store-1..3), the apiservers' CA and
//! serving certificate (SANs apiserver-1..3, 127.0.0.1), the token file and
//! service-account key all three apiservers use, and kubeconfigs for the host's
//! kubectl (through the published load-balancer port) and for the agents. `cluster
//! exec-with-ip` starts a node agent with the container's own address as its node IP.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine;

/// Users of the token file: (user, groups). The same identities the apiserver creates
/// at a first start of its own.
const USERS: [(&str, &str); 4] = [
    ("admin", "system:masters"),
    ("system:kube-scheduler", ""),
    ("system:kube-controller-manager", ""),
    ("system:node:agent", "system:nodes"),
];

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn kvstore_certs(kvstore: &Path, dir: &Path, args: &[&str]) -> Result<()> {
    let out = std::process::Command::new(kvstore)
        .arg("certs")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .with_context(|| format!("run {} certs", kvstore.display()))?;
    if !out.status.success() {
        bail!("kvstore certs: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A kubeconfig with one cluster (embedded CA), one token user and one context.
pub fn kubeconfig_text(server: &str, ca_pem: &[u8], user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kvstore-compose\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: kvstore-compose\n  context:\n    cluster: kvstore-compose\n    user: {user}\n    namespace: default\ncurrent-context: kvstore-compose\n"
    )
}

/// Writes the shared files into `dir` unless `dir/.done` says they are there.
pub fn init(dir: &Path, api_port: u16, net: &str) -> Result<()> {
    let done = dir.join(".done");
    if done.exists() {
        println!("compose-init: {} already set up", dir.display());
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let kvstore = std::env::current_exe()?
        .parent()
        .context("no bin dir")?
        .join("kvstore");
    // The store: members store-1..3 (server+client use, for client and peer ports),
    // clients `apiserver` and `admin`.
    // kvstore's URLs are IP:PORT, so the members' certificates name their fixed addresses.
    let store_pki = dir.join("store-pki");
    let hosts = format!("{net}.11,{net}.12,{net}.13,store-1,store-2,store-3,127.0.0.1,localhost");
    kvstore_certs(
        &kvstore,
        &store_pki,
        &[
            "--member",
            "store-1,store-2,store-3",
            "--client",
            "apiserver,admin",
            "--hosts",
            &hosts,
        ],
    )?;
    // The apiservers: one CA and one serving certificate valid for every apiserver's
    // name, the load balancer and 127.0.0.1 (the published port), in the four files
    // the apiserver loads from `<data-dir>/pki`.
    let gen_dir = dir.join("apiserver-pki-gen");
    kvstore_certs(
        &kvstore,
        &gen_dir,
        &[
            "--member",
            "apiserver",
            "--hosts",
            "apiserver-1,apiserver-2,apiserver-3,lb,127.0.0.1,localhost",
        ],
    )?;
    let api_dir = dir.join("apiserver");
    let pki = api_dir.join("pki");
    std::fs::create_dir_all(&pki)?;
    for (from, to, mode) in [
        ("ca-key.pem", "ca.key", 0o600),
        ("apiserver-key.pem", "apiserver.key", 0o600),
        ("apiserver.pem", "apiserver.crt", 0o644),
        ("ca.pem", "ca.crt", 0o644),
    ] {
        let bytes = std::fs::read(gen_dir.join(from))?;
        write_mode(&pki.join(to), &bytes, mode)?;
    }
    let ca_pem = std::fs::read(pki.join("ca.crt"))?;
    let mut tokens = String::new();
    let mut token_of = std::collections::BTreeMap::new();
    for (user, groups) in USERS {
        let t: [u8; 24] = rand::random();
        let t: String = t.iter().map(|b| format!("{b:02x}")).collect();
        tokens.push_str(&format!("{t},{user},{user},\"{groups}\"\n"));
        token_of.insert(user, t);
    }
    write_mode(&api_dir.join("tokens.csv"), tokens.as_bytes(), 0o600)?;
    let sa: [u8; 32] = rand::random();
    write_mode(&api_dir.join("sa.key"), &sa, 0o600)?;
    let host_kubeconfig = kubeconfig_text(
        &format!("https://127.0.0.1:{api_port}"),
        &ca_pem,
        "admin",
        &token_of["admin"],
    );
    write_mode(
        &api_dir.join("admin.kubeconfig"),
        host_kubeconfig.as_bytes(),
        0o600,
    )?;
    write_mode(&dir.join("kubeconfig"), host_kubeconfig.as_bytes(), 0o644)?;
    let agent = kubeconfig_text(
        "https://apiserver-1:6443",
        &ca_pem,
        "system:node:agent",
        &token_of["system:node:agent"],
    );
    write_mode(&dir.join("agent.kubeconfig"), agent.as_bytes(), 0o600)?;
    std::fs::write(&done, b"")?;
    println!(
        "compose-init: wrote certificates, tokens and kubeconfigs to {}",
        dir.display()
    );
    Ok(())
}

/// Replaces `@IP@` in `command` with this host's address toward `toward` (a UDP
/// "connection" picks the route; nothing is sent) and execs it.
pub async fn exec_with_ip(toward: &str, command: &[String]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let addr = loop {
        match tokio::net::lookup_host(toward).await {
            Ok(mut addrs) => {
                if let Some(a) = addrs.next() {
                    break a;
                }
            }
            Err(e) if Instant::now() > deadline => {
                bail!("cannot resolve {toward}: {e}")
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
    socket.connect(addr)?;
    let ip = socket.local_addr()?.ip().to_string();
    let (program, args) = command.split_first().context("no command given")?;
    let args: Vec<String> = args.iter().map(|a| a.replace("@IP@", &ip)).collect();
    println!("exec-with-ip: {ip}: {program} {}", args.join(" "));
    let err = std::process::Command::new(program).args(&args).exec();
    Err(err).with_context(|| format!("exec {program}"))
}

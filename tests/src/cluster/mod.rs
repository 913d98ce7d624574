//! The local HA control plane launcher behind the `cluster` binary: 3 `kvstore`
//! members (TLS on client and peer ports, certificates from `kvstore certs`), 3
//! apiservers (scheduler and controllers under leader election), 2 node agents, and a
//! small TCP load balancer in front of the apiservers for `kubectl`.
//!
//! Every process is started detached (`setsid`), with its output in
//! `DIR/logs/<component>.log`; its pid and full command line are recorded in
//! `DIR/state.json`, so `kill`, `restart` and `down` act on exactly the processes the
//! launcher started (by pid, after checking `/proc/<pid>/cmdline` still names the same
//! program, so a reused pid is never signalled).
//!
//! Ports, from `--base-port B` (default 6443): the load balancer on B, apiserver-N on
//! B+N, store-N's client port on B+10+N and peer port on B+20+N, agent-N (node IP 127.0.0.(N+1))
//! serves logs on B+30+N, and its service proxy listens on that IP at each Service's port.

pub mod compose;
pub mod lb;
pub mod ports;
pub mod proc;
pub mod state;
pub mod status;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub use state::{Component, State};

/// Number of store members and apiservers (fixed: the HA shape of the issue).
pub const MEMBERS: usize = 3;

/// Where the programs are and how the cluster is shaped.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The cluster's directory: data, logs, pids, kubeconfigs.
    pub dir: PathBuf,
    /// Directory of the `kvstore`, `apiserver`, `agent` and `cluster` binaries.
    pub bin_dir: PathBuf,
    pub base_port: u16,
    pub agents: usize,
    /// `docker`, or `fake` (simulated nodes: pods are recorded as running, no containers).
    pub runtime: String,
    /// Node names are `<prefix>-1`, `<prefix>-2`, ...
    pub node_prefix: String,
}

impl Layout {
    pub fn lb_port(&self) -> u16 {
        self.base_port
    }
    pub fn apiserver_port(&self, n: usize) -> u16 {
        self.base_port + n as u16
    }
    pub fn store_client_port(&self, n: usize) -> u16 {
        self.base_port + 10 + n as u16
    }
    pub fn store_peer_port(&self, n: usize) -> u16 {
        self.base_port + 20 + n as u16
    }
    pub fn agent_log_port(&self, n: usize) -> u16 {
        self.base_port + 30 + n as u16
    }
    /// Every port the cluster listens on (on 127.0.0.1, and 127.0.0.(N+1) for agents).
    pub fn all_ports(&self) -> Vec<u16> {
        let mut p = vec![self.lb_port()];
        for n in 1..=MEMBERS {
            p.extend([
                self.apiserver_port(n),
                self.store_client_port(n),
                self.store_peer_port(n),
            ]);
        }
        for n in 1..=self.agents {
            p.push(self.agent_log_port(n));
        }
        p
    }
    pub fn node_name(&self, n: usize) -> String {
        format!("{}-{n}", self.node_prefix)
    }
    pub fn node_ip(&self, n: usize) -> String {
        format!("127.0.0.{}", n + 1)
    }
    pub fn store_endpoints(&self) -> Vec<String> {
        (1..=MEMBERS)
            .map(|n| format!("https://127.0.0.1:{}", self.store_client_port(n)))
            .collect()
    }
    pub fn apiserver_urls(&self) -> Vec<String> {
        (1..=MEMBERS)
            .map(|n| format!("https://127.0.0.1:{}", self.apiserver_port(n)))
            .collect()
    }
    pub fn lb_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.lb_port())
    }
    pub fn pki_dir(&self) -> PathBuf {
        self.dir.join("pki")
    }
    pub fn store_tls(&self) -> crate::ClientTls {
        let pki = self.pki_dir();
        crate::ClientTls {
            ca: pki.join("ca.pem"),
            cert: Some(pki.join("admin.pem")),
            key: Some(pki.join("admin-key.pem")),
        }
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    pub fn agent_kubeconfig(&self) -> PathBuf {
        self.dir.join("agent.kubeconfig")
    }
    pub fn log_path(&self, component: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{component}.log"))
    }
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }
    /// `kvstore` client flags that reach this cluster's store (TLS, admin client cert).
    pub fn kvstore_client_args(&self) -> Vec<String> {
        let tls = self.store_tls();
        vec![
            "--endpoints".into(),
            self.store_endpoints().join(","),
            "--cacert".into(),
            tls.ca.display().to_string(),
            "--cert".into(),
            tls.cert.unwrap().display().to_string(),
            "--key".into(),
            tls.key.unwrap().display().to_string(),
        ]
    }

    /// The component names this layout has, in start order.
    pub fn component_names(&self) -> Vec<String> {
        let mut v: Vec<String> = (1..=MEMBERS).map(|n| format!("store-{n}")).collect();
        v.extend((1..=MEMBERS).map(|n| format!("apiserver-{n}")));
        v.push("lb".into());
        v.extend((1..=self.agents).map(|n| format!("agent-{n}")));
        v
    }

    /// The command line of one component (program, arguments).
    pub fn command(&self, name: &str, features: &Features) -> Result<(PathBuf, Vec<String>)> {
        let (kind, n) = split_name(name)?;
        let pki = self.pki_dir();
        let p = |f: &str| pki.join(f).display().to_string();
        let s = |x: &dyn std::fmt::Display| x.to_string();
        match kind {
            "store" => {
                let member = format!("store-{n}");
                let client = format!("https://127.0.0.1:{}", self.store_client_port(n));
                let peer = format!("https://127.0.0.1:{}", self.store_peer_port(n));
                let initial: Vec<String> = (1..=MEMBERS)
                    .map(|m| format!("store-{m}=https://127.0.0.1:{}", self.store_peer_port(m)))
                    .collect();
                let args = vec![
                    "serve".into(),
                    "--name".into(),
                    member.clone(),
                    "--data-dir".into(),
                    s(&self.dir.join(&member).display()),
                    "--listen-client-urls".into(),
                    client.clone(),
                    "--advertise-client-urls".into(),
                    client,
                    "--listen-peer-urls".into(),
                    peer.clone(),
                    "--initial-advertise-peer-urls".into(),
                    peer,
                    "--initial-cluster".into(),
                    initial.join(","),
                    "--initial-cluster-token".into(),
                    "cluster-local".into(),
                    "--initial-cluster-state".into(),
                    "new".into(),
                    "--cert-file".into(),
                    p(&format!("{member}.pem")),
                    "--key-file".into(),
                    p(&format!("{member}-key.pem")),
                    "--trusted-ca-file".into(),
                    p("ca.pem"),
                    "--client-cert-auth".into(),
                    "--peer-cert-file".into(),
                    p(&format!("{member}.pem")),
                    "--peer-key-file".into(),
                    p(&format!("{member}-key.pem")),
                    "--peer-trusted-ca-file".into(),
                    p("ca.pem"),
                    "--peer-client-cert-auth".into(),
                ];
                Ok((self.bin("kvstore"), args))
            }
            "apiserver" => {
                let mut args = vec![
                    "--etcd-servers".into(),
                    self.store_endpoints().join(","),
                    "--etcd-cafile".into(),
                    p("ca.pem"),
                    "--etcd-certfile".into(),
                    p("apiserver.pem"),
                    "--etcd-keyfile".into(),
                    p("apiserver-key.pem"),
                    "--bind-address".into(),
                    "127.0.0.1".into(),
                    "--secure-port".into(),
                    s(&self.apiserver_port(n)),
                    "--data-dir".into(),
                    s(&self.dir.join(format!("apiserver-{n}")).display()),
                ];
                if features.apiserver_controllers {
                    args.push("--controllers".into());
                }
                Ok((self.bin("apiserver"), args))
            }
            "lb" => {
                let backends: Vec<String> = (1..=MEMBERS)
                    .map(|m| format!("127.0.0.1:{}", self.apiserver_port(m)))
                    .collect();
                let args = vec![
                    "lb".into(),
                    "--listen".into(),
                    format!("127.0.0.1:{}", self.lb_port()),
                    "--backends".into(),
                    backends.join(","),
                ];
                Ok((self.bin("cluster"), args))
            }
            "agent" => {
                if n > self.agents {
                    bail!(
                        "this cluster has {} agents; there is no {name}",
                        self.agents
                    );
                }
                let ip = self.node_ip(n);
                let mut args = vec![
                    "--kubeconfig".into(),
                    s(&self.agent_kubeconfig().display()),
                    "--apiserver".into(),
                    self.apiserver_urls().join(","),
                    "--node-name".into(),
                    self.node_name(n),
                    "--node-ip".into(),
                    ip,
                    "--kubelet-port".into(),
                    s(&self.agent_log_port(n)),
                ];
                if self.runtime == "fake" {
                    args.extend(["--runtime".into(), "fake".into()]);
                }
                Ok((self.bin("agent"), args))
            }
            _ => bail!("unknown component {name:?}"),
        }
    }
}

/// What the installed binaries support (read from their `--help`), so the launcher
/// says plainly what is missing instead of failing on an unknown flag.
#[derive(Clone, Debug, Default)]
pub struct Features {
    pub apiserver_controllers: bool,
}

impl Features {
    pub fn probe(layout: &Layout) -> Features {
        let help = std::process::Command::new(layout.bin("apiserver"))
            .arg("--help")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        Features {
            apiserver_controllers: help.contains("--controllers"),
        }
    }
}

/// `store-2` → ("store", 2); `lb` → ("lb", 0).
pub fn split_name(name: &str) -> Result<(&str, usize)> {
    if name == "lb" {
        return Ok(("lb", 0));
    }
    let Some((kind, n)) = name.rsplit_once('-') else {
        bail!("unknown component {name:?}: expected store-N, apiserver-N, agent-N or lb");
    };
    let n: usize = n
        .parse()
        .with_context(|| format!("unknown component {name:?}: N must be a number"))?;
    let max = if kind == "agent" { 64 } else { MEMBERS };
    if !matches!(kind, "store" | "apiserver" | "agent") || n == 0 || n > max {
        bail!("unknown component {name:?}: expected store-1..3, apiserver-1..3, agent-N or lb");
    }
    Ok((kind, n))
}

/// Polls `check` until it returns `Ok(true)` or `timeout` passes; the last error (or
/// `what`) is in the failure.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not yet");
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Copies the files several apiservers must share (CA and serving certificate,
/// service-account key, token file) from the first apiserver's data dir into `to`,
/// unless `to` already has a token file (a data dir that was set up before).
pub fn share_apiserver_identity(from: &Path, to: &Path) -> Result<()> {
    if to.join("tokens.csv").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(to.join("pki"))?;
    for entry in std::fs::read_dir(from.join("pki")).context("read apiserver-1's pki/")? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            copy_private(&entry.path(), &to.join("pki").join(entry.file_name()))?;
        }
    }
    for f in ["sa.key", "tokens.csv"] {
        copy_private(&from.join(f), &to.join(f))?;
    }
    Ok(())
}

fn copy_private(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let bytes = std::fs::read(from).with_context(|| format!("read {}", from.display()))?;
    let tmp = to.with_extension("part");
    std::fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, to)?;
    Ok(())
}

/// The token of `user` in an apiserver token file (`token,user,uid,"groups"`).
pub fn token_of(tokens_csv: &Path, user: &str) -> Result<String> {
    let text = std::fs::read_to_string(tokens_csv)
        .with_context(|| format!("read {}", tokens_csv.display()))?;
    text.lines()
        .find(|l| l.split(',').nth(1) == Some(user))
        .and_then(|l| l.split(',').next())
        .map(str::to_string)
        .with_context(|| format!("no token for {user} in {}", tokens_csv.display()))
}

/// Writes a kubeconfig for `server` with the CA of `admin_kubeconfig` (the apiserver's
/// own, which embeds it) and `token`. File mode 0600.
pub fn write_kubeconfig(
    path: &Path,
    admin_kubeconfig: &Path,
    server: &str,
    user: &str,
    token: &str,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(admin_kubeconfig)
        .with_context(|| format!("read {}", admin_kubeconfig.display()))?;
    let ca = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("certificate-authority-data:"))
        .map(|v| v.trim().trim_matches('"').to_string())
        .with_context(|| {
            format!(
                "no certificate-authority-data in {}",
                admin_kubeconfig.display()
            )
        })?;
    let out = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kvstore-local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: kvstore-local\n  context:\n    cluster: kvstore-local\n    user: {user}\n    namespace: default\ncurrent-context: kvstore-local\n"
    );
    let tmp = path.with_extension("part");
    std::fs::write(&tmp, out)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Whether a Docker daemon answers (`docker info`).
pub fn docker_available() -> bool {
    std::process::Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod unit {
    use super::*;

    fn layout() -> Layout {
        Layout {
            dir: PathBuf::from("/tmp/c"),
            bin_dir: PathBuf::from("/bin"),
            base_port: 7000,
            agents: 2,
            runtime: "fake".into(),
            node_prefix: "node".into(),
        }
    }

    #[test]
    fn ports_do_not_overlap() {
        let l = layout();
        let mut ports = l.all_ports();
        let n = ports.len();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), n);
        assert_eq!(n, 1 + 3 * 3 + 2);
        assert!(ports.iter().all(|p| (7000..7040).contains(p)));
    }

    #[test]
    fn component_names_parse_and_bad_ones_are_refused() {
        assert_eq!(split_name("store-2").unwrap(), ("store", 2));
        assert_eq!(split_name("agent-7").unwrap(), ("agent", 7));
        assert_eq!(split_name("lb").unwrap(), ("lb", 0));
        for bad in ["store-4", "store-0", "apiserver", "etcd-1", "agent-x", ""] {
            let e = split_name(bad).unwrap_err().to_string();
            assert!(e.contains("unknown component"), "{bad}: {e}");
        }
    }

    #[test]
    fn commands_use_tls_everywhere() {
        let l = layout();
        let f = Features {
            apiserver_controllers: true,
        };
        let (_, store) = l.command("store-1", &f).unwrap();
        let store = store.join(" ");
        assert!(store.contains("--listen-client-urls https://127.0.0.1:7011"));
        assert!(store.contains("--client-cert-auth"));
        assert!(store.contains("--peer-client-cert-auth"));
        assert!(store.contains("store-3=https://127.0.0.1:7023"));
        let (_, api) = l.command("apiserver-2", &f).unwrap();
        let api = api.join(" ");
        assert!(api.contains(
            "--etcd-servers https://127.0.0.1:7011,https://127.0.0.1:7012,https://127.0.0.1:7013"
        ));
        assert!(api.contains("--etcd-certfile /tmp/c/pki/apiserver.pem"));
        assert!(api.contains("--controllers"));
        let (_, agent) = l.command("agent-2", &f).unwrap();
        let agent = agent.join(" ");
        assert!(agent.contains("--node-name node-2 --node-ip 127.0.0.3"));
        assert!(agent.contains("--runtime fake"));
        assert!(l.command("agent-3", &f).is_err());
    }

    #[test]
    fn lease_holders_map_to_apiservers_by_port() {
        let l = layout();
        assert_eq!(
            status::apiserver_of_holder(&l, "127.0.0.1:7002_0123abcd").as_deref(),
            Some("apiserver-2")
        );
        assert_eq!(
            status::apiserver_of_holder(&l, "127.0.0.1:9999_7002x"),
            None
        );
    }

    #[test]
    fn tokens_are_read_by_user() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("tokens.csv");
        std::fs::write(&f, "aaa,admin,admin,\"system:masters\"\nbbb,system:node:agent,system:node:agent,\"system:nodes\"\n").unwrap();
        assert_eq!(token_of(&f, "admin").unwrap(), "aaa");
        assert_eq!(token_of(&f, "system:node:agent").unwrap(), "bbb");
        assert!(token_of(&f, "nobody").is_err());
    }

    #[test]
    fn state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(State::load(dir.path()).unwrap().is_none());
        let mut s = State {
            base_port: 7000,
            agents: 2,
            runtime: "docker".into(),
            node_prefix: "node".into(),
            bin_dir: "/bin".into(),
            components: Default::default(),
        };
        s.components.insert(
            "lb".into(),
            Component {
                pid: 42,
                program: "/bin/cluster".into(),
                args: vec!["lb".into()],
                log: "/tmp/lb.log".into(),
            },
        );
        s.save(dir.path()).unwrap();
        let back = State::load(dir.path()).unwrap().unwrap();
        assert_eq!(back.components["lb"].pid, 42);
        std::fs::write(State::path(dir.path()), "not json").unwrap();
        let e = State::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("is not a cluster state file"), "{e}");
    }
}

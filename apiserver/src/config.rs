//! The `apiserver` command line: flags named as kube-apiserver names them where one exists.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::Parser;

/// Flags of the `apiserver` binary.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "apiserver",
    about = "Kubernetes-style API server over an etcd v3 store"
)]
pub struct Config {
    /// Store endpoints, comma separated (etcd v3 API: kvstore or real etcd).
    #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
    pub etcd_servers: Vec<String>,
    /// CA bundle to verify the store's serving certificate.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for the store.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for the store.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// Address both ports listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// HTTPS port; 0 picks a free port (printed once serving).
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Plain-HTTP port for tests only (off by default). Requests without a token are
    /// treated as the admin user; a token, when given, is still authenticated.
    #[arg(long)]
    pub insecure_port: Option<u16>,
    /// Holds the PKI, the service-account signing key, the token file, the admin
    /// kubeconfig and the audit log; created at first start and reused after.
    #[arg(long, default_value = "apiserver-data")]
    pub data_dir: PathBuf,
    /// Static tokens (CSV: token,user,uid,"group1,group2"); default `<data-dir>/tokens.csv`.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Audit log (JSON lines); default `<data-dir>/audit.log`.
    #[arg(long)]
    pub audit_log_path: Option<PathBuf>,
    /// Address advertised in discovery and written into the admin kubeconfig.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// Bound on concurrently running mutating requests; more get 429.
    #[arg(long, default_value_t = 200)]
    pub max_mutating_requests_inflight: usize,
    /// Events each watcher may have queued before it is cut off as too slow.
    #[arg(long, default_value_t = 1000)]
    pub watch_buffer_events: usize,
    /// Recent events each watch cache keeps to resume watches from.
    #[arg(long, default_value_t = 10_000)]
    pub watch_history_events: usize,
    /// Seconds between BOOKMARK events to watchers that asked for them.
    #[arg(long, default_value_t = 15)]
    pub bookmark_interval_s: u64,
    /// Run the scheduler and the controllers in this process (under leader election
    /// unless `--leader-elect=false`); they talk to this apiserver over HTTPS with the
    /// tokens of system:kube-scheduler and system:kube-controller-manager.
    #[arg(long, default_value_t = false)]
    pub controllers: bool,
    /// With `--controllers`: take the kube-scheduler / kube-controller-manager Leases in
    /// kube-system before running (several apiservers: one runs each at a time).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// Scheduler scoring: LeastAllocated (spread) or MostAllocated (bin packing).
    #[arg(long, default_value = "LeastAllocated")]
    pub scheduler_strategy: String,
    /// Seconds a node may go without a heartbeat before it is marked Unknown.
    #[arg(long, default_value_t = 40)]
    pub node_monitor_grace_period_s: u64,
    /// Leader election: how long a Lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    pub leader_elect_lease_duration_s: u64,
    /// Leader election: a leader that has not renewed within this steps down.
    #[arg(long, default_value_t = 10)]
    pub leader_elect_renew_deadline_s: u64,
    /// Leader election: pause between attempts to acquire or renew.
    #[arg(long, default_value_t = 2)]
    pub leader_elect_retry_period_s: u64,
}

impl Config {
    /// The token file in use.
    pub fn token_file(&self) -> PathBuf {
        self.token_auth_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("tokens.csv"))
    }

    /// The audit log in use.
    pub fn audit_log(&self) -> PathBuf {
        self.audit_log_path
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit.log"))
    }
}

//! `kvstore serve` flags. Names follow etcd's so that scripts written for etcd work.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Flags of `kvstore serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Human-readable name of this member.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// Directory holding the member's RocksDB data.
    #[arg(long, default_value = "default.kvstore")]
    pub data_dir: PathBuf,
    /// URL to serve clients on (one `http://host:port`).
    #[arg(long, default_value = "http://127.0.0.1:2379")]
    pub listen_client_urls: String,
    /// URL advertised to clients (defaults to the listen URL).
    #[arg(long)]
    pub advertise_client_urls: Option<String>,
    /// URL to serve peers (Raft traffic) on; a one-member cluster may omit it.
    #[arg(long)]
    pub listen_peer_urls: Option<String>,
    /// Peer URL advertised to the cluster.
    #[arg(long)]
    pub initial_advertise_peer_urls: Option<String>,
    /// `name=peerURL,...` of the initial members (default: this member alone).
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// `new` or `existing`.
    #[arg(long, default_value = "new")]
    pub initial_cluster_state: String,
    /// Token that keeps separate clusters apart.
    #[arg(long, default_value = "etcd-cluster")]
    pub initial_cluster_token: String,
    /// Applied entries between Raft snapshots (after which the log is purged). etcd's
    /// default; a snapshot dumps the whole retained history, so more often costs writes.
    #[arg(long, default_value_t = 100_000)]
    pub snapshot_count: u64,
    /// Largest request accepted, in bytes (etcd's default: 1.5 MiB).
    #[arg(long, default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,
    /// Most operations in one branch of a Txn (etcd's default: 128).
    #[arg(long, default_value_t = 128)]
    pub max_txn_ops: usize,
    /// Raft heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_interval: u64,
    /// Raft election timeout in milliseconds; the minimum lease TTL is 1.5 × this, as in etcd.
    #[arg(long, default_value_t = 1000)]
    pub election_timeout: u64,
    /// How often watches created with progress_notify get a progress notification.
    #[arg(long = "experimental-watch-progress-notify-interval", default_value = "10m", value_parser = parse_duration)]
    pub watch_progress_notify_interval: Duration,
    /// Backend size past which the NOSPACE alarm is raised (etcd's default: 2 GiB).
    #[arg(long, default_value_t = 2 * 1024 * 1024 * 1024)]
    pub quota_backend_bytes: u64,
    /// Take a backup snapshot this often (e.g. `30m`); off when not given.
    #[arg(long, value_parser = parse_duration)]
    pub snapshot_interval: Option<Duration>,
    /// How many scheduled snapshots to keep.
    #[arg(long, default_value_t = 5)]
    pub snapshot_retention: usize,
    /// Where scheduled snapshots go (default: DATA_DIR/snapshots).
    #[arg(long)]
    pub snapshot_dir: Option<PathBuf>,
    /// `revision` (keep the last N revisions) or `periodic` (keep a time window).
    #[arg(long)]
    pub auto_compaction_mode: Option<String>,
    /// For `revision`: revisions to keep (e.g. `1000`); for `periodic`: a duration
    /// (`30m`, `1h`; a bare number means hours, as in etcd).
    #[arg(long, default_value = "0")]
    pub auto_compaction_retention: String,
    /// How often the revision-mode compactor runs (etcd: every 5 minutes).
    #[arg(long = "experimental-auto-compaction-interval", default_value = "5m", value_parser = parse_duration)]
    pub auto_compaction_interval: Duration,
    /// Test hook for network fault injection: `peerURL=dialURL,...` makes this member dial
    /// `dialURL` (e.g. a fault-injecting proxy) whenever it talks to the member at
    /// `peerURL`. Membership is unchanged.
    #[arg(long = "experimental-peer-dial-map", hide = true)]
    pub peer_dial_map: Option<String>,
    /// Client TLS certificate (PEM); `https://` client URLs need it.
    #[arg(long)]
    pub cert_file: Option<PathBuf>,
    /// Client TLS private key (PEM).
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// CA that signs the client certificates accepted with `--client-cert-auth`.
    #[arg(long)]
    pub trusted_ca_file: Option<PathBuf>,
    /// Require clients to present a certificate signed by `--trusted-ca-file`.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub client_cert_auth: bool,
    /// Peer TLS certificate (PEM), also presented when dialing other members.
    #[arg(long)]
    pub peer_cert_file: Option<PathBuf>,
    /// Peer TLS private key (PEM).
    #[arg(long)]
    pub peer_key_file: Option<PathBuf>,
    /// CA that signs every member's peer certificate: other members' servers are
    /// verified against it, and with `--peer-client-cert-auth` so are their clients.
    #[arg(long)]
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// Refuse peers whose certificate `--peer-trusted-ca-file` did not sign.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", default_value_t = false, action = clap::ArgAction::Set)]
    pub peer_client_cert_auth: bool,
    /// bcrypt cost of stored password hashes (etcd's default: 10).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,
    /// Log filter (tracing's env-filter syntax), e.g. `info` or `kvstore=debug`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl ServeArgs {
    /// The socket address of `--listen-client-urls` (the first URL if several are given).
    pub fn client_addr(&self) -> anyhow::Result<SocketAddr> {
        parse_url_addr(
            self.listen_client_urls
                .split(',')
                .next()
                .unwrap_or_default(),
        )
    }

    /// Refuses flag combinations this version cannot honour, with a message saying why.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.initial_cluster_state != "new" && self.initial_cluster_state != "existing" {
            anyhow::bail!(
                "--initial-cluster-state must be new or existing, not {:?}",
                self.initial_cluster_state
            );
        }
        match self.auto_compaction_mode.as_deref() {
            None => {}
            Some("revision") => {
                self.auto_compaction_revisions()?;
            }
            Some("periodic") => {
                self.auto_compaction_period()?;
            }
            Some(other) => {
                anyhow::bail!("--auto-compaction-mode must be revision or periodic, not {other:?}")
            }
        }
        let client_https = self.listen_client_urls.starts_with("https://");
        if client_https && (self.cert_file.is_none() || self.key_file.is_none()) {
            anyhow::bail!("https:// client URLs need --cert-file and --key-file");
        }
        if self.client_cert_auth && self.trusted_ca_file.is_none() {
            anyhow::bail!("--client-cert-auth needs --trusted-ca-file");
        }
        let peer_https = self
            .listen_peer_urls
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
            || self.advertised_peer_url().starts_with("https://");
        if peer_https && (self.peer_cert_file.is_none() || self.peer_key_file.is_none()) {
            anyhow::bail!("https:// peer URLs need --peer-cert-file and --peer-key-file");
        }
        if (peer_https || self.peer_client_cert_auth) && self.peer_trusted_ca_file.is_none() {
            anyhow::bail!(
                "https:// peer URLs and --peer-client-cert-auth need --peer-trusted-ca-file"
            );
        }
        if self.heartbeat_interval == 0 || self.election_timeout <= self.heartbeat_interval {
            anyhow::bail!("--election-timeout must be larger than --heartbeat-interval");
        }
        Ok(())
    }

    /// Revisions to keep in `revision` auto-compaction mode.
    pub fn auto_compaction_revisions(&self) -> anyhow::Result<i64> {
        self.auto_compaction_retention
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "--auto-compaction-retention must be a number of revisions in revision mode"
                )
            })
    }

    /// The window kept in `periodic` auto-compaction mode.
    pub fn auto_compaction_period(&self) -> anyhow::Result<Duration> {
        let r = self.auto_compaction_retention.trim();
        if let Ok(hours) = r.parse::<f64>() {
            return Ok(Duration::from_secs_f64(hours * 3600.0));
        }
        parse_duration(r).map_err(|e| anyhow::anyhow!("--auto-compaction-retention: {e}"))
    }

    /// The socket address of `--listen-peer-urls`, if peers are served.
    pub fn peer_addr(&self) -> anyhow::Result<Option<SocketAddr>> {
        match &self.listen_peer_urls {
            Some(urls) => Ok(Some(parse_url_addr(
                urls.split(',').next().unwrap_or_default(),
            )?)),
            None => Ok(None),
        }
    }

    /// TLS files of the client listener, when its URL is `https://`.
    pub fn client_tls(&self) -> Option<crate::tls::TlsFiles> {
        self.listen_client_urls
            .starts_with("https://")
            .then(|| crate::tls::TlsFiles {
                cert: self.cert_file.clone(),
                key: self.key_file.clone(),
                trusted_ca: self.trusted_ca_file.clone(),
                client_cert_auth: self.client_cert_auth,
            })
    }

    /// TLS files of the peer listener, when its URL is `https://`.
    pub fn peer_tls(&self) -> Option<crate::tls::TlsFiles> {
        self.listen_peer_urls
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
            .then(|| crate::tls::TlsFiles {
                cert: self.peer_cert_file.clone(),
                key: self.peer_key_file.clone(),
                trusted_ca: self.peer_trusted_ca_file.clone(),
                client_cert_auth: self.peer_client_cert_auth,
            })
    }

    /// The peer URL other members reach this one at.
    pub fn advertised_peer_url(&self) -> String {
        self.initial_advertise_peer_urls
            .clone()
            .or_else(|| self.listen_peer_urls.clone())
            .unwrap_or_else(|| "http://127.0.0.1:2380".into())
            .split(',')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// The client URLs this member advertises.
    pub fn advertised_client_urls(&self) -> Vec<String> {
        self.advertise_client_urls
            .as_deref()
            .unwrap_or(&self.listen_client_urls)
            .split(',')
            .map(str::to_owned)
            .collect()
    }

    /// The upper end of Raft's randomized election timeout, which is also openraft's
    /// leader lease: 1.25 × `--election-timeout` (see `server::start`).
    pub fn election_timeout_max_ms(&self) -> u64 {
        self.election_timeout + self.election_timeout / 4
    }

    /// Smallest lease TTL granted, in seconds: ceil(1.5 × election timeout), as etcd does.
    pub fn min_lease_ttl_s(&self) -> i64 {
        let ms = self.election_timeout.saturating_mul(3) / 2;
        ms.div_ceil(1000).max(1) as i64
    }
}

/// Parses `http://127.0.0.1:2379` (or a bare `127.0.0.1:2379`) into a socket address.
pub fn parse_url_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let hostport = rest.trim_end_matches('/');
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid URL {url:?}: {e} (expected http://IP:PORT)"))
}

/// Parses durations such as `500ms`, `1s`, `2m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ));
        }
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5y").is_err());
    }

    fn serve_args(args: &[&str]) -> ServeArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let argv = std::iter::once("kvstore").chain(args.iter().copied());
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().serve
    }

    #[test]
    fn tls_flags_are_checked_before_anything_starts() {
        let err = |args: &[&str]| serve_args(args).validate().unwrap_err().to_string();
        assert!(err(&["--listen-client-urls", "https://127.0.0.1:1"]).contains("--cert-file"));
        assert!(err(&["--client-cert-auth"]).contains("--trusted-ca-file"));
        assert!(
            err(&[
                "--listen-peer-urls",
                "https://127.0.0.1:2",
                "--peer-cert-file",
                "c",
                "--peer-key-file",
                "k"
            ])
            .contains("--peer-trusted-ca-file")
        );
        let ok = serve_args(&[
            "--listen-client-urls",
            "https://127.0.0.1:1",
            "--cert-file",
            "c.pem",
            "--key-file",
            "k.pem",
            "--client-cert-auth=true",
            "--trusted-ca-file",
            "ca.pem",
        ]);
        ok.validate().unwrap();
        let files = ok.client_tls().unwrap();
        assert!(files.client_cert_auth);
        assert!(ok.peer_tls().is_none());
        // Plain is the default: no TLS anywhere.
        let plain = serve_args(&[]);
        assert!(plain.client_tls().is_none() && plain.peer_tls().is_none());
    }

    #[test]
    fn urls_parse_to_socket_addresses() {
        assert_eq!(
            parse_url_addr("http://127.0.0.1:2379").unwrap(),
            "127.0.0.1:2379".parse().unwrap()
        );
        assert!(parse_url_addr("http://nohost").is_err());
    }
}

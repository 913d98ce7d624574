//! The etcdctl-style client half of the `kvstore` binary: global flags, the command
//! tree, connecting through `etcd-client`, timeouts and error wording. Every command
//! talks to the cluster only through `etcd_client::Client`, so it works against real
//! etcd as well as our server. The commands themselves live in the sibling modules.

mod alarm;
mod cluster;
mod kv;
mod lease;
mod maintenance;
mod output;
mod snapshot;
mod txn;
mod watch;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use etcd_client::{Client, ConnectOptions};

pub use output::OutputFormat;

/// Flags shared by every client command (etcdctl's global options).
#[derive(clap::Args, Debug, Clone)]
pub struct ClientGlobal {
    /// gRPC endpoints, comma separated.
    #[arg(
        long,
        global = true,
        env = "KVSTORE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,

    /// Output format: simple, json or table.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        default_value = "simple"
    )]
    pub write_out: OutputFormat,

    /// Dial timeout for client connections (e.g. 2s, 500ms, 1m30s).
    #[arg(long, global = true, default_value = "2s", value_parser = parse_duration)]
    pub dial_timeout: Duration,

    /// Timeout for short running commands, excluding the dial timeout.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub command_timeout: Duration,

    /// Verify certificates of TLS-enabled servers using this CA bundle.
    #[arg(long, global = true)]
    pub cacert: Option<PathBuf>,

    /// Identify this client with this TLS certificate file.
    #[arg(long, global = true)]
    pub cert: Option<PathBuf>,

    /// Identify this client with this TLS key file. (Its clap id is not `key`: that
    /// is the positional key of `get`/`put`/`del`, and two args may not share an id.)
    #[arg(id = "tls_key", long = "key", global = true)]
    pub key: Option<PathBuf>,

    /// Skip server certificate verification (connections are still encrypted).
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,

    /// username[:password] for authentication.
    #[arg(long, global = true)]
    pub user: Option<String>,

    /// Password for authentication (when --user has none).
    #[arg(long, global = true)]
    pub password: Option<String>,
}

impl ClientGlobal {
    /// TLS is used for `https://` endpoints, and for bare `host:port` endpoints when a
    /// TLS flag is given (as etcdctl does); `http://` endpoints stay plain.
    fn wants_tls(&self, endpoints: &[String]) -> bool {
        let flags = self.cacert.is_some()
            || self.cert.is_some()
            || self.key.is_some()
            || self.insecure_skip_tls_verify;
        endpoints.iter().any(|e| e.starts_with("https://"))
            || (flags && !endpoints.iter().any(|e| e.starts_with("http://")))
    }

    fn identity(&self) -> anyhow::Result<Option<(&std::path::Path, &std::path::Path)>> {
        match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            _ => bail!("--cert and --key must be given together"),
        }
    }

    fn credentials(&self) -> anyhow::Result<Option<(String, String)>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        match (user.split_once(':'), &self.password) {
            (Some((name, pw)), _) => Ok(Some((name.to_string(), pw.to_string()))),
            (None, Some(pw)) => Ok(Some((user.clone(), pw.clone()))),
            (None, None) => bail!("--user needs a password: --user name:password or --password"),
        }
    }
}

/// The client subcommands, flattened into the binary's top-level command list.
#[derive(clap::Subcommand, Debug)]
pub enum ClientCommand {
    /// Puts the given key into the store.
    Put(kv::PutArgs),
    /// Gets the key or a range of keys.
    Get(kv::GetArgs),
    /// Removes the specified key or range of keys [key, range_end).
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction (read from stdin).
    Txn(txn::TxnArgs),
    /// Watches events stream on keys or prefixes.
    Watch(watch::WatchArgs),
    /// Lease related commands.
    #[command(subcommand)]
    Lease(lease::LeaseCommand),
    /// Endpoint related commands.
    #[command(subcommand)]
    Endpoint(maintenance::EndpointCommand),
    /// Compacts the event history in the store.
    Compaction(maintenance::CompactionArgs),
    /// Membership related commands.
    #[command(subcommand)]
    Member(cluster::MemberCommand),
    /// Transfers leadership to another member of the cluster.
    MoveLeader(cluster::MoveLeaderArgs),
    /// Snapshot (backup) related commands.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Alarm related commands.
    #[command(subcommand)]
    Alarm(alarm::AlarmCommand),
    /// Defragments the storage of the given members.
    Defrag(alarm::DefragArgs),
}

/// Runs one client command against the endpoints in `global`.
pub async fn run(global: ClientGlobal, cmd: ClientCommand) -> anyhow::Result<()> {
    let ctx = Ctx { global };
    match cmd {
        ClientCommand::Put(a) => kv::put(&ctx, a).await,
        ClientCommand::Get(a) => kv::get(&ctx, a).await,
        ClientCommand::Del(a) => kv::del(&ctx, a).await,
        ClientCommand::Txn(a) => txn::run(&ctx, a).await,
        ClientCommand::Watch(a) => watch::run(&ctx, a).await,
        ClientCommand::Lease(c) => lease::run(&ctx, c).await,
        ClientCommand::Endpoint(c) => maintenance::endpoint(&ctx, c).await,
        ClientCommand::Compaction(a) => maintenance::compaction(&ctx, a).await,
        ClientCommand::Member(c) => cluster::member(&ctx, c).await,
        ClientCommand::MoveLeader(a) => cluster::move_leader(&ctx, a).await,
        ClientCommand::Snapshot(c) => snapshot::run(&ctx, c).await,
        ClientCommand::Alarm(c) => alarm::alarm(&ctx, c).await,
        ClientCommand::Defrag(a) => alarm::defrag(&ctx, a).await,
    }
}

/// What every command needs: the global flags and ways to connect and time out.
pub(crate) struct Ctx {
    global: ClientGlobal,
}

impl Ctx {
    fn format(&self) -> OutputFormat {
        self.global.write_out
    }

    /// Connects to all endpoints (a balanced client).
    async fn client(&self) -> anyhow::Result<Client> {
        self.client_for(&self.global.endpoints).await
    }

    /// Connects to the given endpoints only (e.g. one, for per-endpoint status).
    async fn client_for(&self, endpoints: &[String]) -> anyhow::Result<Client> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            bail!("no endpoints given");
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.global.dial_timeout)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(6));
        if let Some((name, password)) = self.global.credentials()? {
            options = options.with_user(name, password);
        }
        let connect = async {
            if !self.global.wants_tls(&endpoints) {
                return Client::connect(&endpoints, Some(options)).await;
            }
            if self.global.insecure_skip_tls_verify {
                let channel = self.insecure_channel(&endpoints[0])?;
                return Client::from_channel(etcd_client::Channel::Tonic(channel), Some(options))
                    .await;
            }
            let mut tls = etcd_client::TlsOptions::new();
            if let Some(ca) = &self.global.cacert {
                let pem = std::fs::read(ca)
                    .map_err(|e| etcd_client::Error::IoError(io_context(e, ca)))?;
                tls = tls.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = self.global.identity().map_err(invalid_args)? {
                let cert_pem = std::fs::read(cert)
                    .map_err(|e| etcd_client::Error::IoError(io_context(e, cert)))?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| etcd_client::Error::IoError(io_context(e, key)))?;
                tls = tls.identity(etcd_client::Identity::from_pem(cert_pem, key_pem));
            }
            Client::connect(&endpoints, Some(options.with_tls(tls))).await
        };
        match tokio::time::timeout(self.global.dial_timeout, connect).await {
            Ok(res) => res.map_err(grpc_error),
            Err(_) => Err(anyhow!("context deadline exceeded")),
        }
    }

    /// `--insecure-skip-tls-verify`: tonic's TLS settings cannot turn verification off,
    /// so the channel gets our own rustls connector (to the first endpoint only).
    fn insecure_channel(
        &self,
        endpoint: &str,
    ) -> Result<tonic::transport::Channel, etcd_client::Error> {
        let config = crate::tls::client_config(
            self.global.cacert.as_deref(),
            self.global.identity().map_err(invalid_args)?,
            true,
        )
        .map_err(invalid_args)?;
        let config = std::sync::Arc::new(config);
        let hostport = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let connector = tower::service_fn(move |uri: tonic::codegen::http::Uri| {
            let config = config.clone();
            async move {
                let host = uri.host().unwrap_or("127.0.0.1").to_string();
                let port = uri.port_u16().unwrap_or(2379);
                crate::tls::connect(config, &host, port)
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        });
        Ok(
            tonic::transport::Endpoint::from_shared(format!("http://{hostport}"))
                .map_err(|e| etcd_client::Error::InvalidArgs(e.to_string()))?
                .connect_timeout(self.global.dial_timeout)
                .connect_with_connector_lazy(connector),
        )
    }

    /// Runs one unary request under `--command-timeout`, mapping errors to etcd's wording.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> anyhow::Result<T> {
        with_timeout(self.global.command_timeout, fut).await
    }
}

fn invalid_args(e: anyhow::Error) -> etcd_client::Error {
    etcd_client::Error::InvalidArgs(format!("{e:#}"))
}

fn io_context(e: std::io::Error, path: &std::path::Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

/// Awaits `fut` for at most `limit`; a timeout reads like etcdctl's.
async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(res) => res.map_err(grpc_error),
        Err(_) => Err(anyhow!("context deadline exceeded")),
    }
}

/// Turns an `etcd_client::Error` into the message etcdctl would print: for a gRPC
/// status just its message (`etcdserver: mvcc: required revision has been compacted`).
pub(crate) fn grpc_error(e: etcd_client::Error) -> anyhow::Error {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            if s.message().is_empty() {
                anyhow!("rpc error: code = {:?}", s.code())
            } else {
                anyhow!("{}", s.message())
            }
        }
        other => anyhow!("{other}"),
    }
}

/// Parses a lease ID the way etcdctl prints it: hexadecimal, no `0x` needed.
pub(crate) fn parse_lease_id(s: &str) -> anyhow::Result<i64> {
    let t = s.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(digits, 16)
        .map(|v| v as i64)
        .map_err(|e| anyhow!("bad lease ID arg ({e}: {s:?}), expecting ID in Hex"))
}

/// Formats a lease ID as etcdctl does (lower-case hex of the 64-bit pattern).
pub(crate) fn format_lease_id(id: i64) -> String {
    format!("{:x}", id as u64)
}

/// Parses a Go-style duration: `2s`, `500ms`, `1m30s`, `1h`, `1.5s`, `100us`, `10ns`.
/// A bare number is taken as seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|e| format!("invalid duration {s:?}: {e}"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        if num_len == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

/// Reads all of stdin (used by `put` without a value and by `txn`).
fn read_stdin() -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read stdin")?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct TestCli {
        #[command(flatten)]
        global: ClientGlobal,
        #[command(subcommand)]
        cmd: ClientCommand,
    }

    #[test]
    fn lease_ids_parse_as_hex() {
        assert_eq!(
            parse_lease_id("694d77aa9e38260f").unwrap(),
            0x694d77aa9e38260f
        );
        assert_eq!(parse_lease_id("0x10").unwrap(), 16);
        assert_eq!(parse_lease_id("ffffffffffffffff").unwrap(), -1);
        let err = parse_lease_id("zz").unwrap_err().to_string();
        assert!(err.contains("expecting ID in Hex"), "{err}");
        assert!(parse_lease_id("").is_err());
        assert!(parse_lease_id("1ffffffffffffffff").is_err());
        assert_eq!(format_lease_id(0x694d77aa9e38260f), "694d77aa9e38260f");
        assert_eq!(format_lease_id(-1), "ffffffffffffffff");
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = TestCli::try_parse_from([
            "kvstore",
            "get",
            "foo",
            "--endpoints",
            "a:1,b:2",
            "-w",
            "json",
            "--command-timeout",
            "1s",
        ])
        .unwrap();
        assert_eq!(cli.global.endpoints, vec!["a:1", "b:2"]);
        assert_eq!(cli.global.write_out, OutputFormat::Json);
        assert_eq!(cli.global.command_timeout, Duration::from_secs(1));
        assert_eq!(cli.global.dial_timeout, Duration::from_secs(2));
        assert!(matches!(cli.cmd, ClientCommand::Get(_)));
        assert!(TestCli::try_parse_from(["kvstore", "-w", "yaml", "get", "k"]).is_err());
    }

    #[test]
    fn command_tree_is_consistent() {
        use clap::CommandFactory;
        TestCli::command().debug_assert();
    }
}

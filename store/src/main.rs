//! The `kvstore` binary: `kvstore serve` runs a member; every other subcommand is an
//! etcdctl-style client that talks to any etcd v3 endpoint through `etcd-client`.

use clap::{Parser, Subcommand};

/// mimalloc: the request path (gRPC, Raft messages, MVCC values) allocates many small,
/// short-lived buffers; glibc malloc was the top entry of the put profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "kvstore",
    version,
    about = "An etcd v3 compatible key-value store"
)]
struct Cli {
    #[command(flatten)]
    global: kvstore::cli::ClientGlobal,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a store member (flags as etcd's).
    Serve(Box<kvstore::config::ServeArgs>),
    /// Create a local CA and member/client certificates (PEM files).
    Certs(kvstore::certs::CertsArgs),
    #[command(flatten)]
    Client(kvstore::cli::ClientCommand),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    kvstore::tls::install_crypto_provider();
    if let Command::Certs(args) = &cli.command {
        return match kvstore::certs::run(args) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => kvstore::server::run(*args).await,
            Command::Client(cmd) => kvstore::cli::run(cli.global, cmd).await,
            Command::Certs(_) => Ok(()),
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

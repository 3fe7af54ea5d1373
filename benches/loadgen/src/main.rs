//! `oxy-loadgen`: the load generator of Oxy's benchmarks. `serve` runs the targets
//! (a byte source and an echo server); the other commands drive load through a proxy
//! (CONNECT, or a plain TCP forwarder) and print one JSON object with the result.

mod https;
mod idle;
mod proxy_connect;
mod rate;
mod serve;
mod throughput;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How the load reaches the target.
#[derive(clap::Args, Clone)]
struct Route {
    /// Where to connect: the proxy, a TCP forwarder, or the target itself.
    #[arg(long)]
    to: SocketAddr,
    /// Send `CONNECT <target>` first (an HTTP proxy); without it, `--to` forwards by
    /// itself or is the target.
    #[arg(long)]
    connect: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the targets until killed.
    Serve {
        /// Where the byte source listens (it writes until the peer closes).
        #[arg(long)]
        source: SocketAddr,
        /// Where the echo server listens.
        #[arg(long)]
        echo: SocketAddr,
    },
    /// Bulk download throughput over `tunnels` parallel tunnels to the byte source.
    Throughput {
        #[command(flatten)]
        route: Route,
        /// Parallel tunnels.
        #[arg(long, default_value_t = 1)]
        tunnels: usize,
        /// Seconds measured (after a one-second warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// New tunnels per second: open, one byte echoed, close; `concurrency` at a time.
    Rate {
        #[command(flatten)]
        route: Route,
        /// Tunnels in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds measured.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// HTTPS requests per second over `connections` keep-alive TLS connections (HTTP/1.1
    /// GETs, one at a time per connection), through the route.
    Https {
        #[command(flatten)]
        route: Route,
        /// Server name: SNI, the name the certificate must have, and `Host`.
        #[arg(long)]
        host: String,
        /// Path of every GET.
        #[arg(long, default_value = "/1k")]
        path: String,
        /// PEM CAs the server certificate must chain to.
        #[arg(long)]
        ca: std::path::PathBuf,
        /// Connections at once.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Seconds measured (after a one-second warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Memory per idle tunnel: the resident memory of `pids` before and after opening
    /// `count` tunnels to the echo server (each carries one byte, then idles). Needs an
    /// open-files limit above `count`; benches/run raises it for everything it starts.
    Idle {
        #[command(flatten)]
        route: Route,
        /// Tunnels to open.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// The proxy's processes, comma-separated (all their memory is counted).
        #[arg(long, value_delimiter = ',')]
        pids: Vec<u32>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve { source, echo } => serve::run(source, echo).await,
            Command::Throughput {
                route,
                tunnels,
                seconds,
            } => throughput::run(&route, tunnels, seconds).await,
            Command::Rate {
                route,
                concurrency,
                seconds,
            } => rate::run(&route, concurrency, seconds).await,
            Command::Idle { route, count, pids } => idle::run(&route, count, &pids).await,
            Command::Https {
                route,
                host,
                path,
                ca,
                connections,
                seconds,
            } => {
                let load = https::Load {
                    host: &host,
                    path: &path,
                    ca: &ca,
                    connections,
                    seconds,
                };
                https::run(&route, &load).await
            }
        }
    })?;
    // The result is this tool's output, read by benches/bench.py.
    #[allow(clippy::print_stdout)]
    {
        println!("{result}");
    }
    Ok(())
}

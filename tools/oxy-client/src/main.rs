//! `oxy-client`: tries an Oxy relay from the command line. CONNECT-UDP over HTTP/3,
//! HTTP/2 or HTTP/1.1 (datagrams from stdin, or a generated load with a summary),
//! CONNECT-IP with a TUN device, CONNECT over HTTP/3 (stdin/stdout through the tunnel),
//! and GET over HTTP/3.
// Its results are its standard output.
#![allow(clippy::print_stdout)]

mod capsules;
mod datagrams;
mod ip;
mod quic;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "oxy-client", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// CONNECT-UDP (RFC 9298) to a UDP target through the proxy.
    Udp(UdpArgs),
    /// CONNECT-IP (RFC 9484): a TUN device whose packets go through the proxy, with the
    /// addresses it assigns and the routes it advertises (needs CAP_NET_ADMIN).
    Ip(ip::IpArgs),
    /// CONNECT over HTTP/3: stdin goes to the target, the target's bytes to stdout.
    Connect {
        #[command(flatten)]
        proxy: ProxyArgs,
        /// The TCP target, `host:port`.
        #[arg(long)]
        target: String,
    },
    /// GET a URL over HTTP/3 and print the body (or, with --requests, a summary).
    Get {
        /// `https://host:port/path`.
        url: http::Uri,
        #[command(flatten)]
        trust: quic::Trust,
        /// Send this many requests (several at once) and print a JSON summary.
        #[arg(long)]
        requests: Option<usize>,
        /// Requests in flight at once with --requests or --duration.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Send requests for this many seconds and print a JSON summary; a request the
        /// proxy did not take (after GOAWAY, or on a closed connection) is sent again on
        /// a new connection, and counted apart.
        #[arg(long, conflicts_with = "requests")]
        duration: Option<f64>,
    },
}

/// Where the proxy is and how to trust it.
#[derive(clap::Args, Clone)]
struct ProxyArgs {
    /// The proxy, `https://host:port` (`http://` for HTTP/2 or HTTP/1.1 without TLS).
    #[arg(long)]
    proxy: http::Uri,
    #[command(flatten)]
    trust: quic::Trust,
    /// Sent as `Authorization` (e.g. `Bearer <token>`).
    #[arg(long)]
    authorization: Option<String>,
    /// The local address to connect to the proxy from (`127.0.0.2`).
    #[arg(long)]
    bind: Option<std::net::IpAddr>,
}

/// The HTTP version that carries CONNECT-UDP.
#[derive(ValueEnum, Clone, Copy, PartialEq, Eq)]
enum Carrier {
    /// HTTP/3 with HTTP Datagrams.
    H3,
    /// HTTP/2 extended CONNECT with capsules.
    H2,
    /// HTTP/1.1 Upgrade with capsules.
    H1,
    /// No proxy: plain UDP to the target (the baseline for benchmarks).
    Direct,
}

#[derive(clap::Args)]
struct UdpArgs {
    #[command(flatten)]
    proxy: ProxyArgs,
    /// How to reach the proxy.
    #[arg(long, value_enum, default_value_t = Carrier::H3)]
    over: Carrier,
    /// The UDP target, `host:port` (`[::1]:53` for IPv6).
    #[arg(long)]
    target: String,
    /// The proxy's URI template.
    #[arg(
        long,
        default_value = "/.well-known/masque/udp/{target_host}/{target_port}/"
    )]
    template: String,
    /// Send a generated load of this many datagrams per flow instead of stdin lines, and
    /// print a JSON summary of what came back (the target should echo).
    #[arg(long)]
    count: Option<u64>,
    /// Bytes per generated datagram (at least 8: a sequence number).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Flows at once with --count (one connection).
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// Datagrams in flight per flow with --count (sent, not yet echoed).
    #[arg(long, default_value_t = 32)]
    window: u64,
    /// Seconds to wait for an echo before giving up on it.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// Carry each flow as UDP packets inside a CONNECT-IP stream (scope `*`/17) instead
    /// of CONNECT-UDP; the target must be an address.
    #[arg(long)]
    ip: bool,
    /// Instead of stdin, relay the datagrams of a local UDP socket bound here
    /// (`127.0.0.1:0`): any UDP client (an HTTP/3 client) sends to it and gets the
    /// target's replies. The bound address is printed as `listening on ADDR`.
    #[arg(long, conflicts_with = "count")]
    listen: Option<std::net::SocketAddr>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let result = runtime.block_on(run(cli));
    // A blocking read of stdin may still be waiting; it must not hold up the exit.
    runtime.shutdown_background();
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Udp(args) => datagrams::run(args).await,
        Command::Ip(args) => ip::run(args).await,
        Command::Connect { proxy, target } => quic::connect_tcp(&proxy, &target).await,
        Command::Get {
            url,
            trust,
            concurrency,
            duration: Some(seconds),
            ..
        } => quic::get_for(&url, &trust, seconds, concurrency).await,
        Command::Get {
            url,
            trust,
            requests,
            concurrency,
            duration: None,
        } => quic::get(&url, &trust, requests, concurrency).await,
    }
}

/// `target` written into `template` (RFC 6570 simple expansion: `:` of IPv6 escaped).
fn expand(template: &str, target: &str) -> anyhow::Result<String> {
    let (host, port) = target
        .rsplit_once(':')
        .context("the target needs a port: host:port")?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(template
        .replace("{target_host}", &host.replace(':', "%3A"))
        .replace("{target_port}", port))
}

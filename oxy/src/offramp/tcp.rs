//! The TCP off-ramp: egress hook, policy, DNS and happy eyeballs, from a target to a socket.

use crate::app::OxyExt;
use crate::dns::{DnsError, Family};
use crate::hooks::{EgressContext, Target};
use crate::metrics;
use crate::offramp::happy_eyeballs::{self, HappyEyeballsError};
use crate::offramp::policy::EgressDenied;
use crate::offramp::proxy_header;
use crate::offramp::resolve::AllowedAddresses;
use crate::offramp::route::{EgressRoute, egress_route};
use crate::offramp::upstream_proxy::{self, UpstreamProxyError};
use crate::services::Services;
use std::net::{IpAddr, SocketAddr};
use std::sync::LazyLock;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// Off-ramp metrics.
#[metrics]
pub mod oxy_offramp {
    /// Connections made to targets, by the winning address family (`ipv4`, `ipv6`).
    pub fn connects_total(family: &str) -> Counter;

    /// Failed connections to targets, by reason (`denied`, `dns`, `refused`, `timeout`,
    /// `hook`).
    pub fn connect_failures_total(reason: &str) -> Counter;

    /// Time from the egress decision to a connected socket.
    #[buckets(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)]
    pub fn connect_seconds() -> Histogram;

    /// Destinations refused by the egress policy or hook, by reason.
    pub fn egress_denied_total(reason: &str) -> Counter;
}

/// Why no connection to the target was made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The egress policy refused every address (or the port).
    #[error("egress denied: {0}")]
    Denied(#[from] EgressDenied),
    /// The egress hook refused the target.
    #[error("egress denied by the application: {0}")]
    DeniedByHook(String),
    /// The name did not resolve.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// No attempt succeeded.
    #[error(transparent)]
    Connect(#[from] HappyEyeballsError),
    /// The PROXY header for an internal service could not be made or sent.
    #[error("cannot send the PROXY header: {0}")]
    ProxyHeader(std::io::Error),
    /// The upstream proxy did not open the tunnel.
    #[error(transparent)]
    UpstreamProxy(#[from] UpstreamProxyError),
    /// No target was requested and the egress hook chose none.
    #[error("no target: the endpoint has no tcp.target and the egress hook chose none")]
    NoTarget,
}

impl ConnectError {
    /// A short, stable label for metrics and audit records.
    pub fn as_label(&self) -> &'static str {
        match self {
            ConnectError::Denied(_) | ConnectError::DeniedByHook(_) => "denied",
            ConnectError::Dns(_) => "dns",
            ConnectError::Connect(HappyEyeballsError::TimedOut) => "timeout",
            ConnectError::Connect(_) => "refused",
            ConnectError::NoTarget => "no_target",
            ConnectError::UpstreamProxy(_) => "upstream_proxy",
            ConnectError::ProxyHeader(_) => "proxy_header",
        }
    }
}

/// Runs the egress hook on `cx` and connects to the (possibly rewritten) target; also
/// returns the route it took.
pub async fn connect<App: OxyExt>(
    services: &Services<App>,
    cx: &mut EgressContext<App>,
) -> Result<(TcpStream, SocketAddr, EgressRoute), ConnectError> {
    let route = egress_route(services, cx).await?;
    let (stream, addr) = connect_by(services, &route, cx).await?;
    Ok((stream, addr, route))
}

/// Connects to `cx.target` by `route`, without the egress hook's `on_egress` (its
/// `on_resolved` still runs).
pub async fn connect_by<App: OxyExt>(
    services: &Services<App>,
    route: &EgressRoute,
    cx: &EgressContext<App>,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let Some(target) = &cx.target else {
        oxy_offramp::connect_failures_total("no_target").inc();
        return Err(ConnectError::NoTarget);
    };
    match route {
        EgressRoute::Direct { bind } => connect_target(services, target, *bind, Some(cx)).await,
        EgressRoute::Internal(service) => {
            let (mut stream, addr) = connect_target(services, target, None, Some(cx)).await?;
            let header = proxy_header::stream_header(
                service.version,
                cx.client_addr,
                cx.local_addr,
                &service.tlvs,
            )
            .map_err(ConnectError::ProxyHeader)?;
            stream
                .write_all(&header)
                .await
                .map_err(ConnectError::ProxyHeader)?;
            Ok((stream, addr))
        }
        EgressRoute::Proxy(proxy) => {
            let (stream, addr) = connect_target(services, &proxy.address, None, Some(cx)).await?;
            let timeout = services.happy_eyeballs.connect_timeout;
            match upstream_proxy::connect_via(stream, proxy, target, timeout).await {
                Ok(stream) => Ok((stream, addr)),
                Err(e) => {
                    oxy_offramp::connect_failures_total("upstream_proxy").inc();
                    Err(ConnectError::UpstreamProxy(e))
                }
            }
        }
    }
}

// The series every connection counts in, looked up once (each made when first used).
static CONNECT_SECONDS: LazyLock<prometheus::Histogram> =
    LazyLock::new(oxy_offramp::connect_seconds);
static IPV4_CONNECTS: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| oxy_offramp::connects_total("ipv4"));
static IPV6_CONNECTS: LazyLock<prometheus::IntCounter> =
    LazyLock::new(|| oxy_offramp::connects_total("ipv6"));

/// Connects to `target` through the policy, DNS and happy eyeballs; `hook_cx`, when
/// given, is what the egress hook's `on_resolved` sees.
pub async fn connect_target<App: OxyExt>(
    services: &Services<App>,
    target: &Target,
    bind: Option<IpAddr>,
    hook_cx: Option<&EgressContext<App>>,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    let started = Instant::now();
    let span = crate::telemetry::distributed_tracing::connect_span(target);
    let result =
        tracing::Instrument::instrument(connect_inner(services, target, bind, hook_cx), span).await;
    match &result {
        Ok((_, addr)) => {
            CONNECT_SECONDS.observe(started.elapsed().as_secs_f64());
            let connects = if addr.is_ipv6() {
                &IPV6_CONNECTS
            } else {
                &IPV4_CONNECTS
            };
            connects.inc();
        }
        Err(e) => count_failure(e),
    }
    result
}

/// Counts a failed connection to a target (and the denial, when the policy refused it).
pub(crate) fn count_failure(e: &ConnectError) {
    if let ConnectError::Denied(denied) = e {
        oxy_offramp::egress_denied_total(denied.as_label()).inc();
    }
    oxy_offramp::connect_failures_total(e.as_label()).inc();
}

async fn connect_inner<App: OxyExt>(
    services: &Services<App>,
    target: &Target,
    bind: Option<IpAddr>,
    hook_cx: Option<&EgressContext<App>>,
) -> Result<(TcpStream, SocketAddr), ConnectError> {
    services.policy.check_port(target.port)?;
    let allowed = AllowedAddresses::new(services, target, bind, hook_cx);
    let result = happy_eyeballs::connect(
        &services.happy_eyeballs,
        target.port,
        Box::pin(allowed.family(Family::V6)),
        Box::pin(allowed.family(Family::V4)),
        |addr| open(addr, bind),
    )
    .await;
    match result {
        Ok(connected) => Ok(connected),
        Err(HappyEyeballsError::NoAddress) => Err(allowed.into_error()),
        Err(e) => Err(ConnectError::Connect(e)),
    }
}

/// One connection attempt, from `bind` when given.
async fn open(addr: SocketAddr, bind: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv6() {
        TcpSocket::new_v6()?
    } else {
        TcpSocket::new_v4()?
    };
    if let Some(ip) = bind {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

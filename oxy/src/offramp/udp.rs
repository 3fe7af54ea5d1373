//! The UDP off-ramp: a connected socket towards a target's first allowed address.

use crate::app::OxyExt;
use crate::dns::Family;
use crate::hooks::{EgressContext, Target};
use crate::offramp::resolve::AllowedAddresses;
use crate::offramp::tcp::{ConnectError, count_failure};
use crate::services::Services;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tokio::net::UdpSocket;

/// A UDP socket connected to `target` (IPv6 addresses first), from `bind` when given.
pub async fn connect<App: OxyExt>(
    services: &Services<App>,
    target: &Target,
    bind: Option<IpAddr>,
    hook_cx: Option<&EgressContext<App>>,
) -> Result<(UdpSocket, SocketAddr), ConnectError> {
    let result = connect_inner(services, target, bind, hook_cx).await;
    if let Err(e) = &result {
        count_failure(e);
    }
    result
}

async fn connect_inner<App: OxyExt>(
    services: &Services<App>,
    target: &Target,
    bind: Option<IpAddr>,
    hook_cx: Option<&EgressContext<App>>,
) -> Result<(UdpSocket, SocketAddr), ConnectError> {
    services.policy.check_port(target.port)?;
    let allowed = AllowedAddresses::new(services, target, bind, hook_cx);
    let (v6, v4) = tokio::join!(allowed.family(Family::V6), allowed.family(Family::V4));
    let mut last_error = None;
    for ip in v6.into_iter().chain(v4) {
        let addr = SocketAddr::new(ip, target.port);
        let local = bind.unwrap_or(if ip.is_ipv6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let socket = match UdpSocket::bind(SocketAddr::new(local, 0)).await {
            Ok(socket) => socket,
            Err(e) => {
                last_error = Some((addr, e));
                continue;
            }
        };
        match socket.connect(addr).await {
            Ok(()) => return Ok((socket, addr)),
            Err(e) => last_error = Some((addr, e)),
        }
    }
    match last_error {
        Some((addr, source)) => Err(ConnectError::Connect(
            crate::offramp::happy_eyeballs::HappyEyeballsError::AllFailed { addr, source },
        )),
        None => Err(allowed.into_error()),
    }
}

//! UDP flows: one per client address on a `udp` endpoint. The ingress hook, the egress
//! hook and policy, a connected off-ramp socket and the tunnel hook, then datagrams both
//! ways until the flow is idle, then the tunnel-end hook, metrics and the audit record.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{
    ConnectionEnd, ConnectionSummary, EgressAction, EgressContext, IngressAction,
    IngressConnectionContext, Transport, TunnelAction, TunnelContext, TunnelSummary,
};
use crate::offramp::tcp::{ConnectError, oxy_offramp};
use crate::offramp::udp;
use crate::services::Services;
use crate::telemetry::audit::AuditRecord;
use crate::telemetry::framework_metrics::oxy_connections;
use crate::tunnel::metrics::oxy_tunnel;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Largest datagram read from a target.
const MAX_DATAGRAM: usize = 65_535;

/// UDP flow metrics.
#[crate::metrics]
pub mod oxy_udp {
    /// Datagrams dropped, by endpoint and reason (`queue_full`, `max_connections`,
    /// `refused`, `send_error`).
    pub fn dropped_total(endpoint: &str, reason: &str) -> Counter;
}

/// What a flow needs from its listener.
pub struct FlowStart<App: OxyExt> {
    /// The address datagrams come from and replies go to (a balancer, behind one).
    pub peer: SocketAddr,
    /// The original client a PROXY header named.
    pub original_client: Option<SocketAddr>,
    /// The PROXY header of the flow's first datagram, if any.
    pub proxy: Option<crate::onramp::proxy_protocol::ProxyFacts>,
    /// The listener's local address.
    pub local_addr: SocketAddr,
    /// The listener socket, to answer the client from.
    pub listener: Arc<UdpSocket>,
    /// Datagrams from the client, in order.
    pub from_client: mpsc::Receiver<Bytes>,
    /// The endpoint.
    pub endpoint: Arc<Endpoint<App>>,
    /// Process-unique id of this flow.
    pub id: u64,
}

/// Runs one flow to its end.
pub async fn run<App: OxyExt>(start: FlowStart<App>, services: Arc<Services<App>>, drain: Drain) {
    let FlowStart {
        peer: sender,
        original_client,
        proxy,
        local_addr,
        listener,
        mut from_client,
        endpoint,
        id,
    } = start;
    let name = endpoint.name().to_string();
    oxy_connections::accepted_total(&name).inc();
    let active = oxy_connections::active(&name);
    active.inc();
    let started_at = SystemTime::now();
    let started = Instant::now();
    let idle = endpoint.settings.udp.idle_timeout;
    let mut ingress = IngressConnectionContext {
        id,
        endpoint: endpoint.clone(),
        transport: Transport::Udp,
        peer_addr: sender,
        client_addr: original_client.unwrap_or(sender),
        proxy,
        local_addr,
        accepted_at: std::time::Instant::now(),
        tls: None,
        app: Default::default(),
        slot: None,
    };
    let client = original_client.unwrap_or(sender);
    let audit = |target: String, resolved, counts: Counts, reason: &str| {
        services.audit.write(&AuditRecord {
            endpoint: name.clone(),
            protocol: "udp",
            client: sender,
            original_client,
            target,
            resolved,
            bytes_up: counts.bytes_up,
            bytes_down: counts.bytes_down,
            packets_up: counts.packets_up,
            packets_down: counts.packets_down,
            start: AuditRecord::timestamp(started_at),
            duration_ms: AuditRecord::millis(started.elapsed()),
            close_reason: reason.to_string(),
        });
    };

    let end = 'flow: {
        if let Some(hook) = &services.hooks.ingress
            && let IngressAction::Reject(reason) = hook.on_connection(&mut ingress).await
        {
            oxy_connections::rejected_total(&name, "ingress_hook").inc();
            tracing::info!(%reason, "UDP flow rejected by the ingress hook");
            discard(&mut from_client, idle, &drain, &name).await;
            break 'flow ConnectionEnd::Rejected(reason);
        }

        let mut egress = EgressContext {
            endpoint: endpoint.clone(),
            client_addr: client,
            local_addr,
            transport: Transport::Udp,
            target: endpoint.udp_target.clone(),
        };
        let mut bind = None;
        let mut prefix = None;
        if let Some(hook) = &services.hooks.egress {
            match hook.on_egress(&mut egress).await {
                EgressAction::Allow => {}
                EgressAction::Rewrite(target) => egress.target = Some(target),
                EgressAction::BindTo(ip) => bind = Some(ip),
                EgressAction::InternalService(service) => {
                    match crate::offramp::proxy_header::v2_header(
                        client,
                        local_addr,
                        true,
                        &service.tlvs,
                    ) {
                        Ok(header) => prefix = Some(header),
                        Err(e) => {
                            let e = format!("cannot make the PROXY header: {e}");
                            refuse(&name, &e, "proxy_header");
                            audit(String::new(), None, Counts::default(), &e);
                            discard(&mut from_client, idle, &drain, &name).await;
                            break 'flow ConnectionEnd::Closed;
                        }
                    }
                    egress.target = Some(service.target);
                }
                EgressAction::UpstreamProxy(proxy) => {
                    let e = format!("UDP cannot go through the CONNECT proxy {}", proxy.address);
                    refuse(&name, &e, "upstream_proxy");
                    audit(String::new(), None, Counts::default(), &e);
                    discard(&mut from_client, idle, &drain, &name).await;
                    break 'flow ConnectionEnd::Closed;
                }
                EgressAction::Deny(reason) => {
                    oxy_offramp::egress_denied_total("hook").inc();
                    let e = ConnectError::DeniedByHook(reason);
                    refuse(&name, &e.to_string(), e.reason());
                    audit(String::new(), None, Counts::default(), &e.to_string());
                    discard(&mut from_client, idle, &drain, &name).await;
                    break 'flow ConnectionEnd::Closed;
                }
            }
        }
        let Some(target) = egress.target.clone() else {
            let e = ConnectError::NoTarget;
            refuse(&name, &e.to_string(), e.reason());
            audit(String::new(), None, Counts::default(), &e.to_string());
            discard(&mut from_client, idle, &drain, &name).await;
            break 'flow ConnectionEnd::Closed;
        };
        let (mut upstream, mut peer) =
            match udp::connect(&services, &target, bind, Some(&egress)).await {
                Ok(connected) => connected,
                Err(e) => {
                    refuse(&name, &e.to_string(), e.reason());
                    audit(target.to_string(), None, Counts::default(), &e.to_string());
                    discard(&mut from_client, idle, &drain, &name).await;
                    break 'flow ConnectionEnd::Closed;
                }
            };
        let mut tunnel = TunnelContext {
            endpoint: endpoint.clone(),
            client_addr: client,
            transport: Transport::Udp,
            target,
            peer_addr: peer,
        };
        let mut idle = idle;
        let mut lifetime = endpoint.settings.tunnel.max_lifetime;
        if let Some(hook) = &services.hooks.tunnel {
            let refused = match hook.on_tunnel_start(&mut tunnel).await {
                TunnelAction::Continue => None,
                TunnelAction::SetTimeouts {
                    idle: new_idle,
                    max_lifetime,
                } => {
                    (idle, lifetime) = (new_idle, max_lifetime);
                    None
                }
                TunnelAction::Block(reason) => Some((format!("blocked: {reason}"), "blocked")),
                TunnelAction::Decapsulate => Some((
                    "decapsulation unavailable".to_string(),
                    "decapsulation_unavailable",
                )),
                TunnelAction::Redirect(redirect) => {
                    match udp::connect(&services, &redirect, bind, None).await {
                        Ok((socket, addr)) => {
                            (upstream, peer) = (socket, addr);
                            tunnel.target = redirect;
                            tunnel.peer_addr = peer;
                            None
                        }
                        Err(e) => Some((e.to_string(), e.reason())),
                    }
                }
            };
            if let Some((reason, label)) = refused {
                refuse(&name, &reason, label);
                audit(
                    tunnel.target.to_string(),
                    Some(peer),
                    Counts::default(),
                    &reason,
                );
                discard(&mut from_client, idle, &drain, &name).await;
                break 'flow ConnectionEnd::Closed;
            }
        }

        oxy_tunnel::started_total(&name, "udp").inc();
        let tunnel_active = oxy_tunnel::active(&name, "udp");
        tunnel_active.inc();
        let (counts, reason) = pump(
            &mut from_client,
            &upstream,
            prefix,
            &listener,
            sender,
            idle,
            (lifetime > Duration::ZERO).then_some(lifetime),
            &drain,
            &name,
        )
        .await;
        tunnel_active.dec();
        oxy_tunnel::bytes_total(&name, "up").inc_by(counts.bytes_up);
        oxy_tunnel::bytes_total(&name, "down").inc_by(counts.bytes_down);
        oxy_tunnel::ended_total(&name, reason).inc();
        tracing::info!(
            target = %tunnel.target,
            %peer,
            up = counts.bytes_up,
            down = counts.bytes_down,
            packets_up = counts.packets_up,
            packets_down = counts.packets_down,
            reason,
            "UDP flow closed"
        );
        let summary = TunnelSummary {
            bytes_up: counts.bytes_up,
            bytes_down: counts.bytes_down,
            packets_up: counts.packets_up,
            packets_down: counts.packets_down,
            duration: started.elapsed(),
            close_reason: reason.to_string(),
        };
        if let Some(hook) = &services.hooks.tunnel {
            hook.on_tunnel_end(&mut tunnel, &summary).await;
        }
        audit(tunnel.target.to_string(), Some(peer), counts, reason);
        if reason == "shutdown" {
            ConnectionEnd::Shutdown
        } else {
            ConnectionEnd::Closed
        }
    };

    let summary = ConnectionSummary {
        duration: started.elapsed(),
        end,
    };
    if let Some(hook) = &services.hooks.ingress {
        hook.on_connection_end(&mut ingress, &summary).await;
    }
    oxy_connections::duration_seconds(&name).observe(summary.duration.as_secs_f64());
    active.dec();
}

/// Datagrams and bytes each way.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    bytes_up: u64,
    bytes_down: u64,
    packets_up: u64,
    packets_down: u64,
}

fn refuse(endpoint: &str, reason: &str, label: &'static str) {
    tracing::info!(%reason, "UDP flow refused");
    oxy_tunnel::ended_total(endpoint, label).inc();
}

/// Swallows (and counts) a refused client's datagrams until it goes quiet, so a refused
/// client does not run the hooks again for every datagram.
async fn discard(
    from_client: &mut mpsc::Receiver<Bytes>,
    idle: Duration,
    drain: &Drain,
    endpoint: &str,
) {
    loop {
        tokio::select! {
            datagram = tokio::time::timeout(idle, from_client.recv()) => match datagram {
                Ok(Some(_)) => oxy_udp::dropped_total(endpoint, "refused").inc(),
                _ => return,
            },
            _ = drain.stopping() => return,
        }
    }
}

/// Moves datagrams both ways until the flow is idle, too old, or Oxy stops.
#[allow(clippy::too_many_arguments)]
async fn pump(
    from_client: &mut mpsc::Receiver<Bytes>,
    upstream: &UdpSocket,
    prefix: Option<Vec<u8>>,
    listener: &UdpSocket,
    reply_to: SocketAddr,
    idle: Duration,
    max_lifetime: Option<Duration>,
    drain: &Drain,
    endpoint: &str,
) -> (Counts, &'static str) {
    let mut counts = Counts::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // With a PROXY header, each datagram is sent as header + payload from one buffer.
    let header_len = prefix.as_ref().map_or(0, Vec::len);
    let mut framed = prefix.unwrap_or_default();
    let deadline = max_lifetime.map(|max| Instant::now() + max);
    let mut idle_at = Instant::now() + idle;
    loop {
        tokio::select! {
            datagram = from_client.recv() => {
                let Some(datagram) = datagram else { return (counts, "completed") };
                let sent = if header_len > 0 {
                    framed.truncate(header_len);
                    framed.extend_from_slice(&datagram);
                    upstream.send(&framed).await
                } else {
                    upstream.send(&datagram).await
                };
                match sent {
                    Ok(_) => {
                        counts.packets_up += 1;
                        counts.bytes_up += datagram.len() as u64;
                        idle_at = Instant::now() + idle;
                    }
                    Err(e) => {
                        oxy_udp::dropped_total(endpoint, "send_error").inc();
                        tracing::debug!(error = %e, "datagram to the target not sent");
                    }
                }
            }
            received = upstream.recv(&mut buf) => match received {
                Ok(n) => {
                    match listener.send_to(&buf[..n], reply_to).await {
                        Ok(_) => {
                            counts.packets_down += 1;
                            counts.bytes_down += n as u64;
                            idle_at = Instant::now() + idle;
                        }
                        Err(e) => {
                            oxy_udp::dropped_total(endpoint, "send_error").inc();
                            tracing::debug!(error = %e, "datagram to the client not sent");
                        }
                    }
                }
                // ICMP errors (port unreachable) surface here; the flow goes on.
                Err(e) => tracing::debug!(error = %e, "receive from the target failed"),
            },
            _ = tokio::time::sleep_until(idle_at) => return (counts, "idle_timeout"),
            _ = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => return (counts, "max_lifetime"),
            _ = drain.stopping() => return (counts, "shutdown"),
        }
    }
}

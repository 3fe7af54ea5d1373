//! The TUN on-ramp (`protocol: tun`): packets the kernel routes into the endpoint's TUN
//! device form one packet session. Every new flow runs the IP flow hook, then the
//! user-space off-ramp; replies and ICMP errors are written back to the device.

use crate::app::OxyExt;
use crate::drain::Drain;
use crate::endpoint::Endpoint;
use crate::hooks::{IngressConnectionContext, Transport};
use crate::http::connect_ip::scope::Scope;
use crate::http::pipeline::Handler;
use crate::services::Services;
use crate::tunnel::TunnelClient;
use crate::tunnel::packet::{PacketSession, SessionSetup, ToClient, oxy_ip};
use bytes::Bytes;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tokio::sync::mpsc;
use tun_rs::AsyncDevice;

/// Serves the device until Oxy stops.
pub async fn serve<App: OxyExt>(
    device: Arc<AsyncDevice>,
    endpoint: Arc<Endpoint<App>>,
    services: Arc<Services<App>>,
    drain: Drain,
) {
    let name = endpoint.name().to_string();
    let ip = &endpoint.settings.ip;
    // The device's first address stands for "the client" of the session as a whole;
    // each flow is attributed to its own source address.
    let own = endpoint
        .settings
        .ip
        .tun
        .addresses
        .first()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |net| net.addr());
    let own = SocketAddr::new(own, 0);
    let cx = IngressConnectionContext {
        id: crate::onramp::next_connection_id(),
        endpoint: endpoint.clone(),
        transport: Transport::Tun,
        peer_addr: own,
        client_addr: own,
        proxy: None,
        local_addr: own,
        accepted_at: std::time::Instant::now(),
        tls: None,
        tls_policy: endpoint.settings.tls.policy,
        app: Default::default(),
        hold: None,
    };
    let Some(handler) = Handler::for_connection(&cx, &services, &drain) else {
        return;
    };
    let (to_client, mut packets_out) = ToClient::new(ip.queue, ip.tun.mtu, &name);
    let (to_session, from_device) = mpsc::channel::<Bytes>(ip.queue.max(1));
    let session = PacketSession::new(SessionSetup {
        services,
        endpoint: endpoint.clone(),
        client: TunnelClient {
            connection: cx.connection(),
            peer_addr: own,
            original_client: None,
            local_addr: own,
            proxy_user: None,
        },
        handler,
        sources: None,
        scope: Scope {
            destinations: None,
            protocol: None,
        },
        to_client,
        audit_protocol: "tun",
    });
    let reader_device = device.clone();
    let reader_name = name.clone();
    let reader_drain = drain.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        // A successor reads the device once its predecessor has stopped.
        reader_drain.devices_ours().await;
        loop {
            // Once a successor has the device, its packets are the successor's.
            let received = tokio::select! {
                received = reader_device.recv(&mut buf) => received,
                () = reader_drain.handed_over() => return,
            };
            match received {
                Ok(n) => {
                    if to_session
                        .try_send(Bytes::copy_from_slice(&buf[..n]))
                        .is_err()
                    {
                        oxy_ip::dropped_total(&reader_name, "queue_full").inc();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TUN device stopped reading");
                    return;
                }
            }
        }
    });
    let writer = tokio::spawn(async move {
        while let Some(packet) = packets_out.recv().await {
            if let Err(e) = device.send(&packet).await {
                tracing::debug!(error = %e, "packet not written to the TUN device");
            }
        }
    });
    let reason = session
        .run(from_device, std::future::pending(), name, &drain)
        .await;
    tracing::info!(reason, "TUN endpoint stopped");
    reader.abort();
    writer.abort();
}

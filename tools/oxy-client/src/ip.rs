//! CONNECT-IP (RFC 9484) from the command line: a TUN device with the addresses the
//! proxy assigns and the routes it advertises, its packets carried over HTTP/3 (HTTP
//! Datagrams), HTTP/2 or HTTP/1.1 (DATAGRAM capsules). Needs CAP_NET_ADMIN.
// Its results are its standard output.
#![allow(clippy::print_stdout)]

use crate::{Carrier, ProxyArgs, capsules, quic};
use anyhow::Context;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use oxy::http::capsule::{self, Capsule, CapsuleCodec};
use oxy::http::connect_ip::capsules::{CONNECT_IP_CAPSULES, IpCapsule, IpRange};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, FramedRead};

/// Largest capsule the client accepts.
const MAX_CAPSULE: usize = 1 << 17;

#[derive(clap::Args)]
pub struct IpArgs {
    #[command(flatten)]
    proxy: ProxyArgs,
    /// How to reach the proxy.
    #[arg(long, value_enum, default_value_t = Carrier::H3)]
    over: Carrier,
    /// The TUN device to create.
    #[arg(long)]
    tun: String,
    /// The device's MTU.
    #[arg(long, default_value_t = 1280)]
    mtu: u16,
    /// The `{target}` of the request: `*`, an address, a prefix or a host name.
    #[arg(long, default_value = "*")]
    target: String,
    /// The `{ipproto}` of the request: `*` or a protocol number.
    #[arg(long, default_value = "*")]
    ipproto: String,
    /// The proxy's URI template.
    #[arg(long, default_value = "/.well-known/masque/ip/{target}/{ipproto}/")]
    template: String,
    /// Route only these prefixes through the device, instead of the advertised routes.
    #[arg(long)]
    route: Vec<IpNet>,
}

/// One CONNECT-IP session as channels, whatever carries it.
pub struct IpChannel {
    /// The proxy's status for the request.
    pub status: u16,
    /// Packets towards the proxy.
    pub to_proxy: mpsc::Sender<Bytes>,
    /// Packets from the proxy.
    pub from_proxy: mpsc::Receiver<Bytes>,
    /// Capsules from the proxy (ADDRESS_ASSIGN, ROUTE_ADVERTISEMENT).
    pub control: mpsc::Receiver<IpCapsule>,
    /// The proxy's address, as connected.
    pub proxy: std::net::SocketAddr,
}

/// Brings up the device and carries its packets until the proxy or the device ends.
pub async fn run(args: IpArgs) -> anyhow::Result<()> {
    let path = args
        .template
        .replace(
            "{target}",
            &args.target.replace('/', "%2F").replace(':', "%3A"),
        )
        .replace("{ipproto}", &args.ipproto);
    let (mut channel, session) = match args.over {
        Carrier::H3 => {
            let (channel, session) = quic::ip_session(&args.proxy, &path).await?;
            (channel, Some(session))
        }
        Carrier::H2 | Carrier::H1 => {
            let h2 = args.over == Carrier::H2;
            (capsule_session(&args.proxy, &path, h2).await?, None)
        }
        Carrier::Direct => anyhow::bail!("CONNECT-IP needs a proxy: --over h3, h2 or h1"),
    };
    if channel.status != 200 && channel.status != 101 {
        println!("{}", serde_json::json!({ "status": channel.status }));
        anyhow::bail!("the proxy refused CONNECT-IP ({})", channel.status);
    }
    let (addresses, routes) = assignment(&mut channel.control).await?;
    tokio::spawn(keep_reading(channel.control));
    let routes = if args.route.is_empty() {
        prefixes(&routes, Some(channel.proxy.ip()))
    } else {
        args.route.clone()
    };
    let settings = oxy::settings::TunSettings {
        name: args.tun.clone(),
        addresses: addresses.clone(),
        routes: routes.clone(),
        mtu: args.mtu,
    };
    let device = oxy::tun_device::open(&settings)
        .await
        .with_context(|| format!("cannot create the TUN device {}", args.tun))?;
    let addresses: Vec<String> = addresses.iter().map(ToString::to_string).collect();
    let routes: Vec<String> = routes.iter().map(ToString::to_string).collect();
    println!(
        "{}",
        serde_json::json!({ "status": channel.status, "device": args.tun, "addresses": addresses, "routes": routes })
    );
    let reader = device.clone();
    let to_proxy = channel.to_proxy.clone();
    let upload = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = reader.recv(&mut buf).await {
            if to_proxy
                .send(Bytes::copy_from_slice(&buf[..n]))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    while let Some(packet) = channel.from_proxy.recv().await {
        if let Err(e) = device.send(&packet).await {
            eprintln!("packet not written to {}: {e}", args.tun);
        }
    }
    upload.abort();
    if let Some(session) = session {
        session.close().await;
    }
    eprintln!("the proxy ended the CONNECT-IP stream");
    Ok(())
}

/// A UDP flow to `target` carried as UDP packets in a CONNECT-IP stream (scope `*`, 17)
/// over `over`, from the assigned address of the target's family and `port`; the QUIC
/// session to close at the end, over HTTP/3.
pub async fn udp_flow(
    proxy: &ProxyArgs,
    over: Carrier,
    target: std::net::SocketAddr,
    port: u16,
) -> anyhow::Result<(crate::datagrams::Flow, Option<quic::Session>)> {
    let path = "/.well-known/masque/ip/*/17/";
    let (mut channel, session) = match over {
        Carrier::H3 => {
            let (channel, session) = quic::ip_session(proxy, path).await?;
            (channel, Some(session))
        }
        _ => {
            let flow = capsule_udp_flow(proxy, path, over == Carrier::H2, target, port).await?;
            return Ok((flow, None));
        }
    };
    let (tx, mut payloads) = mpsc::channel::<Bytes>(256);
    let (replies, rx) = mpsc::channel(256);
    let status = channel.status;
    if status == 200 || status == 101 {
        let (addresses, _) = assignment(&mut channel.control).await?;
        tokio::spawn(keep_reading(channel.control));
        let source = addresses
            .iter()
            .map(IpNet::addr)
            .find(|a| a.is_ipv4() == target.is_ipv4())
            .context("the proxy assigned no address of the target's family")?;
        let source = std::net::SocketAddr::new(source, port);
        let to_proxy = channel.to_proxy;
        tokio::spawn(async move {
            while let Some(payload) = payloads.recv().await {
                let Some(packet) = oxy::tunnel::packet::craft::udp(source, target, &payload) else {
                    return;
                };
                if to_proxy.send(packet.into()).await.is_err() {
                    return;
                }
            }
        });
        let mut from_proxy = channel.from_proxy;
        tokio::spawn(async move {
            while let Some(packet) = from_proxy.recv().await {
                if let Some(reply) = udp_reply(&packet, target)
                    && replies.send(reply).await.is_err()
                {
                    return;
                }
            }
        });
    }
    Ok((crate::datagrams::Flow { status, tx, rx }, session))
}

/// [`udp_flow`] over HTTP/2 or HTTP/1.1, with no task between the load and the stream:
/// the writer builds each packet into its capsule, the reader takes the UDP payload out.
async fn capsule_udp_flow(
    proxy: &ProxyArgs,
    path: &str,
    h2: bool,
    target: std::net::SocketAddr,
    port: u16,
) -> anyhow::Result<crate::datagrams::Flow> {
    let (status, upgraded, _) = capsules::open_stream(proxy, path, h2, "connect-ip").await?;
    let (tx, mut payloads) = mpsc::channel::<Bytes>(256);
    let (replies, rx) = mpsc::channel(256);
    let Some(upgraded) = upgraded else {
        return Ok(crate::datagrams::Flow { status, tx, rx });
    };
    let (read, mut write) = tokio::io::split(upgraded);
    let mut capsules = FramedRead::new(read, codec());
    let (mut source, mut routed) = (None, false);
    let assigned = async {
        while source.is_none() || !routed {
            let (kind, payload) = match capsules.next().await {
                Some(Ok(Capsule::Other { kind, payload })) => (kind, payload),
                Some(Ok(Capsule::Datagram(_))) => continue,
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the stream ended before the proxy assigned an address"),
            };
            match IpCapsule::parse(kind, &payload)? {
                IpCapsule::AddressAssign(entries) => {
                    source = entries
                        .iter()
                        .map(|e| e.prefix.addr())
                        .find(|a| a.is_ipv4() == target.is_ipv4());
                }
                IpCapsule::RouteAdvertisement(_) => routed = true,
                IpCapsule::AddressRequest(_) => {}
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), assigned)
        .await
        .context("no ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT within 10 s")??;
    let source = std::net::SocketAddr::new(
        source.context("the proxy assigned no address of the target's family")?,
        port,
    );
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(payload) = payloads.recv().await {
            let mut next = Some(payload);
            while let Some(payload) = next.take() {
                if let Some(packet) = oxy::tunnel::packet::craft::udp(source, target, &payload) {
                    capsule::encode_udp_datagram_capsule(&mut buf, &packet);
                }
                if buf.len() < 64 * 1024 {
                    next = payloads.try_recv().ok();
                }
            }
            if write.write_all(&buf).await.is_err() {
                return;
            }
            buf.clear();
        }
        let _ = write.shutdown().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(capsule)) = capsules.next().await {
            let Capsule::Datagram(datagram) = capsule else {
                continue;
            };
            let Ok(Some(packet)) = capsule::udp_payload(&datagram) else {
                continue;
            };
            if let Some(reply) = udp_reply(&packet, target)
                && replies.send(reply).await.is_err()
            {
                return;
            }
        }
    });
    Ok(crate::datagrams::Flow { status, tx, rx })
}

/// The payload of `packet` when it is a well-formed UDP datagram from `target`.
fn udp_reply(packet: &Bytes, target: std::net::SocketAddr) -> Option<Bytes> {
    let facts = oxy::tunnel::packet::inspect::inspect(packet).ok()?;
    let from = std::net::SocketAddr::new(facts.source, facts.source_port?);
    (facts.protocol == 17 && from == target).then(|| packet.slice(facts.payload))
}

/// Waits for the proxy's ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT.
async fn assignment(
    control: &mut mpsc::Receiver<IpCapsule>,
) -> anyhow::Result<(Vec<IpNet>, Vec<IpRange>)> {
    let (mut addresses, mut routes) = (None, None);
    let wait = async {
        while addresses.is_none() || routes.is_none() {
            match control.recv().await {
                Some(IpCapsule::AddressAssign(entries)) => {
                    addresses = Some(entries.iter().map(|e| e.prefix).collect())
                }
                Some(IpCapsule::RouteAdvertisement(ranges)) => routes = Some(ranges),
                Some(IpCapsule::AddressRequest(_)) => {}
                None => anyhow::bail!("the stream ended before the proxy assigned an address"),
            }
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .context("no ADDRESS_ASSIGN and ROUTE_ADVERTISEMENT within 10 s")??;
    Ok((addresses.unwrap_or_default(), routes.unwrap_or_default()))
}

/// Reads (and logs) the proxy's later capsules, so that they never hold up its packets.
async fn keep_reading(mut control: mpsc::Receiver<IpCapsule>) {
    while let Some(capsule) = control.recv().await {
        eprintln!("the proxy sent {capsule:?}; the device keeps its first assignment");
    }
}

/// The prefixes covering `ranges`, without the proxy's own address.
fn prefixes(ranges: &[IpRange], proxy: Option<IpAddr>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for range in ranges {
        let pieces = match proxy.filter(|p| range.start <= *p && *p <= range.end) {
            Some(p) => vec![(Some(range.start), before(p)), (after(p), Some(range.end))],
            None => vec![(Some(range.start), Some(range.end))],
        };
        for (start, end) in pieces {
            let (Some(start), Some(end)) = (start, end) else {
                continue;
            };
            if start > end {
                continue;
            }
            match (start, end) {
                (IpAddr::V4(s), IpAddr::V4(e)) => {
                    out.extend(Ipv4Subnets::new(s, e, 0).map(IpNet::V4))
                }
                (IpAddr::V6(s), IpAddr::V6(e)) => {
                    out.extend(Ipv6Subnets::new(s, e, 0).map(IpNet::V6))
                }
                _ => {}
            }
        }
    }
    out
}

fn before(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_sub(1).map(|v| IpAddr::V4(v.into())),
        IpAddr::V6(v6) => u128::from(v6).checked_sub(1).map(|v| IpAddr::V6(v.into())),
    }
}

fn after(ip: IpAddr) -> Option<IpAddr> {
    match ip {
        IpAddr::V4(v4) => u32::from(v4).checked_add(1).map(|v| IpAddr::V4(v.into())),
        IpAddr::V6(v6) => u128::from(v6).checked_add(1).map(|v| IpAddr::V6(v.into())),
    }
}

/// A CONNECT-IP session over HTTP/2 or HTTP/1.1: packets as DATAGRAM capsules.
async fn capsule_session(proxy: &ProxyArgs, path: &str, h2: bool) -> anyhow::Result<IpChannel> {
    let (status, upgraded, peer) = capsules::open_stream(proxy, path, h2, "connect-ip").await?;
    let (to_proxy, outgoing) = mpsc::channel::<Bytes>(1024);
    let (incoming, from_proxy) = mpsc::channel(1024);
    let (control_tx, control) = mpsc::channel(16);
    if let Some(upgraded) = upgraded {
        let (read, mut write) = tokio::io::split(upgraded);
        tokio::spawn(async move {
            // Packets that queue up go out in one write (DATAGRAM capsules, context 0).
            oxy::http::capsule_writer::write_capsules(outgoing, &mut write).await;
            let _ = write.shutdown().await;
        });
        tokio::spawn(read_stream(read, incoming, control_tx));
    }
    Ok(IpChannel {
        status,
        to_proxy,
        from_proxy,
        control,
        proxy: peer,
    })
}

/// Splits the capsules of the stream into packets and control capsules.
pub async fn read_stream(
    read: impl AsyncRead + Unpin,
    packets: mpsc::Sender<Bytes>,
    control: mpsc::Sender<IpCapsule>,
) {
    let mut capsules = FramedRead::new(read, codec());
    while let Some(Ok(capsule)) = capsules.next().await {
        if !dispatch(capsule, &packets, &control).await {
            return;
        }
    }
}

/// Decodes the capsules in `buf` (bytes of an HTTP/3 request stream) and dispatches
/// them; `false` once the receivers are gone or a capsule is malformed.
pub async fn dispatch_bytes(
    codec: &mut CapsuleCodec,
    buf: &mut BytesMut,
    packets: &mpsc::Sender<Bytes>,
    control: &mpsc::Sender<IpCapsule>,
) -> bool {
    loop {
        match codec.decode(buf) {
            Ok(Some(capsule)) => {
                if !dispatch(capsule, packets, control).await {
                    return false;
                }
            }
            Ok(None) => return true,
            Err(_) => return false,
        }
    }
}

/// A codec for CONNECT-IP streams.
pub fn codec() -> CapsuleCodec {
    CapsuleCodec::new(MAX_CAPSULE).surfacing(CONNECT_IP_CAPSULES)
}

async fn dispatch(
    capsule: Capsule,
    packets: &mpsc::Sender<Bytes>,
    control: &mpsc::Sender<IpCapsule>,
) -> bool {
    match capsule {
        Capsule::Datagram(datagram) => match capsule::udp_payload(&datagram) {
            Ok(Some(packet)) => packets.send(packet).await.is_ok(),
            _ => true,
        },
        Capsule::Other { kind, payload } => match IpCapsule::parse(kind, &payload) {
            Ok(parsed) => control.send(parsed).await.is_ok(),
            Err(e) => {
                eprintln!("malformed capsule from the proxy: {e}");
                false
            }
        },
    }
}

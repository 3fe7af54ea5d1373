//! CONNECT-UDP and CONNECT-IP over HTTP/2 (extended CONNECT) and HTTP/1.1 (`Upgrade`)
//! with hyper: datagrams and packets travel as DATAGRAM capsules on the stream.

use crate::ProxyArgs;
use crate::datagrams::Flow;
use anyhow::Context;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use oxy::http::capsule::{self, Capsule, CapsuleCodec};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;

/// A stream to the proxy: TCP, with TLS for `https://` proxies.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Opens one CONNECT-UDP flow at `path` over HTTP/2 (`h2`) or HTTP/1.1.
pub async fn udp_flow(proxy: &ProxyArgs, path: &str, h2: bool) -> anyhow::Result<Flow> {
    let (status, upgraded, _) = open_stream(proxy, path, h2, "connect-udp").await?;
    let (tx, to_target) = mpsc::channel::<Bytes>(256);
    let (from_target, rx) = mpsc::channel(256);
    if let Some(upgraded) = upgraded {
        let (read, write) = tokio::io::split(upgraded);
        tokio::spawn(async move {
            let mut write = write;
            oxy::http::capsule_writer::write_capsules(to_target, &mut write).await;
            let _ = write.shutdown().await;
        });
        tokio::spawn(read_capsules(read, from_target));
    }
    Ok(Flow { status, tx, rx })
}

/// The stream a proxy hands over for `protocol` (`connect-udp`, `connect-ip`) at `path`,
/// over HTTP/2 extended CONNECT (`h2`) or an HTTP/1.1 Upgrade: the status, the stream
/// when it is 2xx or 101, and the proxy's address as connected.
pub async fn open_stream(
    proxy: &ProxyArgs,
    path: &str,
    h2: bool,
    protocol: &'static str,
) -> anyhow::Result<(
    u16,
    Option<TokioIo<hyper::upgrade::Upgraded>>,
    std::net::SocketAddr,
)> {
    let authority = proxy
        .proxy
        .authority()
        .context("the proxy URL needs host:port")?
        .clone();
    let tls = proxy.proxy.scheme_str() == Some("https");
    let tcp = connect_from(authority.as_str(), proxy.bind)
        .await
        .with_context(|| format!("cannot connect to {authority}"))?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr()?;
    let io: Box<dyn Io> = if tls {
        let mut connector = boring::ssl::SslConnector::builder(boring::ssl::SslMethod::tls())?;
        if let Some(ca) = &proxy.trust.ca {
            connector.set_ca_file(ca).context("cannot load --ca")?;
        }
        connector.set_alpn_protos(if h2 { b"\x02h2" } else { b"\x08http/1.1" })?;
        let config = connector.build().configure()?;
        let stream = tokio_boring::connect(config, authority.host(), tcp)
            .await
            .map_err(|e| anyhow::anyhow!("TLS with the proxy failed: {e}"))?;
        Box::new(stream)
    } else {
        Box::new(tcp)
    };
    let scheme = if tls { "https" } else { "http" };
    let uri: http::Uri = format!("{scheme}://{authority}{path}").parse()?;
    let mut request = http::Request::builder().header("capsule-protocol", "?1");
    if let Some(value) = &proxy.authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let response = if h2 {
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        tokio::spawn(connection);
        let mut request = request
            .method(http::Method::CONNECT)
            .uri(uri)
            .body(Empty::<Bytes>::new())?;
        request
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static(protocol));
        send_extended_connect(&mut sender, request).await?
    } else {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(connection.with_upgrades());
        let request = request
            .method(http::Method::GET)
            .uri(path)
            .header(http::header::HOST, authority.as_str())
            .header(http::header::CONNECTION, "Upgrade")
            .header(http::header::UPGRADE, protocol)
            .body(Empty::<Bytes>::new())?;
        sender.send_request(request).await?
    };
    let status = response.status().as_u16();
    if status != 200 && status != 101 {
        return Ok((status, None, peer));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .context("the proxy did not hand over the stream")?;
    Ok((status, Some(TokioIo::new(upgraded)), peer))
}

/// Sends an extended CONNECT once the proxy's SETTINGS allow it (they arrive just after
/// the connection preface).
async fn send_extended_connect(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    request: http::Request<Empty<Bytes>>,
) -> anyhow::Result<http::Response<hyper::body::Incoming>> {
    let (parts, body) = request.into_parts();
    for _ in 0..40 {
        let request = http::Request::from_parts(parts.clone(), body);
        match sender.send_request(request).await {
            Ok(response) => return Ok(response),
            Err(e) if e.is_user() => tokio::time::sleep(Duration::from_millis(25)).await,
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the proxy did not enable extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL)")
}

async fn read_capsules(read: impl AsyncRead + Unpin, from_target: mpsc::Sender<Bytes>) {
    let mut capsules = FramedRead::new(read, CapsuleCodec::new(1 << 17));
    while let Some(Ok(Capsule::Datagram(datagram))) = capsules.next().await {
        if let Ok(Some(payload)) = capsule::udp_payload(&datagram)
            && from_target.send(payload).await.is_err()
        {
            return;
        }
    }
}

/// A TCP connection to `authority`, from `bind` when given.
async fn connect_from(
    authority: &str,
    bind: Option<std::net::IpAddr>,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(bind) = bind else {
        return tokio::net::TcpStream::connect(authority).await;
    };
    let addr = tokio::net::lookup_host(authority)
        .await?
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .ok_or_else(|| std::io::Error::other("no proxy address of the bound family"))?;
    let socket = if bind.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(std::net::SocketAddr::new(bind, 0))?;
    socket.connect(addr).await
}

//! HTTP/3 towards the proxy (quinn + h3): CONNECT-UDP with HTTP Datagrams, CONNECT, GET.

use crate::ProxyArgs;
use crate::datagrams::Flow;
use crate::ip::IpChannel;
use anyhow::Context;
use bytes::{Buf, Bytes};
use h3::client::SendRequest;
use oxy::http::capsule;
use oxy::tls::quic_raw_public_key::{self, PinVerifier};
use oxy::tls::raw_public_key::parse_pin;
use rustls::client::AlwaysResolvesClientRawPublicKeys;
use std::collections::HashMap;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

type Requests = SendRequest<h3_quinn::OpenStreams, Bytes>;

/// An open HTTP/3 connection, to be closed before the tool exits.
pub struct Session {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
}

impl Session {
    /// Closes the connection (H3_NO_ERROR) and waits until the proxy has heard it.
    pub async fn close(self) {
        self.connection.close(0x100u32.into(), b"done");
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), self.endpoint.wait_idle())
            .await;
    }
}

/// How the client trusts the server, and the raw public key it presents.
#[derive(clap::Args, Clone)]
pub struct Trust {
    /// PEM CA bundle that verifies the server's certificate (the system's roots are not
    /// used).
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// HTTP/3: expect a raw public key (RFC 7250) with this SHA-256 pin (hex) instead of
    /// a certificate.
    #[arg(long, conflicts_with = "ca")]
    pub server_pin: Option<String>,
    /// HTTP/3: present the raw public key of this PEM private key when the server asks
    /// for a client credential.
    #[arg(long)]
    pub raw_public_key: Option<PathBuf>,
}

/// An HTTP/3 connection to `authority` (`host:port`), trusted as `trust` says.
async fn connect(
    authority: &http::uri::Authority,
    trust: &Trust,
    bind: Option<std::net::IpAddr>,
) -> anyhow::Result<(Session, Requests)> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match (&trust.server_pin, &trust.ca) {
        (Some(pin), _) => {
            let pin = parse_pin(pin).map_err(anyhow::Error::msg)?;
            let verifier = PinVerifier::new(vec![pin], &provider, true);
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
        }
        (None, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            for cert in boring::x509::X509::stack_from_pem(&pem)? {
                roots.add(cert.to_der()?.into())?;
            }
            builder.with_root_certificates(roots)
        }
        (None, None) => anyhow::bail!("--ca or --server-pin is needed for HTTP/3"),
    };
    let mut tls = match &trust.raw_public_key {
        Some(path) => {
            let key =
                quic_raw_public_key::certified_key(path, &provider).map_err(anyhow::Error::msg)?;
            builder.with_client_cert_resolver(Arc::new(AlwaysResolvesClientRawPublicKeys::new(key)))
        }
        None => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.datagram_receive_buffer_size(Some(4 << 20));
    transport.datagram_send_buffer_size(4 << 20);
    // A CONNECT-IP session may be quiet for longer than the proxy's idle timeout.
    transport.keep_alive_interval(Some(std::time::Duration::from_secs(10)));
    config.transport_config(Arc::new(transport));
    let addr = (authority.host(), authority.port_u16().unwrap_or(443))
        .to_socket_addrs()?
        .next()
        .context("the proxy's name has no address")?;
    let any = if addr.is_ipv6() {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    };
    let local = std::net::SocketAddr::new(bind.unwrap_or(any), 0);
    let mut endpoint = quinn::Endpoint::client(local)?;
    endpoint.set_default_client_config(config);
    let connection = endpoint
        .connect(addr, authority.host())?
        .await
        .context("QUIC handshake with the proxy failed")?;
    let (mut driver, requests) = h3::client::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .build(h3_quinn::Connection::new(connection.clone()))
        .await?;
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok((
        Session {
            endpoint,
            connection,
        },
        requests,
    ))
}

fn authority_of(proxy: &ProxyArgs) -> anyhow::Result<http::uri::Authority> {
    proxy
        .proxy
        .authority()
        .cloned()
        .context("the proxy URL needs host:port")
}

/// Opens `flows` CONNECT-UDP flows at `path` on one HTTP/3 connection.
pub async fn udp_flows(
    proxy: &ProxyArgs,
    path: &str,
    flows: usize,
) -> anyhow::Result<(Vec<Flow>, Session)> {
    let authority = authority_of(proxy)?;
    let (session, mut requests) = connect(&authority, &proxy.trust, proxy.bind).await?;
    let connection = session.connection.clone();
    let routes: Arc<Mutex<HashMap<u64, mpsc::Sender<Bytes>>>> = Arc::default();
    let mut opened = Vec::new();
    for _ in 0..flows {
        let request = extended_connect(proxy, &authority, path, h3::ext::Protocol::CONNECT_UDP)?;
        let mut stream = requests.send_request(request).await?;
        let response = stream.recv_response().await?;
        let status = response.status().as_u16();
        let stream_id = stream.id().into_inner();
        let quarter = stream_id / 4;
        let (tx, mut to_target) = mpsc::channel::<Bytes>(256);
        let (from_target, rx) = mpsc::channel(256);
        routes
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(quarter, from_target);
        let quic = connection.clone();
        let (send, mut recv) = stream.split();
        let watched = routes.clone();
        tokio::spawn(async move {
            // The flow ends when the proxy ends the request stream.
            while let Ok(Some(_)) = recv.recv_data().await {}
            if let Ok(mut routes) = watched.lock() {
                routes.remove(&quarter);
            }
        });
        tokio::spawn(async move {
            // The request stream stays open while the flow runs.
            let _send = send;
            while let Some(datagram) = to_target.recv().await {
                let datagram = capsule::h3_udp_datagram(stream_id, &datagram);
                if quic.send_datagram_wait(datagram).await.is_err() {
                    break;
                }
            }
        });
        opened.push(Flow { status, tx, rx });
    }
    tokio::spawn(async move {
        // The connection lives while a request handle does.
        let _requests = requests;
        while let Ok(datagram) = connection.read_datagram().await {
            let Some((quarter, len)) = capsule::get_varint(&datagram) else {
                continue;
            };
            let route = routes.lock().ok().and_then(|r| r.get(&quarter).cloned());
            if let (Some(route), Ok(Some(payload))) =
                (route, capsule::udp_payload(&datagram.slice(len..)))
            {
                let _ = route.try_send(payload);
            }
        }
    });
    Ok((opened, session))
}

/// An extended CONNECT for `protocol` at `path`, with the Capsule Protocol and the
/// proxy's `Authorization`.
fn extended_connect(
    proxy: &ProxyArgs,
    authority: &http::uri::Authority,
    path: &str,
    protocol: h3::ext::Protocol,
) -> anyhow::Result<http::Request<()>> {
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("https://{authority}{path}"))
        .header("capsule-protocol", "?1");
    if let Some(value) = &proxy.authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let mut request = request.body(())?;
    request.extensions_mut().insert(protocol);
    Ok(request)
}

/// A CONNECT-IP session at `path` over HTTP/3: packets as HTTP Datagrams (a DATAGRAM
/// capsule on the stream when one does not fit a QUIC datagram).
pub async fn ip_session(proxy: &ProxyArgs, path: &str) -> anyhow::Result<(IpChannel, Session)> {
    let authority = authority_of(proxy)?;
    let (session, mut requests) = connect(&authority, &proxy.trust, proxy.bind).await?;
    let connection = session.connection.clone();
    let request = extended_connect(proxy, &authority, path, h3::ext::Protocol::CONNECT_IP)?;
    let mut stream = requests.send_request(request).await?;
    let response = stream.recv_response().await?;
    let status = response.status().as_u16();
    let stream_id = stream.id().into_inner();
    let (to_proxy, mut outgoing) = mpsc::channel::<Bytes>(1024);
    let (incoming, from_proxy) = mpsc::channel(1024);
    let (control_tx, control) = mpsc::channel(16);
    let (mut send, mut recv) = stream.split();
    let stream_packets = incoming.clone();
    tokio::spawn(async move {
        let (mut codec, mut buf) = (crate::ip::codec(), bytes::BytesMut::new());
        while let Ok(Some(mut data)) = recv.recv_data().await {
            buf.extend_from_slice(&data.copy_to_bytes(data.remaining()));
            if !crate::ip::dispatch_bytes(&mut codec, &mut buf, &stream_packets, &control_tx).await
            {
                return;
            }
        }
    });
    let quic = connection.clone();
    tokio::spawn(async move {
        while let Some(packet) = outgoing.recv().await {
            let datagram = capsule::h3_udp_datagram(stream_id, &packet);
            match quic.send_datagram_wait(datagram).await {
                Ok(()) => {}
                Err(quinn::SendDatagramError::TooLarge) => {
                    let mut buf = bytes::BytesMut::new();
                    capsule::encode_udp_datagram_capsule(&mut buf, &packet);
                    if send.send_data(buf.freeze()).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    tokio::spawn(async move {
        // The connection lives while a request handle does.
        let _requests = requests;
        let quarter = stream_id / 4;
        while let Ok(datagram) = connection.read_datagram().await {
            let Some((id, len)) = capsule::get_varint(&datagram) else {
                continue;
            };
            if id != quarter {
                continue;
            }
            if let Ok(Some(packet)) = capsule::udp_payload(&datagram.slice(len..))
                && incoming.send(packet).await.is_err()
            {
                return;
            }
        }
    });
    let channel = IpChannel {
        status,
        to_proxy,
        from_proxy,
        control,
        proxy: session.connection.remote_address(),
    };
    Ok((channel, session))
}

/// CONNECT to `target` over HTTP/3; stdin to the target, the target's bytes to stdout.
pub async fn connect_tcp(proxy: &ProxyArgs, target: &str) -> anyhow::Result<()> {
    let authority = authority_of(proxy)?;
    let (session, mut requests) = connect(&authority, &proxy.trust, proxy.bind).await?;
    let mut request = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(target);
    if let Some(value) = &proxy.authorization {
        request = request.header(http::header::AUTHORIZATION, value);
    }
    let mut stream = requests.send_request(request.body(())?).await?;
    let response = stream.recv_response().await?;
    eprintln!("status {}", response.status().as_u16());
    if !response.status().is_success() {
        anyhow::bail!("the proxy refused the tunnel ({})", response.status());
    }
    let (mut send, mut recv) = stream.split();
    let upload = async {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stdin.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            send.send_data(Bytes::copy_from_slice(&buf[..n])).await?;
        }
        send.finish().await?;
        anyhow::Ok(())
    };
    let download = async {
        let mut stdout = tokio::io::stdout();
        while let Some(mut data) = recv.recv_data().await? {
            let bytes = data.copy_to_bytes(data.remaining());
            stdout.write_all(&bytes).await?;
            stdout.flush().await?;
        }
        anyhow::Ok(())
    };
    let (up, down) = tokio::join!(upload, download);
    session.close().await;
    up.and(down)
}

/// GET `url` over HTTP/3: print the body, or with `requests`, run that many (with
/// `concurrency` at once) and print a JSON summary.
pub async fn get(
    url: &http::Uri,
    trust: &Trust,
    requests: Option<usize>,
    concurrency: usize,
) -> anyhow::Result<()> {
    let authority = url.authority().context("the URL needs host:port")?;
    let (session, sender) = connect(authority, trust, None).await?;
    let Some(total) = requests else {
        let fetched = fetch(sender, url).await;
        session.close().await;
        let (head, body) = fetched?;
        eprintln!("status {}", head.status.as_u16());
        for (name, value) in &head.headers {
            eprintln!("< {name}: {}", String::from_utf8_lossy(value.as_bytes()));
        }
        let mut stdout = tokio::io::stdout();
        stdout.write_all(&body).await?;
        stdout.flush().await?;
        return Ok(());
    };
    let started = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (sender, url, next) = (sender.clone(), url.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                match fetch(sender.clone(), &url).await {
                    Ok((head, _)) if head.status == http::StatusCode::OK => ok += 1,
                    _ => failed += 1,
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for worker in workers {
        let (o, f) = worker.await?;
        ok += o;
        failed += f;
    }
    let elapsed = started.elapsed().as_secs_f64();
    session.close().await;
    println!(
        "{}",
        serde_json::json!({ "ok": ok, "failed": failed, "elapsed_s": elapsed, "requests_per_s": ok as f64 / elapsed })
    );
    Ok(())
}

/// GET `url` over HTTP/3 for `seconds` with `concurrency` workers, each on its own
/// connection, and print a JSON summary: requests answered 200 (`ok`), failed, sent
/// again because the proxy did not take them (`not_taken`: after GOAWAY or on a closed
/// connection), connections opened, and the first errors.
pub async fn get_for(
    url: &http::Uri,
    trust: &Trust,
    seconds: f64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let authority = url.authority().context("the URL needs host:port")?.clone();
    let duration = std::time::Duration::try_from_secs_f64(seconds)
        .context("--duration must be a number of seconds, 0 or more")?;
    let deadline = Instant::now() + duration;
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (url, trust, authority, errors) = (
            url.clone(),
            trust.clone(),
            authority.clone(),
            errors.clone(),
        );
        workers.push(tokio::spawn(async move {
            let (mut ok, mut failed, mut not_taken, mut connections) = (0u64, 0u64, 0u64, 0u64);
            let note = |e: String| {
                let mut errors = errors.lock().unwrap_or_else(|p| p.into_inner());
                if errors.len() < 20 {
                    errors.push(e);
                }
            };
            'connections: while Instant::now() < deadline {
                let (session, sender) = match connect(&authority, &trust, None).await {
                    Ok(connected) => connected,
                    Err(e) => {
                        failed += 1;
                        note(format!("connect: {e:#}"));
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                connections += 1;
                while Instant::now() < deadline {
                    match fetch(sender.clone(), &url).await {
                        Ok((head, _)) if head.status == http::StatusCode::OK => ok += 1,
                        Ok((head, _)) => {
                            failed += 1;
                            note(format!("status {}", head.status));
                        }
                        Err(e) if e.downcast_ref::<NotTaken>().is_some() => {
                            not_taken += 1;
                            drop(session);
                            continue 'connections;
                        }
                        Err(e) => {
                            failed += 1;
                            note(format!("{e:#}"));
                        }
                    }
                }
                session.close().await;
            }
            (ok, failed, not_taken, connections)
        }));
    }
    let (mut ok, mut failed, mut not_taken, mut connections) = (0, 0, 0, 0);
    for worker in workers {
        let (o, f, n, c) = worker.await?;
        (ok, failed, not_taken, connections) = (ok + o, failed + f, not_taken + n, connections + c);
    }
    let errors = errors.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "{}",
        serde_json::json!({ "ok": ok, "failed": failed, "not_taken": not_taken, "connections": connections, "errors": errors })
    );
    Ok(())
}

/// A request the proxy never took: opening its stream failed (GOAWAY received, or the
/// connection closed), so it may be sent again elsewhere.
#[derive(Debug)]
struct NotTaken;

impl std::fmt::Display for NotTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request was not taken")
    }
}

async fn fetch(
    mut sender: Requests,
    url: &http::Uri,
) -> anyhow::Result<(http::response::Parts, Vec<u8>)> {
    let request = http::Request::get(url.clone()).body(())?;
    let mut stream = sender
        .send_request(request)
        .await
        .map_err(|e| anyhow::Error::new(e).context(NotTaken))?;
    // A server that answers before reading the request (a 407, a block) may decline the
    // rest of it with STOP_SENDING(H3_NO_ERROR), which fails this finish; the response
    // still comes (RFC 9114 §4.1), and a real failure shows when reading it.
    let _ = stream.finish().await;
    let response = stream.recv_response().await.map_err(|e| {
        // Refused under a GOAWAY (RFC 9114 §5.2: H3_REQUEST_REJECTED), the request was
        // not processed and may be sent elsewhere. So may a GET whose connection the
        // proxy closed gracefully (H3_NO_ERROR) before any response came: clients send an
        // idempotent request again after such a close (RFC 9110 §9.2.2). A draining
        // proxy closes once no request it took is open, so one still waiting then was
        // sent before the client heard its GOAWAY and arrived after the close.
        let rejected = matches!(&e, h3::error::StreamError::RemoteTerminate { code, .. }
            if *code == h3::error::Code::H3_REQUEST_REJECTED);
        let closed_gracefully = matches!(&e, h3::error::StreamError::ConnectionError(
            h3::error::ConnectionError::Remote(_)) if e.is_h3_no_error());
        let error = anyhow::Error::new(e);
        if rejected || closed_gracefully {
            error.context(NotTaken)
        } else {
            error
        }
    })?;
    let mut body = Vec::new();
    while let Some(mut data) = stream.recv_data().await? {
        while data.has_remaining() {
            let chunk = data.chunk();
            body.extend_from_slice(chunk);
            let n = chunk.len();
            data.advance(n);
        }
    }
    Ok((response.into_parts().0, body))
}

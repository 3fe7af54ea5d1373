//! Microbenchmarks of the per-request and per-datagram paths: one HTTP/1.1 request
//! through the pipeline ([`Handler::handle`]: limits, authority, routing, the request
//! hooks of an application without any, the upstream request, the pooled exchange and
//! the response head) to an in-process upstream answering 1 KiB, alone and behind
//! Oxy's HTTP/1.1 server on a kept-alive connection; and the HTTP/3 Datagram path of
//! CONNECT-UDP: the quarter stream ID and context ID prefix of a 1200-byte UDP payload,
//! encoded and decoded, and the routing of a datagram to its flow among 1, 1000 and
//! 10,000 flows. Run with `cargo bench -p oxy --bench pipeline`.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use oxy::drain::Drain;
use oxy::endpoint::Endpoint;
use oxy::hooks::Upstream;
use oxy::http::client::UpstreamClient;
use oxy::http::open_streams::OpenStreams;
use oxy::http::pipeline::Handler;
use oxy::services::Services;
use oxy::settings::{DnsSettings, EgressSettings, EndpointSettings, NoSettings};
use oxy::telemetry::audit::AuditLog;
use oxy::tunnel::stream::TunnelStream;
use std::convert::Infallible;
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::runtime::Runtime;

/// An application without hooks: every request takes the default path.
#[derive(oxy::OxyExt)]
struct Bench;

/// What the mock upstream answers to every request.
static BODY: [u8; 1024] = [b'x'; 1024];

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("no runtime for the benchmark: {e}"))
}

/// An HTTP/1.1 server on a loopback port the system chose, answering [`BODY`] to every
/// request on kept-alive connections.
async fn mock_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("cannot bind the mock upstream: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("the mock upstream has no address: {e}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_: http::Request<Incoming>| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(&BODY))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// The handler of one client connection to a reverse proxy endpoint whose
/// `http.upstream` is `upstream`, built as `tests/upgrade_failed.rs` builds one.
async fn reverse_proxy(upstream: SocketAddr) -> Arc<Handler<Bench>> {
    let egress = EgressSettings {
        allow: vec!["127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!())],
        ..EgressSettings::default()
    };
    let resolver = oxy::dns::DnsResolver::<Bench>::new(&DnsSettings::default(), None)
        .unwrap_or_else(|e| panic!("no DNS resolver for the benchmark: {e}"));
    let services = Arc::new(Services {
        hooks: oxy::Hooks::<Bench>::default(),
        resolver: Arc::new(resolver),
        policy: oxy::offramp::policy::EgressPolicy::new(&egress),
        happy_eyeballs: egress.happy_eyeballs.clone(),
        audit: AuditLog::Disabled,
    });
    let mut settings = EndpointSettings::<NoSettings> {
        name: "bench".into(),
        ..Default::default()
    };
    settings.http.upstream = format!("http://{upstream}");
    let client = UpstreamClient::new(services.clone(), &settings.http.client, "bench")
        .unwrap_or_else(|e| panic!("no upstream client for the benchmark: {e}"));
    let Ok(endpoint) = Endpoint::new(settings, (), None) else {
        panic!("the benchmark's endpoint could not be built");
    };
    let client_addr = SocketAddr::from(([127, 0, 0, 1], 40_000));
    let http_upstream = endpoint.http_upstream.as_ref().map(Upstream::copied);
    Arc::new(Handler {
        services,
        endpoint: Arc::new(endpoint),
        connection: oxy::hooks::Connection {
            id: 1,
            app: Default::default(),
        },
        client_addr,
        peer_addr: client_addr,
        original_client: None,
        local_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
        tls: None,
        drain: Drain::new(),
        client: Arc::new(client),
        hold: None,
        decapsulated: None,
        tunnel_id: None,
        tunnel_user: None,
        streams: OpenStreams::default(),
        http_upstream,
    })
}

/// One origin-form GET through [`Handler::handle`]; its status and body length.
async fn through_pipeline(handler: &Arc<Handler<Bench>>) -> (StatusCode, usize) {
    let request = http::Request::builder()
        .uri("/index.html?q=bench")
        .header(header::HOST, "bench.example")
        .header(header::USER_AGENT, "oxy-bench/1")
        .header(header::ACCEPT, "*/*")
        .body(oxy::http::body::empty())
        .unwrap_or_else(|_| unreachable!());
    let response = Arc::clone(handler).handle(request).await;
    let status = response.status();
    let len = match response.into_body().collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(e) => panic!("the proxied response body failed: {e}"),
    };
    (status, len)
}

/// A kept-alive HTTP/1.1 connection to Oxy's server for `handler`, over an in-memory
/// duplex stream.
async fn connect(handler: &Arc<Handler<Bench>>) -> SendRequest<Empty<Bytes>> {
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let server = Arc::clone(handler);
    let drain = handler.drain.clone();
    tokio::spawn(async move {
        let stream = TunnelStream::Boxed(Box::new(server_io));
        let _ = oxy::http::server::serve_with(server, stream, &drain).await;
    });
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
        .await
        .unwrap_or_else(|e| panic!("no HTTP/1.1 connection to Oxy: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
}

/// One origin-form GET on `sender`'s connection; its status and body length.
async fn through_server(sender: &mut SendRequest<Empty<Bytes>>) -> (StatusCode, usize) {
    if let Err(e) = sender.ready().await {
        panic!("Oxy closed the kept-alive connection: {e}");
    }
    let request = http::Request::builder()
        .uri("/index.html?q=bench")
        .header(header::HOST, "bench.example")
        .header(header::USER_AGENT, "oxy-bench/1")
        .header(header::ACCEPT, "*/*")
        .body(Empty::<Bytes>::new())
        .unwrap_or_else(|_| unreachable!());
    let response = sender
        .send_request(request)
        .await
        .unwrap_or_else(|e| panic!("the request to Oxy failed: {e}"));
    let status = response.status();
    let len = match response.into_body().collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(e) => panic!("the response body from Oxy failed: {e}"),
    };
    (status, len)
}

/// Refuses to measure anything but the proxied 1 KiB answer (a 502 is cheaper).
fn check((status, len): (StatusCode, usize), what: &str) {
    if status != StatusCode::OK || len != BODY.len() {
        panic!(
            "{what}: expected 200 with {} bytes, got {status} with {len}",
            BODY.len()
        );
    }
}

/// One GET reverse-proxied to a loopback upstream answering 1 KiB, measured per request:
/// `pipeline_handle` is [`Handler::handle`] and reading the body (the pipeline, the
/// upstream request, the pooled exchange over loopback TCP, the response head);
/// `server_keepalive` adds Oxy's HTTP/1.1 server (hyper, the request and response on the
/// wire) on a kept-alive in-memory connection, as a client sees it.
fn http1_request(c: &mut Criterion) {
    let runtime = runtime();
    let handler = runtime.block_on(async { reverse_proxy(mock_upstream().await).await });
    check(
        runtime.block_on(through_pipeline(&handler)),
        "the pipeline's answer",
    );
    let mut group = c.benchmark_group("http1_request_1k_upstream");
    group.bench_function("pipeline_handle", |b| {
        b.iter(|| black_box(runtime.block_on(through_pipeline(&handler))))
    });
    // Connected just before it is measured: an idle kept-alive connection is closed
    // after `header_read_timeout`.
    let mut sender = runtime.block_on(connect(&handler));
    check(
        runtime.block_on(through_server(&mut sender)),
        "the server's answer",
    );
    group.bench_function("server_keepalive", |b| {
        b.iter(|| black_box(runtime.block_on(through_server(&mut sender))))
    });
    group.finish();
}

/// The HTTP/3 Datagram of a CONNECT-UDP flow (RFC 9297 §2.1, RFC 9298 §5) around a
/// 1200-byte UDP payload: encoded as `H3DatagramSink` sends it (quarter stream ID,
/// context ID 0, payload), and decoded as `route_datagrams` reads it (h3-datagram takes
/// the quarter stream ID, `udp_payload` the context ID; no copy).
fn h3_datagram_codec(c: &mut Criterion) {
    use h3_datagram::datagram::Datagram;
    use oxy::http::capsule::{h3_udp_datagram, udp_payload};
    let payload = [0x5a_u8; 1200];
    // Stream 4 * 1234: a two-byte quarter stream ID, as on a connection that has
    // carried some requests.
    let stream_id = 4 * 1234;
    let wire = h3_udp_datagram(stream_id, &payload);
    c.bench_function("h3_datagram_encode_1200b", |b| {
        b.iter(|| h3_udp_datagram(black_box(stream_id), black_box(&payload)))
    });
    c.bench_function("h3_datagram_decode_1200b", |b| {
        b.iter(|| {
            let datagram =
                Datagram::decode(black_box(wire.clone())).unwrap_or_else(|_| unreachable!());
            let stream = datagram.stream_id();
            match udp_payload(&datagram.into_payload()) {
                Ok(Some(udp)) => (stream, udp.len()),
                _ => unreachable!(),
            }
        })
    });
}

/// An HTTP/3 Datagram routed to its CONNECT-UDP flow among 1, 1000 and 10,000 flows of
/// one connection: decoded and handed to [`deliver_datagram`] (what `route_datagrams`
/// does with each datagram a connection receives), which looks its flow up in the
/// connection's [`DatagramRoutes`] (filled by [`DatagramRoute::new`], as each flow's
/// request does) and queues it; the flow's queue is emptied in the loop.
///
/// [`deliver_datagram`]: oxy::http::h3_stream::deliver_datagram
/// [`DatagramRoutes`]: oxy::http::h3_stream::DatagramRoutes
/// [`DatagramRoute::new`]: oxy::http::h3_stream::DatagramRoute::new
fn h3_datagram_demux(c: &mut Criterion) {
    use h3::quic::StreamId;
    use h3_datagram::datagram::Datagram;
    use oxy::http::capsule::h3_udp_datagram;
    use oxy::http::h3_stream::{DatagramRoute, DatagramRoutes, deliver_datagram};
    use tokio::sync::mpsc;
    let payload = [0x5a_u8; 1200];
    let mut group = c.benchmark_group("h3_datagram_demux_1200b");
    for flows in [1_u64, 1_000, 10_000] {
        let routes = DatagramRoutes::default();
        let mut kept = Vec::new();
        let mut receivers = Vec::new();
        for i in 0..flows {
            let stream = StreamId::try_from(4 * i).unwrap_or_else(|_| unreachable!());
            let (tx, rx) = mpsc::channel::<Bytes>(16);
            kept.push(DatagramRoute::new(&routes, stream, tx));
            receivers.push(rx);
        }
        let target = flows / 2;
        let wire = h3_udp_datagram(4 * target, &payload);
        let Some(to_flow) = usize::try_from(target)
            .ok()
            .and_then(|i| receivers.get_mut(i))
        else {
            unreachable!()
        };
        group.bench_function(BenchmarkId::from_parameter(flows), |b| {
            b.iter(|| {
                let datagram =
                    Datagram::decode(black_box(wire.clone())).unwrap_or_else(|_| unreachable!());
                if let Err(reason) = deliver_datagram(&routes, datagram) {
                    panic!("the datagram did not reach its flow: {reason}");
                }
                to_flow.try_recv().map(|d| d.len()).ok()
            })
        });
        drop(kept);
    }
    group.finish();
}

criterion_group!(benches, http1_request, h3_datagram_codec, h3_datagram_demux);
criterion_main!(benches);

//! The checks behind oxy's fuzz targets, one `check_*` function per target. Each takes
//! arbitrary bytes and panics only when oxy misbehaves: a panic inside oxy, a hang (a
//! bounded wait that runs out), or a broken invariant (chunking that changes a decoder's
//! output, a parse that does not read back, a request that leaves the server unsettled).
//!
//! The same file is compiled into `oxy/tests/fuzz_properties.rs` (with `#[path]`), so the
//! property tests of `cargo test --workspace` and `cargo fuzz` run one copy of each check.
//! [`seeds`] gives a few valid inputs per target, the start of each corpus.

use bytes::{Bytes, BytesMut};
use oxy::Hooks;
use oxy::drain::Drain;
use oxy::endpoint::Endpoint;
use oxy::hooks::{
    EgressAction, EgressContext, EgressHook, HttpRequestHook, RequestAction, RequestContext,
    Target, parse_numeric_ipv4,
};
use oxy::http::body_tap::{BodyTap, TapVerdict, TappedBody};
use oxy::http::capsule::{
    Capsule, CapsuleCodec, VARINT_MAX, encode_udp_datagram_capsule, get_varint, put_varint,
    udp_payload,
};
use oxy::http::client::UpstreamClient;
use oxy::http::form::{FormField, FormInspector, form_tap};
use oxy::http::open_streams::OpenStreams;
use oxy::http::pipeline::Handler;
use oxy::http::server::serve_with;
use oxy::http::stream_search::StreamSearch;
use oxy::http::uri_template::UriTemplate;
use oxy::onramp::proxy_protocol::{ProxyFacts, ProxyHeaderError, read_header, split_datagram};
use oxy::services::Services;
use oxy::settings::{
    DnsSettings, EgressSettings, EndpointSettings, NoSettings, ProxyProtocolMode,
    ProxyProtocolSettings, ServerSettings, from_yaml_str, to_documented_yaml,
};
use oxy::telemetry::audit::AuditLog;
use oxy::tunnel::stream::TunnelStream;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

/// The fuzz targets, by name (`fuzz/fuzz_targets/<name>.rs`).
pub const TARGETS: [&str; 10] = [
    "capsule_codec",
    "ip_capsules",
    "ip_packet",
    "tls_hello",
    "proxy_protocol_tcp",
    "proxy_protocol_datagram",
    "uri_template",
    "settings_yaml",
    "http1_request_head",
    "body_taps",
];

/// How long an exchange with oxy may take before it counts as a hang.
const HANG: Duration = Duration::from_secs(10);

/// The largest input fed to the socket-based checks.
const MAX_STREAM: usize = 1 << 16;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DEFAULT_TEMPLATE: &str = "/.well-known/masque/udp/{target_host}/{target_port}/";

thread_local! {
    /// One current-thread runtime per thread, reused by every run.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build a tokio runtime: {e}"));
    /// A loopback listener for the PROXY header reader, which reads a `TcpStream`.
    static LISTENER: tokio::net::TcpListener = RUNTIME.with(|rt| {
        let _entered = rt.enter();
        std::net::TcpListener::bind(("127.0.0.1", 0))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .unwrap_or_else(|e| panic!("cannot listen on loopback: {e}"))
    });
    /// The services and endpoint behind the HTTP server check, built once.
    static HTTP: HttpFixture = RUNTIME.with(|rt| rt.block_on(HttpFixture::new()));
}

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// Splits `data` into a chunking plan and the rest: the first byte says how many of the
/// next bytes (0 to 7) are chunk sizes, used in turn; a 0 makes an empty chunk.
fn chunk_plan(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 8).min(rest.len());
    let (sizes, rest) = rest.split_at(count);
    (sizes.iter().map(|&s| usize::from(s)).collect(), rest)
}

/// `body` cut by `sizes` (in turn, round and round); one chunk when no size is positive.
fn split<'a>(sizes: &[usize], body: &'a [u8]) -> Vec<&'a [u8]> {
    if sizes.iter().all(|&s| s == 0) {
        return vec![body];
    }
    let mut chunks = Vec::new();
    let mut rest = body;
    for &size in sizes.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    chunks
}

// ---------------------------------------------------------------------------------------
// capsule_codec

/// What a [`CapsuleCodec`] made of a stream: the DATAGRAM payloads, then how it ended
/// (`Ok` at a clean end of stream, else the error's label).
type Decoded = (Vec<Bytes>, Result<(), &'static str>);

fn decode_all(max: usize, chunks: &[&[u8]]) -> Decoded {
    // The CONNECT-IP capsule types are surfaced as well, under the same limit.
    let mut codec = CapsuleCodec::new(max).surfacing(&[0x01, 0x02, 0x03]);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(Capsule::Datagram(d) | Capsule::Other { payload: d, .. })) => out.push(d),
                Ok(None) => break,
                Err(e) => return (out, Err(e.as_label())),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(Capsule::Datagram(d) | Capsule::Other { payload: d, .. })) => out.push(d),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e.as_label())),
        }
    }
}

/// `CapsuleCodec` on arbitrary bytes: input `[max selector][chunk plan][stream]`. The
/// stream is decoded with a small, a typical and a large limit, whole and in chunks: both
/// must give the same capsules and the same end; every capsule respects the limit,
/// re-encodes to itself, and its UDP payload is the datagram past its context ID.
pub fn check_capsule_codec(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (sizes, stream) = chunk_plan(rest);
    let pieces = split(&sizes, stream);
    for max in [usize::from(selector % 64), 1500, 1 << 20] {
        let whole = decode_all(max, &[stream]);
        let chunked = decode_all(max, &pieces);
        assert_eq!(
            whole, chunked,
            "CapsuleCodec({max}) decoded {stream:02x?} differently in chunks {sizes:?}"
        );
        for datagram in &whole.0 {
            assert!(datagram.len() <= max, "a capsule over the {max}-byte limit");
            let mut codec = CapsuleCodec::new(max);
            let mut wire = BytesMut::new();
            if let Err(e) = codec.encode(Capsule::Datagram(datagram.clone()), &mut wire) {
                panic!("a decoded capsule does not encode: {e}");
            }
            let again = codec.decode(&mut wire).map_err(|e| e.to_string());
            assert_eq!(again, Ok(Some(Capsule::Datagram(datagram.clone()))));
            assert!(wire.is_empty(), "re-encoding left {wire:02x?}");
            check_udp_payload(datagram);
        }
    }
    check_varint(stream);
}

fn check_udp_payload(datagram: &Bytes) {
    match (udp_payload(datagram), get_varint(datagram)) {
        (Err(e), None) => assert_eq!(e.as_label(), "bad_context"),
        (Ok(Some(payload)), Some((0, len))) => {
            assert_eq!(&payload[..], &datagram[len..]);
            let mut wire = BytesMut::new();
            encode_udp_datagram_capsule(&mut wire, &payload);
            let decoded = decode_all(payload.len() + 1, &[&wire]);
            let [inner] = decoded.0.as_slice() else {
                panic!("encode_udp_datagram_capsule did not read back: {decoded:?}");
            };
            let inner = udp_payload(inner).map_err(|e| e.to_string());
            assert_eq!(inner, Ok(Some(payload)));
        }
        (Ok(None), Some((context, _))) => assert_ne!(context, 0),
        (result, varint) => panic!("udp_payload gave {result:?} for context {varint:?}"),
    }
}

fn check_varint(bytes: &[u8]) {
    let Some((value, len)) = get_varint(bytes) else {
        assert!(bytes.is_empty() || bytes.len() < 1 << (bytes[0] >> 6));
        return;
    };
    assert!(value <= VARINT_MAX && [1, 2, 4, 8].contains(&len) && len <= bytes.len());
    let mut shortest = BytesMut::new();
    if let Err(e) = put_varint(&mut shortest, value) {
        panic!("a decoded varint does not encode: {e}");
    }
    assert!(shortest.len() <= len);
    assert_eq!(get_varint(&shortest), Some((value, shortest.len())));
}

// ---------------------------------------------------------------------------------------
// proxy_protocol_datagram and proxy_protocol_tcp

/// The length of the header `stream` starts with, from its own length field (v2) or line
/// end (v1).
fn header_len(stream: &[u8]) -> Option<usize> {
    if stream.starts_with(V2_SIGNATURE) {
        let declared = u16::from_be_bytes([*stream.get(14)?, *stream.get(15)?]);
        return Some(16 + usize::from(declared));
    }
    stream
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|end| end + 2)
}

fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn touch(facts: &ProxyFacts) {
    let _ = (facts.alpn(), facts.authority(), facts.unique_id());
    let _ = (facts.ssl_info(), format!("{facts:?}"));
    if facts.local {
        assert!(facts.source.is_none() && facts.destination.is_none());
    }
}

/// `split_datagram` on an arbitrary datagram: no header unless it starts with the v2
/// signature; a header's length is its declared one, the payload does not change how it
/// reads, and oxy's own v2 writer gives back the same addresses and TLVs.
pub fn check_proxy_protocol_datagram(data: &[u8]) {
    match split_datagram(data) {
        Ok((None, len)) => {
            assert_eq!(len, 0);
            assert!(!data.starts_with(V2_SIGNATURE));
        }
        Ok((Some(facts), len)) => {
            assert!(data.starts_with(V2_SIGNATURE));
            assert_eq!(Some(len), header_len(data));
            assert!(len <= data.len());
            assert_eq!(facts.version, 2);
            touch(&facts);
            let alone = split_datagram(&data[..len]).map_err(|e| e.to_string());
            assert_eq!(alone, Ok((Some(facts.clone()), len)));
            check_v2_rewrite(&facts);
        }
        Err(e) => {
            assert!(data.starts_with(V2_SIGNATURE), "{e} without a v2 signature");
            let _ = (e.as_label(), e.to_string());
        }
    }
}

/// Writes `facts` again with oxy's v2 header writer and reads them back.
fn check_v2_rewrite(facts: &ProxyFacts) {
    let (Some(source), Some(destination)) = (facts.source, facts.destination) else {
        return;
    };
    // A CRC32C TLV would need recomputing; 0x04 (NOOP) padding is fine to keep.
    if facts.tlvs.iter().any(|(kind, _)| *kind == 0x03) {
        return;
    }
    let Ok(header) = oxy::offramp::proxy_header::v2_header(source, destination, true, &facts.tlvs)
    else {
        return;
    };
    match split_datagram(&header) {
        Ok((Some(again), len)) => {
            assert_eq!(len, header.len());
            assert_eq!(
                (again.source, again.destination),
                (Some(source), Some(destination))
            );
            assert_eq!(again.tlvs, facts.tlvs, "TLVs changed when written again");
        }
        other => panic!("oxy's own v2 header does not read back: {other:?}"),
    }
}

/// `read_header` on a loopback TCP connection that carries arbitrary bytes then ends:
/// input `[mode byte][stream]` (bit 0: `required`, else `optional`; bit 1: the peer is not
/// trusted). It must answer well before its timeout, refuse headers from untrusted peers,
/// give back exactly the bytes read past the header, and agree with `split_datagram` on
/// v2 headers.
pub fn check_proxy_protocol_tcp(data: &[u8]) {
    let Some((&mode_byte, stream)) = data.split_first() else {
        return;
    };
    let stream = &stream[..stream.len().min(MAX_STREAM)];
    let required = mode_byte & 1 == 1;
    let trusted = mode_byte & 2 == 0;
    let result = tcp_read_header(stream, required, trusted);
    match result {
        Ok((Some(facts), rest)) => {
            assert!(trusted, "a header was used from an untrusted peer");
            touch(&facts);
            let len = header_len(stream).unwrap_or_else(|| panic!("{facts:?} from no header"));
            assert!(
                stream[len..].starts_with(&rest),
                "the bytes after the header are not what followed it"
            );
            if facts.version == 2 {
                let datagram = split_datagram(stream).map_err(|e| e.to_string());
                assert_eq!(datagram, Ok((Some(facts), len)));
            } else {
                assert_eq!(facts.version, 1);
                assert!(stream.starts_with(b"PROXY ") && len <= 107);
            }
        }
        Ok((None, rest)) => {
            assert!(
                !required,
                "required mode let a connection through without header"
            );
            assert!(stream.starts_with(&rest));
            assert!(
                stream.is_empty()
                    || !(starts_like(stream, V2_SIGNATURE) || starts_like(stream, b"PROXY ")),
                "a header-like start was passed through as data"
            );
        }
        Err(ProxyHeaderError::Timeout) => {
            panic!("read_header hung on {stream:02x?} (required: {required})")
        }
        Err(ProxyHeaderError::Untrusted(_)) => assert!(!trusted),
        Err(ProxyHeaderError::Missing) => assert!(required),
        Err(e) => {
            let _ = (e.as_label(), e.to_string());
        }
    }
}

/// What `read_header` makes of a loopback TCP connection that carries `stream` then
/// ends, in `required` or `optional` mode, from a `trusted` peer or not.
pub fn tcp_read_header(
    stream: &[u8],
    required: bool,
    trusted: bool,
) -> Result<(Option<ProxyFacts>, Bytes), ProxyHeaderError> {
    let settings = ProxyProtocolSettings {
        mode: if required {
            ProxyProtocolMode::Required
        } else {
            ProxyProtocolMode::Optional
        },
        trusted: if trusted {
            "127.0.0.0/8".parse::<ipnet::IpNet>().into_iter().collect()
        } else {
            Vec::new()
        },
        header_timeout: HANG,
        udp: Default::default(),
    };
    block_on(async {
        let listener = LISTENER.with(|l| l.local_addr());
        let addr = listener.unwrap_or_else(|e| panic!("listener address: {e}"));
        let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), accept());
        let mut client = client.unwrap_or_else(|e| panic!("loopback connect: {e}"));
        let (mut server, peer) = accepted;
        // Everything is sent, then the end of the stream: the reader never waits on us.
        if let Err(e) = client.write_all(stream).await {
            panic!("loopback write: {e}");
        }
        let _ = client.shutdown().await;
        let result = read_header(&mut server, peer, &settings).await;
        // An abortive close leaves no TIME_WAIT behind, so runs do not use up ports.
        let _ = socket2::SockRef::from(&server).set_linger(Some(Duration::ZERO));
        drop(server);
        drop(client);
        result
    })
}

async fn accept() -> (tokio::net::TcpStream, SocketAddr) {
    let accepted = std::future::poll_fn(|cx| LISTENER.with(|l| l.poll_accept(cx))).await;
    accepted.unwrap_or_else(|e| panic!("loopback accept: {e}"))
}

// ---------------------------------------------------------------------------------------
// uri_template

/// Parses `[template]\n[path]` (lossy UTF-8) as a CONNECT-UDP URI template and matches the
/// path against it and the default template. A valid template has each expression once;
/// a target it matches prints and parses back; a path made from a valid template with a
/// known target (where the target does not blur into the next literal) yields that target.
pub fn check_uri_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (template_text, path) = text.split_once('\n').unwrap_or((&text, "/"));
    let default: UriTemplate = DEFAULT_TEMPLATE
        .parse()
        .unwrap_or_else(|e| panic!("the default template does not parse: {e}"));
    check_target(&default, path);
    let template = match template_text.parse::<UriTemplate>() {
        Ok(template) => template,
        Err(e) => {
            assert!(!e.is_empty());
            return;
        }
    };
    assert!(template_text.starts_with('/'));
    assert_eq!(template_text.matches("{target_host}").count(), 1);
    assert_eq!(template_text.matches("{target_port}").count(), 1);
    check_target(&template, path);

    let hosts = [
        ("example.com", "example.com"),
        ("192.0.2.6", "192.0.2.6"),
        ("2001%3Adb8%3A%3A1", "[2001:db8::1]"),
        ("[2001:db8::2]", "[2001:db8::2]"),
        ("a-b.test", "a-b.test"),
    ];
    let (host, expected_host) = hosts[data.len() % hosts.len()];
    let port = 1 + data.iter().map(|&b| u32::from(b)).sum::<u32>() % 65535;
    let port = port.to_string();
    let unambiguous = [("{target_host}", host), ("{target_port}", port.as_str())]
        .iter()
        .all(|(expression, value)| {
            let Some((_, after)) = template_text.split_once(expression) else {
                return false;
            };
            let next = after.split('{').next().unwrap_or_default();
            next.is_empty() || format!("{value}{next}").find(next) == Some(value.len())
        });
    if unambiguous {
        let path = template_text
            .replace("{target_host}", host)
            .replace("{target_port}", &port);
        let expected: Result<Target, _> = format!("{expected_host}:{port}").parse();
        let expected = expected.unwrap_or_else(|e| panic!("{expected_host}:{port}: {e}"));
        assert_eq!(
            template.target(&path).map_err(|e| e.to_string()),
            Ok(expected),
            "{template_text:?} did not match its own path {path:?}"
        );
    }
}

fn check_target(template: &UriTemplate, path: &str) {
    match template.target(path) {
        Ok(target) => {
            assert_ne!(target.port, 0);
            let printed = target.to_string();
            let again = printed.parse::<Target>().map_err(|e| e.to_string());
            assert_eq!(again, Ok(target), "target {printed:?} does not parse back");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

// ---------------------------------------------------------------------------------------
// settings_yaml

type FuzzSettings = ServerSettings<NoSettings, NoSettings>;

/// `from_yaml_str` on arbitrary UTF-8. Settings it accepts are written out again with
/// `to_documented_yaml` (what `--generate-config` writes), which must load to the same
/// settings.
pub fn check_settings_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match from_yaml_str::<NoSettings, NoSettings>(text, "fuzz.yaml") {
        Ok(settings) => {
            let yaml = documented(&settings);
            let again: FuzzSettings = from_yaml_str(&yaml, "regenerated.yaml")
                .unwrap_or_else(|e| panic!("regenerated settings do not load: {e}\n{yaml}"));
            assert_eq!(
                documented(&again),
                yaml,
                "settings changed when written again"
            );
        }
        Err(errors) => {
            assert!(!errors.errors.is_empty());
            let _ = errors.to_string();
        }
    }
}

fn documented(settings: &FuzzSettings) -> String {
    to_documented_yaml(settings).unwrap_or_else(|e| panic!("settings do not serialize: {e}"))
}

// ---------------------------------------------------------------------------------------
// http1_request_head

/// An application with no settings and no state.
#[derive(oxy::OxyExt)]
pub struct FuzzApp;

/// Checks what `authority::settle` promises before any hook sees a request.
struct SettledAuthority;

#[async_trait::async_trait]
impl HttpRequestHook<FuzzApp> for SettledAuthority {
    async fn on_request(
        &self,
        request: &mut http::request::Parts,
        _cx: &mut RequestContext<FuzzApp>,
    ) -> RequestAction {
        check_settled(request);
        RequestAction::Continue
    }
}

/// Nothing leaves the process: every forward, CONNECT and CONNECT-UDP ends at this hook.
struct DenyEgress;

#[async_trait::async_trait]
impl EgressHook<FuzzApp> for DenyEgress {
    async fn on_egress(&self, _cx: &mut EgressContext<FuzzApp>) -> EgressAction {
        EgressAction::Deny("fuzzing".into())
    }
}

/// One `Host` at most; the request target's authority is `Host` (except for HTTP/1.1
/// CONNECT); its port is 1-65535 and a numeric IPv4 host is in dotted form.
fn check_settled(parts: &http::request::Parts) {
    let hosts: Vec<_> = parts.headers.get_all(http::header::HOST).iter().collect();
    assert!(
        hosts.len() <= 1,
        "{} Host headers after settle",
        hosts.len()
    );
    let authority = match parts.uri.authority() {
        Some(authority) => {
            if parts.method != http::Method::CONNECT || parts.version >= http::Version::HTTP_2 {
                assert_eq!(
                    hosts.first().map(|h| h.as_bytes()),
                    Some(authority.as_str().as_bytes()),
                    "Host is not the authority of {}",
                    parts.uri
                );
            }
            authority.as_str().to_string()
        }
        None => match hosts.first() {
            Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
            None => return,
        },
    };
    let parsed = http::uri::Authority::try_from(authority.as_str())
        .unwrap_or_else(|e| panic!("settled authority {authority:?} does not parse: {e}"));
    let after_userinfo = authority.rsplit_once('@').map_or(&*authority, |(_, r)| r);
    let after_host = after_userinfo
        .rfind(']')
        .map_or(after_userinfo, |end| &after_userinfo[end + 1..]);
    if let Some((_, port)) = after_host.rsplit_once(':')
        && !port.is_empty()
    {
        assert!(
            port.parse::<u16>().is_ok_and(|p| p != 0),
            "settled authority {authority:?} has port {port:?}"
        );
    }
    let host = parsed.host();
    if !host.starts_with('[') {
        match parse_numeric_ipv4(host) {
            None => {}
            Some(Ok(ip)) => assert_eq!(host, ip.to_string(), "numeric host not in dotted form"),
            Some(Err(e)) => panic!("settled host {host:?}: {e}"),
        }
    }
}

/// The services, endpoint and upstream client every connection's handler shares.
struct HttpFixture {
    services: Arc<Services<FuzzApp>>,
    endpoint: Arc<Endpoint<FuzzApp>>,
    client: Arc<UpstreamClient<FuzzApp>>,
}

impl HttpFixture {
    async fn new() -> Self {
        let hooks = Hooks::<FuzzApp> {
            http_request: Some(Arc::new(SettledAuthority)),
            egress: Some(Arc::new(DenyEgress)),
            ..Hooks::default()
        };
        let resolver = oxy::dns::DnsResolver::new(&DnsSettings::default(), None)
            .unwrap_or_else(|e| panic!("{e}"));
        let egress = EgressSettings::default();
        let services = Arc::new(Services {
            hooks,
            resolver: Arc::new(resolver),
            policy: oxy::offramp::policy::EgressPolicy::new(&egress),
            happy_eyeballs: egress.happy_eyeballs.clone(),
            audit: AuditLog::Disabled,
        });
        let mut settings = EndpointSettings::<NoSettings>::default();
        settings.http.forward_proxy = true;
        settings.http.connect = true;
        settings.http.connect_udp.enabled = true;
        let client = UpstreamClient::new(services.clone(), &settings.http.client, "fuzz")
            .unwrap_or_else(|e| panic!("upstream client: {e}"));
        let endpoint = Endpoint::new(settings, (), None).unwrap_or_else(|e| panic!("{e}"));
        Self {
            services,
            endpoint: Arc::new(endpoint),
            client: Arc::new(client),
        }
    }

    /// A handler for one connection, as `Handler::for_connection` makes it.
    fn handler(&self, drain: &Drain) -> Arc<Handler<FuzzApp>> {
        Arc::new(Handler {
            services: self.services.clone(),
            endpoint: self.endpoint.clone(),
            connection: oxy::hooks::Connection {
                id: 1,
                app: Default::default(),
            },
            client_addr: SocketAddr::from(([192, 0, 2, 1], 40000)),
            peer_addr: SocketAddr::from(([192, 0, 2, 1], 40000)),
            original_client: None,
            local_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            drain: drain.clone(),
            client: self.client.clone(),
            hold: None,
            decapsulated: None,
            tunnel_id: None,
            tunnel_user: None,
            streams: OpenStreams::default(),
            http_upstream: None,
        })
    }
}

/// Sends arbitrary bytes, then the end of the stream, to oxy's HTTP server
/// (`http::server::serve_with`, the whole pipeline behind it, egress denied) over an
/// in-memory stream. The connection must end within [`HANG`]; a request that reaches the
/// hooks is settled; an HTTP/1 answer is an HTTP/1 status line.
pub fn check_http1_request_head(data: &[u8]) {
    let data = &data[..data.len().min(MAX_STREAM)];
    let answer = http_exchange(data);
    if !data.starts_with(H2_PREFACE) {
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1."),
            "an HTTP/1 connection was answered {:?}",
            String::from_utf8_lossy(&answer)
        );
    }
}

/// What oxy's HTTP server answers to `data` followed by the end of the stream; panics
/// if the connection is still open after [`HANG`].
pub fn http_exchange(data: &[u8]) -> Vec<u8> {
    let drain = Drain::new();
    let handler = HTTP.with(|fixture| fixture.handler(&drain));
    let exchange = async {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (mut from_server, mut to_server) = tokio::io::split(client);
        let serving = serve_with(handler, TunnelStream::Boxed(Box::new(server)), &drain);
        let sending = async {
            let _ = to_server.write_all(data).await;
            let _ = to_server.shutdown().await;
        };
        let receiving = async {
            let mut answer = Vec::new();
            let _ = from_server.read_to_end(&mut answer).await;
            answer
        };
        let (_, (), answer) = tokio::join!(serving, sending, receiving);
        answer
    };
    block_on(async { tokio::time::timeout(HANG, exchange).await }).unwrap_or_else(|_| {
        panic!(
            "the HTTP server hung on {:?}",
            String::from_utf8_lossy(data)
        )
    })
}

// ---------------------------------------------------------------------------------------
// body_taps

/// What an inspector saw: each field with its value's chunks joined.
type Seen = Arc<Mutex<Vec<(FormField, Vec<u8>)>>>;

struct Recorder(Seen);

impl FormInspector for Recorder {
    fn on_field(&mut self, field: &FormField) -> TapVerdict {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.push((field.clone(), Vec::new()));
        TapVerdict::Continue
    }

    fn on_field_chunk(&mut self, field: &FormField, chunk: &[u8]) -> TapVerdict {
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match seen.last_mut() {
            Some((last, value)) if last == field => value.extend_from_slice(chunk),
            _ => panic!("a chunk of {field:?} came before the field"),
        }
        TapVerdict::Continue
    }
}

/// Runs a form tap over `chunks`: whether it blocked, and what the inspector saw.
async fn run_tap(content_type: &str, chunks: &[&[u8]]) -> (bool, Vec<(FormField, Vec<u8>)>) {
    let seen = Seen::default();
    let Some(mut tap) = form_tap(content_type, Box::new(Recorder(seen.clone()))) else {
        panic!("{content_type} has no form tap");
    };
    let mut blocked = false;
    for chunk in chunks {
        if let TapVerdict::Block(_) = tap.on_chunk(&Bytes::copy_from_slice(chunk)).await {
            blocked = true;
            break;
        }
    }
    if !blocked {
        blocked = matches!(tap.on_end().await, TapVerdict::Block(_));
    }
    drop(tap);
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
    (blocked, seen)
}

/// Form taps and `StreamSearch` over a body cut in arbitrary chunks: input
/// `[chunk plan][needle length][needle][body]`. A urlencoded tap sees exactly the pairs
/// `form_urlencoded` reads from the whole body; a multipart tap (boundary `X`) decides the
/// same, and sees the same fields, whole or in chunks; `StreamSearch` reports the needle
/// in exactly the chunks where an occurrence ends (counting from after the last find).
pub fn check_body_taps(data: &[u8]) {
    let (sizes, rest) = chunk_plan(data);
    let (needle, body) = match rest.split_first() {
        Some((&n, rest)) => rest.split_at(usize::from(n % 8).min(rest.len())),
        None => (rest, rest),
    };
    let pieces = split(&sizes, body);
    check_stream_search(needle, &pieces);
    check_tapped_body(needle, &pieces, body);

    let expected: Vec<(String, Vec<u8>)> = form_urlencoded::parse(body)
        .map(|(name, value)| (name.into_owned(), value.into_owned().into_bytes()))
        .collect();
    let (urlencoded_whole, urlencoded, multipart_whole, multipart_chunked) = block_on(async {
        tokio::time::timeout(HANG, async {
            let form = "application/x-www-form-urlencoded";
            let urlencoded_whole = run_tap(form, &[body]).await;
            let urlencoded = run_tap(form, &pieces).await;
            let multipart = "multipart/form-data; boundary=X";
            let whole = run_tap(multipart, &[body]).await;
            let chunked = run_tap(multipart, &pieces).await;
            (urlencoded_whole, urlencoded, whole, chunked)
        })
        .await
        .unwrap_or_else(|_| panic!("a form tap hung on {body:02x?} in chunks {sizes:?}"))
    });
    assert_eq!(
        urlencoded_whole, urlencoded,
        "chunks {sizes:?} changed what the urlencoded tap saw"
    );
    let (blocked, seen) = urlencoded;
    assert!(!blocked, "a short urlencoded body was blocked");
    // Exactly what `form_urlencoded` decodes, invalid UTF-8 replaced alike in every pair.
    let seen: Vec<(String, Vec<u8>)> = seen.into_iter().map(|(f, v)| (f.name, v)).collect();
    assert_eq!(seen, expected, "the urlencoded tap saw other fields");
    assert_eq!(
        multipart_whole.0, multipart_chunked.0,
        "chunks {sizes:?} changed whether a multipart body is malformed"
    );
    if !multipart_whole.0 {
        assert_eq!(
            multipart_whole.1, multipart_chunked.1,
            "chunks {sizes:?} changed the multipart fields"
        );
    }
}

/// Blocks at a needle, split over chunks or not (without one: at the end), keeping
/// `window` bytes back (without one: the chunk just judged, the default).
struct SearchTap {
    search: Option<StreamSearch>,
    window: Option<usize>,
}

#[async_trait::async_trait]
impl BodyTap for SearchTap {
    async fn on_chunk(&mut self, chunk: &Bytes) -> TapVerdict {
        let found = self.search.as_mut().is_some_and(|s| s.found_in(chunk));
        if found {
            TapVerdict::Block("needle".into())
        } else {
            TapVerdict::Continue
        }
    }

    async fn on_end(&mut self) -> TapVerdict {
        match self.search {
            Some(_) => TapVerdict::Continue,
            None => TapVerdict::Block("end".into()),
        }
    }

    fn undecided_tail(&self) -> Option<usize> {
        self.window
    }
}

/// How a tapped body's run ended.
#[derive(Debug, PartialEq)]
enum Ending {
    Whole,
    Blocked,
    /// Nothing more to give without waiting.
    Stalled,
}

/// `pieces` through a `TappedBody` with `tap` (then, with `stalls`, a body that never
/// ends), polled without ever waiting: the bytes that came out, and how it ended.
fn run_tapped(
    pieces: &[&[u8]],
    tap: SearchTap,
    declared: Option<u64>,
    stalls: bool,
) -> (Vec<u8>, Ending) {
    use futures_util::{FutureExt, StreamExt};
    use http_body_util::{BodyExt, StreamBody};
    let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = pieces
        .iter()
        .map(|p| Ok(http_body::Frame::data(Bytes::copy_from_slice(p))))
        .collect();
    let frames = futures_util::stream::iter(frames);
    let inner = if stalls {
        oxy::http::body::boxed(StreamBody::new(
            frames.chain(futures_util::stream::pending()),
        ))
    } else {
        oxy::http::body::boxed(StreamBody::new(frames))
    };
    let mut tapped = TappedBody::new(inner, Box::new(tap), declared);
    let mut out = Vec::new();
    loop {
        match tapped.frame().now_or_never() {
            None => return (out, Ending::Stalled),
            Some(None) => return (out, Ending::Whole),
            Some(Some(Err(_))) => return (out, Ending::Blocked),
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// A `TappedBody` over `pieces` of `body`, with and without its length declared, the
/// tap keeping back its search window or (by default) the chunk just judged. A tap
/// searching for `needle` passes a clean body whole and never stalls a body that does
/// not; a body with the needle ends blocked, and what came out before is exactly what
/// the tap no longer kept (with its window, short of the needle's first occurrence).
/// A tap that blocks at the end lets out less than a declared length. A clean body
/// that stalls after its last piece has come out but for what the tap keeps back.
fn check_tapped_body(needle: &[u8], pieces: &[&[u8]], body: &[u8]) {
    let first = (!needle.is_empty())
        .then(|| body.windows(needle.len()).position(|w| w == needle))
        .flatten();
    let window = needle.len().saturating_sub(1);
    let search = |window| SearchTap {
        search: (!needle.is_empty()).then(|| StreamSearch::new(needle)),
        window,
    };
    let length = u64::try_from(body.len()).unwrap_or(u64::MAX);
    for declared in [None, Some(length)] {
        for tap_window in [Some(window), None] {
            let (out, ending) = run_tapped(pieces, search(tap_window), declared, false);
            assert!(
                body.starts_with(&out),
                "{out:02x?} is not a prefix of {body:02x?}"
            );
            match first {
                // An empty needle is found in every chunk.
                _ if needle.is_empty() => {}
                Some(at) => {
                    assert_eq!(ending, Ending::Blocked, "{needle:02x?} in {pieces:02x?}");
                    // The piece where the needle ends blocks: what went out before is
                    // all that was judged but the window, or (by default) the piece
                    // before it.
                    let starts: Vec<usize> = pieces
                        .iter()
                        .scan(0, |start, p| {
                            Some(std::mem::replace(start, *start + p.len()))
                        })
                        .collect();
                    let ends_in = at + needle.len() - 1;
                    let k = (0..pieces.len())
                        .find(|&k| starts[k] <= ends_in && ends_in < starts[k] + pieces[k].len())
                        .unwrap_or_else(|| {
                            panic!("no piece of {pieces:02x?} holds byte {ends_in}")
                        });
                    let expected = match tap_window {
                        Some(window) => starts[k].saturating_sub(window),
                        None => k.checked_sub(1).map_or(0, |before| starts[before]),
                    };
                    assert_eq!(out.len(), expected, "{pieces:02x?}, keeping {tap_window:?}");
                    if tap_window.is_some() {
                        assert!(out.len() <= at, "{out:02x?} reached into {needle:02x?}");
                    }
                }
                None => assert_eq!((&out[..], ending), (body, Ending::Whole), "{pieces:02x?}"),
            }
        }
        let at_end = SearchTap {
            search: None,
            window: Some(0),
        };
        let (out, ending) = run_tapped(pieces, at_end, declared, false);
        assert_eq!(
            ending,
            Ending::Blocked,
            "the block at the end of {pieces:02x?}"
        );
        if declared.is_none() {
            assert_eq!(out, body, "nothing undecided, all went out before the end");
        } else if !body.is_empty() {
            assert!(
                out.len() < body.len(),
                "all {length} declared bytes went out"
            );
        }
    }
    if needle.is_empty() || first.is_some() {
        return;
    }
    let last = pieces.last().map_or(0, |p| p.len());
    for (tap_window, kept) in [(Some(window), window.min(body.len())), (None, last)] {
        let (out, ending) = run_tapped(pieces, search(tap_window), None, true);
        assert_eq!(ending, Ending::Stalled);
        assert_eq!(
            out,
            &body[..body.len() - kept],
            "stalled after {pieces:02x?}, keeping {tap_window:?}"
        );
    }
}

fn check_stream_search(needle: &[u8], pieces: &[&[u8]]) {
    let mut search = StreamSearch::new(needle.to_vec());
    let mut since = Vec::new();
    for (i, piece) in pieces.iter().enumerate() {
        // Only windows that end in this piece are new.
        let start = since.len().saturating_sub(needle.len().saturating_sub(1));
        since.extend_from_slice(piece);
        let expected =
            needle.is_empty() || since[start..].windows(needle.len()).any(|w| w == needle);
        assert_eq!(
            search.found_in(piece),
            expected,
            "StreamSearch({needle:02x?}) on piece {i} of {pieces:02x?}"
        );
        if expected {
            since.clear();
        }
    }
}

// ---------------------------------------------------------------------------------------
// CONNECT-IP capsules and IP packets

/// `IpCapsule::parse` on arbitrary bytes: input `[type selector][payload]`. A parse never
/// panics; what parses encodes to bytes that parse to the same capsule, and routes come
/// out ordered without overlaps.
pub fn check_ip_capsules(data: &[u8]) {
    use oxy::http::connect_ip::capsules::{CONNECT_IP_CAPSULES, IpCapsule};
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let kind = CONNECT_IP_CAPSULES[usize::from(selector) % CONNECT_IP_CAPSULES.len()];
    let Ok(capsule) = IpCapsule::parse(kind, payload) else {
        return;
    };
    if let IpCapsule::RouteAdvertisement(ranges) = &capsule {
        for pair in ranges.windows(2) {
            let key =
                |r: &oxy::http::connect_ip::capsules::IpRange| (r.start.is_ipv6(), r.protocol);
            assert!(
                key(&pair[0]) < key(&pair[1]) || pair[0].end < pair[1].start,
                "{pair:?}"
            );
        }
    }
    let mut wire = BytesMut::from(&capsule.to_bytes()[..]);
    let mut codec = CapsuleCodec::new(1 << 20).surfacing(CONNECT_IP_CAPSULES);
    match codec.decode(&mut wire) {
        Ok(Some(Capsule::Other {
            kind: again,
            payload,
        })) => {
            assert_eq!(again, kind);
            assert_eq!(IpCapsule::parse(kind, &payload).as_ref(), Ok(&capsule));
        }
        other => panic!("{capsule:?} encoded to something else: {other:?}"),
    }
    assert!(wire.is_empty());
}

/// `inspect` on an arbitrary packet: never panics; an accepted packet's payload lies
/// inside it; the ICMP errors made about it are packets `inspect` accepts as ICMP errors;
/// a TTL decrement keeps it acceptable with the TTL one lower.
pub fn check_ip_packet(data: &[u8]) {
    use oxy::tunnel::packet::craft::{IcmpError, icmp_error};
    use oxy::tunnel::packet::inspect::{decrement_ttl, inspect};
    let Ok(facts) = inspect(data) else {
        return;
    };
    assert!(facts.payload.end <= data.len() && facts.payload.start <= facts.payload.end);
    for kind in [IcmpError::Prohibited, IcmpError::PacketTooBig { mtu: 1280 }] {
        if let Some(error) = icmp_error(data, &facts, kind) {
            let parsed =
                inspect(&error).unwrap_or_else(|e| panic!("an ICMP error Oxy made is {e}"));
            assert!(parsed.icmp_error);
            assert_eq!(
                (parsed.source, parsed.destination),
                (facts.destination, facts.source)
            );
        }
    }
    let mut copy = data.to_vec();
    if decrement_ttl(&mut copy) {
        let again = inspect(&copy).unwrap_or_else(|e| panic!("a decremented packet is {e}"));
        assert_eq!(again.ttl, facts.ttl - 1);
    } else {
        assert!(facts.ttl <= 1);
    }
}

/// A TLS ClientHello and QUIC Initial sniffing on arbitrary bytes: never panics; a parsed
/// ClientHello has a lowercase ASCII server name and no empty ALPN entry; the bytes as
/// one datagram and split in two (at the first byte's value) sniff without panicking,
/// and a Initial read whole still reads when followed by another datagram.
pub fn check_tls_hello(data: &[u8]) {
    use oxy::tls::interception::parse_client_hello;
    use oxy::tls::interception::quic_initial::{Sniffed, sniff_initials};
    if let Ok(hello) = parse_client_hello(data) {
        if let Some(sni) = &hello.sni {
            assert!(!sni.is_empty());
            assert!(
                sni.bytes()
                    .all(|b| b.is_ascii_graphic() && !b.is_ascii_uppercase())
            );
        }
        assert!(hello.alpn.iter().all(|p| !p.is_empty()));
    }
    let whole = sniff_initials([data]);
    let split = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
    let _ = sniff_initials([&data[..split], &data[split..]]);
    if let Sniffed::Quic(hello) = whole {
        assert_eq!(sniff_initials([data, data]), Sniffed::Quic(hello));
    }
}

// ---------------------------------------------------------------------------------------
// seeds

/// A few valid inputs for `target`, laid out as its check reads them.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    match target {
        "capsule_codec" => capsule_seeds(),
        "ip_capsules" => vec![
            // ADDRESS_ASSIGN, ADDRESS_REQUEST, ROUTE_ADVERTISEMENT payloads.
            vec![0, 0, 4, 192, 0, 2, 7, 32, 1, 6, 0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 128],
            vec![1, 1, 4, 0, 0, 0, 0, 32],
            vec![2, 4, 0, 0, 0, 0, 9, 255, 255, 255, 0, 4, 11, 0, 0, 0, 255, 255, 255, 255, 17],
        ],
        "ip_packet" => ip_packet_seeds(),
        "tls_hello" => vec![
            // A ClientHello handshake message: SNI origin.oxy.test, ALPN h2 and http/1.1.
            client_hello_seed(),
            // aioquic's first client Initial to origin.oxy.test (ALPN h3), as sent.
            include_bytes!("quic-initial.bin").to_vec(),
        ],
        "proxy_protocol_tcp" => proxy_seeds(false)
            .into_iter()
            .flat_map(|s| [[&[0u8][..], &s].concat(), [&[1u8][..], &s].concat()])
            .collect(),
        "proxy_protocol_datagram" => proxy_seeds(true),
        "uri_template" => [
            "/.well-known/masque/udp/{target_host}/{target_port}/\n/.well-known/masque/udp/192.0.2.6/443/",
            "/.well-known/masque/udp/{target_host}/{target_port}/\n/.well-known/masque/udp/2001%3Adb8%3A%3A42/53/",
            "/masque?h={target_host}&p={target_port}\n/masque?h=localhost&p=8",
            "/p/{target_port}/h/{target_host}\n/p/53/h/[::1]",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "settings_yaml" => [
            include_str!("../../config/default.yaml"),
            include_str!("../../config/egress-router.yaml"),
            include_str!("../../config/http-firewall.yaml"),
            include_str!("../../config/privacy-relay.yaml"),
            include_str!("../../config/proxy-protocol.yaml"),
            "endpoints:\n  - name: web\n    listen: [\"127.0.0.1:0\"]\n    http:\n      forward_proxy: true\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "http1_request_head" => [
            "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
            "GET http://0x7f.1:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n",
            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            "POST /form HTTP/1.1\r\nHost: 127.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 7\r\n\r\na=1&b=2",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            "GET /.well-known/masque/udp/192.0.2.6/443/ HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: connect-udp\r\nCapsule-Protocol: ?1\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
            "CONNECT 192.0.2.7:443 HTTP/1.1\r\nProxy-Authorization: Basic dTpw\r\n\r\nearly\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect(),
        "body_taps" => {
            let multipart = "--X\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nhello\r\n--X\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"a.txt\"\r\nContent-Type: text/plain\r\n\r\nfile body\r\n--X--\r\n";
            let urlencoded = "a=1&name=J%C3%B6rg+X&c=&evil=secret";
            [
                [&[2, 7, 40, 5][..], b"hello", multipart.as_bytes()].concat(),
                [&[1, 1, 6][..], b"secret", urlencoded.as_bytes()].concat(),
                [&[3, 0, 3, 13, 3][..], b"X--", multipart.as_bytes()].concat(),
            ]
            .to_vec()
        }
        _ => Vec::new(),
    }
}

/// A ClientHello handshake message (type, length, body) with a server name and ALPN.
fn client_hello_seed() -> Vec<u8> {
    let name = b"origin.oxy.test";
    let mut sni = vec![0, 0, 0, 20, 0, 18, 0, 0, 15];
    sni.extend(name);
    let alpn = [0, 16, 0, 14, 0, 12, 2, b'h', b'2', 8];
    let mut extensions = sni;
    extensions.extend(alpn);
    extensions.extend(b"http/1.1");
    let mut body = vec![3, 3];
    body.extend([7; 32]);
    body.extend([0, 0, 2, 0x13, 0x01, 1, 0]);
    body.extend(u16::try_from(extensions.len()).unwrap_or(0).to_be_bytes());
    body.extend(extensions);
    let mut message = vec![1, 0];
    message.extend(u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
    message.extend(body);
    message
}

/// UDP over IPv4 and IPv6, ICMP and ICMPv6 echo requests, an echo reply, a TCP SYN.
fn ip_packet_seeds() -> Vec<Vec<u8>> {
    use etherparse::PacketBuilder;
    use oxy::tunnel::packet::craft;
    let v4: SocketAddr = SocketAddr::from(([192, 0, 2, 1], 5000));
    let v4_to: SocketAddr = SocketAddr::from(([198, 51, 100, 7], 53));
    let v6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap_or(v4);
    let v6_to: SocketAddr = "[2001:db8::2]:53".parse().unwrap_or(v4_to);
    let echo = craft::echo_reply(v4_to.ip(), v4.ip(), (7, 1), b"ping").unwrap_or_default();
    let (a6, b6) = (
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
    );
    let (mut ping4, mut ping6, mut syn) = (Vec::new(), Vec::new(), Vec::new());
    let built = [
        PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
            .icmpv4_echo_request(7, 1)
            .write(&mut ping4, b"ping"),
        PacketBuilder::ipv6(a6, b6, 64)
            .icmpv6_echo_request(7, 1)
            .write(&mut ping6, b"ping"),
        PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64)
            .tcp(40000, 80, 1000, 65535)
            .syn()
            .write(&mut syn, b""),
    ];
    let built = built.iter().all(Result::is_ok);
    [
        craft::udp(v4, v4_to, b"query"),
        craft::udp(v6, v6_to, b"query"),
        Some(echo),
        built.then_some(ping4),
        built.then_some(ping6),
        built.then_some(syn),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn capsule_seeds() -> Vec<Vec<u8>> {
    let mut stream = BytesMut::new();
    encode_udp_datagram_capsule(&mut stream, b"one");
    // An unknown capsule type (0x2a) is skipped.
    stream.extend_from_slice(&[0x2a, 0x03, 1, 2, 3]);
    encode_udp_datagram_capsule(&mut stream, &[7; 100]);
    // A DATAGRAM with another context ID.
    stream.extend_from_slice(&[0x00, 0x02, 0x05, 0xff]);
    vec![
        [&[40, 2, 3, 5][..], &stream].concat(),
        [&[0, 0][..], &stream].concat(),
        [&[63, 1, 1][..], &stream[..stream.len() - 2]].concat(),
    ]
}

/// PROXY headers followed by data: v1 lines, v2 with TLVs, with a CRC32C, `LOCAL`.
fn proxy_seeds(datagram: bool) -> Vec<Vec<u8>> {
    let client: SocketAddr = SocketAddr::from(([203, 0, 113, 7], 5555));
    let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 80));
    let v6: SocketAddr = "[2001:db8::7]:5555".parse().unwrap_or(client);
    let tlvs = vec![
        (0x01, b"h2".to_vec()),
        (0x02, b"example.com".to_vec()),
        (0x05, b"id-1".to_vec()),
        (0xE0, b"t".to_vec()),
    ];
    let v2 = |client, tlvs: &[(u8, Vec<u8>)]| {
        oxy::offramp::proxy_header::v2_header(client, local, datagram, tlvs).unwrap_or_default()
    };
    let mut with_crc = v2(client, &[(0x03, vec![0; 4])]);
    let crc = crc32c::crc32c(&with_crc).to_be_bytes();
    let at = with_crc.len().saturating_sub(4);
    with_crc[at..].copy_from_slice(&crc);
    let mut local_cmd = v2(client, &[]);
    if let Some(byte) = local_cmd.get_mut(12) {
        *byte = 0x20;
    }
    let payload = b"GET / HTTP/1.1\r\n\r\n";
    let mut seeds = vec![
        [&v2(client, &tlvs)[..], payload].concat(),
        [&v2(v6, &[])[..], payload].concat(),
        [&with_crc[..], payload].concat(),
        local_cmd,
    ];
    if !datagram {
        seeds.push(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\nGET / HTTP/1.1\r\n\r\n".to_vec());
        seeds.push(b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n".to_vec());
        seeds.push(b"PROXY UNKNOWN\r\n".to_vec());
    }
    seeds
}

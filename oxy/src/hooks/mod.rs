//! Hook traits: one file per trait, with its context and its action enum.
//!
//! Every method has a default that does the ordinary proxy thing, so an application
//! implements only what it changes. [`OxyApp::start`](crate::OxyApp::start) returns the
//! hooks to install in a [`Hooks`](crate::Hooks); a hook left out (`None`) behaves as
//! its default methods do.
//!
//! | Trait | Runs on |
//! |---|---|
//! | [`IngressHook`] | each TCP or QUIC connection, each flow of a `udp` endpoint |
//! | [`HttpRequestHook`] | each HTTP request, of any version, in decapsulated tunnels too |
//! | [`EgressHook`] | each connection to a target: tunnels and proxied requests |
//! | [`TunnelHook`] | each TCP and UDP tunnel, IP flows made into tunnels too |
//! | [`IpFlowHook`] | the first packet of each flow of a CONNECT-IP stream or TUN device |
//! | [`DnsHook`] | each answer from a resolver (cache misses only) |
//!
//! The sections below give every step in order. A step runs only when the steps above it
//! are done, and an answer or a refusal at a step skips the steps after it; the end
//! hooks (`on_connection_end`, `on_tunnel_end`) say when they still run.
//!
//! # The life of a connection
//!
//! ```text
//! TCP listener (protocol: http, protocol: tcp)
//!   accept, then take a limits.max_connections slot (none free: closed, counted in
//!   oxy_connections_rejected_total{reason="max_connections"}; no hook runs)
//!   1. the PROXY header, when proxy_protocol.mode is not off (missing, malformed or
//!      untrusted: closed with ConnectionEnd::ProxyHeaderRefused)
//!   2. IngressHook::on_connection       cx.client_addr is the original client
//!                                       behind a PROXY header; cx.tls is None; the
//!                                       hook may choose cx.tls_policy for step 3
//!   3. the TLS handshake, on a TLS endpoint (failed: ConnectionEnd::HandshakeFailed)
//!   4. protocol: http -> HTTP/1.1 or HTTP/2 (by the preface): the life of a request
//!      protocol: tcp  -> a TCP tunnel to tcp.target: the life of a tunnel
//!   5. IngressHook::on_connection_end   once, however the connection ended (also
//!                                       when step 1, 2 or 3 refused it)
//!
//! QUIC listener (HTTP/3)
//!   Retry and h3.max_handshakes, the TLS handshake (failed: counted in
//!   oxy_tls_handshake_failures_total; no connection, no hook runs), then a
//!   max_connections slot (none free: closed with H3_EXCESSIVE_LOAD; no hook runs)
//!   1. IngressHook::on_connection       cx.tls is set (SNI, ALPN, client certificate);
//!                                       QUIC has no PROXY header; cx.tls_policy is
//!                                       the endpoint's and changing it does nothing
//!   2. HTTP/3: the life of a request, for each request stream
//!   3. IngressHook::on_connection_end
//!
//! UDP listener (protocol: udp)
//!   a datagram, its PROXY v2 header (on each datagram or on a flow's first, as
//!   proxy_protocol.udp says; a bad one: dropped); a new flow, one per (peer, original
//!   client), takes a max_connections slot (none free: the datagram is dropped)
//!   1. IngressHook::on_connection       once per flow, transport Udp
//!   2. a UDP tunnel to udp.target: the life of a tunnel
//!   3. IngressHook::on_connection_end   when the flow has ended
//!
//! TUN device (protocol: tun)
//!   no ingress hook and no max_connections slot: the device is one packet session
//!   from the start (the life of an IP flow)
//! ```
//!
//! With `http.h3.zero_rtt` on, a QUIC connection is taken as soon as it is accepted,
//! before its handshake is complete (0.5-RTT): `on_connection` can run before the
//! client's certificate is known.
//!
//! On HTTP/1.1, a CONNECT answered 2xx and a request answered 101 (CONNECT-UDP,
//! CONNECT-IP, a WebSocket upgrade) take the connection over: the HTTP connection ends
//! there and `on_connection_end` runs ([`ConnectionEnd::Closed`]) while the tunnel goes
//! on in a task of its own, which keeps the connection's `max_connections` slot. On
//! HTTP/2 and HTTP/3 a tunnel is one stream of the connection, which stays open while
//! the tunnel runs.
//!
//! # The life of a request
//!
//! HTTP/1.1, HTTP/2 and HTTP/3 requests, and the HTTP inside a tunnel the tunnel hook
//! decapsulated, all take this path. A request hyper or h3 cannot parse never reaches
//! it, and no hook sees it.
//!
//! ```text
//!  1. 414 the URI is longer than http.limits.max_uri_bytes; 431 (HTTP/1.x) the head is
//!     larger than http.limits.max_header_bytes
//!  2. 400 the authority is not settled: one Host, equal to the request target's
//!     authority; ports from 1 to 65535; a numeric IPv4 host in dotted form
//!  3. 413 Content-Length is above http.limits.max_body_bytes
//!  4. 407 with http.proxy_auth.enabled, for CONNECT, CONNECT-UDP, CONNECT-IP and
//!     forward-proxy requests without valid credentials (with them, cx.proxy_user
//!     names the user)
//!  5. HttpRequestHook::on_request       Respond, Block: answered here, nothing below
//!                                       runs; then 429 when cx.proxy_user is past its
//!                                       http.user_limits (tunnels and requests apart)
//!  6. CONNECT-UDP -> 405 unless http.connect_udp.enabled; a UDP tunnel
//!     CONNECT-IP  -> 405 unless http.connect_ip.enabled; an IP packet session
//!     another extended CONNECT -> 501
//!     CONNECT     -> 405 unless http.connect; a TCP tunnel, to the route's host and
//!                    port when on_request answered Route (500 for an https route, and
//!                    for a routed CONNECT-UDP or CONNECT-IP)
//!  7. the upstream: RequestAction::Route, else the decapsulated tunnel's target,
//!     else (http.forward_proxy) the URI's authority, else http.upstream, else 404
//!  8. EgressHook::on_egress             only with an egress hook, whose choice picks the
//!                                       request's (pooled) connection (Deny: 403)
//!     HttpRequestHook::on_upstream_request  the request as the upstream will get it
//!                                       (a response: sent instead, nothing below)
//!  9. HttpRequestHook::request_body_tap
//! 10. the connection (a pooled one has done this before): the egress policy, DNS
//!     (DnsHook on a cache miss), EgressHook::on_resolved; then the exchange. Oxy
//!     answers 403 (egress denied, body blocked), 400, 408 and 413 (the client's body),
//!     504 (the connection timed out, or no response within
//!     http.client.response_timeout of the upload's end) or 502 (anything else)
//! 11. HttpRequestHook::on_response      the upstream's response head, of any status
//!                                       (Replace: sent instead; step 12 skipped)
//! 12. HttpRequestHook::response_body_tap
//! 13. HttpRequestHook::on_error_response  Oxy's own 4xx and 5xx answers (any step
//!                                       above): a response to send instead
//! 14. RequestEndHook::on_request_end    every answered request, once its answer's
//!                                       last byte is out (status, upstream, bytes)
//! ```
//!
//! What `on_request` has and can change:
//!
//! - Whether the request is CONNECT, CONNECT-UDP, CONNECT-IP or forwardable is decided
//!   before it runs. What it rewrites in `request` is read after it: a CONNECT's target
//!   is `request.uri`'s authority, a CONNECT-UDP's target and a CONNECT-IP's scope come
//!   from its path.
//! - [`RequestAction::Route`] sends a CONNECT's tunnel to the route's host and port; a
//!   routed CONNECT-UDP or CONNECT-IP (or a CONNECT routed to `https`) is answered 500
//!   and logged as an error. Tunnels can also be steered by rewriting `request.uri`,
//!   with [`EgressAction::Rewrite`] or with [`TunnelAction::Redirect`].
//! - The `cx.proxy_user` it leaves is the one the egress and tunnel hooks and the audit
//!   record see.
//! - Inside a decapsulated tunnel, `cx.tls` is the inner TLS (with `intercepted` set),
//!   the upstream is the tunnel's target unless the hook routes the request elsewhere,
//!   and `cx.proxy_user` starts as the user of the request that opened the tunnel; when
//!   there is one, no `Proxy-Authorization` is asked for again (inside an L4
//!   endpoint's or an IP flow's tunnel, proxy authentication applies as usual).
//!
//! `on_response` runs only for a response from an upstream. Oxy's own answers go to the
//! client without it: `Respond` and `Block`, the statuses of steps 1 to 4 and 6 to 10,
//! and every answer to CONNECT, CONNECT-UDP and CONNECT-IP, 2xx included; those that
//! are errors made with [`crate::http::body::text_response`] (Oxy's own, and `Block`)
//! go through `on_error_response`. Every answer is counted (`oxy_http_requests_total`),
//! logged (`oxy::access`) and reported to `on_request_end` (with a request-end hook).
//!
//! HTTP versions differ only in how requests arrive. HTTP/1.1: CONNECT in authority
//! form; CONNECT-UDP and CONNECT-IP as a `GET` with `Upgrade: connect-udp` or
//! `Upgrade: connect-ip`, answered 101; an upstream's 101 (WebSocket) is relayed. HTTP/2
//! and HTTP/3: CONNECT, and extended CONNECT with `:protocol`, on one stream; a request
//! is forwardable when its `:authority` is not the endpoint itself. HTTP/3 also carries
//! the HTTP Datagrams of CONNECT-UDP and CONNECT-IP.
//!
//! # The life of a tunnel
//!
//! A TCP tunnel comes from CONNECT (HTTP/1.1, HTTP/2, HTTP/3), a `tcp` endpoint, or a TCP
//! flow of an IP session; a UDP tunnel from CONNECT-UDP, a `udp` endpoint's flow, or a
//! UDP flow of an IP session. Before it, `on_request` ran (CONNECT, CONNECT-UDP), or
//! `on_connection` (`tcp` and `udp` endpoints), or `on_flow` (IP flows).
//!
//! ```text
//! 1. EgressHook::on_egress          the target as requested (None on a tcp or udp
//!                                   endpoint without a target); cx.proxy_user is the
//!                                   request's user. UDP with UpstreamProxy: refused
//! 2. the egress policy on the port; DNS for a name (DnsHook::on_answer and cache_item
//!    on a cache miss), IPv6 and IPv4 at once
//! 3. EgressHook::on_resolved        once per family, before the egress policy filters
//!                                   the addresses
//! 4. TCP: happy eyeballs to the allowed addresses (or to the upstream proxy, then its
//!    CONNECT; or to the internal service, then the PROXY header). UDP: a socket
//!    connected to the first allowed address, IPv6 first
//! 5. TunnelHook::on_tunnel_start    both sides connected; no byte pumped and the client
//!                                   not answered yet
//! 6. CONNECT: 200; CONNECT-UDP: 200 (101 on HTTP/1.1); endpoints and IP flows:
//!    nothing to answer
//! 7. pump, until both sides are done or one fails (TCP), the client side ends (UDP),
//!    the idle timeout, max_lifetime or the drain; or, after Decapsulate: the client's
//!    first bytes (a ClientHello; on UDP, the first datagrams), then
//!    TunnelHook::on_inner_protocol: Inspect (each request inside: the life of a
//!    request), Pass (pump), Block (close)
//! 8. TunnelHook::on_tunnel_end      with the TunnelSummary; then the audit record
//! ```
//!
//! A tunnel refused at steps 1 to 5 (the egress hook or policy, DNS, the connection,
//! the tunnel hook) is logged, counted in `oxy_tunnel_ended_total` and audited, but
//! `on_tunnel_end` does not run for it. CONNECT and CONNECT-UDP are answered with the
//! reason as a plain-text body and the status: 403 (the egress policy, `Deny`,
//! `on_resolved` removing every address, `TunnelAction::Block`), 504 (the connection
//! timed out), 400 (no target), 503 (Oxy is shutting down) or 502 (anything else). A
//! `tcp` endpoint's connection is closed. A `udp` endpoint's flow drops the client's
//! datagrams until it has been quiet for `udp.idle_timeout`, then ends. An IP flow is
//! answered with ICMP (see below).
//!
//! The timeouts are `tunnel.idle_timeout` (TCP), `udp.idle_timeout` (UDP; for IP flows
//! `ip.flow_idle_timeout`) and `tunnel.max_lifetime`, unless the tunnel hook sets others.
//! The request context of a CONNECT or CONNECT-UDP lives until its tunnel has closed. When
//! the client's stream is not handed over after the 2xx, `on_tunnel_end` runs with the
//! close reason `upgrade_failed`.
//!
//! # The life of an IP flow
//!
//! A CONNECT-IP request goes through the life of a request to step 6, then: 405 unless
//! `http.connect_ip.enabled`; 400 when its path does not match the URI template; 502
//! when a host name in its scope does not resolve; 503 when no pool has a free address
//! for it; else 200 (101 on HTTP/1.1), the addresses and routes in capsules, and a packet
//! session that lasts as long as the stream (and the request context with it). A `tun`
//! endpoint's device is one packet session from the start.
//!
//! ```text
//! each packet from the client:
//! 1. checks: well-formed, checksums, not to a multicast or broadcast address, not
//!    from an IPv6 link-local source, from an assigned address (CONNECT-IP): else
//!    dropped; no larger than the MTU (else ICMP packet too big), inside the scope
//!    (else ICMP prohibited), TTL above 1 (else ICMP time exceeded); fragments are
//!    dropped
//! 2. a new flow (a new 5-tuple, or ICMP echo identifier; at most ip.max_flows, else
//!    dropped; a TCP segment other than a SYN starts none and, in userspace, gets a
//!    reset):
//!    IpFlowHook::on_flow            once per flow; cx.app is the session's, one
//!                                   value for all its flows
//! 3. the flow's route, by the action:
//!    Drop     -> its packets are dropped
//!    an upgrade that does not fit the protocol -> its packets are dropped
//!    Forward with ip.offramp: tun -> the egress policy, then the TUN device
//!    Forward (userspace), UpgradeToUdp, UpgradeToTcp -> by protocol:
//!      UDP       -> a UDP tunnel (the life of a tunnel), replies as UDP packets
//!      TCP SYN   -> a TCP tunnel opened before the SYN is answered, then the
//!                   user-space TCP stack's stream pumped through it
//!      ICMP echo -> the egress policy, then an echo socket
//!      other ICMP -> dropped
//!      other     -> ICMP protocol unreachable
//! 4. the flow's later packets follow its route; no hook runs for them
//! ```
//!
//! A flow whose tunnel is refused is answered with ICMP administratively prohibited (the
//! egress hook or policy, the tunnel hook), port unreachable (a UDP port that refuses)
//! or host unreachable (anything else); a TCP connection to a port that refuses gets a
//! reset. A flow the egress policy refuses before the TUN device or an echo socket gets
//! ICMP administratively prohibited too. Flows end after `ip.flow_idle_timeout` without
//! a packet, or with the session, and each leaves an audit record.

mod dns;
mod egress;
mod http_request;
mod ingress;
mod ip_flow;
mod numeric_host;
mod tunnel;

pub use dns::{DnsAction, DnsContext, DnsHook};
pub use egress::{
    EgressAction, EgressContext, EgressHook, EgressPurpose, InternalService, ProxyHeaderVersion,
    Target, TargetHost, TargetParseError, UpstreamProxy, host_matches,
};
pub use http_request::{
    HttpBody, HttpRequestHook, RequestAction, RequestContext, RequestEndHook, RequestSummary,
    ResponseAction, Upstream,
};
pub use ingress::{
    Connection, ConnectionEnd, ConnectionSummary, IngressAction, IngressConnectionContext,
    IngressHook, Transport,
};
pub use ip_flow::{IpFlowAction, IpFlowContext, IpFlowHook};
pub(crate) use numeric_host::parse_dotted_decimal;
pub use numeric_host::{BadNumericHost, parse_numeric_ipv4};
pub use tunnel::{
    InnerAction, InnerProtocol, Inspection, TunnelAction, TunnelContext, TunnelHook, TunnelSummary,
};

//! CONNECT-IP (RFC 9484): a packet session behind an HTTP request. The scope comes from
//! the URI template, addresses from the endpoint's pools, routes from the scope and the
//! egress policy; IP packets travel as HTTP Datagrams (HTTP/3) or DATAGRAM capsules
//! (HTTP/2, HTTP/1.1, and HTTP/3 packets too large for a QUIC datagram).

pub mod address_pool;
pub mod capsules;
pub mod routes;
pub mod scope;

use super::body::text_response;
use super::capsule::{self, Capsule, CapsuleCodec};
use super::capsule_writer::write_capsule_stream;
use super::connect::tunnel_stream;
use super::connect_udp::DatagramChannel;
use super::metrics::oxy_http;
use super::pipeline::Handler;
use crate::app::OxyExt;
use crate::dns::Family;
use crate::drain::Drain;
use crate::hooks::{HttpBody, RequestContext};
use crate::tunnel::packet::{PacketSession, SessionSetup, ToClient, oxy_ip};
use crate::tunnel::stream::TunnelStream;
use address_pool::AssignedAddress;
use bytes::Bytes;
use capsules::{AddressEntry, CONNECT_IP_CAPSULES, IpCapsule};
use futures_util::StreamExt;
use http::{Request, Response, StatusCode};
use ipnet::IpNet;
use scope::{Scope, ScopeTarget};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Whether a request asks for CONNECT-IP: extended CONNECT with `:protocol connect-ip`
/// (HTTP/2, HTTP/3) or an HTTP/1.1 `GET` with `Upgrade: connect-ip`.
pub fn is_requested(parts: &http::request::Parts) -> bool {
    super::upgrade::asks_for(parts, "connect-ip")
}

/// A refusal before the stream starts, counted by `label`.
fn refuse(endpoint: &str, label: &str, status: StatusCode, text: &str) -> Response<HttpBody> {
    oxy_http::errors_total(endpoint, label).inc();
    text_response(status, text)
}

/// Answers a CONNECT-IP request: checks the scope, assigns addresses, answers 2xx (101
/// on HTTP/1.1) or a clear error, then runs the packet session in a drained task (which
/// keeps the request's context and the addresses) until the stream ends.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn keeps its arguments twice: see `Handler::handle_in_span`"
)]
pub fn handle<App: OxyExt>(
    handler: &Arc<Handler<App>>,
    mut request: Request<HttpBody>,
    cx: RequestContext<App>,
) -> impl Future<Output = Response<HttpBody>> {
    async move {
        let endpoint = &handler.endpoint;
        let name = endpoint.name();
        let settings = &endpoint.settings;
        if !settings.http.connect_ip.enabled {
            let status = StatusCode::METHOD_NOT_ALLOWED;
            return refuse(
                name,
                "connect_ip_disabled",
                status,
                "CONNECT-IP is not enabled here",
            );
        }
        let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
        let Some(template) = endpoint.connect_ip_template.as_ref() else {
            let status = StatusCode::INTERNAL_SERVER_ERROR;
            return refuse(
                name,
                "connect_ip_template",
                status,
                "no CONNECT-IP URI template",
            );
        };
        let (target, protocol) = match scope::requested(template, path) {
            Ok(requested) => requested,
            Err(e) => {
                return refuse(
                    name,
                    "bad_connect_ip_scope",
                    StatusCode::BAD_REQUEST,
                    &e.to_string(),
                );
            }
        };
        let scope_label = path.to_string();
        let destinations = match target {
            ScopeTarget::Any => None,
            ScopeTarget::Prefix(net) => Some(vec![net]),
            ScopeTarget::Name(host) => {
                let resolver = &handler.services.resolver;
                let (v4, v6) = tokio::join!(
                    resolver.lookup(&host, Family::V4),
                    resolver.lookup(&host, Family::V6)
                );
                let addresses: Vec<IpNet> = [v4, v6]
                    .into_iter()
                    .filter_map(Result::ok)
                    .flat_map(|(addresses, _)| addresses.to_vec())
                    .map(IpNet::from)
                    .collect();
                if addresses.is_empty() {
                    let text = format!("the target {host} did not resolve");
                    return refuse(name, "connect_ip_dns", StatusCode::BAD_GATEWAY, &text);
                }
                Some(addresses)
            }
        };
        let scope = Scope {
            destinations,
            protocol,
        };
        let reaches = |v6: bool| {
            scope
                .destinations
                .as_ref()
                .is_none_or(|nets| nets.iter().any(|n| n.addr().is_ipv6() == v6))
        };
        // An IPv6 pool with a link below 1280 bytes is a settings error (RFC 8200 §5), so an
        // IPv6 address always comes with a link IPv6 can use.
        let pools = &endpoint.address_pools;
        let mut assigned: Vec<AssignedAddress> = Vec::new();
        for (pool, v6) in [(&pools.v4, false), (&pools.v6, true)] {
            let Some(pool) = pool.as_ref().filter(|_| reaches(v6)) else {
                continue;
            };
            match pool.assign() {
                Some(address) => assigned.push(address),
                None => {
                    let text = format!("no free address in the {} pool", pool.net());
                    return refuse(
                        name,
                        "address_pool_exhausted",
                        StatusCode::SERVICE_UNAVAILABLE,
                        &text,
                    );
                }
            }
        }
        if assigned.is_empty() {
            let text = "no address pool serves this scope (ip.ipv4_pool, ip.ipv6_pool)";
            return refuse(
                name,
                "connect_ip_no_pool",
                StatusCode::SERVICE_UNAVAILABLE,
                text,
            );
        }
        let upgrade = match tunnel_stream(&mut request) {
            Ok(upgrade) => upgrade,
            Err(response) => return *response,
        };
        let datagrams = request
            .extensions_mut()
            .remove::<super::connect_udp::RequestDatagrams>()
            .and_then(|d| d.take());
        let session = Session {
            handler: handler.clone(),
            client: handler.tunnel_client(cx.proxy_user.clone()),
            scope,
            assigned,
            scope_label,
        };
        let drain = handler.drain.clone();
        handler.spawn_upgraded(async move {
            match upgrade.wait().await {
                Ok(stream) => session.carry(stream, datagrams, &drain).await,
                Err(e) => tracing::info!(error = %e, "CONNECT-IP stream not handed over"),
            }
            drop(cx);
        });
        super::connect_udp::accepted(request.version(), "connect-ip")
    }
}

/// One accepted CONNECT-IP stream, before its bytes flow.
struct Session<App: OxyExt> {
    handler: Arc<Handler<App>>,
    client: crate::tunnel::TunnelClient<App>,
    scope: Scope,
    /// Returned to their pools when the session ends.
    assigned: Vec<AssignedAddress>,
    scope_label: String,
}

impl<App: OxyExt> Session<App> {
    /// Runs the packet session over `stream` (and the HTTP Datagrams, on HTTP/3).
    async fn carry(self, stream: TunnelStream, datagrams: Option<DatagramChannel>, drain: &Drain) {
        let endpoint = self.handler.endpoint.clone();
        let settings = &endpoint.settings;
        let name = endpoint.name().to_string();
        let (read, mut write) = tokio::io::split(stream);
        let queue = settings.ip.queue.max(1);
        let (to_client, packets_out) = ToClient::new(queue, settings.ip.mtu, &name);
        let (from_client, to_session, route, h3_sink) = match datagrams {
            Some(channel) => (
                channel.from_client,
                channel.to_flow,
                Some(channel.route),
                Some(channel.to_client),
            ),
            None => {
                let (tx, rx) = mpsc::channel(queue);
                (rx, tx, None, None)
            }
        };
        let sources: Vec<IpNet> = self
            .assigned
            .iter()
            .map(|a| IpNet::from(a.address()))
            .collect();
        let families = [false, true].map(|v6| sources.iter().any(|s| s.addr().is_ipv6() == v6));
        let routes = routes::advertised(&self.scope, &self.handler.services.policy, families);
        let assign = IpCapsule::AddressAssign(
            sources
                .iter()
                .map(|prefix| AddressEntry {
                    request_id: 0,
                    prefix: *prefix,
                })
                .collect(),
        );
        let (control, control_out) = mpsc::channel::<Bytes>(16);
        let _ = control.try_send(assign.to_bytes());
        let _ = control.try_send(IpCapsule::RouteAdvertisement(routes).to_bytes());
        let addresses: Vec<IpAddr> = sources.iter().map(IpNet::addr).collect();
        let tun_attachment = endpoint
            .tun_offramp
            .as_ref()
            .map(|tun| tun.attach(&addresses, &to_client));
        let session = PacketSession::new(SessionSetup {
            services: self.handler.services.clone(),
            endpoint: endpoint.clone(),
            client: self.client.clone(),
            handler: self.handler.clone(),
            sources: Some(sources.clone()),
            scope: self.scope.clone(),
            to_client,
            audit_protocol: "connect-ip",
        });
        let reader = tokio::spawn(tracing::Instrument::in_current_span(read_capsules(
            FramedRead::new(
                read,
                CapsuleCodec::new(settings.http.connect_ip.max_capsule_bytes)
                    .surfacing(CONNECT_IP_CAPSULES),
            ),
            CapsuleReader {
                to_session,
                control: control.clone(),
                assigned: sources,
                endpoint: name.clone(),
                _route: route,
            },
        )));
        // The session ends when the client's side does, or when the stream can no longer
        // be written (then it still forgets its flows and writes its audit records).
        let reason = {
            let gone = CancellationToken::new();
            let run = session.run(
                from_client,
                gone.clone().cancelled_owned(),
                self.scope_label.clone(),
                drain,
            );
            let writer = async {
                write_capsule_stream(&mut write, Some(control_out), packets_out, h3_sink).await;
                gone.cancel();
            };
            tokio::pin!(run, writer);
            tokio::select! {
                reason = &mut run => reason,
                () = &mut writer => run.await,
            }
        };
        tracing::info!(reason, "CONNECT-IP stream closed");
        reader.abort();
        drop(control);
        drop(tun_attachment);
        let _ = tokio::time::timeout(Duration::from_secs(1), write.shutdown()).await;
        drop(self.assigned);
    }
}

/// What the capsule reader needs.
struct CapsuleReader {
    to_session: mpsc::Sender<Bytes>,
    control: mpsc::Sender<Bytes>,
    /// The addresses the client was given.
    assigned: Vec<IpNet>,
    endpoint: String,
    /// Keeps HTTP Datagrams routed to the session while the stream is read.
    _route: Option<super::h3_stream::DatagramRoute>,
}

/// Feeds the session with the packets of the DATAGRAM capsules on the stream and
/// answers ADDRESS_REQUEST capsules, until the stream ends; a malformed capsule ends it
/// and is counted. Ending drops `to_session`, which ends the session.
async fn read_capsules<R: tokio::io::AsyncRead + Unpin>(
    mut capsules: FramedRead<R, CapsuleCodec>,
    reader: CapsuleReader,
) {
    let endpoint = reader.endpoint.as_str();
    while let Some(capsule) = capsules.next().await {
        let malformed = match capsule {
            Ok(Capsule::Datagram(datagram)) => match capsule::udp_payload(&datagram) {
                Ok(Some(packet)) => {
                    match reader.to_session.try_send(packet) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            oxy_ip::dropped_total(endpoint, "queue_full").inc();
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                    continue;
                }
                Ok(None) => {
                    oxy_ip::dropped_total(endpoint, "unknown_context").inc();
                    continue;
                }
                Err(e) => e.as_label(),
            },
            Ok(Capsule::Other { kind, payload }) => match IpCapsule::parse(kind, &payload) {
                Ok(IpCapsule::AddressRequest(requests)) => {
                    let answer = answer_address_request(&reader.assigned, &requests);
                    if reader.control.send(answer.to_bytes()).await.is_err() {
                        return;
                    }
                    continue;
                }
                // Addresses and routes the client offers Oxy are not used.
                Ok(IpCapsule::AddressAssign(_) | IpCapsule::RouteAdvertisement(_)) => continue,
                Err(e) => {
                    tracing::info!(error = %e, "malformed CONNECT-IP capsule; stream closed");
                    e.as_label()
                }
            },
            Err(capsule::CapsuleError::Io(e)) => {
                tracing::debug!(error = %e, "CONNECT-IP stream ended");
                return;
            }
            Err(e) => {
                tracing::info!(error = %e, "malformed capsule; stream closed");
                e.as_label()
            }
        };
        oxy_ip::capsule_errors_total(endpoint, malformed).inc();
        return;
    }
}

/// The ADDRESS_ASSIGN answering `requests` (RFC 9484 §4.7.1): every address the client
/// holds, each under the ID of a request it satisfies (0 if none); a request that asks
/// for an address Oxy did not assign is answered with the unspecified address of its
/// family and the full prefix length.
fn answer_address_request(assigned: &[IpNet], requests: &[AddressEntry]) -> IpCapsule {
    let mut entries: Vec<AddressEntry> = assigned
        .iter()
        .map(|prefix| AddressEntry {
            request_id: 0,
            prefix: *prefix,
        })
        .collect();
    for request in requests {
        let wanted = request.prefix.addr();
        let satisfied = entries.iter_mut().find(|entry| {
            entry.request_id == 0
                && entry.prefix.addr().is_ipv6() == wanted.is_ipv6()
                && (wanted.is_unspecified() || entry.prefix.contains(&wanted))
        });
        match satisfied {
            Some(entry) => entry.request_id = request.request_id,
            None => {
                let unspecified = if wanted.is_ipv6() {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                };
                entries.push(AddressEntry {
                    request_id: request.request_id,
                    prefix: IpNet::from(unspecified),
                });
            }
        }
    }
    IpCapsule::AddressAssign(entries)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn address_requests_are_answered_with_the_assigned_set() {
        let assigned: Vec<IpNet> = vec![
            "100.64.0.2/32".parse().unwrap(),
            "fd00:6f78::1/128".parse().unwrap(),
        ];
        let request = |id, prefix: &str| AddressEntry {
            request_id: id,
            prefix: prefix.parse().unwrap(),
        };
        let answer = answer_address_request(
            &assigned,
            &[request(1, "0.0.0.0/32"), request(2, "2001:db8::5/128")],
        );
        let IpCapsule::AddressAssign(entries) = answer else {
            panic!("not an ADDRESS_ASSIGN")
        };
        let texts: Vec<String> = entries
            .iter()
            .map(|e| format!("{} {}", e.request_id, e.prefix))
            .collect();
        assert_eq!(texts, ["1 100.64.0.2/32", "0 fd00:6f78::1/128", "2 ::/128"]);
    }
}

//! A running endpoint: its settings and the application's state for it.

use crate::app::OxyExt;
use crate::hooks::{Target, Upstream};
use crate::http::client::UpstreamClient;
use crate::http::connect_ip::address_pool::AddressPools;
use crate::http::uri_template::{CONNECT_IP_VARIABLES, UriTemplate};
use crate::settings::{EndpointProtocol, EndpointSettings};
use crate::tls::TlsAcceptor;
use crate::tls::interception::Interceptor;
use crate::tls::server::TlsSetupError;
use std::sync::{Arc, OnceLock};

/// An endpoint as hooks see it.
pub struct Endpoint<App: OxyExt> {
    /// The endpoint's settings, `app:` section included.
    pub settings: EndpointSettings<App::EndpointAppSettings>,
    /// The application's state for this endpoint, from [`crate::OxyApp::endpoint_context`].
    pub app: App::EndpointContext,
    /// `tcp.target`, parsed (`None` when it is empty).
    pub tcp_target: Option<Target>,
    /// `udp.target`, parsed (`None` when it is empty).
    pub udp_target: Option<Target>,
    /// `http.upstream`, parsed (`None` when it is empty).
    pub http_upstream: Option<Upstream>,
    /// The TLS acceptor, when `tls.enabled`.
    pub tls: Option<TlsAcceptor>,
    /// The interception CA and minted leaves, when `tls_interception` is set.
    pub interception: Option<Arc<Interceptor>>,
    /// The QUIC server configuration, when `http.h3.enabled`.
    pub quic: Option<quinn::ServerConfig>,
    /// `http.connect_udp.uri_template`, parsed (`None` when it is not valid).
    pub connect_udp_template: Option<UriTemplate>,
    /// `http.connect_ip.uri_template`, parsed (`None` when it is not valid).
    pub connect_ip_template: Option<UriTemplate>,
    /// The addresses CONNECT-IP clients are given (`ip.ipv4_pool`, `ip.ipv6_pool`).
    pub address_pools: AddressPools,
    /// The TUN device forwarded packets are written to (`ip.offramp: tun`), opened at
    /// start.
    pub tun_offramp: Option<Arc<crate::offramp::tun::TunOffRamp>>,
    /// The `Alt-Svc` value advertising HTTP/3 on the TCP listeners, when enabled.
    pub alt_svc: Option<http::HeaderValue>,
    /// What each user has open, against `http.user_limits` and `proxy_auth.users`.
    pub(crate) user_limits: crate::http::user_limits::UserLimits,
    /// The metrics every HTTP request of the endpoint touches, made on its first.
    http_metrics: OnceLock<Arc<crate::http::metrics::EndpointHttpMetrics>>,
    /// The metrics every TCP tunnel of the endpoint touches, made on its first.
    tcp_tunnel_metrics: OnceLock<crate::tunnel::metrics::EndpointTcpTunnelMetrics>,
    /// The metrics every connection of the endpoint touches, made on its first.
    connection_metrics: OnceLock<crate::onramp::EndpointConnectionMetrics>,
    /// The pooled upstream client of an HTTP endpoint, made on first use.
    pub(crate) http_client: OnceLock<Arc<UpstreamClient<App>>>,
}

impl<App: OxyExt> Endpoint<App> {
    /// The metrics every HTTP request of the endpoint touches.
    pub(crate) fn http_metrics(&self) -> &Arc<crate::http::metrics::EndpointHttpMetrics> {
        self.http_metrics
            .get_or_init(|| Arc::new(crate::http::metrics::EndpointHttpMetrics::new(self.name())))
    }

    /// The metrics every TCP tunnel of the endpoint touches.
    pub(crate) fn tcp_tunnel_metrics(&self) -> &crate::tunnel::metrics::EndpointTcpTunnelMetrics {
        self.tcp_tunnel_metrics
            .get_or_init(|| crate::tunnel::metrics::EndpointTcpTunnelMetrics::new(self.name()))
    }

    /// The metrics every connection of the endpoint touches.
    pub(crate) fn connection_metrics(&self) -> &crate::onramp::EndpointConnectionMetrics {
        self.connection_metrics
            .get_or_init(|| crate::onramp::EndpointConnectionMetrics::new(self.name()))
    }

    /// An endpoint from its (validated) settings and the application's state for it;
    /// `h3_port` is the port its first HTTP/3 socket is bound to, for `Alt-Svc`.
    pub fn new(
        settings: EndpointSettings<App::EndpointAppSettings>,
        app: App::EndpointContext,
        h3_port: Option<u16>,
    ) -> Result<Self, TlsSetupError> {
        let tls = if settings.tls.enabled {
            let alpn: &'static [u8] = match settings.protocol {
                EndpointProtocol::Http => b"\x02h2\x08http/1.1",
                EndpointProtocol::Tcp | EndpointProtocol::Udp | EndpointProtocol::Tun => b"",
            };
            Some(TlsAcceptor::new(&settings.tls, alpn)?)
        } else {
            None
        };
        let h3 = &settings.http.h3;
        let h3_on = settings.serves_h3();
        let quic = if h3_on {
            Some(crate::tls::quic::server_config(&settings.tls, h3)?)
        } else {
            None
        };
        let interception = if settings.tls_interception.enabled() {
            let interceptor = Interceptor::new(&settings.name, &settings.tls_interception)?;
            Some(Arc::new(interceptor))
        } else {
            None
        };
        let alt_svc = h3_port
            .filter(|_| h3_on && h3.alt_svc)
            .and_then(|port| format!("h3=\":{port}\"; ma=86400").parse().ok());
        let user_limits = crate::http::user_limits::UserLimits::new(&settings.http);
        Ok(Self {
            http_metrics: OnceLock::new(),
            tcp_tunnel_metrics: OnceLock::new(),
            connection_metrics: OnceLock::new(),
            quic,
            connect_udp_template: settings.http.connect_udp.uri_template.parse().ok(),
            connect_ip_template: UriTemplate::parse(
                &settings.http.connect_ip.uri_template,
                CONNECT_IP_VARIABLES,
            )
            .ok(),
            address_pools: AddressPools::new(&settings.ip, &settings.name),
            tun_offramp: None,
            alt_svc,
            tcp_target: settings.tcp.target.parse().ok(),
            udp_target: settings.udp.target.parse().ok(),
            http_upstream: settings
                .http
                .upstream
                .parse()
                .ok()
                .as_ref()
                .and_then(Upstream::from_uri),
            tls,
            interception,
            settings,
            app,
            user_limits,
            http_client: OnceLock::new(),
        })
    }

    /// The endpoint's unique name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The endpoint's `app:` settings.
    pub fn app_settings(&self) -> &App::EndpointAppSettings {
        &self.settings.app
    }
}

//! The application API: [`OxyExt`] extension types, [`OxyApp`] and the [`Hooks`] it returns.

use crate::hooks::{DnsHook, EgressHook, HttpRequestHook, IngressHook, IpFlowHook, TunnelHook};
use crate::settings::{EndpointSettings, ServerSettings, Settings};
use async_trait::async_trait;
use std::sync::Arc;

/// The application's extension types. Each is `Default`, so `()` opts out.
pub trait OxyExt: Sized + Send + Sync + 'static {
    /// The `app:` section of the settings file.
    type AppSettings: Settings + Default;
    /// The `app:` section of each endpoint.
    type EndpointAppSettings: Settings + Default;
    /// State the application keeps per endpoint, made by [`OxyApp::endpoint_context`].
    type EndpointContext: Default + Send + Sync + 'static;
    /// State the application keeps per accepted connection.
    type IngressConnectionContext: Default + Send + Sync + 'static;
    /// State the application keeps per HTTP request.
    type RequestContext: Default + Send + Sync + 'static;
    /// State the application keeps per IP tunnel.
    type IpTunnelContext: Default + Send + Sync + 'static;
    /// What the application attaches to a DNS cache entry.
    type DnsCacheItem: Default + Clone + Send + Sync + 'static;
}

/// The settings an application receives.
pub type AppServerSettings<App> =
    ServerSettings<<App as OxyExt>::AppSettings, <App as OxyExt>::EndpointAppSettings>;

/// An Oxy application: its identity, and how it starts.
#[async_trait]
pub trait OxyApp: OxyExt {
    /// The binary's name, used by the CLI and in logs and metrics.
    fn name() -> &'static str;
    /// The application's version, reported by `--version`, metrics and Sentry.
    fn version() -> &'static str;
    /// One line on what the application does, shown by `--help` and in generated settings.
    fn description() -> &'static str;

    /// Checks the application's settings beyond what their types say (patterns that must
    /// compile, names that must exist): runs for `--check-config` and before the process
    /// starts, which exits 2 with the error. The default accepts everything.
    fn check(settings: &AppServerSettings<Self>) -> anyhow::Result<()> {
        let _ = settings;
        Ok(())
    }

    /// Runs once after the settings are loaded and telemetry is up, before any endpoint
    /// is bound. Returns the hooks to run; an error stops the process with exit code 1.
    async fn start(settings: AppServerSettings<Self>) -> anyhow::Result<Hooks<Self>>;

    /// Runs once per endpoint after [`start`](Self::start), to make the endpoint's
    /// application state from its settings; it also runs for `--check-config` and before
    /// the process starts, which exits 2 with its error.
    /// The default is `EndpointContext::default()`.
    fn endpoint_context(
        settings: &EndpointSettings<Self::EndpointAppSettings>,
    ) -> anyhow::Result<Self::EndpointContext> {
        let _ = settings;
        Ok(Self::EndpointContext::default())
    }
}

/// The hooks an application installs; `None` runs the framework's default behaviour.
pub struct Hooks<App: OxyExt> {
    /// Runs on every accepted connection.
    pub ingress: Option<Arc<dyn IngressHook<App>>>,
    /// Chooses where and how traffic leaves.
    pub egress: Option<Arc<dyn EgressHook<App>>>,
    /// Watches and steers tunnels.
    pub tunnel: Option<Arc<dyn TunnelHook<App>>>,
    /// Sees HTTP requests and responses.
    pub http_request: Option<Arc<dyn HttpRequestHook<App>>>,
    /// Sees IP flows from CONNECT-IP and TUN devices.
    pub ip_flow: Option<Arc<dyn IpFlowHook<App>>>,
    /// Overrides or vetoes DNS answers.
    pub dns: Option<Arc<dyn DnsHook<App>>>,
}

impl<App: OxyExt> Clone for Hooks<App> {
    fn clone(&self) -> Self {
        Self {
            ingress: self.ingress.clone(),
            egress: self.egress.clone(),
            tunnel: self.tunnel.clone(),
            http_request: self.http_request.clone(),
            ip_flow: self.ip_flow.clone(),
            dns: self.dns.clone(),
        }
    }
}

impl<App: OxyExt> Default for Hooks<App> {
    fn default() -> Self {
        Self {
            ingress: None,
            egress: None,
            tunnel: None,
            http_request: None,
            ip_flow: None,
            dns: None,
        }
    }
}

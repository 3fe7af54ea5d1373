//! The application API: [`OxyExt`] extension types, [`OxyApp`] and the [`Hooks`] it returns.

use crate::hooks::{
    DnsHook, EgressHook, HttpRequestHook, IngressHook, IpFlowHook, RequestEndHook, TunnelHook,
};
use crate::settings::{EndpointSettings, ServerSettings, Settings};
use async_trait::async_trait;
use std::sync::Arc;

/// Who an application is: its binary's name, version and one line on what it does.
/// `#[derive(OxyExt)]` takes them from the package (`Cargo.toml`).
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    /// The binary's name, used by the CLI and in logs and metrics.
    pub name: &'static str,
    /// The application's version, reported by `--version`, metrics and Sentry.
    pub version: &'static str,
    /// One line on what the application does, shown by `--help` and in generated
    /// settings.
    pub description: &'static str,
}

/// The application's identity and extension types. Each type is `Default`, so `()` (or
/// `NoSettings`) opts out. Write `#[derive(OxyExt)]` and name only the types the
/// application uses: `#[oxy(endpoint_settings = MySettings, request_context = MyState)]`.
pub trait OxyExt: Sized + Send + Sync + 'static {
    /// Who the application is.
    const IDENTITY: Identity;
    /// The `app:` section of the settings file.
    type AppSettings: Settings + Default;
    /// The `app:` section of each endpoint.
    type EndpointAppSettings: Settings + Default;
    /// State the application makes once from its settings, by [`OxyApp::app_context`],
    /// and receives in [`OxyApp::start`] (compiled rules, loaded lists).
    type AppContext: Default + Send + 'static;
    /// State the application keeps per endpoint, made by [`OxyApp::endpoint_context`].
    type EndpointContext: Default + Send + Sync + 'static;
    /// State the application keeps per accepted connection.
    type IngressConnectionContext: Default + Send + Sync + 'static;
    /// State the application keeps per HTTP request.
    type RequestContext: Default + Send + Sync + 'static;
    /// State the application keeps per tunnel (and per egress decision): made when the
    /// egress hook runs, then the tunnel hook's from `on_tunnel_start` to
    /// `on_tunnel_end`.
    type TunnelContext: Default + Send + Sync + 'static;
    /// State the application keeps per IP tunnel.
    type IpTunnelContext: Default + Send + Sync + 'static;
    /// What the application attaches to a DNS cache entry.
    type DnsCacheItem: Default + Clone + Send + Sync + 'static;
}

/// The settings an application receives.
pub type AppServerSettings<App> =
    ServerSettings<<App as OxyExt>::AppSettings, <App as OxyExt>::EndpointAppSettings>;

/// An Oxy application: how it starts. Its identity comes from [`OxyExt::IDENTITY`].
#[async_trait]
pub trait OxyApp: OxyExt {
    /// The binary's name, used by the CLI and in logs and metrics.
    fn name() -> &'static str {
        Self::IDENTITY.name
    }
    /// The application's version, reported by `--version`, metrics and Sentry.
    fn version() -> &'static str {
        Self::IDENTITY.version
    }
    /// One line on what the application does, shown by `--help` and in generated settings.
    fn description() -> &'static str {
        Self::IDENTITY.description
    }

    /// Checks the application's settings beyond what their types say (patterns that must
    /// compile, names that must exist) and makes what [`start`](Self::start) receives
    /// from them, so nothing is built twice. Runs once, for `--check-config` and before
    /// the process starts; an error exits 2 with the error, like a settings error. The
    /// default is `AppContext::default()`.
    fn app_context(settings: &AppServerSettings<Self>) -> anyhow::Result<Self::AppContext> {
        let _ = settings;
        Ok(Self::AppContext::default())
    }

    /// Runs once after the settings are loaded and telemetry is up, before any endpoint
    /// is bound, with what [`app_context`](Self::app_context) made. Returns the hooks to
    /// run; an error stops the process with exit code 1.
    async fn start(
        settings: AppServerSettings<Self>,
        context: Self::AppContext,
    ) -> anyhow::Result<Hooks<Self>>;

    /// Makes an endpoint's application state from its settings. Runs once per endpoint,
    /// for `--check-config` and before the process starts (an error exits 2 with it);
    /// the state is the endpoint's from then on. The default is
    /// `EndpointContext::default()`.
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
    /// Hears the end of every HTTP request (logging, billing).
    pub request_end: Option<Arc<dyn RequestEndHook<App>>>,
}

impl<App: OxyExt> Hooks<App> {
    /// Hooks that one value serves, for a type implementing several hook traits:
    /// `Hooks::of(rules).http_request().tunnel().into()`.
    pub fn of<T: Send + Sync + 'static>(hooks: impl Into<Arc<T>>) -> HooksOf<App, T> {
        HooksOf {
            hooks: Hooks::default(),
            source: hooks.into(),
        }
    }
}

/// Hooks being installed from one value (see [`Hooks::of`]).
pub struct HooksOf<App: OxyExt, T> {
    hooks: Hooks<App>,
    source: Arc<T>,
}

impl<App: OxyExt, T: Send + Sync + 'static> HooksOf<App, T> {
    /// Installs the value as the ingress hook.
    pub fn ingress(mut self) -> Self
    where
        T: IngressHook<App>,
    {
        self.hooks.ingress = Some(self.source.clone());
        self
    }

    /// Installs the value as the egress hook.
    pub fn egress(mut self) -> Self
    where
        T: EgressHook<App>,
    {
        self.hooks.egress = Some(self.source.clone());
        self
    }

    /// Installs the value as the tunnel hook.
    pub fn tunnel(mut self) -> Self
    where
        T: TunnelHook<App>,
    {
        self.hooks.tunnel = Some(self.source.clone());
        self
    }

    /// Installs the value as the HTTP request hook.
    pub fn http_request(mut self) -> Self
    where
        T: HttpRequestHook<App>,
    {
        self.hooks.http_request = Some(self.source.clone());
        self
    }

    /// Installs the value as the IP flow hook.
    pub fn ip_flow(mut self) -> Self
    where
        T: IpFlowHook<App>,
    {
        self.hooks.ip_flow = Some(self.source.clone());
        self
    }

    /// Installs the value as the DNS hook.
    pub fn dns(mut self) -> Self
    where
        T: DnsHook<App>,
    {
        self.hooks.dns = Some(self.source.clone());
        self
    }

    /// Installs the value as the request-end hook.
    pub fn request_end(mut self) -> Self
    where
        T: RequestEndHook<App>,
    {
        self.hooks.request_end = Some(self.source.clone());
        self
    }
}

impl<App: OxyExt, T> From<HooksOf<App, T>> for Hooks<App> {
    fn from(of: HooksOf<App, T>) -> Self {
        of.hooks
    }
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
            request_end: self.request_end.clone(),
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
            request_end: None,
        }
    }
}

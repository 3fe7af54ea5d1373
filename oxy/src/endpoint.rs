//! A running endpoint: its settings and the application's state for it.

use crate::app::OxyExt;
use crate::hooks::Target;
use crate::http::client::UpstreamClient;
use crate::settings::EndpointSettings;
use std::sync::{Arc, OnceLock};

/// An endpoint as hooks see it.
pub struct Endpoint<App: OxyExt> {
    /// The endpoint's settings, `app:` section included.
    pub settings: EndpointSettings<App::EndpointAppSettings>,
    /// The application's state for this endpoint, from [`crate::OxyApp::endpoint_context`].
    pub app: App::EndpointContext,
    /// `tcp.target`, parsed (`None` when it is empty).
    pub tcp_target: Option<Target>,
    /// The pooled upstream client of an HTTP endpoint, made on first use.
    pub(crate) http_client: OnceLock<Arc<UpstreamClient<App>>>,
}

impl<App: OxyExt> Endpoint<App> {
    /// An endpoint from its (validated) settings and the application's state for it.
    pub fn new(
        settings: EndpointSettings<App::EndpointAppSettings>,
        app: App::EndpointContext,
    ) -> Self {
        Self {
            tcp_target: settings.tcp.target.parse().ok(),
            settings,
            app,
            http_client: OnceLock::new(),
        }
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

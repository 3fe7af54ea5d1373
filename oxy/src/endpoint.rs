//! A running endpoint: its settings and the application's state for it.

use crate::app::OxyExt;
use crate::hooks::Target;
use crate::settings::EndpointSettings;

/// An endpoint as hooks see it.
pub struct Endpoint<App: OxyExt> {
    /// The endpoint's settings, `app:` section included.
    pub settings: EndpointSettings<App::EndpointAppSettings>,
    /// The application's state for this endpoint, from [`crate::OxyApp::endpoint_context`].
    pub app: App::EndpointContext,
    /// `tcp.target`, parsed (`None` when it is empty).
    pub tcp_target: Option<Target>,
}

impl<App: OxyExt> Endpoint<App> {
    /// The endpoint's unique name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The endpoint's `app:` settings.
    pub fn app_settings(&self) -> &App::EndpointAppSettings {
        &self.settings.app
    }
}

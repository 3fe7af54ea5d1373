//! The zero-code proxy: Oxy driven by its YAML settings alone, with no hooks.

use oxy::app::AppServerSettings;
use oxy::prelude::*;

/// An application with no hooks and no settings of its own.
struct Proxy;

impl OxyExt for Proxy {
    type AppSettings = NoSettings;
    type EndpointAppSettings = NoSettings;
    type EndpointContext = ();
    type IngressConnectionContext = ();
    type RequestContext = ();
    type IpTunnelContext = ();
    type DnsCacheItem = ();
}

#[async_trait]
impl OxyApp for Proxy {
    fn name() -> &'static str {
        "oxy"
    }

    fn version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    fn description() -> &'static str {
        "A proxy driven by its YAML settings alone"
    }

    async fn start(_settings: AppServerSettings<Self>) -> anyhow::Result<Hooks<Self>> {
        Ok(Hooks::default())
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<Proxy>()
}

//! An L4 gate: each endpoint admits only clients from the networks its settings allow.

use oxy::prelude::*;

/// Settings of each endpoint's `app:` section.
#[oxy_app_settings]
pub struct AllowlistSettings {
    /// Networks whose clients may connect to this endpoint (`127.0.0.0/8`, `::1/128`);
    /// an empty list admits everyone.
    pub allow: Vec<ipnet::IpNet>,
}

#[metrics]
mod client_allowlist {
    /// Connections refused because the client is not on the endpoint's allowlist.
    pub fn refused_total(endpoint: &str) -> Counter;
}

#[derive(OxyExt)]
#[oxy(endpoint_settings = AllowlistSettings)]
struct ClientAllowlist;

struct Gate;

#[async_trait]
impl IngressHook<ClientAllowlist> for Gate {
    async fn on_connection(
        &self,
        cx: &mut IngressConnectionContext<ClientAllowlist>,
    ) -> IngressAction {
        let client = cx.client_addr.ip();
        let allow = &cx.endpoint.app_settings().allow;
        if allow.is_empty() || allow.iter().any(|net| net.contains(&client)) {
            return IngressAction::Continue;
        }
        client_allowlist::refused_total(cx.endpoint.name()).inc();
        IngressAction::Reject(format!("{client} is not on the allowlist"))
    }
}

#[async_trait]
impl OxyApp for ClientAllowlist {
    async fn start(_: AppServerSettings<Self>, _: ()) -> anyhow::Result<Hooks<Self>> {
        Ok(Hooks::of(Gate).ingress().into())
    }
}

fn main() -> OxyResult<()> {
    oxy::bootstrap::<ClientAllowlist>()
}

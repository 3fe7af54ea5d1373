//! The fixture's IP flow hook: drops one destination, upgrades UDP flows and TCP flows
//! to one port, as the endpoint's settings say, and counts the flows of each tunnel.

use crate::Fixture;
use oxy::prelude::*;

/// Decides IP flows from the endpoint's `app:` settings.
pub struct Flows;

#[async_trait]
impl IpFlowHook<Fixture> for Flows {
    async fn on_flow(&self, cx: &mut IpFlowContext<Fixture>) -> IpFlowAction {
        // The tunnel's state: how many flows it has seen.
        cx.app += 1;
        let settings = cx.endpoint.app_settings();
        tracing::info!(
            flow = cx.app,
            protocol = cx.protocol,
            source = %cx.source,
            destination = %cx.destination,
            port = ?cx.destination_port,
            "fixture saw an IP flow"
        );
        if settings.ip_drop_destination == cx.destination.to_string() {
            return IpFlowAction::Drop("fixture drops this destination".into());
        }
        match cx.protocol {
            17 if settings.ip_upgrade_udp => IpFlowAction::UpgradeToUdp,
            6 if settings.ip_upgrade_tcp_port != 0
                && cx.destination_port == Some(settings.ip_upgrade_tcp_port) =>
            {
                IpFlowAction::UpgradeToTcp
            }
            _ => IpFlowAction::Forward,
        }
    }
}

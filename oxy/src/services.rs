//! What the connection tasks of an endpoint share: the hooks, DNS and the audit log
//! (shared by every endpoint), and the endpoint's egress policy.

use crate::app::{Hooks, OxyExt};
use crate::dns::DnsResolver;
use crate::offramp::policy::EgressPolicy;
use crate::settings::{EndpointEgressSettings, HappyEyeballsSettings};
use crate::telemetry::audit::AuditLog;
use std::sync::Arc;

/// Shared, read-only services for an endpoint's connection tasks.
pub struct Services<App: OxyExt> {
    /// The application's hooks.
    pub hooks: Hooks<App>,
    /// Name resolution (one resolver and cache for every endpoint).
    pub resolver: Arc<DnsResolver<App>>,
    /// Where the endpoint's traffic may go.
    pub policy: EgressPolicy,
    /// How TCP connections to names are raced.
    pub happy_eyeballs: HappyEyeballsSettings,
    /// Where audit records go.
    pub audit: AuditLog,
}

impl<App: OxyExt> Services<App> {
    /// The services of an endpoint whose `egress:` section is `egress`: these, with the
    /// endpoint's policy.
    pub fn for_endpoint(&self, egress: &EndpointEgressSettings) -> Self {
        Self {
            hooks: self.hooks.clone(),
            resolver: self.resolver.clone(),
            policy: self.policy.for_endpoint(egress),
            happy_eyeballs: self.happy_eyeballs.clone(),
            audit: self.audit.clone(),
        }
    }
}

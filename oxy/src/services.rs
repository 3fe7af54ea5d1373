//! What every connection task shares: the hooks, DNS, the egress policy and the audit log.

use crate::app::{Hooks, OxyExt};
use crate::dns::DnsResolver;
use crate::offramp::policy::EgressPolicy;
use crate::settings::HappyEyeballsSettings;
use crate::telemetry::audit::AuditLog;

/// Shared, read-only services for connection tasks.
pub struct Services<App: OxyExt> {
    /// The application's hooks.
    pub hooks: Hooks<App>,
    /// Name resolution.
    pub resolver: DnsResolver<App>,
    /// Where traffic may go.
    pub policy: EgressPolicy,
    /// How TCP connections to names are raced.
    pub happy_eyeballs: HappyEyeballsSettings,
    /// Where audit records go.
    pub audit: AuditLog,
}

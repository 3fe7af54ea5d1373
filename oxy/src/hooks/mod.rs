//! Hook traits: one file per trait, with its context and its action enum.
//!
//! Every method has a default that does the ordinary proxy thing, so an application
//! implements only what it changes.

mod dns;
mod egress;
mod http_request;
mod ingress;
mod ip_flow;
mod numeric_host;
mod tunnel;

pub use dns::{DnsAction, DnsContext, DnsHook};
pub use egress::{
    EgressAction, EgressContext, EgressHook, InternalService, ProxyHeaderVersion, Target,
    TargetHost, TargetParseError, UpstreamProxy, host_matches,
};
pub use http_request::{
    HttpBody, HttpRequestHook, RequestAction, RequestContext, ResponseAction, Upstream,
};
pub use ingress::{
    ConnectionEnd, ConnectionSummary, IngressAction, IngressConnectionContext, IngressHook,
    Transport,
};
pub use ip_flow::{IpFlowAction, IpFlowContext, IpFlowHook};
pub use numeric_host::{BadNumericHost, parse_numeric_ipv4};
pub use tunnel::{
    InnerAction, InnerProtocol, Inspection, TunnelAction, TunnelContext, TunnelHook, TunnelSummary,
};

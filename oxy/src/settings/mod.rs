//! Settings: the [`Settings`] trait, the framework's sections, YAML loading and generation.

mod dns;
mod documented_yaml;
mod egress;
mod endpoint;
mod errors;
mod http;
mod ip;
mod load;
pub(crate) mod location;
mod open_proxy;
mod security;
mod server;
mod std_impls;
mod telemetry;
mod tls_interception;
mod validate;

pub use dns::{DnsGroupSettings, DnsProtocol, DnsServerSettings, DnsSettings};
pub use documented_yaml::to_documented_yaml;
pub use egress::{EgressSettings, EndpointEgressSettings, HappyEyeballsSettings};
pub use endpoint::{
    CertificateSettings, ClientAuth, EndpointLimits, EndpointProtocol, EndpointSettings,
    ProxyProtocolMode, ProxyProtocolSettings, TcpForwardSettings, TlsPolicy, TlsSettings,
    TlsVersion, TunnelSettings, UdpForwardSettings, UdpProxyHeader,
};
pub(crate) use errors::display_path;
pub use errors::{ConfigError, ConfigErrors, PathSegment, SettingError};
pub use http::{
    ConnectIpSettings, ConnectUdpSettings, H3Settings, HttpClientSettings, HttpLimits,
    HttpSettings, ProxyAuthSettings, ProxyUser, Revocation, UserLimitSettings,
};
pub use ip::{IpOffRamp, IpSettings, TunSettings};
pub use load::{from_yaml_str, load_file};
pub use open_proxy::open_proxy_warnings;
pub use security::{OnViolation, SeccompMode, SecuritySettings};
pub use server::{NoSettings, Scheduling, ServerSection, ServerSettings};
pub use telemetry::{
    AuditSettings, LogFormat, LogSettings, ProfilingSettings, SentrySettings, TelemetrySettings,
    TracingSettings,
};
pub use tls_interception::TlsInterceptionSettings;

use serde::{Serialize, de::DeserializeOwned};
use std::collections::BTreeMap;

/// Doc comments (and examples for empty lists) keyed by the YAML path of the setting
/// they describe (`["endpoints", "0", "listen"]`), collected by [`Settings::add_docs`].
#[derive(Debug, Default)]
pub struct DocMap {
    comments: BTreeMap<Vec<String>, Vec<&'static str>>,
    examples: BTreeMap<Vec<String>, serde_yaml::Value>,
}

impl DocMap {
    /// Records the doc comment lines of the setting at `path`.
    pub fn insert(&mut self, path: Vec<String>, lines: &'static [&'static str]) {
        if !lines.is_empty() {
            self.comments.insert(path, lines.to_vec());
        }
    }

    /// Adds `lines` after the doc comment lines of the setting at `path`, with an empty
    /// comment line between.
    pub fn append(&mut self, path: Vec<String>, lines: &'static [&'static str]) {
        if lines.is_empty() {
            return;
        }
        let comments = self.comments.entry(path).or_default();
        if !comments.is_empty() {
            comments.push("");
        }
        comments.extend_from_slice(lines);
    }

    /// Records an example element for the (empty) list at `path`.
    pub fn insert_example(&mut self, path: Vec<String>, example: serde_yaml::Value) {
        self.examples.insert(path, example);
    }

    /// The doc comment lines of the setting at `path`.
    pub fn comments(&self, path: &[String]) -> &[&'static str] {
        self.comments.get(path).map_or(&[], Vec::as_slice)
    }

    /// The example element recorded for the list at `path`.
    pub fn example(&self, path: &[String]) -> Option<&serde_yaml::Value> {
        self.examples.get(path)
    }
}

/// A settings type: serde both ways, a default, and doc comments for generated YAML.
///
/// Derive it with [`#[oxy_app_settings]`](crate::oxy_app_settings). Leaf types (numbers,
/// strings, addresses, durations, ...) implement it with no docs; implement it the same
/// way (an empty `impl`) for a custom leaf type of your own.
pub trait Settings:
    Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Adds the doc comments of this value's fields, under `path`, to `docs`.
    fn add_docs(&self, path: &[String], docs: &mut DocMap) {
        let _ = (path, docs);
    }

    /// A value worth showing as a commented example where a list of this type is empty
    /// in generated YAML: the default of a settings struct; `None` for leaf types.
    fn example() -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// The type's own doc comment, shown above an application's settings section in
    /// generated YAML (the macro fills it in).
    fn type_docs() -> &'static [&'static str]
    where
        Self: Sized,
    {
        &[]
    }
}

//! Firewall rules: their settings, and the compiled form requests are matched against.

use oxy::http_types::{HeaderName, Method, request::Parts};
use oxy::oxy_app_settings;
use regex::Regex;

/// One rule: a request that meets every condition the rule sets is blocked. Within a
/// list, any entry matches. A rule with body conditions blocks only a body that
/// meets one of them (in a request that meets the others).
#[oxy_app_settings]
pub struct RuleSettings {
    /// Name shown on the block page, in logs and in `firewall_blocked_total{rule}`.
    pub name: String,
    /// Hosts: `example.com` (exactly), `.example.com` (it and its subdomains),
    /// `*.example.com` (its subdomains only). CONNECT targets count too.
    pub hosts: Vec<String>,
    /// Path prefixes (`/admin`).
    pub path_prefixes: Vec<String>,
    /// Path regular expressions (`^/api/v[0-9]+/debug`).
    pub path_patterns: Vec<String>,
    /// Methods (`DELETE`, `CONNECT`).
    pub methods: Vec<String>,
    /// Headers as `name: regular expression` (`user-agent: (?i)sqlmap`).
    pub headers: Vec<String>,
    /// Strings the raw request body must not contain, found while it streams.
    pub body_contains: Vec<String>,
    /// Form fields as `field: string`: a URL-encoded or multipart field (or uploaded
    /// file) of that name whose decoded value contains the string.
    pub form_fields: Vec<String>,
}

/// A host pattern.
enum HostPattern {
    Exact(String),
    /// The domain and its subdomains.
    Domain(String),
    /// Subdomains only.
    Subdomains(String),
}

/// A rule, checked and compiled.
pub struct Rule {
    pub name: String,
    hosts: Vec<HostPattern>,
    path_prefixes: Vec<String>,
    path_patterns: Vec<Regex>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Regex)>,
    pub body_contains: Vec<String>,
    pub form_fields: Vec<(String, String)>,
}

impl Rule {
    /// Compiles `settings`; the error names the rule and the bad entry.
    pub fn compile(settings: &RuleSettings) -> anyhow::Result<Self> {
        let name = &settings.name;
        anyhow::ensure!(!name.is_empty(), "a rule has no name");
        let context = |what: &str, entry: &str| format!("rule {name}: bad {what} {entry:?}");
        let regex = |what: &str, entry: &str| {
            Regex::new(entry).map_err(|e| anyhow::anyhow!("{}: {e}", context(what, entry)))
        };
        let pair = |what: &str, entry: &String| {
            entry
                .split_once(':')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| anyhow::anyhow!("{} (want `name: value`)", context(what, entry)))
        };
        let hosts = settings.hosts.iter().map(|host| {
            let host = host.to_ascii_lowercase();
            match (host.strip_prefix("*."), host.strip_prefix('.')) {
                (Some(domain), _) => HostPattern::Subdomains(domain.to_string()),
                (_, Some(domain)) => HostPattern::Domain(domain.to_string()),
                _ => HostPattern::Exact(host),
            }
        });
        let methods = settings.methods.iter().map(|m| {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| anyhow::anyhow!("{}", context("method", m)))
        });
        let headers = settings.headers.iter().map(|entry| {
            let (header, pattern) = pair("header", entry)?;
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| anyhow::anyhow!("{}", context("header", entry)))?;
            Ok((header, regex("header pattern", &pattern)?))
        });
        let rule = Rule {
            name: name.clone(),
            hosts: hosts.collect(),
            path_prefixes: settings.path_prefixes.clone(),
            path_patterns: settings
                .path_patterns
                .iter()
                .map(|p| regex("path pattern", p))
                .collect::<anyhow::Result<_>>()?,
            methods: methods.collect::<anyhow::Result<_>>()?,
            headers: headers.collect::<anyhow::Result<_>>()?,
            body_contains: settings.body_contains.clone(),
            form_fields: (settings.form_fields.iter())
                .map(|f| pair("form field", f))
                .collect::<anyhow::Result<_>>()?,
        };
        anyhow::ensure!(
            rule.body_contains.iter().all(|s| !s.is_empty()),
            "rule {name}: an empty body_contains string would block every body"
        );
        Ok(rule)
    }

    /// Whether the rule looks at bodies.
    pub fn inspects_body(&self) -> bool {
        !self.body_contains.is_empty() || !self.form_fields.is_empty()
    }

    /// Whether the request's head meets the rule's host, path, method and header
    /// conditions (a CONNECT has no path: path conditions never match it).
    pub fn head_matches(&self, request: &Parts, host: &str) -> bool {
        let path = request.uri.path();
        let is_connect = request.method == Method::CONNECT;
        let any = |empty: bool, found: bool| empty || found;
        any(
            self.hosts.is_empty(),
            self.hosts.iter().any(|p| p.matches(host)),
        ) && any(
            self.path_prefixes.is_empty(),
            !is_connect && self.path_prefixes.iter().any(|p| path.starts_with(p)),
        ) && any(
            self.path_patterns.is_empty(),
            !is_connect && self.path_patterns.iter().any(|p| p.is_match(path)),
        ) && any(
            self.methods.is_empty(),
            self.methods.contains(&request.method),
        ) && any(
            self.headers.is_empty(),
            self.headers.iter().any(|(name, pattern)| {
                (request.headers.get_all(name).iter())
                    .any(|v| v.to_str().is_ok_and(|v| pattern.is_match(v)))
            }),
        )
    }
}

impl HostPattern {
    fn matches(&self, host: &str) -> bool {
        let subdomain_of = |domain: &str| {
            host.strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.'))
        };
        match self {
            HostPattern::Exact(exact) => host == exact,
            HostPattern::Domain(domain) => host == domain || subdomain_of(domain),
            HostPattern::Subdomains(domain) => subdomain_of(domain),
        }
    }
}

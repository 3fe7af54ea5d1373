//! Firewall rules: their settings, and the compiled form requests are matched against.

use oxy::hooks::host_matches;
use oxy::http::path::normalize;
use oxy::http::stream_search::StreamSearch;
use oxy::http_types::{HeaderName, Method, header, request::Parts};
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
    /// Path prefixes (`/admin`), matched against the normalized path (`/%61dmin`,
    /// `//admin` and `/x/../admin` are `/admin`).
    pub path_prefixes: Vec<String>,
    /// Path regular expressions (`^/api/v[0-9]+/debug`), on the normalized path.
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

/// What rules look at in a request, worked out once for all of them.
pub struct Head<'a> {
    pub request: &'a Parts,
    /// The host, without port or brackets.
    pub host: &'a str,
    /// The normalized path; `None` for a CONNECT, which has none.
    pub path: Option<String>,
}

impl<'a> Head<'a> {
    pub fn of(request: &'a Parts) -> Self {
        let host = request.uri.host().or_else(|| {
            let host = request.headers.get(header::HOST)?.to_str().ok()?;
            Some(host.rsplit_once(':').map_or(host, |(h, _)| h))
        });
        Head {
            request,
            host: host.unwrap_or_default().trim_matches(['[', ']']),
            path: (request.method != Method::CONNECT).then(|| normalize(request.uri.path())),
        }
    }
}

/// A rule, checked and compiled.
pub struct Rule {
    pub settings: RuleSettings,
    path_patterns: Vec<Regex>,
    headers: Vec<(HeaderName, Regex)>,
    /// The body conditions, each a fresh search to copy for a request.
    pub watches: Vec<Watch>,
}

/// A string a body (`field: None`) or a form field must not contain, for a rule.
#[derive(Clone)]
pub struct Watch {
    pub rule: String,
    pub field: Option<String>,
    pub search: StreamSearch,
}

/// Feeds `chunk` (of the raw body, or of form field `field`) to every watch of it, so
/// none loses its place; the rule of the first that found its string.
pub fn first_hit(watches: &mut [Watch], field: Option<&str>, chunk: &[u8]) -> Option<String> {
    let mut hit = None;
    for watch in watches.iter_mut().filter(|w| w.field.as_deref() == field) {
        if watch.search.found_in(chunk) && hit.is_none() {
            hit = Some(watch.rule.clone());
        }
    }
    hit
}

impl Rule {
    /// Compiles `settings`; the error names the rule and the bad entry.
    pub fn compile(settings: &RuleSettings) -> anyhow::Result<Self> {
        let name = &settings.name;
        anyhow::ensure!(!name.is_empty(), "a rule has no name");
        let bad = |what: &str, entry: &str, why: &dyn std::fmt::Display| {
            anyhow::anyhow!("rule {name}: bad {what} {entry:?}: {why}")
        };
        let regex = |what, entry: &str| Regex::new(entry).map_err(|e| bad(what, entry, &e));
        let pair = |what, entry: &String| match entry.split_once(':') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(bad(what, entry, &"want `name: value`")),
        };
        for method in &settings.methods {
            Method::from_bytes(method.as_bytes()).map_err(|e| bad("method", method, &e))?;
        }
        anyhow::ensure!(
            settings.body_contains.iter().all(|s| !s.is_empty()),
            "rule {name}: an empty body_contains string would block every body"
        );
        let headers = settings.headers.iter().map(|entry| {
            let (header, pattern) = pair("header", entry)?;
            let header =
                HeaderName::from_bytes(header.as_bytes()).map_err(|e| bad("header", entry, &e))?;
            Ok((header, regex("header pattern", &pattern)?))
        });
        Ok(Rule {
            settings: settings.clone(),
            path_patterns: (settings.path_patterns.iter())
                .map(|p| regex("path pattern", p))
                .collect::<anyhow::Result<_>>()?,
            headers: headers.collect::<anyhow::Result<_>>()?,
            watches: (settings.form_fields.iter())
                .map(|f| pair("form field", f).map(|(f, s)| (Some(f), s)))
                .chain(settings.body_contains.iter().map(|s| Ok((None, s.clone()))))
                .map(|watch| {
                    watch.map(|(field, string)| Watch {
                        rule: name.clone(),
                        field,
                        search: StreamSearch::new(string),
                    })
                })
                .collect::<anyhow::Result<_>>()?,
        })
    }

    /// Whether the rule looks at bodies.
    pub fn inspects_body(&self) -> bool {
        !self.watches.is_empty()
    }

    /// Whether the request's head meets the rule's host, path, method and header
    /// conditions (path conditions never match a CONNECT).
    pub fn head_matches(&self, head: &Head) -> bool {
        let (s, request, host) = (&self.settings, head.request, head.host);
        let path = head.path.as_deref();
        let any = |empty: bool, found: bool| empty || found;
        any(
            s.hosts.is_empty(),
            s.hosts.iter().any(|p| host_matches(p, host)),
        ) && any(
            s.path_prefixes.is_empty(),
            (s.path_prefixes.iter()).any(|p| path.is_some_and(|path| path.starts_with(p))),
        ) && any(
            self.path_patterns.is_empty(),
            (self.path_patterns.iter()).any(|p| path.is_some_and(|path| p.is_match(path))),
        ) && any(
            s.methods.is_empty(),
            s.methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(request.method.as_str())),
        ) && any(
            self.headers.is_empty(),
            (self.headers.iter()).any(|(name, pattern)| {
                (request.headers.get_all(name).iter())
                    .any(|v| v.to_str().is_ok_and(|v| pattern.is_match(v)))
            }),
        )
    }
}

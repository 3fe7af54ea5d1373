//! Settings: the generated YAML round trip, doc comments, defaults and error reports.

#![allow(clippy::unwrap_used, missing_docs)]
use oxy::oxy_app_settings;
use oxy::settings::{ServerSettings, from_yaml_str, to_documented_yaml};
use std::time::Duration;

/// A nested part of the test app's settings.
#[oxy_app_settings]
pub struct Upstream {
    /// Where the upstream lives.
    #[serde(default = "default_address")]
    pub address: String,
    /// How long to wait for it.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
}

fn default_address() -> String {
    "upstream.internal:443".into()
}

fn default_timeout() -> Duration {
    Duration::from_millis(1500)
}

/// The test app's mode.
#[oxy_app_settings]
pub enum Mode {
    /// Watch only.
    #[default]
    Observe,
    /// Block what matches.
    Enforce,
}

/// The test app's `app:` section.
#[oxy_app_settings]
pub struct AppSection {
    /// Whether the firewall blocks or only watches.
    pub mode: Mode,
    /// Upstreams tried in order.
    #[serde(default = "default_upstreams")]
    pub upstreams: Vec<Upstream>,
    /// Spare upstreams, none by default.
    pub spares: Vec<Upstream>,
    /// Request budget per client.
    #[serde(default = "default_budget")]
    pub budget: u32,
}

fn default_upstreams() -> Vec<Upstream> {
    vec![Upstream::default()]
}

fn default_budget() -> u32 {
    100
}

/// The test app's per-endpoint section.
#[oxy_app_settings]
pub struct EndpointSection {
    /// Tag added to this endpoint's log lines.
    pub tag: String,
}

type TestSettings = ServerSettings<AppSection, EndpointSection>;

fn yaml_value<T: serde::Serialize>(v: &T) -> serde_yaml::Value {
    serde_yaml::to_value(v).unwrap()
}

#[test]
fn generated_yaml_parses_back_to_the_defaults() {
    let defaults = TestSettings::default();
    let yaml = to_documented_yaml(&defaults).unwrap();
    let parsed: TestSettings = from_yaml_str(&yaml, "generated").unwrap();
    assert_eq!(yaml_value(&parsed), yaml_value(&defaults));
}

#[test]
fn generated_yaml_carries_the_app_doc_comments() {
    let yaml = to_documented_yaml(&TestSettings::default()).unwrap();
    for comment in [
        "# Whether the firewall blocks or only watches.",
        "# Upstreams tried in order.",
        "# Where the upstream lives.",
        "# How long to wait for it.",
        "# Tag added to this endpoint's log lines.",
        "# Runtime worker threads; 0 means one per CPU core.",
    ] {
        assert!(yaml.contains(comment), "missing {comment:?} in:\n{yaml}");
    }
    // The application's settings types show their own doc comments above their sections.
    assert!(
        yaml.contains("#\n# The test app's `app:` section.\napp:"),
        "{yaml}"
    );
    assert!(
        yaml.contains("# The test app's per-endpoint section.\n"),
        "{yaml}"
    );
    // An empty list of structs shows a commented example element with its docs.
    let spares = yaml.split("spares: []").nth(1).unwrap();
    assert!(spares.contains("# For example:"), "{yaml}");
    assert!(spares.contains("#   # Where the upstream lives."), "{yaml}");
}

#[test]
fn defaults_honour_serde_default_functions() {
    let s = TestSettings::default();
    assert_eq!(s.app.budget, 100);
    assert_eq!(s.app.mode, Mode::Observe);
    assert_eq!(s.app.upstreams[0].address, "upstream.internal:443");
    assert_eq!(s.app.upstreams[0].timeout, Duration::from_millis(1500));
    assert_eq!(s.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(s.endpoints.len(), 1);
    // Missing keys in a file take the same defaults.
    let parsed: TestSettings = from_yaml_str("app:\n  mode: enforce\n", "t").unwrap();
    assert_eq!(parsed.app.mode, Mode::Enforce);
    assert_eq!(parsed.app.budget, 100);
    let empty: TestSettings = from_yaml_str("# nothing\n", "t").unwrap();
    assert_eq!(yaml_value(&empty), yaml_value(&TestSettings::default()));
}

#[test]
fn unknown_keys_and_wrong_types_name_path_and_line() {
    let err = from_yaml_str::<AppSection, EndpointSection>(
        "app:\n  budget: 3\n  bugdet: 4\n",
        "app.yaml",
    )
    .unwrap_err();
    assert_eq!(err.errors.len(), 1);
    let e = &err.errors[0];
    assert_eq!(e.path, "app.bugdet");
    assert_eq!(e.location, Some((3, 3)));
    assert!(
        e.message.contains("unknown field `bugdet`"),
        "{}",
        e.message
    );

    let err = from_yaml_str::<AppSection, EndpointSection>(
        "endpoints:\n  - name: a\n    listen: [\"127.0.0.1:80\", \"nope\"]\n",
        "t.yaml",
    )
    .unwrap_err();
    assert_eq!(err.errors[0].path, "endpoints[0].listen[1]");
    assert_eq!(err.errors[0].location.map(|l| l.0), Some(3));
    assert!(err.to_string().starts_with("t.yaml:3:"), "{err}");

    let err =
        from_yaml_str::<AppSection, EndpointSection>("app:\n  mode: loud\n", "t").unwrap_err();
    assert_eq!(err.errors[0].path, "app.mode");
    assert_eq!(err.errors[0].location.map(|l| l.0), Some(2));
}

#[test]
fn every_type_error_and_unknown_key_is_reported_at_once_in_file_order() {
    let yaml = [
        "server:",
        "  worker_threads: many",
        "  shutdown_timeuot: 5s",
        "endpoints:",
        "  - name: a",
        "    listen: [\"127.0.0.1:80\", \"nope\", \"also nope\"]",
        "    limits:",
        "      max_connections: lots",
        "  - name: b",
        "    colour: blue",
        "app:",
        "  budget: -1",
        "",
    ]
    .join("\n");
    let err = from_yaml_str::<AppSection, EndpointSection>(&yaml, "t.yaml").unwrap_err();
    let found: Vec<(&str, Option<usize>)> = err
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.location.map(|l| l.0)))
        .collect();
    assert_eq!(
        found,
        [
            ("server.worker_threads", Some(2)),
            ("server.shutdown_timeuot", Some(3)),
            ("endpoints[0].listen[1]", Some(6)),
            ("endpoints[0].listen[2]", Some(6)),
            ("endpoints[0].limits.max_connections", Some(8)),
            ("endpoints[1].colour", Some(10)),
            ("app.budget", Some(12)),
        ],
        "{err}"
    );
    assert!(
        err.errors[1]
            .message
            .contains("unknown field `shutdown_timeuot`")
    );
    assert!(
        err.errors[4]
            .message
            .contains("invalid type: string \"lots\""),
        "{err}"
    );
}

#[test]
fn bad_first_elements_and_nested_lists_end_and_say_where() {
    // A bad first element and a bad sibling: the first is reported at its index.
    let err = from_yaml_str::<AppSection, EndpointSection>(
        "endpoints:\n  - name: a\n    listen: [nope, \"also nope\"]\n",
        "t.yaml",
    )
    .unwrap_err();
    assert_eq!(err.errors[0].path, "endpoints[0].listen[0]", "{err}");
    assert!(
        err.errors
            .iter()
            .all(|e| e.path.starts_with("endpoints[0].listen")),
        "{err}"
    );
    // A list of lists whose elements all fail, and a wrong element type for a list of
    // structs: reported, and the search ends.
    for yaml in [
        "endpoints:\n  - name: a\n    listen: [[x], [y]]\n",
        "endpoints: [5, {name: b, colour: blue}]\n",
        "endpoints: [[[[[1]]]]]\n",
    ] {
        let err = from_yaml_str::<AppSection, EndpointSection>(yaml, "t.yaml").unwrap_err();
        assert!(!err.errors.is_empty(), "{yaml}");
        assert!(err.errors.len() <= 50, "{yaml}: {err}");
        // No false report for the good endpoint: `colour` is only wrong in endpoints[1].
        assert!(!err.to_string().contains("endpoints[0].colour"), "{err}");
    }
}

#[test]
fn semantic_problems_are_all_reported_at_once() {
    let yaml = "\
endpoints:
  - name: a
    listen: [127.0.0.1:7001]
  - name: a
    listen: [127.0.0.1:7001, 0.0.0.0:7002, 127.0.0.1:7002]
  - name: 'bad name'
    listen: []
    tls:
      enabled: true
telemetry:
  listen: 127.0.0.1:7003
  sentry:
    dsn: not a dsn
";
    let err = from_yaml_str::<AppSection, EndpointSection>(yaml, "multi.yaml").unwrap_err();
    let got: Vec<(&str, usize)> = err
        .errors
        .iter()
        .map(|e| (e.path.as_str(), e.location.unwrap().0))
        .collect();
    assert_eq!(
        got,
        vec![
            ("endpoints[1].name", 4),
            ("endpoints[1].listen[0]", 5),
            ("endpoints[1].listen[2]", 5),
            ("endpoints[2].name", 6),
            ("endpoints[2].listen", 7),
            ("endpoints[2].tls.certificates", 9),
            ("telemetry.sentry.dsn", 13),
        ],
        "{err}"
    );
}

mod certificates {
    use super::*;
    use boring::asn1::Asn1Time;
    use boring::hash::MessageDigest;
    use boring::pkey::PKey;
    use boring::x509::{X509, X509NameBuilder};
    use std::path::Path;

    fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let key = PKey::from_ec_key(
            boring::ec::EcKey::generate(
                &boring::ec::EcGroup::from_curve_name(boring::nid::Nid::X9_62_PRIME256V1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        let mut subject = X509NameBuilder::new().unwrap();
        subject.append_entry_by_text("CN", name).unwrap();
        let subject = subject.build();
        let mut cert = X509::builder().unwrap();
        cert.set_version(2).unwrap();
        cert.set_subject_name(&subject).unwrap();
        cert.set_issuer_name(&subject).unwrap();
        cert.set_pubkey(&key).unwrap();
        cert.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        cert.set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        cert.sign(&key, MessageDigest::sha256()).unwrap();
        let chain = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&chain, cert.build().to_pem().unwrap()).unwrap();
        std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        (chain, key_path)
    }

    fn tls_yaml(chain: &Path, key: &Path) -> String {
        format!(
            "endpoints:\n  - name: tls\n    tls:\n      enabled: true\n      certificates:\n        - chain: {}\n          key: {}\n",
            chain.display(),
            key.display()
        )
    }

    #[test]
    fn a_matching_chain_and_key_load() {
        let dir = tempfile::tempdir().unwrap();
        let (chain, key) = self_signed(dir.path(), "one");
        from_yaml_str::<AppSection, EndpointSection>(&tls_yaml(&chain, &key), "t").unwrap();
    }

    #[test]
    fn missing_mismatched_and_garbage_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (chain, _) = self_signed(dir.path(), "one");
        let (_, other_key) = self_signed(dir.path(), "two");
        let err = from_yaml_str::<AppSection, EndpointSection>(&tls_yaml(&chain, &other_key), "t")
            .unwrap_err();
        assert!(err.errors[0].message.contains("does not match"), "{err}");
        assert_eq!(err.errors[0].location.map(|l| l.0), Some(6));

        let missing = dir.path().join("missing.key");
        let err = from_yaml_str::<AppSection, EndpointSection>(&tls_yaml(&chain, &missing), "t")
            .unwrap_err();
        assert_eq!(err.errors[0].path, "endpoints[0].tls.certificates[0].key");
        assert_eq!(err.errors[0].location.map(|l| l.0), Some(7));

        let garbage = dir.path().join("garbage.crt");
        std::fs::write(&garbage, "not a certificate").unwrap();
        let err =
            from_yaml_str::<AppSection, EndpointSection>(&tls_yaml(&garbage, &other_key), "t")
                .unwrap_err();
        assert_eq!(err.errors[0].path, "endpoints[0].tls.certificates[0].chain");
        assert!(
            err.errors[0].message.contains("no valid PEM certificate"),
            "{err}"
        );
    }
}

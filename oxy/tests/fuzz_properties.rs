//! Property tests over the checks of the fuzz targets (`fuzz/src/lib.rs`, compiled in
//! here so there is one copy of each): arbitrary inputs and small mutations of valid
//! seeds, a bounded number of cases per target. `make fuzz` runs the same checks under
//! libFuzzer for longer.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../fuzz/src/lib.rs"]
mod checks;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::Config;

/// Arbitrary bytes, or one of `target`'s seeds with up to eight edits (replace, insert or
/// delete a byte, or cut the rest), so that runs explore near-valid inputs too.
fn inputs(target: &str) -> impl Strategy<Value = Vec<u8>> {
    let seeds = checks::seeds(target);
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let edit = (any::<Index>(), 0u8..4, any::<u8>());
    let mutated =
        (any::<Index>(), prop::collection::vec(edit, 0..8)).prop_map(move |(i, edits)| {
            let mut input = i.get(&seeds).clone();
            for (at, kind, byte) in edits {
                let at = at.index(input.len() + 1);
                match kind {
                    0 if at < input.len() => input[at] = byte,
                    1 => input.insert(at, byte),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    3 => input.truncate(at),
                    _ => {}
                }
            }
            input
        });
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        3 => mutated,
    ]
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(8192))]

    #[test]
    fn capsule_codec(data in inputs("capsule_codec")) {
        checks::check_capsule_codec(&data);
    }

    #[test]
    fn ip_capsules(data in inputs("ip_capsules")) {
        checks::check_ip_capsules(&data);
    }

    #[test]
    fn ip_packet(data in inputs("ip_packet")) {
        checks::check_ip_packet(&data);
    }

    #[test]
    fn tls_hello(data in inputs("tls_hello")) {
        checks::check_tls_hello(&data);
    }

    #[test]
    fn proxy_protocol_datagram(data in inputs("proxy_protocol_datagram")) {
        checks::check_proxy_protocol_datagram(&data);
    }

    #[test]
    fn uri_template(data in inputs("uri_template")) {
        checks::check_uri_template(&data);
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn body_taps(data in inputs("body_taps")) {
        checks::check_body_taps(&data);
    }

    /// Small alphabets, so that needles and `&`, `=` and boundaries occur often.
    #[test]
    fn body_taps_small_alphabet(
        plan in prop::collection::vec(0u8..6, 0..8),
        needle in prop::collection::vec(prop::sample::select(b"ab".to_vec()), 0..5),
        body in prop::collection::vec(prop::sample::select(b"ab&=X-\r\n".to_vec()), 0..200),
    ) {
        let mut data = vec![plan.len() as u8];
        data.extend_from_slice(&plan);
        data.push(needle.len() as u8);
        data.extend_from_slice(&needle);
        data.extend_from_slice(&body);
        checks::check_body_taps(&data);
    }

    #[test]
    fn proxy_protocol_tcp(data in inputs("proxy_protocol_tcp")) {
        checks::check_proxy_protocol_tcp(&data);
    }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn settings_yaml(data in inputs("settings_yaml")) {
        checks::check_settings_yaml(&data);
    }

    #[test]
    fn http1_request_head(data in inputs("http1_request_head")) {
        checks::check_http1_request_head(&data);
    }
}

/// Every seed passes its own check as it is.
#[test]
fn seeds_pass() {
    type Check = fn(&[u8]);
    let checks: [(&str, Check); 10] = [
        ("capsule_codec", checks::check_capsule_codec),
        ("ip_capsules", checks::check_ip_capsules),
        ("ip_packet", checks::check_ip_packet),
        ("tls_hello", checks::check_tls_hello),
        ("proxy_protocol_tcp", checks::check_proxy_protocol_tcp),
        (
            "proxy_protocol_datagram",
            checks::check_proxy_protocol_datagram,
        ),
        ("uri_template", checks::check_uri_template),
        ("settings_yaml", checks::check_settings_yaml),
        ("http1_request_head", checks::check_http1_request_head),
        ("body_taps", checks::check_body_taps),
    ];
    assert_eq!(checks.map(|(name, _)| name), checks::TARGETS);
    for (name, check) in checks {
        for seed in checks::seeds(name) {
            check(&seed);
        }
    }
}

/// The harnesses reach what they fuzz: valid seeds give PROXY headers, templates match,
/// and requests go through the whole HTTP pipeline to its answers.
#[test]
fn harnesses_reach_oxy() {
    for seed in checks::seeds("proxy_protocol_datagram") {
        let (facts, len) = oxy::onramp::proxy_protocol::split_datagram(&seed).unwrap();
        assert!(facts.is_some() && len > 16, "{seed:02x?}");
    }
    let tcp = checks::seeds("proxy_protocol_tcp");
    for seed in tcp.iter().filter(|s| s[0] == 0) {
        let (facts, rest) = checks::tcp_read_header(&seed[1..], false, true).unwrap();
        let facts = facts.unwrap();
        assert!(seed.ends_with(&rest), "{facts:?} {rest:?}");
    }
    let untrusted = checks::tcp_read_header(&tcp[0][1..], true, false).unwrap_err();
    assert_eq!(untrusted.as_label(), "untrusted");

    let loaded: Vec<bool> = checks::seeds("settings_yaml")
        .iter()
        .map(|seed| {
            let text = std::str::from_utf8(seed).unwrap();
            let settings = oxy::settings::from_yaml_str::<
                oxy::settings::NoSettings,
                oxy::settings::NoSettings,
            >(text, "seed.yaml");
            settings.is_ok()
        })
        .collect();
    assert!(
        loaded.iter().any(|&ok| ok),
        "no settings seed loads: {loaded:?}"
    );

    let answer = |request: &str| String::from_utf8(checks::http_exchange(request.as_bytes()));
    let status = |request: &str| answer(request).unwrap().lines().next().unwrap().to_string();
    assert_eq!(
        status("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        status("GET http://0x7f.1:8080/ HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        status("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"),
        "HTTP/1.1 403 Forbidden"
    );
    assert_eq!(
        status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    assert_eq!(status("NOT HTTP\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let two = answer("GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(two.matches("HTTP/1.1 404").count(), 2, "{two}");
    // A CONNECT refused before hyper reads it is answered once, by hyper, which then
    // reads the request behind it.
    let refused = answer(
        "CONNECT 192.0.2.7:443 HTTP/1.1\r\nHost: 192.0.2.7:443\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    assert!(refused.starts_with("HTTP/1.1 403 Forbidden"), "{refused}");
    assert_eq!(refused.matches("HTTP/1.1 ").count(), 2, "{refused}");
    assert!(refused.contains("HTTP/1.1 404 Not Found"), "{refused}");
}

/// Writes the seeds as libFuzzer corpus files under `fuzz/seeds/<target>/`, which
/// `make fuzz` passes to each target: `cargo test -p oxy --test fuzz_properties --
/// --ignored write_seed_corpus`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when the seeds change"]
fn write_seed_corpus() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    for target in checks::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in checks::seeds(target).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i}")), seed).unwrap();
        }
    }
}

/// The QUIC seed, a client Initial aioquic made, sniffs as QUIC with its server name and
/// ALPN: Oxy reads another implementation's Initial, not only its own test vectors.
#[test]
fn aioquic_initial_sniffs_as_quic() {
    use oxy::tls::interception::quic_initial::{Sniffed, sniff_initials};
    let initial = include_bytes!("../../fuzz/src/quic-initial.bin");
    match sniff_initials([&initial[..]]) {
        Sniffed::Quic(hello) => {
            assert_eq!(hello.sni.as_deref(), Some("origin.oxy.test"));
            assert_eq!(hello.alpn, ["h3"]);
        }
        other => panic!("aioquic's Initial sniffed as {other:?}"),
    }
}

//! Microbenchmarks of hot pure functions: PROXY v2 header parsing (every datagram of a
//! UDP endpoint behind a load balancer), the egress policy check (every resolved
//! address of every connection) and the capsule codec (every CONNECT-UDP datagram over
//! HTTP/2 and HTTP/1.1) and the urlencoded form tap (every chunk of an inspected upload,
//! whose cost must not depend on how many `&` it holds) and a DNS cache hit (every
//! connection to a name). Run with `cargo bench -p oxy`.

// criterion_group! generates undocumented public functions.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use oxy::offramp::policy::EgressPolicy;
use oxy::offramp::proxy_header::v2_header;
use oxy::onramp::proxy_protocol::split_datagram;
use oxy::settings::EgressSettings;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

fn proxy_v2_parsing(c: &mut Criterion) {
    let client = SocketAddr::from(([203, 0, 113, 7], 51_000));
    let local = SocketAddr::from(([192, 0, 2, 1], 443));
    let tlvs = [
        (0x02, b"relay.example".to_vec()),
        (0xe0, b"tenant-42".to_vec()),
    ];
    let Ok(mut datagram) = v2_header(client, local, true, &tlvs) else {
        panic!("the benchmark's PROXY header could not be built");
    };
    datagram.extend_from_slice(&[0u8; 1200]);
    c.bench_function("proxy_v2_split_datagram_with_tlvs", |b| {
        b.iter(|| split_datagram(black_box(&datagram)).is_ok())
    });
}

fn egress_policy(c: &mut Criterion) {
    let policy = EgressPolicy::new(&EgressSettings {
        allow: vec![
            "127.0.0.0/8".parse().unwrap_or_else(|_| unreachable!()),
            "10.20.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
        ],
        deny_ports: vec![25],
        ..EgressSettings::default()
    });
    let public = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)), 443);
    let denied = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)), 443);
    let mapped = SocketAddr::new(
        IpAddr::V6(Ipv4Addr::new(10, 20, 3, 4).to_ipv6_mapped()),
        443,
    );
    let v6 = SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0x4860, 0, 0, 0, 0, 0, 0x8888)),
        443,
    );
    let mut group = c.benchmark_group("egress_policy_check");
    for (name, addr) in [
        ("public_v4", public),
        ("private_denied", denied),
        ("mapped_allowed", mapped),
        ("public_v6", v6),
    ] {
        group.bench_function(name, |b| b.iter(|| policy.check(black_box(addr)).is_ok()));
    }
    group.finish();
}

fn capsule_codec(c: &mut Criterion) {
    use bytes::BytesMut;
    use oxy::http::capsule::{Capsule, CapsuleCodec, encode_udp_datagram_capsule, udp_payload};
    use tokio_util::codec::Decoder;
    let payload = [0x5a_u8; 1200];
    // 32 capsules as they arrive in one read of a busy stream.
    let mut wire = BytesMut::new();
    for _ in 0..32 {
        encode_udp_datagram_capsule(&mut wire, &payload);
    }
    let wire = wire.freeze();
    c.bench_function("capsule encode, 1200-byte datagram", |b| {
        let mut out = BytesMut::with_capacity(2048);
        b.iter(|| {
            out.clear();
            encode_udp_datagram_capsule(&mut out, black_box(&payload));
        })
    });
    c.bench_function("capsule decode, 32 x 1200-byte datagrams", |b| {
        b.iter(|| {
            let mut codec = CapsuleCodec::new(65_552);
            let mut buf = BytesMut::from(black_box(&wire[..]));
            let mut bytes = 0;
            while let Ok(Some(Capsule::Datagram(d))) = codec.decode(&mut buf) {
                if let Ok(Some(udp)) = udp_payload(&d) {
                    bytes += udp.len();
                }
            }
            bytes
        })
    });
}

/// The urlencoded tap over 800 KB in 16 KB chunks: `a&a&…` (400,000 fields, the worst
/// case: one inspector call per 2 bytes), 64-byte fields (12,800), and a body without `&`
/// (one field cut across every chunk). Linear: the cost follows the bytes and the
/// fields, never fields times bytes (the quadratic version cost 15x more for `a&a&…`).
fn urlencoded_tap(c: &mut Criterion) {
    use bytes::Bytes;
    use oxy::http::form::{FormInspector, form_tap};
    struct Nothing;
    impl FormInspector for Nothing {}
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().build() else {
        panic!("no runtime for the benchmark");
    };
    let size = 800 * 1024;
    let mut group = c.benchmark_group("urlencoded_tap_800k");
    group.sample_size(20);
    for (name, body) in [
        ("fields_a_amp", b"a&".repeat(size / 2)),
        (
            "fields_64_bytes",
            [b"field=".as_slice(), &[b'v'; 57], b"&"]
                .concat()
                .repeat(size / 64),
        ),
        ("one_long_field", b"a".repeat(size)),
    ] {
        let chunks: Vec<Bytes> = body.chunks(16 * 1024).map(Bytes::copy_from_slice).collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let Some(mut tap) =
                        form_tap("application/x-www-form-urlencoded", Box::new(Nothing))
                    else {
                        return;
                    };
                    for chunk in &chunks {
                        black_box(tap.on_chunk(chunk).await);
                    }
                    black_box(tap.on_end().await);
                })
            })
        });
    }
    group.finish();
}

/// A hit in a full DNS cache: by `&str`, no lock shared by all lookups, no allocation.
fn dns_cache_hit(c: &mut Criterion) {
    use oxy::dns::{Cached, DnsCache, Family};
    use std::time::{Duration, Instant};
    let cache = DnsCache::<()>::new(10_000);
    let expires = Instant::now() + Duration::from_secs(3600);
    let addrs: std::sync::Arc<[IpAddr]> =
        std::sync::Arc::from(vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    for i in 0..10_000 {
        let value = Cached::Addresses(addrs.clone(), ());
        cache.insert(&format!("host{i}.example"), Family::V4, value, expires);
    }
    let now = Instant::now();
    c.bench_function("dns_cache_hit", |b| {
        b.iter(|| {
            cache
                .get(black_box("host4242.example"), Family::V4, now)
                .is_some()
        })
    });
}

criterion_group!(
    benches,
    dns_cache_hit,
    proxy_v2_parsing,
    egress_policy,
    capsule_codec,
    urlencoded_tap
);
criterion_main!(benches);

//! Microbenchmarks of hot pure functions: PROXY v2 header parsing (every datagram of a
//! UDP endpoint behind a load balancer) and the egress policy check (every resolved
//! address of every connection). Run with `cargo bench -p oxy`.

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

criterion_group!(benches, proxy_v2_parsing, egress_policy);
criterion_main!(benches);

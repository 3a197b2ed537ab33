//! VRRP advert parse / emit throughput (criterion): `cargo bench -p lb-vrrp --bench wire`.
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use lb_vrrp::wire::{
    AdvertInterval, AdvertRepr, Auth, Packet, Priority, Version, Vrid, VRRP_MCAST_V4, VRRP_MCAST_V6,
};

fn reprs() -> Vec<(&'static str, AdvertRepr, IpAddr, IpAddr)> {
    let v4 = |d| IpAddr::V4(Ipv4Addr::new(198, 18, 0, d));
    let vrid = Vrid::new(51).expect("valid VRID");
    vec![
        (
            "v2_pass_1vip",
            AdvertRepr {
                version: Version::V2,
                vrid,
                priority: Priority(150),
                interval: AdvertInterval::ONE_SECOND,
                auth: Auth::password("7road123"),
                addresses: vec![v4(100)],
            },
            v4(1),
            IpAddr::V4(VRRP_MCAST_V4),
        ),
        (
            "v3_ipv4_16vips",
            AdvertRepr {
                version: Version::V3,
                vrid,
                priority: Priority(150),
                interval: AdvertInterval::from_centis(1).expect("valid interval"),
                auth: Auth::None,
                addresses: (100..116).map(v4).collect(),
            },
            v4(1),
            IpAddr::V4(VRRP_MCAST_V4),
        ),
        (
            "v3_ipv6_1vip",
            AdvertRepr {
                version: Version::V3,
                vrid,
                priority: Priority(150),
                interval: AdvertInterval::from_centis(10).expect("valid interval"),
                auth: Auth::None,
                addresses: vec![IpAddr::V6(Ipv6Addr::new(
                    0xfd00, 0x18, 0, 0, 0, 0, 0, 0x100,
                ))],
            },
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(VRRP_MCAST_V6),
        ),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("vrrp_wire");
    for (name, repr, src, dst) in reprs() {
        let bytes = repr.to_bytes(src, dst).expect("encodable");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| AdvertRepr::parse(&Packet::new_unchecked(black_box(&bytes[..])), src, dst))
        });
        let mut buf = vec![0u8; repr.buffer_len()];
        g.bench_function(format!("emit/{name}"), |b| {
            b.iter(|| black_box(&repr).emit(&mut Packet::new_unchecked(&mut buf[..]), src, dst))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

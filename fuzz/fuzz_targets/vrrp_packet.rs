//! No panic on any bytes, and anything that parses must round-trip through emit.
//! Under `cfg(fuzzing)` checksums always verify, so the fuzzer reaches the field checks.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_vrrp::wire::{AdvertRepr, Packet, VRRP_MCAST_V4, VRRP_MCAST_V6};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&family, bytes)) = data.split_first() else {
        return;
    };
    let (src, dst) = if family & 1 == 0 {
        (
            IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)),
            IpAddr::V4(VRRP_MCAST_V4),
        )
    } else {
        (
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1)),
            IpAddr::V6(VRRP_MCAST_V6),
        )
    };
    let Ok(packet) = Packet::new_checked(bytes) else {
        return;
    };
    let _ = (
        packet.version(),
        packet.vrid(),
        packet.priority(),
        packet.count(),
        packet.checksum(),
    );
    let _ = (packet.address(family & 1 == 1, 0), packet.auth_data());
    if let Ok(repr) = AdvertRepr::parse(&packet, src, dst) {
        let out = repr
            .to_bytes(src, dst)
            .expect("a parsed advert must re-emit");
        let again =
            AdvertRepr::parse(&Packet::new_unchecked(&out[..]), src, dst).expect("re-parse");
        assert_eq!(again, repr);
    }
});

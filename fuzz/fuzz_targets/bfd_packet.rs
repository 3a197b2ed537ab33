//! `lb_health::bfd::packet::ControlPacket::parse` on any datagram payload (what a BFD peer,
//! or anyone who can reach port 3784, sends): no panic, and a packet it accepts encodes
//! (`to_bytes`, the 24-byte mandatory section lb sends) to bytes that parse to the same
//! packet.
#![no_main]

use lb_health::bfd::packet::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = ControlPacket::parse(data) else {
        return;
    };
    let bytes = packet.to_bytes();
    assert_eq!(
        ControlPacket::parse(&bytes),
        Ok(packet),
        "re-encoding of {packet:?}"
    );
});

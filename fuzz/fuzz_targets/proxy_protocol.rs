//! `lb_proxy::proxy_protocol::parse` on any bytes (a client's first bytes on an
//! `accept-proxy` listener): no panic; a complete header consumes no more than it was
//! given, every shorter prefix of it asks for more instead of failing (a header split
//! across TCP segments is read, not refused), and what it parsed to re-encodes, in v2 and,
//! where v1 can say it, in v1, to bytes that parse back to the same header.
#![no_main]

use lb_proxy::proxy_protocol::{parse, ProxyHeader, Transport, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some((header, consumed))) = parse(data) else {
        return;
    };
    assert!(
        consumed <= data.len(),
        "consumed {consumed} of {}",
        data.len()
    );
    // Every prefix for short headers; for long ones (v2 with TLVs, up to 16 KiB) a stride,
    // so that a run stays linear.
    let stride = (consumed / 256).max(1);
    for cut in (1..consumed).step_by(stride) {
        assert_eq!(
            parse(&data[..cut]),
            Ok(None),
            "prefix of {cut} bytes of {consumed}"
        );
    }
    let v2 = header.to_bytes(Version::V2);
    assert_eq!(parse(&v2), Ok(Some((header, v2.len()))), "v2 re-encoding");
    let v1_can_say_it = match header {
        ProxyHeader::Local => true,
        ProxyHeader::Proxy { transport, .. } => transport == Transport::Stream,
    };
    if v1_can_say_it {
        let v1 = header.to_bytes(Version::V1);
        assert_eq!(parse(&v1), Ok(Some((header, v1.len()))), "v1 re-encoding");
    }
});

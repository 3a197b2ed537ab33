//! `lb_health::probe::ReplyReader` (the SMTP check's reader of a server's replies, RFC 5321
//! §4.2) on any bytes a server sends: no panic, and the replies read do not depend on how
//! the bytes were split into reads. The input's first two bytes choose where the rest is
//! split in two; what the reader makes of the two reads (the replies, then the error or the
//! wait for more) must be what it makes of the whole in one read.
#![no_main]

use lb_health::probe::{Reply, ReplyError, ReplyReader};
use libfuzzer_sys::fuzz_target;

/// The replies read, then the error that stopped the reading, if one did.
type Read = (Vec<Reply>, Option<ReplyError>);

/// Reads replies from `r` until it waits for more (`true`) or fails (`false`).
fn drain(r: &mut ReplyReader, read: &mut Read) -> bool {
    // Each reply consumes at least four octets (`NNN\n`): bounded by the input.
    for _ in 0..=r.buffered() {
        match r.next_reply() {
            Ok(Some(reply)) => read.0.push(reply),
            Ok(None) => return true,
            Err(e) => {
                read.1 = Some(e);
                return false;
            }
        }
    }
    panic!("next_reply made no progress on {} octets", r.buffered());
}

fuzz_target!(|data: &[u8]| {
    let Some((split, bytes)) = data.split_first_chunk::<2>() else {
        return;
    };
    let split = usize::from(u16::from_le_bytes(*split)) % (bytes.len() + 1);

    let mut whole = Read::default();
    let mut r = ReplyReader::default();
    r.push(bytes);
    drain(&mut r, &mut whole);

    let mut parts = Read::default();
    let mut r = ReplyReader::default();
    r.push(&bytes[..split]);
    if drain(&mut r, &mut parts) {
        r.push(&bytes[split..]);
        drain(&mut r, &mut parts);
    }
    assert_eq!(whole, parts, "split at {split} of {}", bytes.len());
});

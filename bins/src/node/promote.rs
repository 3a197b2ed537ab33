//! keepalived's `promote_secondaries` (vrrp_instance): the instance's interface gets
//! `net.ipv4.conf.<IF>.promote_secondaries = 1`, so that deleting the primary IPv4 address
//! of a subnet promotes a secondary one (a VIP in that subnet) instead of deleting them
//! all. As keepalived (`set_promote_secondaries` / `reset_promote_secondaries`), set when
//! an instance starts if it was 0, and put back to 0 when lb-node stops. A VMAC instance
//! is refused it (keepalived: "automatically set for vmacs - ignoring").

use std::collections::HashSet;
use std::sync::Mutex;

/// The interfaces whose setting lb-node changed (it was 0), to put back at the stop.
static CHANGED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn path(ifname: &str) -> String {
    format!("/proc/sys/net/ipv4/conf/{ifname}/promote_secondaries")
}

/// Sets `promote_secondaries` on `ifname` unless it is on already; failures are logged
/// (the instance runs on without it).
pub(crate) fn enable(ifname: &str) {
    // `all` and `default` are sysctl directories, not interfaces: `all` would set every
    // interface's.
    if ifname.is_empty()
        || ifname.contains('/')
        || ifname.starts_with('.')
        || ifname == "all"
        || ifname == "default"
    {
        tracing::warn!(interface = %ifname, "promote_secondaries not set: not an interface name");
        return;
    }
    let p = path(ifname);
    match std::fs::read_to_string(&p) {
        Ok(v) if v.trim() != "0" => {}
        Ok(_) => match std::fs::write(&p, "1") {
            Ok(()) => {
                tracing::info!(interface = %ifname, "promote_secondaries set");
                CHANGED
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert_with(HashSet::new)
                    .insert(ifname.to_owned());
            }
            Err(e) => {
                tracing::warn!(interface = %ifname, error = %e, "cannot set promote_secondaries");
            }
        },
        Err(e) => {
            tracing::warn!(interface = %ifname, error = %e, "cannot read promote_secondaries")
        }
    }
}

/// Puts back to 0 every interface [`enable`] changed (lb-node stops).
pub(crate) fn restore() {
    let changed = CHANGED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take()
        .unwrap_or_default();
    for ifname in changed {
        match std::fs::write(path(&ifname), "0") {
            Ok(()) => tracing::info!(interface = %ifname, "promote_secondaries put back to 0"),
            // The interface may be gone, and its setting with it.
            Err(e) => {
                tracing::debug!(interface = %ifname, error = %e, "promote_secondaries not put back")
            }
        }
    }
}

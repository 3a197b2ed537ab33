//! Accept_Mode False ([RFC 5798 §6.4.3]) enforced with nftables, as keepalived's
//! `no_accept` is.
//!
//! A Master that is not the address owner and runs with Accept_Mode False "MUST NOT accept
//! packets addressed to the IPvX address(es) associated with the virtual router", yet must
//! still answer ARP and Neighbor Discovery for them. The kernel has no such notion: the
//! addresses are local once added. So, as keepalived 2.x does when it has no iptables
//! (`use_vmac or no_accept/strict specified, but no firewall configured - using
//! nftables`), one nftables table holds the addresses of every such Master in a set and
//! drops traffic to and from them, ND excepted (ARP is not IP and never passes these
//! hooks). The table, `inet lb_vrrp`:
//!
//! ```text
//! table inet lb_vrrp {
//!     set vips4 { type ipv4_addr; }
//!     set vips6 { type ipv6_addr; }
//!     chain in {
//!         type filter hook input priority filter - 1; policy accept;
//!         icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
//!         ip daddr @vips4 drop
//!         ip6 daddr @vips6 drop
//!     }
//!     chain out {
//!         type filter hook output priority filter - 1; policy accept;
//!         icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
//!         ip saddr @vips4 drop
//!         ip6 saddr @vips6 drop
//!     }
//! }
//! ```
//!
//! keepalived's own table is `ip keepalived` / `ip6 keepalived` with the same chains. The
//! rules are applied with the `nft` program (Debian package `nftables`), which needs
//! `CAP_NET_ADMIN`, as VIPs do.
//!
//! [RFC 5798 §6.4.3]: https://www.rfc-editor.org/rfc/rfc5798#section-6.4.3

use std::fmt::Write as _;
use std::net::IpAddr;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// The nftables table's name (family `inet`).
pub const TABLE: &str = "lb_vrrp";

/// Failure to apply the drop rules.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// `nft` could not be run (not installed: Debian package `nftables`).
    #[error("cannot run `nft` (install the nftables package): {0}")]
    Spawn(#[source] std::io::Error),
    /// `nft` refused the ruleset; its standard error.
    #[error("nft failed: {0}")]
    Nft(String),
}

/// The `inet lb_vrrp` table, installed: the addresses whose traffic is dropped.
#[derive(Debug)]
pub struct DropRules(());

impl DropRules {
    /// Creates the table if it is not there, and its sets and chains, and (re)writes the
    /// chains' rules. Idempotent, and keeps the sets' elements: several speakers in one
    /// process (one per sync group) or a restarted one share the table. A stale element
    /// left by a crash is removed by the speaker that owns the address, at its start.
    ///
    /// # Errors
    ///
    /// [`AcceptError`] if `nft` is missing or refuses (no `CAP_NET_ADMIN`, a kernel
    /// without nf_tables).
    pub async fn install() -> Result<Self, AcceptError> {
        nft(&ruleset()).await?;
        Ok(Self(()))
    }

    /// Drops traffic to and from `addrs` (a Master without Accept_Mode adds its VIPs
    /// before it adds them to the interface). Idempotent.
    ///
    /// # Errors
    ///
    /// [`AcceptError::Nft`].
    pub async fn drop_addresses(&self, addrs: &[IpAddr]) -> Result<(), AcceptError> {
        // With the table in the same transaction: another process may have removed it
        // (it goes once empty at a clean stop).
        nft(&(ruleset() + &elements("add", addrs))).await
    }

    /// Stops dropping traffic of `addrs`. Idempotent: an address not in the set is no
    /// error (added and deleted in one transaction, as nft 1.0.6 has no `destroy`).
    ///
    /// # Errors
    ///
    /// [`AcceptError::Nft`].
    pub async fn accept_addresses(&self, addrs: &[IpAddr]) -> Result<(), AcceptError> {
        Self::clear_stale(addrs).await
    }

    /// Takes `addrs` out of the sets of a table some earlier run installed, without
    /// installing one: for a speaker none of whose instances needs the table.
    ///
    /// # Errors
    ///
    /// [`AcceptError`], also when there is no table (nothing to clear) or no `nft`.
    pub async fn clear_stale(addrs: &[IpAddr]) -> Result<(), AcceptError> {
        nft(&(elements("add", addrs) + &elements("delete", addrs))).await
    }

    /// Deletes the table if both its sets are empty: for a process that stops cleanly
    /// after its speakers (a [`crate::driver::Speaker`] that stops takes its own addresses
    /// out of the sets). A table still holding another process's addresses stays. No error
    /// if there is no table.
    ///
    /// # Errors
    ///
    /// [`AcceptError`] (no `nft`, or it refused the deletion).
    pub async fn uninstall() -> Result<(), AcceptError> {
        for set in ["vips4", "vips6"] {
            match nft_output(&["list", "set", "inet", TABLE, set]).await? {
                // No table (or set): nothing to remove.
                None => return Ok(()),
                Some(listing) if listing.contains("elements") => return Ok(()),
                Some(_) => {}
            }
        }
        nft(&format!("delete table inet {TABLE}\n")).await
    }
}

/// The table, its sets and chains, created if missing and the chains' rules rewritten;
/// the sets' elements are kept (see [`DropRules::install`]).
fn ruleset() -> String {
    let nd = "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept";
    let hook = |h: &str| format!("{{ type filter hook {h} priority filter - 1; policy accept; }}");
    format!(
        "add table inet {TABLE}\n\
             add set inet {TABLE} vips4 {{ type ipv4_addr; }}\n\
             add set inet {TABLE} vips6 {{ type ipv6_addr; }}\n\
             add chain inet {TABLE} in {input}\n\
             add chain inet {TABLE} out {output}\n\
             flush chain inet {TABLE} in\n\
             flush chain inet {TABLE} out\n\
             add rule inet {TABLE} in {nd}\n\
             add rule inet {TABLE} in ip daddr @vips4 drop\n\
             add rule inet {TABLE} in ip6 daddr @vips6 drop\n\
             add rule inet {TABLE} out {nd}\n\
             add rule inet {TABLE} out ip saddr @vips4 drop\n\
             add rule inet {TABLE} out ip6 saddr @vips6 drop\n",
        input = hook("input"),
        output = hook("output"),
    )
}

/// `nft` commands that add (`verb` "add") or delete elements of both sets.
fn elements(verb: &str, addrs: &[IpAddr]) -> String {
    let mut s = String::new();
    for (set, v6) in [("vips4", false), ("vips6", true)] {
        let list: Vec<String> = addrs
            .iter()
            .filter(|a| a.is_ipv6() == v6)
            .map(ToString::to_string)
            .collect();
        if !list.is_empty() {
            let _ = writeln!(
                s,
                "{verb} element inet {TABLE} {set} {{ {} }}",
                list.join(", ")
            );
        }
    }
    s
}

/// Runs `nft ARGS`: its standard output, or `None` if it failed.
async fn nft_output(args: &[&str]) -> Result<Option<String>, AcceptError> {
    let out = tokio::process::Command::new("nft")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(AcceptError::Spawn)?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// Runs `nft -f -` with `script` on its standard input (one transaction: all or nothing).
async fn nft(script: &str) -> Result<(), AcceptError> {
    if script.is_empty() {
        return Ok(());
    }
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(AcceptError::Spawn)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(AcceptError::Spawn)?;
    }
    let out = child.wait_with_output().await.map_err(AcceptError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(AcceptError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_are_split_by_family() {
        let addrs: Vec<IpAddr> = ["198.18.0.100", "fd00:18::100", "198.18.0.101"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        assert_eq!(
            elements("add", &addrs),
            "add element inet lb_vrrp vips4 { 198.18.0.100, 198.18.0.101 }\n\
             add element inet lb_vrrp vips6 { fd00:18::100 }\n"
        );
        assert_eq!(elements("delete", &[]), "");
    }
}

//! Virtual addresses: add and remove them with netlink (rtnetlink; no `ip` subprocess),
//! and announce them with gratuitous ARP (IPv4, [RFC 5227 §3]) or unsolicited neighbour
//! advertisements (IPv6, [RFC 4861 §7.2.6]), as keepalived does on becoming master.
//!
//! Needs `CAP_NET_ADMIN` (netlink address changes) and `CAP_NET_RAW` (AF_PACKET and raw
//! ICMPv6 sockets).
//!
//! # Examples
//!
//! ```
//! use lb_vrrp::vip::Vip;
//!
//! // keepalived `virtual_ipaddress` syntax.
//! let vip: Vip = "198.18.0.100/24 dev eth0 label eth0:1".parse().unwrap();
//! assert_eq!(vip.prefix_len, 24);
//! assert_eq!(vip.label.as_deref(), Some("eth0:1"));
//! let frame = lb_vrrp::vip::garp_frame([2, 0, 0, 0, 0, 1], "198.18.0.100".parse().unwrap());
//! assert_eq!(&frame[12..14], &[0x08, 0x06]);
//! ```
//!
//! [RFC 5227 §3]: https://www.rfc-editor.org/rfc/rfc5227#section-3
//! [RFC 4861 §7.2.6]: https://www.rfc-editor.org/rfc/rfc4861#section-7.2.6

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use futures::TryStreamExt;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlag, AddressMessage};

/// Errors of VIP management.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// A `virtual_ipaddress` entry that does not parse.
    #[error("invalid virtual address {0:?}")]
    Syntax(String),
    /// The interface does not exist.
    #[error("no such interface {0:?}")]
    NoInterface(String),
    /// Netlink refused the request.
    #[error("netlink request for {addr} failed: {source}")]
    Netlink {
        /// The address concerned.
        addr: IpAddr,
        /// Netlink's error (boxed: it is large).
        source: Box<rtnetlink::Error>,
    },
    /// A socket operation failed.
    #[error("io error: {0}")]
    Io(#[from] io::Error),
    /// A `use_vmac` interface could not be set up ([`crate::vmac`]): which and why.
    #[error("use_vmac: {0}")]
    Vmac(String),
}

/// One virtual address (keepalived `virtual_ipaddress` entry).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Vip {
    /// The address.
    pub addr: IpAddr,
    /// Prefix length; keepalived's default is 32 (IPv4) / 128 (IPv6).
    pub prefix_len: u8,
    /// Device (`dev`); `None` means the instance's interface.
    pub dev: Option<String>,
    /// Label (`label eth0:1`), IPv4 only.
    pub label: Option<String>,
}

impl Vip {
    /// A host-prefix VIP on the instance's interface, without label.
    pub fn new(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
            dev: None,
            label: None,
        }
    }
}

impl FromStr for Vip {
    type Err = VipError;
    /// `ADDR[/LEN] [dev DEV] [label LABEL]`.
    fn from_str(s: &str) -> Result<Self, VipError> {
        let err = || VipError::Syntax(s.to_owned());
        let mut words = s.split_whitespace();
        let first = words.next().ok_or_else(err)?;
        let (a, p) = match first.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (first, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let mut vip = Self::new(addr);
        if let Some(p) = p {
            vip.prefix_len = p.parse().map_err(|_| err())?;
            if vip.prefix_len > if addr.is_ipv4() { 32 } else { 128 } {
                return Err(err());
            }
        }
        while let Some(w) = words.next() {
            let v = words.next().ok_or_else(err)?.to_owned();
            match w {
                "dev" => vip.dev = Some(v),
                "label" => vip.label = Some(v),
                _ => return Err(err()),
            }
        }
        Ok(vip)
    }
}

/// A netlink connection for address management.
#[derive(Debug, Clone)]
pub struct VipManager {
    pub(crate) handle: rtnetlink::Handle,
}

impl VipManager {
    /// Opens a netlink socket and spawns its connection task on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`VipError::Io`] if the netlink socket cannot be opened.
    pub fn new() -> Result<Self, VipError> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Self { handle })
    }

    /// Interface index of `name`.
    ///
    /// # Errors
    ///
    /// [`VipError::NoInterface`].
    pub fn ifindex(name: &str) -> Result<u32, VipError> {
        nix::net::if_::if_nametoindex(name).map_err(|_| VipError::NoInterface(name.to_owned()))
    }

    /// Adds `vip` to interface `ifindex` (its `dev` overrides). Adding an address that is
    /// already there succeeds. IPv6 addresses skip duplicate address detection
    /// (`IFA_F_NODAD`), as keepalived's do.
    ///
    /// # Errors
    ///
    /// [`VipError::Netlink`] if the kernel refuses.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the request may or may not have been applied.
    pub async fn add(&self, ifindex: u32, vip: &Vip) -> Result<(), VipError> {
        let index = match &vip.dev {
            Some(d) => Self::ifindex(d)?,
            None => ifindex,
        };
        let mut req = self.handle.address().add(index, vip.addr, vip.prefix_len);
        if let (Some(label), IpAddr::V4(_)) = (&vip.label, vip.addr) {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Label(label.clone()));
        }
        if vip.addr.is_ipv6() {
            req.message_mut()
                .header
                .flags
                .push(AddressHeaderFlag::Nodad);
        }
        match req.execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EEXIST => Ok(()),
            Err(source) => Err(VipError::Netlink {
                addr: vip.addr,
                source: Box::new(source),
            }),
        }
    }

    /// Removes `vip` from its interface; removing an absent address succeeds. Only the
    /// address with `vip`'s prefix length goes, as keepalived's `RTM_DELADDR` with
    /// `ifa_prefixlen` deletes it: the host's own `198.18.0.1/24` stays when a VIP
    /// `198.18.0.1` (/32) leaves.
    ///
    /// # Errors
    ///
    /// [`VipError::Netlink`] if the kernel refuses.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: the request may or may not have been applied.
    pub async fn remove(&self, ifindex: u32, vip: &Vip) -> Result<(), VipError> {
        for msg in self.find(ifindex, vip).await? {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc::EADDRNOTAVAIL => {}
                Err(source) => {
                    return Err(VipError::Netlink {
                        addr: vip.addr,
                        source: Box::new(source),
                    })
                }
            }
        }
        Ok(())
    }

    /// True if `vip`'s address, with its prefix length, is on its interface.
    ///
    /// # Errors
    ///
    /// [`VipError::Netlink`] if the dump fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (read-only).
    pub async fn is_present(&self, ifindex: u32, vip: &Vip) -> Result<bool, VipError> {
        Ok(!self.find(ifindex, vip).await?.is_empty())
    }

    async fn find(&self, ifindex: u32, vip: &Vip) -> Result<Vec<AddressMessage>, VipError> {
        let index = match &vip.dev {
            Some(d) => Self::ifindex(d)?,
            None => ifindex,
        };
        let found: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(vip.addr)
            .execute()
            .try_collect()
            .await
            .map_err(|source| VipError::Netlink {
                addr: vip.addr,
                source: Box::new(source),
            })?;
        Ok(found
            .into_iter()
            .filter(|m| m.header.prefix_len == vip.prefix_len)
            .collect())
    }
}

/// Whether interface `name` is marked `IFF_NOARP` (`ip link set … arp off`): keepalived
/// sends it no gratuitous ARP and no unsolicited NA (`send_gratuitous_arp`,
/// `ndisc_send_unsolicited_na`). `false` when it cannot be read.
pub fn no_arp(name: &str) -> bool {
    use nix::net::if_::InterfaceFlags;
    nix::ifaddrs::getifaddrs().is_ok_and(|mut ifs| {
        ifs.any(|i| i.interface_name == name && i.flags.contains(InterfaceFlags::IFF_NOARP))
    })
}

/// MAC address of interface `name` (from `getifaddrs`).
///
/// # Errors
///
/// [`VipError::NoInterface`] if the interface has no link-layer address.
pub fn mac_address(name: &str) -> Result<[u8; 6], VipError> {
    nix::ifaddrs::getifaddrs()
        .map_err(io::Error::from)?
        .filter(|i| i.interface_name == name)
        .find_map(|i| {
            i.address
                .and_then(|a| a.as_link_addr().and_then(|l| l.addr()))
        })
        .ok_or_else(|| VipError::NoInterface(name.to_owned()))
}

/// Whether the `getifaddrs` entry `i` is the address `ip`.
fn holds(i: &nix::ifaddrs::InterfaceAddress, ip: IpAddr) -> bool {
    i.address.is_some_and(|a| match ip {
        IpAddr::V4(v4) => a.as_sockaddr_in().is_some_and(|s| s.ip() == v4),
        IpAddr::V6(v6) => a.as_sockaddr_in6().is_some_and(|s| s.ip() == v6),
    })
}

/// One reading of the interfaces and their addresses (`getifaddrs(3)`, a netlink dump, in
/// the calling thread's network namespace), asked several questions: the driver reads it
/// once per link tick for all its instances. Empty when it cannot be read.
#[derive(Debug)]
pub struct Interfaces(Vec<nix::ifaddrs::InterfaceAddress>);

impl Interfaces {
    /// Reads the interfaces now.
    pub fn read() -> Self {
        Self(nix::ifaddrs::getifaddrs().map_or_else(|_| Vec::new(), Iterator::collect))
    }

    /// The entries of interface `name`, including its addresses labelled `name:…`:
    /// `getifaddrs` names an IPv4 address with a label after the label. Linux does not
    /// require the label to start with the interface's name (nor does keepalived): see
    /// [`has_address_labelled`](Self::has_address_labelled) for the others.
    fn of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a nix::ifaddrs::InterfaceAddress> {
        self.0.iter().filter(move |i| {
            i.interface_name == name
                || i.interface_name
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(':'))
        })
    }

    /// True if interface `name` is administratively up and has carrier
    /// (`IFF_UP | IFF_RUNNING`).
    pub fn link_is_up(&self, name: &str) -> bool {
        use nix::net::if_::InterfaceFlags;
        self.of(name).any(|i| {
            i.flags
                .contains(InterfaceFlags::IFF_UP | InterfaceFlags::IFF_RUNNING)
        })
    }

    /// True if interface `name` exists and can send multicast (`IFF_MULTICAST`).
    pub fn has_multicast(&self, name: &str) -> bool {
        use nix::net::if_::InterfaceFlags;
        self.of(name)
            .any(|i| i.flags.contains(InterfaceFlags::IFF_MULTICAST))
    }

    /// Whether an address labelled exactly `label` is `ip` (an IPv4 address whose label
    /// does not start with its interface's name, `label vip1`, or a VMAC's address
    /// labelled after its base, `eth0:1` on `vrrp.51`, shows under the label only).
    pub fn has_address_labelled(&self, label: &str, ip: IpAddr) -> bool {
        self.0
            .iter()
            .filter(|i| i.interface_name == label)
            .any(|i| holds(i, ip))
    }

    /// Whether interface `name` holds `ip`.
    pub fn has_address(&self, name: &str, ip: IpAddr) -> bool {
        self.of(name).any(|i| holds(i, ip))
    }

    /// The first address of `family` on interface `name` that is not in `exclude`: for
    /// IPv4 the primary address, for IPv6 the link-local one (RFC 5798 §5.1.2.1 requires a
    /// link-local source for IPv6 adverts).
    pub fn primary_address(&self, name: &str, v6: bool, exclude: &[IpAddr]) -> Option<IpAddr> {
        self.of(name).find_map(|i| {
            let a = i.address?;
            let ip = if v6 {
                let ip = a.as_sockaddr_in6()?.ip();
                // Link-local only: fe80::/10.
                ((ip.segments()[0] & 0xffc0) == 0xfe80).then_some(IpAddr::V6(ip))?
            } else {
                IpAddr::V4(a.as_sockaddr_in()?.ip())
            };
            (!exclude.contains(&ip)).then_some(ip)
        })
    }
}

/// True if interface `name` is administratively up and has carrier (`IFF_UP | IFF_RUNNING`);
/// see [`Interfaces::link_is_up`].
pub fn link_is_up(name: &str) -> bool {
    Interfaces::read().link_is_up(name)
}

/// True if interface `name` exists and can send multicast; see
/// [`Interfaces::has_multicast`].
pub fn has_multicast(name: &str) -> bool {
    Interfaces::read().has_multicast(name)
}

/// The first address of `family` on interface `name` that is not in `exclude`; see
/// [`Interfaces::primary_address`].
pub fn primary_address(name: &str, v6: bool, exclude: &[IpAddr]) -> Option<IpAddr> {
    Interfaces::read().primary_address(name, v6, exclude)
}

/// A gratuitous ARP request frame (Ethernet + ARP, 42 bytes) announcing that `ip` is at
/// `mac`, broadcast, as keepalived sends.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    f[32..38].copy_from_slice(&[0xff; 6]);
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// An unsolicited neighbour advertisement (ICMPv6 type 136, Override flag, target
/// link-layer address option) for `ip` at `mac`; the kernel fills the ICMPv6 checksum.
///
/// `router` sets the Router flag (RFC 4861 §4.4). RFC 5798 §6.4.1 sends it set; keepalived
/// sets it when the interface forwards IPv6 ([`ipv6_forwarding`]), as we do: a host that
/// uses the VIP as its default router and hears R = 0 drops it from its router list
/// (RFC 4861 §7.2.5), while a VIP that is only a service address is no router.
pub fn unsolicited_na(mac: [u8; 6], ip: Ipv6Addr, router: bool) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136;
    m[4] = if router { 0xa0 } else { 0x20 }; // Router | Override
    m[8..24].copy_from_slice(&ip.octets());
    m[24] = 2; // target link-layer address
    m[25] = 1; // 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

/// Whether interface `ifname` forwards IPv6 (`/proc/sys/net/ipv6/conf/IF/forwarding` is
/// not 0, in the calling thread's network namespace); `false` when it cannot be read (no
/// such interface, IPv6 off).
pub fn ipv6_forwarding(ifname: &str) -> bool {
    if ifname.is_empty() || ifname.contains('/') || ifname.starts_with('.') {
        return false;
    }
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"))
        .is_ok_and(|s| s.trim() != "0")
}

/// The netlink groups of link and address changes: `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`,
/// `RTMGRP_IPV6_IFADDR`.
const LINK_AND_ADDRESS_GROUPS: u32 = 0x1 | 0x10 | 0x100;

/// The kernel's notices of link and address changes (netlink `RTMGRP_LINK` and
/// `RTMGRP_IPV4/IPV6_IFADDR`), for reacting at once instead of at the next poll, as
/// keepalived does. Their content is not decoded: read the interfaces again
/// ([`Interfaces::read`]) after each.
pub struct LinkNotices(tokio::io::unix::AsyncFd<netlink_sys::Socket>);

impl std::fmt::Debug for LinkNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkNotices")
    }
}

impl LinkNotices {
    /// Subscribes. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// The socket's (no netlink, no tokio reactor).
    pub fn open() -> io::Result<Self> {
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        s.bind(&netlink_sys::SocketAddr::new(0, LINK_AND_ADDRESS_GROUPS))?;
        s.set_non_blocking(true)?;
        Ok(Self(crate::driver::register_fd(s)?))
    }

    /// Waits for the next notice about an interface `watched` says yes to (by index), and
    /// reads every one queued with it (up to 256 datagrams). Lost notices (`ENOBUFS`: the
    /// receive buffer overflowed) count as one about any interface.
    ///
    /// # Cancel safety
    /// Cancel safe: a notice not yet read stays queued.
    pub async fn next(&self, watched: impl Fn(u32) -> bool) {
        // On the future's stack, not the heap: a caller's select loop makes one per turn.
        // A longer datagram is cut short, which costs nothing: only headers are read.
        let mut buf = [0u8; 2048];
        loop {
            let Ok(mut guard) = self.0.readable().await else {
                return std::future::pending().await;
            };
            let mut hit = false;
            for _ in 0..256 {
                match guard.try_io(|s| s.get_ref().recv(&mut &mut buf[..], 0)) {
                    Ok(Ok(n)) => hit |= concerns(&buf[..n.min(buf.len())], &watched),
                    Ok(Err(e)) => {
                        if e.raw_os_error() != Some(libc::ENOBUFS) {
                            tracing::debug!(error = %e, "netlink notice");
                        }
                        hit = true;
                        break;
                    }
                    Err(_would_block) => break,
                }
            }
            if hit {
                return;
            }
        }
    }
}

/// Whether a datagram of link/address notices concerns an interface `watched` says yes to:
/// `RTM_NEWLINK`/`RTM_DELLINK` (`ifinfomsg`) and `RTM_NEWADDR`/`RTM_DELADDR`
/// (`ifaddrmsg`) carry the interface index 4 bytes into their body. A message it cannot
/// read counts (better one interface reading too many).
fn concerns(mut buf: &[u8], watched: &impl Fn(u32) -> bool) -> bool {
    const HEADER: usize = 16;
    while buf.len() >= HEADER {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        let index = buf
            .get(HEADER + 4..HEADER + 8)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
        match (ty, index) {
            (16 | 17 | 20 | 21, Some(i)) if !watched(i) => {}
            (16 | 17 | 20 | 21, _) => return true,
            _ => {}
        }
        if len < HEADER {
            return true;
        }
        buf = buf.get((len + 3) & !3..).unwrap_or_default();
    }
    false
}

/// Waits for `notices`' next about a `watched` interface, or forever without notices.
pub async fn next_notice(notices: Option<&LinkNotices>, watched: impl Fn(u32) -> bool) {
    match notices {
        Some(n) => n.next(watched).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notice(ty: u16, index: u32) -> Vec<u8> {
        let mut m = vec![0u8; 32];
        m[0..4].copy_from_slice(&32u32.to_ne_bytes());
        m[4..6].copy_from_slice(&ty.to_ne_bytes());
        m[20..24].copy_from_slice(&index.to_ne_bytes());
        m
    }

    /// Link and address notices name their interface; others, and unreadable ones, are
    /// judged as the function says.
    #[test]
    fn notices_concern_their_interface_only() {
        let watched = |i: u32| i == 7;
        for ty in [16, 17, 20, 21] {
            assert!(concerns(&notice(ty, 7), &watched));
            assert!(!concerns(&notice(ty, 8), &watched));
        }
        let mut two = notice(20, 8);
        two.extend(notice(21, 7));
        assert!(
            concerns(&two, &watched),
            "the second message of a datagram counts"
        );
        assert!(
            !concerns(&notice(24, 7), &watched),
            "a route notice is not ours"
        );
        let mut bad = notice(20, 8);
        bad[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(concerns(&bad, &watched), "an unreadable length counts");
        assert!(!concerns(&[0u8; 3], &watched));
    }

    #[test]
    fn parse_vips() {
        let v: Vip = "172.16.2.250".parse().unwrap();
        assert_eq!((v.prefix_len, v.dev, v.label), (32, None, None));
        let v: Vip = "fd00:18::100/64 dev veth0".parse().unwrap();
        assert_eq!((v.prefix_len, v.dev.as_deref()), (64, Some("veth0")));
        assert!("198.18.0.1/33".parse::<Vip>().is_err());
        assert!("198.18.0.1 label".parse::<Vip>().is_err());
        assert!("nonsense".parse::<Vip>().is_err());
    }

    #[test]
    fn frames() {
        let f = garp_frame([2, 1, 2, 3, 4, 5], Ipv4Addr::new(198, 18, 0, 100));
        assert_eq!(&f[28..32], &f[38..42]);
        let ip = "fd00:18::100".parse().unwrap();
        let na = unsolicited_na([2, 1, 2, 3, 4, 5], ip, false);
        assert_eq!(na[0], 136);
        assert_eq!(na[4], 0x20, "Override only");
        assert_eq!(&na[8..24], &ip.octets());
        assert_eq!(&na[26..32], &[2, 1, 2, 3, 4, 5]);
        let na = unsolicited_na([2, 1, 2, 3, 4, 5], ip, true);
        assert_eq!(na[4], 0xa0, "Router and Override");
        assert!(!ipv6_forwarding("no-such-if0"));
        assert!(!ipv6_forwarding("../all"));
    }
}

//! keepalived's `use_vmac`: the virtual router MAC address of [RFC 5798 §7.3] on a
//! macvlan interface of its own, so that the VIPs keep one MAC address across a failover
//! and neighbours need no gratuitous ARP to follow the Master.
//!
//! As keepalived 2.2 does:
//!
//! * The interface (default name `vrrp.<VRID>`, [`default_name`]) is a macvlan in
//!   private mode on the instance's `interface`, with MAC `00:00:5e:00:01:<VRID>` (IPv4)
//!   or `00:00:5e:00:02:<VRID>` (IPv6), [`virtual_router_mac`]. It is created at start
//!   whatever the state, stays up in Backup and Fault (only the VIPs come and go), is
//!   recreated when someone else deletes it, and is deleted at a clean stop. A macvlan of that name found at start (left by a crash, or
//!   handed over by a reload) is taken over when it has the right base, MAC and mode; a
//!   private macvlan on the base with another MAC is replaced. Any other interface by
//!   that name is left alone and is an error.
//! * The VIPs of the instance's family (without `dev`, or with `dev` naming the
//!   instance's interface) go on it; adverts are sent from it, so that their source MAC
//!   is the virtual router MAC ([RFC 5798 §7.2]), and received on it. With
//!   `vmac_xmit_base` ([`UseVmac::xmit_base`]) adverts go out of, and are read on, the
//!   base interface, with its MAC (required with unicast peers).
//! * The kernel delivers a multicast frame whose source MAC is one of its private
//!   macvlans' only to that macvlan: a Backup hears the Master's adverts on its own VMAC,
//!   never on the base interface. Hence the receive socket on the VMAC.
//! * IPv4: on the VMAC `arp_ignore=1`, `accept_local=1`, `rp_filter=0`,
//!   `promote_secondaries=1` and IPv6 off; on the base `arp_ignore=1` and `arp_filter=1`
//!   (the base must not answer ARP for the VIPs with its own MAC) and, unlike keepalived,
//!   `arp_announce=2`: otherwise the Master's replies, which leave from the base, ask for
//!   the client's MAC with a VIP as the sender address and the base's MAC, and every
//!   neighbour that hears the request points its entry for the VIP at the base (with
//!   keepalived as Master a client's entry for the VIP soon holds the Master's own MAC).
//!   All three are put back when the last VMAC on the base is deleted.
//! * IPv4, with `all.rp_filter` on: the kernel takes the higher of `all` and an
//!   interface's value, so the VMAC's 0 would not count, and a Backup would drop the
//!   Master's adverts (they arrive on the VMAC from an address routed through the base)
//!   and become Master too. As keepalived's `clear_rp_filter`, every interface below
//!   `all` is raised to it and `all` set to 0; put back after the last VMAC.
//! * IPv6: no generated address (`addr_gen_mode` none: the virtual MAC must not give an
//!   EUI-64 address); the base's link-local address is copied onto the VMAC (and follows
//!   it when it changes), and adverts leave from it.
//! * Joining the VRRP group on the VMAC would send IGMP / MLD reports from the virtual
//!   MAC: a Backup's would teach the switches that the Master's MAC is behind the Backup's
//!   port. With nftables (tables `ip` and `ip6` `lb_vrrp_vmac`, as keepalived's
//!   `keepalived` tables) each report leaving from a VMAC is duplicated to its base, where
//!   it goes out with the base's MAC, and dropped: snooping switches still forward the
//!   VRRP group, and on a Master the IPv6 VIPs' solicited-node groups, to this node.
//!   Without `nft` (Debian package `nftables`) this is warned about.
//!
//! Needs `CAP_NET_ADMIN` (links, sysctls, nftables).
//!
//! [RFC 5798 §7.3]: https://www.rfc-editor.org/rfc/rfc5798#section-7.3
//! [RFC 5798 §7.2]: https://www.rfc-editor.org/rfc/rfc5798#section-7.2

use std::collections::HashMap;
use std::io::{self, Read as _, Write as _};
use std::net::{IpAddr, Ipv6Addr};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressHeaderFlag, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkFlag, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::vip::VipError;
use crate::wire::Vrid;

/// `MACVLAN_MODE_PRIVATE` (linux/if_link.h): the macvlan neither sees nor is seen by the
/// base interface's other macvlans.
const MACVLAN_MODE_PRIVATE: u32 = 1;

/// The nftables tables (families `ip` and `ip6`) that move IGMP / MLD reports off the
/// VMACs onto their base interfaces.
pub const NFT_TABLE: &str = "lb_vrrp_vmac";

/// How long each answer to a netlink request may take before the request is given up.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(1);

/// The most datagrams read for one request's answers before it is given up.
const MAX_DATAGRAMS: usize = 8;

/// One instance's `use_vmac` (keepalived `use_vmac [NAME] [MAC]` and `vmac_xmit_base`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UseVmac {
    /// The macvlan interface's name (at most 15 bytes; default `vrrp.<VRID>`).
    pub name: String,
    /// Its MAC address (default the virtual router MAC of [RFC 5798 §7.3]).
    ///
    /// [RFC 5798 §7.3]: https://www.rfc-editor.org/rfc/rfc5798#section-7.3
    pub mac: [u8; 6],
    /// `vmac_xmit_base`: adverts leave from, and are read on, the base interface (with its
    /// MAC); the VIPs and their gratuitous ARPs stay on the VMAC. Default false.
    pub xmit_base: bool,
}

impl UseVmac {
    /// keepalived's defaults for `vrid`: name `vrrp.<VRID>`, the virtual router MAC of the
    /// family (`v6`), adverts from the VMAC.
    pub fn new(vrid: Vrid, v6: bool) -> Self {
        Self {
            name: default_name(vrid),
            mac: virtual_router_mac(vrid, v6),
            xmit_base: false,
        }
    }

    /// Checks the name (a valid interface name that is not `base`) and the MAC (unicast,
    /// not all zeros).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn validate(&self, base: &str) -> Result<(), String> {
        if !valid_ifname(&self.name) {
            return Err(format!(
                "use_vmac: {:?} is not a valid VMAC name (1 to 15 letters, digits, '.', '_' or '-')",
                self.name
            ));
        }
        if self.name == base {
            return Err(format!(
                "use_vmac: the VMAC cannot be the instance's interface {base:?}"
            ));
        }
        if self.mac[0] & 1 != 0 || self.mac == [0; 6] {
            return Err(format!(
                "use_vmac: {} is not a unicast MAC address",
                format_mac(self.mac)
            ));
        }
        Ok(())
    }
}

/// The virtual router MAC address of [RFC 5798 §7.3]: `00-00-5E-00-01-{VRID}` for IPv4,
/// `00-00-5E-00-02-{VRID}` for IPv6.
///
/// ```
/// use lb_vrrp::{vmac::virtual_router_mac, wire::Vrid};
/// let vrid = Vrid::new(51).unwrap();
/// assert_eq!(virtual_router_mac(vrid, false), [0, 0, 0x5e, 0, 1, 51]);
/// assert_eq!(virtual_router_mac(vrid, true), [0, 0, 0x5e, 0, 2, 51]);
/// ```
///
/// [RFC 5798 §7.3]: https://www.rfc-editor.org/rfc/rfc5798#section-7.3
pub fn virtual_router_mac(vrid: Vrid, v6: bool) -> [u8; 6] {
    [0, 0, 0x5e, 0, if v6 { 2 } else { 1 }, vrid.get()]
}

/// keepalived's default VMAC name: `vrrp.<VRID>`.
pub fn default_name(vrid: Vrid) -> String {
    format!("vrrp.{}", vrid.get())
}

/// A name this module gives an interface: 1 to 15 bytes of ASCII letters, digits, `.`,
/// `_` and `-`, not `.` or `..` (a subset of what the kernel's `dev_valid_name` takes,
/// safe to write into an nftables script).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A VMAC set up for an instance: deleted when dropped, unless [`VmacLink::keep`] was
/// set (a hand-over to a successor).
#[derive(Debug)]
pub(crate) struct VmacLink {
    pub(crate) name: String,
    pub(crate) ifindex: u32,
    base: String,
    v6: bool,
    /// Leave the VMAC in place when dropped.
    pub(crate) keep: bool,
    /// The base's ARP settings and the rp_filter settings are held ([`hold`]).
    held: bool,
    /// The base's link-local address as copied onto the VMAC (IPv6).
    link_local: Option<Ipv6Addr>,
}

impl Drop for VmacLink {
    fn drop(&mut self) {
        self.tear_down(!self.keep);
    }
}

/// Settings this process changed for its VMACs, by holder (a base interface's ARP
/// settings; the `rp_filter` settings), and how many VMACs of this process hold each. A
/// reload's hand-over drops the count to 0 and keeps the entry for the successor.
static HELD: Mutex<Option<HashMap<String, Held>>> = Mutex::new(None);

/// The holder key of the `rp_filter` settings.
const RP_FILTER: &str = "rp_filter";

#[derive(Debug, Default)]
struct Held {
    users: usize,
    /// `(sysctl key, value before, value set)` of those this process changed, in the
    /// order they were changed.
    changed: Vec<(String, String, String)>,
}

impl VmacLink {
    /// Creates (or takes over) the VMAC of `cfg` on `base` for an instance of family `v6`,
    /// sets it up as the module docs say, and brings it up.
    ///
    /// # Errors
    /// [`VipError::NoInterface`] without `base`; [`VipError::Vmac`] when a step fails or
    /// an interface of that name is not a private macvlan on `base` (then it is left
    /// alone). A VMAC this call created is deleted again; one it took over is left as it
    /// was found.
    pub(crate) fn set_up(base: &str, cfg: &UseVmac, v6: bool) -> Result<Self, VipError> {
        let base_index = crate::vip::VipManager::ifindex(base)?;
        let fail = |what: &str, e: io::Error| VipError::Vmac(format!("{}: {what}: {e}", cfg.name));
        let mut nl = Rtnl::open().map_err(|e| fail("netlink socket", e))?;
        let (ifindex, created) = match nl
            .link(&cfg.name)
            .map_err(|e| fail("reading the link", e))?
        {
            Some(found) if found.matches(base_index, cfg.mac) => {
                tracing::info!(vmac = %cfg.name, %base, "taking over the VMAC already there");
                (found.index, false)
            }
            // Ours from an earlier run with another MAC (keepalived updates it in place).
            Some(found) if found.is_macvlan && found.private && found.base == Some(base_index) => {
                tracing::warn!(vmac = %cfg.name, %base, "a private macvlan of that name on the base with another MAC: replacing it");
                nl.delete_link(found.index)
                    .map_err(|e| fail("deleting the old macvlan", e))?;
                let index = nl
                    .create_macvlan(&cfg.name, base_index, cfg.mac)
                    .map_err(|e| fail("creating the macvlan", e))?;
                (index, true)
            }
            Some(_) => {
                return Err(VipError::Vmac(format!(
                    "{}: an interface of that name exists and is not a private macvlan on {base}: left alone; name the VMAC otherwise",
                    cfg.name
                )))
            }
            None => {
                let index = nl
                    .create_macvlan(&cfg.name, base_index, cfg.mac)
                    .map_err(|e| fail("creating the macvlan", e))?;
                (index, true)
            }
        };
        let mut link = Self {
            name: cfg.name.clone(),
            ifindex,
            base: base.to_owned(),
            v6,
            keep: false,
            held: false,
            link_local: None,
        };
        match link.configure(&mut nl, base_index) {
            Ok(()) => Ok(link),
            Err(e) => {
                // Dropping `link` deletes what this call created.
                link.keep = !created;
                Err(fail("setting it up", e))
            }
        }
    }

    fn configure(&mut self, nl: &mut Rtnl, base_index: u32) -> io::Result<()> {
        if self.v6 {
            // No EUI-64 address from the virtual MAC (set before the link goes up).
            sysctl_write_if_present(&format!("ipv6/conf/{}/addr_gen_mode", self.name), "1")?;
        } else {
            hold_for(&self.base)?;
            self.held = true;
            for (key, value) in [
                ("arp_ignore", "1"),
                ("accept_local", "1"),
                ("rp_filter", "0"),
                ("promote_secondaries", "1"),
            ] {
                sysctl_write(&format!("ipv4/conf/{}/{key}", self.name), value)?;
            }
            sysctl_write_if_present(&format!("ipv6/conf/{}/disable_ipv6", self.name), "1")?;
        }
        // Before the link is up: addresses on it join groups (the solicited-node one of
        // the link-local copy, later the VIPs') whose reports must leave from the base.
        report_rules(&self.name, &self.base, base_index, Rules::Add);
        nl.set_up(self.ifindex)?;
        if self.v6 {
            match crate::vip::primary_address(&self.base, true, &[]) {
                Some(IpAddr::V6(ll)) => self.copy_link_local(nl, ll)?,
                _ => {
                    tracing::warn!(vmac = %self.name, base = %self.base, "the base interface has no IPv6 link-local address to copy onto the VMAC yet")
                }
            }
        }
        Ok(())
    }

    fn copy_link_local(&mut self, nl: &mut Rtnl, ll: Ipv6Addr) -> io::Result<()> {
        nl.link_local(self.ifindex, ll, true)?;
        if let Some(old) = self.link_local.replace(ll).filter(|old| *old != ll) {
            if let Err(e) = nl.link_local(self.ifindex, old, false) {
                tracing::debug!(vmac = %self.name, %old, error = %e, "removing the old link-local copy");
            }
        }
        Ok(())
    }

    /// Follows the base's link-local address (IPv6): `ll` is the advert source now, copied
    /// onto the VMAC in place of the previous copy (keepalived's
    /// `replace_link_local_address`). Errors are logged.
    pub(crate) fn follow_link_local(&mut self, ll: Ipv6Addr) {
        if !self.v6 || self.link_local == Some(ll) {
            return;
        }
        match Rtnl::open().and_then(|mut nl| self.copy_link_local(&mut nl, ll)) {
            Ok(()) => {
                tracing::info!(vmac = %self.name, %ll, "the base's link-local address copied onto the VMAC")
            }
            Err(e) => {
                tracing::warn!(vmac = %self.name, %ll, error = %e, "copying the base's link-local address onto the VMAC")
            }
        }
    }

    /// Deletes the VMAC (a clean stop), or with `delete` false leaves it for a successor
    /// (a reload's hand-over). Errors are logged.
    fn tear_down(&self, delete: bool) {
        if !delete {
            // Handed over: the elements stay for the successor, which counts itself in.
            report_rules(&self.name, &self.base, 0, Rules::HandOver);
        }
        if delete {
            match Rtnl::open().and_then(|mut nl| nl.delete_link(self.ifindex)) {
                Ok(()) => tracing::info!(vmac = %self.name, "VMAC deleted"),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => tracing::warn!(vmac = %self.name, error = %e, "deleting the VMAC"),
            }
            report_rules(&self.name, &self.base, 0, Rules::Remove);
        }
        if self.held {
            release_for(&self.base, delete);
        }
    }
}

/// Removes what a VMAC handed over by a reload leaves when no successor took it (the
/// successor failed to start): the interface `name` if it is a macvlan on `base`, its
/// nftables elements, and, once no VMAC of this process holds them, the settings changed
/// for it, put back. Errors are logged.
pub fn discard(name: &str, base: &str) {
    if let (Ok(mut nl), Ok(base_index)) = (Rtnl::open(), crate::vip::VipManager::ifindex(base)) {
        match nl.link(name) {
            Ok(Some(found)) if found.is_macvlan && found.base == Some(base_index) => {
                match nl.delete_link(found.index) {
                    Ok(()) => tracing::info!(vmac = %name, "VMAC nobody took over: deleted"),
                    Err(e) => {
                        tracing::warn!(vmac = %name, error = %e, "deleting a VMAC nobody took over")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(vmac = %name, error = %e, "reading a VMAC nobody took over"),
        }
    }
    report_rules(name, base, 0, Rules::Discard);
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(map) = held.as_mut() else { return };
    for key in [base, RP_FILTER] {
        if map.get(key).is_some_and(|h| h.users == 0) {
            if let Some(h) = map.remove(key) {
                restore(key, &h);
            }
        }
    }
}

/// What `RTM_GETLINK` says about an interface.
struct FoundLink {
    index: u32,
    is_macvlan: bool,
    private: bool,
    base: Option<u32>,
    mac: Option<Vec<u8>>,
}

impl FoundLink {
    fn matches(&self, base: u32, mac: [u8; 6]) -> bool {
        self.is_macvlan
            && self.private
            && self.base == Some(base)
            && self.mac.as_deref() == Some(&mac[..])
    }
}

/// A blocking rtnetlink socket for the few requests of a VMAC's set-up and tear-down
/// (made while a speaker is built, or by the running driver on a blocking thread), each
/// bounded by
/// [`NETLINK_TIMEOUT`] and [`MAX_DATAGRAMS`].
struct Rtnl {
    sock: netlink_sys::Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Self> {
        let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Self { sock, seq: 0 })
    }

    /// Sends `msg` with `flags` (plus REQUEST and ACK) and returns the replies before the
    /// acknowledgement; a negative acknowledgement is its errno.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut replies = Vec::new();
        // Each answer within NETLINK_TIMEOUT; a request's answers (one link, one ack) fit
        // in a few datagrams.
        let ms = u16::try_from(NETLINK_TIMEOUT.as_millis()).unwrap_or(u16::MAX);
        for _ in 0..MAX_DATAGRAMS {
            let mut fds = [nix::poll::PollFd::new(
                self.sock.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, ms) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer")),
                Ok(_) => {}
                // A signal for another part of the process: wait again (bounded by the loop).
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            let (data, _) = self.sock.recv_from_full()?;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                // NLMSG_ALIGN: messages start on 4-byte boundaries.
                let len = ((msg.header.length as usize + 3) & !3)
                    .max(16)
                    .min(rest.len());
                rest = &rest[len..];
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no netlink acknowledgement",
        ))
    }

    fn link(&mut self, name: &str) -> io::Result<Option<FoundLink>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let replies = match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(replies.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(found_link(&l)),
            _ => None,
        }))
    }

    fn create_macvlan(&mut self, name: &str, base: u32, mac: [u8; 6]) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_owned()),
            LinkAttribute::Link(base),
            LinkAttribute::Address(mac.to_vec()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    MACVLAN_MODE_PRIVATE,
                )])),
            ]),
        ];
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)?;
        tracing::info!(vmac = %name, mac = %format_mac(mac), "VMAC created");
        self.link(name)?
            .map(|l| l.index)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "created, then gone"))
    }

    fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = vec![LinkFlag::Up];
        msg.header.change_mask = vec![LinkFlag::Up];
        self.request(RouteNetlinkMessage::SetLink(msg), 0).map(drop)
    }

    fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0).map(drop)
    }

    /// Adds (`add`) or removes `addr`/64, link scope; added without duplicate address
    /// detection. Adding one already there succeeds.
    fn link_local(&mut self, index: u32, addr: Ipv6Addr, add: bool) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = 64;
        msg.header.scope = AddressScope::Link;
        msg.header.index = index;
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V6(addr)));
        let request = if add {
            msg.header.flags = vec![AddressHeaderFlag::Nodad];
            self.request(
                RouteNetlinkMessage::NewAddress(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            )
        } else {
            self.request(RouteNetlinkMessage::DelAddress(msg), 0)
        };
        match request {
            Err(e) if add && e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }
}

fn found_link(l: &LinkMessage) -> FoundLink {
    let mut found = FoundLink {
        index: l.header.index,
        is_macvlan: false,
        private: false,
        base: None,
        mac: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::Link(i) => found.base = Some(*i),
            LinkAttribute::Address(m) => found.mac = Some(m.clone()),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(InfoKind::MacVlan) => found.is_macvlan = true,
                        LinkInfo::Data(InfoData::MacVlan(data)) => {
                            found.private = data
                                .iter()
                                .any(|d| matches!(d, InfoMacVlan::Mode(MACVLAN_MODE_PRIVATE)));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    found
}

fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/net/{key}")
}

fn sysctl_read(key: &str) -> Option<String> {
    std::fs::read_to_string(sysctl_path(key))
        .ok()
        .map(|s| s.trim().to_owned())
}

fn sysctl_write(key: &str, value: &str) -> io::Result<()> {
    std::fs::write(sysctl_path(key), value)
        .map_err(|e| io::Error::new(e.kind(), format!("net.{}: {e}", key.replace('/', "."))))
}

/// As [`sysctl_write`], nothing when the setting does not exist (IPv6 disabled in the
/// kernel).
fn sysctl_write_if_present(key: &str, value: &str) -> io::Result<()> {
    match sysctl_write(key, value) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

/// Takes the settings an IPv4 VMAC on `base` needs, saving the values before:
/// * on `base`, `arp_ignore=1`, `arp_filter=1` and `arp_announce=2`;
/// * where `all.rp_filter` is on (the kernel takes the higher of `all` and an interface's
///   value, so the VMAC's 0 would not count and the Backup would drop the Master's adverts,
///   whose reverse path is the base), every interface's `rp_filter` raised to it and `all`
///   set to 0, as keepalived's `clear_rp_filter` does.
///
/// Undone by [`release_for`] once no VMAC of this process needs them.
fn hold_for(base: &str) -> io::Result<()> {
    let arp = ["arp_ignore", "arp_filter", "arp_announce"]
        .into_iter()
        .zip(["1", "1", "2"])
        .map(|(k, v)| (format!("ipv4/conf/{base}/{k}"), v.to_owned()))
        .collect();
    hold(base, arp)?;
    if let Err(e) = hold(RP_FILTER, rp_filter_settings()) {
        release(base, true);
        return Err(e);
    }
    Ok(())
}

/// The `rp_filter` settings that turn `all.rp_filter` off without loosening any interface:
/// each one below `all` raised to it (`default` too), then `all` 0. None when `all` is 0.
fn rp_filter_settings() -> Vec<(String, String)> {
    let all: u32 = sysctl_read("ipv4/conf/all/rp_filter")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    if all == 0 {
        return Vec::new();
    }
    let mut out: Vec<(String, String)> = std::fs::read_dir(sysctl_path("ipv4/conf"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| name != "all")
                .map(|name| format!("ipv4/conf/{name}/rp_filter"))
                .filter(|key| {
                    sysctl_read(key)
                        .and_then(|v| v.parse::<u32>().ok())
                        .is_some_and(|v| v < all)
                })
                .map(|key| (key, all.to_string()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.push(("ipv4/conf/all/rp_filter".to_owned(), "0".to_owned()));
    out
}

/// Writes `settings` (`(sysctl key, value)`, in order) for holder `key`, saving each value
/// it changes, and counts one more user. On a failure, what this call wrote is put back.
fn hold(key: &str, settings: Vec<(String, String)>) -> io::Result<()> {
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let entry = held
        .get_or_insert_with(HashMap::new)
        .entry(key.to_owned())
        .or_default();
    let mut written: Vec<(String, String)> = Vec::new();
    for (path, value) in settings {
        let before = sysctl_read(&path).unwrap_or_default();
        if before == value {
            continue;
        }
        if let Err(e) = sysctl_write(&path, &value) {
            // An interface gone since the directory was read (keepalived logs and goes on).
            if e.kind() == io::ErrorKind::NotFound && !path.starts_with("ipv4/conf/all/") {
                tracing::debug!(%path, "interface gone while its setting was written");
                continue;
            }
            for (p, b) in written.iter().rev() {
                let _ = sysctl_write(p, b);
            }
            entry.changed.truncate(entry.changed.len() - written.len());
            return Err(e);
        }
        if !entry.changed.iter().any(|(p, _, _)| *p == path) {
            entry.changed.push((path.clone(), before.clone(), value));
            written.push((path, before));
        }
    }
    entry.users += 1;
    Ok(())
}

/// One VMAC on `base` less: with `restore`, the last user of a holder puts its settings
/// back (a hand-over keeps them for the successor).
fn release_for(base: &str, restore_them: bool) {
    release(base, restore_them);
    release(RP_FILTER, restore_them);
}

/// One user of holder `key` less; with `restore_them`, the last one puts its settings back.
fn release(key: &str, restore_them: bool) {
    let mut held = HELD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(map) = held.as_mut() else { return };
    let Some(h) = map.get_mut(key) else { return };
    h.users = h.users.saturating_sub(1);
    if h.users == 0 && restore_them {
        if let Some(h) = map.remove(key) {
            restore(key, &h);
        }
    }
}

/// Puts back, in reverse order, what holder `key` changed, where the value is still the
/// one set here (an operator's later change stays).
fn restore(key: &str, h: &Held) {
    for (path, before, set) in h.changed.iter().rev() {
        if sysctl_read(path).as_deref() == Some(set.as_str()) {
            if let Err(e) = sysctl_write(path, before) {
                tracing::warn!(holder = %key, error = %e, "putting a setting back");
            }
        }
    }
}

/// How long `nft` may take in all before it is killed.
const NFT_TIMEOUT: Duration = Duration::from_secs(5);

/// How many VMACs of this process have their reports moved ([`report_rules`]); the
/// tables go with the last one deleted (not with one handed over).
static NFT_USERS: Mutex<usize> = Mutex::new(0);

/// What [`report_rules`] does for a VMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rules {
    /// Its reports are moved: one user more.
    Add,
    /// It is deleted: its elements go, one user less (the last takes the tables).
    Remove,
    /// It is handed over: one user less, its elements stay.
    HandOver,
    /// One handed over that nobody took: its elements go (the tables if no user is left).
    Discard,
}

/// Adds (`add`) or removes the VMAC `name` (on `base`, index `base_index`) in the maps of
/// the tables `ip` and `ip6` [`NFT_TABLE`]: IGMP and MLD reports leaving from it are
/// duplicated to `base`, where they go out with the base's MAC, and dropped (keepalived's
/// `setup_rule_move_igmp`). That covers the VRRP group and, on a Master, the IPv6 VIPs'
/// solicited-node groups. Removing the last VMAC of this process deletes the tables
/// (keepalived's `nft_cleanup`). Each family is a transaction of its own (the IPv4 rules
/// do not depend on IPv6 support). Failures are logged: without `nft` the reports leave
/// from the virtual MAC.
fn report_rules(name: &str, base: &str, base_index: u32, op: Rules) {
    let add = op == Rules::Add;
    let mut users = NFT_USERS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match op {
        Rules::Add | Rules::Discard => {}
        Rules::Remove => *users = users.saturating_sub(1),
        // The elements and tables stay for the successor, which counts itself in again.
        Rules::HandOver => {
            *users = users.saturating_sub(1);
            return;
        }
    }
    if add && !valid_ifname(base) {
        tracing::warn!(vmac = %name, %base, "the base interface's name cannot go into an nftables script: IGMP/MLD reports leave from the virtual MAC");
        return;
    }
    let chain = format!("base_{base_index}");
    for (family, rule) in [
        ("ip", "meta l4proto igmp dup to ip daddr"),
        (
            "ip6",
            "icmpv6 type { mld-listener-report, mld-listener-done, mld2-listener-report } dup to ip6 daddr",
        ),
    ] {
        // Also before an add: a stale element (a crash, another base before) would make
        // the add fail. Absent: nft says so, nothing to do.
        let _ = nft(&format!(
            "delete element {family} {NFT_TABLE} vmacs {{ \"{name}\" }}\n"
        ));
        let script = if add {
            format!(
                "table {family} {NFT_TABLE} {{\n\
                 \tmap vmacs {{ type ifname : verdict; }}\n\
                 \tchain out {{ type filter hook output priority filter - 1; policy accept; }}\n\
                 \tchain {chain} {{ }}\n\
                 }}\n\
                 flush chain {family} {NFT_TABLE} out\n\
                 add rule {family} {NFT_TABLE} out oifname vmap @vmacs\n\
                 flush chain {family} {NFT_TABLE} {chain}\n\
                 add rule {family} {NFT_TABLE} {chain} {rule} device \"{base}\" drop\n\
                 add element {family} {NFT_TABLE} vmacs {{ \"{name}\" : jump {chain} }}\n"
            )
        } else if *users == 0 {
            format!("delete table {family} {NFT_TABLE}\n")
        } else {
            continue;
        };
        match nft(&script) {
            Ok(out) if out.status.success() => {}
            Ok(out) if !add => {
                tracing::debug!(vmac = %name, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "deleting the IGMP/MLD tables");
            }
            Ok(out) => {
                tracing::warn!(vmac = %name, %family, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "nft refused the IGMP/MLD rules: reports leave from the virtual MAC");
            }
            Err(e) if add => {
                tracing::warn!(vmac = %name, error = %e, "cannot run nft (Debian package nftables): IGMP/MLD reports leave from the virtual MAC");
            }
            Err(_) => {}
        }
    }
    if add {
        *users += 1;
    }
}

/// Runs `nft -f -` with `script`: it has [`NFT_TIMEOUT`] in all (ten waits for its
/// standard error, each a tenth of it), then it is killed.
fn nft(script: &str) -> io::Result<std::process::Output> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let out = nft_wait(&mut child, script);
    if out.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    out
}

fn nft_wait(child: &mut std::process::Child, script: &str) -> io::Result<std::process::Output> {
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    // stdin closed: nft reads to the end. It closes its standard error as it exits: read
    // that to the end.
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| io::Error::other("nft's standard error is not piped"))?;
    let ms = u16::try_from(NFT_TIMEOUT.as_millis() / 10).unwrap_or(u16::MAX);
    let mut text = Vec::new();
    let mut buf = [0_u8; 4096];
    for _ in 0..10 {
        let mut fds = [nix::poll::PollFd::new(
            stderr.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut fds, ms) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(e.into()),
        }
        match stderr.read(&mut buf)? {
            0 => {
                let status = child.wait()?;
                return Ok(std::process::Output {
                    status,
                    stdout: Vec::new(),
                    stderr: text,
                });
            }
            n => text.extend_from_slice(&buf[..n]),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "nft did not finish",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        let vrid = Vrid::new(250).unwrap();
        let v = UseVmac::new(vrid, false);
        assert_eq!(v.name, "vrrp.250");
        assert_eq!(format_mac(v.mac), "00:00:5e:00:01:fa");
        assert_eq!(
            format_mac(UseVmac::new(vrid, true).mac),
            "00:00:5e:00:02:fa"
        );
        assert!(v.validate("eth0").is_ok());
        assert!(v
            .validate("vrrp.250")
            .unwrap_err()
            .contains("instance's interface"));
        for bad in [
            "",
            "a/b",
            "a:b",
            "a b",
            ".",
            "..",
            "sixteen-bytes-xx",
            "a\"b",
            "a{b",
            "a;b",
        ] {
            let v = UseVmac {
                name: bad.to_owned(),
                ..UseVmac::new(vrid, false)
            };
            assert!(v.validate("eth0").is_err(), "{bad:?} accepted");
        }
        assert!(valid_ifname("fifteen-bytes-x"));
        for mac in [[1, 0, 0x5e, 0, 1, 1], [0; 6]] {
            let v = UseVmac {
                mac,
                ..UseVmac::new(vrid, false)
            };
            assert!(v.validate("eth0").unwrap_err().contains("unicast"));
        }
    }
}

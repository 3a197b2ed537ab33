//! keepalived's `use_vmac`: the virtual router MAC address of [RFC 5798 §7.3] on a
//! macvlan interface of its own, so that the VIPs keep one MAC address across a failover
//! and neighbours need no gratuitous ARP to follow the Master.
//!
//! As keepalived 2.2 does:
//!
//! * The interface (default name `vrrp.<VRID>`, [`default_name`]) is a macvlan in
//!   private mode on the instance's `interface`, with MAC `00:00:5e:00:01:<VRID>` (IPv4)
//!   or `00:00:5e:00:02:<VRID>` (IPv6), [`virtual_router_mac`]. It is created at start
//!   whatever the state, stays up in Backup and Fault (only the VIPs come and go), and is
//!   deleted at a clean stop. A macvlan of that name found at start (left by a crash, or
//!   handed over by a reload) is taken over when it has the right base, MAC and mode;
//!   one that differs is replaced. Another kind of interface by that name is an error.
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
//!   All three are put back when the last VMAC on the base is deleted. A strict
//!   `all.rp_filter` (1) is warned about: traffic to the VIPs arriving on the VMAC may
//!   then be dropped.
//! * IPv6: no generated address (`addr_gen_mode` none: the virtual MAC must not give an
//!   EUI-64 address); the base's link-local address is copied onto the VMAC, and adverts
//!   leave from it.
//! * Joining the VRRP group on the VMAC would send IGMP / MLD reports from the virtual
//!   MAC: a Backup's would teach the switches that the Master's MAC is behind the Backup's
//!   port. Those reports are dropped by nftables (table `inet lb_vrrp_vmac`, keepalived
//!   does the same in its `keepalived` table) and the group is joined on the base
//!   interface too, so that snooping switches still forward it.
//!
//! Needs `CAP_NET_ADMIN` (links, sysctls, nftables).
//!
//! [RFC 5798 §7.3]: https://www.rfc-editor.org/rfc/rfc5798#section-7.3
//! [RFC 5798 §7.2]: https://www.rfc-editor.org/rfc/rfc5798#section-7.2

use std::collections::HashMap;
use std::io::{self, Write as _};
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

/// The nftables table that keeps IGMP / MLD reports off the VMACs (family `inet`).
pub const NFT_TABLE: &str = "lb_vrrp_vmac";

/// How long each answer to a netlink request may take before the request is given up.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// The most datagrams read for one request's answers before it is given up.
const MAX_DATAGRAMS: usize = 16;

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
                "use_vmac: {:?} is not a valid interface name (1 to 15 bytes, no '/', ':' or white space)",
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

/// An interface name the kernel accepts (`dev_valid_name`): 1 to 15 bytes, not `.` or
/// `..`, without `/`, `:` or white space.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace())
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
    /// The base's ARP settings are held ([`hold_base`]).
    held_base: bool,
}

impl Drop for VmacLink {
    fn drop(&mut self) {
        self.tear_down(!self.keep);
    }
}

/// The base interfaces' ARP settings as they were before their first VMAC, and how many
/// VMACs of this process use each (a reload hands a VMAC over: the count drops to 0 and
/// the successor takes the saved values up again).
static BASES: Mutex<Option<HashMap<String, BaseSaved>>> = Mutex::new(None);

#[derive(Debug, Default)]
struct BaseSaved {
    users: usize,
    /// `(setting, value before)` of those this process changed.
    changed: Vec<(&'static str, String)>,
}

impl VmacLink {
    /// Creates (or takes over) the VMAC of `cfg` on `base` for an instance of family `v6`,
    /// sets it up as the module docs say, and brings it up.
    ///
    /// # Errors
    /// [`VipError::NoInterface`] without `base`; [`VipError::Vmac`] when a step fails
    /// (the VMAC is deleted again if this call created it).
    pub(crate) fn set_up(base: &str, cfg: &UseVmac, v6: bool) -> Result<Self, VipError> {
        let base_index = crate::vip::VipManager::ifindex(base)?;
        let fail = |what: &str, e: io::Error| VipError::Vmac(format!("{}: {what}: {e}", cfg.name));
        let mut nl = Rtnl::open().map_err(|e| fail("netlink socket", e))?;
        let ifindex = match nl
            .link(&cfg.name)
            .map_err(|e| fail("reading the link", e))?
        {
            Some(found) if found.matches(base_index, cfg.mac) => {
                tracing::info!(vmac = %cfg.name, %base, "taking over the VMAC already there");
                found.index
            }
            Some(found) if found.is_macvlan => {
                tracing::warn!(vmac = %cfg.name, %base, "a macvlan of that name with another base, MAC or mode: replacing it");
                nl.delete_link(found.index)
                    .map_err(|e| fail("deleting the old macvlan", e))?;
                nl.create_macvlan(&cfg.name, base_index, cfg.mac)
                    .map_err(|e| fail("creating the macvlan", e))?
            }
            Some(_) => {
                return Err(VipError::Vmac(format!(
                    "{}: an interface of that name exists and is not a macvlan",
                    cfg.name
                )))
            }
            None => nl
                .create_macvlan(&cfg.name, base_index, cfg.mac)
                .map_err(|e| fail("creating the macvlan", e))?,
        };
        let mut link = Self {
            name: cfg.name.clone(),
            ifindex,
            base: base.to_owned(),
            v6,
            keep: false,
            held_base: false,
        };
        // On failure, dropping `link` deletes the VMAC again.
        link.configure(&mut nl)
            .map(|()| link)
            .map_err(|e| fail("setting it up", e))
    }

    fn configure(&mut self, nl: &mut Rtnl) -> io::Result<()> {
        if self.v6 {
            // No EUI-64 address from the virtual MAC (set before the link goes up).
            sysctl_write_if_present(&format!("ipv6/conf/{}/addr_gen_mode", self.name), "1")?;
        } else {
            for (key, value) in [
                ("arp_ignore", "1"),
                ("accept_local", "1"),
                ("rp_filter", "0"),
                ("promote_secondaries", "1"),
            ] {
                sysctl_write(&format!("ipv4/conf/{}/{key}", self.name), value)?;
            }
            sysctl_write_if_present(&format!("ipv6/conf/{}/disable_ipv6", self.name), "1")?;
            hold_base(&self.base)?;
            self.held_base = true;
            if sysctl_read("ipv4/conf/all/rp_filter").as_deref() == Some("1") {
                tracing::warn!(vmac = %self.name, "net.ipv4.conf.all.rp_filter is 1 (strict): traffic to the VIPs arriving on the VMAC may be dropped; set it to 0 or 2");
            }
        }
        // Before the link is up: addresses on it join groups (the solicited-node one of
        // the link-local copy) whose reports must not leave from the virtual MAC either.
        igmp_rules(&self.name, true);
        nl.set_up(self.ifindex)?;
        if self.v6 {
            match crate::vip::primary_address(&self.base, true, &[]) {
                Some(IpAddr::V6(ll)) => nl.add_link_local(self.ifindex, ll)?,
                _ => {
                    tracing::warn!(vmac = %self.name, base = %self.base, "the base interface has no IPv6 link-local address to copy onto the VMAC")
                }
            }
        }
        Ok(())
    }

    /// Deletes the VMAC (a clean stop), or with `delete` false leaves it for a successor
    /// (a reload's hand-over). Errors are logged.
    fn tear_down(&self, delete: bool) {
        if delete {
            match Rtnl::open().and_then(|mut nl| nl.delete_link(self.ifindex)) {
                Ok(()) => tracing::info!(vmac = %self.name, "VMAC deleted"),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => tracing::warn!(vmac = %self.name, error = %e, "deleting the VMAC"),
            }
            igmp_rules(&self.name, false);
        }
        if self.held_base {
            release_base(&self.base, delete);
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
/// (made while a speaker is built, outside any task), each bounded by
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
            if nix::poll::poll(&mut fds, ms).map_err(io::Error::from)? == 0 {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer"));
            }
            let (data, _) = self.sock.recv_from_full()?;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = (msg.header.length as usize).max(16).min(rest.len());
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

    /// Adds `addr`/64, link scope, without duplicate address detection.
    fn add_link_local(&mut self, index: u32, addr: Ipv6Addr) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet6;
        msg.header.prefix_len = 64;
        msg.header.scope = AddressScope::Link;
        msg.header.index = index;
        msg.header.flags = vec![AddressHeaderFlag::Nodad];
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V6(addr)));
        match self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
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

/// `arp_ignore=1`, `arp_filter=1` and `arp_announce=2` on `base`, the values before
/// saved by its first VMAC.
fn hold_base(base: &str) -> io::Result<()> {
    let mut bases = BASES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let saved = bases
        .get_or_insert_with(HashMap::new)
        .entry(base.to_owned())
        .or_default();
    for (key, value) in [
        ("arp_ignore", "1"),
        ("arp_filter", "1"),
        ("arp_announce", "2"),
    ] {
        let path = format!("ipv4/conf/{base}/{key}");
        let before = sysctl_read(&path).unwrap_or_default();
        if before != value {
            sysctl_write(&path, value)?;
            if !saved.changed.iter().any(|(k, _)| *k == key) {
                saved.changed.push((key, before));
            }
        }
    }
    saved.users += 1;
    Ok(())
}

/// One VMAC less on `base`: with `restore`, the last one puts its ARP settings back.
fn release_base(base: &str, restore: bool) {
    let mut bases = BASES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(map) = bases.as_mut() else { return };
    let Some(saved) = map.get_mut(base) else {
        return;
    };
    saved.users = saved.users.saturating_sub(1);
    if saved.users > 0 || !restore {
        return;
    }
    for (key, before) in &saved.changed {
        let path = format!("ipv4/conf/{base}/{key}");
        // Only what still holds the value set here: an operator's later change stays.
        let set = if *key == "arp_announce" { "2" } else { "1" };
        if sysctl_read(&path).as_deref() == Some(set) {
            if let Err(e) = sysctl_write(&path, before) {
                tracing::warn!(%base, error = %e, "restoring the base interface's ARP setting");
            }
        }
    }
    map.remove(base);
}

/// Adds (`add`) or removes the VMAC `name` in the set of [`NFT_TABLE`] whose IGMP and MLD
/// reports are dropped. Failures are logged: without `nft` a Backup's reports leave from
/// the virtual MAC.
fn igmp_rules(name: &str, add: bool) {
    let script = if add {
        format!(
            "table inet {NFT_TABLE} {{\n\
             \tset vmacs {{ type ifname; }}\n\
             \tchain out {{ type filter hook output priority filter - 1; policy accept; }}\n\
             }}\n\
             flush chain inet {NFT_TABLE} out\n\
             add rule inet {NFT_TABLE} out oifname @vmacs meta l4proto igmp drop\n\
             add rule inet {NFT_TABLE} out oifname @vmacs icmpv6 type {{ mld-listener-report, mld-listener-done, mld2-listener-report }} drop\n\
             add element inet {NFT_TABLE} vmacs {{ \"{name}\" }}\n"
        )
    } else {
        format!("delete element inet {NFT_TABLE} vmacs {{ \"{name}\" }}\n")
    };
    let run = || -> io::Result<std::process::Output> {
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes())?;
        }
        child.wait_with_output()
    };
    match run() {
        Ok(out) if out.status.success() => {}
        Ok(out) if !add => {
            tracing::debug!(vmac = %name, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "removing the VMAC from the IGMP/MLD drop set");
        }
        Ok(out) => {
            tracing::warn!(vmac = %name, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "nft refused the IGMP/MLD drop rules: reports for the VRRP group leave from the virtual MAC");
        }
        Err(e) if add => {
            tracing::warn!(vmac = %name, error = %e, "cannot run nft (Debian package nftables): IGMP/MLD reports for the VRRP group leave from the virtual MAC");
        }
        Err(_) => {}
    }
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
        for bad in ["", "a/b", "a:b", "a b", ".", "..", "sixteen-bytes-xx"] {
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

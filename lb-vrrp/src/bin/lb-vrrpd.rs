//! `lb-vrrpd`: runs VRRP instances from command-line flags (for tests and small setups;
//! the lb daemon maps keepalived.conf onto the same [`VrrpInstanceConfig`]).
//!
//! ```text
//! lb-vrrpd [--sync-group] [--link-poll S (default 0.2; netlink notices act at once)] \
//!   [--startup-delay S (keepalived vrrp_startup_delay)] \
//!   --instance VI_1 [--state MASTER|BACKUP (a hint, changes nothing)] --interface eth0 --vrid 51 --priority 100 --advert-int 1 \
//!   --version 2 --auth-pass 7road123 --vip "172.16.2.250/24 dev eth0 label eth0:1" \
//!   [--vip-excluded "ADDR[/LEN] [dev D]" ...] \
//!   [--unicast-src-ip IP --unicast-peer IP ...] [--mcast-dst-ip GROUP] [--down-timer-adverts N] [--dont-track-primary] [--nopreempt] [--preempt-delay S] [--no-accept] \
//!   [--garp-master-delay S] [--garp-master-repeat N] [--garp-master-refresh S] \
//!   [--garp-lower-prio-repeat N] [--garp-lower-prio-delay S] [--lower-prio-no-advert] \
//!   [--higher-prio-send-advert] [--garp-interval S] [--gna-interval S] [--unicast-ttl N] \
//!   [--track-script CMD [--script-interval S] [--script-timeout S] [--script-weight W] \
//!                       [--script-rise N] [--script-fall N]] ... \
//!   [--notify-master CMD] [--notify-backup CMD] [--notify-fault CMD] [--notify-stop CMD] \
//!   [--notify CMD] [--use-vmac [--vmac-name NAME (default vrrp.VRID)] [--vmac-xmit-base]] \
//!   [--instance VI_2 ...]
//! ```
//!
//! Each transition is printed on stdout as `NAME FROM -> TO (Reason)`. Notify scripts run
//! with `sh -c` as keepalived's do: `--notify-master` etc. without arguments, `--notify`
//! with `INSTANCE NAME STATE PRIORITY` appended. SIGTERM or SIGINT: masters send priority
//! 0, VIPs are removed, `notify_stop` runs, exit 0. SIGUSR1 prints one `STATUS` line per
//! instance (state, priority, counters, discards by reason). Needs CAP_NET_RAW and
//! CAP_NET_ADMIN.

use std::time::Duration;

use anyhow::{bail, Context};
use lb_vrrp::driver::{Event, Speaker, TrackScript, VrrpInstanceConfig};
use lb_vrrp::machine::{Discard, State, TrackWeight};
use lb_vrrp::vmac::{self, UseVmac};
use lb_vrrp::wire::{AdvertInterval, Auth, Priority, Version, Vrid};

fn secs(v: &str) -> anyhow::Result<Duration> {
    let f: f64 = v
        .parse()
        .with_context(|| format!("bad number of seconds {v:?}"))?;
    if !(0.0..=86_400.0).contains(&f) {
        bail!("seconds out of range: {v}");
    }
    Ok(Duration::from_secs_f64(f))
}

/// keepalived's notify scripts of one instance.
#[derive(Debug, Default, Clone)]
struct Notify {
    master: Option<String>,
    backup: Option<String>,
    fault: Option<String>,
    stop: Option<String>,
    any: Option<String>,
}

impl Notify {
    /// Runs the scripts for `ev` (bounded by 10 s each).
    async fn run(&self, ev: &Event) {
        let specific = match ev.to {
            State::Master => &self.master,
            State::Backup => &self.backup,
            State::Fault => &self.fault,
            State::Initialize => &self.stop,
        };
        let state = match ev.to {
            State::Initialize => "STOP".to_owned(),
            s => s.to_string(),
        };
        let generic = self
            .any
            .as_ref()
            .map(|c| format!("{c} INSTANCE {} {state} {}", ev.instance, ev.priority));
        for cmd in specific.iter().chain(generic.iter()) {
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .kill_on_drop(true)
                .status();
            match tokio::time::timeout(Duration::from_secs(10), child).await {
                Ok(Ok(st)) if st.success() => {}
                other => tracing::warn!(%cmd, ?other, "notify script failed"),
            }
        }
    }
}

/// SIGUSR1: one `STATUS` line per instance on stdout (keepalived's `-D` data dump, terser).
async fn print_status(handle: &lb_vrrp::driver::SpeakerHandle) {
    for st in handle.status().await.unwrap_or_default() {
        let c = &st.counters;
        let discards: Vec<String> = Discard::ALL
            .iter()
            .filter(|d| c.discards(**d) > 0)
            .map(|d| format!("{d:?}={}", c.discards(*d)))
            .collect();
        println!(
            "STATUS {} {} priority={} rx={} tx={} became_master={} discards=[{}]",
            st.instance,
            st.state,
            st.priority,
            c.adverts_rx,
            c.adverts_tx,
            c.became_master,
            discards.join(",")
        );
    }
}

/// Instances, their notify scripts, `--sync-group`, `--link-poll`, `--startup-delay`.
type Parsed = (
    Vec<VrrpInstanceConfig>,
    Vec<Notify>,
    bool,
    Duration,
    Duration,
);

fn parse_args(args: Vec<String>) -> anyhow::Result<Parsed> {
    let mut out: Vec<VrrpInstanceConfig> = Vec::new();
    let mut notify: Vec<Notify> = Vec::new();
    let mut sync = false;
    let mut link_poll = lb_vrrp::driver::LINK_POLL;
    let mut startup_delay = Duration::ZERO;
    let mut it = args.into_iter();
    let placeholder = Vrid::new(1).expect("1 is a valid VRID");
    while let Some(flag) = it.next() {
        if flag == "--sync-group" {
            sync = true;
            continue;
        }
        if flag == "--link-poll" {
            link_poll = secs(&it.next().context("--link-poll needs a value")?)?;
            continue;
        }
        if flag == "--startup-delay" {
            startup_delay = secs(&it.next().context("--startup-delay needs a value")?)?;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!(
                "{}",
                include_str!("lb-vrrpd.rs")
                    .lines()
                    .take_while(|l| l.starts_with("//!"))
                    .map(|l| l.trim_start_matches("//!"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            std::process::exit(0);
        }
        let boolean = matches!(
            flag.as_str(),
            "--nopreempt"
                | "--accept"
                | "--no-accept"
                | "--lower-prio-no-advert"
                | "--higher-prio-send-advert"
                | "--use-vmac"
                | "--vmac-xmit-base"
                | "--dont-track-primary"
        );
        let val = if boolean {
            String::new()
        } else {
            it.next().with_context(|| format!("{flag} needs a value"))?
        };
        if flag == "--instance" {
            out.push(VrrpInstanceConfig::new(&val, "", placeholder));
            notify.push(Notify::default());
            continue;
        }
        if out.is_empty() {
            out.push(VrrpInstanceConfig::new("VI_1", "", placeholder));
            notify.push(Notify::default());
        }
        let c = out.last_mut().expect("pushed above");
        let n = notify.last_mut().expect("pushed above");
        if flag.starts_with("--script-") {
            let s = c
                .track_script
                .last_mut()
                .context("--script-* needs a --track-script before it")?;
            match flag.as_str() {
                "--script-interval" => s.interval = secs(&val)?,
                "--script-timeout" => s.timeout = secs(&val)?,
                "--script-weight" => s.weight = TrackWeight(val.parse()?),
                "--script-rise" => s.rise = val.parse()?,
                "--script-fall" => s.fall = val.parse()?,
                _ => bail!("unknown flag {flag}"),
            }
            continue;
        }
        match flag.as_str() {
            "--interface" => c.interface = val,
            // keepalived's `state`: accepted for old command lines; as in keepalived 2.x it
            // changes nothing (only an owner becomes Master at once, whatever it says).
            "--state" => match val.as_str() {
                "MASTER" | "BACKUP" => eprintln!(
                    "lb-vrrpd: --state {val} is a hint, as keepalived 2.x's `state`: only an owner (priority 255) becomes MASTER at once"
                ),
                _ => bail!("state must be MASTER or BACKUP"),
            },
            "--vrid" => {
                c.virtual_router_id = Vrid::new(val.parse()?).context("VRID must be 1..=255")?
            }
            "--priority" => c.priority = Priority(val.parse()?),
            "--advert-int" => {
                c.advert_int =
                    AdvertInterval::from_duration(secs(&val)?).context("advert_int out of range")?
            }
            "--version" => {
                c.version = match val.as_str() {
                    "2" => Version::V2,
                    "3" => Version::V3,
                    _ => bail!("version must be 2 or 3"),
                }
            }
            "--auth-pass" => c.authentication = Auth::password(&val),
            "--vip" => c.virtual_ipaddress.push(val.parse()?),
            "--vip-excluded" => c.virtual_ipaddress_excluded.push(val.parse()?),
            "--unicast-src-ip" => c.unicast_src_ip = Some(val.parse()?),
            "--unicast-peer" => c.unicast_peer.push(val.parse()?),
            "--mcast-dst-ip" => c.mcast_dst_ip = Some(val.parse()?),
            "--down-timer-adverts" => c.down_timer_adverts = val.parse()?,
            "--dont-track-primary" => c.dont_track_primary = true,
            "--nopreempt" => c.nopreempt = true,
            // keepalived's default; --no-accept drops traffic to the VIPs while Master.
            "--accept" => c.accept = true,
            "--no-accept" => c.accept = false,
            "--preempt-delay" => c.preempt_delay = secs(&val)?,
            "--garp-master-delay" => c.garp_master_delay = secs(&val)?,
            "--garp-master-repeat" => c.garp_master_repeat = val.parse()?,
            "--garp-master-refresh" => {
                c.garp_master_refresh = Some(secs(&val)?).filter(|d| !d.is_zero())
            }
            "--garp-lower-prio-repeat" => c.garp_lower_prio_repeat = val.parse()?,
            "--garp-lower-prio-delay" => c.garp_lower_prio_delay = secs(&val)?,
            "--garp-interval" => c.garp_interval = secs(&val)?,
            "--gna-interval" => c.gna_interval = secs(&val)?,
            "--unicast-ttl" => c.unicast_ttl = val.parse()?,
            "--lower-prio-no-advert" => c.lower_prio_no_advert = true,
            "--higher-prio-send-advert" => c.higher_prio_send_advert = true,
            "--track-script" => c.track_script.push(TrackScript::new(&val)),
            "--notify-master" => n.master = Some(val),
            "--notify-backup" => n.backup = Some(val),
            "--notify-fault" => n.fault = Some(val),
            "--notify-stop" => n.stop = Some(val),
            "--notify" => n.any = Some(val),
            // Name and MAC filled in below, once the VRID and family are known.
            "--use-vmac" => {
                c.use_vmac = Some(UseVmac {
                    name: String::new(),
                    mac: [0; 6],
                    xmit_base: false,
                })
            }
            "--vmac-name" => {
                c.use_vmac
                    .as_mut()
                    .context("--vmac-name needs --use-vmac before it")?
                    .name = val
            }
            "--vmac-xmit-base" => {
                c.use_vmac
                    .as_mut()
                    .context("--vmac-xmit-base needs --use-vmac before it")?
                    .xmit_base = true
            }
            _ => bail!("unknown flag {flag}"),
        }
    }
    if out.is_empty() {
        bail!("no instance configured; see --help");
    }
    for c in &mut out {
        if c.interface.is_empty() {
            bail!("{}: --interface is required", c.name);
        }
        let v6 = c
            .unicast_src_ip
            .or_else(|| c.virtual_ipaddress.first().map(|v| v.addr))
            .is_some_and(|a| a.is_ipv6());
        let vrid = c.virtual_router_id;
        if let Some(vm) = &mut c.use_vmac {
            if vm.name.is_empty() {
                vm.name = vmac::default_name(vrid);
            }
            vm.mac = vmac::virtual_router_mac(vrid, v6);
        }
    }
    Ok((out, notify, sync, link_poll, startup_delay))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (instances, notify, sync, link_poll, startup_delay) =
        parse_args(std::env::args().skip(1).collect())?;
    let names: Vec<String> = instances.iter().map(|c| c.name.clone()).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let no_accept = instances.iter().any(|c| !c.accept);
    rt.block_on(async move {
        let mut speaker = Speaker::new(instances, sync)?;
        speaker.set_link_poll(link_poll);
        speaker.set_startup_delay(startup_delay);
        let mut events = speaker.subscribe();
        let printer = tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                println!("{} {} -> {} ({:?})", ev.instance, ev.from, ev.to, ev.reason);
                if let Some(n) = names
                    .iter()
                    .position(|x| *x == ev.instance)
                    .and_then(|i| notify.get(i))
                {
                    n.run(&ev).await;
                }
            }
        });
        let handle = speaker.handle();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::user_defined1()),
            ) else {
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = usr1.recv() => print_status(&handle).await,
                }
            }
            handle.shutdown();
        });
        speaker.run().await?;
        // Only with --no-accept, and only once the table is empty (shared with other
        // processes, which re-create it at their next drop if it is gone).
        if no_accept {
            if let Err(e) = lb_vrrp::accept::DropRules::uninstall().await {
                tracing::warn!(error = %e, "removing the Accept_Mode nftables table");
            }
        }
        // The speaker (and its event sender) is gone: the printer drains the last events,
        // runs the notify_stop scripts and ends.
        let _ = tokio::time::timeout(Duration::from_secs(15), printer).await;
        anyhow::Ok(())
    })
}

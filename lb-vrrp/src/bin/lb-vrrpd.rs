//! `lb-vrrpd`: runs VRRP instances from command-line flags (for tests and small setups;
//! the lb daemon maps keepalived.conf onto the same [`VrrpInstanceConfig`]).
//!
//! ```text
//! lb-vrrpd [--sync-group] \
//!   --instance VI_1 --interface eth0 --vrid 51 --priority 100 --advert-int 1 \
//!   --version 2 --auth-pass 7road123 --vip "172.16.2.250/24 dev eth0 label eth0:1" \
//!   [--unicast-src-ip IP --unicast-peer IP ...] [--nopreempt] [--preempt-delay S] [--accept] \
//!   [--garp-master-delay S] [--garp-master-repeat N] [--garp-master-refresh S] \
//!   [--instance VI_2 ...]
//! ```
//!
//! Each transition is printed on stdout as `NAME FROM -> TO (Reason)`. SIGTERM or SIGINT:
//! masters send priority 0, VIPs are removed, exit 0. Needs CAP_NET_RAW and CAP_NET_ADMIN.

use std::time::Duration;

use anyhow::{bail, Context};
use lb_vrrp::driver::{Speaker, VrrpInstanceConfig};
use lb_vrrp::machine::TrackWeight;
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

fn parse_args(args: Vec<String>) -> anyhow::Result<(Vec<VrrpInstanceConfig>, bool)> {
    let mut out: Vec<VrrpInstanceConfig> = Vec::new();
    let mut sync = false;
    let mut it = args.into_iter();
    let placeholder = Vrid::new(1).expect("1 is a valid VRID");
    while let Some(flag) = it.next() {
        if flag == "--sync-group" {
            sync = true;
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
        let boolean = matches!(flag.as_str(), "--nopreempt" | "--accept");
        let val = if boolean {
            String::new()
        } else {
            it.next().with_context(|| format!("{flag} needs a value"))?
        };
        if flag == "--instance" {
            out.push(VrrpInstanceConfig::new(&val, "", placeholder));
            continue;
        }
        if out.is_empty() {
            out.push(VrrpInstanceConfig::new("VI_1", "", placeholder));
        }
        let c = out.last_mut().expect("pushed above");
        match flag.as_str() {
            "--interface" => c.interface = val,
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
            "--unicast-src-ip" => c.unicast_src_ip = Some(val.parse()?),
            "--unicast-peer" => c.unicast_peer.push(val.parse()?),
            "--nopreempt" => c.nopreempt = true,
            "--accept" => c.accept = true,
            "--preempt-delay" => c.preempt_delay = secs(&val)?,
            "--garp-master-delay" => c.garp_master_delay = secs(&val)?,
            "--garp-master-repeat" => c.garp_master_repeat = val.parse()?,
            "--garp-master-refresh" => {
                c.garp_master_refresh = Some(secs(&val)?).filter(|d| !d.is_zero())
            }
            "--track-weight" => c.track.push(TrackWeight(val.parse()?)),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if out.is_empty() {
        bail!("no instance configured; see --help");
    }
    for c in &out {
        if c.interface.is_empty() {
            bail!("{}: --interface is required", c.name);
        }
    }
    Ok((out, sync))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let (instances, sync) = parse_args(std::env::args().skip(1).collect())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let speaker = Speaker::new(instances, sync)?;
        let mut events = speaker.subscribe();
        tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                println!("{} {} -> {} ({:?})", ev.instance, ev.from, ev.to, ev.reason);
            }
        });
        let handle = speaker.handle();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            handle.shutdown();
        });
        speaker.run().await?;
        // Let the event printer flush the final transitions.
        tokio::time::sleep(Duration::from_millis(20)).await;
        anyhow::Ok(())
    })
}

//! `lbctl status` as text: keepalived's data dump for VRRP, then an `ipvsadm -ln`-style
//! table of virtual servers and backends.
//!
//! # Examples
//!
//! ```
//! use lb_bins::admin::{render::status_table, Status};
//!
//! let text = status_table(&Status::default());
//! assert!(text.contains("VRRP instances: none"));
//! ```

use std::fmt::Write as _;

use super::{Health, Status, VrrpState};

/// Renders a status for a terminal.
pub fn status_table(status: &Status) -> String {
    let mut out = String::new();
    let n = &status.node;
    let _ = write!(
        out,
        "lb-node {}  version {}  up {}",
        n.router_id.as_deref().unwrap_or("-"),
        if n.version.is_empty() {
            "?"
        } else {
            &n.version
        },
        uptime(n.uptime_secs)
    );
    if let Some(c) = &n.config {
        let _ = write!(out, "  config {c}");
    }
    if n.busy_polling {
        let _ = write!(out, "  busy-polling on ({} polls)", n.busy_polls);
    }
    if let Some(r) = &n.last_reload {
        let _ = write!(out, "\nlast reload {} {}", utc(r.at), r.result);
        for e in &r.errors {
            for line in e.lines() {
                let _ = write!(out, "\n  {line}");
            }
        }
    }
    out.push_str("\n\n");

    if status.vrrp.is_empty() {
        out.push_str("VRRP instances: none\n");
    } else {
        out.push_str("VRRP instances\n");
        let mut rows = vec![row(&[
            "Name",
            "Interface",
            "VRID",
            "State",
            "Priority",
            "Base",
            "Master",
            "Sync group",
            "Virtual IPs",
        ])];
        for v in &status.vrrp {
            rows.push(vec![
                v.name.clone(),
                v.interface.clone(),
                v.virtual_router_id.to_string(),
                v.state.to_string(),
                v.effective_priority.to_string(),
                v.base_priority.to_string(),
                v.master_address
                    .map_or_else(|| "-".into(), |a| a.to_string()),
                v.sync_group.clone().unwrap_or_else(|| "-".into()),
                v.virtual_ips.join(", "),
            ]);
        }
        table(&mut out, "  ", &rows);
        // Why each priority is what it is (keepalived's data dump lists the same).
        let mut tracks = vec![row(&[
            "Instance", "Tracks", "Name", "Weight", "State", "Priority", "Fault",
        ])];
        for v in &status.vrrp {
            for t in &v.tracks {
                tracks.push(vec![
                    v.name.clone(),
                    t.kind.clone(),
                    t.name.clone(),
                    if t.reverse {
                        format!("{} reverse", t.weight)
                    } else {
                        t.weight.to_string()
                    },
                    t.state.clone(),
                    format!("{:+}", t.priority_change),
                    if t.fault { "FAULT".into() } else { "-".into() },
                ]);
            }
        }
        if tracks.len() > 1 {
            out.push('\n');
            table(&mut out, "  ", &tracks);
        }
        // keepalived's stats dump (SIGUSR2) counts the same; a dropped advert from a
        // router configured otherwise (auth, interval, address list) shows here.
        let mut counters = vec![row(&[
            "Instance",
            "Adverts in",
            "Adverts out",
            "Became master",
            "Prio 0 in",
            "Prio 0 out",
            "Dropped",
        ])];
        for v in &status.vrrp {
            let c = &v.counters;
            let dropped = if c.dropped.is_empty() {
                "0".to_owned()
            } else {
                let why: Vec<String> = c.dropped.iter().map(|(k, n)| format!("{k} {n}")).collect();
                format!("{} ({})", c.dropped_total(), why.join(", "))
            };
            counters.push(vec![
                v.name.clone(),
                c.adverts_in.to_string(),
                c.adverts_out.to_string(),
                c.became_master.to_string(),
                c.priority_zero_in.to_string(),
                c.priority_zero_out.to_string(),
                dropped,
            ]);
        }
        out.push('\n');
        table(&mut out, "  ", &counters);
        let faults = status
            .vrrp
            .iter()
            .filter(|v| v.state == VrrpState::Fault)
            .count();
        if faults > 0 {
            let _ = writeln!(out, "  {faults} instance(s) in FAULT");
        }
    }
    out.push('\n');

    if !status.bfd.is_empty() {
        out.push_str("BFD sessions\n");
        let mut rows = vec![row(&[
            "Name",
            "Neighbor",
            "State",
            "Remote",
            "Diagnostic",
            "Since",
            "In",
            "Out",
            "Dropped",
        ])];
        for b in &status.bfd {
            rows.push(vec![
                b.name.clone(),
                b.neighbor_ip.to_string(),
                b.state.clone(),
                b.remote_state.clone(),
                b.diagnostic.clone(),
                uptime(b.since_secs),
                b.packets_in.to_string(),
                b.packets_out.to_string(),
                b.dropped.to_string(),
            ]);
        }
        table(&mut out, "  ", &rows);
        out.push('\n');
    }

    if !status.access_logs.is_empty() {
        out.push_str("Access logs\n");
        let mut rows = vec![row(&["File", "Written", "Dropped", "Lost"])];
        for l in &status.access_logs {
            rows.push(vec![
                l.path.clone(),
                l.lines_written.to_string(),
                l.lines_dropped.to_string(),
                l.lines_lost.to_string(),
            ]);
        }
        table(&mut out, "  ", &rows);
        out.push('\n');
    }

    if status.virtual_servers.is_empty() {
        out.push_str("Virtual servers: none\n");
        return out;
    }
    out.push_str("Prot LocalAddress:Port Scheduler Name (live/all backends)\n");
    // One table for every backend, so columns align across virtual servers (ipvsadm -ln).
    let mut rows = vec![row(&[
        "-> RemoteAddress:Port",
        "Health",
        "Admin",
        "Weight",
        "EffWeight",
        "ActiveConn",
        "TotalConn",
        "ToBackend",
        "ToClient",
    ])];
    for vs in &status.virtual_servers {
        for b in &vs.backends {
            let mut addr = format!("-> {}", b.address);
            if b.backup {
                addr.push_str(" (backup)");
            }
            rows.push(vec![
                addr,
                b.health.to_string(),
                b.admin.to_string(),
                b.weight.to_string(),
                b.effective_weight.to_string(),
                b.active_connections.to_string(),
                b.total_connections.to_string(),
                bytes(b.bytes_to_backend),
                bytes(b.bytes_to_client),
            ]);
        }
    }
    let mut lines = table_lines(&rows).into_iter();
    if let Some(header) = lines.next() {
        let _ = writeln!(out, "  {header}");
    }
    for vs in &status.virtual_servers {
        let _ = writeln!(
            out,
            "{:<4} {} {} {} ({}/{}){}",
            vs.protocol.to_string().to_uppercase(),
            vs.listen,
            vs.scheduler,
            vs.name,
            vs.live_backends(),
            vs.backends.len(),
            match &vs.error {
                Some(e) => format!(" NOT RUNNING: {e}"),
                None if !vs.quorum => " no quorum".to_owned(),
                None => String::new(),
            }
        );
        if let Some(l) = &vs.l4 {
            let _ = writeln!(
                out,
                "  {}: {} {} ({} open), {} failed; connect failures {}  retries {}; queued {}  queue refused {}; PROXY header errors {}  idle timeouts {}{}{}{}",
                vs.protocol,
                l.connections,
                if vs.protocol == crate::config::model::Protocol::Udp { "sessions" } else { "connections" },
                l.active_connections,
                l.failed,
                l.connect_failures,
                l.retries,
                l.queued,
                l.queue_refused,
                l.proxy_header_errors,
                l.idle_timeouts,
                if l.sessions_refused > 0 {
                    format!("; sessions refused {}", l.sessions_refused)
                } else {
                    String::new()
                },
                if l.local_errors > 0 {
                    format!("; local errors {}", l.local_errors)
                } else {
                    String::new()
                },
                if l.send_drops > 0 {
                    format!("; dropped on a congested backend path {}", l.send_drops)
                } else {
                    String::new()
                }
            );
        }
        if let Some(h) = &vs.http {
            let _ = writeln!(
                out,
                "  http: {} connections ({} open), {} requests; 503 {}  502 {}  504 {}  bad requests {}; timeouts: header {}  idle {}  client {}; retries {}  upgrades {}",
                h.connections,
                h.active_connections,
                h.requests,
                h.no_backend,
                h.bad_gateway,
                h.gateway_timeout,
                h.bad_requests,
                h.header_timeouts,
                h.idle_timeouts,
                h.client_timeouts,
                h.retries,
                h.upgrades
            );
            if h.http2_connections > 0 {
                let _ = writeln!(out, "  http: HTTP/2 connections {}", h.http2_connections);
            }
            if h.proxy_header_errors > 0 || h.tls_handshake_errors > 0 {
                let _ = writeln!(
                    out,
                    "  http: PROXY header errors {}  TLS handshake errors {}",
                    h.proxy_header_errors, h.tls_handshake_errors
                );
            }
        }
        for b in &vs.backends {
            if let Some(line) = lines.next() {
                let _ = writeln!(out, "  {line}");
            }
            // Why a backend is failed, as HAProxy's check_desc tells: down, or, with
            // inhibit_on_failure, kept up at weight 0 (a reason is there only while
            // something fails it).
            if let Some(why) = &b.health_reason {
                let when = b
                    .health_changed
                    .map_or_else(String::new, |t| format!(" (since {})", utc(t)));
                let what = if b.health == Health::Down {
                    "down"
                } else {
                    "failed, inhibited at weight 0"
                };
                let _ = writeln!(out, "       {what}: {why}{when}");
            }
            if let Some(h) = b.http {
                let _ = writeln!(
                    out,
                    "       http: {} requests  1xx {}  2xx {}  3xx {}  4xx {}  5xx {}{}",
                    h.requests,
                    h.responses_1xx,
                    h.responses_2xx,
                    h.responses_3xx,
                    h.responses_4xx,
                    h.responses_5xx,
                    if h.connect_failures > 0 || h.timeouts > 0 {
                        format!(
                            "; connect failures {}  timeouts {}",
                            h.connect_failures, h.timeouts
                        )
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    out
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC` (the proleptic Gregorian
/// calendar, [`lb_proxy::log::civil_from_days`]).
fn utc(secs: u64) -> String {
    let (year, month, day) = lb_proxy::log::civil_from_days(secs / 86_400);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| (*s).to_owned()).collect()
}

fn table_lines(rows: &[Vec<String>]) -> Vec<String> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|r| {
            let mut line = String::new();
            for (c, cell) in r.iter().enumerate() {
                if c + 1 == r.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    for line in table_lines(rows) {
        let _ = writeln!(out, "{indent}{line}");
    }
}

fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d{h:02}h{m:02}m")
    } else if h > 0 {
        format!("{h}h{m:02}m")
    } else {
        format!("{m}m{s:02}s")
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["K", "M", "G", "T", "P"];
    if n < 1024 {
        return n.to_string();
    }
    let mut v = n as f64;
    let mut unit = "";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0");
        assert_eq!(bytes(1023), "1023");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(5 << 30), "5.0G");
        assert_eq!(uptime(59), "0m59s");
        assert_eq!(uptime(3_700), "1h01m");
        assert_eq!(uptime(90_000), "1d01h00m");
    }

    #[test]
    fn unix_times_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_339_201), "2026-11-22 09:20:01 UTC");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59 UTC");
    }
}

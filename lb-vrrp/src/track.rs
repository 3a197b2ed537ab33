//! keepalived's `vrrp_track_process` and `track_file`, sans-IO: which processes match, when
//! a process count has quorum (with `fork_delay` / `terminate_delay`), what a tracked
//! file's value does to an instance, and the kernel's process-event messages. The tokio
//! driver (`driver::Speaker`) reads `/proc`, the process events connector and inotify,
//! and feeds these.
//!
//! Semantics follow keepalived 2.2's `keepalived.conf(5)` ("Track files", "VRRP track
//! processes") and its `track_process.c` / `vrrp_track.c`.

use std::time::{Duration, Instant};

use crate::machine::{TrackWeight, TRACK_VALUE_FAULT};

/// How a [`ProcessPattern`]'s parameters are compared (keepalived `param_match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamMatch {
    /// The process has exactly the configured parameters (keepalived's default once
    /// parameters are given, or `param_match` with no argument).
    Exact,
    /// The process's first parameters are the configured ones; it may have more
    /// (`param_match partial`).
    Partial,
    /// As `Partial`, and the last configured parameter may be a prefix of the process's
    /// (`param_match initial`).
    Initial,
}

/// Which processes a [`TrackProcess`] counts (keepalived `process NAME [PARAM…]`,
/// `param_match`, `full_command`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessPattern {
    /// The name compared: the process name (`/proc/PID/comm`, at most 15 bytes, as
    /// `pgrep -x`), or with [`ProcessPattern::full_command`] the command's first word
    /// (`argv[0]` from `/proc/PID/cmdline`, typically a path).
    pub process: String,
    /// Compare [`ProcessPattern::process`] with `argv[0]` instead of the process name
    /// (keepalived `full_command`). A [`ProcessPattern::param_match`] implies it, as in
    /// keepalived, where `param_match` sets it (and parameters set `param_match`).
    pub full_command: bool,
    /// The parameters (`argv[1..]`) compared, as [`ProcessPattern::param_match`] says.
    pub params: Vec<String>,
    /// `None`: parameters are not compared (not even looked at). `Some`: they are, and
    /// the name compared is `argv[0]` (keepalived sets [`ParamMatch::Exact`] and
    /// `full_command` once parameters are given).
    pub param_match: Option<ParamMatch>,
}

/// The longest process name the kernel keeps (`TASK_COMM_LEN` - 1): a longer
/// [`ProcessPattern::process`] never matches without `full_command`.
pub const COMM_MAX: usize = 15;

impl ProcessPattern {
    /// A pattern matching processes named `process` (`/proc/PID/comm`), whatever their
    /// parameters.
    pub fn name(process: &str) -> Self {
        Self {
            process: process.to_owned(),
            full_command: false,
            params: Vec::new(),
            param_match: None,
        }
    }

    /// Whether the command line must be read to decide ([`ProcessPattern::matches`]).
    pub fn needs_cmdline(&self) -> bool {
        self.full_command || self.param_match.is_some()
    }

    /// Whether a process matches: `comm` is its name (`/proc/PID/comm` without the
    /// newline), `cmdline` its raw `/proc/PID/cmdline` (words each ended by a NUL; only
    /// read when [`ProcessPattern::needs_cmdline`]). The command line may be cut short
    /// once it holds the pattern's words, their NULs and one byte more (what the driver
    /// reads). A last word without its NUL is then longer than the word it is compared
    /// with, and the answer is the one for the whole line, as keepalived's is.
    pub fn matches(&self, comm: &[u8], cmdline: &[u8]) -> bool {
        let mut words = cmdline.split(|&b| b == 0);
        // argv[0]: the parameters are the words after it.
        let command = words.next().unwrap_or_default();
        let name = if self.full_command || self.param_match.is_some() {
            command
        } else {
            comm
        };
        if name != self.process.as_bytes() {
            return false;
        }
        let Some(how) = self.param_match else {
            return true;
        };
        // cmdline ends with a NUL, so split leaves an empty last word: drop it.
        let mut have: Vec<&[u8]> = words.collect();
        if have.last().is_some_and(|w| w.is_empty()) {
            have.pop();
        }
        let want = &self.params;
        match how {
            ParamMatch::Exact => {
                have.len() == want.len() && have.iter().zip(want).all(|(h, w)| *h == w.as_bytes())
            }
            ParamMatch::Partial => {
                have.len() >= want.len() && have.iter().zip(want).all(|(h, w)| *h == w.as_bytes())
            }
            ParamMatch::Initial => {
                have.len() >= want.len()
                    && have.iter().zip(want).enumerate().all(|(i, (h, w))| {
                        if i + 1 == want.len() {
                            h.starts_with(w.as_bytes())
                        } else {
                            *h == w.as_bytes()
                        }
                    })
            }
        }
    }
}

/// A keepalived `vrrp_track_process` tracked by an instance: healthy while the number of
/// matching processes is within `quorum..=quorum_max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackProcess {
    /// The `vrrp_track_process` name (for logs).
    pub name: String,
    /// Which processes count.
    pub pattern: ProcessPattern,
    /// `quorum`: fewest matching processes for healthy. Default 1.
    pub quorum: u32,
    /// `quorum_max`: most matching processes for healthy. Default `u32::MAX` (no limit).
    pub quorum_max: u32,
    /// `fork_delay`: a change of health caused by a new process (a fork) counts only
    /// if it still holds this long after. Default 0. keepalived's `delay` sets both
    /// delays; `fork_delay` and `terminate_delay` each set only their own.
    pub fork_delay: Duration,
    /// `terminate_delay`: a change caused by a process ending counts only if it still
    /// holds this long after (a restart within it is not seen). Default 0.
    pub terminate_delay: Duration,
    /// `weight` (1 by default here, as keepalived's manual says; its code, which lb-node's
    /// configuration follows, leaves it 0, so a lost quorum faults): a positive weight is
    /// added while healthy, a negative one while not, 0 means Fault while not healthy.
    pub weight: TrackWeight,
    /// `weight … reverse`: the weight applies to the opposite state (a positive weight
    /// is subtracted while healthy, a negative one added back while not; with weight 0,
    /// Fault while healthy).
    pub reverse: bool,
}

impl TrackProcess {
    /// keepalived's defaults: quorum 1, no maximum, no delays, weight 1 (its manual's; its
    /// code's is 0), not reversed.
    pub fn new(name: &str, pattern: ProcessPattern) -> Self {
        Self {
            name: name.to_owned(),
            pattern,
            quorum: 1,
            quorum_max: u32::MAX,
            fork_delay: Duration::ZERO,
            terminate_delay: Duration::ZERO,
            weight: TrackWeight(1),
            reverse: false,
        }
    }

    /// The weight and health the state machine sees for quorum `up`: `reverse` is the
    /// opposite weight on the opposite health (keepalived adds `weight × -1` where it
    /// would have added `weight`).
    pub fn as_track(&self, up: bool) -> (TrackWeight, bool) {
        if self.reverse {
            (TrackWeight(-self.weight.0), !up)
        } else {
            (self.weight, up)
        }
    }
}

/// What changed a process count ([`ProcessQuorum::update`]): it decides which delay
/// applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountCause {
    /// A matching process was created (fork) or, when scanning `/proc`, appeared:
    /// `fork_delay`.
    Fork,
    /// A matching process ended or, when scanning, disappeared: `terminate_delay`.
    Exit,
    /// An exec or a name change: no delay, as keepalived.
    Other,
}

/// The quorum of one [`TrackProcess`], driven by counts and time: what keepalived's
/// `check_process*` and its fork/terminate timers decide.
///
/// keepalived keeps a timer per cause and acts only where the count crosses a bound: a
/// crossing starts its cause's timer, or, if the other cause's timer runs, cancels it and
/// reports the health the count gives. With one bound to cross (no `quorum_max`, or
/// `quorum` 0) that is exactly the rule of [`ProcessQuorum::update`]. Where the count
/// crosses both bounds within a delay, keepalived can report a change that no delay
/// held; here each change waits for its own cause's delay. For example, with `quorum 2`,
/// `quorum_max 2` and three processes, one exits (healthy after `terminate_delay`),
/// another exits (under `quorum`: that change is abandoned), and the last one forks:
/// keepalived reports the quorum at the fork, here it comes after `fork_delay`.
/// keepalived's own full count (after lost events) cancels both timers and reports a gain
/// at once. The driver's is an ordinary update ([`CountCause::Fork`] if the count grew or
/// stayed, [`CountCause::Exit`] if it shrank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessQuorum {
    quorum: u32,
    quorum_max: u32,
    fork_delay: Duration,
    terminate_delay: Duration,
    count: u32,
    up: bool,
    /// A change waiting for its delay; `None`: none.
    pending: Option<Instant>,
}

impl ProcessQuorum {
    /// Starts from `count` matching processes (a scan of `/proc`), with no delay.
    pub fn new(t: &TrackProcess, count: u32) -> Self {
        let mut q = Self {
            quorum: t.quorum,
            quorum_max: t.quorum_max,
            fork_delay: t.fork_delay,
            terminate_delay: t.terminate_delay,
            count,
            up: false,
            pending: None,
        };
        q.up = q.target();
        q
    }

    fn target(&self) -> bool {
        (self.quorum..=self.quorum_max).contains(&self.count)
    }

    /// Whether the quorum is held, as last reported.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// The number of matching processes.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The count is now `count` because of `cause`. Returns the new health when it
    /// changes now. A change waits for the delay of the cause that started it (later
    /// causes neither restart nor shorten it), and the count when the delay runs out
    /// decides. A count back at the health reported within the delay abandons the change,
    /// as keepalived cancels its timer.
    pub fn update(&mut self, now: Instant, count: u32, cause: CountCause) -> Option<bool> {
        self.count = count;
        let target = self.target();
        if self.pending.is_some() {
            if target == self.up {
                self.pending = None;
            }
            return None;
        }
        if target == self.up {
            return None;
        }
        let delay = match cause {
            CountCause::Fork => self.fork_delay,
            CountCause::Exit => self.terminate_delay,
            CountCause::Other => Duration::ZERO,
        };
        if delay.is_zero() {
            self.up = target;
            Some(target)
        } else {
            // A delay past the clock's range: the change never counts.
            self.pending = now.checked_add(delay);
            None
        }
    }

    /// When to call [`ProcessQuorum::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.pending
    }

    /// The delay ran out: the health the count gives now, if it differs.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<bool> {
        match self.pending {
            Some(at) if at <= now => {
                self.pending = None;
                let target = self.target();
                (target != self.up).then(|| {
                    self.up = target;
                    target
                })
            }
            _ => None,
        }
    }
}

/// A keepalived `track_file` tracked by an instance: the file holds a number, read at
/// start and whenever it is written, renamed into place or deleted (then 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackFile {
    /// The `track_file` name (for logs).
    pub name: String,
    /// The file.
    pub path: std::path::PathBuf,
    /// `weight`: the value is multiplied by it (default 1); 0 means a value other than 0
    /// is Fault.
    pub weight: i32,
    /// `weight … reverse`: the product is negated (with weight 0, a value of 0 is Fault).
    pub reverse: bool,
    /// `init_file [VALUE] [overwrite]`: `Some((value, overwrite))` writes `value` to the
    /// file at start if it does not exist, or always with `overwrite`.
    pub init: Option<(i64, bool)>,
}

impl TrackFile {
    /// keepalived's defaults: weight 1, not reversed, no `init_file`.
    pub fn new(name: &str, path: impl Into<std::path::PathBuf>) -> Self {
        Self {
            name: name.to_owned(),
            path: path.into(),
            weight: 1,
            reverse: false,
            init: None,
        }
    }

    /// What a file value does to the instance, for
    /// [`VirtualRouter::handle_track_value`](crate::machine::VirtualRouter::handle_track_value):
    /// the value times the weight (negated with `reverse`; exact, as keepalived 2.2.7
    /// computes it in 64 bits), limited to `-254..=253`, where -254
    /// ([`TRACK_VALUE_FAULT`]) is Fault; with weight 0, a value other than 0 (with
    /// `reverse`: 0) is Fault and anything else 0. keepalived's
    /// `process_update_track_file_status`.
    pub fn status(&self, value: i64) -> i32 {
        if self.weight == 0 {
            return if (value != 0) != self.reverse {
                TRACK_VALUE_FAULT
            } else {
                0
            };
        }
        let sign = if self.reverse { -1 } else { 1 };
        let v = i128::from(value) * i128::from(self.weight) * sign;
        // In range by the clamp.
        v.clamp(i128::from(TRACK_VALUE_FAULT), 253) as i32
    }
}

/// What keepalived makes of a tracked file's content (`process_track_file`): the number
/// `strtol(buf, NULL, 0)` reads in its first 127 bytes ([`parse_file_number`]), taken only
/// if it lies in -2^31..=2^31 (keepalived 2.2.7's range).
///
/// * `Ok(Some(value))`: the value, limited to `-254..=254` (only value × weight matters,
///   and [`TrackFile::status`] limits that to `-254..=253`);
/// * `Ok(None)`: a number outside that range, which keepalived ignores ("Invalid number
///   … - ignoring"): the value the file had stays (0 at start);
/// * `Err`: no number at all (empty content included), which reads as 0; keepalived reads
///   it so silently, the `Err` says why for the caller to log.
pub fn parse_file_value(content: &[u8]) -> Result<Option<i64>, String> {
    parse_file_number(content).map(|v| {
        (-(1i64 << 31)..=1i64 << 31)
            .contains(&v)
            .then(|| v.clamp(-254, 254))
    })
}

/// The number keepalived's `strtol(buf, NULL, 0)` reads in a tracked file's first 127
/// bytes, saturated to `i64`: leading white space as C's `isspace` has it in the "C"
/// locale (space, `\t`, `\n`, `\v`, `\f`, `\r`, and no other Unicode space), an
/// optional sign, then decimal, `0x` hexadecimal or `0` octal digits; anything after is
/// ignored. [`parse_file_value`] adds keepalived's range and the VRRP limit; the checker
/// reads a `FILE_CHECK`'s file with it (check_file.c uses the same `process_track_file`).
///
/// # Errors
/// Content with no number at all (the caller decides what that means).
pub fn parse_file_number(content: &[u8]) -> Result<i64, String> {
    let s = &content[..content.len().min(127)];
    let s = String::from_utf8_lossy(s);
    // C's isspace in the "C" locale keepalived runs in: no other Unicode white space.
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if let Some(h) = t.strip_prefix("0x").or(t.strip_prefix("0X")) {
        if h.starts_with(|c: char| c.is_ascii_hexdigit()) {
            (16, h)
        } else {
            (10, &t[..1]) // "0x" with no hex digit: strtol reads the 0
        }
    } else if t.starts_with('0') {
        (8, t)
    } else {
        (10, t)
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return Err(format!("no number in {:?}", s.trim_end()));
    }
    // Saturate: only the clamped value matters.
    let mut v: i64 = 0;
    for c in digits[..end].chars() {
        let d = i64::from(c.to_digit(radix).unwrap_or(0));
        v = v.saturating_mul(i64::from(radix)).saturating_add(d);
    }
    Ok(if neg { -v } else { v })
}

/// One message of the kernel's process events connector (`linux/cn_proc.h`), as far as
/// process tracking needs it. Thread events (a thread's id differs from its process's)
/// are left to the caller to skip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// The answer to the listen request, or another `PROC_EVENT_NONE`: `err` is 0 on
    /// success.
    Ack {
        /// The error number the kernel gave (0: listening).
        err: u32,
        /// The sequence number of the request it answers (`cn_msg.seq`): acks reach every
        /// listener, so a subscriber tells its own apart by the number it sent.
        seq: u32,
    },
    /// `PROC_EVENT_FORK`.
    Fork {
        /// The parent's process id.
        parent_tgid: u32,
        /// The new task's thread id.
        child_pid: u32,
        /// The new task's process id (equal to `child_pid` for a new process).
        child_tgid: u32,
    },
    /// `PROC_EVENT_EXEC`.
    Exec {
        /// Thread id.
        pid: u32,
        /// Process id.
        tgid: u32,
    },
    /// `PROC_EVENT_COMM`: the name changed (`prctl(PR_SET_NAME)`).
    Comm {
        /// Thread id.
        pid: u32,
        /// Process id.
        tgid: u32,
    },
    /// `PROC_EVENT_EXIT`.
    Exit {
        /// Thread id.
        pid: u32,
        /// Process id.
        tgid: u32,
    },
    /// An event kind process tracking ignores (uid, gid, sid, ptrace, coredump…).
    Other,
}

/// `NETLINK_CONNECTOR` message type carrying connector payloads.
const NLMSG_DONE: u16 = 3;
/// `CN_IDX_PROC` / `CN_VAL_PROC`.
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// Offsets in one message: `nlmsghdr` (16 bytes), `cn_msg` (20), then `proc_event`
/// (`what`, `cpu`, `timestamp_ns`, then the event data at 16).
const CN_MSG: usize = 16;
const EVENT: usize = CN_MSG + 20;
const DATA: usize = EVENT + 16;

impl ProcEvent {
    /// The listen request (`PROC_CN_MCAST_LISTEN`) to send on a connector socket bound to
    /// group `CN_IDX_PROC`; `port` is the socket's netlink port id.
    /// Its sequence number (`cn_msg.seq`) is `port`, unique to the socket, which the
    /// kernel's [`ProcEvent::Ack`] repeats.
    pub fn listen_request(port: u32) -> [u8; EVENT + 4] {
        Self::mcast_request(port, 1) // PROC_CN_MCAST_LISTEN
    }

    /// The request that ends a subscription (`PROC_CN_MCAST_IGNORE`).
    pub fn ignore_request(port: u32) -> [u8; EVENT + 4] {
        Self::mcast_request(port, 2)
    }

    fn mcast_request(port: u32, op: u32) -> [u8; EVENT + 4] {
        let mut m = [0u8; EVENT + 4];
        m[CN_MSG + 8..CN_MSG + 12].copy_from_slice(&port.to_ne_bytes());
        m[0..4].copy_from_slice(&((EVENT + 4) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        m[12..16].copy_from_slice(&port.to_ne_bytes());
        m[CN_MSG..CN_MSG + 4].copy_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m[CN_MSG + 4..CN_MSG + 8].copy_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m[CN_MSG + 16..CN_MSG + 18].copy_from_slice(&4u16.to_ne_bytes());
        m[EVENT..EVENT + 4].copy_from_slice(&op.to_ne_bytes());
        m
    }

    /// Parses the messages of one datagram (usually one). A message that is not a
    /// process event, or is too short for its kind, is `Err` with the reason (the caller
    /// counts and drops it); parsing goes on with the next.
    pub fn parse_all(buf: &[u8]) -> Vec<Result<Self, &'static str>> {
        let mut out = Vec::new();
        let mut rest = buf;
        while rest.len() >= 16 {
            let len = u32_at(rest, 0).unwrap_or(0) as usize;
            if len < 16 || len > rest.len() {
                out.push(Err("netlink length out of bounds"));
                break;
            }
            out.push(Self::parse_one(&rest[..len]));
            // NLMSG_ALIGN: 4 bytes.
            let next = (len + 3) & !3;
            rest = rest.get(next..).unwrap_or_default();
        }
        out
    }

    fn parse_one(m: &[u8]) -> Result<Self, &'static str> {
        let ty = u16::from_ne_bytes([m[4], m[5]]);
        if ty != NLMSG_DONE {
            return Err("not a connector message");
        }
        if u32_at(m, CN_MSG) != Some(CN_IDX_PROC) || u32_at(m, CN_MSG + 4) != Some(CN_VAL_PROC) {
            return Err("not a process event");
        }
        let what = u32_at(m, EVENT).ok_or("truncated event")?;
        let at = |i: usize| u32_at(m, DATA + 4 * i).ok_or("truncated event data");
        Ok(match what {
            0 => Self::Ack {
                err: at(0)?,
                seq: u32_at(m, CN_MSG + 8).ok_or("truncated event")?,
            },
            0x1 => Self::Fork {
                parent_tgid: at(1)?,
                child_pid: at(2)?,
                child_tgid: at(3)?,
            },
            0x2 => Self::Exec {
                pid: at(0)?,
                tgid: at(1)?,
            },
            0x200 => Self::Comm {
                pid: at(0)?,
                tgid: at(1)?,
            },
            0x8000_0000 => Self::Exit {
                pid: at(0)?,
                tgid: at(1)?,
            },
            _ => Self::Other,
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The name and state in a `/proc/PID/stat` line: `(comm, zombie)`. The name is between
/// the first `(` and the last `)` (it may itself hold parentheses and spaces).
pub fn parse_stat(stat: &[u8]) -> Option<(&[u8], bool)> {
    let open = stat.iter().position(|&b| b == b'(')?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    if close <= open {
        return None;
    }
    let state = stat.get(close + 2).copied();
    Some((&stat[open + 1..close], state == Some(b'Z')))
}

#[cfg(test)]
mod keepalived_model;

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(process: &str, full: bool, params: &[&str], m: Option<ParamMatch>) -> ProcessPattern {
        ProcessPattern {
            process: process.into(),
            full_command: full,
            params: params.iter().map(|s| (*s).to_owned()).collect(),
            param_match: m,
        }
    }

    #[test]
    fn names_match_exactly_as_pgrep_x() {
        let p = ProcessPattern::name("nginx");
        assert!(p.matches(b"nginx", b""));
        assert!(!p.matches(b"nginx-debug", b""));
        assert!(!p.matches(b"ngin", b""));
        assert!(!p.needs_cmdline());
        let full = pat("/usr/sbin/haproxy", true, &[], None);
        assert!(full.matches(b"haproxy", b"/usr/sbin/haproxy\0-f\0/etc/h.cfg\0"));
        assert!(!full.matches(b"haproxy", b"haproxy\0-f\0"));
        assert!(full.needs_cmdline());
    }

    #[test]
    fn parameters_exact_partial_initial() {
        let cmd = b"/bin/sleep\x00100\x00extra\x00";
        let exact = pat(
            "/bin/sleep",
            true,
            &["100", "extra"],
            Some(ParamMatch::Exact),
        );
        assert!(exact.matches(b"sleep", cmd));
        let exact_short = pat("/bin/sleep", true, &["100"], Some(ParamMatch::Exact));
        assert!(!exact_short.matches(b"sleep", cmd));
        let partial = pat("/bin/sleep", true, &["100"], Some(ParamMatch::Partial));
        assert!(partial.matches(b"sleep", cmd));
        let partial_prefix = pat("/bin/sleep", true, &["10"], Some(ParamMatch::Partial));
        assert!(!partial_prefix.matches(b"sleep", cmd));
        let initial = pat(
            "/bin/sleep",
            true,
            &["100", "ext"],
            Some(ParamMatch::Initial),
        );
        assert!(initial.matches(b"sleep", cmd));
        let initial_mid = pat(
            "/bin/sleep",
            true,
            &["10", "extra"],
            Some(ParamMatch::Initial),
        );
        assert!(!initial_mid.matches(b"sleep", cmd));
        // param_match with no parameters: the process must have none.
        let none = pat("/bin/sleep", true, &[], Some(ParamMatch::Exact));
        assert!(none.matches(b"sleep", b"/bin/sleep\0"));
        assert!(!none.matches(b"sleep", cmd));
        // An empty cmdline (a kernel thread, a zombie) matches no full command.
        assert!(!exact.matches(b"sleep", b""));
    }

    /// `param_match` implies `full_command`, as in keepalived, whose
    /// `vrrp_tprocess_match_handler` sets it: the command's first word is compared with
    /// the process, and the parameters with the words after it, whatever `full_command`
    /// says.
    #[test]
    fn param_match_compares_the_command_and_the_words_after_it() {
        let none = pat("sleep", false, &[], Some(ParamMatch::Exact));
        assert!(none.matches(b"sleep", b"sleep\0"));
        assert!(!none.matches(b"sleep", b"sleep\x00100\x00"));
        let path = pat("/bin/sleep", false, &["100"], Some(ParamMatch::Exact));
        assert!(path.matches(b"sleep", b"/bin/sleep\x00100\x00"));
        assert!(!path.matches(b"sleep", b"sleep\x00100\x00"));
        let partial = pat("sleep", false, &["100"], Some(ParamMatch::Partial));
        assert!(partial.matches(b"other", b"sleep\x00100\x00x\x00"));
    }

    fn tp(quorum: u32, max: u32, fork: u64, term: u64) -> TrackProcess {
        let mut t = TrackProcess::new("p", ProcessPattern::name("x"));
        t.quorum = quorum;
        t.quorum_max = max;
        t.fork_delay = Duration::from_millis(fork);
        t.terminate_delay = Duration::from_millis(term);
        t
    }

    #[test]
    fn quorum_without_delays_follows_the_count() {
        let t0 = tokio::time::Instant::now().into_std();
        let mut q = ProcessQuorum::new(&tp(2, 3, 0, 0), 1);
        assert!(!q.is_up());
        assert_eq!(q.update(t0, 2, CountCause::Fork), Some(true));
        assert_eq!(q.update(t0, 3, CountCause::Fork), None);
        assert_eq!(
            q.update(t0, 4, CountCause::Fork),
            Some(false),
            "over quorum_max"
        );
        assert_eq!(q.update(t0, 3, CountCause::Exit), Some(true));
        assert_eq!(q.update(t0, 0, CountCause::Exit), Some(false));
        assert_eq!(q.poll_timeout(), None);
    }

    #[test]
    fn delays_hold_a_change_and_a_change_back_cancels_it() {
        let t0 = tokio::time::Instant::now().into_std();
        let ms = Duration::from_millis;
        let mut q = ProcessQuorum::new(&tp(1, u32::MAX, 500, 1000), 1);
        assert!(q.is_up());
        // A restart inside terminate_delay is never seen.
        assert_eq!(q.update(t0, 0, CountCause::Exit), None);
        assert_eq!(q.poll_timeout(), Some(t0 + ms(1000)));
        assert_eq!(q.update(t0 + ms(300), 1, CountCause::Fork), None);
        assert_eq!(q.poll_timeout(), None);
        assert!(q.is_up());
        // An exit that lasts: down once the delay runs out.
        assert_eq!(q.update(t0 + ms(400), 0, CountCause::Exit), None);
        assert_eq!(q.handle_timeout(t0 + ms(1399)), None);
        assert_eq!(q.handle_timeout(t0 + ms(1400)), Some(false));
        // A fork waits fork_delay; an exec does not.
        assert_eq!(q.update(t0 + ms(2000), 1, CountCause::Fork), None);
        assert_eq!(q.handle_timeout(t0 + ms(2500)), Some(true));
        assert_eq!(q.update(t0 + ms(3000), 0, CountCause::Other), Some(false));
        assert_eq!(q.update(t0 + ms(3000), 1, CountCause::Other), Some(true));
        // The count at the timeout decides, not the one that started the delay.
        assert_eq!(q.update(t0 + ms(4000), 0, CountCause::Exit), None);
        assert_eq!(q.update(t0 + ms(4100), 0, CountCause::Exit), None);
        assert_eq!(q.handle_timeout(t0 + ms(5000)), Some(false));
    }

    #[test]
    fn reverse_is_the_opposite_weight_on_the_opposite_health() {
        let mut t = tp(1, u32::MAX, 0, 0);
        t.weight = TrackWeight(10);
        assert_eq!(t.as_track(true), (TrackWeight(10), true));
        t.reverse = true;
        // +10 reversed: 10 off while running, nothing while not.
        assert_eq!(t.as_track(true), (TrackWeight(-10), false));
        assert_eq!(t.as_track(false), (TrackWeight(-10), true));
        t.weight = TrackWeight(0);
        // weight 0 reverse: Fault while running.
        assert_eq!(t.as_track(true), (TrackWeight(0), false));
    }

    #[test]
    fn file_status_as_keepalived() {
        let mut f = TrackFile::new("f", "/tmp/x");
        assert_eq!(f.status(0), 0);
        assert_eq!(f.status(-20), -20);
        assert_eq!(f.status(254), 253);
        assert_eq!(f.status(-254), TRACK_VALUE_FAULT);
        f.weight = 10;
        assert_eq!(f.status(-30), TRACK_VALUE_FAULT);
        assert_eq!(f.status(-25), -250);
        f.reverse = true;
        assert_eq!(f.status(-25), 250);
        f.weight = 0;
        assert_eq!(
            f.status(0),
            TRACK_VALUE_FAULT,
            "weight 0 reverse: 0 is Fault"
        );
        assert_eq!(f.status(7), 0);
        f.reverse = false;
        assert_eq!(f.status(7), TRACK_VALUE_FAULT);
        assert_eq!(f.status(0), 0);
        f.weight = i32::MAX;
        assert_eq!(f.status(254), 253);
        assert_eq!(f.status(-254), TRACK_VALUE_FAULT);
    }

    #[test]
    fn file_values_read_as_strtol() {
        assert_eq!(parse_file_value(b"0\n"), Ok(Some(0)));
        assert_eq!(parse_file_value(b"  -12 trailing"), Ok(Some(-12)));
        assert_eq!(parse_file_value(b"+7"), Ok(Some(7)));
        assert_eq!(parse_file_value(b"0x10"), Ok(Some(16)));
        assert_eq!(parse_file_value(b"010"), Ok(Some(8)));
        assert_eq!(parse_file_value(b"0x"), Ok(Some(0)));
        assert_eq!(parse_file_value(b"-1000"), Ok(Some(-254)));
        // keepalived 2.2.7 takes -2^31..=2^31 and ignores anything else.
        assert_eq!(parse_file_value(b"2147483648"), Ok(Some(254)));
        assert_eq!(parse_file_value(b"-2147483648"), Ok(Some(-254)));
        assert_eq!(parse_file_value(b"2147483649"), Ok(None));
        assert_eq!(parse_file_value(b"-2147483649"), Ok(None));
        assert_eq!(parse_file_value(b"99999999999999999999999"), Ok(None));
        assert!(parse_file_value(b"").is_err());
        assert!(parse_file_value(b"up\n").is_err());
        assert!(parse_file_value(b"\xff\xfe").is_err());
        assert_eq!(parse_file_number(b"1000\n"), Ok(1000));
        assert_eq!(parse_file_number(b"-70000"), Ok(-70_000));
        assert_eq!(parse_file_number(b"99999999999999999999999"), Ok(i64::MAX));
        assert!(parse_file_number(b"x").is_err());
    }

    /// Only C's white space (`isspace` in the "C" locale keepalived runs in) comes before
    /// the number: a no-break space or another Unicode space is text, and text is 0.
    #[test]
    fn file_values_skip_only_c_white_space() {
        assert_eq!(parse_file_value(b" \t\n\x0b\x0c\r7"), Ok(Some(7)));
        for space in ["\u{a0}", "\u{85}", "\u{2003}", "\u{3000}"] {
            let content = format!("{space}7");
            assert!(parse_file_value(content.as_bytes()).is_err(), "{content:?}");
            assert!(
                parse_file_number(content.as_bytes()).is_err(),
                "{content:?}"
            );
        }
    }

    fn msg(what: u32, data: &[u32]) -> Vec<u8> {
        let mut m = vec![0u8; DATA];
        m[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        m[CN_MSG..CN_MSG + 4].copy_from_slice(&1u32.to_ne_bytes());
        m[CN_MSG + 4..CN_MSG + 8].copy_from_slice(&1u32.to_ne_bytes());
        m[EVENT..EVENT + 4].copy_from_slice(&what.to_ne_bytes());
        for d in data {
            m.extend_from_slice(&d.to_ne_bytes());
        }
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m
    }

    #[test]
    fn proc_events_parse_and_bad_ones_are_errors() {
        let fork = msg(1, &[10, 10, 11, 11]);
        assert_eq!(
            ProcEvent::parse_all(&fork),
            vec![Ok(ProcEvent::Fork {
                parent_tgid: 10,
                child_pid: 11,
                child_tgid: 11
            })]
        );
        let mut two = msg(2, &[5, 5]);
        two.extend(msg(0x8000_0000, &[6, 6, 0, 9]));
        assert_eq!(
            ProcEvent::parse_all(&two),
            vec![
                Ok(ProcEvent::Exec { pid: 5, tgid: 5 }),
                Ok(ProcEvent::Exit { pid: 6, tgid: 6 })
            ]
        );
        let mut ack = msg(0, &[0]);
        ack[CN_MSG + 8..CN_MSG + 12].copy_from_slice(&42u32.to_ne_bytes());
        assert_eq!(
            ProcEvent::parse_all(&ack),
            vec![Ok(ProcEvent::Ack { err: 0, seq: 42 })]
        );
        assert_eq!(
            ProcEvent::parse_all(&msg(0x4, &[1, 1])),
            vec![Ok(ProcEvent::Other)]
        );
        // Truncated fork data, wrong connector id, a length past the end.
        assert!(ProcEvent::parse_all(&msg(1, &[10]))[0].is_err());
        let mut wrong = msg(2, &[5, 5]);
        wrong[CN_MSG] = 9;
        assert!(ProcEvent::parse_all(&wrong)[0].is_err());
        let mut long = msg(2, &[5, 5]);
        long[0] = 200;
        assert!(ProcEvent::parse_all(&long)[0].is_err());
        assert!(ProcEvent::parse_all(&[0u8; 3]).is_empty());
        let req = ProcEvent::listen_request(42);
        assert_eq!(u32_at(&req, 0), Some(40));
        assert_eq!(u32_at(&req, 12), Some(42));
        assert_eq!(u32_at(&req, CN_MSG + 8), Some(42), "seq: the port");
        assert_eq!(u32_at(&req, EVENT), Some(1));
        assert_eq!(u32_at(&ProcEvent::ignore_request(42), EVENT), Some(2));
    }

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat(b"42 (nginx) S 1 42 42 0"),
            Some((&b"nginx"[..], false))
        );
        assert_eq!(
            parse_stat(b"43 (a (b) c) Z 1"),
            Some((&b"a (b) c"[..], true))
        );
        assert_eq!(parse_stat(b"garbage"), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = ProcEvent::parse_all(&b);
            let _ = parse_file_value(&b);
            let _ = parse_stat(&b);
        }
    }
}

//! Model-based tests of [`super`]: random sequences run on the real types and on plain
//! transcriptions of what keepalived 2.2 and these docs say, compared after every step.
//!
//! * Process quorum: processes starting (forked by a counted process, or started by
//!   another and exec'd), exec'ing, ending, changing unseen until a full count, and time
//!   passing (by random amounts, exactly to [`ProcessQuorum::poll_timeout`] and just
//!   before it), with `quorum`, `quorum_max`, `fork_delay` and `terminate_delay`. The
//!   health, the count, the deadline and every change reported are compared with
//!   [`Documented`] (the rule of [`ProcessQuorum::update`]) after every step, and with
//!   [`Keepalived`] (keepalived's `track_process.c`) where [`ProcessQuorum`]'s docs say
//!   the two agree.
//! * Process patterns: [`ProcessPattern::matches`] against [`keepalived_matches`], a
//!   transcription of keepalived's `check_process` and `check_params`, on the whole
//!   command line and on the part the driver reads.
//! * File values and their effect: file contents written, deleted and left as they were,
//!   and quorums gained and lost, applied to a [`VirtualRouter`] the way the driver applies
//!   them, against [`Instance`], keepalived's `process_track_file`, its `strtol`, and the
//!   priority and fault bookkeeping of `vrrp_track.c` / `track_file.c`.
//!
//! keepalived 2.2.7 (Debian's, the version the integration tests run against) is the
//! reference where its versions differ: it accepts file values in -2^31..=2^31 (its
//! binary compares `value + 2^31 <= 2^32`) and computes value × weight in 64 bits.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::{
    parse_file_value, CountCause, ParamMatch, ProcessPattern, ProcessQuorum, TrackFile,
    TrackProcess,
};
use crate::machine::{Config, State, TrackId, TrackWeight, VirtualRouter, TRACK_VALUE_FAULT};
use crate::wire::{Priority, Vrid};

#[allow(clippy::disallowed_methods)] // tests need some Instant; the code under test never reads the clock
fn t0() -> Instant {
    Instant::now()
}

// ----- Process quorum -----

/// Most processes a case runs at once.
const MAX_PROCS: usize = 6;

/// One generated `vrrp_track_process`.
#[derive(Debug, Clone)]
struct QuorumSetup {
    quorum: u32,
    quorum_max: u32,
    fork_delay: Duration,
    terminate_delay: Duration,
    /// The processes running at the start: whether each matches.
    running: Vec<bool>,
}

impl QuorumSetup {
    /// Whether only one of the bounds can ever be crossed: `quorum` 0 (healthy from none
    /// up to `quorum_max`) or a `quorum_max` above any count a case reaches.
    fn one_bound(&self) -> bool {
        self.quorum == 0 || self.quorum_max as usize >= MAX_PROCS
    }
}

/// A delay: keepalived's default (none), or up to 1.5 s.
fn delay() -> impl Strategy<Value = Duration> {
    prop_oneof![
        2 => Just(Duration::ZERO),
        3 => (1u64..=1500).prop_map(Duration::from_millis),
    ]
}

fn quorum_setup() -> impl Strategy<Value = QuorumSetup> {
    (
        0u32..=3,
        // No quorum_max (keepalived's UINT_MAX), or quorum_max quorum + 0..=3 (with quorum
        // 0, quorum_max 0: healthy while none runs).
        proptest::option::of(0u32..=3),
        delay(),
        delay(),
        proptest::collection::vec(any::<bool>(), 0..=4),
    )
        .prop_map(
            |(quorum, extra, fork_delay, terminate_delay, running)| QuorumSetup {
                quorum,
                quorum_max: extra.map_or(u32::MAX, |e| quorum + e),
                fork_delay,
                terminate_delay,
                running,
            },
        )
}

/// What happens to the processes, or to the clock.
#[derive(Debug, Clone)]
enum ProcOp {
    /// Process `i` (modulo the number running) forks: the child runs the same command.
    Fork(usize),
    /// A process is started by one that is not counted (a shell, systemd): its fork is
    /// not followed, its exec is. `true`: it matches.
    Spawn(bool),
    /// Process `i` execs another command, matching or not.
    Exec(usize, bool),
    /// Process `i` ends.
    Exit(usize),
    /// A process starts without its events being seen (lost events).
    SilentSpawn(bool),
    /// Process `i` ends without its exit being seen.
    SilentExit(usize),
    /// The processes are counted again from `/proc`, as the driver does after lost events.
    Rescan,
    /// Time passes, milliseconds.
    Advance(u16),
    /// Time passes exactly to the quorum's deadline.
    ToDeadline,
    /// Time passes to a microsecond before the deadline.
    JustBefore,
}

fn proc_ops() -> impl Strategy<Value = Vec<ProcOp>> {
    let i = 0usize..MAX_PROCS;
    let op = prop_oneof![
        3 => i.clone().prop_map(ProcOp::Fork),
        2 => any::<bool>().prop_map(ProcOp::Spawn),
        1 => (i.clone(), any::<bool>()).prop_map(|(i, m)| ProcOp::Exec(i, m)),
        3 => i.clone().prop_map(ProcOp::Exit),
        1 => any::<bool>().prop_map(ProcOp::SilentSpawn),
        1 => i.prop_map(ProcOp::SilentExit),
        1 => Just(ProcOp::Rescan),
        3 => (0u16..2000).prop_map(ProcOp::Advance),
        2 => Just(ProcOp::ToDeadline),
        1 => Just(ProcOp::JustBefore),
    ];
    proptest::collection::vec(op, 0..60)
}

/// A process of a case.
#[derive(Debug, Clone, Copy)]
struct Proc {
    /// It matches the pattern.
    matching: bool,
    /// The quorum counts it (the driver's member set): false for a matching process whose
    /// start was not seen, until a count finds it.
    counted: bool,
}

/// The rule [`ProcessQuorum::update`] and the [`TrackProcess`] delays document, written
/// from those docs: the health is the count within `quorum..=quorum_max`; a change of it
/// counts once it has held for the delay of the cause of the event that started it
/// (`fork_delay` for a fork, `terminate_delay` for an exit, none for anything else); an
/// event that brings the count back to the health reported abandons the change; at the
/// end of the delay the count then decides.
#[derive(Debug)]
struct Documented {
    quorum: u32,
    quorum_max: u32,
    fork_delay: Duration,
    terminate_delay: Duration,
    count: u32,
    reported: bool,
    /// The change under way: when it started and how long it must hold.
    change: Option<(Instant, Duration)>,
}

impl Documented {
    fn new(s: &QuorumSetup, count: u32) -> Self {
        let mut d = Self {
            quorum: s.quorum,
            quorum_max: s.quorum_max,
            fork_delay: s.fork_delay,
            terminate_delay: s.terminate_delay,
            count,
            reported: false,
            change: None,
        };
        d.reported = d.healthy();
        d
    }

    fn healthy(&self) -> bool {
        self.quorum <= self.count && self.count <= self.quorum_max
    }

    /// When the change under way counts.
    fn due(&self) -> Option<Instant> {
        self.change
            .and_then(|(since, hold)| since.checked_add(hold))
    }

    fn counted(&mut self, now: Instant, count: u32, cause: CountCause) -> Option<bool> {
        self.count = count;
        let healthy = self.healthy();
        if self.change.is_some() {
            if healthy == self.reported {
                self.change = None;
            }
            return None;
        }
        if healthy == self.reported {
            return None;
        }
        let hold = match cause {
            CountCause::Fork => self.fork_delay,
            CountCause::Exit => self.terminate_delay,
            CountCause::Other => Duration::ZERO,
        };
        if hold == Duration::ZERO {
            self.reported = healthy;
            return Some(healthy);
        }
        self.change = Some((now, hold));
        None
    }

    fn tick(&mut self, now: Instant) -> Option<bool> {
        if self.due().is_none_or(|due| due > now) {
            return None;
        }
        self.change = None;
        let healthy = self.healthy();
        (healthy != self.reported).then(|| {
            self.reported = healthy;
            healthy
        })
    }
}

/// keepalived's `track_process.c` for one `vrrp_track_process`: `num_cur_proc`,
/// `have_quorum` and its two timers, changed only where the count crosses a bound
/// (`check_process_fork`, `check_process_termination`, `check_process` adding,
/// `remove_process_from_track`, the two timer threads). One thing is left out: keepalived
/// starts a timer over one of the same kind without cancelling it (the old one fires
/// too); here the new one replaces it, which only matters when both bounds are crossed.
#[derive(Debug)]
struct Keepalived {
    quorum: u64,
    quorum_max: u64,
    fork_delay: Duration,
    terminate_delay: Duration,
    num_cur_proc: u64,
    have_quorum: bool,
    fork_timer: Option<Instant>,
    terminate_timer: Option<Instant>,
}

impl Keepalived {
    fn new(s: &QuorumSetup, count: u32) -> Self {
        let num = u64::from(count);
        Self {
            quorum: s.quorum.into(),
            quorum_max: s.quorum_max.into(),
            fork_delay: s.fork_delay,
            terminate_delay: s.terminate_delay,
            num_cur_proc: num,
            // initialise_process_tracking_priorities
            have_quorum: u64::from(s.quorum) <= num && num <= u64::from(s.quorum_max),
            fork_timer: None,
            terminate_timer: None,
        }
    }

    /// update_process_status: reports only a change.
    fn update(&mut self, now_up: bool) -> Option<bool> {
        (now_up != self.have_quorum).then(|| {
            self.have_quorum = now_up;
            now_up
        })
    }

    /// check_process_fork, for a parent it counts.
    fn fork(&mut self, now: Instant) -> Option<bool> {
        self.num_cur_proc += 1;
        let n = self.num_cur_proc;
        if n == self.quorum || n == self.quorum_max + 1 {
            if self.terminate_timer.take().is_none() && !self.fork_delay.is_zero() {
                self.fork_timer = Some(now + self.fork_delay);
                return None;
            }
            return self.update(n == self.quorum);
        }
        None
    }

    /// check_process_termination, for a process it counts.
    fn exit(&mut self, now: Instant) -> Option<bool> {
        let was = self.num_cur_proc;
        self.num_cur_proc = self.num_cur_proc.saturating_sub(1);
        let n = self.num_cur_proc;
        if was == self.quorum || n == self.quorum_max {
            if self.fork_timer.take().is_none() && !self.terminate_delay.is_zero() {
                self.terminate_timer = Some(now + self.terminate_delay);
                return None;
            }
            return self.update(n == self.quorum_max);
        }
        None
    }

    /// check_process finding a new match (an exec or a name change): no delay.
    fn added(&mut self) -> Option<bool> {
        self.num_cur_proc += 1;
        let n = self.num_cur_proc;
        if n == self.quorum || n == self.quorum_max + 1 {
            self.terminate_timer = None;
            return self.update(n == self.quorum);
        }
        None
    }

    /// remove_process_from_track (an exec or a name change to something else): no delay.
    fn removed(&mut self) -> Option<bool> {
        let was = self.num_cur_proc;
        self.num_cur_proc = self.num_cur_proc.saturating_sub(1);
        let n = self.num_cur_proc;
        if was == self.quorum || n == self.quorum_max {
            self.fork_timer = None;
            return self.update(n == self.quorum_max);
        }
        None
    }

    /// process_gained_quorum_timer_thread / process_lost_quorum_timer_thread.
    fn expire(&mut self, now: Instant) -> Option<bool> {
        let mut out = None;
        for t in [&mut self.fork_timer, &mut self.terminate_timer] {
            if t.is_some_and(|at| at <= now) {
                *t = None;
                let up = self.quorum <= self.num_cur_proc && self.num_cur_proc <= self.quorum_max;
                if up != self.have_quorum {
                    self.have_quorum = up;
                    out = Some(up);
                }
            }
        }
        out
    }

    fn next(&self) -> Option<Instant> {
        self.fork_timer
            .into_iter()
            .chain(self.terminate_timer)
            .min()
    }
}

/// The processes of the table the quorum counts.
fn counted(procs: &[Proc]) -> u32 {
    procs.iter().filter(|p| p.counted).count() as u32
}

fn run_quorum(s: &QuorumSetup, ops: &[ProcOp]) -> Result<(), TestCaseError> {
    let mut t = TrackProcess::new("p", ProcessPattern::name("x"));
    t.quorum = s.quorum;
    t.quorum_max = s.quorum_max;
    t.fork_delay = s.fork_delay;
    t.terminate_delay = s.terminate_delay;
    // The first count: every matching process is counted.
    let mut procs: Vec<Proc> = s
        .running
        .iter()
        .map(|&matching| Proc {
            matching,
            counted: matching,
        })
        .collect();
    let t0 = t0();
    let mut now = t0;
    let mut q = ProcessQuorum::new(&t, counted(&procs));
    let mut doc = Documented::new(s, counted(&procs));
    let mut ka = Keepalived::new(s, counted(&procs));
    // keepalived is compared where only one bound can be crossed, and until the first
    // full count (keepalived's own, after lost events, cancels its timers and reports
    // gains at once; the driver's counts as a fork or an exit).
    let mut ka_compared = s.one_bound();
    // Processes gone without their exit being seen: still counted.
    let mut ghosts = 0u32;
    let since = |t: Option<Instant>| t.map(|t| t - t0);
    for (step, op) in ops.iter().enumerate() {
        let (got, want, want_ka) = match *op {
            ProcOp::Fork(i) if !procs.is_empty() && procs.len() + (ghosts as usize) < MAX_PROCS => {
                let parent = procs[i % procs.len()];
                // The child of a counted process is counted (with fork_delay); the child
                // of any other is not, until it execs or a count finds it.
                procs.push(parent);
                if parent.counted {
                    let n = counted(&procs) + ghosts;
                    (
                        q.update(now, n, CountCause::Fork),
                        doc.counted(now, n, CountCause::Fork),
                        ka.fork(now),
                    )
                } else {
                    (None, None, None)
                }
            }
            ProcOp::Spawn(matching) if procs.len() + (ghosts as usize) < MAX_PROCS => {
                procs.push(Proc {
                    matching,
                    counted: matching,
                });
                if matching {
                    let n = counted(&procs) + ghosts;
                    (
                        q.update(now, n, CountCause::Other),
                        doc.counted(now, n, CountCause::Other),
                        ka.added(),
                    )
                } else {
                    (None, None, None)
                }
            }
            ProcOp::Exec(i, matching) if !procs.is_empty() => {
                let k = i % procs.len();
                let was = procs[k].counted;
                procs[k] = Proc {
                    matching,
                    counted: matching,
                };
                if was == matching {
                    (None, None, None)
                } else {
                    let n = counted(&procs) + ghosts;
                    let ka_out = if matching { ka.added() } else { ka.removed() };
                    (
                        q.update(now, n, CountCause::Other),
                        doc.counted(now, n, CountCause::Other),
                        ka_out,
                    )
                }
            }
            ProcOp::Exit(i) if !procs.is_empty() => {
                let gone = procs.remove(i % procs.len());
                if gone.counted {
                    let n = counted(&procs) + ghosts;
                    (
                        q.update(now, n, CountCause::Exit),
                        doc.counted(now, n, CountCause::Exit),
                        ka.exit(now),
                    )
                } else {
                    (None, None, None)
                }
            }
            ProcOp::SilentSpawn(matching) if procs.len() + (ghosts as usize) < MAX_PROCS => {
                procs.push(Proc {
                    matching,
                    counted: false,
                });
                (None, None, None)
            }
            ProcOp::SilentExit(i) if !procs.is_empty() => {
                // Gone, but counted until a count finds it gone.
                if procs.remove(i % procs.len()).counted {
                    ghosts += 1;
                }
                (None, None, None)
            }
            ProcOp::Rescan => {
                // The driver's rescan: the count /proc gives, a fork if it grew or stayed,
                // an exit if it shrank.
                let before = counted(&procs) + ghosts;
                ghosts = 0;
                for p in &mut procs {
                    p.counted = p.matching;
                }
                let n = counted(&procs);
                let cause = if n >= before {
                    CountCause::Fork
                } else {
                    CountCause::Exit
                };
                ka_compared = false;
                (q.update(now, n, cause), doc.counted(now, n, cause), None)
            }
            ProcOp::Advance(ms) => {
                now += Duration::from_millis(ms.into());
                (q.handle_timeout(now), doc.tick(now), ka.expire(now))
            }
            ProcOp::ToDeadline => match q.poll_timeout() {
                Some(at) => {
                    now = now.max(at);
                    (q.handle_timeout(now), doc.tick(now), ka.expire(now))
                }
                None => (None, None, None),
            },
            ProcOp::JustBefore => match q.poll_timeout() {
                Some(at) if at - Duration::from_micros(1) >= now => {
                    now = at - Duration::from_micros(1);
                    (q.handle_timeout(now), doc.tick(now), ka.expire(now))
                }
                _ => (None, None, None),
            },
            // Nothing to fork, exec or end, or no room for another process.
            _ => (None, None, None),
        };
        let at = format!("step {step} ({op:?}) at {:?}", now - t0);
        prop_assert_eq!(got, want, "change reported after {}", &at);
        prop_assert_eq!(q.is_up(), doc.reported, "health after {}", &at);
        prop_assert_eq!(q.count(), counted(&procs) + ghosts, "count after {}", &at);
        prop_assert_eq!(
            since(q.poll_timeout()),
            since(doc.due()),
            "deadline after {}",
            &at
        );
        if ka_compared {
            prop_assert_eq!(got, want_ka, "change (keepalived) after {}", &at);
            prop_assert_eq!(
                q.is_up(),
                ka.have_quorum,
                "health (keepalived) after {}",
                &at
            );
            prop_assert_eq!(
                since(q.poll_timeout()),
                since(ka.next()),
                "deadline (keepalived) after {}",
                &at
            );
        }
    }
    Ok(())
}

// ----- Process patterns -----

/// Programs: names up to the kernel's 15 bytes and past them, paths.
const PROGRAMS: &[&str] = &[
    "sleep",
    "/bin/sleep",
    "nginx",
    "/usr/sbin/nginx",
    "exactly15chars_",
    "sixteen_chars_ab",
    "/opt/a-very-long-daemon",
];

/// What a configuration may name: the programs, their last path element, and that
/// element cut to 15 bytes as the kernel cuts a process name.
fn pattern_names() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in PROGRAMS {
        let base = p.rsplit('/').next().unwrap_or(p);
        for n in [*p, base, &base[..base.len().min(15)]] {
            if !out.iter().any(|o| o == n) {
                out.push(n.to_owned());
            }
        }
    }
    out
}

/// Parameters: empty, prefixes of one another, with spaces.
const WORDS: &[&str] = &[
    "",
    "-g",
    "daemon off;",
    "10",
    "100",
    "1000",
    "ext",
    "extra",
    "-f",
];

/// A process: its name (`/proc/PID/comm`) and raw command line.
#[derive(Debug, Clone)]
struct Process {
    comm: Vec<u8>,
    cmdline: Vec<u8>,
}

/// The kernel's process name for `program` (its last path element, cut to 15 bytes).
fn comm_of(program: &str) -> Vec<u8> {
    let base = program.rsplit('/').next().unwrap_or(program).as_bytes();
    base[..base.len().min(15)].to_vec()
}

/// A command line as `/proc/PID/cmdline` gives it: every word ends with a NUL.
fn cmdline_of(argv: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for w in argv {
        out.extend_from_slice(w.as_bytes());
        out.push(0);
    }
    out
}

fn pattern() -> impl Strategy<Value = ProcessPattern> {
    let names = pattern_names();
    (
        proptest::sample::select(names),
        any::<bool>(),
        proptest::collection::vec(proptest::sample::select(WORDS), 0..3),
        proptest::option::of(proptest::sample::select(vec![
            ParamMatch::Exact,
            ParamMatch::Partial,
            ParamMatch::Initial,
        ])),
    )
        .prop_map(
            |(process, full_command, params, param_match)| ProcessPattern {
                process,
                full_command,
                params: params.iter().map(|w| (*w).to_owned()).collect(),
                param_match,
            },
        )
}

/// A process: any program run with any words, one made from `p` (its command and
/// parameters, with the last parameter or the word count changed or not), a kernel
/// thread or zombie (no command line), or one whose name was changed (`prctl`).
fn process(p: &ProcessPattern) -> impl Strategy<Value = Process> {
    let any_args = proptest::collection::vec(proptest::sample::select(WORDS), 0..4);
    let free = (
        proptest::sample::select(PROGRAMS),
        any::<bool>(),
        any_args.clone(),
    )
        .prop_map(|(program, base_argv0, args)| {
            let argv0 = if base_argv0 {
                program.rsplit('/').next().unwrap_or(program)
            } else {
                program
            };
            let argv: Vec<String> = std::iter::once(argv0)
                .chain(args)
                .map(str::to_owned)
                .collect();
            Process {
                comm: comm_of(program),
                cmdline: cmdline_of(&argv),
            }
        });
    let from_pattern = {
        let p = p.clone();
        (
            0u8..5,
            proptest::sample::select(WORDS),
            proptest::sample::select(PROGRAMS),
        )
            .prop_map(move |(how, word, program)| {
                let mut args = p.params.clone();
                match how {
                    // One word more.
                    1 => args.push(word.to_owned()),
                    // One word fewer.
                    2 => {
                        args.pop();
                    }
                    // The last word longer (a prefix match for `initial`).
                    3 => match args.last_mut() {
                        Some(last) => last.push_str(word),
                        None => args.push(word.to_owned()),
                    },
                    // The last word cut.
                    4 => {
                        if let Some(last) = args.last_mut() {
                            last.truncate(last.len() / 2);
                        }
                    }
                    _ => {}
                }
                let argv: Vec<String> = std::iter::once(p.process.clone()).chain(args).collect();
                let comm = if p.full_command || program.len() % 2 == 0 {
                    comm_of(program)
                } else {
                    comm_of(&p.process)
                };
                Process {
                    comm,
                    cmdline: cmdline_of(&argv),
                }
            })
    };
    let no_cmdline = proptest::sample::select(PROGRAMS).prop_map(|program| Process {
        comm: comm_of(program),
        cmdline: Vec::new(),
    });
    let renamed = (
        proptest::sample::select(PROGRAMS),
        proptest::sample::select(PROGRAMS),
    )
        .prop_map(|(program, name)| Process {
            comm: comm_of(name),
            cmdline: cmdline_of(&[program.to_owned()]),
        });
    prop_oneof![3 => free, 4 => from_pattern, 1 => no_cmdline, 1 => renamed]
}

/// keepalived's `check_params`: the parameters compared as one block of NUL-terminated
/// words (`want`, `None` without parameters) with the rest of the command line after
/// `argv[0]` and its NUL (`have`).
fn check_params(how: ParamMatch, want: Option<&[u8]>, have: &[u8]) -> bool {
    let want_len = want.map_or(0, <[u8]>::len);
    if how == ParamMatch::Exact && want.is_none() && have.is_empty() {
        return true;
    }
    if have.len() < want_len {
        return false;
    }
    let Some(want) = want else {
        // Exact: only an empty `have` (above); partial, initial: anything.
        return how != ParamMatch::Exact;
    };
    match how {
        ParamMatch::Exact => have == want,
        ParamMatch::Partial => &have[..want_len] == want,
        ParamMatch::Initial => want_len == 1 || have[..want_len - 1] == want[..want_len - 1],
    }
}

/// The bytes of a C string: up to the first NUL.
fn c_str(b: &[u8]) -> &[u8] {
    b.split(|&c| c == 0).next().unwrap_or_default()
}

/// keepalived's `check_process` for one `vrrp_track_process`, with its configuration as
/// its parser leaves it: `param_match` sets `full_command` (`vrrp_tprocess_match_handler`;
/// parameters set `param_match`, which lb-node does for them); the name is compared with
/// `strcmp`, with the process name, or with the command line's first word.
fn keepalived_matches(p: &ProcessPattern, comm: &[u8], cmdline: &[u8]) -> bool {
    let full_command = p.full_command || p.param_match.is_some();
    let name = if full_command {
        c_str(cmdline)
    } else {
        c_str(comm)
    };
    if name != p.process.as_bytes() {
        return false;
    }
    let Some(how) = p.param_match else {
        return true;
    };
    let block: Option<Vec<u8>> = (!p.params.is_empty()).then(|| cmdline_of(&p.params));
    let start = (name.len() + 1).min(cmdline.len());
    check_params(how, block.as_deref(), &cmdline[start..])
}

/// The bytes of `/proc/PID/cmdline` the driver reads for `p` alone: the command, the
/// parameters, their NULs and one byte more.
fn cmdline_read(p: &ProcessPattern) -> usize {
    p.process.len() + p.params.iter().map(|w| w.len() + 1).sum::<usize>() + 2
}

// ----- File values and their effect on an instance -----

/// C's `isspace` in the "C" locale (keepalived does not set a locale).
fn c_isspace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `strtol(s, NULL, 0)` as C11 §7.22.1.4 describes it, on a 64-bit `long`: the value,
/// and whether it overflowed (`ERANGE`, the value then `LONG_MAX` or `LONG_MIN`).
fn strtol(s: &[u8]) -> (i64, bool) {
    let s = c_str(s);
    let mut i = s.iter().take_while(|&&b| c_isspace(b)).count();
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let hex = s.get(i) == Some(&b'0')
        && matches!(s.get(i + 1), Some(b'x' | b'X'))
        && s.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
    let base: u32 = if hex {
        i += 2;
        16
    } else if s.get(i) == Some(&b'0') {
        8
    } else {
        10
    };
    let mut v: i128 = 0;
    for &b in &s[i..] {
        let Some(d) = char::from(b).to_digit(base) else {
            break;
        };
        v = (v * i128::from(base) + i128::from(d)).min(i128::from(u64::MAX) * 2);
    }
    let v = if neg { -v } else { v };
    match i64::try_from(v) {
        Ok(v) => (v, false),
        Err(_) => (if neg { i64::MIN } else { i64::MAX }, true),
    }
}

/// keepalived 2.2.7's `process_track_file`: the value a file holding `content` leaves,
/// `last` the value before. At most 127 bytes are read; nothing read is 0; a number that
/// overflowed or lies outside -2^31..=2^31 is ignored (logged), the value stays.
fn keepalived_file_value(content: &[u8], last: i64) -> i64 {
    let buf = &content[..content.len().min(127)];
    if buf.is_empty() {
        return 0;
    }
    let (v, erange) = strtol(buf);
    if erange || !(-(1i64 << 31)..=1i64 << 31).contains(&v) {
        last
    } else {
        v
    }
}

/// A `track_file` as one instance tracks it.
#[derive(Debug, Clone)]
struct FileSetup {
    weight: i32,
    reverse: bool,
    /// The file's content at the start; `None`: it does not exist.
    initial: Option<Vec<u8>>,
}

/// A `vrrp_track_process` as one instance tracks it: only its quorum matters here.
#[derive(Debug, Clone)]
struct ProcSetup {
    weight: i16,
    reverse: bool,
    up: bool,
}

#[derive(Debug, Clone)]
struct InstanceSetup {
    /// 255: the address owner (its tracks then weight 0, as keepalived requires).
    priority: u8,
    files: Vec<FileSetup>,
    procs: Vec<ProcSetup>,
}

/// keepalived's status for a file value (`update_track_file_status` then
/// `process_update_vrrp_track_file_status`): weight 0 is `INT_MIN` (Fault) for a value
/// other than 0 (reversed: for 0), else value × weight × (-1 with reverse) in 64 bits;
/// then limited to -254..=253, -254 being Fault.
fn keepalived_status(value: i64, weight: i32, reverse: bool) -> i64 {
    let multiplier = if reverse { -1 } else { 1 };
    let status = if weight == 0 {
        if (value != 0) == (multiplier == 1) {
            i64::from(i32::MIN)
        } else {
            0
        }
    } else {
        value * i64::from(weight) * multiplier
    };
    status.clamp(-254, 253)
}

/// One keepalived VRRP instance's tracking: `total_priority` and `num_script_if_fault`,
/// moved as `initialise_*_tracking_priorities`, `process_update_vrrp_track_file_status`
/// and `process_update_track_process_status` move them (by differences, as keepalived
/// does), and `vrrp_set_effective_priority`.
#[derive(Debug)]
struct Instance {
    base: i64,
    total: i64,
    faults: i64,
    files: Vec<(i32, bool)>,
    /// Each file's value (`tfile->last_status`).
    values: Vec<i64>,
    procs: Vec<(i16, bool)>,
    have_quorum: Vec<bool>,
}

impl Instance {
    fn new(s: &InstanceSetup) -> Self {
        let base = i64::from(s.priority);
        let mut m = Self {
            base,
            total: base,
            faults: 0,
            files: s.files.iter().map(|f| (f.weight, f.reverse)).collect(),
            values: Vec::new(),
            procs: s.procs.iter().map(|p| (p.weight, p.reverse)).collect(),
            have_quorum: s.procs.iter().map(|p| p.up).collect(),
        };
        // init_track_files: an existing file is read, a missing one is 0.
        for f in &s.files {
            let v = f
                .initial
                .as_deref()
                .map_or(0, |c| keepalived_file_value(c, 0));
            m.values.push(v);
            let status = keepalived_status(v, f.weight, f.reverse);
            if status <= -254 {
                m.faults += 1;
            } else {
                m.total += status;
            }
        }
        for p in &s.procs {
            let (w, mult) = (i64::from(p.weight), if p.reverse { -1 } else { 1 });
            if w == 0 {
                if p.up != (mult == 1) {
                    m.faults += 1;
                }
            } else if p.up == (w > 0) {
                m.total += w * mult;
            }
        }
        m
    }

    /// inotify says file `k` was written, renamed in (`Some(content)`) or deleted (`None`).
    fn file(&mut self, k: usize, content: Option<&[u8]>) {
        let last = self.values[k];
        let value = content.map_or(0, |c| keepalived_file_value(c, last));
        if value == last {
            return;
        }
        self.values[k] = value;
        let (weight, reverse) = self.files[k];
        let previous = keepalived_status(last, weight, reverse);
        let status = keepalived_status(value, weight, reverse);
        if previous == status {
            return;
        }
        if status == -254 {
            if weight != 0 {
                self.total -= previous;
            }
            self.faults += 1; // down_instance
        } else if previous == -254 {
            if weight != 0 {
                self.total += status;
            }
            self.faults -= 1; // try_up_instance
        } else {
            self.total += status - previous;
        }
    }

    /// Process `k`'s quorum changed to `up`.
    fn quorum(&mut self, k: usize, up: bool) {
        if self.have_quorum[k] == up {
            return;
        }
        self.have_quorum[k] = up;
        let (w, reverse) = self.procs[k];
        let (w, mult) = (i64::from(w), if reverse { -1 } else { 1 });
        if w == 0 {
            if up == (mult == 1) {
                self.faults -= 1;
            } else {
                self.faults += 1;
            }
        } else if self.base != 255 {
            if (w > 0) == up {
                self.total += w * mult;
            } else {
                self.total -= w * mult;
            }
        }
    }

    fn effective_priority(&self) -> i64 {
        if self.base == 255 {
            255
        } else {
            self.total.clamp(1, 254)
        }
    }
}

/// File contents: numbers of every size and base, with white space (C's and other), signs,
/// trailing text, NULs, long padding; text with no number; any bytes.
fn content() -> impl Strategy<Value = Vec<u8>> {
    let space = proptest::sample::select(vec![
        "", "", " ", "  ", "\t", "\n", "\x0b", "\x0c", "\r", "\u{a0}", "\u{2003}", "\u{85}",
        "\u{3000}",
    ]);
    let sign = proptest::sample::select(vec!["", "", "-", "+", "+-", "- "]);
    let number = prop_oneof![
        (-300i64..=300).prop_map(|v| v.unsigned_abs().to_string()),
        proptest::sample::select(vec![
            "0",
            "00",
            "08",
            "010",
            "0x10",
            "0XfF",
            "0x",
            "0xg",
            "253",
            "254",
            "255",
            "2147483647",
            "2147483648",
            "2147483649",
            "4294967296",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999999",
            "0x7fffffff",
            "0x80000000",
            "0x80000001",
        ])
        .prop_map(str::to_owned),
        any::<u64>().prop_map(|v| v.to_string()),
    ];
    let tail = proptest::sample::select(vec!["", "\n", " trailing", "x", "\0", "\x007", "1"]);
    let shaped = (space, sign, number, tail, any::<bool>()).prop_map(|(sp, sg, n, t, pad)| {
        // Padding pushes the number past the 127 bytes read.
        let pad = if pad && n.len() % 3 == 0 {
            " ".repeat(126)
        } else {
            String::new()
        };
        format!("{pad}{sp}{sg}{n}{t}").into_bytes()
    });
    let words = proptest::sample::select(vec!["", "up\n", "down", "\0", "-", "0x", " \n"])
        .prop_map(|w| w.as_bytes().to_vec());
    let bytes = proptest::collection::vec(any::<u8>(), 0..12);
    prop_oneof![6 => shaped, 1 => words, 1 => bytes]
}

fn instance_setup() -> impl Strategy<Value = InstanceSetup> {
    let weight = prop_oneof![
        2 => Just(0),
        1 => Just(1),
        4 => -254i32..=254,
        1 => proptest::sample::select(vec![i32::MIN, -65535, 65535, i32::MAX]),
    ];
    let file = (weight, any::<bool>(), proptest::option::of(content())).prop_map(
        |(weight, reverse, initial)| FileSetup {
            weight,
            reverse,
            initial,
        },
    );
    let proc_weight = prop_oneof![1 => Just(0i16), 3 => -254i16..=254];
    let procs =
        (proc_weight, any::<bool>(), any::<bool>()).prop_map(|(weight, reverse, up)| ProcSetup {
            weight,
            reverse,
            up,
        });
    (
        prop_oneof![5 => 1u8..=254, 1 => Just(255u8)],
        proptest::collection::vec(file, 1..=3),
        proptest::collection::vec(procs, 0..=2),
    )
        .prop_map(|(priority, mut files, mut procs)| {
            if priority == 255 {
                files.iter_mut().for_each(|f| f.weight = 0);
                procs.iter_mut().for_each(|p| p.weight = 0);
            }
            InstanceSetup {
                priority,
                files,
                procs,
            }
        })
}

#[derive(Debug, Clone)]
enum FileOp {
    /// File `k` (modulo the number) is written or renamed into place.
    Write(usize, Vec<u8>),
    /// File `k` is deleted (or renamed away).
    Delete(usize),
    /// Process track `k` (modulo the number) gains or loses its quorum.
    Quorum(usize, bool),
}

fn file_ops() -> impl Strategy<Value = Vec<FileOp>> {
    let op = prop_oneof![
        6 => (0usize..3, content()).prop_map(|(k, c)| FileOp::Write(k, c)),
        1 => (0usize..3).prop_map(FileOp::Delete),
        2 => (0usize..2, any::<bool>()).prop_map(|(k, up)| FileOp::Quorum(k, up)),
    ];
    proptest::collection::vec(op, 0..30)
}

/// What the driver takes from a file holding `content` (`read_value`): the value to
/// use, or `None` to keep the one it had.
fn driver_value(content: &[u8]) -> Option<i64> {
    match parse_file_value(content) {
        Ok(v) => v,
        Err(_) => Some(0),
    }
}

fn run_instance(s: &InstanceSetup, ops: &[FileOp]) -> Result<(), TestCaseError> {
    let files: Vec<TrackFile> = s
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let mut t = TrackFile::new(&format!("f{i}"), format!("/run/lb/f{i}"));
            t.weight = f.weight;
            t.reverse = f.reverse;
            t
        })
        .collect();
    let procs: Vec<TrackProcess> = s
        .procs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut t = TrackProcess::new(&format!("p{i}"), ProcessPattern::name("x"));
            t.weight = TrackWeight(p.weight);
            t.reverse = p.reverse;
            t
        })
        .collect();
    // As the driver builds the instance: processes, then files; a file's Fault is a
    // weight-0 track failing, its value an offset; both known from the start.
    let mut status: Vec<i32> = s
        .files
        .iter()
        .zip(&files)
        .map(|(f, t)| {
            let value = f.initial.as_deref().and_then(driver_value).unwrap_or(0);
            t.status(value)
        })
        .collect();
    let mut up: Vec<bool> = s.procs.iter().map(|p| p.up).collect();
    let mut c = Config::new(
        Vrid::new(51).unwrap(),
        IpAddr::V4(Ipv4Addr::new(198, 18, 0, 100)),
        vec![IpAddr::V4(Ipv4Addr::new(198, 18, 0, 200))],
    );
    c.priority = Priority(s.priority);
    c.tracks = procs
        .iter()
        .map(|p| p.as_track(true).0)
        .chain(files.iter().map(|_| TrackWeight(0)))
        .collect();
    c.track_start = procs
        .iter()
        .zip(&up)
        .map(|(p, &up)| Some(p.as_track(up).1))
        .chain(status.iter().map(|&v| Some(v > TRACK_VALUE_FAULT)))
        .collect();
    c.track_offset_start = procs
        .iter()
        .map(|_| 0)
        .chain(
            status
                .iter()
                .map(|&v| if v > TRACK_VALUE_FAULT { v } else { 0 }),
        )
        .collect();
    let now = t0();
    let mut vr = VirtualRouter::new(c);
    vr.start(now);
    let mut model = Instance::new(s);
    let file_id = |k: usize| TrackId(procs.len() + k);
    for (step, op) in std::iter::once(None)
        .chain(ops.iter().map(Some))
        .enumerate()
    {
        match op {
            None => {}
            Some(FileOp::Write(k, content)) => {
                let k = k % files.len();
                model.file(k, Some(content));
                if let Some(value) = driver_value(content) {
                    let st = files[k].status(value);
                    if st != status[k] {
                        status[k] = st;
                        vr.handle_track_value(now, file_id(k), st);
                    }
                }
            }
            Some(FileOp::Delete(k)) => {
                let k = k % files.len();
                model.file(k, None);
                let st = files[k].status(0);
                if st != status[k] {
                    status[k] = st;
                    vr.handle_track_value(now, file_id(k), st);
                }
            }
            Some(FileOp::Quorum(k, now_up)) => {
                if procs.is_empty() {
                    continue;
                }
                let k = k % procs.len();
                model.quorum(k, *now_up);
                if up[k] != *now_up {
                    up[k] = *now_up;
                    vr.handle_track(now, TrackId(k), procs[k].as_track(*now_up).1);
                }
            }
        }
        let at = format!("step {step} ({op:?})");
        prop_assert_eq!(
            i64::from(vr.effective_priority().get()),
            model.effective_priority(),
            "effective priority after {}",
            &at
        );
        prop_assert_eq!(vr.has_own_fault(), model.faults > 0, "fault after {}", &at);
        prop_assert_eq!(
            vr.state() == State::Fault,
            model.faults > 0,
            "state {:?} after {}",
            vr.state(),
            &at
        );
        for (k, f) in files.iter().enumerate() {
            let (weight, reverse) = model.files[k];
            prop_assert_eq!(
                i64::from(f.status(model.values[k].clamp(-254, 254))),
                keepalived_status(model.values[k], weight, reverse),
                "file {} status after {}",
                k,
                &at
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// [`ProcessQuorum`] against [`Documented`] after every step: the change reported (if
    /// any), the health, the count and the deadline. Covered: `quorum` 0..=3 with no
    /// `quorum_max` or one 0..=3 above it (`quorum_max` 0 included: healthy while none
    /// runs); no delays (keepalived's defaults) or either delay or both up to 1.5 s, each
    /// set on its own (keepalived's `delay` sets both, `fork_delay` and `terminate_delay`
    /// one each: `vrrp_tprocess_delay_general`); forks of counted processes (`fork_delay`),
    /// processes started by others and seen at their exec, execs into and out of the
    /// pattern (no delay), exits of counted processes (`terminate_delay`), starts and exits
    /// not seen and the full count that finds them (the driver's: a fork if the count grew
    /// or stayed, an exit if it shrank); time by random amounts, to the deadline exactly,
    /// and a microsecond before it.
    ///
    /// And against [`Keepalived`] (`track_process.c`) where only one bound can be crossed
    /// (`quorum` 0, or a `quorum_max` no count reaches) and until the first full count:
    /// there the change back within the delay that cancels the change is keepalived's
    /// cancelling of the other kind's timer, and the two agree on every report and
    /// deadline. Where both bounds are crossed within a delay, and at a full count, they
    /// differ as [`ProcessQuorum`]'s docs say.
    #[test]
    fn quorum_follows_its_docs_and_keepalived(
        s in quorum_setup(),
        ops in proc_ops(),
    ) {
        run_quorum(&s, &ops)?;
    }

    /// [`ProcessPattern::matches`] decides as keepalived's `check_process` and
    /// `check_params` (`track_process.c`): the process name (`/proc/PID/comm`, which the
    /// kernel cuts to 15 bytes, so that a longer name never matches it) or with
    /// `full_command` or `param_match` the command line's first word, compared exactly;
    /// with `param_match`, the parameters as one NUL-separated block: exact (nothing more,
    /// and with no parameters none at all), partial (the first ones), initial (the last
    /// one a prefix); empty parameters included. On a command line cut where the driver
    /// cuts its read for the pattern (one byte past the pattern's words), the answer is
    /// the whole line's.
    #[test]
    fn patterns_match_as_keepalived(
        (p, proc_) in pattern().prop_flat_map(|p| {
            let procs = process(&p);
            (Just(p), procs)
        })
    ) {
        let want = keepalived_matches(&p, &proc_.comm, &proc_.cmdline);
        prop_assert_eq!(p.matches(&proc_.comm, &proc_.cmdline), want, "whole command line");
        let read = &proc_.cmdline[..proc_.cmdline.len().min(cmdline_read(&p))];
        prop_assert_eq!(p.matches(&proc_.comm, read), want, "command line as read: {:?}", read);
    }

    /// File contents written, deleted and left alone, and quorums gained and lost, move a
    /// [`VirtualRouter`] as they move a keepalived instance ([`Instance`]): its effective
    /// priority (base plus value × weight, negated with `reverse`, limited to -254..=253,
    /// then to 1..=254; the owner's stays 255), its Fault (a file at -254 or less, a
    /// weight-0 file with a value other than 0, or with `reverse` 0, a weight-0 process
    /// without quorum, or with `reverse` with it) after every step. File contents are read
    /// as keepalived's `strtol(buf, NULL, 0)` reads the first 127 bytes (C's white space
    /// only, signs, decimal, `0x` hexadecimal, `0` octal, text after the number ignored,
    /// no number 0); a number outside -2^31..=2^31 is ignored and the value stays; a
    /// deleted file is 0. keepalived's bookkeeping works by differences and counts
    /// faults, the machine's recomputes from each track's state: the two must agree.
    #[test]
    fn file_values_move_the_instance_as_keepalived(
        s in instance_setup(),
        ops in file_ops(),
    ) {
        run_instance(&s, &ops)?;
    }
}

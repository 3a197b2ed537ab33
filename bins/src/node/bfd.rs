//! keepalived's `bfd_instance`s: one lb-health [`BfdSpeaker`] runs every session of the
//! node, and what each session is (Up or not, and why) goes to the VRRP instances that
//! `track_bfd` it and to the real servers that `BFD_CHECK` it.
//!
//! Each session has a channel of its own ([`BfdStates`]) that outlives the speaker's: a
//! reload hands the new `bfd_instance`s to the running speaker
//! ([`BfdHandle::reconfigure`]), which, as keepalived, keeps every session whose neighbour
//! and addresses are unchanged with its state (changed timers take effect through a Poll
//! Sequence), sends AdminDown only for the sessions removed, and starts the new ones; the
//! VRRP instances and virtual servers that the reload keeps go on following the same
//! channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lb_core::BackendId;
use lb_health::bfd::{BfdHandle, BfdSpeaker, Counters, Diagnostic, SessionState, SessionStatus};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::NodeError;
use crate::config::model::BfdInstance;

/// Each `bfd_instance`'s session, by name, as it is now.
pub(crate) type BfdStates = HashMap<String, watch::Receiver<SessionStatus>>;

/// How long a stopping speaker may take to send its AdminDown packets (lb-health sends
/// them for at most 2 s).
const STOP_WAIT: Duration = Duration::from_secs(3);

/// A running speaker.
#[derive(Debug)]
struct Running {
    handle: BfdHandle,
    task: JoinHandle<()>,
    /// Per session: the task copying the speaker's channel into the kept one.
    forwards: HashMap<String, JoinHandle<()>>,
    /// The speaker's own channels, whose values also carry the packet counters as they
    /// are now (they wake receivers only on a change of state).
    live: BfdStates,
}

impl Running {
    /// Session `name`'s speaker channel `rx`: shown by `lbctl status`, and copied into
    /// the kept channel `tx` that its followers read.
    fn follow(
        &mut self,
        name: &str,
        rx: watch::Receiver<SessionStatus>,
        tx: &Arc<watch::Sender<SessionStatus>>,
    ) {
        self.live.insert(name.to_owned(), rx.clone());
        self.forwards
            .insert(name.to_owned(), forward(rx, Arc::clone(tx)));
    }
}

/// The BFD speaker and the channels its sessions publish on.
#[derive(Debug, Default)]
pub(crate) struct BfdRuntime {
    /// The sessions it runs.
    instances: Vec<BfdInstance>,
    running: Option<Running>,
    /// One channel per session name, kept across reloads (and there even when the speaker
    /// could not start: its followers then see the session Down).
    channels: HashMap<String, Arc<watch::Sender<SessionStatus>>>,
}

/// A session that has not started: Down, never Up.
pub(crate) fn fresh() -> SessionStatus {
    SessionStatus {
        state: SessionState::Down,
        local_diag: Diagnostic::NoDiagnostic,
        remote_state: SessionState::Down,
        remote_diag: None,
        local_discriminator: 0,
        remote_discriminator: 0,
        since: tokio::time::Instant::now().into_std(),
        neighbour_admin_down: false,
        detection_time: None,
        tx_interval: Duration::ZERO,
        counters: Counters::default(),
    }
}

/// The settings the speaker runs a session with (a `bfd_instance`'s weight, `reverse`,
/// `vrrp` and `checker` are the followers' business, not the session's).
fn configs(instances: &[BfdInstance]) -> Vec<(String, lb_health::bfd::BfdConfig)> {
    instances
        .iter()
        .map(|b| (b.name.clone(), b.bfd_config()))
        .collect()
}

/// Copies the speaker's channel `rx` into the kept channel `tx` on every change.
fn forward(
    mut rx: watch::Receiver<SessionStatus>,
    tx: Arc<watch::Sender<SessionStatus>>,
) -> JoinHandle<()> {
    tx.send_replace(*rx.borrow_and_update());
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let st = *rx.borrow_and_update();
            tx.send_replace(st);
        }
    })
}

impl BfdRuntime {
    /// Starts a speaker for `instances` (none for an empty list).
    ///
    /// # Errors
    /// A session that cannot start (its address cannot be bound, say), naming it.
    pub(crate) fn start(instances: &[BfdInstance]) -> Result<Self, NodeError> {
        let mut r = Self::default();
        r.keep_channels(instances);
        r.run(instances)?;
        Ok(r)
    }

    /// The sessions' channels.
    pub(crate) fn states(&self) -> BfdStates {
        self.channels
            .iter()
            .map(|(n, tx)| (n.clone(), tx.subscribe()))
            .collect()
    }

    /// Each session as `lbctl status` shows it: the running speaker's channel (counters
    /// up to date), else the kept one.
    pub(crate) fn status_sources(&self) -> BfdStates {
        let mut out = self.states();
        if let Some(r) = &self.running {
            out.extend(r.live.iter().map(|(n, rx)| (n.clone(), rx.clone())));
        }
        out
    }

    /// A channel for every instance (a new one starts Down, never Up), and none for names
    /// that are gone (validation made sure nothing follows them).
    fn keep_channels(&mut self, instances: &[BfdInstance]) {
        self.channels
            .retain(|name, _| instances.iter().any(|b| &b.name == name));
        for b in instances {
            self.channels
                .entry(b.name.clone())
                .or_insert_with(|| Arc::new(watch::channel(fresh()).0));
        }
    }

    /// A reload: the running speaker takes the new sessions in place
    /// ([`BfdHandle::reconfigure`]); nothing happens when only followers' settings
    /// (weights) changed. Without a running speaker (none was configured, or it could not
    /// start), one is started.
    ///
    /// # Errors
    /// The new sessions were refused (an address that cannot be bound, say): the running
    /// ones go on as they were; their new channels, if any, show them Down.
    pub(crate) async fn reload(&mut self, instances: &[BfdInstance]) -> Result<(), NodeError> {
        self.keep_channels(instances);
        // A speaker whose task ended (an error it logged) is started anew.
        if self.running.as_ref().is_some_and(|r| r.task.is_finished()) {
            self.running = None;
        }
        if configs(&self.instances) == configs(instances) && self.running.is_some() {
            self.instances = instances.to_vec();
            return Ok(());
        }
        let Some(r) = &mut self.running else {
            return self.run(instances).inspect_err(|_| self.fail_new(&[]));
        };
        if instances.is_empty() {
            self.stop().await;
            self.instances.clear();
            return Ok(());
        }
        // The followers of removed sessions keep their last state: their forwarders end
        // before those sessions' AdminDown (a tracking VRRP instance that is being
        // reconfigured must not go to FAULT, nor a retiring real server run notify_down).
        let gone: Vec<String> = r
            .forwards
            .keys()
            .filter(|name| !instances.iter().any(|b| &b.name == *name))
            .cloned()
            .collect();
        for name in gone {
            if let Some(f) = r.forwards.remove(&name) {
                f.abort();
                let _ = f.await;
            }
            r.live.remove(&name);
        }
        // A speaker spawned a moment ago may not take requests yet: a few tries, 20 ms
        // apart.
        let mut tries = 0;
        loop {
            match r.handle.reconfigure(configs(instances)).await {
                Ok(()) => break,
                Err(lb_health::Error::BfdSpeakerNotRunning)
                    if tries < 10 && !r.task.is_finished() =>
                {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => {
                    let old = self.instances.clone();
                    // The speaker still runs the previous sessions: those whose forwarders
                    // ended above are followed again, so that a later reload back to them
                    // (which changes nothing in the speaker) finds them followed.
                    for b in &old {
                        if r.forwards.contains_key(&b.name) {
                            continue;
                        }
                        let tx = self
                            .channels
                            .entry(b.name.clone())
                            .or_insert_with(|| Arc::new(watch::channel(fresh()).0));
                        if let Some(rx) = r.handle.subscribe(&b.name) {
                            r.follow(&b.name, rx, tx);
                        }
                    }
                    self.fail_new(&old);
                    return Err(NodeError::Start(format!("BFD: {e}")));
                }
            }
        }
        tracing::info!(
            sessions = instances.len(),
            "bfd_instances changed: applied to the running sessions"
        );
        // Forwarders for the sessions that are new (those of removed ones ended above).
        for b in instances {
            if r.forwards.contains_key(&b.name) {
                continue;
            }
            if let (Some(rx), Some(tx)) = (r.handle.subscribe(&b.name), self.channels.get(&b.name))
            {
                r.follow(&b.name, rx, tx);
            }
        }
        self.instances = instances.to_vec();
        Ok(())
    }

    /// After a reload's sessions were refused: the sessions not among `running` (the
    /// ones the speaker still runs) show as failed on their channels, so that what
    /// follows them takes them for down, not for still coming up.
    fn fail_new(&self, running: &[BfdInstance]) {
        for (name, tx) in &self.channels {
            if !running.iter().any(|b| &b.name == name) {
                tx.send_replace(SessionStatus {
                    local_diag: Diagnostic::AdministrativelyDown,
                    ..fresh()
                });
            }
        }
    }

    /// Stops the speaker at SIGTERM: every session goes AdminDown and tells its neighbour
    /// (RFC 5880 §6.8.16), within [`STOP_WAIT`]. The followers are detached first and keep
    /// the state they had: real servers are not failed (nor their notify_down run) by the
    /// node's own exit while their virtual servers still accept.
    pub(crate) async fn stop(&mut self) {
        let Some(mut r) = self.running.take() else {
            return;
        };
        for (_, f) in r.forwards.drain() {
            f.abort();
            let _ = f.await;
        }
        r.handle.shutdown();
        if tokio::time::timeout(STOP_WAIT, &mut r.task).await.is_err() {
            tracing::warn!("BFD speaker did not stop within {STOP_WAIT:?}; aborted");
            r.task.abort();
            // Dropped (its sockets closed) before anything binds port 3784 again.
            let _ = r.task.await;
        }
    }

    /// Whether the sessions run as `instances` configure them (none when there are
    /// none): false after sessions that could not start or a speaker that stopped, so that
    /// a SIGHUP with the file unchanged tries them again.
    pub(crate) fn is_current(&self, instances: &[BfdInstance]) -> bool {
        if instances.is_empty() {
            return self.running.is_none();
        }
        self.running.as_ref().is_some_and(|r| !r.task.is_finished())
            && configs(&self.instances) == configs(instances)
    }

    fn run(&mut self, instances: &[BfdInstance]) -> Result<(), NodeError> {
        if instances.is_empty() {
            self.instances.clear();
            return Ok(());
        }
        let speaker = BfdSpeaker::new(configs(instances))
            .map_err(|e| NodeError::Start(format!("BFD: {e}")))?;
        self.instances = instances.to_vec();
        let handle = speaker.handle();
        let subscribed: Vec<_> = instances
            .iter()
            .filter_map(|b| Some((b.name.as_str(), speaker.subscribe(&b.name)?)))
            .collect();
        let task = tokio::spawn(async move {
            if let Err(e) = speaker.run().await {
                tracing::error!(error = %e, "BFD speaker stopped: tracked sessions keep their last state");
            }
        });
        let mut r = Running {
            handle,
            task,
            forwards: HashMap::new(),
            live: BfdStates::new(),
        };
        for (name, rx) in subscribed {
            if let Some(tx) = self.channels.get(name) {
                r.follow(name, rx, tx);
            }
        }
        self.running = Some(r);
        Ok(())
    }
}

/// What a session says of a real server or a tracking VRRP instance: `Some(true)` while
/// it is Up, `Some(false)` once it has gone down (it reports why: the detection time
/// expired, the neighbour signalled it, it was stopped), `None` while it has never been Up
/// and has not failed either (a fresh session still coming up): the follower keeps its
/// start state, as keepalived's BFD_CHECK does until the first event.
///
/// A session the neighbour took down on purpose (it signalled AdminDown: an lb-node or a
/// router stopping its BFD) is no path failure (RFC 5882 §3.2): `None`, and followers keep
/// what they had, as keepalived sends no event for it (`bfd_state_fall` skips a remote
/// AdminDown). The detection time still applies once the session is Up again.
pub(crate) fn is_up(st: &SessionStatus) -> Option<bool> {
    if st.state == SessionState::Up {
        Some(true)
    } else if neighbour_admin_down(st) {
        None
    } else if st.local_diag != Diagnostic::NoDiagnostic {
        Some(false)
    } else {
        None
    }
}

/// Whether the session is down because its neighbour signalled AdminDown, and has not
/// been Up since (also once the quiet neighbour's detection time ran out, or while it
/// comes back through Init).
fn neighbour_admin_down(st: &SessionStatus) -> bool {
    st.state != SessionState::Up && st.neighbour_admin_down
}

/// What a follower last applied: up or not, and when the session state it came from
/// began (`None` for a start state the session did not give: `alpha`, or none).
pub(crate) type Seen = Option<(bool, Option<Instant>)>;

/// What a follower that saw `last` holds once it has applied `now`.
pub(crate) fn seen(now: &SessionStatus) -> Seen {
    is_up(now).map(|up| (up, Some(now.since)))
}

/// The transitions a follower that last saw `last` must apply to reach `now`: none, one,
/// or for a flap it missed — Up again, but since a later time — a down then an up, as
/// keepalived sends one event per transition.
pub(crate) fn transitions(last: Seen, now: &SessionStatus) -> Vec<bool> {
    let up = match (is_up(now), last) {
        (Some(up), _) => up,
        // Taken down by the neighbour on purpose: nothing changes for the followers.
        (None, _) if neighbour_admin_down(now) => return Vec::new(),
        // A session seen Up that is now fresh (replaced by one to a new address, say) is
        // not Up: down, whatever its diagnostic says.
        (None, Some((true, Some(_)))) => false,
        (None, _) => return Vec::new(),
    };
    match last {
        Some((true, Some(since))) if up && since != now.since => vec![false, true],
        Some((was, _)) if was == up => Vec::new(),
        _ => vec![up],
    }
}

/// What a follower holds after looking at `now` from `last` and applying `steps`
/// ([`transitions`]).
pub(crate) fn after(last: Seen, now: &SessionStatus, steps: &[bool]) -> Seen {
    // Across a neighbour's AdminDown the follower keeps what it had, and the session's
    // next Up is no flap it missed (keepalived sends no event for either).
    if neighbour_admin_down(now) {
        return last.map(|(up, _)| (up, None));
    }
    seen(now)
        .or_else(|| steps.last().map(|&up| (up, None)))
        .or(last)
}

/// Why session `name` fails a real server, as `lbctl status` shows it.
fn reason(name: &str, st: &SessionStatus) -> String {
    format!("BFD session {name} is {} ({})", st.state, st.local_diag)
}

/// A BFD_CHECK's verdict when its virtual server starts: `None` (up) while the session is
/// Up, or has not failed yet and the check has no `alpha`; else why it is down.
pub(crate) fn start_verdict(name: &str, st: &SessionStatus, alpha: bool) -> Option<String> {
    match is_up(st) {
        Some(true) => None,
        Some(false) => Some(reason(name, st)),
        None if alpha => Some(format!(
            "BFD session {name} has not been Up yet (alpha; it is {})",
            st.state
        )),
        None => None,
    }
}

/// Follows session `name` for one BFD_CHECK of real server `backend`, from `start`, the
/// session's status its start verdict was taken from, and `applied`, whether that verdict
/// let the real server up: each time the session comes Up or goes down, the verdict goes
/// to the virtual server's health task.
pub(crate) fn spawn_check(
    vs: String,
    backend: BackendId,
    name: String,
    mut rx: watch::Receiver<SessionStatus>,
    start: SessionStatus,
    applied: bool,
    tx: mpsc::UnboundedSender<(BackendId, super::vs::Tracked)>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let from_session = is_up(&start) == Some(applied);
        let mut last: Seen = Some((applied, from_session.then_some(start.since)));
        loop {
            let st = *rx.borrow_and_update();
            let steps = transitions(last, &st);
            for &up in &steps {
                let down = (!up).then(|| reason(&name, &st));
                tracing::debug!(virtual_server = %vs, backend = %backend, bfd_instance = %name, up, "BFD check changed");
                let t = super::vs::Tracked::Bfd {
                    session: name.clone(),
                    down,
                    initial: false,
                };
                if tx.send((backend, t)).is_err() {
                    return;
                }
            }
            last = after(last, &st, &steps);
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn at(state: SessionState, diag: Diagnostic, since: Instant) -> SessionStatus {
        SessionStatus {
            state,
            local_diag: diag,
            since,
            ..fresh()
        }
    }

    /// A reload that removes a session leaves what followed it with the state it had (the
    /// session's AdminDown never reaches the kept channel; the channel closes), keeps the
    /// other session running, and a reload with nothing changed keeps everything. In a
    /// network namespace of its own (root); neighbours that do not answer.
    #[test]
    fn a_removed_session_leaves_its_followers_as_they_were() {
        if !lb_testkit::lab_available() {
            return;
        }
        let lab = lb_testkit::Lab::new("bfdrt", &[("n", 1)]).expect("lab");
        lb_testkit::in_netns(lab.ns("n"), || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let inst = |name: &str, ip: [u8; 4]| {
                    let mut b = BfdInstance::new(name, IpAddr::from(ip));
                    b.source_ip = Some(IpAddr::from([198, 18, 0, 1]));
                    b
                };
                let (a, b) = (inst("a", [198, 18, 0, 98]), inst("b", [198, 18, 0, 99]));
                let mut r = BfdRuntime::start(&[a.clone(), b.clone()]).expect("start");
                let states = r.states();
                let mut rb = states["b"].clone();
                let ra = states["a"].clone();
                tokio::time::sleep(Duration::from_millis(100)).await;
                r.reload(std::slice::from_ref(&a)).await.expect("reload");
                // The channel closes without AdminDown: the follower keeps what it had.
                let closed = tokio::time::timeout(Duration::from_secs(3), async {
                    while rb.changed().await.is_ok() {}
                })
                .await;
                assert!(closed.is_ok(), "b's channel did not close");
                let last = *rb.borrow();
                assert_eq!(
                    (last.state, last.local_diag),
                    (SessionState::Down, Diagnostic::NoDiagnostic),
                    "{last:?}"
                );
                assert!(r.states().contains_key("a") && !r.states().contains_key("b"));
                assert!(ra.has_changed().is_ok(), "a's channel still open");
                r.reload(&[a]).await.expect("reload unchanged");
                assert!(r.running.as_ref().is_some_and(|x| !x.task.is_finished()));
                r.stop().await;
            });
            Ok(())
        })
        .expect("in the namespace");
    }

    /// A neighbour that takes the session down on purpose (AdminDown: a peer stopping, a
    /// router's `bfd shutdown`) is no failure: the followers keep what they had, as
    /// keepalived sends no event for it. It failed real servers and faulted VRRP
    /// instances. A detection-time expiry is a failure as before.
    #[test]
    fn a_neighbours_admin_down_is_no_failure() {
        let t0 = tokio::time::Instant::now().into_std();
        let t1 = t0 + Duration::from_millis(5);
        let up = at(SessionState::Up, Diagnostic::NoDiagnostic, t0);
        let admin = SessionStatus {
            remote_state: SessionState::AdminDown,
            neighbour_admin_down: true,
            ..at(
                SessionState::Down,
                Diagnostic::NeighborSignaledSessionDown,
                t1,
            )
        };
        assert_eq!(is_up(&admin), None);
        let last = seen(&up);
        assert_eq!(transitions(last, &admin), Vec::<bool>::new());
        assert_eq!(after(last, &admin, &[]), Some((true, None)));
        let expired = at(
            SessionState::Down,
            Diagnostic::ControlDetectionTimeExpired,
            t1,
        );
        assert_eq!(transitions(last, &expired), [false]);
    }

    /// A neighbour's AdminDown through a real session: the neighbour then goes quiet (its
    /// detection time runs out while the session is Down), restarts (Down, Init, Up with a
    /// new discriminator), or comes back Up at once: the follower sees no change at any
    /// step, whichever statuses it is shown (each, or only the last). The detection expiry
    /// failed the follower about one detection time after the AdminDown, and the restart
    /// made it go down and up.
    #[test]
    fn a_neighbours_admin_down_stays_no_failure_until_the_session_is_up_again() {
        use lb_health::bfd::{BfdConfig, ControlPacket, Session};
        let t0 = tokio::time::Instant::now().into_std();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let peer = |state, discr| ControlPacket {
            state,
            detect_mult: 5,
            my_discriminator: discr,
            your_discriminator: 0,
            desired_min_tx_us: 100_000,
            required_min_rx_us: 100_000,
            ..ControlPacket::default()
        };
        let mut s = Session::new(
            BfdConfig::new("198.18.0.2".parse().unwrap()),
            std::num::NonZeroU32::new(1).unwrap(),
            7,
            t0,
        );
        s.handle_packet(ms(1), &peer(SessionState::Down, 9));
        s.handle_packet(ms(2), &peer(SessionState::Up, 9));
        assert_eq!(s.status().state, SessionState::Up);
        let mut every: Seen = seen(&s.status());
        let start = every;
        let mut steps_seen = Vec::new();
        let mut look = |st: &SessionStatus, last: &mut Seen| {
            let steps = transitions(*last, st);
            steps_seen.extend(steps.iter().copied());
            *last = after(*last, st, &steps);
        };
        s.handle_packet(ms(10), &peer(SessionState::AdminDown, 9));
        look(&s.status(), &mut every);
        // Quiet: the detection time (5 x 1 s while not Up) runs out.
        s.handle_timeout(ms(10) + Duration::from_secs(6));
        let quiet = s.status();
        assert_eq!(is_up(&quiet), None, "{quiet:?}");
        look(&quiet, &mut every);
        // Restarted, with a new discriminator: Down, then Init, then Up.
        s.handle_packet(ms(7_000), &peer(SessionState::Down, 10));
        look(&s.status(), &mut every);
        s.handle_packet(ms(7_001), &peer(SessionState::Up, 10));
        assert_eq!(s.status().state, SessionState::Up);
        look(&s.status(), &mut every);
        assert_eq!(steps_seen, Vec::<bool>::new());
        // A follower that saw the AdminDown and then only the last status (the restart's
        // steps came together): no flap it missed either.
        let admin = SessionStatus {
            remote_state: SessionState::AdminDown,
            neighbour_admin_down: true,
            ..at(
                SessionState::Down,
                Diagnostic::NeighborSignaledSessionDown,
                ms(10),
            )
        };
        let mut only_last = after(start, &admin, &transitions(start, &admin));
        let st = s.status();
        let steps = transitions(only_last, &st);
        only_last = after(only_last, &st, &steps);
        assert_eq!(steps, Vec::<bool>::new());
        assert_eq!(only_last.map(|(up, _)| up), Some(true));
        // Up again, a real failure counts: the peer's detection time runs out.
        let deadline = s.poll_timeout().unwrap();
        s.handle_timeout(deadline + Duration::from_secs(10));
        let down = s.status();
        assert_eq!(transitions(every, &down), [false], "{down:?}");
    }

    /// A follower sees each change once, a fresh session changes nothing, and a flap it
    /// missed (Up, then Up again since later) is a down and an up.
    #[test]
    fn transitions_follow_the_session() {
        let t0 = tokio::time::Instant::now().into_std();
        let t1 = t0 + Duration::from_millis(5);
        let up0 = at(SessionState::Up, Diagnostic::NoDiagnostic, t0);
        let up1 = at(SessionState::Up, Diagnostic::NoDiagnostic, t1);
        let down = at(
            SessionState::Down,
            Diagnostic::ControlDetectionTimeExpired,
            t1,
        );
        let fresh = at(SessionState::Down, Diagnostic::NoDiagnostic, t0);
        assert_eq!(transitions(None, &fresh), Vec::<bool>::new());
        assert_eq!(transitions(Some((false, None)), &fresh), Vec::<bool>::new());
        assert_eq!(transitions(None, &up0), [true]);
        assert_eq!(transitions(seen(&up0), &up0), Vec::<bool>::new());
        assert_eq!(transitions(seen(&up0), &down), [false]);
        assert_eq!(transitions(seen(&down), &down), Vec::<bool>::new());
        // A flap missed between two looks.
        assert_eq!(transitions(seen(&up0), &up1), [false, true]);
        assert_eq!(transitions(seen(&down), &up1), [true]);
        // Up by a start state (no alpha), then the session's first Up: nothing to do, but
        // the follower now holds that Up, so a flap after it counts.
        let steps = transitions(Some((true, None)), &up0);
        assert_eq!(steps, Vec::<bool>::new());
        let last = after(Some((true, None)), &up0, &steps);
        assert_eq!(transitions(last, &up1), [false, true]);
        // Down by alpha, then Up.
        assert_eq!(transitions(Some((false, None)), &up1), [true]);
        // Up, then the session replaced by a fresh one: down; a start state up (no
        // session Up seen) is kept.
        assert_eq!(transitions(seen(&up0), &fresh), [false]);
        assert_eq!(after(seen(&up0), &fresh, &[false]), Some((false, None)));
        assert_eq!(transitions(Some((true, None)), &fresh), Vec::<bool>::new());
    }
}

//! keepalived's `bfd_instance`s: one lb-health [`BfdSpeaker`] runs every session of the
//! node, and what each session is (Up or not, and why) goes to the VRRP instances that
//! `track_bfd` it and to the real servers that `BFD_CHECK` it.
//!
//! Each session has a channel of its own ([`BfdStates`]) that outlives the speaker: a
//! reload that changes the `bfd_instance`s restarts the speaker (its sessions go
//! AdminDown, the new ones start Down, as keepalived restarts them), while the VRRP
//! instances and virtual servers that the reload keeps go on following the same channels.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use lb_core::BackendId;
use lb_health::bfd::{BfdHandle, BfdSpeaker, Diagnostic, SessionState, SessionStatus};
use tokio::sync::{mpsc, watch};

use super::NodeError;
use crate::config::model::BfdInstance;

/// Each `bfd_instance`'s session, by name, as it is now.
pub(crate) type BfdStates = HashMap<String, watch::Receiver<SessionStatus>>;

/// How long a stopping speaker may take to send its AdminDown packets.
const STOP_WAIT: Duration = Duration::from_secs(2);

/// The running BFD speaker and the channels its sessions publish on.
#[derive(Debug, Default)]
pub(crate) struct BfdRuntime {
    /// The sessions it runs (empty: no speaker).
    instances: Vec<BfdInstance>,
    /// The speaker's handle and task, while one runs.
    running: Option<(BfdHandle, tokio::task::JoinHandle<()>)>,
    /// One channel per session name, kept across restarts.
    channels: HashMap<String, Arc<watch::Sender<SessionStatus>>>,
    /// The running speaker's own channels, whose values also carry the packet counters
    /// as they are now (they wake receivers only on a change of state).
    live: BfdStates,
}

impl BfdRuntime {
    /// Starts a speaker for `instances` (none for an empty list).
    ///
    /// # Errors
    /// A session that cannot start (its address cannot be bound, say), naming it.
    pub(crate) fn start(instances: &[BfdInstance]) -> Result<Self, NodeError> {
        let mut r = Self::default();
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
    /// up to date), else the kept one (a speaker that failed to start).
    pub(crate) fn status_sources(&self) -> BfdStates {
        let mut out = self.states();
        out.extend(self.live.iter().map(|(n, rx)| (n.clone(), rx.clone())));
        out
    }

    /// A reload: keeps the speaker when the sessions are the same, else stops it (its
    /// sessions send AdminDown) and starts one for `instances`. Channels of sessions that
    /// are gone are dropped; validation made sure nothing new follows them.
    ///
    /// # Errors
    /// As [`BfdRuntime::start`]; the old speaker has stopped then.
    pub(crate) async fn reload(&mut self, instances: &[BfdInstance]) -> Result<(), NodeError> {
        if self.instances == instances {
            return Ok(());
        }
        tracing::info!(
            sessions = instances.len(),
            "bfd_instances changed: restarting the BFD sessions"
        );
        self.stop().await;
        self.channels
            .retain(|name, _| instances.iter().any(|b| &b.name == name));
        self.run(instances)
    }

    /// Stops the speaker: every session goes AdminDown and tells its neighbour (RFC 5880
    /// §6.8.16), within [`STOP_WAIT`].
    pub(crate) async fn stop(&mut self) {
        if let Some((handle, mut task)) = self.running.take() {
            handle.shutdown();
            if tokio::time::timeout(STOP_WAIT, &mut task).await.is_err() {
                tracing::warn!("BFD speaker did not stop within 2 s; aborted");
                task.abort();
            }
        }
        self.instances.clear();
        self.live.clear();
    }

    fn run(&mut self, instances: &[BfdInstance]) -> Result<(), NodeError> {
        if instances.is_empty() {
            return Ok(());
        }
        let speaker = BfdSpeaker::new(
            instances
                .iter()
                .map(|b| (b.name.clone(), b.bfd_config()))
                .collect(),
        )
        .map_err(|e| NodeError::Start(format!("BFD: {e}")))?;
        let mut forwards = Vec::new();
        for b in instances {
            let Some(mut rx) = speaker.subscribe(&b.name) else {
                continue;
            };
            let now = *rx.borrow_and_update();
            let tx = match self.channels.get(&b.name) {
                Some(tx) => {
                    tx.send_replace(now);
                    Arc::clone(tx)
                }
                None => {
                    let tx = Arc::new(watch::channel(now).0);
                    self.channels.insert(b.name.clone(), Arc::clone(&tx));
                    tx
                }
            };
            self.live.insert(b.name.clone(), rx.clone());
            forwards.push((rx, tx));
        }
        let handle = speaker.handle();
        let task = tokio::spawn(async move {
            // The speaker's sessions, copied to the channels that outlive it.
            let copies: Vec<_> = forwards
                .into_iter()
                .map(|(mut rx, tx)| {
                    tokio::spawn(async move {
                        while rx.changed().await.is_ok() {
                            let st = *rx.borrow_and_update();
                            tx.send_replace(st);
                        }
                    })
                })
                .collect();
            if let Err(e) = speaker.run().await {
                tracing::error!(error = %e, "BFD speaker stopped: tracked sessions keep their last state");
            }
            // The last states (AdminDown after a shutdown) reach the channels first.
            for c in copies {
                let _ = c.await;
            }
        });
        self.instances = instances.to_vec();
        self.running = Some((handle, task));
        Ok(())
    }
}

/// What a session says of a real server or a tracking VRRP instance: `Some(true)` while
/// it is Up, `Some(false)` once it has gone down (it reports why: the detection time
/// expired, the neighbour signalled it, it was stopped), `None` while it has never been Up
/// and has not failed either (a fresh session still coming up): the follower keeps its
/// start state, as keepalived's BFD_CHECK does until the first event.
pub(crate) fn is_up(st: &SessionStatus) -> Option<bool> {
    if st.state == SessionState::Up {
        Some(true)
    } else if st.local_diag != Diagnostic::NoDiagnostic {
        Some(false)
    } else {
        None
    }
}

/// Why session `name` fails a real server, as `lbctl status` shows it.
fn reason(name: &str, st: &SessionStatus) -> String {
    format!("BFD session {name} is {} ({})", st.state, st.local_diag)
}

/// A BFD_CHECK's verdict when its virtual server starts: `None` (up) while the session is
/// Up, or has not failed yet and the check has no `alpha`; else why it is down.
pub(crate) fn start_verdict(
    name: &str,
    rx: &watch::Receiver<SessionStatus>,
    alpha: bool,
) -> Option<String> {
    let st = *rx.borrow();
    match is_up(&st) {
        Some(true) => None,
        Some(false) => Some(reason(name, &st)),
        None if alpha => Some(format!(
            "BFD session {name} has not been Up yet (alpha; it is {})",
            st.state
        )),
        None => None,
    }
}

/// Follows session `name` for one BFD_CHECK of real server `backend`: each time the
/// session comes Up or goes down, the verdict goes to the virtual server's health task.
pub(crate) fn spawn_check(
    vs: String,
    backend: BackendId,
    name: String,
    mut rx: watch::Receiver<SessionStatus>,
    tx: mpsc::UnboundedSender<(BackendId, super::vs::Tracked)>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = is_up(&rx.borrow_and_update());
        while rx.changed().await.is_ok() {
            let st = *rx.borrow_and_update();
            let now = is_up(&st);
            if now.is_none() || now == last {
                continue;
            }
            last = now;
            let down = (now == Some(false)).then(|| reason(&name, &st));
            tracing::debug!(virtual_server = %vs, backend = %backend, bfd_instance = %name, up = down.is_none(), "BFD check changed");
            let t = super::vs::Tracked::Bfd {
                session: name.clone(),
                down,
                initial: false,
            };
            if tx.send((backend, t)).is_err() {
                return;
            }
        }
    })
}

//! A participant that stays in its meeting: when the media node is lost
//! (killed, unreachable) it joins again through the control plane, which
//! has re-placed the meeting by then (M5); when the node says the meeting
//! moved, it joins the new node *before* leaving the old one, so a planned
//! move drops nobody.
//!
//! ```text
//!   request_token ──▶ enter node ──▶ admitted ──▶ publish ─┐
//!        ▲   (unreachable hint)                           │ watch
//!        ├──────────── connection lost ◀──────────────────┤
//!        └──────────── Moved (old one kept until the new  ┘
//!                      node has let us in)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use fjord_common::client::Client;
use fjord_proto::v1 as pb;
use pb::server_message::Msg as OutMsg;

use super::{request_token, ClientError, JoinRequest, Participant, ReceiveStats};

/// How long a join may keep being retried before the session gives up.
const REJOIN_GIVE_UP: Duration = Duration::from_secs(60);

/// What a session has been through, for tests, benchmarks and `fjord join`.
#[derive(Debug, Default)]
pub struct SessionState {
    /// Incremented at each (re-)join attempt that got a join answer.
    pub generation: AtomicU64,
    /// `stats.received()` when the current generation began.
    pub received_at_generation: AtomicU64,
    /// Re-joins after a lost connection.
    pub rejoins_after_loss: AtomicU64,
    /// Switch-overs after a `Moved`.
    pub moves: AtomicU64,
    /// The node currently joined (or being joined).
    pub node: Mutex<String>,
    /// Why the session ended, once it has.
    pub ended: Mutex<Option<String>>,
    /// Set when it ended because the control plane refused the join.
    pub refused: Mutex<Option<(tonic::Code, String)>>,
    /// The node warned that the meeting reaches its time limit soon.
    pub time_limit_warned: AtomicBool,
    /// Time spent let into the meeting on nodes already left, in ms (the
    /// participant's own record of its usage).
    pub in_meeting_ms: AtomicU64,
    /// When the current node let this participant in.
    pub admitted_at: Mutex<Option<Instant>>,
}

impl SessionState {
    /// Ends the current stay on a node at `until`.
    fn close_stay(&self, admitted: Instant, until: Instant) {
        let ms = until.saturating_duration_since(admitted).as_millis() as u64;
        self.in_meeting_ms.fetch_add(ms, Ordering::AcqRel);
    }

    /// Time let into the meeting so far, over every node, as this
    /// participant saw it.
    pub fn in_meeting(&self) -> Duration {
        let open = self
            .admitted_at
            .lock()
            .expect("session lock")
            .map_or(0, |a| a.elapsed().as_millis() as u64);
        Duration::from_millis(self.in_meeting_ms.load(Ordering::Acquire) + open)
    }
}

pub struct Session {
    pub stats: Arc<ReceiveStats>,
    pub state: Arc<SessionState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Session {
    /// Starts the session; with `publish`, it sends audio and video after
    /// every (re-)join.
    pub fn start(cp: Arc<Client>, req: JoinRequest, publish: bool) -> Session {
        let stats = Arc::new(ReceiveStats::new(Instant::now()));
        let state = Arc::new(SessionState::default());
        let (stop, stop_rx) = watch::channel(false);
        let span = tracing::info_span!("session", meeting.id = req.meeting_id);
        let task = tokio::spawn(tracing::Instrument::instrument(
            supervise(cp, req, publish, stats.clone(), state.clone(), stop_rx),
            span,
        ));
        Session {
            stats,
            state,
            stop,
            task,
        }
    }

    pub fn node(&self) -> String {
        self.state.node.lock().expect("session lock").clone()
    }

    pub fn ended(&self) -> Option<String> {
        self.state.ended.lock().expect("session lock").clone()
    }

    /// Whether media arrived in the current generation (after the last
    /// re-join), and the generation.
    pub fn receiving(&self) -> (u64, bool) {
        let g = self.state.generation.load(Ordering::Acquire);
        let base = self.state.received_at_generation.load(Ordering::Acquire);
        (g, self.stats.received() > base)
    }

    /// Waits until the session is in a generation after `after` and media
    /// arrived in it; returns when that was first seen.
    pub async fn wait_media_after(&self, after: u64, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let (g, receiving) = self.receiving();
            if g > after && receiving {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        None
    }

    /// Leaves the meeting and ends the session.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(5), &mut self.task)
            .await
            .is_err()
        {
            // Still asking for a token or entering a node: gone now, and
            // whatever it held with it (a participant closes on drop), so
            // no join lands after the session ended.
            self.task.abort();
            if let Some(at) = self.state.admitted_at.lock().expect("session lock").take() {
                self.state.close_stay(at, Instant::now());
            }
        }
    }
}

async fn supervise(
    cp: Arc<Client>,
    req: JoinRequest,
    publish: bool,
    stats: Arc<ReceiveStats>,
    state: Arc<SessionState>,
    mut stop: watch::Receiver<bool>,
) {
    let end = |why: String| {
        tracing::info!(reason = %why, "session ended");
        *state.ended.lock().expect("session lock") = Some(why);
    };
    let mut unreachable: Option<String> = None;
    // After a Moved: the old node's participant, kept until the new one is in.
    let mut old: Option<OldNode> = None;
    loop {
        let token = match request_token(&cp, &req, REJOIN_GIVE_UP, unreachable.as_deref()).await {
            Ok(t) => t,
            Err(e) => {
                if let ClientError::Refused(s) = &e {
                    *state.refused.lock().expect("session lock") =
                        Some((s.code(), s.message().to_string()));
                }
                return end(e.to_string());
            }
        };
        let node = token.node_id.clone();
        tracing::debug!(%node, participant = token.participant_id, "entering the node");
        *state.node.lock().expect("session lock") = node.clone();
        state
            .received_at_generation
            .store(stats.received(), Ordering::Release);
        state.generation.fetch_add(1, Ordering::AcqRel);
        let mut p = match Participant::enter(&req, token, stats.clone()).await {
            Ok(p) => p,
            // Refused for good (locked, bad token): the session ends.
            // Declined for now, or unreachable: ask the control plane again.
            Err(ClientError::Closed(why)) => return end(why),
            Err(e) => {
                tracing::debug!(%node, error = %e, "could not enter the node; asking again");
                unreachable = Some(node);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if let Err(e) = p.wait_admitted(REJOIN_GIVE_UP).await {
            p.close();
            return end(e.to_string());
        }
        let admitted = Instant::now();
        tracing::debug!(%node, participant = p.participant_id, "let in");
        // The previous node (after a move) counts until we leave it below.
        let previous = state
            .admitted_at
            .lock()
            .expect("session lock")
            .replace(admitted);
        // A webinar attendee only receives.
        let attendee = matches!(&p.admission, super::Admission::Joined(j) if j.webinar)
            && p.role != pb::Role::Host;
        let media = if publish && !attendee {
            match p.start_media().await {
                Ok(m) => m,
                Err(e) => {
                    p.close();
                    return end(e.to_string());
                }
            }
        } else {
            Vec::new()
        };
        if let Some(o) = old.take() {
            let (o, closed_at) = o.stop().await;
            o.leave().await;
            if let Some(at) = previous {
                // The old node may have closed the room (its grace over)
                // while the new node kept us waiting: the stay ended then.
                state.close_stay(at, closed_at.unwrap_or_else(Instant::now));
            }
        }
        let stay_ends = |until: Instant| {
            if let Some(at) = state.admitted_at.lock().expect("session lock").take() {
                state.close_stay(at, until.max(at));
            }
        };
        unreachable = None;
        let outcome = tokio::select! {
            r = p.wait_for(Duration::from_secs(365 * 86400), |m| match m {
                OutMsg::Moved(_) => Some(()),
                OutMsg::TimeLimitWarning(w) => {
                    tracing::warn!(
                        ends_in_s = w.ends_in_ms / 1000,
                        "the meeting reaches its licence's time limit soon"
                    );
                    state.time_limit_warned.store(true, Ordering::Release);
                    None
                }
                _ => None,
            }) => r,
            _ = stop.changed() => {
                for h in media {
                    h.abort();
                }
                p.leave().await;
                stay_ends(Instant::now());
                return end("left".into());
            }
        };
        match outcome {
            Ok(()) => {
                state.moves.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%node, "meeting moved; joining its new node");
                old = Some(OldNode::watch(p, media));
            }
            Err(ClientError::ConnectionLost) => {
                state.rejoins_after_loss.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%node, "lost the media node; joining again");
                for h in media {
                    h.abort();
                }
                p.close();
                // The node's last sign of life, not when the loss was noticed.
                stay_ends(stats.last_received().unwrap_or_else(Instant::now));
                unreachable = Some(node);
            }
            Err(ClientError::RetryLater(why)) => {
                // E.g. the room closed after a move this session missed.
                tracing::info!(%node, reason = %why, "the node asks to join again");
                for h in media {
                    h.abort();
                }
                p.close();
                stay_ends(Instant::now());
            }
            Err(e) => {
                for h in media {
                    h.abort();
                }
                p.close();
                stay_ends(Instant::now());
                return end(e.to_string());
            }
        }
    }
}

/// The node a moved meeting is leaving, kept (media flowing) until the new
/// node lets the participant in, and watched: when it closes the room
/// first, the participant's stay there ends at that moment.
struct OldNode {
    media: Vec<JoinHandle<()>>,
    stop: oneshot::Sender<()>,
    watcher: JoinHandle<(Participant, Option<Instant>)>,
}

impl OldNode {
    fn watch(mut p: Participant, media: Vec<JoinHandle<()>>) -> OldNode {
        let (stop, stopped) = oneshot::channel();
        let watcher = tokio::spawn(async move {
            let closed_at = tokio::select! {
                _ = stopped => None,
                // Nothing is waited for: this returns when the node closes
                // the room or the connection ends.
                _ = p.wait_for(Duration::from_secs(365 * 86400), |_| None::<()>) => {
                    Some(Instant::now())
                }
            };
            (p, closed_at)
        });
        OldNode {
            media,
            stop,
            watcher,
        }
    }

    /// Stops the media and the watch; the participant and when the node
    /// closed it, if it did.
    async fn stop(self) -> (Participant, Option<Instant>) {
        for h in self.media {
            h.abort();
        }
        let _ = self.stop.send(());
        self.watcher.await.expect("the watch does not panic")
    }
}

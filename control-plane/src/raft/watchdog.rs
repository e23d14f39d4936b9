//! Elections: fast when the leader's process is gone, never because a busy
//! machine delivered a heartbeat late.
//!
//! openraft 0.9 lets a follower stand only after the leader lease (the
//! maximum election timeout) *plus* its own random election timeout have
//! passed without a heartbeat, checked on a tick of 1.5 heartbeats: with
//! any timeout long enough to ride out a loaded machine, a crashed leader
//! costs well over half a second. The watchdog shortens the crash case
//! without shortening the timeouts: when heartbeats stop, a follower tries
//! a TCP connection to the leader's peer port. A leader that is merely slow
//! (busy, paused, a long fsync) still accepts connections in its kernel, so
//! nothing happens and openraft's own timers decide; a leader whose process
//! died (connection refused, or three probes in a row without any answer,
//! as when a whole host is gone) is gone, and the follower starts an
//! election as soon as the other voters' lease has run out. Followers stand one after another by their rank among the
//! surviving voters, so two of them do not split the vote.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::Replica;

/// When this replica last heard from a leader (append or heartbeat).
#[derive(Debug)]
pub struct LeaderContact {
    base: Instant,
    last_ms: AtomicU64,
}

impl Default for LeaderContact {
    fn default() -> Self {
        LeaderContact {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        self.last_ms
            .store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn silent_for(&self) -> Duration {
        let now = self.base.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// Timings the watchdog works with (from the replica's Raft config).
#[derive(Debug, Clone, Copy)]
pub struct WatchdogTiming {
    pub heartbeat: Duration,
    /// The shortest election timeout: how long a replica that knows no
    /// leader waits before standing (plus its rank's turn and jitter).
    pub election_min: Duration,
    /// openraft's leader lease: the longest election timeout. No voter
    /// grants a vote while it has heard from a leader this recently.
    pub lease: Duration,
    /// Silence from a leader whose port still accepts connections (paused,
    /// hung) after which followers stand anyway.
    pub hung_leader: Duration,
}

/// Why a follower stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    /// No leader known (first start, or an election that did not finish).
    NoLeader,
    /// The leader's process is gone.
    LeaderGone,
    /// The leader's process lives but has been silent far too long.
    LeaderHung,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::NoLeader => "no_leader",
            Reason::LeaderGone => "leader_gone",
            Reason::LeaderHung => "leader_hung",
        }
    }
}

/// Drives elections until Raft stops (openraft's own election timer is
/// off: under CPU starvation it stood whenever heartbeats were late, about
/// once a minute at full load on two cores).
pub async fn run(replica: Arc<Replica>, timing: WatchdogTiming) {
    // Looks twice per heartbeat, so it stands within ~25 ms of its time.
    let mut tick = tokio::time::interval(timing.heartbeat / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let seeds = std::hash::RandomState::new();
    let mut timeouts = 0u32;
    let mut attempt = 0u64;
    // Stands in a row while no leader was known: each one doubles the next
    // wait (up to 16×). A replica that cannot win (its log is behind, as
    // after a wiped disk) would otherwise bump its term every few hundred
    // milliseconds and depose every leader the others elect before that
    // leader can reach it; the cluster livelocked so, with a 63 MB snapshot
    // to send. Without pre-vote in openraft 0.9, backing off is the cure.
    let mut leaderless_stands = 0u32;
    replica.leader_contact.touch();
    loop {
        tick.tick().await;
        let m = replica.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        if !matches!(m.state, ServerState::Follower | ServerState::Candidate) {
            timeouts = 0;
            leaderless_stands = 0;
            continue;
        }
        if m.current_leader.is_some() {
            leaderless_stands = 0;
        }
        let membership = m.membership_config.membership();
        let silent = replica.leader_contact.silent_for();
        // A leader that was removed from the membership (it removed
        // itself) is nobody's leader any more: as if none were known.
        let leader = m
            .current_leader
            .filter(|l| *l != replica.id && membership.get_node(l).is_some());
        let (reason, wait, rank) = match leader {
            Some(leader) => {
                if silent < timing.heartbeat * 2 {
                    timeouts = 0;
                    continue;
                }
                let addr = membership
                    .get_node(&leader)
                    .map(|n| n.addr.clone())
                    .expect("filtered to members above");
                let reason = match probe(&addr, timing.heartbeat * 2).await {
                    Probe::Accepted => {
                        timeouts = 0;
                        Reason::LeaderHung
                    }
                    Probe::Refused => Reason::LeaderGone,
                    // No answer at all: a dead host, or this replica too
                    // starved to see the answer in time. Only a run counts.
                    Probe::TimedOut => {
                        timeouts += 1;
                        if timeouts < 3 {
                            continue;
                        }
                        Reason::LeaderGone
                    }
                };
                // Rank among the voters other than the leader: 0 goes first.
                let Some(rank) = membership
                    .voter_ids()
                    .filter(|id| *id != leader)
                    .position(|id| id == replica.id)
                else {
                    continue; // learners never stand
                };
                let base = match reason {
                    Reason::LeaderHung => timing.hung_leader,
                    _ => timing.lease + timing.heartbeat / 4,
                };
                (reason, base, rank)
            }
            None => {
                let Some(rank) = membership.voter_ids().position(|id| id == replica.id) else {
                    continue;
                };
                // Jitter on top of the rank's turn, so a lost election is
                // not replayed in lockstep.
                let spread = (timing.lease.saturating_sub(timing.election_min)).as_millis() as u64;
                let jitter = seeds.hash_one((replica.id, attempt)) % spread.max(1);
                (
                    Reason::NoLeader,
                    (timing.election_min + Duration::from_millis(jitter))
                        * (1 << leaderless_stands.min(4)),
                    rank,
                )
            }
        };
        let wait = wait + timing.heartbeat * 2 * rank as u32;
        if replica.leader_contact.silent_for() < wait {
            continue;
        }
        tracing::info!(
            replica = replica.id,
            leader = leader.unwrap_or(0),
            reason = reason.as_str(),
            silent_ms = silent.as_millis() as u64,
            "standing for election"
        );
        metrics::counter!("fjord_raft_elections_started_total", "reason" => reason.as_str())
            .increment(1);
        attempt += 1;
        if leader.is_none() {
            leaderless_stands += 1;
        }
        if replica.raft.trigger().elect().await.is_err() {
            return;
        }
        // The next attempt, if this one fails, waits its turn again.
        replica.leader_contact.touch();
    }
}

enum Probe {
    /// Something listens: the leader's process lives (however busy).
    Accepted,
    /// The host answered that nothing listens: the process is gone.
    Refused,
    /// No answer in time.
    TimedOut,
}

/// Tries a TCP connection to `addr`; the kernel answers for a live process
/// however busy it is, and refuses at once for a dead one.
async fn probe(addr: &str, within: Duration) -> Probe {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Probe::Accepted,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        // Unreachable networks and the like: no answer from a process.
        Ok(Err(_)) | Err(_) => Probe::TimedOut,
    }
}

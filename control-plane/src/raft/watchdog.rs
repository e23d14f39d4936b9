//! Fast failover when the leader's process is gone.
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
    /// openraft's leader lease: the longest election timeout.
    pub lease: Duration,
}

/// Runs until Raft stops.
pub async fn run(replica: Arc<Replica>, timing: WatchdogTiming) {
    // Looks twice per heartbeat, so it stands within ~25 ms of the lease.
    let mut tick = tokio::time::interval(timing.heartbeat / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut timeouts = 0u32;
    loop {
        tick.tick().await;
        let m = replica.raft.metrics().borrow().clone();
        if m.running_state.is_err() {
            return;
        }
        let (ServerState::Follower, Some(leader)) = (m.state, m.current_leader) else {
            continue;
        };
        let silent = replica.leader_contact.silent_for();
        if silent < timing.heartbeat * 2 {
            timeouts = 0;
            continue;
        }
        let membership = m.membership_config.membership();
        let Some(addr) = membership.get_node(&leader).map(|n| n.addr.clone()) else {
            continue;
        };
        match probe(&addr, timing.heartbeat * 2).await {
            Probe::Accepted => {
                timeouts = 0;
                continue;
            }
            // No answer at all: a dead host, or this replica too starved to
            // see the answer in time. Only a run of them counts.
            Probe::TimedOut => {
                timeouts += 1;
                if timeouts < 3 {
                    continue;
                }
            }
            Probe::Refused => {}
        }
        // Rank among the voters other than the dead leader: 0 stands first.
        let rank = membership
            .voter_ids()
            .filter(|id| *id != leader)
            .position(|id| id == replica.id);
        let Some(rank) = rank else {
            continue; // a learner never stands
        };
        let wait = timing.lease + timing.heartbeat / 4 + timing.heartbeat * 2 * rank as u32;
        if replica.leader_contact.silent_for() < wait {
            continue;
        }
        tracing::info!(
            replica = replica.id,
            leader,
            silent_ms = silent.as_millis() as u64,
            "leader's peer port refuses connections; standing for election"
        );
        metrics::counter!("fjord_raft_watchdog_elections_total").increment(1);
        if replica.raft.trigger().elect().await.is_err() {
            return;
        }
        // Give the election a lease to finish before looking again.
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

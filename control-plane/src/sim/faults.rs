//! The faults the simulation injects, and the healing at the end.

use super::*;

impl World {
    pub(super) async fn crash_one(&mut self) {
        // Keep a quorum of voters able to run most of the time; sometimes
        // take it away too (the cluster must then stall, not break).
        let limit = if self.rng.below(10) == 0 {
            self.voters.len().div_ceil(2)
        } else {
            (self.voters.len() - 1) / 2
        };
        if self.crashed.len() >= limit || self.replicas.is_empty() {
            return;
        }
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        let id = ids[self.rng.below(ids.len())];
        let r = self.replicas.remove(&id).expect("listed");
        self.fabric.lock().expect("fabric lock").running.remove(&id);
        let _ = r.raft.shutdown().await;
        self.crashed.insert(id);
        self.report.crashes += 1;
    }

    pub(super) async fn restart_one(&mut self) {
        let Some(&id) = self
            .crashed
            .iter()
            .nth(self.rng.below(self.crashed.len().max(1)))
        else {
            return;
        };
        self.inject_bug(id);
        self.start_replica(id).await;
        self.report.restarts += 1;
    }

    pub(super) fn inject_bug(&mut self, id: NodeId) {
        let dir = self.dir.join(format!("replica-{id}"));
        match self.config.bug {
            None => {}
            Some(InjectedBug::ForgetVoteOnRestart) => {
                let path = dir.join("hardstate");
                if let Ok(bytes) = std::fs::read(&path) {
                    if let Ok(mut hard) = codec::decode::<HardState>(&bytes) {
                        hard.vote = None;
                        if let Ok(bytes) = codec::encode(&hard) {
                            let _ = std::fs::write(&path, bytes);
                        }
                    }
                }
            }
            Some(InjectedBug::LoseLogTailOnRestart) => {
                // Cut the newest segment short: recovery drops the torn
                // records, acknowledged or not.
                let wal = dir.join("wal");
                let newest = std::fs::read_dir(&wal)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .max();
                if let Some(path) = newest {
                    if let Ok(meta) = std::fs::metadata(&path) {
                        let cut = meta.len().saturating_sub(400).max(8);
                        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&path) {
                            let _ = f.set_len(cut);
                        }
                    }
                }
            }
        }
    }

    /// Pauses a running replica (SIGSTOP) for 0.3 to 3 simulated seconds:
    /// its election timer stops, and messages to and from it wait and
    /// arrive when it resumes, stale by then.
    pub(super) fn pause_one(&mut self) {
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        if ids.is_empty() {
            return;
        }
        let id = ids[self.rng.below(ids.len())];
        let until = self.now() + 300 + self.rng.below(2_700) as u64;
        self.fabric
            .lock()
            .expect("fabric lock")
            .frozen
            .insert(id, until);
        self.report.pauses += 1;
    }

    pub(super) fn partition(&mut self) {
        let ids: Vec<NodeId> = self.members.iter().copied().collect();
        let mut f = self.fabric.lock().expect("fabric lock");
        match self.rng.below(3) {
            // One replica cut off both ways (isolated, as if paused).
            0 => {
                let lone = ids[self.rng.below(ids.len())];
                for &other in &ids {
                    if other != lone {
                        f.cut.insert((lone, other));
                        f.cut.insert((other, lone));
                    }
                }
            }
            // A one-way link loss.
            1 => {
                let a = ids[self.rng.below(ids.len())];
                let b = ids[self.rng.below(ids.len())];
                if a != b {
                    f.cut.insert((a, b));
                }
            }
            // A split into two sides.
            _ => {
                let side: BTreeSet<NodeId> = ids
                    .iter()
                    .copied()
                    .filter(|_| self.rng.below(2) == 0)
                    .collect();
                for &a in &ids {
                    for &b in &ids {
                        if side.contains(&a) != side.contains(&b) {
                            f.cut.insert((a, b));
                        }
                    }
                }
            }
        }
        self.report.partitions += 1;
    }

    pub(super) fn heal_links(&mut self) {
        let mut f = self.fabric.lock().expect("fabric lock");
        f.cut.clear();
    }

    pub(super) fn set_loss(&mut self) {
        let loss = [0, 0, 10, 50, 200][self.rng.below(5)];
        self.fabric.lock().expect("fabric lock").loss_permille = loss;
    }

    pub(super) fn clock_jump(&mut self) {
        // Forward by up to two hours (leases, schedules and day
        // boundaries move), or back by up to five seconds (a leader whose
        // clock is behind the last one's).
        self.clock_offset_ms += if self.rng.below(4) == 0 {
            -(self.rng.below(5_000) as i64)
        } else {
            self.rng.below(7_200_000) as i64
        };
        self.report.clock_jumps += 1;
    }

    pub(super) async fn change_membership(&mut self) {
        // With three: replace a voter by a brand-new replica. With five:
        // move between three and five voters, the others staying learners.
        if self.config.replicas != 5 {
            return self.replace_voter().await;
        }
        let Some(leader) = self.leader() else {
            return;
        };
        let all: BTreeSet<NodeId> = (1..=5).collect();
        let target: BTreeSet<NodeId> = if self.voters.len() == 5 {
            let mut v = all.clone();
            let mut drop_ids: Vec<NodeId> = all.iter().copied().filter(|i| *i != leader).collect();
            for _ in 0..2 {
                let at = self.rng.below(drop_ids.len());
                v.remove(&drop_ids.remove(at));
            }
            v
        } else {
            all
        };
        let raft = self.replicas[&leader].raft.clone();
        let change = raft.change_membership(target.clone(), true);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), change).await {
            self.voters = target;
            self.report.membership_changes += 1;
        }
    }

    /// Adds a brand-new replica (an empty disk: it catches up by log or
    /// snapshot) as a learner, then makes it a voter in place of another
    /// voter — running or crashed, as an operator replaces a dead one —
    /// which leaves the cluster.
    pub(super) async fn replace_voter(&mut self) {
        let Some(leader) = self.leader() else {
            return;
        };
        let new = self.next_replica;
        self.next_replica += 1;
        self.start_replica(new).await;
        if !self.replicas.contains_key(&new) {
            return;
        }
        self.members.insert(new);
        self.report.replicas_added += 1;
        let raft = self.replicas[&leader].raft.clone();
        let add = raft.add_learner(new, BasicNode::new(format!("sim-{new}")), true);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(3), add).await,
            Ok(Ok(_))
        ) {
            // Maybe added, maybe not: `sync_membership` finds out at the end.
            return;
        }
        let others: Vec<NodeId> = self
            .voters
            .iter()
            .copied()
            .filter(|v| *v != leader)
            .collect();
        let old = others[self.rng.below(others.len())];
        let mut target = self.voters.clone();
        target.remove(&old);
        target.insert(new);
        let change = raft.change_membership(target.clone(), false);
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), change).await {
            self.voters = target;
            self.retire(old).await;
            self.report.membership_changes += 1;
        }
    }

    /// A replica that left the cluster stops for good.
    pub(super) async fn retire(&mut self, id: NodeId) {
        self.members.remove(&id);
        self.crashed.remove(&id);
        self.election_due.remove(&id);
        self.fabric.lock().expect("fabric lock").running.remove(&id);
        if let Some(r) = self.replicas.remove(&id) {
            let _ = r.raft.shutdown().await;
        }
    }

    /// Takes the membership the most advanced replica applied (a change
    /// whose answer timed out may have committed after all) and retires
    /// the replicas outside it: they receive nothing more and would never
    /// converge.
    pub(super) async fn sync_membership(&mut self) {
        let newest = self
            .replicas
            .values()
            .map(|r| r.applied.read().expect("state lock"))
            .max_by_key(|a| a.last_applied.map(|l| l.index))
            .map(|a| a.membership.membership().clone());
        let Some(membership) = newest else {
            return;
        };
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        if members.is_empty() {
            return;
        }
        self.voters = membership.voter_ids().collect();
        let gone: Vec<NodeId> = self.members.difference(&members).copied().collect();
        for id in gone {
            self.retire(id).await;
        }
    }

    pub(super) async fn heal(&mut self) {
        {
            let mut f = self.fabric.lock().expect("fabric lock");
            f.cut.clear();
            f.loss_permille = 0;
            f.frozen.clear();
        }
        let crashed: Vec<NodeId> = self.crashed.iter().copied().collect();
        for id in crashed {
            self.inject_bug(id);
            self.start_replica(id).await;
            self.report.restarts += 1;
        }
    }
}

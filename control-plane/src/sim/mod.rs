//! A deterministic simulation of a control-plane cluster: 3 or 5 real
//! replicas (openraft, the real log and snapshot store on disk, the real
//! state machine and placement) in one thread on a paused clock, talking
//! over a simulated network ([`net`]), driven by a seeded schedule of
//! client writes (institutions, licences and price tables, nodes and their
//! heartbeats, drains and lease expiry, meetings, usage reports resent as a
//! node resends them) and faults — partitions and one-way link loss,
//! message loss, crashes and restarts from disk, paused replicas whose
//! messages arrive late, clock jumps in the commands' time stamps and
//! membership changes.
//!
//! After every step it checks Raft's safety (votes only grow, across
//! restarts too, and leaders lead on granted votes; any two replicas that
//! applied the same log index hold the same state) and
//! Fjord's invariants on every replica's state
//! ([`ClusterState::check_invariants`]: residency, capacity, no meeting
//! placed twice on a node, reservations and shares in step). At the end
//! it heals the cluster and checks that every replica converges, that
//! every acknowledged write is in the state, and that the history of
//! writes is linearizable ([`check::linearizable`]).
//!
//! The same seed replays the same run: nothing reads a real clock, an
//! unseeded random number or a thread of its own (the log is written
//! inline, [`WalIo::Inline`]). Media stays out (quinn cannot run on a
//! simulated clock); the process tests and the chaos runner cover it.

pub mod check;
mod faults;
mod net;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::{BasicNode, ServerState};
use serde::Serialize;

use crate::licensing::{LicenceTerms, PriceTable, Tier};
use crate::placement::SplitMix64;
use crate::raft::{codec, open_stores_with, Applied, HardState, NodeId, Raft, WalIo};
use crate::state::{
    Command, CreateInstitution, EndMeeting, ExpireLeases, Heartbeat, Host, InstitutionCommand,
    LedgerCommand, LicenceCommand, LoadPriceTable, MeetingCommand, NodeCommand, Proposal,
    RecordUsage, RegisterNode, Reporter, Request, ScheduleMeeting, SessionEnd, SetLicence,
    SetNodeDraining, UsageEvent, UsageEventKind,
};
use check::{Ack, WriteRecord};
use net::{Fabric, SharedFabric, SimNetwork};
use workload::UsageJournal;

/// A fault the simulation injects on purpose, to show its checks catch
/// the bug class (never in a normal run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectedBug {
    /// A restarted replica has forgotten its vote, as if the vote had been
    /// acknowledged before it was durable.
    ForgetVoteOnRestart,
    /// A restarted replica has lost the tail of its log, as if appends had
    /// been acknowledged before they were durable.
    LoseLogTailOnRestart,
}

impl InjectedBug {
    pub fn parse(s: &str) -> Option<InjectedBug> {
        match s {
            "forget-vote" => Some(InjectedBug::ForgetVoteOnRestart),
            "lose-log-tail" => Some(InjectedBug::LoseLogTailOnRestart),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// 3 or 5.
    pub replicas: usize,
    /// Steps of client writes and faults.
    pub steps: usize,
    /// Simulated time between steps.
    pub step_ms: u64,
    /// Whether faults are injected (crashes, partitions, loss, jumps).
    pub faults: bool,
    /// Entries between snapshots (small, so restarts load snapshots and
    /// lagging replicas get them installed).
    pub snapshot_every: u64,
    pub bug: Option<InjectedBug>,
    /// Print every step, the leader and the faults in force to stderr.
    pub trace: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            replicas: 3,
            steps: 200,
            step_ms: 100,
            faults: true,
            snapshot_every: 64,
            bug: None,
            trace: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SimConfigError {
    #[error("replicas must be 3 or 5")]
    Replicas,
    #[error("steps must be between 1 and 100000")]
    Steps,
    #[error("step_ms must be between 10 and 10000")]
    StepMs,
    #[error("snapshot_every must be at least 8")]
    SnapshotEvery,
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimConfigError> {
        if !matches!(self.replicas, 3 | 5) {
            return Err(SimConfigError::Replicas);
        }
        if !(1..=100_000).contains(&self.steps) {
            return Err(SimConfigError::Steps);
        }
        if !(10..=10_000).contains(&self.step_ms) {
            return Err(SimConfigError::StepMs);
        }
        if self.snapshot_every < 8 {
            return Err(SimConfigError::SnapshotEvery);
        }
        Ok(())
    }
}

/// What one seed did and found.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SeedReport {
    pub seed: u64,
    pub replicas: usize,
    pub steps: usize,
    pub writes: usize,
    pub acknowledged: usize,
    pub failed: usize,
    pub unknown: usize,
    pub crashes: usize,
    pub restarts: usize,
    pub pauses: usize,
    pub partitions: usize,
    pub clock_jumps: usize,
    pub membership_changes: usize,
    /// Brand-new replicas (empty disks) added.
    pub replicas_added: usize,
    pub elections_started: usize,
    /// Usage events the nodes journaled, and those the ledger acknowledged.
    pub usage_events: usize,
    pub usage_events_acked: u64,
    /// Steps that ended with a replica leading (availability).
    pub steps_with_leader: usize,
    pub max_term: u64,
    pub last_applied: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
    pub simulated_ms: u64,
    pub violations: Vec<String>,
}

/// Runs one seed in a fresh single-threaded runtime on a paused clock,
/// with the replicas' data under `dir` (which must be empty).
pub fn run_seed(seed: u64, config: &SimConfig, dir: &Path) -> SeedReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a current-thread runtime");
    rt.block_on(async {
        let mut world = World::new(seed, config.clone(), dir.to_path_buf());
        world.run().await;
        world.report
    })
}

/// The epoch the simulated wall clock starts at (2026-11-01T00:00Z).
const EPOCH_MS: u64 = 1_793_491_200_000;
const INSTITUTIONS: [(&str, &str); 3] = [("uio", "nordic"), ("ntnu", "nordic"), ("tu", "eu")];
const REGIONS: [&str; 2] = ["nordic", "eu"];

struct Replica {
    raft: Raft,
    applied: Arc<RwLock<Applied>>,
}

struct World {
    config: SimConfig,
    dir: PathBuf,
    rng: SplitMix64,
    start: tokio::time::Instant,
    fabric: SharedFabric,
    replicas: BTreeMap<NodeId, Replica>,
    crashed: BTreeSet<NodeId>,
    /// Replicas in the cluster (voters and learners), running or crashed.
    members: BTreeSet<NodeId>,
    voters: BTreeSet<NodeId>,
    /// The id the next brand-new replica gets.
    next_replica: NodeId,
    /// Added to the commands' time stamps (clock jumps).
    clock_offset_ms: i64,
    /// When each replica may stand next (simulated ms).
    election_due: BTreeMap<NodeId, u64>,
    history: Arc<Mutex<Vec<WriteRecord>>>,
    next_write: u64,
    /// The highest vote each replica was seen holding (kept across its
    /// restarts: votes are durable).
    votes: BTreeMap<NodeId, openraft::Vote<NodeId>>,
    /// Log index -> fingerprint of the state after applying it.
    states: BTreeMap<u64, u64>,
    media_nodes: Vec<(String, &'static str)>,
    /// Each media node's usage journal, numbered from 1 (index = seq - 1),
    /// and the participants it has open.
    journals: BTreeMap<String, UsageJournal>,
    next_participant: u64,
    meetings: Vec<u64>,
    report: SeedReport,
}

impl World {
    fn new(seed: u64, config: SimConfig, dir: PathBuf) -> World {
        let mut rng = SplitMix64::new(seed);
        let fabric = Fabric {
            running: BTreeMap::new(),
            cut: BTreeSet::new(),
            loss_permille: 0,
            latency_ms: (1, 5),
            frozen: BTreeMap::new(),
            last_contact: BTreeMap::new(),
            rng: SplitMix64::new(rng.next_u64()),
            delivered: 0,
            dropped: 0,
        };
        World {
            report: SeedReport {
                seed,
                replicas: config.replicas,
                steps: config.steps,
                ..Default::default()
            },
            config,
            dir,
            rng,
            start: tokio::time::Instant::now(),
            fabric: Arc::new(Mutex::new(fabric)),
            replicas: BTreeMap::new(),
            crashed: BTreeSet::new(),
            members: BTreeSet::new(),
            voters: BTreeSet::new(),
            next_replica: 0,
            clock_offset_ms: 0,
            election_due: BTreeMap::new(),
            history: Arc::default(),
            next_write: 1,
            votes: BTreeMap::new(),
            states: BTreeMap::new(),
            media_nodes: Vec::new(),
            journals: BTreeMap::new(),
            next_participant: 1,
            meetings: Vec::new(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn violation(&mut self, what: String) {
        if self.report.violations.len() < 20 {
            self.report.violations.push(what);
        }
    }

    fn raft_config(&self) -> Arc<openraft::Config> {
        let config = openraft::Config {
            cluster_name: "fjord-sim".into(),
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            // Elections are this driver's, from the seed (openraft's own
            // timer draws from an unseeded generator).
            enable_elect: false,
            install_snapshot_timeout: 2_000,
            max_payload_entries: 16,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.config.snapshot_every),
            max_in_snapshot_log_to_keep: self.config.snapshot_every / 2,
            purge_batch_size: 1,
            ..Default::default()
        };
        Arc::new(config.validate().expect("a valid simulation config"))
    }

    async fn start_replica(&mut self, id: NodeId) {
        let dir = self.dir.join(format!("replica-{id}"));
        let (log, sm) = match open_stores_with(&dir, WalIo::Inline) {
            Ok(s) => s,
            Err(e) => {
                self.violation(format!("replica {id} cannot open its store: {e}"));
                return;
            }
        };
        let applied = sm.applied.clone();
        let start = self.start;
        let network = SimNetwork {
            from: id,
            fabric: self.fabric.clone(),
            clock: Arc::new(move || start.elapsed().as_millis() as u64),
        };
        let raft = match Raft::new(id, self.raft_config(), network, log, sm).await {
            Ok(r) => r,
            Err(e) => {
                self.violation(format!("replica {id} does not start: {e}"));
                return;
            }
        };
        let now = self.now();
        let mut f = self.fabric.lock().expect("fabric lock");
        f.running.insert(id, raft.clone());
        f.last_contact.insert(id, now);
        drop(f);
        self.replicas.insert(id, Replica { raft, applied });
        self.crashed.remove(&id);
        let due = now + self.election_timeout();
        self.election_due.insert(id, due);
    }

    fn election_timeout(&mut self) -> u64 {
        400 + self.rng.next_u64() % 400
    }

    async fn run(&mut self) {
        if let Err(e) = self.config.validate() {
            self.violation(format!("bad configuration: {e}"));
            return;
        }
        let n = self.config.replicas as u64;
        for id in 1..=n {
            self.start_replica(id).await;
        }
        self.voters = (1..=n).collect();
        self.members = self.voters.clone();
        self.next_replica = n + 1;
        let members: BTreeMap<NodeId, BasicNode> = (1..=n)
            .map(|id| (id, BasicNode::new(format!("sim-{id}"))))
            .collect();
        if let Err(e) = self.replicas[&1].raft.initialize(members).await {
            self.violation(format!("cluster does not initialise: {e}"));
            return;
        }
        // Faults start once every replica knows the membership (before,
        // one that never heard of it cannot stand, whatever the seed).
        for _ in 0..100 {
            self.advance(100).await;
            let knows = self.replicas.values().all(|r| {
                r.raft
                    .metrics()
                    .borrow()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .count()
                    == self.config.replicas
            });
            if knows && self.leader().is_some() {
                break;
            }
        }
        for step in 0..self.config.steps {
            self.step(step).await;
            self.advance(self.config.step_ms).await;
            if self.leader().is_some() {
                self.report.steps_with_leader += 1;
            }
            self.check_step();
        }
        self.heal().await;
        self.settle().await;
        self.check_end();
        for (_, r) in std::mem::take(&mut self.replicas) {
            let _ = r.raft.shutdown().await;
        }
        let f = self.fabric.lock().expect("fabric lock");
        self.report.messages_delivered = f.delivered;
        self.report.messages_dropped = f.dropped;
        drop(f);
        self.report.simulated_ms = self.now();
        let h = self.history.lock().expect("history lock");
        self.report.writes = h.len();
        self.report.acknowledged = h
            .iter()
            .filter(|w| matches!(w.ack, Ack::Applied { .. }))
            .count();
        self.report.failed = h.iter().filter(|w| matches!(w.ack, Ack::Refused)).count();
        self.report.unknown = h
            .iter()
            .filter(|w| matches!(w.ack, Ack::Pending | Ack::Unknown))
            .count();
    }

    /// Lets simulated time pass in slices, standing followers whose leader
    /// went quiet.
    async fn advance(&mut self, ms: u64) {
        let slice = 25;
        let mut left = ms;
        while left > 0 {
            let d = left.min(slice);
            tokio::time::sleep(Duration::from_millis(d)).await;
            left -= d;
            self.check_votes();
            self.drive_elections().await;
        }
    }

    async fn drive_elections(&mut self) {
        let now = self.now();
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        for id in ids {
            let m = self.replicas[&id].raft.metrics().borrow().clone();
            if m.state == ServerState::Leader || !self.voters.contains(&id) || self.is_frozen(id) {
                continue;
            }
            let contact = self
                .fabric
                .lock()
                .expect("fabric lock")
                .last_contact
                .get(&id)
                .copied()
                .unwrap_or(0);
            let due = self.election_due.get(&id).copied().unwrap_or(0);
            if now >= due && now.saturating_sub(contact) >= 400 {
                let _ = self.replicas[&id].raft.trigger().elect().await;
                self.report.elections_started += 1;
                let next = now + self.election_timeout();
                self.election_due.insert(id, next);
            }
        }
    }

    /// A paused replica's timers do not fire (its election waits).
    fn is_frozen(&self, id: NodeId) -> bool {
        let now = self.now();
        let f = self.fabric.lock().expect("fabric lock");
        f.frozen.get(&id).is_some_and(|until| *until > now)
    }

    /// The replica that believes it leads, if one does.
    fn leader(&self) -> Option<NodeId> {
        self.replicas
            .iter()
            .filter(|(_, r)| r.raft.metrics().borrow().state == ServerState::Leader)
            .map(|(id, r)| (r.raft.metrics().borrow().current_term, *id))
            .max()
            .map(|(_, id)| id)
    }

    async fn step(&mut self, step: usize) {
        let roll = self.rng.below(100);
        let faults = self.config.faults;
        if self.config.trace {
            let f = self.fabric.lock().expect("fabric lock");
            let states: Vec<String> = self
                .replicas
                .iter()
                .map(|(id, r)| {
                    let m = r.raft.metrics().borrow().clone();
                    format!(
                        "{id}:{:?}/t{}/l{:?}/a{:?}",
                        m.state,
                        m.current_term,
                        m.current_leader,
                        m.last_applied.map(|l| l.index)
                    )
                })
                .collect();
            eprintln!(
                "step {step} t={}ms roll={roll} crashed={:?} cut={:?} loss={} voters={:?} {}",
                self.now(),
                self.crashed,
                f.cut,
                f.loss_permille,
                self.voters,
                states.join(" ")
            );
        }
        match roll {
            0..=64 => self.client_write(),
            65..=69 if faults => self.crash_one().await,
            70..=77 if faults => self.restart_one().await,
            78..=82 if faults => self.partition(),
            83..=86 if faults => self.heal_links(),
            87..=89 if faults => self.clock_jump(),
            90..=91 if faults => self.set_loss(),
            92..=93 if faults => self.change_membership().await,
            94..=95 if faults => self.pause_one(),
            _ => self.client_write(),
        }
    }

    /// Runs until every replica applied the same log, or 60 simulated
    /// seconds pass; then lets pending writes finish.
    async fn settle(&mut self) {
        // A write after the heal makes the leader commit in its own term,
        // so every replica learns the final commit index.
        for _ in 0..600 {
            self.advance(100).await;
            if self.leader().is_some() {
                break;
            }
        }
        self.client_write();
        for _ in 0..600 {
            self.advance(100).await;
            self.sync_membership().await;
            let applied: BTreeSet<Option<u64>> = self
                .replicas
                .values()
                .map(|r| {
                    r.applied
                        .read()
                        .expect("state lock")
                        .last_applied
                        .map(|l| l.index)
                })
                .collect();
            let pending = self
                .history
                .lock()
                .expect("history lock")
                .iter()
                .any(|w| w.ack == Ack::Pending);
            if applied.len() == 1 && !pending {
                break;
            }
        }
        self.check_step();
    }

    /// Election safety as openraft defines it, looked at every slice of
    /// simulated time (a change within a step would escape a look per
    /// step). openraft identifies a leader by (term, node id), ordered, so
    /// a term can see more than one leader, each deposed by the next; what
    /// must hold is that a replica's vote only ever grows, across restarts
    /// too (a replica that forgets whom it voted for can elect two leaders
    /// with one vote), and that a leader leads on a vote a quorum granted
    /// to it.
    fn check_votes(&mut self) {
        let mut seen = Vec::new();
        for (id, r) in &self.replicas {
            let m = r.raft.metrics().borrow().clone();
            self.report.max_term = self.report.max_term.max(m.current_term);
            if m.state == ServerState::Leader
                && (!m.vote.is_committed() || m.vote.leader_id().voted_for() != Some(*id))
            {
                seen.push(format!(
                    "replica {id} leads on vote {} (not its own, granted)",
                    m.vote
                ));
            }
            match self.votes.get(id) {
                Some(last) if m.vote.partial_cmp(last) == Some(std::cmp::Ordering::Less) => {
                    seen.push(format!(
                        "replica {id}'s vote went back from {last} to {}",
                        m.vote
                    ));
                }
                Some(last) if m.vote.partial_cmp(last) != Some(std::cmp::Ordering::Greater) => {}
                _ => {
                    self.votes.insert(*id, m.vote);
                }
            }
        }
        for v in seen {
            self.violation(v);
        }
    }

    /// After every step: votes, the same state at the same index
    /// everywhere, Fjord's invariants on every replica.
    fn check_step(&mut self) {
        self.check_votes();
        let mut diverged = Vec::new();
        let mut broken = Vec::new();
        for (id, r) in &self.replicas {
            let applied = r.applied.read().expect("state lock");
            let Some(index) = applied.last_applied.map(|l| l.index) else {
                continue;
            };
            self.report.last_applied = self.report.last_applied.max(index);
            let fingerprint = fingerprint(&applied.state);
            if let Err(e) = applied.state.check_invariants() {
                broken.push(format!("replica {id} at index {index}: {e}"));
            }
            drop(applied);
            match self.states.get(&index) {
                Some(f) if *f != fingerprint => diverged.push((*id, index)),
                Some(_) => {}
                None => {
                    self.states.insert(index, fingerprint);
                }
            }
        }
        for (id, index) in diverged {
            self.violation(format!(
                "replica {id} applied a different state at index {index} than another replica"
            ));
        }
        for v in broken {
            self.violation(v);
        }
        // Meetings the clients may end later.
        if let Some(r) = self.replicas.values().next() {
            let applied = r.applied.read().expect("state lock");
            self.meetings = applied.state.meetings.values().map(|m| m.id).collect();
        }
    }

    fn check_end(&mut self) {
        let states: BTreeMap<NodeId, (Option<u64>, u64)> = self
            .replicas
            .iter()
            .map(|(id, r)| {
                let a = r.applied.read().expect("state lock");
                (
                    *id,
                    (a.last_applied.map(|l| l.index), fingerprint(&a.state)),
                )
            })
            .collect();
        let distinct: BTreeSet<&(Option<u64>, u64)> = states.values().collect();
        if distinct.len() > 1 {
            self.violation(format!(
                "replicas did not converge after healing: {states:?}"
            ));
        }
        if self.replicas.len() != self.members.len() {
            self.violation(format!(
                "{} of {} replicas running at the end",
                self.replicas.len(),
                self.members.len()
            ));
        }
        let history = self.history.lock().expect("history lock").clone();
        let Some(r) = self.replicas.values().next() else {
            return;
        };
        let state = r.applied.read().expect("state lock").state.clone();
        for v in check::linearizable(&history) {
            self.violation(v);
        }
        for v in check::durable(&history, &state) {
            self.violation(v);
        }
        let journals: BTreeMap<String, Vec<UsageEvent>> = self
            .journals
            .iter()
            .map(|(node, j)| (node.clone(), j.events.clone()))
            .collect();
        self.report.usage_events_acked = journals
            .keys()
            .map(|node| state.ledger.acked_seq(node))
            .sum();
        for v in check::ledger_complete(&journals, &state) {
            self.violation(v);
        }
    }
}

/// A stable fingerprint of a state: FNV-1a over its binary encoding.
fn fingerprint(state: &crate::state::ClusterState) -> u64 {
    let bytes = codec::encode(state).expect("a state encodes");
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What a failing seed prints: how to run it again alone.
pub fn replay_command(seed: u64, config: &SimConfig) -> String {
    let mut cmd = format!(
        "cargo run --release -p fjord-benches --bin sim_bench -- --seed {seed} --replicas {} --steps {}",
        config.replicas, config.steps
    );
    if !config.faults {
        cmd.push_str(" --no-faults");
    }
    if let Some(bug) = config.bug {
        cmd.push_str(match bug {
            InjectedBug::ForgetVoteOnRestart => " --inject forget-vote",
            InjectedBug::LoseLogTailOnRestart => " --inject lose-log-tail",
        });
    }
    cmd
}

//! The handle the API uses: writes and linearizable reads that work on any
//! replica. On a follower they are forwarded to the leader over gRPC, and a
//! leader change mid-call is retried here, so callers never see "not leader".

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use fjord_proto::v1::raft_service_client::RaftServiceClient;
use fjord_proto::v1::RaftPayload;

use super::codec;
use super::network::{channel, peer_client};
use super::store::Applied;
use super::{NodeId, Raft};
use crate::join_guard::{GuardStep, JoinGuards, JoinLimits};
use crate::placement::Strategy;
use crate::state::{Command, Output, Proposal, Query, QueryOutput, Request, StateError};

/// Per-replica knobs that shape what the leader stamps into commands and how
/// long callers wait through an election.
#[derive(Debug, Clone)]
pub struct ReplicaTuning {
    pub strategy: Strategy,
    /// How long a write or read keeps retrying while there is no leader.
    pub request_timeout: Duration,
    /// How long one attempt may take before it is retried (with the same op
    /// id): a leader deposed mid-write may never answer.
    pub attempt_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("no leader could be reached: {reason}")]
    Unavailable { reason: String },
    /// Only seen between replicas: the receiver is no longer the leader.
    #[error("replica is not the leader")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("membership change refused: {reason}")]
    Membership { reason: String },
    #[error("replica {id} is not a member")]
    UnknownMember { id: NodeId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub address: String,
    pub voter: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub replica_id: NodeId,
    pub leader: Option<(NodeId, String)>,
    pub term: u64,
    pub last_log_index: u64,
    pub last_applied_index: u64,
    pub snapshot_index: u64,
    pub members: Vec<MemberInfo>,
}

/// What a follower hands to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Write {
        command: Command,
        op_id: u64,
    },
    Read {
        query: Query,
    },
    /// A step of a join attempt, counted by the leader's join guards.
    JoinGuard {
        step: GuardStep,
    },
    AddMember {
        id: NodeId,
        address: String,
    },
    RemoveMember {
        id: NodeId,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // short-lived, serialised at once
pub enum OperationOutput {
    Write(Output),
    Read(QueryOutput),
    Members(Vec<MemberInfo>),
    /// `Err(ms)`: rate limited, retry after that long.
    Guard(Result<(), u64>),
}

pub struct Replica {
    pub id: NodeId,
    pub raft: Raft,
    applied: Arc<RwLock<Applied>>,
    tuning: ReplicaTuning,
    peers: Mutex<HashMap<String, RaftServiceClient<Channel>>>,
    /// Client side of the peer port: this replica's certificate.
    peer_tls: Arc<rustls::ClientConfig>,
    /// Join rate limits; consulted only while this replica leads.
    guards: Mutex<JoinGuards>,
    /// Concurrent linearizable reads share one leadership confirmation.
    reads: ReadBarrier,
    seeds: RandomState,
    /// Writes waiting to be proposed (see [`run_proposer`]).
    proposals: tokio::sync::mpsc::Sender<PendingWrite>,
    /// When a leader's append last reached this replica (the watchdog).
    pub(crate) leader_contact: super::watchdog::LeaderContact,
}

/// A client write waiting for its batch to commit.
struct PendingWrite {
    command: Command,
    op_id: u64,
    answer: tokio::sync::oneshot::Sender<Result<Output, ClusterError>>,
}

/// Writes one proposal may carry.
pub const MAX_PROPOSAL_WRITES: usize = 256;
/// Proposals in flight at once; writes arriving meanwhile wait and go
/// together in the next one.
pub const MAX_PROPOSALS_IN_FLIGHT: usize = 4;
/// Writes that may wait to be proposed before callers feel backpressure.
const PROPOSAL_QUEUE: usize = 8192;

/// Group commit: gathers the writes that arrive while earlier proposals are
/// in flight into one Raft entry (one log append, one fsync on each
/// replica, one replication round), and hands each write its own answer. A
/// lone write is proposed at once, so a single client pays no added delay.
async fn run_proposer(
    raft: Raft,
    mut rx: tokio::sync::mpsc::Receiver<PendingWrite>,
    strategy: crate::placement::Strategy,
) {
    let seeds = RandomState::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PROPOSALS_IN_FLIGHT));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_PROPOSAL_WRITES {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let now = now_ms();
        let mut answers = Vec::with_capacity(batch.len());
        let requests = batch
            .into_iter()
            .map(|w| {
                answers.push(w.answer);
                Request {
                    now_ms: now,
                    seed: seeds.hash_one((Instant::now(), w.op_id)),
                    strategy,
                    op_id: w.op_id,
                    command: w.command,
                }
            })
            .collect();
        metrics::histogram!("fjord_proposal_writes").record(answers.len() as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            let result = raft.client_write(Proposal { requests }).await;
            drop(slot);
            match result {
                Ok(resp) => {
                    for (answer, out) in answers.into_iter().zip(resp.data) {
                        let _ = answer.send(out.map_err(ClusterError::from));
                    }
                }
                Err(e) => {
                    let e = from_write_error(e);
                    for answer in answers {
                        let _ = answer.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

type WriteErr = RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>;

fn leader_hint(f: ForwardToLeader<NodeId, BasicNode>) -> ClusterError {
    ClusterError::NotLeader {
        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
    }
}

fn from_write_error(e: WriteErr) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => leader_hint(f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ClusterError::Membership {
                reason: c.to_string(),
            }
        }
        RaftError::Fatal(f) => ClusterError::Unavailable {
            reason: f.to_string(),
        },
    }
}

impl Replica {
    pub(crate) fn new(
        id: NodeId,
        raft: Raft,
        applied: Arc<RwLock<Applied>>,
        tuning: ReplicaTuning,
        peer_tls: Arc<rustls::ClientConfig>,
        join_limits: JoinLimits,
    ) -> Self {
        let (proposals, rx) = tokio::sync::mpsc::channel(PROPOSAL_QUEUE);
        tokio::spawn(run_proposer(raft.clone(), rx, tuning.strategy));
        Replica {
            leader_contact: Default::default(),
            proposals,
            id,
            raft,
            applied,
            tuning,
            peers: Mutex::default(),
            peer_tls,
            guards: Mutex::new(JoinGuards::new(&join_limits)),
            reads: ReadBarrier::default(),
            seeds: RandomState::new(),
        }
    }

    /// Commits a command through the leader and returns what `apply` answered.
    pub async fn write(&self, command: Command) -> Result<Output, ClusterError> {
        let op_id = self.seeds.hash_one((Instant::now(), self.id)).max(1);
        match self.execute(Operation::Write { command, op_id }).await? {
            OperationOutput::Write(o) => Ok(o),
            other => unreachable!("write answered with {other:?}"),
        }
    }

    /// A linearizable read: answered from a state that includes every write
    /// acknowledged before the call.
    pub async fn read(&self, query: Query) -> Result<QueryOutput, ClusterError> {
        match self.execute(Operation::Read { query }).await? {
            OperationOutput::Read(o) => Ok(o),
            other => unreachable!("read answered with {other:?}"),
        }
    }

    /// Applies a join-attempt step on the leader's guards (cluster-wide
    /// limits): `Ok(Err(ms))` means rate limited.
    pub async fn join_guard(&self, step: GuardStep) -> Result<Result<(), u64>, ClusterError> {
        match self.execute(Operation::JoinGuard { step }).await? {
            OperationOutput::Guard(r) => Ok(r),
            other => unreachable!("join guard answered {other:?}"),
        }
    }

    pub async fn add_member(
        &self,
        id: NodeId,
        address: String,
    ) -> Result<Vec<MemberInfo>, ClusterError> {
        match self.execute(Operation::AddMember { id, address }).await? {
            OperationOutput::Members(m) => Ok(m),
            other => unreachable!("add-member answered with {other:?}"),
        }
    }

    pub async fn remove_member(&self, id: NodeId) -> Result<Vec<MemberInfo>, ClusterError> {
        match self.execute(Operation::RemoveMember { id }).await? {
            OperationOutput::Members(m) => Ok(m),
            other => unreachable!("remove-member answered with {other:?}"),
        }
    }

    /// Reads this replica's applied state without a quorum round: for local
    /// decisions (lease checks, heartbeat answers) where staleness is fine.
    pub fn local_state<T>(&self, f: impl FnOnce(&crate::state::ClusterState) -> T) -> T {
        f(&self.applied.read().expect("state lock poisoned").state)
    }

    /// Waits until Raft stops on a fatal error (a storage error such as a
    /// full disk, an I/O error or a corrupt file) and says why. A replica
    /// must then exit rather than serve answers from a state that no longer
    /// advances.
    pub async fn fatal(&self) -> String {
        let mut m = self.raft.metrics();
        loop {
            if let Err(e) = &m.borrow().running_state {
                return e.to_string();
            }
            if m.changed().await.is_err() {
                return "raft stopped".into();
            }
        }
    }

    /// Ready to serve: a member of the cluster that knows its leader, with
    /// Raft running.
    pub fn is_ready(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.running_state.is_ok()
            && m.current_leader.is_some()
            && m.membership_config
                .membership()
                .nodes()
                .any(|(id, _)| *id == self.id)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// As leader: how long ago a quorum last acknowledged it (`None` when
    /// not leading or not known).
    pub fn millis_since_quorum_ack(&self) -> Option<u64> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.current_leader == Some(self.id) {
            m.millis_since_quorum_ack
        } else {
            None
        }
    }

    pub fn status(&self) -> ClusterStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| MemberInfo {
                id: *id,
                address: n.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l).map(|n| (l, n.addr.clone())));
        ClusterStatus {
            replica_id: self.id,
            leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            members,
        }
    }

    async fn execute(&self, op: Operation) -> Result<OperationOutput, ClusterError> {
        let deadline = Instant::now() + self.tuning.request_timeout;
        let mut last = String::from("no leader elected");
        loop {
            let result = match self.execute_local(&op).await {
                Err(ClusterError::NotLeader {
                    leader: Some((leader, addr)),
                }) if leader != self.id => {
                    metrics::counter!("fjord_forwarded_requests_total").increment(1);
                    match self.forward(&addr, &op).await {
                        Ok(r) => r,
                        Err(e) => {
                            last = format!("forwarding to replica {leader} at {addr}: {e}");
                            Err(ClusterError::NotLeader { leader: None })
                        }
                    }
                }
                other => other,
            };
            match result {
                Err(ClusterError::NotLeader { leader }) if Instant::now() < deadline => {
                    tracing::debug!(replica = self.id, ?leader, last = %last, "no leader answered; retrying");
                    // An election is under way or the hint was stale.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(ClusterError::NotLeader { .. }) => {
                    tracing::warn!(replica = self.id, reason = %last, "request timed out waiting for a leader");
                    return Err(ClusterError::Unavailable { reason: last });
                }
                other => return other,
            }
        }
    }

    /// Runs the operation here if this replica leads; otherwise answers
    /// `NotLeader` with the leader it knows of.
    pub(crate) async fn execute_local(
        &self,
        op: &Operation,
    ) -> Result<OperationOutput, ClusterError> {
        match op {
            Operation::Write { command, op_id } => {
                // Only the leader batches; elsewhere the caller forwards.
                let (leads, hint) = self.leadership();
                if !leads {
                    return Err(ClusterError::NotLeader { leader: hint });
                }
                let (tx, rx) = tokio::sync::oneshot::channel();
                self.proposals
                    .send(PendingWrite {
                        command: command.clone(),
                        op_id: *op_id,
                        answer: tx,
                    })
                    .await
                    .map_err(|_| ClusterError::Unavailable {
                        reason: "replica shutting down".into(),
                    })?;
                let out = tokio::time::timeout(self.tuning.attempt_timeout, rx)
                    .await
                    .map_err(|_| ClusterError::NotLeader { leader: None })?
                    .map_err(|_| ClusterError::NotLeader { leader: None })??;
                Ok(OperationOutput::Write(out))
            }
            Operation::Read { query } => {
                self.reads.confirm(&self.raft).await?;
                let out = self.local_state(|s| s.query(query, now_ms()))?;
                Ok(OperationOutput::Read(out))
            }
            Operation::JoinGuard { step } => {
                let (leads, hint) = self.leadership();
                if !leads {
                    return Err(ClusterError::NotLeader { leader: hint });
                }
                let r = self
                    .guards
                    .lock()
                    .expect("join guards poisoned")
                    .step(*step, now_ms());
                Ok(OperationOutput::Guard(r))
            }
            Operation::AddMember { id, address } => {
                self.raft
                    .add_learner(*id, BasicNode::new(address), true)
                    .await
                    .map_err(from_write_error)?;
                let mut voters: BTreeSet<NodeId> = self.voters();
                voters.insert(*id);
                self.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(from_write_error)?;
                Ok(OperationOutput::Members(self.status().members))
            }
            Operation::RemoveMember { id } => {
                let mut voters = self.voters();
                if !voters.remove(id) {
                    return Err(ClusterError::UnknownMember { id: *id });
                }
                if voters.is_empty() {
                    return Err(ClusterError::Membership {
                        reason: "cannot remove the last voter".into(),
                    });
                }
                self.raft
                    .change_membership(voters, false)
                    .await
                    .map_err(from_write_error)?;
                Ok(OperationOutput::Members(self.status().members))
            }
        }
    }

    /// Whether this replica leads, and the leader it knows of.
    fn leadership(&self) -> (bool, Option<(NodeId, String)>) {
        let m = self.raft.metrics();
        let m = m.borrow();
        let hint = m.current_leader.and_then(|l| {
            m.membership_config
                .membership()
                .get_node(&l)
                .map(|n| (l, n.addr.clone()))
        });
        (m.current_leader == Some(self.id), hint)
    }

    /// Voters and learners: the replicas whose peer calls are accepted.
    pub fn member_ids(&self) -> Vec<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Hands the operation to the leader at `addr`. Transport failures come
    /// back as `Err(String)`; the leader's own answer as `Ok`.
    async fn forward(
        &self,
        addr: &str,
        op: &Operation,
    ) -> Result<Result<OperationOutput, ClusterError>, String> {
        let mut client = {
            let mut peers = self.peers.lock().expect("peer cache poisoned");
            match peers.get(addr) {
                Some(c) => c.clone(),
                None => {
                    let c = peer_client(channel(addr, &self.peer_tls).map_err(|e| e.to_string())?);
                    peers.insert(addr.to_string(), c.clone());
                    c
                }
            }
        };
        let data = codec::encode(op).map_err(|e| e.to_string())?;
        let mut request = tonic::Request::new(RaftPayload {
            data,
            chunk: Vec::new(),
        });
        request.set_timeout(self.tuning.attempt_timeout);
        let reply = client
            .forward(request)
            .await
            .map_err(|s| s.message().to_string())?;
        codec::decode(&reply.into_inner().data).map_err(|e| e.to_string())
    }

    /// Members by id, for status output.
    pub fn members(&self) -> BTreeMap<NodeId, String> {
        self.status()
            .members
            .into_iter()
            .map(|m| (m.id, m.address))
            .collect()
    }
}

/// Read-index batching: a linearizable read needs a leadership
/// confirmation (a heartbeat round to a quorum) that *started after the read
/// arrived*. Reads that arrive while one round runs wait for the next one
/// and all share it, so N concurrent reads cost two rounds, not N (which,
/// under a join flood, starved Raft's own heartbeats).
struct ReadBarrier {
    /// Rounds started so far; a round's number is the count when it started.
    started: std::sync::atomic::AtomicU64,
    /// Held while a round runs; holds the last finished round and its result.
    last: tokio::sync::Mutex<(u64, Result<(), ClusterError>)>,
}

impl Default for ReadBarrier {
    fn default() -> Self {
        ReadBarrier {
            started: Default::default(),
            last: tokio::sync::Mutex::new((0, Ok(()))),
        }
    }
}

impl ReadBarrier {
    async fn confirm(&self, raft: &Raft) -> Result<(), ClusterError> {
        use std::sync::atomic::Ordering;
        let arrived = self.started.load(Ordering::SeqCst);
        let mut last = self.last.lock().await;
        if last.0 > arrived {
            // A round that started after this read arrived has finished.
            return last.1.clone();
        }
        let round = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = raft
            .ensure_linearizable()
            .await
            .map(|_| ())
            .map_err(|e| match e {
                RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => leader_hint(f),
                // Lost contact with a quorum: let the caller retry, maybe
                // through another leader.
                RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)) => {
                    ClusterError::NotLeader { leader: None }
                }
                RaftError::Fatal(f) => ClusterError::Unavailable {
                    reason: f.to_string(),
                },
            });
        *last = (round, result.clone());
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EndMeeting, Institution, MeetingCommand, QueryOutput};

    /// Forwarded answers cross the wire in the codec; every shape must survive it.
    #[test]
    fn forwarded_answers_round_trip() {
        let inst = Institution {
            name: "uio".into(),
            residency: "nordic".into(),
            home_region: "nordic".into(),
            max_participants: 3,
            created_at_ms: 1,
        };
        let answers: Vec<Result<OperationOutput, ClusterError>> = vec![
            Ok(OperationOutput::Write(Output::Institution(inst.clone()))),
            Ok(OperationOutput::Write(Output::None)),
            Ok(OperationOutput::Read(QueryOutput::Institutions(vec![inst]))),
            Ok(OperationOutput::Members(vec![])),
            Err(ClusterError::State(StateError::UnknownMeeting { id: 4 })),
            Err(ClusterError::NotLeader {
                leader: Some((2, "127.0.0.1:1".into())),
            }),
        ];
        for a in answers {
            let bytes = codec::encode(&a).unwrap();
            let back: Result<OperationOutput, ClusterError> = codec::decode(&bytes).unwrap();
            assert_eq!(format!("{back:?}"), format!("{a:?}"));
        }
        let op = Operation::Write {
            command: Command::Meeting(MeetingCommand::End(EndMeeting { id: 1 })),
            op_id: 9,
        };
        let back: Operation = codec::decode(&codec::encode(&op).unwrap()).unwrap();
        assert!(matches!(back, Operation::Write { op_id: 9, .. }));
    }
}

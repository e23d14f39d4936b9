//! The replicated state machine: a pure, deterministic function of the log.
//!
//! ```text
//!   leader stamps now + seed        every replica
//!   Request{now_ms, seed, cmd} ──▶ ClusterState::apply() ──▶ Response
//!                                         │
//!                                         └─ placement::place() for
//!                                            schedule / re-placement
//! ```
//!
//! `apply` never reads a clock: time and randomness travel inside the
//! [`Request`], so replicas that apply the same log end in the same state.
//! Placement runs here, inside `apply`, so a decision always sees every
//! reservation committed before it and two concurrent schedules can never
//! both take the last seat on a node.

mod command;
mod error;
mod model;

pub use command::*;
pub use error::StateError;
pub use model::*;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::placement::{self, Decision, Outcome, PlacementRequest, SplitMix64, Strategy, Trigger};

/// Node indexes run 1..=this: media nodes keep 12 bits of every track id
/// for the index (see `Node::index`).
pub const MAX_NODE_INDEX: u32 = 4095;

/// Default reservation window when a schedule names no duration.
pub const DEFAULT_MEETING_DURATION_MS: u64 = 60 * 60 * 1000;
/// How long the answers to recent writes are kept for retried duplicates:
/// callers retry a write with the same op id within their request timeout
/// (20 s by default), so two minutes cover them with room to spare.
pub const RECENT_OP_RETENTION_MS: u64 = 2 * 60 * 1000;
/// Ended meetings stay queryable this long, then are pruned from the state.
pub const ENDED_MEETING_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A command plus what the leader stamped into it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub now_ms: u64,
    pub seed: u64,
    pub strategy: Strategy,
    /// Identifies one logical write across retries (0: none). A write whose
    /// answer was lost (leader deposed mid-call) is retried with the same id
    /// and answered from [`ClusterState`]'s memory instead of applied twice.
    #[serde(default)]
    pub op_id: u64,
    pub command: Command,
}

/// What one Raft entry carries: the client writes the leader gathered while
/// earlier entries were in flight (group commit), applied in order. Each
/// keeps its own seed and op id, so a batch applies exactly as its writes
/// would one by one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    pub requests: Vec<Request>,
}

impl From<Request> for Proposal {
    fn from(r: Request) -> Self {
        Proposal { requests: vec![r] }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)] // one per applied command, moved not copied
pub enum Output {
    /// Membership changes and blank entries.
    None,
    Institution(Institution),
    Node(NodeView),
    NodesDown {
        nodes: Vec<String>,
        replaced: Vec<u64>,
    },
    Meeting(Meeting),
    Scheduled {
        meeting: Meeting,
        decision: Decision,
    },
    /// A meeting's share moved (`MoveMeeting`).
    Moved {
        meeting: Meeting,
        decision: Decision,
    },
    /// A node drained with evacuation: what moved and what stays.
    Evacuated {
        node: NodeView,
        moved: Vec<u64>,
        kept: Vec<u64>,
    },
    /// The join-token signing key in force, stored before salts (PKCS#8).
    JoinKey(Vec<u8>),
    /// The salt the join-token signing key in force derives from.
    JoinKeySalt(Vec<u8>),
}

pub type Response = Result<Output, StateError>;

/// What the state keeps of a write's answer for its retries: a meeting id
/// where the answer is a meeting (it is rebuilt from the state), the whole
/// answer only where that is small. Keeping full answers cost a copy of
/// every meeting and decision for the whole retention window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecentAnswer {
    Scheduled(u64),
    Moved(u64),
    Other(Box<Response>),
}

impl RecentAnswer {
    fn of(answer: &Response) -> RecentAnswer {
        match answer {
            Ok(Output::Scheduled { meeting, .. }) => RecentAnswer::Scheduled(meeting.id),
            Ok(Output::Moved { meeting, .. }) => RecentAnswer::Moved(meeting.id),
            other => RecentAnswer::Other(Box::new(other.clone())),
        }
    }
}

/// Linearizable reads, answered by the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Query {
    Institutions,
    Institution {
        name: String,
    },
    Nodes,
    Node {
        id: String,
    },
    Meetings {
        institution: Option<String>,
        include_ended: bool,
    },
    Meeting {
        id: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryOutput {
    Institutions(Vec<Institution>),
    Institution(Institution),
    Nodes(Vec<NodeView>),
    Node(NodeView),
    Meetings(Vec<Meeting>),
    Meeting(Meeting),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub regions: BTreeMap<String, Region>,
    pub institutions: BTreeMap<String, Institution>,
    pub nodes: NodeTable,
    pub meetings: BTreeMap<u64, Meeting>,
    pub next_meeting_id: u64,
    /// Idempotency keys of schedule requests -> the meeting they created.
    pub request_ids: BTreeMap<String, u64>,
    /// Meetings not yet ended, by window end, so expiry scans only what is due.
    open_by_end: BTreeSet<(u64, u64)>,
    /// Ended meetings by end time, for pruning.
    ended_by_time: BTreeSet<(u64, u64)>,
    /// Meetings waiting for an allowed node with room.
    unplaced: BTreeSet<u64>,
    /// Placed meetings whose shares hold fewer seats than the meeting (a
    /// lost share found no room): retried like `unplaced` ones.
    #[serde(default)]
    short: BTreeSet<u64>,
    /// Answers to recent writes by op id, compact (see [`RecentAnswer`]),
    /// and the same ids by time for pruning.
    #[serde(default)]
    recent_answers: BTreeMap<u64, RecentAnswer>,
    /// Full answers, as states written before compact answers kept them;
    /// they expire like the others.
    #[serde(default)]
    recent_ops: BTreeMap<u64, Response>,
    recent_ops_by_time: BTreeSet<(u64, u64)>,
    /// Ed25519 key (PKCS#8) that signs join tokens, in clusters created
    /// before `join_key_salt`; such a key stays in use.
    #[serde(default)]
    pub join_key: Option<Vec<u8>>,
    /// Salt of the join-signing key (derived with the key-encryption key);
    /// created once per cluster.
    #[serde(default)]
    pub join_key_salt: Option<Vec<u8>>,
    /// Last node index handed out.
    #[serde(default)]
    pub last_node_index: u32,
}

impl Default for ClusterState {
    fn default() -> Self {
        let mut regions = BTreeMap::new();
        for (name, parent) in [("eu", None), ("nordic", Some("eu"))] {
            regions.insert(
                name.to_string(),
                Region {
                    name: name.to_string(),
                    parent: parent.map(str::to_string),
                },
            );
        }
        ClusterState {
            regions,
            institutions: BTreeMap::new(),
            nodes: NodeTable::default(),
            meetings: BTreeMap::new(),
            next_meeting_id: 1,
            request_ids: BTreeMap::new(),
            open_by_end: BTreeSet::new(),
            ended_by_time: BTreeSet::new(),
            unplaced: BTreeSet::new(),
            short: BTreeSet::new(),
            recent_answers: BTreeMap::new(),
            recent_ops: BTreeMap::new(),
            recent_ops_by_time: BTreeSet::new(),
            join_key: None,
            join_key_salt: None,
            last_node_index: 0,
        }
    }
}

impl ClusterState {
    /// Applies one committed request. Errors leave the state unchanged (apart
    /// from time-driven expiry, which any command with a later `now` does).
    pub fn apply(&mut self, req: &Request) -> Response {
        self.expire_meetings(req.now_ms);
        self.expire_recent_ops(req.now_ms);
        if req.op_id != 0 {
            if let Some(answer) = self.recent_answers.get(&req.op_id) {
                return self.replay(answer);
            }
            if let Some(answer) = self.recent_ops.get(&req.op_id) {
                return answer.clone();
            }
        }
        let answer = self.apply_command(req);
        if req.op_id != 0 {
            self.recent_answers
                .insert(req.op_id, RecentAnswer::of(&answer));
            self.recent_ops_by_time.insert((req.now_ms, req.op_id));
        }
        answer
    }

    /// The answer to a retried write, rebuilt from what its first attempt
    /// kept: the meeting as it is now, with the decision that placed it.
    fn replay(&self, answer: &RecentAnswer) -> Response {
        match answer {
            RecentAnswer::Other(r) => (**r).clone(),
            RecentAnswer::Scheduled(id) => {
                let (meeting, decision) = self.meeting_with_decision(*id, |d| d.first())?;
                Ok(Output::Scheduled { meeting, decision })
            }
            RecentAnswer::Moved(id) => {
                let (meeting, decision) = self.meeting_with_decision(*id, |d| d.last())?;
                Ok(Output::Moved { meeting, decision })
            }
        }
    }

    /// A copy of meeting `id` and the decision `pick` takes from its history.
    fn meeting_with_decision(
        &self,
        id: u64,
        pick: impl FnOnce(&[Decision]) -> Option<&Decision>,
    ) -> Result<(Meeting, Decision), StateError> {
        let meeting = self
            .meetings
            .get(&id)
            .ok_or(StateError::UnknownMeeting { id })?;
        let decision = pick(&meeting.decisions)
            .cloned()
            .ok_or(StateError::UnknownMeeting { id })?;
        Ok((meeting.clone(), decision))
    }

    fn expire_recent_ops(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(RECENT_OP_RETENTION_MS);
        while let Some(&(at, id)) = self.recent_ops_by_time.first() {
            if at > horizon {
                break;
            }
            self.recent_ops_by_time.remove(&(at, id));
            self.recent_answers.remove(&id);
            self.recent_ops.remove(&id);
        }
    }

    fn apply_command(&mut self, req: &Request) -> Response {
        let mut rng = SplitMix64::new(req.seed);
        match &req.command {
            Command::Institution(InstitutionCommand::Create(c)) => {
                self.create_institution(c, req.now_ms)
            }
            Command::Node(c) => match c {
                NodeCommand::Register(c) => self.register_node(c, req, &mut rng),
                NodeCommand::Heartbeat(c) => self.heartbeat(&c.id, c.participants, req, &mut rng),
                NodeCommand::SetDraining(c) => self.set_node_draining(c, req, &mut rng),
                NodeCommand::ExpireLeases(c) => Ok(self.expire_leases(c.lease_ms, req, &mut rng)),
            },
            Command::Meeting(c) => match c {
                MeetingCommand::Schedule(c) => self.schedule_meeting(c, req, &mut rng),
                MeetingCommand::End(c) => self.end_meeting(c.id, req.now_ms),
                MeetingCommand::Move(c) => {
                    self.move_meeting(c.id, c.from.as_deref(), req, &mut rng)
                }
            },
            Command::Access(AccessCommand::InitJoinKey(c)) => Ok(self.init_join_key(c)),
        }
    }

    fn init_join_key(&mut self, InitJoinKey { pkcs8, salt }: &InitJoinKey) -> Output {
        if self.join_key.is_none() && self.join_key_salt.is_none() {
            if !salt.is_empty() {
                self.join_key_salt = Some(salt.clone());
            } else if !pkcs8.is_empty() {
                self.join_key = Some(pkcs8.clone());
            }
        }
        match (&self.join_key_salt, &self.join_key) {
            (Some(s), _) => Output::JoinKeySalt(s.clone()),
            (None, Some(k)) => Output::JoinKey(k.clone()),
            (None, None) => Output::None,
        }
    }

    fn set_node_draining(
        &mut self,
        SetNodeDraining {
            id,
            draining,
            evacuate,
        }: &SetNodeDraining,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let was_down = {
            let mut node = self
                .nodes
                .get_mut(id)
                .ok_or_else(|| StateError::UnknownNode { id: id.clone() })?;
            let was_down = node.state == NodeState::Down;
            node.state = match (*draining, node.state) {
                (true, NodeState::Down) => NodeState::Down,
                (true, _) => NodeState::Draining,
                (false, NodeState::Draining) => NodeState::Ready,
                (false, s) => s,
            };
            was_down
        };
        if !*draining && !was_down {
            self.retry_unplaced(req, rng);
        }
        if *draining && *evacuate {
            return Ok(self.evacuate(id, req, rng));
        }
        Ok(Output::Node(self.node_view(id, req.now_ms)))
    }

    /// Answers a read against the state as of `now_ms`.
    pub fn query(&self, q: &Query, now_ms: u64) -> Result<QueryOutput, StateError> {
        Ok(match q {
            Query::Institutions => {
                QueryOutput::Institutions(self.institutions.values().cloned().collect())
            }
            Query::Institution { name } => QueryOutput::Institution(
                self.institutions
                    .get(name)
                    .cloned()
                    .ok_or_else(|| StateError::UnknownInstitution { name: name.clone() })?,
            ),
            Query::Nodes => QueryOutput::Nodes(
                self.nodes
                    .keys()
                    .map(|id| self.node_view(id, now_ms))
                    .collect(),
            ),
            Query::Node { id } => {
                if !self.nodes.contains_key(id) {
                    return Err(StateError::UnknownNode { id: id.clone() });
                }
                QueryOutput::Node(self.node_view(id, now_ms))
            }
            Query::Meetings {
                institution,
                include_ended,
            } => {
                if let Some(name) = institution {
                    if !self.institutions.contains_key(name) {
                        return Err(StateError::UnknownInstitution { name: name.clone() });
                    }
                }
                QueryOutput::Meetings(
                    self.meetings
                        .values()
                        .filter(|m| *include_ended || m.state != MeetingState::Ended)
                        .filter(|m| institution.as_ref().is_none_or(|i| &m.institution == i))
                        .cloned()
                        .collect(),
                )
            }
            Query::Meeting { id } => QueryOutput::Meeting(
                self.meetings
                    .get(id)
                    .cloned()
                    .ok_or(StateError::UnknownMeeting { id: *id })?,
            ),
        })
    }

    /// The residency region and every region nested inside it.
    pub fn allowed_regions(&self, residency: &str) -> BTreeSet<String> {
        let mut allowed = BTreeSet::new();
        allowed.insert(residency.to_string());
        // Regions form a shallow tree; grow the set until it stops changing.
        loop {
            let before = allowed.len();
            for r in self.regions.values() {
                if r.parent.as_ref().is_some_and(|p| allowed.contains(p)) {
                    allowed.insert(r.name.clone());
                }
            }
            if allowed.len() == before {
                return allowed;
            }
        }
    }

    pub fn node_view(&self, id: &str, now_ms: u64) -> NodeView {
        let n = &self.nodes[id];
        NodeView {
            id: n.id.clone(),
            region: n.region.clone(),
            address: n.address.clone(),
            capacity: n.capacity,
            state: n.state,
            last_heartbeat_ms: n.last_heartbeat_ms,
            load_participants: n.load_participants,
            reserved_now: n.reserved_at(now_ms),
            meetings: n.reservations.len() as u32,
            registered_at_ms: n.registered_at_ms,
            index: n.index,
        }
    }

    fn create_institution(
        &mut self,
        CreateInstitution {
            name,
            residency,
            home_region,
            max_participants,
        }: &CreateInstitution,
        now_ms: u64,
    ) -> Response {
        let max_participants = *max_participants;
        if self.institutions.contains_key(name) {
            return Err(StateError::InstitutionExists {
                name: name.to_string(),
            });
        }
        if !self.regions.contains_key(residency) {
            return Err(StateError::UnknownRegion {
                name: residency.to_string(),
            });
        }
        let home = home_region.as_deref().unwrap_or(residency);
        if !self.allowed_regions(residency).contains(home) {
            return Err(StateError::HomeOutsideResidency {
                home: home.to_string(),
                residency: residency.to_string(),
            });
        }
        let inst = Institution {
            name: name.to_string(),
            residency: residency.to_string(),
            home_region: home.to_string(),
            max_participants,
            created_at_ms: now_ms,
        };
        self.institutions.insert(name.to_string(), inst.clone());
        Ok(Output::Institution(inst))
    }

    fn register_node(
        &mut self,
        RegisterNode {
            id,
            region,
            address,
            capacity,
            certificate,
        }: &RegisterNode,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let capacity = *capacity;
        if !self.regions.contains_key(region) {
            return Err(StateError::UnknownRegion {
                name: region.to_string(),
            });
        }
        let mut came_up = true;
        if self.nodes.contains_key(id) {
            let mut node = self.nodes.get_mut(id).expect("present");
            if &node.region != region && !node.reservations.is_empty() {
                return Err(StateError::NodeRegionChange {
                    id: id.to_string(),
                    from: node.region.clone(),
                    to: region.to_string(),
                });
            }
            let peak = node.reservations.peak_all();
            if capacity < peak {
                return Err(StateError::CapacityBelowReservations {
                    id: id.to_string(),
                    capacity,
                    reserved: peak,
                });
            }
            came_up = node.state == NodeState::Down;
            if node.index == 0 && self.last_node_index < MAX_NODE_INDEX {
                // Registered before nodes had indexes.
                self.last_node_index += 1;
                node.index = self.last_node_index;
            }
            node.region = region.to_string();
            node.address = address.to_string();
            node.capacity = capacity;
            node.certificate = certificate.to_vec();
            node.last_heartbeat_ms = req.now_ms;
            if node.state == NodeState::Down {
                node.state = NodeState::Ready;
            }
        } else {
            if self.last_node_index >= MAX_NODE_INDEX {
                return Err(StateError::TooManyNodes {
                    max: MAX_NODE_INDEX,
                });
            }
            self.last_node_index += 1;
            self.nodes.insert(Node {
                index: self.last_node_index,
                id: id.to_string(),
                region: region.to_string(),
                address: address.to_string(),
                capacity,
                state: NodeState::Ready,
                last_heartbeat_ms: req.now_ms,
                load_participants: 0,
                registered_at_ms: req.now_ms,
                certificate: certificate.to_vec(),
                reservations: Reservations::default(),
            });
        }
        if came_up {
            self.retry_unplaced(req, rng);
        }
        Ok(Output::Node(self.node_view(id, req.now_ms)))
    }

    fn heartbeat(
        &mut self,
        id: &str,
        participants: u32,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let came_back = {
            let mut node = self
                .nodes
                .get_mut(id)
                .ok_or_else(|| StateError::UnknownNode { id: id.to_string() })?;
            node.last_heartbeat_ms = node.last_heartbeat_ms.max(req.now_ms);
            node.load_participants = participants;
            // Its meetings already moved; it comes back empty and ready.
            let came_back = node.state == NodeState::Down;
            if came_back {
                node.state = NodeState::Ready;
            }
            came_back
        };
        if came_back {
            self.retry_unplaced(req, rng);
        }
        Ok(Output::Node(self.node_view(id, req.now_ms)))
    }

    fn expire_leases(&mut self, lease_ms: u64, req: &Request, rng: &mut SplitMix64) -> Output {
        let expired: Vec<String> = self
            .nodes
            .values()
            .filter(|n| n.state != NodeState::Down)
            .filter(|n| req.now_ms.saturating_sub(n.last_heartbeat_ms) >= lease_ms)
            .map(|n| n.id.clone())
            .collect();
        // Mark every expired node down before re-placing anything, so no
        // orphan lands on a node that is about to be declared down too.
        let mut orphans: Vec<(u64, String)> = Vec::new();
        for id in &expired {
            let mut node = self.nodes.get_mut(id).expect("listed above");
            node.state = NodeState::Down;
            node.load_participants = 0;
            orphans.extend(node.reservations.keys().map(|m| (*m, id.clone())));
        }
        orphans.sort();
        let mut replaced = Vec::new();
        for (meeting_id, node) in orphans {
            let trigger = Trigger::NodeDown { node: node.clone() };
            if self.replace_share(meeting_id, &node, trigger, req, rng) {
                replaced.push(meeting_id);
            }
        }
        Output::NodesDown {
            nodes: expired,
            replaced,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn schedule_meeting(
        &mut self,
        ScheduleMeeting {
            request_id,
            institution,
            participants,
            start_ms: requested_start,
            duration_ms,
            access,
        }: &ScheduleMeeting,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let (request_id, participants, duration_ms) =
            (request_id.as_deref(), *participants, *duration_ms);
        if let Some((key, existing)) =
            request_id.and_then(|r| self.request_ids.get(r).map(|m| (r, m)))
        {
            // A retried request: answer with what the first attempt did, but
            // only if it is the same request; a key reused for another one
            // is refused, never answered with the first meeting's secrets.
            let first = &self.meetings[existing];
            let same = &first.institution == institution
                && first.participants == participants
                && first.access.settings == access.settings
                && requested_start.is_none_or(|s| s == first.start_ms)
                && (duration_ms == 0 || duration_ms == first.end_ms.saturating_sub(first.start_ms));
            if !same {
                return Err(StateError::RequestIdReused {
                    key: key.to_string(),
                });
            }
            let (meeting, decision) = self.meeting_with_decision(*existing, |d| d.first())?;
            return Ok(Output::Scheduled { meeting, decision });
        }
        let start_ms = requested_start.unwrap_or(req.now_ms);
        let inst =
            self.institutions
                .get(institution)
                .ok_or_else(|| StateError::UnknownInstitution {
                    name: institution.to_string(),
                })?;
        if participants > inst.max_participants {
            return Err(StateError::TooManyParticipants {
                requested: participants,
                max: inst.max_participants,
            });
        }
        let duration_ms = if duration_ms == 0 {
            DEFAULT_MEETING_DURATION_MS
        } else {
            duration_ms
        };
        let end_ms = start_ms.saturating_add(duration_ms);
        if end_ms <= req.now_ms {
            return Err(StateError::WindowInPast { end_ms });
        }
        let allowed = self.allowed_regions(&inst.residency);
        let decision = placement::place(
            &PlacementRequest {
                participants,
                start_ms: start_ms.max(req.now_ms),
                end_ms,
                now_ms: req.now_ms,
                allowed_regions: &allowed,
                home_region: &inst.home_region,
                strategy: req.strategy,
                trigger: Trigger::Scheduled,
                exclude: None,
            },
            &self.nodes,
            rng,
        );
        if let Outcome::Refused { refusal } = &decision.outcome {
            return Err(StateError::NoCapacity {
                refusal: refusal.clone(),
                decision: Box::new(decision),
            });
        }
        let shares = shares_of(&decision, participants);
        let id = self.next_meeting_id;
        self.next_meeting_id += 1;
        let meeting = Meeting {
            id,
            institution: institution.to_string(),
            participants,
            start_ms,
            end_ms,
            state: MeetingState::Placed,
            shares,
            created_at_ms: req.now_ms,
            ended_at_ms: None,
            request_id: request_id.map(str::to_string),
            decisions: vec![decision.clone()],
            access: access.clone(),
        };
        if let Some(r) = request_id {
            self.request_ids.insert(r.to_string(), id);
        }
        self.meetings.insert(id, meeting);
        self.open_by_end.insert((end_ms, id));
        self.reserve(id);
        Ok(Output::Scheduled {
            meeting: self.meetings[&id].clone(),
            decision,
        })
    }

    /// A meeting that exists and has not ended.
    fn open_meeting(&self, id: u64) -> Result<&Meeting, StateError> {
        let m = self
            .meetings
            .get(&id)
            .ok_or(StateError::UnknownMeeting { id })?;
        if m.state == MeetingState::Ended {
            return Err(StateError::MeetingEnded { id });
        }
        Ok(m)
    }

    fn end_meeting(&mut self, id: u64, now_ms: u64) -> Response {
        self.open_meeting(id)?;
        self.finish(id, now_ms);
        Ok(Output::Meeting(self.meetings[&id].clone()))
    }

    /// Ends meetings whose window has passed and prunes long-ended ones.
    fn expire_meetings(&mut self, now_ms: u64) {
        while let Some(&(end, id)) = self.open_by_end.first() {
            if end > now_ms {
                break;
            }
            self.finish(id, end);
        }
        let horizon = now_ms.saturating_sub(ENDED_MEETING_RETENTION_MS);
        while let Some(&(ended, id)) = self.ended_by_time.first() {
            if ended > horizon {
                break;
            }
            self.ended_by_time.remove(&(ended, id));
            if let Some(m) = self.meetings.remove(&id) {
                if let Some(r) = m.request_id {
                    self.request_ids.remove(&r);
                }
            }
        }
    }

    fn finish(&mut self, id: u64, at_ms: u64) {
        self.release(id);
        self.unplaced.remove(&id);
        self.short.remove(&id);
        let m = self.meetings.get_mut(&id).expect("caller checked");
        self.open_by_end.remove(&(m.end_ms, id));
        m.state = MeetingState::Ended;
        m.shares.clear();
        m.ended_at_ms = Some(at_ms);
        self.ended_by_time.insert((at_ms, id));
    }

    /// Places a meeting that has no node (lost it, or never had room).
    /// Returns whether it found one.
    fn try_place(
        &mut self,
        id: u64,
        trigger: Trigger,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> bool {
        let participants = self.meetings[&id].participants;
        let decision = self.decide(id, participants, trigger, None, req, rng);
        let shares = shares_of(&decision, participants);
        let m = self.meetings.get_mut(&id).expect("looked up above");
        m.record_decision(decision);
        if shares.is_empty() {
            m.shares.clear();
            m.state = MeetingState::Unplaced;
            self.unplaced.insert(id);
            false
        } else {
            m.shares = shares;
            m.state = MeetingState::Placed;
            self.unplaced.remove(&id);
            self.reserve(id);
            true
        }
    }

    /// Runs placement for `participants` of meeting `id` against the nodes
    /// as they stand (the meeting's other shares keep their reservations).
    fn decide(
        &self,
        id: u64,
        participants: u32,
        trigger: Trigger,
        exclude: Option<&str>,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Decision {
        let m = &self.meetings[&id];
        let inst = &self.institutions[&m.institution];
        let allowed = self.allowed_regions(&inst.residency);
        placement::place(
            &PlacementRequest {
                participants,
                start_ms: m.start_ms.max(req.now_ms),
                end_ms: m.end_ms,
                now_ms: req.now_ms,
                allowed_regions: &allowed,
                home_region: &inst.home_region,
                strategy: req.strategy,
                trigger,
                exclude,
            },
            &self.nodes,
            rng,
        )
    }

    /// Re-places the share of meeting `id` held by `node` (which is down,
    /// or being evacuated). The other shares stay where they are; the new
    /// share(s) merge into them when placement picks one of their nodes.
    /// When nothing has room the share is dropped: a meeting left with no
    /// share waits in `unplaced`, one with others runs on smaller. Returns
    /// whether the share found a new home.
    fn replace_share(
        &mut self,
        id: u64,
        node: &str,
        trigger: Trigger,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> bool {
        let Some(share) = self.meetings[&id].share_on(node).cloned() else {
            return false;
        };
        let decision = self.decide(id, share.participants, trigger, None, req, rng);
        self.apply_share_decision(id, node, decision)
    }

    /// Swaps the share on `node` for what `decision` chose.
    fn apply_share_decision(&mut self, id: u64, node: &str, decision: Decision) -> bool {
        let participants = self.meetings[&id]
            .share_on(node)
            .map_or(0, |s| s.participants);
        let new = shares_of(&decision, participants);
        self.release(id);
        let m = self.meetings.get_mut(&id).expect("caller checked");
        m.record_decision(decision);
        m.shares.retain(|s| s.node != node);
        self.merge_shares(id, &new);
        !new.is_empty()
    }

    /// Adds `new` to the meeting's shares (into a share on the same node
    /// when there is one), then books the reservations and notes whether
    /// the meeting is short of seats or has no node at all. The meeting's
    /// reservations must have been released first.
    fn merge_shares(&mut self, id: u64, new: &[Share]) {
        let m = self.meetings.get_mut(&id).expect("caller checked");
        for s in new {
            match m.shares.iter_mut().find(|o| o.node == s.node) {
                Some(o) => o.participants += s.participants,
                None => m.shares.push(s.clone()),
            }
        }
        let seats: u32 = m.shares.iter().map(|s| s.participants).sum();
        if m.shares.is_empty() {
            m.state = MeetingState::Unplaced;
            self.unplaced.insert(id);
            self.short.remove(&id);
            return;
        }
        if seats < m.participants {
            self.short.insert(id);
        } else {
            self.short.remove(&id);
        }
        self.reserve(id);
    }

    fn move_meeting(
        &mut self,
        id: u64,
        from: Option<&str>,
        req: &Request,
        rng: &mut SplitMix64,
    ) -> Response {
        let m = self.open_meeting(id)?;
        let from = match from {
            Some(f) => f.to_string(),
            None if m.is_cascaded() => return Err(StateError::NameTheShare { id }),
            None => m
                .node()
                .ok_or(StateError::MeetingUnplaced { id })?
                .to_string(),
        };
        let Some(share) = m.share_on(&from) else {
            return Err(StateError::NotOnNode { id, node: from });
        };
        let trigger = Trigger::Move { node: from.clone() };
        let decision = self.decide(id, share.participants, trigger, Some(&from), req, rng);
        if let Outcome::Refused { refusal } = &decision.outcome {
            return Err(StateError::NoCapacity {
                refusal: refusal.clone(),
                decision: Box::new(decision),
            });
        }
        self.apply_share_decision(id, &from, decision);
        let meeting = self.meetings[&id].clone();
        let decision = meeting.decisions.last().expect("just pushed").clone();
        Ok(Output::Moved { meeting, decision })
    }

    /// Moves every meeting share off a node that was just set draining.
    fn evacuate(&mut self, node: &str, req: &Request, rng: &mut SplitMix64) -> Output {
        let ids: Vec<u64> = self.nodes[node].reservations.keys().copied().collect();
        let (mut moved, mut kept) = (Vec::new(), Vec::new());
        for id in ids {
            let share = self.meetings[&id]
                .share_on(node)
                .cloned()
                .expect("reserved");
            let trigger = Trigger::Evacuate {
                node: node.to_string(),
            };
            let decision = self.decide(id, share.participants, trigger, None, req, rng);
            if matches!(decision.outcome, Outcome::Refused { .. }) {
                // Nowhere to go: it finishes here, as a plain drain allows.
                let m = self.meetings.get_mut(&id).expect("listed");
                m.record_decision(decision);
                kept.push(id);
            } else {
                self.apply_share_decision(id, node, decision);
                moved.push(id);
            }
        }
        Output::Evacuated {
            node: self.node_view(node, req.now_ms),
            moved,
            kept,
        }
    }

    fn retry_unplaced(&mut self, req: &Request, rng: &mut SplitMix64) {
        let waiting: Vec<u64> = self.unplaced.iter().copied().collect();
        for id in waiting {
            self.try_place(id, Trigger::Retry, req, rng);
        }
        // Cascades running short of seats get the missing ones back when a
        // node has room; only a success is recorded as a decision, so a
        // meeting waiting for long does not pile up refusals.
        let short: Vec<u64> = self.short.iter().copied().collect();
        for id in short {
            let m = &self.meetings[&id];
            let missing = m.participants - m.shares.iter().map(|s| s.participants).sum::<u32>();
            let decision = self.decide(id, missing, Trigger::Retry, None, req, rng);
            let new = shares_of(&decision, missing);
            if !new.is_empty() {
                self.release(id);
                self.meetings
                    .get_mut(&id)
                    .expect("listed")
                    .decisions
                    .push(decision);
                self.merge_shares(id, &new);
            }
        }
    }

    /// Records the meeting's reservation on each node holding a share.
    fn reserve(&mut self, id: u64) {
        let m = &self.meetings[&id];
        for share in &m.shares {
            self.nodes
                .get_mut(&share.node)
                .expect("placement chose an existing node")
                .reservations
                .insert(
                    id,
                    Reservation {
                        start_ms: m.start_ms,
                        end_ms: m.end_ms,
                        participants: share.participants,
                    },
                );
        }
    }

    /// Drops the meeting's reservations from every node holding a share.
    fn release(&mut self, id: u64) {
        for share in &self.meetings[&id].shares {
            if let Some(mut node) = self.nodes.get_mut(&share.node) {
                node.reservations.remove(&id);
            }
        }
    }

    /// Checks the invariants the rest of the system relies on. Used by tests;
    /// cheap enough to run after every command there.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.nodes.check_rows()?;
        for m in self.meetings.values() {
            let inst = self
                .institutions
                .get(&m.institution)
                .ok_or_else(|| format!("meeting {} of unknown institution", m.id))?;
            let allowed = self.allowed_regions(&inst.residency);
            match (m.state, m.shares.is_empty()) {
                (MeetingState::Placed, false) => {}
                (MeetingState::Placed, true) => {
                    return Err(format!("placed meeting {} has no node", m.id))
                }
                (_, false) => return Err(format!("meeting {} not placed but has a node", m.id)),
                _ => {}
            }
            let mut seen = BTreeSet::new();
            let mut total = 0u32;
            for share in &m.shares {
                let node = self
                    .nodes
                    .get(&share.node)
                    .ok_or_else(|| format!("meeting {} on unknown node {}", m.id, share.node))?;
                if !allowed.contains(&node.region) {
                    return Err(format!(
                        "meeting {} of {} (residency {}) placed on {} in {}",
                        m.id, inst.name, inst.residency, node.id, node.region
                    ));
                }
                if !node.reservations.contains_key(&m.id) {
                    return Err(format!(
                        "meeting {} has no reservation on {}",
                        m.id, node.id
                    ));
                }
                if !seen.insert(&share.node) || share.participants == 0 {
                    return Err(format!("meeting {} has a bad share {share:?}", m.id));
                }
                total += share.participants;
            }
            if total > m.participants {
                return Err(format!(
                    "meeting {} shares hold {total} of {} participants",
                    m.id, m.participants
                ));
            }
            let short = m.state == MeetingState::Placed && total < m.participants;
            if short != self.short.contains(&m.id) {
                return Err(format!(
                    "meeting {} holds {total} of {} seats but short={}",
                    m.id,
                    m.participants,
                    self.short.contains(&m.id)
                ));
            }
            for d in &m.decisions {
                for region in d.chosen_regions() {
                    if !allowed.contains(region) {
                        return Err(format!(
                            "decision for {} chose {:?} in {region}",
                            m.id,
                            d.chosen()
                        ));
                    }
                }
            }
        }
        for node in self.nodes.values() {
            for (id, r) in &node.reservations {
                let m = self
                    .meetings
                    .get(id)
                    .ok_or_else(|| format!("{} reserves for missing meeting {id}", node.id))?;
                if m.share_on(&node.id).map(|s| s.participants) != Some(r.participants) {
                    return Err(format!("{} holds a stale reservation for {id}", node.id));
                }
            }
            let peak = node.peak_reserved(0, u64::MAX);
            if peak > node.capacity {
                return Err(format!(
                    "{} reserved {peak} participants at once, capacity {}",
                    node.id, node.capacity
                ));
            }
        }
        Ok(())
    }
}

/// The shares a decision assigns, in the meeting's form.
fn shares_of(decision: &Decision, participants: u32) -> Vec<Share> {
    decision
        .shares(participants)
        .into_iter()
        .map(|s| Share {
            node: s.node,
            participants: s.participants,
        })
        .collect()
}

#[cfg(test)]
mod tests;

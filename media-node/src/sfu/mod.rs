//! The forwarding core: rooms, participants, tracks, subscriptions and the
//! meeting-security policy, with no sockets and no clock.
//!
//! ```text
//!  transport shell (node/)                 Sfu<H>
//!  new QUIC connection ─────────────▶ connect(conn, handle, source)
//!  control message ─────────────────▶ control(now, conn, msg) ──▶ [Output]
//!  datagram ────────────────────────▶ route(conn, bytes) ──▶ Arc<[H]> to send to
//!  connection lost ─────────────────▶ disconnect(conn) ──▶ [Output]
//!  control-plane heartbeat answer ──▶ sync_assignments(now, …) ──▶ [Output]
//!  cascade link to a peer node ─────▶ connect_link / link_control ──▶ [Output]
//! ```
//!
//! A cascaded meeting (M4) has a room on each of its nodes. Rooms learn of
//! each other's participants and tracks over the node-to-node links, and a
//! link is just another subscriber of every *local* track of the meeting:
//! each datagram crosses each link once, whatever the number of subscribers
//! behind it. Tracks that arrived over a link are forwarded to local
//! participants only (split horizon), so there are no loops.
//!
//! `H` is whatever the shell needs to send a datagram (a QUIC connection);
//! the core only stores and hands it back. Payloads are never parsed, so
//! end-to-end encrypted media is forwarded byte for byte (S8).

mod cascade;
mod room;
#[cfg(test)]
mod tests;
pub mod usage;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use fjord_common::ratelimit::{KeyedLimiter, Rate};
use fjord_common::token::{is_probe_meeting, verify_token, TokenError};
use fjord_proto::v1 as pb;
use pb::client_message::Msg as In;
use pb::server_message::Msg as OutMsg;

use crate::wire::{MediaHeader, WireError};
pub use room::{Admission, Recording, Room, RoomTerms, TimeLimit};
pub use usage::{ConnectionRecord, UsageRecord};

pub type ConnId = u64;

/// A change to one member's state that every node of a cascade hears of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberChange {
    Muted(bool),
    CanShareScreen(bool),
}

/// Track ids: the node index above this bit, a per-node counter below.
pub const TRACK_INDEX_SHIFT: u32 = 20;
const TRACK_COUNTER_MASK: u32 = (1 << TRACK_INDEX_SHIFT) - 1;
/// How long a moved room keeps forwarding while its participants switch.
pub const MOVE_GRACE_MS: u64 = 10_000;
/// A room the control plane stops listing (not moved) has ended once it is
/// missing from two updates at least this far apart.
pub const ENDED_AFTER_MS: u64 = 1_000;
/// How often the shell calls [`Sfu::tick`].
pub const TICK_MS: u64 = 250;
/// Why a session closes when the meeting reached its time limit.
pub const TIME_LIMIT_REASON: &str = "time_limit";

#[derive(Debug, Clone)]
pub struct SfuConfig {
    pub node_id: String,
    pub max_tracks_per_participant: usize,
    /// Join attempts per source address (S9).
    pub joins_per_source: Rate,
    /// Joins with a valid token per meeting (S9); garbage never counts.
    pub joins_per_meeting: Rate,
    /// Control messages one participant connection may send; a connection
    /// that floods (mute, rename, subscribe at line rate) is closed, and
    /// nobody else is.
    pub control_per_connection: Rate,
    /// Connections that have not joined yet; more are closed at once.
    pub max_unjoined_connections: usize,
}

impl SfuConfig {
    pub fn new(node_id: impl Into<String>) -> Self {
        SfuConfig {
            node_id: node_id.into(),
            max_tracks_per_participant: 4,
            joins_per_source: Rate {
                burst: 200,
                per_second: 50.0,
            },
            joins_per_meeting: Rate {
                burst: 1000,
                per_second: 200.0,
            },
            control_per_connection: Rate {
                burst: 100,
                per_second: 20.0,
            },
            max_unjoined_connections: 1000,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.node_id.is_empty() {
            return Err("node id must not be empty".into());
        }
        if self.max_tracks_per_participant == 0 {
            return Err("max tracks per participant must be at least 1".into());
        }
        if self.max_unjoined_connections == 0 {
            return Err("max unjoined connections must be at least 1".into());
        }
        self.joins_per_source.validate("joins per source")?;
        self.joins_per_meeting.validate("joins per meeting")?;
        self.control_per_connection
            .validate("control messages per connection")
    }
}

/// What the shell must do after a call into the core.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Send(ConnId, pb::ServerMessage),
    /// A message on a cascade link's control stream.
    SendLink(ConnId, pb::LinkMessage),
    /// Send nothing more and close the connection.
    Close(ConnId, String),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed(WireError),
    UnknownTrack,
    NotOwner,
    /// Audio of a muted participant, or a screen share no longer allowed.
    Disabled,
}

/// Counts kept by the core; the shell exports them as metrics and reports
/// load to the control plane from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub datagrams_in: u64,
    /// Datagram copies handed out for sending (one per subscriber).
    pub datagrams_out: u64,
    pub dropped_malformed: u64,
    pub dropped_unknown_track: u64,
    pub dropped_not_owner: u64,
    pub dropped_disabled: u64,
    pub control_in: u64,
    pub control_malformed: u64,
    pub joins_admitted: u64,
    pub joins_waiting: u64,
    pub joins_refused: u64,
    pub actions_refused: u64,
    /// Datagram copies handed out for sending over cascade links.
    pub link_datagrams_out: u64,
    /// Datagrams that arrived over cascade links and were routed.
    pub link_datagrams_in: u64,
    pub link_control_malformed: u64,
    /// Link messages about a meeting the control plane did not assign to
    /// both nodes: dropped.
    pub link_control_unassigned: u64,
    /// Participant connections closed for flooding control messages.
    pub control_flood_closed: u64,
    /// Connections closed at once: too many had not joined.
    pub connections_refused: u64,
    /// Meetings ended at their licence's time limit.
    pub time_limit_ends: u64,
}

/// The datagram-path counters: atomics, so that routing takes `&self` and
/// the shell can route on every core at once under a shared lock.
#[derive(Debug, Default)]
struct DatagramCounters {
    datagrams_in: AtomicU64,
    datagrams_out: AtomicU64,
    dropped_malformed: AtomicU64,
    dropped_unknown_track: AtomicU64,
    dropped_not_owner: AtomicU64,
    dropped_disabled: AtomicU64,
    link_datagrams_out: AtomicU64,
    link_datagrams_in: AtomicU64,
}

/// A copy holds the counts at the moment of copying.
impl Clone for DatagramCounters {
    fn clone(&self) -> Self {
        let copy = |c: &AtomicU64| AtomicU64::new(c.load(Ordering::Relaxed));
        DatagramCounters {
            datagrams_in: copy(&self.datagrams_in),
            datagrams_out: copy(&self.datagrams_out),
            dropped_malformed: copy(&self.dropped_malformed),
            dropped_unknown_track: copy(&self.dropped_unknown_track),
            dropped_not_owner: copy(&self.dropped_not_owner),
            dropped_disabled: copy(&self.dropped_disabled),
            link_datagrams_out: copy(&self.link_datagrams_out),
            link_datagrams_in: copy(&self.link_datagrams_in),
        }
    }
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

#[derive(Clone)]
struct Conn<H> {
    handle: H,
    source: IpAddr,
    /// (meeting, participant) once joined.
    member: Option<(u64, u64)>,
    /// Set when this is a cascade link to another node.
    link: Option<cascade::Link>,
    /// Control-message budget: tokens left and when last refilled.
    budget: (f64, u64),
    /// Closed for flooding; further messages are ignored.
    closing: bool,
}

impl<H> Conn<H> {
    fn new(handle: H, source: IpAddr, link: Option<cascade::Link>) -> Self {
        Conn {
            handle,
            source,
            member: None,
            link,
            budget: (f64::INFINITY, 0),
            closing: false,
        }
    }

    /// Takes a token of the control budget; `false` when it is spent.
    fn spend(&mut self, rate: Rate, now_ms: u64) -> bool {
        let (tokens, at) = self.budget;
        let refilled = (tokens + now_ms.saturating_sub(at) as f64 / 1000.0 * rate.per_second)
            .min(f64::from(rate.burst));
        if refilled < 1.0 {
            self.budget = (refilled, now_ms);
            return false;
        }
        self.budget = (refilled - 1.0, now_ms);
        true
    }
}

#[derive(Clone)]
struct Track<H> {
    meeting: u64,
    owner_conn: ConnId,
    owner: u64,
    kind: pb::TrackKind,
    enabled: bool,
    subscriber_conns: BTreeSet<ConnId>,
    /// Rebuilt whenever `subscriber_conns` changes, so the datagram path
    /// only clones an `Arc`.
    subscribers: Arc<[H]>,
    /// How many of the subscribers are cascade links.
    link_subscribers: u32,
    /// Arrived over a cascade link (owner_conn is the link).
    remote: bool,
}

/// Cloneable so that a fuzzer (or a test) can start many runs from one
/// prepared state without paying for the joins again.
#[derive(Clone)]
pub struct Sfu<H> {
    config: SfuConfig,
    join_key: Option<Vec<u8>>,
    /// The node is shutting down: running meetings go on, no room opens.
    shutting_down: bool,
    rooms: HashMap<u64, Room>,
    /// Meetings this node ended at their time limit: joins are refused
    /// while the control plane still lists them.
    timed_out: HashSet<u64>,
    conns: HashMap<ConnId, Conn<H>>,
    tracks: HashMap<u32, Track<H>>,
    next_track: u32,
    /// This node's cluster index: the top bits of every local track id.
    node_index: u32,
    /// Meetings placed here and the peers each is cascaded with.
    assignments: HashMap<u64, BTreeSet<String>>,
    /// Connections that are cascade links.
    link_conns: BTreeSet<ConnId>,
    /// Participant connections that have not joined yet (capped).
    unjoined: HashSet<ConnId>,
    joins_by_source: KeyedLimiter<IpAddr>,
    joins_by_meeting: KeyedLimiter<u64>,
    counters: Counters,
    datagram_counters: DatagramCounters,
    out: Vec<Output>,
    /// The latest time an input carried.
    now_ms: u64,
    /// Usage recorded since the shell last took it.
    usage: Vec<UsageRecord>,
    /// Per meeting, the minute of receive reports being summed.
    quality: HashMap<u64, usage::QualityAccumulator>,
    /// Who connected with what name from where, for the node-local
    /// connection log (never reported anywhere).
    connections: Vec<ConnectionRecord>,
}

fn msg(m: OutMsg) -> pb::ServerMessage {
    pb::ServerMessage { msg: Some(m) }
}

fn refused(action: &str, reason: impl Into<String>) -> OutMsg {
    OutMsg::Refused(pb::Refused {
        action: action.into(),
        reason: reason.into(),
    })
}

impl<H: Clone> Sfu<H> {
    pub fn new(config: SfuConfig) -> Self {
        Sfu {
            joins_by_source: KeyedLimiter::new(config.joins_per_source, 100_000),
            joins_by_meeting: KeyedLimiter::new(config.joins_per_meeting, 100_000),
            config,
            join_key: None,
            shutting_down: false,
            timed_out: HashSet::new(),
            rooms: HashMap::new(),
            conns: HashMap::new(),
            tracks: HashMap::new(),
            next_track: 1,
            node_index: 0,
            assignments: HashMap::new(),
            link_conns: BTreeSet::new(),
            unjoined: HashSet::new(),
            counters: Counters::default(),
            datagram_counters: DatagramCounters::default(),
            out: Vec::new(),
            now_ms: 0,
            usage: Vec::new(),
            quality: HashMap::new(),
            connections: Vec::new(),
        }
    }

    /// Connections recorded since the last call: the shell appends them to
    /// the node's own connection log.
    pub fn take_connections(&mut self) -> Vec<ConnectionRecord> {
        let mut c = std::mem::take(&mut self.connections);
        c.retain(|r| !is_probe_meeting(r.meeting));
        c
    }

    /// Usage recorded since the last call (joins and leaves, in order):
    /// the shell journals and reports it. The control plane's probe joins
    /// are nobody's usage and are left out.
    pub fn take_usage(&mut self) -> Vec<UsageRecord> {
        let mut u = std::mem::take(&mut self.usage);
        u.retain(|r| !is_probe_meeting(r.meeting));
        u
    }

    /// Notes how a join with a valid token went, for the join SLIs.
    fn record_join_attempt(&mut self, meeting: u64, pid: u64, ok: bool, issued_at_ms: u64) {
        let latency = self.now_ms.saturating_sub(issued_at_ms);
        self.usage.push(UsageRecord {
            at_ms: self.now_ms,
            meeting,
            participant: pid,
            joined: false,
            features: 0,
            reason: "",
            quality: None,
            join: Some(usage::JoinAttempt {
                ok,
                latency_ms: latency.min(u64::from(u32::MAX)) as u32,
            }),
        });
    }

    /// The control plane's join-token public key, learned at registration.
    pub fn set_join_key(&mut self, key: Vec<u8>) {
        self.join_key = Some(key);
    }

    /// The node's cluster index, learned at registration. Track ids are
    /// `index << TRACK_INDEX_SHIFT | counter`, unique across a cascade.
    pub fn set_node_index(&mut self, index: u32) {
        self.node_index = index & 0xfff;
    }

    /// Meetings with a room open here.
    /// The meetings open here (the control plane's probe rooms are not
    /// meetings and are left out).
    pub fn room_ids(&self) -> Vec<u64> {
        self.rooms
            .keys()
            .copied()
            .filter(|m| !is_probe_meeting(*m))
            .collect()
    }

    /// From now on only rooms already open take joins; participants of
    /// other meetings are told to join again and be placed elsewhere.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    /// A snapshot of every counter.
    /// Shutting down: no new rooms.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    pub fn counters(&self) -> Counters {
        let d = &self.datagram_counters;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Counters {
            datagrams_in: get(&d.datagrams_in),
            datagrams_out: get(&d.datagrams_out),
            dropped_malformed: get(&d.dropped_malformed),
            dropped_unknown_track: get(&d.dropped_unknown_track),
            dropped_not_owner: get(&d.dropped_not_owner),
            dropped_disabled: get(&d.dropped_disabled),
            link_datagrams_out: get(&d.link_datagrams_out),
            link_datagrams_in: get(&d.link_datagrams_in),
            ..self.counters.clone()
        }
    }

    /// Participants in rooms (admitted or waiting). Probe joins are not
    /// load: counting them would steer placement away from probed nodes.
    pub fn participants(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.member.is_some_and(|(m, _)| !is_probe_meeting(m)))
            .count()
    }

    pub fn tracks(&self) -> usize {
        self.tracks.len()
    }

    pub fn rooms(&self) -> usize {
        self.rooms.keys().filter(|m| !is_probe_meeting(**m)).count()
    }

    pub fn room(&self, meeting: u64) -> Option<&Room> {
        self.rooms.get(&meeting)
    }

    // ---- connections ----

    /// A participant connection is up. Past the cap on connections that
    /// have not joined, it is closed at once (the answer says so).
    pub fn connect(&mut self, conn: ConnId, handle: H, source: IpAddr) -> Vec<Output> {
        if self.unjoined.len() >= self.config.max_unjoined_connections {
            self.counters.connections_refused += 1;
            self.out.push(Output::Close(
                conn,
                "too many connections waiting to join; retry later".into(),
            ));
            return std::mem::take(&mut self.out);
        }
        self.unjoined.insert(conn);
        self.conns.insert(conn, Conn::new(handle, source, None));
        Vec::new()
    }

    /// The connection is gone (closed, timed out). A host who vanishes
    /// without handing over passes the role to the longest-present member,
    /// so no meeting is left without one.
    pub fn disconnect(&mut self, now_ms: u64, conn: ConnId) -> Vec<Output> {
        self.disconnect_at(now_ms, now_ms, conn)
    }

    /// [`Sfu::disconnect`] of a connection last heard at `last_heard_ms`
    /// (one that timed out): the participant's stay, in the usage journal,
    /// ends then, not when the silence was noticed. A node resumed from a
    /// pause notices late, and would otherwise bill the time it was not
    /// serving anyone.
    pub fn disconnect_at(&mut self, now_ms: u64, last_heard_ms: u64, conn: ConnId) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        self.unjoined.remove(&conn);
        if let Some(c) = self.conns.get(&conn) {
            let is_link = c.link.is_some();
            if let Some((meeting, pid)) = c.member {
                let admitted_ms = self
                    .rooms
                    .get(&meeting)
                    .and_then(|r| r.members.get(&pid))
                    .map_or(self.now_ms, |m| m.admitted_ms);
                let journaled = self.usage.len();
                self.remove_member(meeting, pid, true, usage::LEFT);
                if let Some(left) = self
                    .usage
                    .get_mut(journaled)
                    .filter(|r| r.participant == pid && !r.joined)
                {
                    left.at_ms = last_heard_ms.clamp(admitted_ms, self.now_ms);
                }
            }
            if is_link {
                self.link_lost(conn);
                self.link_conns.remove(&conn);
            }
        }
        self.conns.remove(&conn);
        std::mem::take(&mut self.out)
    }

    // ---- media ----

    /// Where a datagram from `conn` goes. Only the header is read; takes
    /// `&self`, so datagrams from different connections route in parallel.
    pub fn route(&self, conn: ConnId, d: &[u8]) -> Result<Arc<[H]>, DropReason> {
        let c = &self.datagram_counters;
        let r = self.route_inner(conn, d);
        // Counted together after routing, so a snapshot taken meanwhile
        // sees a datagram with all its copies or not at all (nearly: the
        // adds are separate, nanoseconds apart).
        bump(&c.datagrams_in, 1);
        match &r {
            Ok((subs, links, remote)) => {
                bump(&c.datagrams_out, subs.len() as u64);
                bump(&c.link_datagrams_out, u64::from(*links));
                bump(&c.link_datagrams_in, u64::from(*remote));
            }
            Err(DropReason::Malformed(_)) => bump(&c.dropped_malformed, 1),
            Err(DropReason::UnknownTrack) => bump(&c.dropped_unknown_track, 1),
            Err(DropReason::NotOwner) => bump(&c.dropped_not_owner, 1),
            Err(DropReason::Disabled) => bump(&c.dropped_disabled, 1),
        }
        r.map(|(subs, _, _)| subs)
    }

    fn route_inner(&self, conn: ConnId, d: &[u8]) -> Result<(Arc<[H]>, u32, bool), DropReason> {
        let h = MediaHeader::parse(d).map_err(DropReason::Malformed)?;
        let t = self.tracks.get(&h.track).ok_or(DropReason::UnknownTrack)?;
        if t.owner_conn != conn {
            return Err(DropReason::NotOwner);
        }
        if !t.enabled {
            return Err(DropReason::Disabled);
        }
        Ok((t.subscribers.clone(), t.link_subscribers, t.remote))
    }

    // ---- control ----

    /// A control frame that did not decode.
    pub fn malformed_control(&mut self, conn: ConnId) -> Vec<Output> {
        self.counters.control_in += 1;
        self.counters.control_malformed += 1;
        self.send(conn, refused("unknown", "malformed control message"));
        std::mem::take(&mut self.out)
    }

    pub fn control(&mut self, now_ms: u64, conn: ConnId, m: pb::ClientMessage) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        self.counters.control_in += 1;
        let rate = self.config.control_per_connection;
        let Some(c) = self.conns.get_mut(&conn) else {
            return Vec::new();
        };
        if c.closing {
            return Vec::new();
        }
        if c.budget.0.is_infinite() {
            c.budget = (f64::from(rate.burst), now_ms);
        }
        if !c.spend(rate, now_ms) {
            // Only the flooder goes; its messages never reach the others.
            c.closing = true;
            self.counters.control_flood_closed += 1;
            self.out
                .push(Output::Close(conn, "too many control messages".into()));
            return std::mem::take(&mut self.out);
        }
        let member = c.member;
        match (m.msg, member) {
            (None, _) => {
                self.counters.control_malformed += 1;
                self.send(conn, refused("unknown", "unknown or empty control message"));
            }
            (Some(In::Join(j)), None) => self.join(now_ms, conn, j),
            (Some(In::Join(_)), Some(_)) => {
                self.refuse(conn, "join", "already joined on this connection")
            }
            (Some(_), None) => self.refuse(conn, "any", "join first"),
            // Reports from the waiting room are dropped without a word.
            (Some(In::ReceiveReport(r)), Some((meeting, pid))) => {
                let admitted = self.rooms.get(&meeting).is_some_and(|room| {
                    room.members
                        .get(&pid)
                        .is_some_and(|m| m.admission == Admission::Admitted)
                });
                if admitted {
                    self.receive_report(meeting, pid, &r);
                }
            }
            (Some(other), Some((meeting, pid))) => self.member_action(meeting, pid, other),
        }
        std::mem::take(&mut self.out)
    }

    /// The meetings the control plane says are placed here, with the peers
    /// each is cascaded with, and the open rooms whose meeting moved away.
    ///
    /// A moved room's participants are told to join again (and get the new
    /// node from the control plane); the room keeps forwarding for
    /// [`MOVE_GRACE_MS`] so nobody drops out while switching, then closes.
    /// A room missing from two updates in a row, [`ENDED_AFTER_MS`] apart
    /// or more, and not moved, has ended; one miss, or a burst of them, is
    /// tolerated because a lagging replica may answer.
    pub fn sync_assignments(
        &mut self,
        now_ms: u64,
        assignments: &[(u64, Vec<String>)],
        moved: &[u64],
    ) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        self.assignments = assignments
            .iter()
            .map(|(m, peers)| (*m, peers.iter().cloned().collect()))
            .collect();
        let moved: BTreeSet<u64> = moved.iter().copied().collect();
        let listed = &self.assignments;
        self.timed_out.retain(|m| listed.contains_key(m));
        let mut gone = Vec::new();
        let mut newly_moved = Vec::new();
        for (id, room) in &mut self.rooms {
            if self.assignments.contains_key(id) {
                room.missing_from_assignments = 0;
                room.missing_since_ms = None;
                room.moved_at_ms = None;
            } else if moved.contains(id) || room.moved_at_ms.is_some() {
                match room.moved_at_ms {
                    None => {
                        room.moved_at_ms = Some(now_ms);
                        newly_moved.push(*id);
                    }
                    Some(at) if now_ms.saturating_sub(at) >= MOVE_GRACE_MS => gone.push(*id),
                    Some(_) => {}
                }
            } else {
                room.missing_from_assignments += 1;
                let since = *room.missing_since_ms.get_or_insert(now_ms);
                // Two misses, over a second apart: a replica answering a
                // backlog of beats (resumed, or behind) sends many answers
                // at once from a state that may not know this room yet.
                if room.missing_from_assignments >= 2
                    && now_ms.saturating_sub(since) >= ENDED_AFTER_MS
                {
                    gone.push(*id);
                }
            }
        }
        for id in newly_moved {
            let conns: Vec<ConnId> = self.rooms[&id].members.values().map(|m| m.conn).collect();
            for c in conns {
                self.send(
                    c,
                    OutMsg::Moved(pb::Moved {
                        reason: "the meeting moved to another media node".into(),
                        grace_ms: MOVE_GRACE_MS,
                    }),
                );
            }
        }
        for id in gone {
            if self.rooms[&id].moved_at_ms.is_some() {
                // Anyone still here joins again and finds the new node.
                self.close_room(id, "the meeting moved to another media node", true);
            } else {
                self.close_room(id, "the meeting has ended", false);
            }
        }
        self.open_links_for_assignments();
        self.admit_pending_link_opens();
        std::mem::take(&mut self.out)
    }

    fn close_room(&mut self, meeting: u64, reason: &str, retry: bool) {
        let Some(room) = self.rooms.get(&meeting) else {
            return;
        };
        let members: Vec<(u64, ConnId)> = room.members.iter().map(|(p, m)| (*p, m.conn)).collect();
        for (pid, conn) in members {
            self.send(
                conn,
                OutMsg::Closed(pb::Closed {
                    reason: reason.into(),
                    retry,
                }),
            );
            self.out.push(Output::Close(conn, reason.into()));
            let why = if reason == TIME_LIMIT_REASON {
                usage::TIME_LIMIT
            } else if retry {
                usage::MOVED
            } else {
                usage::CLOSED
            };
            self.remove_member(meeting, pid, false, why);
        }
        self.rooms.remove(&meeting);
        self.flush_quality(meeting);
        self.room_closed(meeting);
    }

    fn send(&mut self, conn: ConnId, m: OutMsg) {
        self.out.push(Output::Send(conn, msg(m)));
    }

    fn refuse(&mut self, conn: ConnId, action: &str, reason: &str) {
        self.counters.actions_refused += 1;
        self.send(conn, refused(action, reason));
    }

    /// Refuses a join for good (bad token, locked meeting, ...).
    fn refuse_join(&mut self, conn: ConnId, reason: &str) {
        self.close_join(conn, reason, false);
    }

    /// Declines a join for now: the client should ask the control plane
    /// again (and may be sent elsewhere).
    fn decline_join(&mut self, conn: ConnId, reason: &str) {
        self.close_join(conn, reason, true);
    }

    fn close_join(&mut self, conn: ConnId, reason: &str, retry: bool) {
        self.counters.joins_refused += 1;
        self.send(
            conn,
            OutMsg::Closed(pb::Closed {
                reason: reason.into(),
                retry,
            }),
        );
        self.out.push(Output::Close(conn, reason.into()));
    }

    /// Sends to every admitted member of the room, except `except`.
    fn broadcast_to_panelists(&mut self, meeting: u64, m: OutMsg, except: Option<u64>) {
        let Some(room) = self.rooms.get(&meeting) else {
            return;
        };
        let targets: Vec<ConnId> = room
            .admitted()
            .filter(|(id, m)| m.panelist && Some(**id) != except)
            .map(|(_, m)| m.conn)
            .collect();
        for conn in targets {
            self.send(conn, m.clone());
        }
    }

    fn broadcast(&mut self, meeting: u64, m: OutMsg, except: Option<u64>) {
        let Some(room) = self.rooms.get(&meeting) else {
            return;
        };
        let targets: Vec<ConnId> = room
            .admitted()
            .filter(|(id, _)| Some(**id) != except)
            .map(|(_, m)| m.conn)
            .collect();
        for conn in targets {
            self.send(conn, m.clone());
        }
    }

    fn join(&mut self, now_ms: u64, conn: ConnId, j: pb::MediaJoin) {
        let source = self.conns[&conn].source;
        if self.joins_by_source.take(&source, now_ms).is_err() {
            return self.decline_join(conn, "too many join attempts; retry later");
        }
        let Some(key) = &self.join_key else {
            return self.decline_join(conn, "node is not registered with the control plane yet");
        };
        let claims = match verify_token(
            key,
            &j.token,
            now_ms,
            Some(j.meeting_id),
            &self.config.node_id,
        ) {
            Ok(c) => c,
            Err(e) => {
                let reason = match e {
                    TokenError::Expired => "join token expired",
                    TokenError::WrongMeeting { .. } => "join token is for another meeting",
                    TokenError::WrongNode { .. } => "join token is for another node",
                    TokenError::Malformed | TokenError::BadSignature => "join token is not valid",
                };
                return self.refuse_join(conn, reason);
            }
        };
        // The meeting's bucket counts valid tokens only, so garbage sent at
        // a meeting id cannot keep its participants out.
        if self
            .joins_by_meeting
            .take(&claims.meeting_id, now_ms)
            .is_err()
        {
            return self.decline_join(conn, "too many join attempts; retry later");
        }
        let role = claims.role();
        let pid = claims.participant_id;
        let meeting = claims.meeting_id;
        // The control plane's join span, continued here when tracing is on.
        let span =
            tracing::info_span!("media_join", meeting.id = meeting, node.id = %self.config.node_id);
        fjord_common::trace_context::set_parent(&span, &j.traceparent);
        let _in_span = span.enter();
        if self.shutting_down && !self.rooms.contains_key(&meeting) {
            self.record_join_attempt(meeting, pid, false, claims.issued_at_ms);
            return self.decline_join(
                conn,
                "node is shutting down; join again to be placed elsewhere",
            );
        }
        if self.timed_out.contains(&meeting) {
            return self.refuse_join(conn, "the meeting reached its time limit");
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.rooms.entry(meeting) {
            e.insert(Room::new(
                meeting,
                claims.settings.unwrap_or_default(),
                RoomTerms::of(&claims),
                now_ms,
            ));
            // Peers carrying this meeting hear that it is open here.
            self.open_links_for_assignments();
        }
        let room = self.rooms.get_mut(&meeting).expect("just ensured");
        if room.locked {
            // S3: once locked, nobody else joins — hosts, operators included.
            return self.refuse_join(conn, "the meeting is locked");
        }
        if room.members.contains_key(&pid) {
            return self.refuse_join(conn, "this join token is already in use");
        }
        let admission = room.admission_for(role);
        let joined_seq = room.next_seq();
        room.members.insert(
            pid,
            room::Member {
                conn,
                name: claims.display_name.clone(),
                role: if role == pb::Role::Host && room.host.is_some() {
                    // A second holder of the host key joins as a participant.
                    pb::Role::Participant
                } else {
                    role
                },
                admission,
                muted: true, // S4: everyone enters muted
                can_share_screen: false,
                joined_seq,
                // Made a panelist when it becomes the host.
                panelist: false,
                admitted_ms: 0,
            },
        );
        let c = self.conns.get_mut(&conn).expect("checked");
        c.member = Some((meeting, pid));
        self.connections.push(ConnectionRecord {
            at_ms: now_ms,
            meeting,
            participant: pid,
            display_name: claims.display_name.clone(),
            source: c.source,
        });
        self.unjoined.remove(&conn);
        // Let in or held by the meeting's own settings: either way the join
        // reached media as far as the service goes.
        self.record_join_attempt(meeting, pid, true, claims.issued_at_ms);
        match admission {
            Admission::Admitted => {
                let becomes_host = role == pb::Role::Host && self.rooms[&meeting].host.is_none();
                if becomes_host {
                    let room = self.rooms.get_mut(&meeting).expect("present");
                    room.host = Some(pid);
                    let m = room.members.get_mut(&pid).expect("inserted");
                    m.can_share_screen = true; // S5: the host may share
                    m.panelist = true;
                }
                self.admit(meeting, pid);
                if becomes_host {
                    self.host_arrived(meeting);
                    self.tell_host_remote_waiting(meeting);
                }
            }
            waiting => {
                self.counters.joins_waiting += 1;
                let reason = if waiting == Admission::HostAbsent {
                    "host_absent"
                } else {
                    "waiting_room"
                };
                self.send(
                    conn,
                    OutMsg::Waiting(pb::Waiting {
                        reason: reason.into(),
                        participant_id: pid,
                    }),
                );
                if waiting == Admission::WaitingRoom {
                    self.tell_host_waiting(meeting, pid);
                }
            }
        }
    }

    /// A member waits in the waiting room: the host hears of it, here or
    /// (over the cascade links) on another node.
    fn tell_host_waiting(&mut self, meeting: u64, pid: u64) {
        let name = self.rooms[&meeting].members[&pid].name.clone();
        self.tell_local_host(meeting, pid, name.clone());
        self.tell_links(
            meeting,
            pb::link_message::Msg::Waiting(pb::LinkWaiting {
                meeting_id: meeting,
                participant_id: pid,
                display_name: name,
                waiting: true,
            }),
        );
    }

    fn tell_local_host(&mut self, meeting: u64, pid: u64, display_name: String) {
        let room = &self.rooms[&meeting];
        if let Some(host_conn) = room.host.and_then(|h| room.members.get(&h)).map(|m| m.conn) {
            self.send(
                host_conn,
                OutMsg::WaitingParticipant(pb::WaitingParticipant {
                    participant_id: pid,
                    display_name,
                }),
            );
        }
    }

    /// A host is now here: tell them of everyone waiting on other nodes.
    fn tell_host_remote_waiting(&mut self, meeting: u64) {
        let waiting: Vec<(u64, String)> = self.rooms[&meeting]
            .remote_waiting
            .iter()
            .map(|(p, (_, name))| (*p, name.clone()))
            .collect();
        for (pid, name) in waiting {
            self.tell_local_host(meeting, pid, name);
        }
    }

    /// The host is in: those held for the host move on, to the waiting room
    /// or straight in, per the meeting's settings.
    fn host_arrived(&mut self, meeting: u64) {
        let room = self.rooms.get_mut(&meeting).expect("present");
        let held: Vec<u64> = room
            .members
            .iter()
            .filter(|(_, m)| m.admission == Admission::HostAbsent)
            .map(|(id, _)| *id)
            .collect();
        let to_waiting_room = !room.settings.disable_waiting_room;
        for pid in held {
            if to_waiting_room {
                let room = self.rooms.get_mut(&meeting).expect("present");
                let m = room.members.get_mut(&pid).expect("listed");
                m.admission = Admission::WaitingRoom;
                let conn = m.conn;
                self.send(
                    conn,
                    OutMsg::Waiting(pb::Waiting {
                        reason: "waiting_room".into(),
                        participant_id: pid,
                    }),
                );
                self.tell_host_waiting(meeting, pid);
            } else {
                self.admit(meeting, pid);
            }
        }
    }

    /// Lets a member in: they get the room's state, the others hear of them,
    /// and they subscribe to every track already there.
    fn admit(&mut self, meeting: u64, pid: u64) {
        self.counters.joins_admitted += 1;
        let cascaded = self
            .assignments
            .get(&meeting)
            .is_some_and(|p| !p.is_empty());
        let room = self.rooms.get_mut(&meeting).expect("present");
        let m = room.members.get_mut(&pid).expect("member");
        m.admission = Admission::Admitted;
        m.admitted_ms = self.now_ms;
        let mut features = 0;
        if room.webinar && !m.panelist {
            features |= usage::FEATURE_WEBINAR_ATTENDEE;
        }
        if room.settings.e2ee {
            features |= usage::FEATURE_E2EE;
        }
        if cascaded {
            features |= usage::FEATURE_CASCADE;
        }
        self.usage.push(UsageRecord {
            at_ms: self.now_ms,
            meeting,
            participant: pid,
            joined: true,
            features,
            reason: "",
            quality: None,
            join: None,
        });
        let conn = m.conn;
        let you = m.info(pid);
        // Webinar attendees see the panelists only, and only panelists
        // hear of attendees: presence stays O(panelists), not O(n²).
        let attendee = room.webinar && !m.panelist;
        let webinar = room.webinar;
        let participants = room
            .admitted()
            .filter(|(_, m)| !webinar || m.panelist)
            .map(|(id, m)| m.info(*id))
            .chain(
                room.remote
                    .values()
                    .filter(|(_, p)| !webinar || p.role() == pb::Role::Host)
                    .map(|(_, p)| p.clone()),
            )
            .collect();
        let tracks: Vec<u32> = room.tracks.iter().copied().collect();
        let recording = room.recording;
        let locked = room.locked;
        let settings = room.settings;
        let track_infos = tracks
            .iter()
            .map(|t| {
                let t2 = &self.tracks[t];
                pb::TrackInfo {
                    track_id: *t,
                    participant_id: t2.owner,
                    kind: t2.kind as i32,
                }
            })
            .collect();
        self.send(
            conn,
            OutMsg::Joined(pb::Joined {
                you: Some(you.clone()),
                participants,
                tracks: track_infos,
                locked,
                recording: recording.wire() as i32,
                settings: Some(settings),
                webinar,
            }),
        );
        if attendee {
            self.broadcast_to_panelists(meeting, OutMsg::ParticipantJoined(you), Some(pid));
        } else {
            self.broadcast(meeting, OutMsg::ParticipantJoined(you.clone()), Some(pid));
            self.tell_links(
                meeting,
                pb::link_message::Msg::ParticipantJoined(pb::LinkParticipant {
                    meeting_id: meeting,
                    info: Some(you),
                }),
            );
        }
        for t in tracks {
            self.subscribe(t, conn);
        }
        // S6: a recording cannot go on past someone who has not consented.
        match recording {
            Recording::On { requested_by } | Recording::AwaitingConsent { requested_by } => {
                let room = self.rooms.get_mut(&meeting).expect("present");
                room.recording = Recording::AwaitingConsent { requested_by };
                if matches!(recording, Recording::On { .. }) {
                    let changed = room.recording.changed();
                    self.broadcast(meeting, changed, None);
                }
                self.send(
                    conn,
                    OutMsg::ConsentRequested(pb::ConsentRequested { requested_by }),
                );
            }
            _ => {}
        }
    }

    fn subscribe(&mut self, track: u32, conn: ConnId) {
        if let Some(t) = self.tracks.get_mut(&track) {
            if t.owner_conn != conn && t.subscriber_conns.insert(conn) {
                self.rebuild_subscribers(track);
            }
        }
    }

    fn unsubscribe(&mut self, track: u32, conn: ConnId) {
        if let Some(t) = self.tracks.get_mut(&track) {
            if t.subscriber_conns.remove(&conn) {
                self.rebuild_subscribers(track);
            }
        }
    }

    fn rebuild_subscribers(&mut self, track: u32) {
        let t = self.tracks.get_mut(&track).expect("caller checked");
        t.subscribers = t
            .subscriber_conns
            .iter()
            .filter_map(|c| self.conns.get(c).map(|c| c.handle.clone()))
            .collect();
        t.link_subscribers = t
            .subscriber_conns
            .iter()
            .filter(|c| self.conns.get(c).is_some_and(|c| c.link.is_some()))
            .count() as u32;
    }

    /// Removes a member and everything they published. `vanished`: the
    /// connection dropped without a hand-over.
    fn remove_member(&mut self, meeting: u64, pid: u64, vanished: bool, why: &'static str) {
        let Some(room) = self.rooms.get_mut(&meeting) else {
            return;
        };
        let Some(m) = room.members.remove(&pid) else {
            return;
        };
        if m.admission == Admission::Admitted {
            self.usage.push(UsageRecord {
                at_ms: self.now_ms,
                meeting,
                participant: pid,
                joined: false,
                features: 0,
                reason: why,
                quality: None,
                join: None,
            });
        }
        let attendee = room.webinar && !m.panelist;
        room.consents.remove(&pid);
        let conn = m.conn;
        if let Some(c) = self.conns.get_mut(&conn) {
            c.member = None;
        }
        let owned: Vec<u32> = room
            .tracks
            .iter()
            .copied()
            .filter(|t| self.tracks.get(t).is_some_and(|t| t.owner == pid))
            .collect();
        let others: Vec<u32> = room.tracks.iter().copied().collect();
        for t in &owned {
            room.tracks.remove(t);
        }
        for t in owned {
            self.withdraw_track(meeting, t);
        }
        for t in others {
            self.unsubscribe(t, conn);
        }
        if m.admission == Admission::Admitted && attendee {
            self.broadcast_to_panelists(
                meeting,
                OutMsg::ParticipantLeft(pb::ParticipantLeft {
                    participant_id: pid,
                }),
                None,
            );
        } else if m.admission == Admission::Admitted {
            self.broadcast(
                meeting,
                OutMsg::ParticipantLeft(pb::ParticipantLeft {
                    participant_id: pid,
                }),
                None,
            );
            self.tell_links(
                meeting,
                pb::link_message::Msg::ParticipantLeft(pb::LinkParticipantLeft {
                    meeting_id: meeting,
                    participant_id: pid,
                }),
            );
        } else if m.admission == Admission::WaitingRoom {
            self.tell_links(
                meeting,
                pb::link_message::Msg::Waiting(pb::LinkWaiting {
                    meeting_id: meeting,
                    participant_id: pid,
                    display_name: String::new(),
                    waiting: false,
                }),
            );
        }
        let room = self.rooms.get_mut(&meeting).expect("present");
        // A recording stops when the person recording leaves.
        if room.recording.requested_by() == pid {
            room.recording = Recording::Off;
            room.consents.clear();
            let changed = room.recording.changed();
            self.broadcast(meeting, changed, None);
        } else if matches!(room.recording, Recording::AwaitingConsent { .. })
            && room.all_consented()
        {
            self.start_recording(meeting);
        }
        let room = self.rooms.get_mut(&meeting).expect("present");
        if room.host == Some(pid) {
            room.host = None;
            if vanished {
                if let Some(next) = room.longest_present(pid) {
                    self.make_host(meeting, next);
                }
            }
        }
        if self.rooms[&meeting].members.is_empty() {
            self.rooms.remove(&meeting);
            self.flush_quality(meeting);
            self.room_closed(meeting);
        }
    }

    /// Forgets track `t` (already out of its room's list) and tells the
    /// room and the cascade it is gone.
    fn withdraw_track(&mut self, meeting: u64, t: u32) {
        self.tracks.remove(&t);
        self.broadcast(
            meeting,
            OutMsg::TrackRemoved(pb::TrackRemoved { track_id: t }),
            None,
        );
        self.tell_links(
            meeting,
            pb::link_message::Msg::TrackRemoved(pb::LinkTrackRemoved {
                meeting_id: meeting,
                track_id: t,
            }),
        );
    }

    /// Makes `pid` a panelist (who may send) or an attendee again (whose
    /// tracks are withdrawn). Panelists and the participant hear of it.
    fn set_panelist(&mut self, meeting: u64, pid: u64, panelist: bool) {
        let room = self.rooms.get_mut(&meeting).expect("present");
        let m = room.members.get_mut(&pid).expect("member");
        if m.panelist == panelist {
            return;
        }
        m.panelist = panelist;
        let conn = m.conn;
        let info = m.info(pid);
        let changed = OutMsg::PanelistChanged(pb::PanelistChanged {
            participant_id: pid,
            panelist,
        });
        if panelist {
            // Now visible to everyone, like any panelist.
            self.broadcast(meeting, OutMsg::ParticipantJoined(info), Some(pid));
        } else {
            let owned: Vec<u32> = self.rooms[&meeting]
                .tracks
                .iter()
                .copied()
                .filter(|t| self.tracks.get(t).is_some_and(|t| t.owner == pid))
                .collect();
            for t in owned {
                if let Some(room) = self.rooms.get_mut(&meeting) {
                    room.tracks.remove(&t);
                }
                self.withdraw_track(meeting, t);
            }
        }
        self.broadcast_to_panelists(meeting, changed.clone(), Some(pid));
        self.send(conn, changed);
    }

    /// Time passes: warns rooms nearing their licence's time limit and
    /// closes those that reached it. The shell calls this about every
    /// [`TICK_MS`]; nothing else here reads time.
    pub fn tick(&mut self, now_ms: u64) -> Vec<Output> {
        self.now_ms = self.now_ms.max(now_ms);
        let minute = self.now_ms / 60_000;
        let done: Vec<u64> = self
            .quality
            .iter()
            .filter(|(_, q)| q.minute < minute)
            .map(|(m, _)| *m)
            .collect();
        for m in done {
            self.flush_quality(m);
        }
        let mut warn = Vec::new();
        let mut end = Vec::new();
        for (id, room) in &self.rooms {
            let Some(limit) = room.time_limit else {
                continue;
            };
            let ends_at = room.opened_at_ms.saturating_add(limit.limit_ms);
            if now_ms >= ends_at {
                end.push(*id);
            } else if !room.warned && now_ms >= ends_at.saturating_sub(limit.warn_before_ms) {
                warn.push((*id, ends_at - now_ms));
            }
        }
        for (id, ends_in_ms) in warn {
            self.rooms.get_mut(&id).expect("present").warned = true;
            let conns: Vec<ConnId> = self.rooms[&id].members.values().map(|m| m.conn).collect();
            for c in conns {
                self.send(
                    c,
                    OutMsg::TimeLimitWarning(pb::TimeLimitWarning { ends_in_ms }),
                );
            }
        }
        for id in end {
            self.counters.time_limit_ends += 1;
            // Joining again must not start the clock over.
            self.timed_out.insert(id);
            self.close_room(id, TIME_LIMIT_REASON, false);
        }
        std::mem::take(&mut self.out)
    }

    fn make_host(&mut self, meeting: u64, pid: u64) {
        let room = self.rooms.get_mut(&meeting).expect("present");
        if let Some(old) = room.host.and_then(|h| room.members.get_mut(&h)) {
            old.role = pb::Role::Participant;
        }
        room.host = Some(pid);
        let m = room.members.get_mut(&pid).expect("member");
        m.role = pb::Role::Host;
        m.can_share_screen = true;
        m.panelist = true;
        self.broadcast(
            meeting,
            OutMsg::HostChanged(pb::HostChanged {
                participant_id: pid,
            }),
            None,
        );
        // Anyone waiting now has a host to admit them.
        let waiting: Vec<u64> = self.rooms[&meeting]
            .members
            .iter()
            .filter(|(_, m)| m.admission == Admission::WaitingRoom)
            .map(|(id, _)| *id)
            .collect();
        for w in waiting {
            self.tell_host_waiting(meeting, w);
        }
        self.tell_host_remote_waiting(meeting);
        self.host_arrived(meeting);
    }

    fn start_recording(&mut self, meeting: u64) {
        let room = self.rooms.get_mut(&meeting).expect("present");
        room.recording = Recording::On {
            requested_by: room.recording.requested_by(),
        };
        // S6: everyone is told that recording is on.
        let changed = room.recording.changed();
        self.broadcast(meeting, changed, None);
    }

    fn set_track_enabled(&mut self, meeting: u64, pid: u64) {
        let room = &self.rooms[&meeting];
        let m = &room.members[&pid];
        let (muted, can_share) = (m.muted, m.can_share_screen);
        for t in room.tracks.iter() {
            if let Some(t) = self.tracks.get_mut(t) {
                if t.owner == pid {
                    t.enabled = match t.kind {
                        pb::TrackKind::Audio => !muted,
                        pb::TrackKind::Screen => can_share,
                        _ => true,
                    };
                }
            }
        }
    }

    fn member_action(&mut self, meeting: u64, pid: u64, action: In) {
        let room = &self.rooms[&meeting];
        let me = &room.members[&pid];
        let conn = me.conn;
        let admitted = me.admission == Admission::Admitted;
        let is_host = room.is_host(pid);
        match action {
            In::Join(_) => unreachable!("handled by the caller"),
            In::Leave(_) => {
                // S7: a host must hand over first, unless nobody is left.
                if is_host && room.longest_present(pid).is_some() {
                    return self.refuse(conn, "leave", "hand the host role over before leaving");
                }
                self.remove_member(meeting, pid, false, usage::LEFT);
                self.send(
                    conn,
                    OutMsg::Closed(pb::Closed {
                        reason: "left".into(),
                        retry: false,
                    }),
                );
                self.out.push(Output::Close(conn, "left".into()));
            }
            _ if !admitted => self.refuse(conn, "any", "waiting to be admitted"),
            In::Publish(p) => {
                let kind = p.kind();
                if kind == pb::TrackKind::Unspecified {
                    return self.refuse(conn, "publish", "unknown track kind");
                }
                if room.webinar && !me.panelist {
                    return self.refuse(
                        conn,
                        "publish",
                        "webinar attendees only receive; the host can make you a panelist",
                    );
                }
                // S5: screen sharing is for the host, or whom the host grants.
                if kind == pb::TrackKind::Screen && !me.can_share_screen {
                    return self.refuse(
                        conn,
                        "publish",
                        "screen sharing is host-only until the host grants it",
                    );
                }
                let owned = room
                    .tracks
                    .iter()
                    .filter(|t| self.tracks.get(t).is_some_and(|t| t.owner == pid))
                    .count();
                if owned >= self.config.max_tracks_per_participant {
                    return self.refuse(conn, "publish", "too many tracks");
                }
                let id = self.allocate_track_id();
                self.tracks.insert(
                    id,
                    Track {
                        meeting,
                        owner_conn: conn,
                        owner: pid,
                        kind,
                        enabled: true,
                        subscriber_conns: BTreeSet::new(),
                        subscribers: Arc::from(Vec::new()),
                        link_subscribers: 0,
                        remote: false,
                    },
                );
                let room = self.rooms.get_mut(&meeting).expect("present");
                room.tracks.insert(id);
                let mut subscribers: Vec<ConnId> = room
                    .admitted()
                    .filter(|(p, _)| **p != pid)
                    .map(|(_, m)| m.conn)
                    .collect();
                subscribers.extend(self.links_wanting(meeting));
                self.set_track_enabled(meeting, pid);
                for c in subscribers {
                    self.subscribe(id, c);
                }
                let info = pb::TrackInfo {
                    track_id: id,
                    participant_id: pid,
                    kind: kind as i32,
                };
                self.broadcast(meeting, OutMsg::TrackPublished(info), None);
                self.tell_links(
                    meeting,
                    pb::link_message::Msg::TrackPublished(pb::LinkTrack {
                        meeting_id: meeting,
                        track: Some(info),
                    }),
                );
            }
            In::Admit(a) => {
                if !is_host {
                    return self.refuse(conn, "admit", "only the host can admit");
                }
                match room.members.get(&a.participant_id) {
                    Some(m) if m.admission == Admission::WaitingRoom => {
                        self.admit(meeting, a.participant_id)
                    }
                    // Waiting on another node of the cascade: that node admits.
                    None if room.remote_waiting.contains_key(&a.participant_id) => {
                        self.admit_remote(meeting, a.participant_id)
                    }
                    _ => self.refuse(conn, "admit", "nobody waiting with that id"),
                }
            }
            In::SetMuted(s) => {
                let target = if s.participant_id == 0 {
                    pid
                } else {
                    s.participant_id
                };
                if target != pid && !is_host {
                    return self.refuse(conn, "mute", "only the host can mute others");
                }
                if target != pid && !s.muted {
                    return self.refuse(conn, "mute", "only participants can unmute themselves");
                }
                let change = MemberChange::Muted(s.muted);
                if room.members.contains_key(&target) {
                    self.change_member(meeting, target, change);
                } else if room.remote.contains_key(&target) {
                    // On another node of the cascade: that node mutes them.
                    self.ask_owner(meeting, target, change);
                } else {
                    self.refuse(conn, "mute", "no such participant");
                }
            }
            In::GrantScreenShare(g) => {
                if !is_host {
                    return self.refuse(conn, "grant", "only the host can grant screen sharing");
                }
                let change = MemberChange::CanShareScreen(g.granted);
                if g.participant_id == pid {
                    self.refuse(conn, "grant", "no such participant");
                } else if room.members.contains_key(&g.participant_id) {
                    self.change_member(meeting, g.participant_id, change);
                } else if room.remote.contains_key(&g.participant_id) {
                    self.ask_owner(meeting, g.participant_id, change);
                } else {
                    self.refuse(conn, "grant", "no such participant");
                }
            }
            In::SetLocked(l) => {
                if !is_host {
                    return self.refuse(conn, "lock", "only the host can lock the meeting");
                }
                self.rooms.get_mut(&meeting).expect("present").locked = l.locked;
                self.broadcast(
                    meeting,
                    OutMsg::LockChanged(pb::LockChanged { locked: l.locked }),
                    None,
                );
                // S3: the lock holds on every node of a cascade.
                self.tell_links(
                    meeting,
                    pb::link_message::Msg::Lock(pb::LinkLock {
                        meeting_id: meeting,
                        locked: l.locked,
                    }),
                );
            }
            In::RequestRecording(r) => {
                if !r.local {
                    // S6: there is no server-side recording path at all.
                    return self.refuse(
                        conn,
                        "record",
                        "cloud recording does not exist; only local recording can be requested",
                    );
                }
                if room.recording != Recording::Off {
                    return self.refuse(conn, "record", "a recording is already under way");
                }
                if !room.remote.is_empty()
                    || self
                        .assignments
                        .get(&meeting)
                        .is_some_and(|p| !p.is_empty())
                {
                    // S6 needs everyone's consent; consent is not gathered
                    // across the nodes of a cascade, so no recording there.
                    return self.refuse(
                        conn,
                        "record",
                        "recording is not available in a meeting spanning several media nodes",
                    );
                }
                let room = self.rooms.get_mut(&meeting).expect("present");
                room.consents.clear();
                if is_host {
                    room.recording = Recording::AwaitingConsent { requested_by: pid };
                    self.ask_consent(meeting, pid);
                } else {
                    room.recording = Recording::AwaitingHost { requested_by: pid };
                    let changed = room.recording.changed();
                    self.broadcast(meeting, changed, None);
                }
            }
            In::ConfirmRecording(c) => {
                if !is_host {
                    return self.refuse(conn, "confirm", "only the host can confirm recording");
                }
                let Recording::AwaitingHost { requested_by } = room.recording else {
                    return self.refuse(conn, "confirm", "no recording awaits confirmation");
                };
                if c.participant_id != requested_by {
                    return self.refuse(conn, "confirm", "that participant did not ask to record");
                }
                let room = self.rooms.get_mut(&meeting).expect("present");
                if c.confirm {
                    room.recording = Recording::AwaitingConsent { requested_by };
                    self.ask_consent(meeting, requested_by);
                } else {
                    room.recording = Recording::Off;
                    let changed = room.recording.changed();
                    self.broadcast(meeting, changed, None);
                }
            }
            In::RecordingConsent(c) => {
                let Recording::AwaitingConsent { .. } = room.recording else {
                    return self.refuse(conn, "consent", "no recording awaits consent");
                };
                let room = self.rooms.get_mut(&meeting).expect("present");
                if c.consent {
                    room.consents.insert(pid);
                    if room.all_consented() {
                        self.start_recording(meeting);
                    }
                } else {
                    room.recording = Recording::Off;
                    room.consents.clear();
                    let changed = room.recording.changed();
                    self.broadcast(meeting, changed, None);
                }
            }
            In::StopRecording(_) => {
                if room.recording == Recording::Off {
                    return self.refuse(conn, "stop", "nothing is being recorded");
                }
                if !is_host && room.recording.requested_by() != pid {
                    return self.refuse(conn, "stop", "only the host or the recorder can stop");
                }
                let room = self.rooms.get_mut(&meeting).expect("present");
                room.recording = Recording::Off;
                room.consents.clear();
                let changed = room.recording.changed();
                self.broadcast(meeting, changed, None);
            }
            In::SetPanelist(p) => {
                if !room.webinar {
                    return self.refuse(conn, "panelist", "not a webinar");
                }
                if !is_host {
                    return self.refuse(conn, "panelist", "only the host makes panelists");
                }
                let target = p.participant_id;
                if target == pid
                    || room
                        .members
                        .get(&target)
                        .is_none_or(|m| m.admission != Admission::Admitted)
                {
                    return self.refuse(
                        conn,
                        "panelist",
                        "no admitted attendee with that id on this node",
                    );
                }
                self.set_panelist(meeting, target, p.panelist);
            }
            In::HandOverHost(h) => {
                if !is_host {
                    return self.refuse(conn, "hand_over", "only the host can hand over");
                }
                match room.members.get(&h.participant_id) {
                    Some(m) if h.participant_id != pid && m.admission == Admission::Admitted => {
                        self.make_host(meeting, h.participant_id)
                    }
                    _ => self.refuse(conn, "hand_over", "no admitted participant with that id"),
                }
            }
            In::Rename(r) => {
                // S7: self-rename can be disabled per meeting.
                if room.settings.disable_self_rename {
                    return self.refuse(conn, "rename", "self-rename is disabled in this meeting");
                }
                if fjord_common::validate::display_name(&r.display_name).is_err() {
                    return self.refuse(conn, "rename", "1 to 64 printable characters");
                }
                let room = self.rooms.get_mut(&meeting).expect("present");
                room.members.get_mut(&pid).expect("member").name = r.display_name.clone();
                self.broadcast(
                    meeting,
                    OutMsg::Renamed(pb::Renamed {
                        participant_id: pid,
                        display_name: r.display_name,
                    }),
                    None,
                );
            }
            // Summed in control(), before member actions.
            In::ReceiveReport(_) => {}
            In::Subscribe(s) => {
                for t in s.track_ids {
                    if self.tracks.get(&t).is_some_and(|t| t.meeting == meeting) {
                        if s.unsubscribe {
                            self.unsubscribe(t, conn);
                        } else {
                            self.subscribe(t, conn);
                        }
                    }
                }
            }
        }
    }

    /// Adds a participant's receive report to its meeting's minute; a
    /// report from a later minute first closes the one being summed.
    fn receive_report(&mut self, meeting: u64, pid: u64, r: &pb::ReceiveReport) {
        let minute = self.now_ms / 60_000;
        if self
            .quality
            .get(&meeting)
            .is_some_and(|q| q.minute < minute)
        {
            self.flush_quality(meeting);
        }
        let q = self
            .quality
            .entry(meeting)
            .or_insert_with(|| usage::QualityAccumulator {
                minute,
                ..Default::default()
            });
        // A report cannot claim more than it could have received.
        let received = r.received.min(r.expected);
        q.record(pid, r.expected, received, r.jitter_us);
    }

    /// Records the meeting's summed minute as usage.
    fn flush_quality(&mut self, meeting: u64) {
        if let Some(q) = self.quality.remove(&meeting) {
            if !q.good.is_empty() {
                self.usage.push(UsageRecord {
                    at_ms: q.minute * 60_000,
                    meeting,
                    participant: 0,
                    joined: false,
                    features: 0,
                    reason: "",
                    quality: Some(q.summary()),
                    join: None,
                });
            }
        }
    }

    /// S6: every admitted participant is asked; the requester agrees by asking.
    fn ask_consent(&mut self, meeting: u64, requested_by: u64) {
        let room = self.rooms.get_mut(&meeting).expect("present");
        room.consents.insert(requested_by);
        let changed = room.recording.changed();
        self.broadcast(meeting, changed, None);
        self.broadcast(
            meeting,
            OutMsg::ConsentRequested(pb::ConsentRequested { requested_by }),
            Some(requested_by),
        );
        if self.rooms[&meeting].all_consented() {
            self.start_recording(meeting);
        }
    }

    fn allocate_track_id(&mut self) -> u32 {
        loop {
            let counter = self.next_track & TRACK_COUNTER_MASK;
            self.next_track = (self.next_track + 1) & TRACK_COUNTER_MASK;
            if counter == 0 {
                continue;
            }
            let id = (self.node_index << TRACK_INDEX_SHIFT) | counter;
            if !self.tracks.contains_key(&id) {
                return id;
            }
        }
    }
}

//! Cascade links (M4): how rooms of one meeting on several nodes learn of
//! each other's participants and tracks.
//!
//! ```text
//!   node A                         link A–B                       node B
//!   room 7 opens ── Room{7,open} ────────────▶ B marks A as wanting 7,
//!                ◀─ ParticipantJoined/TrackPublished ── sends its state,
//!                                             subscribes the link to B's
//!                                             local tracks of meeting 7
//!   datagram of a local track ── once per link ──▶ to B's local subscribers
//! ```
//!
//! A link subscribes only to tracks published on this node; a track that
//! came over a link is forwarded to local participants only. So a datagram
//! crosses each link at most once and never comes back.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use fjord_common::token::verify_token;
use fjord_proto::v1 as pb;
use pb::link_message::Msg as LinkMsg;
use pb::server_message::Msg as OutMsg;

use super::{Admission, Conn, ConnId, MemberChange, Output, Sfu, Track};

/// What the core knows about one link.
#[derive(Debug, Clone, Default)]
pub(super) struct Link {
    pub peer: String,
    /// Meetings the peer has a room for and wants media of.
    pub wants: BTreeSet<u64>,
    /// Meetings this node told the peer it has a room for.
    pub announced: BTreeSet<u64>,
    /// Rooms the peer opened for meetings not (yet) assigned to this node
    /// with it: acted on once the control plane says so (the peer may hear
    /// of a cascade a heartbeat earlier), and bounded.
    pub pending_opens: BTreeSet<u64>,
}

/// Pending room opens kept per link; more are dropped.
const MAX_PENDING_OPENS: usize = 1024;

/// Why a link's hello was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefusal {
    #[error("this node is not registered yet")]
    NotRegistered,
    #[error("the link token is not valid for the named node")]
    BadToken,
    #[error("the token does not carry the node role")]
    NotANode,
    #[error("a node cannot link to itself")]
    Itself,
}

fn link_msg(m: LinkMsg) -> pb::LinkMessage {
    pb::LinkMessage { msg: Some(m) }
}

fn member_state(meeting: u64, pid: u64, change: MemberChange, apply: bool) -> pb::LinkMemberState {
    use pb::link_member_state::Change;
    pb::LinkMemberState {
        meeting_id: meeting,
        participant_id: pid,
        change: Some(match change {
            MemberChange::Muted(v) => Change::Muted(v),
            MemberChange::CanShareScreen(v) => Change::CanShareScreen(v),
        }),
        apply,
    }
}

/// What a participant's client is told of a member change.
fn member_event(pid: u64, change: MemberChange) -> OutMsg {
    match change {
        MemberChange::Muted(muted) => OutMsg::MuteChanged(pb::MuteChanged {
            participant_id: pid,
            muted,
        }),
        MemberChange::CanShareScreen(granted) => {
            OutMsg::ScreenShareChanged(pb::ScreenShareChanged {
                participant_id: pid,
                granted,
            })
        }
    }
}

impl<H: Clone> Sfu<H> {
    /// Checks a dialling node's hello: a control-plane-signed token with
    /// the node role for the node it names. Returns the peer's id.
    pub fn verify_link_hello(
        &self,
        now_ms: u64,
        hello: &pb::LinkHello,
    ) -> Result<String, LinkRefusal> {
        let key = self.join_key.as_ref().ok_or(LinkRefusal::NotRegistered)?;
        if hello.node_id == self.config.node_id {
            return Err(LinkRefusal::Itself);
        }
        let claims = verify_token(key, &hello.token, now_ms, Some(0), &hello.node_id)
            .map_err(|_| LinkRefusal::BadToken)?;
        if claims.role() != pb::Role::Node {
            return Err(LinkRefusal::NotANode);
        }
        Ok(hello.node_id.clone())
    }

    /// A link to `peer` is up (dialled or accepted and verified).
    pub fn connect_link(
        &mut self,
        conn: ConnId,
        handle: H,
        source: IpAddr,
        peer: String,
    ) -> Vec<Output> {
        self.link_conns.insert(conn);
        self.conns.insert(
            conn,
            Conn::new(
                handle,
                source,
                Some(Link {
                    peer,
                    ..Link::default()
                }),
            ),
        );
        self.open_links_for_assignments();
        std::mem::take(&mut self.out)
    }

    /// The peer ids of the links that are up.
    pub fn linked_peers(&self) -> Vec<String> {
        self.links().map(|(_, l)| l.peer.clone()).collect()
    }

    /// Every peer node some assigned meeting is cascaded with.
    pub fn wanted_peers(&self) -> BTreeSet<String> {
        self.assignments.values().flatten().cloned().collect()
    }

    pub fn malformed_link_control(&mut self) {
        self.counters.link_control_malformed += 1;
    }

    /// Whether the peer behind `conn` may speak about `meeting`: the
    /// control plane assigned it to both nodes (or this node announced its
    /// room to the peer, which it does only for such meetings, and the room
    /// is still open, e.g. in a move's grace period).
    fn link_carries(&self, conn: ConnId, meeting: u64) -> bool {
        let Some(link) = self.conns.get(&conn).and_then(|c| c.link.as_ref()) else {
            return false;
        };
        link.announced.contains(&meeting)
            || self
                .assignments
                .get(&meeting)
                .is_some_and(|peers| peers.contains(&link.peer))
    }

    fn foreign_link_message(&mut self) {
        self.counters.link_control_unassigned += 1;
    }

    /// Acts on rooms peers opened before this node's assignments named the
    /// meeting, now that they do.
    pub(super) fn admit_pending_link_opens(&mut self) {
        let mut ready = Vec::new();
        for conn in self.link_conns.iter().copied().collect::<Vec<_>>() {
            let pending: Vec<u64> = self
                .conns
                .get(&conn)
                .and_then(|c| c.link.as_ref())
                .map(|l| l.pending_opens.iter().copied().collect())
                .unwrap_or_default();
            for meeting in pending {
                if self.link_carries(conn, meeting) {
                    ready.push((conn, meeting));
                }
            }
        }
        for (conn, meeting) in ready {
            if let Some(l) = self.link_mut(conn) {
                l.pending_opens.remove(&meeting);
            }
            self.peer_room(conn, meeting, true);
        }
    }

    pub fn link_control(&mut self, conn: ConnId, m: pb::LinkMessage) -> Vec<Output> {
        if self.conns.get(&conn).is_none_or(|c| c.link.is_none()) {
            return Vec::new();
        }
        // Every message names a meeting (a removed track, through the
        // track); a peer may speak only of meetings both nodes carry.
        let meeting = match &m.msg {
            Some(LinkMsg::Room(r)) => Some(r.meeting_id),
            Some(LinkMsg::ParticipantJoined(p)) => Some(p.meeting_id),
            Some(LinkMsg::ParticipantLeft(p)) => Some(p.meeting_id),
            Some(LinkMsg::TrackPublished(t)) => Some(t.meeting_id),
            Some(LinkMsg::TrackRemoved(t)) => self.tracks.get(&t.track_id).map(|t| t.meeting),
            Some(LinkMsg::Waiting(w)) => Some(w.meeting_id),
            Some(LinkMsg::Admit(a)) => Some(a.meeting_id),
            Some(LinkMsg::Lock(l)) => Some(l.meeting_id),
            Some(LinkMsg::MemberState(m)) => Some(m.meeting_id),
            Some(LinkMsg::Hello(_)) | None => None,
        };
        if let Some(meeting) = meeting {
            if !self.link_carries(conn, meeting) {
                match &m.msg {
                    Some(LinkMsg::Room(r)) => {
                        let link = self.link_mut(conn).expect("checked above");
                        if !r.open {
                            link.pending_opens.remove(&meeting);
                        } else if link.pending_opens.len() < MAX_PENDING_OPENS {
                            link.pending_opens.insert(meeting);
                        }
                        self.foreign_link_message();
                    }
                    _ => self.foreign_link_message(),
                }
                return std::mem::take(&mut self.out);
            }
        }
        match m.msg {
            Some(LinkMsg::Room(r)) => self.peer_room(conn, r.meeting_id, r.open),
            Some(LinkMsg::ParticipantJoined(p)) => match p.info {
                Some(info) => self.remote_joined(conn, p.meeting_id, info),
                None => self.malformed_link_control(),
            },
            Some(LinkMsg::ParticipantLeft(p)) => {
                self.remote_left(conn, p.meeting_id, p.participant_id)
            }
            Some(LinkMsg::TrackPublished(t)) => match t.track {
                Some(track) => self.remote_track(conn, t.meeting_id, track),
                None => self.malformed_link_control(),
            },
            Some(LinkMsg::TrackRemoved(t)) => self.remote_track_removed(conn, t.track_id),
            Some(LinkMsg::Waiting(w)) => self.remote_waiting(conn, w),
            Some(LinkMsg::Admit(a)) => self.admitted_by_remote_host(a.meeting_id, a.participant_id),
            Some(LinkMsg::Lock(l)) => self.remote_lock(l.meeting_id, l.locked),
            Some(LinkMsg::MemberState(m)) => self.remote_member_state(conn, m),
            Some(LinkMsg::Hello(_)) | None => self.malformed_link_control(),
        }
        std::mem::take(&mut self.out)
    }

    /// Link conns whose peer wants `meeting`'s media.
    pub(super) fn links_wanting(&self, meeting: u64) -> Vec<ConnId> {
        self.links()
            .filter(|(_, l)| l.wants.contains(&meeting))
            .map(|(id, _)| id)
            .collect()
    }

    /// The links that are up (kept apart from the participant connections,
    /// which are many more).
    fn links(&self) -> impl Iterator<Item = (ConnId, &Link)> {
        self.link_conns.iter().filter_map(|id| {
            self.conns
                .get(id)
                .and_then(|c| c.link.as_ref())
                .map(|l| (*id, l))
        })
    }

    fn link_mut(&mut self, conn: ConnId) -> Option<&mut Link> {
        self.conns.get_mut(&conn).and_then(|c| c.link.as_mut())
    }

    pub(super) fn tell_links(&mut self, meeting: u64, m: LinkMsg) {
        for conn in self.links_wanting(meeting) {
            self.out.push(Output::SendLink(conn, link_msg(m.clone())));
        }
    }

    /// Tells each linked peer of every open room it shares with this node
    /// and has not been told of yet.
    pub(super) fn open_links_for_assignments(&mut self) {
        let mut opens = Vec::new();
        let links: Vec<ConnId> = self.link_conns.iter().copied().collect();
        let rooms: Vec<u64> = self.rooms.keys().copied().collect();
        for conn in links {
            for meeting in &rooms {
                let peers = self.assignments.get(meeting);
                let Some(link) = self.conns.get_mut(&conn).and_then(|c| c.link.as_mut()) else {
                    continue;
                };
                if peers.is_some_and(|p| p.contains(&link.peer)) && link.announced.insert(*meeting)
                {
                    opens.push((conn, *meeting));
                }
            }
        }
        for (conn, meeting) in opens {
            self.out.push(Output::SendLink(
                conn,
                link_msg(LinkMsg::Room(pb::LinkRoom {
                    meeting_id: meeting,
                    open: true,
                })),
            ));
        }
    }

    /// The last local member left: peers stop sending this meeting here.
    pub(super) fn room_closed(&mut self, meeting: u64) {
        let mut closes = Vec::new();
        let links: Vec<ConnId> = self.link_conns.iter().copied().collect();
        for conn in links {
            if self
                .link_mut(conn)
                .is_some_and(|l| l.announced.remove(&meeting))
            {
                closes.push(conn);
            }
        }
        for conn in closes {
            self.out.push(Output::SendLink(
                conn,
                link_msg(LinkMsg::Room(pb::LinkRoom {
                    meeting_id: meeting,
                    open: false,
                })),
            ));
        }
        // Tracks that came over links for this meeting go with the room.
        let remote: Vec<u32> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.remote && t.meeting == meeting)
            .map(|(id, _)| *id)
            .collect();
        for t in remote {
            self.tracks.remove(&t);
        }
    }

    fn peer_room(&mut self, conn: ConnId, meeting: u64, open: bool) {
        let Some(link) = self.link_mut(conn) else {
            return;
        };
        if !open {
            link.wants.remove(&meeting);
            let tracks: Vec<u32> = self
                .rooms
                .get(&meeting)
                .map(|r| r.tracks.iter().copied().collect())
                .unwrap_or_default();
            for t in tracks {
                self.unsubscribe(t, conn);
            }
            return;
        }
        if !link.wants.insert(meeting) {
            return;
        }
        let Some(room) = self.rooms.get(&meeting) else {
            return;
        };
        // Our state for the peer: who is here, who waits, whether the
        // meeting is locked, what they publish.
        let members: Vec<pb::ParticipantInfo> =
            room.admitted().map(|(id, m)| m.info(*id)).collect();
        let waiting: Vec<(u64, String)> = room
            .members
            .iter()
            .filter(|(_, m)| m.admission == Admission::WaitingRoom)
            .map(|(id, m)| (*id, m.name.clone()))
            .collect();
        if room.locked {
            self.out.push(Output::SendLink(
                conn,
                link_msg(LinkMsg::Lock(pb::LinkLock {
                    meeting_id: meeting,
                    locked: true,
                })),
            ));
        }
        for (pid, display_name) in waiting {
            self.out.push(Output::SendLink(
                conn,
                link_msg(LinkMsg::Waiting(pb::LinkWaiting {
                    meeting_id: meeting,
                    participant_id: pid,
                    display_name,
                    waiting: true,
                })),
            ));
        }
        let local_tracks: Vec<(u32, pb::TrackInfo)> = room
            .tracks
            .iter()
            .filter_map(|id| self.tracks.get(id).map(|t| (*id, t)))
            .filter(|(_, t)| !t.remote)
            .map(|(id, t)| {
                (
                    id,
                    pb::TrackInfo {
                        track_id: id,
                        participant_id: t.owner,
                        kind: t.kind as i32,
                    },
                )
            })
            .collect();
        for info in members {
            self.out.push(Output::SendLink(
                conn,
                link_msg(LinkMsg::ParticipantJoined(pb::LinkParticipant {
                    meeting_id: meeting,
                    info: Some(info),
                })),
            ));
        }
        for (id, info) in local_tracks {
            self.out.push(Output::SendLink(
                conn,
                link_msg(LinkMsg::TrackPublished(pb::LinkTrack {
                    meeting_id: meeting,
                    track: Some(info),
                })),
            ));
            self.subscribe(id, conn);
        }
    }

    fn remote_waiting(&mut self, conn: ConnId, w: pb::LinkWaiting) {
        let Some(room) = self.rooms.get_mut(&w.meeting_id) else {
            return;
        };
        if !w.waiting {
            room.remote_waiting.remove(&w.participant_id);
            return;
        }
        if room.members.contains_key(&w.participant_id) {
            return self.malformed_link_control();
        }
        room.remote_waiting
            .insert(w.participant_id, (conn, w.display_name.clone()));
        self.tell_local_host(w.meeting_id, w.participant_id, w.display_name);
    }

    /// The host here admits someone waiting on another node: that node
    /// lets them in (the link is authenticated, and the host check was
    /// made here).
    pub(super) fn admit_remote(&mut self, meeting: u64, pid: u64) {
        let room = self.rooms.get_mut(&meeting).expect("caller checked");
        if let Some((link, _)) = room.remote_waiting.remove(&pid) {
            self.out.push(Output::SendLink(
                link,
                link_msg(LinkMsg::Admit(pb::LinkAdmit {
                    meeting_id: meeting,
                    participant_id: pid,
                })),
            ));
        }
    }

    fn admitted_by_remote_host(&mut self, meeting: u64, pid: u64) {
        let waiting = self
            .rooms
            .get(&meeting)
            .and_then(|r| r.members.get(&pid))
            .is_some_and(|m| m.admission == Admission::WaitingRoom);
        if waiting {
            self.admit(meeting, pid);
        }
    }

    /// Applies a change to a local member: their tracks, everyone here,
    /// and every peer of the meeting hear of it.
    pub(super) fn change_member(&mut self, meeting: u64, pid: u64, change: MemberChange) {
        let room = self.rooms.get_mut(&meeting).expect("caller checked");
        let Some(m) = room.members.get_mut(&pid) else {
            return;
        };
        match change {
            MemberChange::Muted(v) => m.muted = v,
            MemberChange::CanShareScreen(v) => m.can_share_screen = v,
        }
        self.set_track_enabled(meeting, pid);
        self.broadcast(meeting, member_event(pid, change), None);
        self.tell_links(
            meeting,
            LinkMsg::MemberState(member_state(meeting, pid, change, false)),
        );
    }

    /// The host here changes someone on another node: that node applies it.
    pub(super) fn ask_owner(&mut self, meeting: u64, pid: u64, change: MemberChange) {
        let Some((link, _)) = self.rooms.get(&meeting).and_then(|r| r.remote.get(&pid)) else {
            return;
        };
        let link = *link;
        self.out.push(Output::SendLink(
            link,
            link_msg(LinkMsg::MemberState(member_state(
                meeting, pid, change, true,
            ))),
        ));
    }

    fn remote_member_state(&mut self, conn: ConnId, m: pb::LinkMemberState) {
        use pb::link_member_state::Change;
        let change = match m.change {
            Some(Change::Muted(v)) => MemberChange::Muted(v),
            Some(Change::CanShareScreen(v)) => MemberChange::CanShareScreen(v),
            None => return self.malformed_link_control(),
        };
        let Some(room) = self.rooms.get_mut(&m.meeting_id) else {
            return;
        };
        if m.apply {
            // Only participants unmute themselves, whoever asks (S4).
            if change == MemberChange::Muted(false) || !room.members.contains_key(&m.participant_id)
            {
                return self.malformed_link_control();
            }
            return self.change_member(m.meeting_id, m.participant_id, change);
        }
        let Some((link, info)) = room.remote.get_mut(&m.participant_id) else {
            return;
        };
        if *link != conn {
            return self.malformed_link_control();
        }
        match change {
            MemberChange::Muted(v) => info.muted = v,
            MemberChange::CanShareScreen(v) => info.can_share_screen = v,
        }
        self.broadcast(m.meeting_id, member_event(m.participant_id, change), None);
    }

    fn remote_lock(&mut self, meeting: u64, locked: bool) {
        let Some(room) = self.rooms.get_mut(&meeting) else {
            return;
        };
        if room.locked != locked {
            room.locked = locked;
            self.broadcast(
                meeting,
                OutMsg::LockChanged(pb::LockChanged { locked }),
                None,
            );
        }
    }

    fn remote_joined(&mut self, conn: ConnId, meeting: u64, info: pb::ParticipantInfo) {
        let Some(room) = self.rooms.get_mut(&meeting) else {
            return;
        };
        let pid = info.participant_id;
        if room.members.contains_key(&pid) {
            return self.malformed_link_control();
        }
        room.remote_waiting.remove(&pid);
        let is_host = info.role == pb::Role::Host as i32;
        let had_host = room.host_present();
        room.remote.insert(pid, (conn, info.clone()));
        self.broadcast(meeting, OutMsg::ParticipantJoined(info), None);
        if is_host && !had_host {
            // S4: a host on another node of the cascade counts.
            self.host_arrived(meeting);
        }
    }

    fn remote_left(&mut self, conn: ConnId, meeting: u64, pid: u64) {
        let Some(room) = self.rooms.get_mut(&meeting) else {
            return;
        };
        if room
            .remote_waiting
            .get(&pid)
            .is_some_and(|(c, _)| *c == conn)
        {
            room.remote_waiting.remove(&pid);
        }
        if room.remote.get(&pid).is_some_and(|(c, _)| *c == conn) {
            room.remote.remove(&pid);
            self.broadcast(
                meeting,
                OutMsg::ParticipantLeft(pb::ParticipantLeft {
                    participant_id: pid,
                }),
                None,
            );
        }
    }

    fn remote_track(&mut self, conn: ConnId, meeting: u64, info: pb::TrackInfo) {
        let Some(room) = self.rooms.get(&meeting) else {
            return;
        };
        if self.tracks.contains_key(&info.track_id) {
            return self.malformed_link_control();
        }
        let subscribers: Vec<ConnId> = room.admitted().map(|(_, m)| m.conn).collect();
        self.tracks.insert(
            info.track_id,
            Track {
                meeting,
                owner_conn: conn,
                owner: info.participant_id,
                kind: info.kind(),
                enabled: true,
                subscriber_conns: BTreeSet::new(),
                subscribers: Arc::from(Vec::new()),
                link_subscribers: 0,
                remote: true,
            },
        );
        self.rooms
            .get_mut(&meeting)
            .expect("checked")
            .tracks
            .insert(info.track_id);
        for c in subscribers {
            self.subscribe(info.track_id, c);
        }
        self.broadcast(meeting, OutMsg::TrackPublished(info), None);
    }

    fn remote_track_removed(&mut self, conn: ConnId, track: u32) {
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        if t.owner_conn != conn {
            return;
        }
        let meeting = t.meeting;
        self.tracks.remove(&track);
        if let Some(room) = self.rooms.get_mut(&meeting) {
            room.tracks.remove(&track);
        }
        self.broadcast(
            meeting,
            OutMsg::TrackRemoved(pb::TrackRemoved { track_id: track }),
            None,
        );
    }

    /// A link went down: everyone behind it leaves, its tracks go, and it
    /// stops receiving ours.
    pub(super) fn link_lost(&mut self, conn: ConnId) {
        let tracks: Vec<u32> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.owner_conn == conn)
            .map(|(id, _)| *id)
            .collect();
        for t in tracks {
            self.remote_track_removed(conn, t);
        }
        let gone: Vec<(u64, u64)> = self
            .rooms
            .iter()
            .flat_map(|(m, r)| {
                r.remote
                    .iter()
                    .filter(|(_, (c, _))| *c == conn)
                    .map(|(p, _)| (*m, *p))
            })
            .collect();
        for (meeting, pid) in gone {
            self.remote_left(conn, meeting, pid);
        }
        for room in self.rooms.values_mut() {
            room.remote_waiting.retain(|_, (link, _)| *link != conn);
        }
        let subscribed: Vec<u32> = self
            .tracks
            .iter()
            .filter(|(_, t)| t.subscriber_conns.contains(&conn))
            .map(|(id, _)| *id)
            .collect();
        for t in subscribed {
            self.unsubscribe(t, conn);
        }
    }
}

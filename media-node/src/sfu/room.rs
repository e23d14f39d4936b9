//! One meeting's membership and security policy (S3–S7). Pure bookkeeping:
//! the [`Sfu`](super::Sfu) calls in here and turns the answers into messages.

use std::collections::{BTreeMap, BTreeSet};

use fjord_proto::v1 as pb;

use super::ConnId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Waiting for the host to arrive (S4).
    HostAbsent,
    /// In the waiting room until the host admits them (S3).
    WaitingRoom,
    Admitted,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub conn: ConnId,
    pub name: String,
    pub role: pb::Role,
    pub admission: Admission,
    pub muted: bool,
    pub can_share_screen: bool,
    /// Order of arrival, to pick the next host when one disconnects.
    pub joined_seq: u64,
    /// In a webinar: may send media (the host, and whom the host makes one).
    pub panelist: bool,
    /// When they were let in (0 while waiting): a stay ends no earlier.
    pub admitted_ms: u64,
}

impl Member {
    pub fn info(&self, id: u64) -> pb::ParticipantInfo {
        pb::ParticipantInfo {
            participant_id: id,
            display_name: self.name.clone(),
            role: self.role as i32,
            muted: self.muted,
            can_share_screen: self.can_share_screen,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    Off,
    AwaitingHost { requested_by: u64 },
    AwaitingConsent { requested_by: u64 },
    On { requested_by: u64 },
}

impl Recording {
    pub fn requested_by(&self) -> u64 {
        match *self {
            Recording::Off => 0,
            Recording::AwaitingHost { requested_by }
            | Recording::AwaitingConsent { requested_by }
            | Recording::On { requested_by } => requested_by,
        }
    }

    pub fn wire(&self) -> pb::RecordingState {
        match self {
            Recording::Off => pb::RecordingState::Off,
            Recording::AwaitingHost { .. } => pb::RecordingState::AwaitingHost,
            Recording::AwaitingConsent { .. } => pb::RecordingState::AwaitingConsent,
            Recording::On { .. } => pb::RecordingState::On,
        }
    }

    pub fn changed(&self) -> pb::server_message::Msg {
        pb::server_message::Msg::RecordingChanged(pb::RecordingChanged {
            state: self.wire() as i32,
            requested_by: self.requested_by(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Room {
    pub meeting_id: u64,
    pub settings: pb::MeetingSettings,
    pub host: Option<u64>,
    pub locked: bool,
    pub members: BTreeMap<u64, Member>,
    pub recording: Recording,
    /// Who has consented to the recording being asked for now.
    pub consents: BTreeSet<u64>,
    /// Tracks published in this room.
    pub tracks: BTreeSet<u32>,
    next_seq: u64,
    /// Consecutive control-plane updates that did not list this meeting.
    pub missing_from_assignments: u32,
    /// When the first of them came (node clock, ms).
    pub missing_since_ms: Option<u64>,
    /// Participants of a cascaded meeting who are on other nodes, with the
    /// link they are behind.
    pub remote: BTreeMap<u64, (ConnId, pb::ParticipantInfo)>,
    /// Participants waiting on other nodes of the cascade (for a host
    /// here to admit), with their link and display name.
    pub remote_waiting: BTreeMap<u64, (ConnId, String)>,
    /// When the control plane said the meeting moved away; the room keeps
    /// forwarding for a grace period while participants switch over.
    pub moved_at_ms: Option<u64>,
    /// Panelists send, attendees only receive and see only panelists.
    pub webinar: bool,
    /// The licence's duration limit, counted from when the room opened.
    pub time_limit: Option<TimeLimit>,
    pub opened_at_ms: u64,
    /// Whether participants were warned of the coming end.
    pub warned: bool,
}

/// A tier's duration limit on a meeting (basic accounts end at 40 minutes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimit {
    pub limit_ms: u64,
    pub warn_before_ms: u64,
}

/// What the join token says about the meeting as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomTerms {
    pub webinar: bool,
    pub time_limit: Option<TimeLimit>,
}

impl RoomTerms {
    pub fn of(claims: &pb::JoinClaims) -> RoomTerms {
        RoomTerms {
            webinar: claims.webinar,
            time_limit: (claims.time_limit_s > 0).then(|| TimeLimit {
                limit_ms: u64::from(claims.time_limit_s) * 1000,
                warn_before_ms: u64::from(claims.warn_before_end_s.min(claims.time_limit_s)) * 1000,
            }),
        }
    }
}

impl Room {
    pub fn new(
        meeting_id: u64,
        settings: pb::MeetingSettings,
        terms: RoomTerms,
        now_ms: u64,
    ) -> Self {
        Room {
            webinar: terms.webinar,
            time_limit: terms.time_limit,
            opened_at_ms: now_ms,
            warned: false,
            meeting_id,
            settings,
            host: None,
            locked: false,
            members: BTreeMap::new(),
            recording: Recording::Off,
            consents: BTreeSet::new(),
            tracks: BTreeSet::new(),
            next_seq: 0,
            missing_from_assignments: 0,
            missing_since_ms: None,
            remote: BTreeMap::new(),
            remote_waiting: BTreeMap::new(),
            moved_at_ms: None,
        }
    }

    pub fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// In a webinar, someone who only receives.
    pub fn is_attendee(&self, pid: u64) -> bool {
        self.webinar && self.members.get(&pid).is_some_and(|m| !m.panelist)
    }

    pub fn is_host(&self, pid: u64) -> bool {
        self.host == Some(pid)
    }

    pub fn admitted(&self) -> impl Iterator<Item = (&u64, &Member)> {
        self.members
            .iter()
            .filter(|(_, m)| m.admission == Admission::Admitted)
    }

    /// Where a newcomer with `role` starts (S3, S4).
    pub fn admission_for(&self, role: pb::Role) -> Admission {
        if role == pb::Role::Host {
            return Admission::Admitted;
        }
        if !self.host_present() && !self.settings.allow_join_before_host {
            return Admission::HostAbsent;
        }
        if !self.settings.disable_waiting_room {
            return Admission::WaitingRoom;
        }
        Admission::Admitted
    }

    /// A host is in the meeting, here or on another node of the cascade.
    pub fn host_present(&self) -> bool {
        self.host.is_some()
            || self
                .remote
                .values()
                .any(|(_, p)| p.role == pb::Role::Host as i32)
    }

    /// The admitted member who arrived first, other than `except`.
    pub fn longest_present(&self, except: u64) -> Option<u64> {
        self.admitted()
            .filter(|(id, _)| **id != except)
            .min_by_key(|(_, m)| m.joined_seq)
            .map(|(id, _)| *id)
    }

    /// Whether every admitted member has consented to the recording.
    pub fn all_consented(&self) -> bool {
        self.admitted().all(|(id, _)| self.consents.contains(id))
    }
}

use serde::{Deserialize, Serialize};

use crate::licensing::MeetingKind;
use crate::placement::Decision;

pub use crate::model::{Node, NodeState, NodeTable, Reservation, Reservations};

/// Placement decisions a meeting keeps (the first and the latest).
pub const MAX_DECISIONS_KEPT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub name: String,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Institution {
    pub name: String,
    /// Region whose nodes (and nested regions' nodes) may process meetings.
    pub residency: String,
    /// Region filled first; the rest of the residency takes overflow.
    pub home_region: String,
    pub max_participants: u32,
    pub created_at_ms: u64,
}

/// A node as operators see it: the stored node plus figures derived at read time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    pub region: String,
    pub address: String,
    pub capacity: u32,
    pub state: NodeState,
    pub last_heartbeat_ms: u64,
    pub load_participants: u32,
    pub reserved_now: u32,
    /// The most participants reserved at any moment of the coming hour
    /// (what pools are sized from).
    #[serde(default)]
    pub reserved_next_hour: u32,
    pub meetings: u32,
    pub registered_at_ms: u64,
    pub index: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingState {
    Placed,
    Unplaced,
    Ended,
}

impl MeetingState {
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingState::Placed => "placed",
            MeetingState::Unplaced => "unplaced",
            MeetingState::Ended => "ended",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredMeeting")]
pub struct Meeting {
    pub id: u64,
    pub institution: String,
    pub participants: u32,
    pub start_ms: u64,
    pub end_ms: u64,
    pub state: MeetingState,
    /// The nodes carrying the meeting and how many participants each holds:
    /// one share normally, several when the meeting cascades (M4). The
    /// first share is the meeting's primary node. Empty unless placed.
    pub shares: Vec<Share>,
    pub created_at_ms: u64,
    pub ended_at_ms: Option<u64>,
    pub request_id: Option<String>,
    /// Every placement decision for this meeting, oldest first.
    pub decisions: Vec<Decision>,
    #[serde(default)]
    pub access: MeetingAccess,
    #[serde(default)]
    pub kind: MeetingKind,
    /// The licence's duration limit, which the media node enforces.
    #[serde(default)]
    pub time_limit: Option<TimeLimit>,
}

/// A tier's duration limit on a meeting: the node ends it this long after
/// it opened, warning participants first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeLimit {
    pub max_duration_s: u32,
    pub warn_before_end_s: u32,
}

/// A meeting as stored: the current form, or the one from before
/// cascading, which named a single `node` and had no shares. Snapshots and
/// logs written by earlier versions load into the current form.
#[derive(Deserialize)]
struct StoredMeeting {
    id: u64,
    institution: String,
    participants: u32,
    start_ms: u64,
    end_ms: u64,
    state: MeetingState,
    #[serde(default)]
    shares: Vec<Share>,
    #[serde(default)]
    node: Option<String>,
    created_at_ms: u64,
    ended_at_ms: Option<u64>,
    request_id: Option<String>,
    decisions: Vec<Decision>,
    #[serde(default)]
    access: MeetingAccess,
    #[serde(default)]
    kind: MeetingKind,
    #[serde(default)]
    time_limit: Option<TimeLimit>,
}

impl From<StoredMeeting> for Meeting {
    fn from(m: StoredMeeting) -> Meeting {
        let shares = match (m.shares.is_empty(), m.node) {
            (true, Some(node)) => vec![Share {
                node,
                participants: m.participants,
            }],
            _ => m.shares,
        };
        Meeting {
            id: m.id,
            institution: m.institution,
            participants: m.participants,
            start_ms: m.start_ms,
            end_ms: m.end_ms,
            state: m.state,
            shares,
            created_at_ms: m.created_at_ms,
            ended_at_ms: m.ended_at_ms,
            request_id: m.request_id,
            decisions: m.decisions,
            access: m.access,
            kind: m.kind,
            time_limit: m.time_limit,
        }
    }
}

/// One node's part of a meeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub node: String,
    pub participants: u32,
}

impl Meeting {
    /// The primary node (first share), if placed.
    pub fn node(&self) -> Option<&str> {
        self.shares.first().map(|s| s.node.as_str())
    }

    pub fn share_on(&self, node: &str) -> Option<&Share> {
        self.shares.iter().find(|s| s.node == node)
    }

    pub fn is_cascaded(&self) -> bool {
        self.shares.len() > 1
    }

    /// Adds a placement decision to the meeting's history, which keeps the
    /// first (the one that scheduled it) and the latest ones, at most
    /// [`MAX_DECISIONS_KEPT`] in all: a long meeting on a flapping node
    /// must not grow without bound.
    pub fn record_decision(&mut self, decision: Decision) {
        if self.decisions.len() >= MAX_DECISIONS_KEPT {
            self.decisions.remove(1);
        }
        self.decisions.push(decision);
    }
}

/// Per-meeting security settings; `Default` is the secure choice for each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingSettings {
    pub disable_waiting_room: bool,
    pub allow_join_before_host: bool,
    pub disable_self_rename: bool,
    pub e2ee: bool,
}

/// Who may join a meeting, and how. The secrets are drawn from the
/// operating system's RNG by the API layer before the command is proposed
/// (the state machine itself must stay deterministic), and live only in the
/// on-premise Raft state.
///
/// The secrets themselves are not stored: `secret_salt` is random, and the
/// passcode, host key and PIN are derived from it with the cluster's
/// key-encryption key (a file on each replica, never in the log), so the
/// Raft log and snapshots hold nothing a reader could join with
/// (`crate::access::Kek::meeting_secrets`).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeetingAccess {
    /// 32 random bytes, hex: the input the secrets are derived from.
    #[serde(default)]
    pub secret_salt: String,
    /// Meetings stored before secrets were derived kept them in plaintext;
    /// they still load and work, and are empty for every newer meeting.
    #[serde(default, alias = "passcode", skip_serializing_if = "String::is_empty")]
    pub legacy_passcode: String,
    #[serde(default, alias = "host_key", skip_serializing_if = "String::is_empty")]
    pub legacy_host_key: String,
    #[serde(default, alias = "pin", skip_serializing_if = "String::is_empty")]
    pub legacy_pin: String,
    pub settings: MeetingSettings,
}

impl std::fmt::Debug for MeetingAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secret material, even the salt.
        f.debug_struct("MeetingAccess")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

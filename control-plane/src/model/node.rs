//! A media node as the control plane records it, and the capacity it has
//! reserved for meetings.

use serde::{Deserialize, Serialize};

use super::Reservations;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Ready,
    Draining,
    Down,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// Capacity held for one meeting over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub start_ms: u64,
    pub end_ms: u64,
    pub participants: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub region: String,
    pub address: String,
    /// Participants the node can carry at once.
    pub capacity: u32,
    pub state: NodeState,
    pub last_heartbeat_ms: u64,
    /// Participants connected at the last committed heartbeat summary.
    pub load_participants: u32,
    pub registered_at_ms: u64,
    /// The node's QUIC certificate (DER), handed to joining participants.
    #[serde(default)]
    pub certificate: Vec<u8>,
    /// Cluster-unique small number, fixed at first registration. Media
    /// nodes put it in the top bits of the track ids they allocate, so the
    /// tracks of a meeting cascaded over several nodes never collide.
    #[serde(default)]
    pub index: u32,
    /// Reservations by meeting id, indexed for window peaks.
    pub reservations: Reservations,
}

impl Node {
    /// The most participants reserved at any one instant in `[start, end)`.
    pub fn peak_reserved(&self, start_ms: u64, end_ms: u64) -> u32 {
        self.reservations.peak(start_ms, end_ms)
    }

    /// Participants reserved at one instant.
    pub fn reserved_at(&self, t_ms: u64) -> u32 {
        self.reservations.at(t_ms)
    }

    /// Capacity in use over `[start, end)`: the reservation peak, or the
    /// reported load when the window includes now and the node carries more
    /// than it reserved (ad-hoc joins, larger-than-planned meetings).
    pub fn used_over(&self, start_ms: u64, end_ms: u64, now_ms: u64) -> u32 {
        let peak = self.peak_reserved(start_ms, end_ms);
        if start_ms <= now_ms && now_ms < end_ms {
            peak.max(self.load_participants)
        } else {
            peak
        }
    }
}

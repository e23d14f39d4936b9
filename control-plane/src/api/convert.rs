//! Domain types -> protobuf messages (one direction: requests are validated
//! field by field in the handlers).

use fjord_proto::v1 as pb;

use crate::placement::{Decision, Outcome, Strategy};
use crate::raft::{ClusterStatus, MemberInfo};
use crate::state::{Institution, Meeting, MeetingState, NodeState, NodeView};

pub fn institution(i: &Institution) -> pb::Institution {
    pb::Institution {
        name: i.name.clone(),
        residency: i.residency.clone(),
        max_participants: i.max_participants,
        created_at_ms: i.created_at_ms,
        home_region: i.home_region.clone(),
    }
}

pub fn node_state(s: NodeState) -> pb::NodeState {
    match s {
        NodeState::Ready => pb::NodeState::Ready,
        NodeState::Draining => pb::NodeState::Draining,
        NodeState::Down => pb::NodeState::Down,
    }
}

pub fn node(n: &NodeView) -> pb::MediaNode {
    pb::MediaNode {
        id: n.id.clone(),
        region: n.region.clone(),
        address: n.address.clone(),
        capacity: n.capacity,
        state: node_state(n.state) as i32,
        last_heartbeat_ms: n.last_heartbeat_ms,
        load_participants: n.load_participants,
        reserved_now: n.reserved_now,
        reserved_next_hour: n.reserved_next_hour,
        meetings: n.meetings,
        registered_at_ms: n.registered_at_ms,
        index: n.index,
    }
}

pub fn meeting(m: &Meeting) -> pb::Meeting {
    pb::Meeting {
        id: m.id,
        institution: m.institution.clone(),
        participants: m.participants,
        start_ms: m.start_ms,
        end_ms: m.end_ms,
        state: match m.state {
            MeetingState::Placed => pb::MeetingState::Placed,
            MeetingState::Unplaced => pb::MeetingState::Unplaced,
            MeetingState::Ended => pb::MeetingState::Ended,
        } as i32,
        node_id: m.node().unwrap_or_default().to_string(),
        created_at_ms: m.created_at_ms,
        ended_at_ms: m.ended_at_ms.unwrap_or(0),
        placements: m.decisions.len() as u32,
        settings: Some(settings(&m.access.settings)),
        shares: m
            .shares
            .iter()
            .map(|s| pb::Share {
                node_id: s.node.clone(),
                region: String::new(),
                participants: s.participants,
            })
            .collect(),
        kind: m.kind.as_str().to_string(),
        time_limit_s: m.time_limit.map_or(0, |t| t.max_duration_s),
        warn_before_end_s: m.time_limit.map_or(0, |t| t.warn_before_end_s),
    }
}

pub fn settings(s: &crate::state::MeetingSettings) -> pb::MeetingSettings {
    pb::MeetingSettings {
        disable_waiting_room: s.disable_waiting_room,
        allow_join_before_host: s.allow_join_before_host,
        disable_self_rename: s.disable_self_rename,
        e2ee: s.e2ee,
    }
}

pub fn settings_from(s: Option<pb::MeetingSettings>) -> crate::state::MeetingSettings {
    let s = s.unwrap_or_default();
    crate::state::MeetingSettings {
        disable_waiting_room: s.disable_waiting_room,
        allow_join_before_host: s.allow_join_before_host,
        disable_self_rename: s.disable_self_rename,
        e2ee: s.e2ee,
    }
}

pub fn decision(d: &Decision) -> pb::Decision {
    let (chosen_node, chosen_score_permille, refusal) = match &d.outcome {
        Outcome::Placed {
            node,
            score_permille,
            ..
        } => (node.clone(), *score_permille, String::new()),
        Outcome::Cascaded { shares } => (
            shares.first().map(|s| s.node.clone()).unwrap_or_default(),
            0,
            String::new(),
        ),
        Outcome::Refused { refusal } => (String::new(), 0, refusal.to_string()),
    };
    pb::Decision {
        at_ms: d.at_ms,
        trigger: match &d.trigger {
            crate::placement::Trigger::NodeDown { node }
            | crate::placement::Trigger::Move { node }
            | crate::placement::Trigger::Evacuate { node } => {
                format!("{}:{node}", d.trigger.as_str())
            }
            t => t.as_str().to_string(),
        },
        strategy: match d.strategy {
            Strategy::LeastLoaded => pb::PlacementStrategy::LeastLoaded,
            Strategy::PowerOfTwo => pb::PlacementStrategy::PowerOfTwo,
        } as i32,
        considered: d.considered,
        candidates: d
            .candidates
            .iter()
            .map(|c| pb::Candidate {
                node_id: c.node.to_string(),
                score_permille: c.score_permille,
                in_home_region: c.in_home_region,
            })
            .collect(),
        rejections: d
            .rejections
            .iter()
            .map(|r| pb::Rejection {
                node_id: r.node.to_string(),
                node_region: r.region.to_string(),
                reason: r.reason.as_str().to_string(),
                detail: r
                    .free
                    .map(|f| format!("{f} participants free over the window"))
                    .unwrap_or_default(),
            })
            .collect(),
        rejection_counts: d
            .rejection_counts
            .iter()
            .map(|(r, n)| pb::RejectionCount {
                reason: r.as_str().to_string(),
                count: *n,
            })
            .collect(),
        chosen_node,
        chosen_score_permille,
        refusal,
        allowed_regions: d.allowed_regions.clone(),
        home_region: d.home_region.clone(),
        shares: match &d.outcome {
            Outcome::Cascaded { shares } => shares
                .iter()
                .map(|s| pb::Share {
                    node_id: s.node.clone(),
                    region: s.region.clone(),
                    participants: s.participants,
                })
                .collect(),
            Outcome::Placed { .. } | Outcome::Refused { .. } => Vec::new(),
        },
    }
}

pub fn members(m: &[MemberInfo]) -> Vec<pb::Member> {
    m.iter()
        .map(|m| pb::Member {
            id: m.id,
            address: m.address.clone(),
            voter: m.voter,
        })
        .collect()
}

pub fn status(s: &ClusterStatus) -> pb::StatusResponse {
    pb::StatusResponse {
        replica_id: s.replica_id,
        leader_id: s.leader.as_ref().map(|l| l.0).unwrap_or(0),
        leader_address: s.leader.as_ref().map(|l| l.1.clone()).unwrap_or_default(),
        term: s.term,
        last_log_index: s.last_log_index,
        last_applied_index: s.last_applied_index,
        members: members(&s.members),
        snapshot_index: s.snapshot_index,
    }
}

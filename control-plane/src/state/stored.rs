//! The state as snapshots store it: one flat record with the field names
//! every earlier version wrote, whatever sub-state each field now lives in,
//! so snapshots from before the split load and new ones load in them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

/// Borrowed, for writing.
#[derive(Serialize)]
struct StoredRef<'a> {
    regions: &'a BTreeMap<String, Region>,
    institutions: &'a BTreeMap<String, Institution>,
    nodes: &'a NodeTable,
    meetings: &'a BTreeMap<u64, Meeting>,
    next_meeting_id: u64,
    request_ids: &'a BTreeMap<String, u64>,
    open_by_end: &'a BTreeSet<(u64, u64)>,
    ended_by_time: &'a BTreeSet<(u64, u64)>,
    unplaced: &'a BTreeSet<u64>,
    short: &'a BTreeSet<u64>,
    recent_answers: &'a BTreeMap<u64, RecentAnswer>,
    recent_ops: &'a BTreeMap<u64, Response>,
    recent_ops_by_time: &'a BTreeSet<(u64, u64)>,
    join_key: &'a Option<Vec<u8>>,
    join_key_salt: &'a Option<Vec<u8>>,
    last_node_index: u32,
    licences: &'a Licences,
    accounts: &'a Accounts,
    ledger: &'a Ledger,
    sla: &'a SlaState,
    metadata: &'a MetadataState,
}

/// Owned, for reading; fields later versions added default when absent.
#[derive(Deserialize)]
struct Stored {
    regions: BTreeMap<String, Region>,
    institutions: BTreeMap<String, Institution>,
    nodes: NodeTable,
    meetings: BTreeMap<u64, Meeting>,
    next_meeting_id: u64,
    request_ids: BTreeMap<String, u64>,
    open_by_end: BTreeSet<(u64, u64)>,
    ended_by_time: BTreeSet<(u64, u64)>,
    unplaced: BTreeSet<u64>,
    #[serde(default)]
    short: BTreeSet<u64>,
    #[serde(default)]
    recent_answers: BTreeMap<u64, RecentAnswer>,
    #[serde(default)]
    recent_ops: BTreeMap<u64, Response>,
    recent_ops_by_time: BTreeSet<(u64, u64)>,
    #[serde(default)]
    join_key: Option<Vec<u8>>,
    #[serde(default)]
    join_key_salt: Option<Vec<u8>>,
    #[serde(default)]
    last_node_index: u32,
    #[serde(default)]
    licences: Licences,
    #[serde(default)]
    accounts: Accounts,
    #[serde(default)]
    ledger: Ledger,
    #[serde(default)]
    sla: SlaState,
    #[serde(default)]
    metadata: MetadataState,
}

impl Serialize for ClusterState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StoredRef {
            regions: &self.institutions.regions,
            institutions: &self.institutions.by_name,
            nodes: &self.nodes,
            meetings: &self.meetings.by_id,
            next_meeting_id: self.meetings.next_id,
            request_ids: &self.meetings.request_ids,
            open_by_end: &self.meetings.open_by_end,
            ended_by_time: &self.meetings.ended_by_time,
            unplaced: &self.meetings.unplaced,
            short: &self.meetings.short,
            recent_answers: &self.answers.compact,
            recent_ops: &self.answers.full,
            recent_ops_by_time: &self.answers.by_time,
            join_key: &self.access.key,
            join_key_salt: &self.access.salt,
            last_node_index: self.last_node_index,
            licences: &self.licences,
            accounts: &self.accounts,
            ledger: &self.ledger,
            sla: &self.sla,
            metadata: &self.metadata,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ClusterState {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Stored::deserialize(d)?;
        Ok(ClusterState {
            institutions: Institutions {
                regions: s.regions,
                by_name: s.institutions,
            },
            nodes: s.nodes,
            meetings: Meetings {
                by_id: s.meetings,
                next_id: s.next_meeting_id,
                request_ids: s.request_ids,
                open_by_end: s.open_by_end,
                ended_by_time: s.ended_by_time,
                unplaced: s.unplaced,
                short: s.short,
            },
            access: JoinKeys {
                key: s.join_key,
                salt: s.join_key_salt,
            },
            answers: RecentAnswers {
                compact: s.recent_answers,
                full: s.recent_ops,
                by_time: s.recent_ops_by_time,
            },
            last_node_index: s.last_node_index,
            licences: s.licences,
            accounts: s.accounts,
            ledger: s.ledger,
            sla: s.sla,
            metadata: s.metadata,
        })
    }
}

//! The metadata outbox: which cloud-tier records changed and have not been
//! written to the metadata store yet.
//!
//! `apply` marks a record's key whenever what the record is built from
//! changes (an institution created, a licence version recorded, a meeting
//! scheduled, placed, moved, ended or pruned, a node's state, a day's usage
//! totals). Marks coalesce: a key holds only its latest version, so the
//! outbox is bounded by the number of records, whatever the write rate or
//! however long the store is away. The leader's writer builds each record
//! from the state it reads, writes it (or deletes it when its source is
//! gone) and commits [`MetadataSynced`] with the versions it wrote; a mark
//! made meanwhile has a newer version and stays. A new leader resumes from
//! the same outbox, so a write is repeated at worst, never lost, and puts
//! are idempotent.
//!
//! `revision` is the store revision up to which the control plane has taken
//! in changes made in the cloud tier (what `fjord ctl metadata status`
//! shows). A writer whose watch breaks resumes after the last revision it
//! saw; a new leader reads the whole store first, so a change made while no
//! one watched is judged all the same.

use jiff::civil::Date;

use super::*;

/// Most outbox entries one [`MetadataSynced`] may clear.
pub const MAX_SYNCED_PER_COMMAND: usize = 10_000;

/// A record's identity (its key in the store, without the prefix).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MetaKey {
    Institution { name: String },
    Licence { institution: String, version: u32 },
    Meeting { id: u64 },
    Node { id: String },
    DailyUsage { institution: String, date: Date },
}

impl MetaKey {
    /// The key under the store's prefix: `institutions/uio`,
    /// `licences/uio/0000000003`, `meetings/00000000000000000042`,
    /// `nodes/eu-1`, `usage/uio/2026-11-24`. Fixed-width numbers keep a
    /// range read in numeric order.
    pub fn path(&self) -> String {
        match self {
            MetaKey::Institution { name } => format!("institutions/{name}"),
            MetaKey::Licence {
                institution,
                version,
            } => format!("licences/{institution}/{version:010}"),
            MetaKey::Meeting { id } => format!("meetings/{id:020}"),
            MetaKey::Node { id } => format!("nodes/{id}"),
            MetaKey::DailyUsage { institution, date } => format!("usage/{institution}/{date}"),
        }
    }

    /// The inverse of [`MetaKey::path`]; `None` for anything else
    /// (including a number not written in the fixed width).
    pub fn parse(path: &str) -> Option<MetaKey> {
        let mut parts = path.split('/');
        let key = match (parts.next()?, parts.next()?, parts.next()) {
            ("institutions", name, None) => MetaKey::Institution {
                name: name.to_string(),
            },
            ("licences", institution, Some(v)) if v.len() == 10 => MetaKey::Licence {
                institution: institution.to_string(),
                version: v.parse().ok()?,
            },
            ("meetings", id, None) if id.len() == 20 => MetaKey::Meeting {
                id: id.parse().ok()?,
            },
            ("nodes", id, None) => MetaKey::Node { id: id.to_string() },
            ("usage", institution, Some(d)) => MetaKey::DailyUsage {
                institution: institution.to_string(),
                date: d.parse().ok()?,
            },
            _ => return None,
        };
        if parts.next().is_some() || key.path() != path {
            return None;
        }
        Some(key)
    }
}

/// A key waiting to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Bumped by every change; the writer clears only the version it wrote.
    pub version: u64,
    /// When the oldest change not yet written was made (lag).
    pub since_ms: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MetadataState {
    #[serde(with = "crate::sla::as_pairs")]
    pub outbox: BTreeMap<MetaKey, Pending>,
    pub last_version: u64,
    /// Store revision up to which cloud-tier changes have been taken in.
    pub revision: u64,
    /// Records written and cleared from the outbox since the cluster began.
    pub synced_total: u64,
    /// The time of the request being applied (set first thing by `apply`;
    /// marks made while applying it carry it).
    #[serde(skip)]
    clock_ms: u64,
}

/// Equal by what is replicated (the clock is only the request in hand).
impl PartialEq for MetadataState {
    fn eq(&self, o: &Self) -> bool {
        self.outbox == o.outbox
            && self.last_version == o.last_version
            && self.revision == o.revision
            && self.synced_total == o.synced_total
    }
}

impl Eq for MetadataState {}

impl MetadataState {
    pub(super) fn set_clock(&mut self, now_ms: u64) {
        self.clock_ms = now_ms;
    }

    pub(super) fn mark(&mut self, key: MetaKey) {
        self.last_version += 1;
        let version = self.last_version;
        let since_ms = self.clock_ms;
        self.outbox
            .entry(key)
            .and_modify(|p| p.version = version)
            .or_insert(Pending { version, since_ms });
    }

    pub(super) fn mark_meeting(&mut self, id: u64) {
        self.mark(MetaKey::Meeting { id });
    }

    /// The oldest change still waiting, if any (for the lag).
    pub fn oldest_pending_ms(&self) -> Option<u64> {
        self.outbox.values().map(|p| p.since_ms).min()
    }
}

/// The writer wrote these versions; `revision`: the store revision the
/// control plane has now taken in (never lowered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataSynced {
    #[serde(default)]
    pub written: Vec<(MetaKey, u64)>,
    #[serde(default)]
    pub revision: u64,
}

impl ClusterState {
    pub(super) fn metadata_synced(&mut self, c: &MetadataSynced) -> Response {
        if c.written.len() > MAX_SYNCED_PER_COMMAND {
            return Err(StateError::TooManyEvents {
                max: MAX_SYNCED_PER_COMMAND as u32,
            });
        }
        let mut cleared = 0u32;
        for (key, version) in &c.written {
            if self
                .metadata
                .outbox
                .get(key)
                .is_some_and(|p| p.version == *version)
            {
                self.metadata.outbox.remove(key);
                cleared += 1;
            }
        }
        self.metadata.synced_total += u64::from(cleared);
        self.metadata.revision = self.metadata.revision.max(c.revision);
        Ok(Output::MetadataSynced {
            cleared,
            pending: self.metadata.outbox.len() as u64,
            revision: self.metadata.revision,
        })
    }

    /// Every key the store should hold now (for a full reconcile).
    pub fn metadata_keys(&self) -> Vec<MetaKey> {
        let mut keys = Vec::new();
        for name in self.institutions.by_name.keys() {
            keys.push(MetaKey::Institution { name: name.clone() });
        }
        for (institution, l) in &self.licences.by_institution {
            for v in &l.history {
                keys.push(MetaKey::Licence {
                    institution: institution.clone(),
                    version: v.version,
                });
            }
        }
        for id in self.meetings.by_id.keys() {
            keys.push(MetaKey::Meeting { id: *id });
        }
        for id in self.nodes.keys() {
            keys.push(MetaKey::Node { id: id.to_string() });
        }
        for (institution, days) in &self.ledger.daily {
            for date in days.keys() {
                keys.push(MetaKey::DailyUsage {
                    institution: institution.clone(),
                    date: *date,
                });
            }
        }
        keys
    }

    /// Moves the days the ledger's last change touched into the outbox.
    pub(super) fn mark_touched_days(&mut self) {
        for (institution, date) in self.ledger.take_touched_days() {
            self.metadata
                .mark(MetaKey::DailyUsage { institution, date });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_their_paths_and_nothing_else_parses() {
        let keys = [
            MetaKey::Institution { name: "uio".into() },
            MetaKey::Licence {
                institution: "uio".into(),
                version: 3,
            },
            MetaKey::Meeting { id: 42 },
            MetaKey::Meeting { id: u64::MAX },
            MetaKey::Node { id: "eu-1".into() },
            MetaKey::DailyUsage {
                institution: "uio".into(),
                date: Date::constant(2026, 11, 24),
            },
        ];
        for k in keys {
            assert_eq!(MetaKey::parse(&k.path()), Some(k.clone()), "{}", k.path());
        }
        for bad in [
            "",
            "institutions",
            "institutions/uio/x",
            "meetings/42",
            "licences/uio/3",
            "usage/uio/2026-13-01",
            "other/x",
        ] {
            assert_eq!(MetaKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn marks_coalesce_and_a_write_clears_only_the_version_it_wrote() {
        let mut m = MetadataState::default();
        m.set_clock(1_000);
        m.mark_meeting(7);
        m.set_clock(2_000);
        m.mark_meeting(7);
        assert_eq!(m.outbox.len(), 1);
        let p = m.outbox[&MetaKey::Meeting { id: 7 }];
        assert_eq!((p.version, p.since_ms), (2, 1_000));
        assert_eq!(m.oldest_pending_ms(), Some(1_000));

        let mut s = ClusterState {
            metadata: m,
            ..Default::default()
        };
        // The writer wrote version 1; version 2 came after, so it stays.
        let out = s
            .metadata_synced(&MetadataSynced {
                written: vec![(MetaKey::Meeting { id: 7 }, 1)],
                revision: 10,
            })
            .unwrap();
        assert!(matches!(
            out,
            Output::MetadataSynced {
                cleared: 0,
                pending: 1,
                revision: 10
            }
        ));
        s.metadata_synced(&MetadataSynced {
            written: vec![(MetaKey::Meeting { id: 7 }, 2)],
            revision: 5,
        })
        .unwrap();
        assert!(s.metadata.outbox.is_empty());
        // The revision never goes back.
        assert_eq!(s.metadata.revision, 10);
        assert_eq!(s.metadata.synced_total, 1);
    }
}

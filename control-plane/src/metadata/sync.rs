//! What the store should hold, and what to do about what it does hold: the
//! pure half of the metadata tier. The writer and the watcher
//! (`drivers::metadata`) only carry out the verdicts given here.
//!
//! The control plane is the system of record: a record the store holds
//! that differs from the state's is written back (or deleted when the state
//! has none). One kind of change is taken in from the cloud tier: a licence
//! version written there (a new version, or an edited one). It becomes a
//! new dated version in the control plane — contact points kept from the
//! licence in force, since the cloud tier never holds them — and the key it
//! came in under is then restored to the control plane's history, which is
//! never rewritten.

use std::collections::BTreeMap;

use super::records::{IdentError, MetadataRecord};
use crate::licensing::LicenceTerms;
use crate::state::{ClusterState, MetaKey, Reporter, SetLicence};

/// The record the store should hold under `key` now; `None`: nothing (its
/// source is gone). An entity whose names do not make identifiers is never
/// written ([`IdentError`]).
pub fn desired(state: &ClusterState, key: &MetaKey) -> Result<Option<MetadataRecord>, IdentError> {
    match key {
        MetaKey::Institution { name } => state
            .institutions
            .get(name)
            .map(MetadataRecord::institution)
            .transpose(),
        MetaKey::Licence {
            institution,
            version,
        } => state
            .licences
            .get(institution)
            .and_then(|l| l.history.iter().find(|v| v.version == *version))
            .map(|v| MetadataRecord::licence(institution, v.version, v.effective, &v.terms))
            .transpose(),
        MetaKey::Meeting { id } => state
            .meetings
            .get(id)
            .map(|m| {
                let regions: Vec<&str> = m
                    .shares
                    .iter()
                    .filter_map(|s| state.nodes.get(&s.node).map(|n| n.region.as_str()))
                    .collect();
                MetadataRecord::meeting(m, &regions)
            })
            .transpose(),
        MetaKey::Node { id } => state
            .nodes
            .get(id)
            .map(|n| MetadataRecord::node(&n.id, &n.region, n.capacity, n.state))
            .transpose(),
        MetaKey::DailyUsage { institution, date } => state
            .ledger
            .daily
            .get(institution)
            .and_then(|days| days.get(date))
            .map(|t| MetadataRecord::daily_usage(institution, *date, t))
            .transpose(),
    }
}

/// What to do about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    InSync,
    /// Write the state's record (or delete the key when `None`).
    Restore(Option<MetadataRecord>),
    /// A licence version written in the cloud tier: apply `edit`, then
    /// restore the key.
    LicenceEdit {
        edit: Box<SetLicence>,
        restore: Option<MetadataRecord>,
    },
    /// A licence version written in the cloud tier that cannot be taken in
    /// (no licence to take contact points from, or a record that does not
    /// decode); the key is restored.
    Refused {
        reason: RefusedEdit,
        restore: Option<MetadataRecord>,
    },
    /// Not a key of the metadata tier: left alone.
    Foreign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RefusedEdit {
    #[error("the value is not a metadata record of its key")]
    Malformed,
    #[error("the institution has no licence to take contact points from")]
    NoLicence,
    #[error("the record's identifiers are not valid")]
    Ident,
}

impl RefusedEdit {
    pub fn id(&self) -> &'static str {
        match self {
            RefusedEdit::Malformed => "malformed",
            RefusedEdit::NoLicence => "no_licence",
            RefusedEdit::Ident => "ident",
        }
    }
}

/// Judges what the store holds at `path` (under the prefix) against the
/// state. `found`: the stored value, `None` when the key is absent.
pub fn judge(state: &ClusterState, path: &str, found: Option<&[u8]>) -> Verdict {
    let Some(key) = MetaKey::parse(path) else {
        return Verdict::Foreign;
    };
    // An entity whose names make no identifiers is never written by us:
    // whatever is there goes.
    let want = desired(state, &key).unwrap_or_default();
    let Some(bytes) = found else {
        return match want {
            None => Verdict::InSync,
            Some(_) => Verdict::Restore(want),
        };
    };
    let record = MetadataRecord::decode(bytes)
        .ok()
        .filter(|r| r.meta_key() == key);
    if record.is_some() && record == want {
        return Verdict::InSync;
    }
    let MetaKey::Licence { institution, .. } = &key else {
        return Verdict::Restore(want);
    };
    let Some(MetadataRecord::Licence {
        tier,
        staff_fte_centi,
        student_licences,
        add_ons,
        agreement_start,
        effective,
        ..
    }) = record
    else {
        return Verdict::Refused {
            reason: RefusedEdit::Malformed,
            restore: want,
        };
    };
    let Some(licence) = state.licences.get(institution) else {
        return Verdict::Refused {
            reason: RefusedEdit::NoLicence,
            restore: want,
        };
    };
    let Some(latest) = licence.history.last() else {
        return Verdict::Refused {
            reason: RefusedEdit::NoLicence,
            restore: want,
        };
    };
    let terms = LicenceTerms {
        tier,
        staff_fte_centi,
        student_licences,
        add_ons: add_ons.iter().map(|a| a.as_str().to_string()).collect(),
        agreement_start,
        agreement_contact: latest.terms.agreement_contact.clone(),
        technical_contact: latest.terms.technical_contact.clone(),
        allow_overage: latest.terms.allow_overage,
    };
    // Taken in already (the same terms from the same date are a version):
    // only the key needs restoring.
    if licence
        .history
        .iter()
        .any(|v| v.effective == effective && v.terms == terms)
    {
        return Verdict::Restore(want);
    }
    Verdict::LicenceEdit {
        edit: Box::new(SetLicence {
            institution: institution.clone(),
            effective: Some(effective),
            terms,
            reporter: Reporter::Operator,
        }),
        restore: want,
    }
}

/// A full comparison of the store's contents (path under the prefix →
/// value) with the state: every key that is not in sync, with its verdict,
/// in key order.
pub fn reconcile(
    state: &ClusterState,
    found: &BTreeMap<String, Vec<u8>>,
) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    for (path, value) in found {
        match judge(state, path, Some(value)) {
            Verdict::InSync | Verdict::Foreign => {}
            v => out.push((path.clone(), v)),
        }
    }
    for key in state.metadata_keys() {
        let path = key.path();
        if found.contains_key(&path) {
            continue;
        }
        match judge(state, &path, None) {
            Verdict::InSync | Verdict::Foreign => {}
            v => out.push((path, v)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::licensing::{PriceTable, Tier};
    use crate::state::{
        Command, CreateInstitution, Host, InstitutionCommand, LicenceCommand, LoadPriceTable,
        MeetingAccess, MeetingCommand, NodeCommand, Output, RegisterNode, Request, ScheduleMeeting,
    };
    use jiff::civil::Date;

    const NOW: u64 = 1_795_000_000_000; // 2026-11-18

    fn apply(s: &mut ClusterState, command: Command) -> Output {
        s.apply(&Request {
            now_ms: NOW,
            seed: 1,
            strategy: Default::default(),
            op_id: 0,
            command,
        })
        .unwrap()
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        apply(
            &mut s,
            LicenceCommand::LoadPriceTable(LoadPriceTable {
                table: PriceTable::builtin(),
                only_if_none: true,
            })
            .into(),
        );
        apply(
            &mut s,
            InstitutionCommand::Create(CreateInstitution {
                name: "uio".into(),
                residency: "nordic".into(),
                home_region: None,
                max_participants: 300,
            })
            .into(),
        );
        apply(
            &mut s,
            LicenceCommand::Set(SetLicence {
                institution: "uio".into(),
                effective: None,
                terms: LicenceTerms {
                    tier: Tier::Education,
                    staff_fte_centi: 100_000,
                    student_licences: 10,
                    add_ons: Default::default(),
                    agreement_start: Date::constant(2026, 10, 1),
                    agreement_contact: "avtale@uio.no".into(),
                    technical_contact: "https://alerts.uio.no/fjord".into(),
                    allow_overage: false,
                },
                reporter: Reporter::Operator,
            })
            .into(),
        );
        apply(
            &mut s,
            NodeCommand::Register(RegisterNode {
                id: "nordic-1".into(),
                region: "nordic".into(),
                address: "127.0.0.1:7201".into(),
                capacity: 100,
                certificate: Vec::new(),
                boot: 1,
            })
            .into(),
        );
        apply(
            &mut s,
            MeetingCommand::Schedule(ScheduleMeeting {
                request_id: None,
                institution: "uio".into(),
                participants: 4,
                start_ms: None,
                duration_ms: 0,
                access: MeetingAccess::default(),
                kind: Default::default(),
                host: Host::OnBehalf,
            })
            .into(),
        );
        s
    }

    fn stored(s: &ClusterState) -> BTreeMap<String, Vec<u8>> {
        s.metadata_keys()
            .into_iter()
            .filter_map(|k| desired(s, &k).unwrap().map(|r| (k.path(), r.encode())))
            .collect()
    }

    #[test]
    fn every_change_marks_its_record_and_a_copy_of_the_desired_records_is_in_sync() {
        let s = state();
        let marked: Vec<String> = s.metadata.outbox.keys().map(MetaKey::path).collect();
        assert_eq!(
            marked,
            [
                "institutions/uio",
                "licences/uio/0000000001",
                "meetings/00000000000000000001",
                "nodes/nordic-1"
            ]
        );
        let found = stored(&s);
        assert_eq!(found.len(), 4);
        assert_eq!(reconcile(&s, &found), vec![]);
        let meeting = MetadataRecord::decode(&found["meetings/00000000000000000001"]).unwrap();
        let MetadataRecord::Meeting { regions, .. } = meeting else {
            panic!("{meeting:?}")
        };
        assert_eq!(regions.len(), 1);
        assert_eq!(regions[0].as_str(), "nordic");
    }

    #[test]
    fn records_changed_or_lost_in_the_store_are_restored_and_strangers_removed() {
        let s = state();
        let mut found = stored(&s);
        // Lost, tampered with, a meeting the state does not know, garbage,
        // and a key that is not ours at all.
        found.remove("institutions/uio");
        let node = found.get_mut("nodes/nordic-1").unwrap();
        *node = String::from_utf8(node.clone())
            .unwrap()
            .replace("100", "999")
            .into_bytes();
        found.insert("meetings/00000000000000000077".into(), b"{}".to_vec());
        found.insert("notes/readme".into(), b"hello".to_vec());
        let plan = reconcile(&s, &found);
        let paths: Vec<&str> = plan.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            [
                "institutions/uio",
                "meetings/00000000000000000077",
                "nodes/nordic-1"
            ]
        );
        assert!(matches!(&plan[0].1, Verdict::Restore(Some(_))));
        assert_eq!(plan[1].1, Verdict::Restore(None));
        let Verdict::Restore(Some(MetadataRecord::Node { capacity, .. })) = &plan[2].1 else {
            panic!("{:?}", plan[2].1)
        };
        assert_eq!(*capacity, 100);
    }

    #[test]
    fn a_licence_version_written_in_the_cloud_tier_becomes_an_edit_once() {
        let s = state();
        let edited = br#"{"kind":"licence","institution":"uio","version":2,"tier":"education",
            "staff_fte_centi":250000,"student_licences":10,"add_ons":[],
            "agreement_start":"2026-10-01","effective":"2026-12-01"}"#;
        let Verdict::LicenceEdit { edit, restore } =
            judge(&s, "licences/uio/0000000002", Some(edited))
        else {
            panic!()
        };
        // Not a version of ours yet: once taken in, the key goes (the new
        // version is written under the number the control plane gives it).
        assert_eq!(restore, None);
        assert_eq!(edit.terms.staff_fte_centi, 250_000);
        assert_eq!(edit.effective, Some(Date::constant(2026, 12, 1)));
        // Contact points come from the licence in force, not the cloud tier.
        assert_eq!(edit.terms.agreement_contact, "avtale@uio.no");

        // Applied, it is a version: seen again, it is only restored.
        let mut s = s;
        apply(&mut s, LicenceCommand::Set(*edit).into());
        assert_eq!(
            judge(&s, "licences/uio/0000000002", Some(edited)),
            Verdict::InSync
        );
        // The record names its own version: under another key it is not
        // taken in, and the key goes.
        let at_other_number = judge(&s, "licences/uio/0000000009", Some(edited));
        assert_eq!(
            at_other_number,
            Verdict::Refused {
                reason: RefusedEdit::Malformed,
                restore: None
            }
        );

        // A record that is not a licence of its key is refused, not taken in.
        let v = judge(
            &s,
            "licences/uio/0000000001",
            Some(b"{\"kind\":\"licence\"}"),
        );
        assert!(matches!(
            v,
            Verdict::Refused {
                reason: RefusedEdit::Malformed,
                restore: Some(_)
            }
        ));
        // Another institution's name in the key is not an edit of this one.
        let v = judge(&s, "licences/ntnu/0000000002", Some(edited));
        assert!(matches!(
            v,
            Verdict::Refused {
                reason: RefusedEdit::Malformed,
                ..
            }
        ));
    }
}

//! Metadata records: the only values the metadata store accepts.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::licensing::{LicenceTerms, Tier};
use crate::state::{DayTotals, Institution, Meeting, MetaKey, NodeState};

/// Longest identifier: the longest name the control plane accepts.
pub const MAX_IDENT_LEN: usize = fjord_common::validate::MAX_NAME_LEN;

/// An identifier: 1 to 64 of ASCII letters, digits, `-`, `_`, `.` (the
/// character set every name in the control plane already has), starting
/// with a letter or digit. No `@`, no spaces, no `:` or `/`: nothing that
/// is an e-mail address, a person's full name, an IP address or a URL gets
/// through.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Ident(String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdentError {
    #[error("an identifier is 1 to {MAX_IDENT_LEN} characters")]
    Length,
    #[error(
        "an identifier has only ASCII letters, digits, '-', '_' and '.', and starts with a letter or digit"
    )]
    Character,
}

impl Ident {
    pub fn new(s: &str) -> Result<Ident, IdentError> {
        if s.is_empty() || s.len() > MAX_IDENT_LEN {
            return Err(IdentError::Length);
        }
        let first_ok = s.starts_with(|c: char| c.is_ascii_alphanumeric());
        let all_ok = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if first_ok && all_ok {
            Ok(Ident(s.to_string()))
        } else {
            Err(IdentError::Character)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ident::new(&s).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStateMeta {
    Ready,
    Draining,
    Down,
}

/// Every kind of record the store holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum MetadataRecord {
    Institution {
        id: Ident,
        residency: Ident,
        home_region: Ident,
        max_participants: u32,
    },
    Licence {
        institution: Ident,
        version: u32,
        tier: Tier,
        staff_fte_centi: u64,
        student_licences: u32,
        add_ons: Vec<Ident>,
        agreement_start: Date,
        effective: Date,
    },
    Meeting {
        id: u64,
        institution: Ident,
        start_ms: u64,
        end_ms: u64,
        participants: u32,
        /// The regions of the nodes carrying it (empty while unplaced or
        /// once ended), sorted.
        regions: Vec<Ident>,
        /// When it ended, if it has.
        ended_ms: Option<u64>,
    },
    Node {
        id: Ident,
        region: Ident,
        capacity: u32,
        state: NodeStateMeta,
    },
    DailyUsage {
        institution: Ident,
        /// A calendar day in the service's time zone (Europe/Oslo).
        date: Date,
        participant_seconds: u64,
        webinar_attendee_seconds: u64,
        large_meeting_seconds: u64,
        e2ee_seconds: u64,
        cascade_seconds: u64,
        quality_minutes: u64,
        good_quality_minutes: u64,
    },
}

impl MetadataRecord {
    /// The record's identity: where it lives in the store.
    pub fn meta_key(&self) -> MetaKey {
        match self {
            MetadataRecord::Institution { id, .. } => MetaKey::Institution {
                name: id.as_str().to_string(),
            },
            MetadataRecord::Licence {
                institution,
                version,
                ..
            } => MetaKey::Licence {
                institution: institution.as_str().to_string(),
                version: *version,
            },
            MetadataRecord::Meeting { id, .. } => MetaKey::Meeting { id: *id },
            MetadataRecord::Node { id, .. } => MetaKey::Node {
                id: id.as_str().to_string(),
            },
            MetadataRecord::DailyUsage {
                institution, date, ..
            } => MetaKey::DailyUsage {
                institution: institution.as_str().to_string(),
                date: *date,
            },
        }
    }

    /// Where the record lives in the store, under `prefix`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}/{}", self.meta_key().path())
    }

    /// The value as stored: JSON of this record.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("metadata records serialise")
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn institution(i: &Institution) -> Result<MetadataRecord, IdentError> {
        Ok(MetadataRecord::Institution {
            id: Ident::new(&i.name)?,
            residency: Ident::new(&i.residency)?,
            home_region: Ident::new(&i.home_region)?,
            max_participants: i.max_participants,
        })
    }

    /// A licence version's terms: the contact points stay behind.
    pub fn licence(
        institution: &str,
        version: u32,
        effective: Date,
        t: &LicenceTerms,
    ) -> Result<MetadataRecord, IdentError> {
        Ok(MetadataRecord::Licence {
            institution: Ident::new(institution)?,
            version,
            tier: t.tier,
            staff_fte_centi: t.staff_fte_centi,
            student_licences: t.student_licences,
            add_ons: t
                .add_ons
                .iter()
                .map(|a| Ident::new(a))
                .collect::<Result<_, _>>()?,
            agreement_start: t.agreement_start,
            effective,
        })
    }

    /// A meeting's schedule and where it runs: no title, no secrets.
    pub fn meeting(m: &Meeting, regions: &[&str]) -> Result<MetadataRecord, IdentError> {
        let mut regions = regions
            .iter()
            .map(|r| Ident::new(r))
            .collect::<Result<Vec<_>, _>>()?;
        regions.sort();
        regions.dedup();
        Ok(MetadataRecord::Meeting {
            id: m.id,
            institution: Ident::new(&m.institution)?,
            start_ms: m.start_ms,
            end_ms: m.end_ms,
            participants: m.participants,
            regions,
            ended_ms: m.ended_at_ms,
        })
    }

    /// One institution's totals for one day, in whole seconds.
    pub fn daily_usage(
        institution: &str,
        date: Date,
        t: &DayTotals,
    ) -> Result<MetadataRecord, IdentError> {
        Ok(MetadataRecord::DailyUsage {
            institution: Ident::new(institution)?,
            date,
            participant_seconds: t.participant_ms / 1000,
            webinar_attendee_seconds: t.webinar_attendee_ms / 1000,
            large_meeting_seconds: t.large_meeting_ms / 1000,
            e2ee_seconds: t.e2ee_ms / 1000,
            cascade_seconds: t.cascade_ms / 1000,
            quality_minutes: t.quality_minutes,
            good_quality_minutes: t.good_quality_minutes,
        })
    }

    pub fn node(
        id: &str,
        region: &str,
        capacity: u32,
        state: NodeState,
    ) -> Result<MetadataRecord, IdentError> {
        Ok(MetadataRecord::Node {
            id: Ident::new(id)?,
            region: Ident::new(region)?,
            capacity,
            state: match state {
                NodeState::Ready => NodeStateMeta::Ready,
                NodeState::Draining => NodeStateMeta::Draining,
                NodeState::Down => NodeStateMeta::Down,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn identifiers_refuse_anything_that_could_be_a_name_or_an_address() {
        for ok in [
            "uio",
            "UiO",
            "nordic-1",
            "large-meeting-1000",
            "a.b_c",
            "0x",
        ] {
            assert!(Ident::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Ola Nordmann",
            "ola@uio.no",
            "https://alerts.uio.no",
            "10.0.0.1:443",
            "fe80::1",
            "-x",
            ".x",
            "æøå",
            &"x".repeat(65),
        ] {
            assert!(Ident::new(bad).is_err(), "{bad:?}");
        }
        // Decoding checks too: a record edited in the cloud tier with a
        // name in an id field is refused.
        let edited =
            br#"{"kind":"node","id":"Ola Nordmann","region":"eu","capacity":1,"state":"ready"}"#;
        assert!(MetadataRecord::decode(edited).is_err());
    }

    #[test]
    fn records_round_trip_under_their_keys() {
        let r = MetadataRecord::node("eu-1", "eu", 500, NodeState::Draining).unwrap();
        assert_eq!(r.key("/fjord/v1"), "/fjord/v1/nodes/eu-1");
        assert_eq!(MetadataRecord::decode(&r.encode()).unwrap(), r);
    }

    proptest! {
        /// Whatever the contact points say, a licence's record never
        /// carries them.
        #[test]
        fn a_licence_record_never_carries_its_contact_points(
            contact in "[a-z]{1,8}@[a-z]{1,8}\\.(no|se|eu)",
            url in "https://[a-z]{1,8}\\.example/[a-z]{0,8}",
            fte in 0u64..1_000_000,
            students in 0u32..100_000,
        ) {
            let terms = LicenceTerms {
                tier: Tier::Education,
                staff_fte_centi: fte,
                student_licences: students,
                add_ons: ["webinar-1000".to_string()].into(),
                agreement_start: Date::constant(2026, 10, 1),
                agreement_contact: contact.clone(),
                technical_contact: url.clone(),
                allow_overage: false,
            };
            let r = MetadataRecord::licence("uio", 3, Date::constant(2026, 11, 1), &terms).unwrap();
            let bytes = String::from_utf8(r.encode()).unwrap();
            prop_assert!(!bytes.contains(&contact));
            prop_assert!(!bytes.contains(&url));
            prop_assert!(!bytes.contains('@'));
            prop_assert_eq!(MetadataRecord::decode(bytes.as_bytes()).unwrap(), r);
        }
    }
}

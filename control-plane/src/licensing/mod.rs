//! Licences: pure domain logic, `now` passed in.
//!
//! ```text
//!   price table (TOML, versioned) ──┐
//!   licence terms (dated history) ──┼─▶ limits(tier, affiliation, add-ons)
//!   host affiliation ───────────────┘        │
//!                                            ▼
//!                         check_schedule(kind, participants) ─▶ Ok | refusal
//!   agreement (start, notice) + day ─▶ status: phase, contract year, deadlines
//! ```
//!
//! The replicated state keeps the data (`state::licences`); this module
//! decides what the data allows. Nothing here reads a clock or a file.

pub mod agreement;
pub mod calendar;
pub mod price_table;

use std::collections::BTreeSet;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

pub use agreement::{Agreement, AgreementStatus, ContractYear, OnRenewalDate, Phase};
pub use calendar::{parse_date, service_date, SERVICE_TIME_ZONE};
pub use price_table::{Limits, PriceTable};

/// Longest contact point (an e-mail address or a webhook URL).
pub const MAX_CONTACT_LEN: usize = 254;
/// Most add-ons one licence may hold.
pub const MAX_ADD_ONS: usize = 32;
/// Staff FTE are kept in hundredths: 1234.56 FTE is 123456.
pub const FTE_SCALE: u64 = 100;
/// Largest staff FTE count accepted (hundredths): ten million FTE.
pub const MAX_STAFF_FTE_CENTI: u64 = 10_000_000 * FTE_SCALE;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The institution's licence: staff and students, no time limit.
    Education,
    /// Self sign-up accounts: meetings end at the tier's duration limit.
    Basic,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Education => "education",
            Tier::Basic => "basic",
        }
    }

    pub fn parse(text: &str) -> Option<Tier> {
        match text {
            "education" => Some(Tier::Education),
            "basic" => Some(Tier::Basic),
            _ => None,
        }
    }
}

/// Which limits a host gets: staff (and operators or institution admins
/// scheduling on the institution's behalf) or students.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affiliation {
    Staff,
    Student,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Staff => "staff",
            Affiliation::Student => "student",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MeetingKind {
    /// Everyone may send media.
    #[default]
    Meeting,
    /// Panelists send, attendees only receive.
    Webinar,
}

impl MeetingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MeetingKind::Meeting => "meeting",
            MeetingKind::Webinar => "webinar",
        }
    }
}

/// One version of an institution's licence, as the institution reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceTerms {
    pub tier: Tier,
    /// Staff FTE in hundredths ([`FTE_SCALE`]).
    pub staff_fte_centi: u64,
    pub student_licences: u32,
    pub add_ons: BTreeSet<String>,
    pub agreement_start: Date,
    pub agreement_contact: String,
    pub technical_contact: String,
    /// Host accounts beyond the licences held are activated and billed as
    /// extra licences, instead of refused.
    #[serde(default)]
    pub allow_overage: bool,
}

impl LicenceTerms {
    /// Staff licences: one per started FTE.
    pub fn staff_licences(&self) -> u64 {
        self.staff_fte_centi.div_ceil(FTE_SCALE)
    }

    /// Checks the terms against the price table they will be priced with.
    pub fn validate(&self, table: &PriceTable) -> Result<(), LicensingError> {
        if self.staff_fte_centi > MAX_STAFF_FTE_CENTI {
            return Err(LicensingError::BadFte);
        }
        if self.add_ons.len() > MAX_ADD_ONS {
            return Err(LicensingError::TooManyAddOns { max: MAX_ADD_ONS });
        }
        if let Some(unknown) = self
            .add_ons
            .iter()
            .find(|a| !table.add_ons.contains_key(*a))
        {
            return Err(LicensingError::UnknownAddOn {
                name: unknown.chars().take(64).collect(),
                price_table: table.version.clone(),
            });
        }
        check_contact("agreement contact", &self.agreement_contact)?;
        check_contact("technical contact", &self.technical_contact)?;
        Ok(())
    }
}

/// Parses an FTE count with up to two decimals ("1234", "1234.5") into hundredths.
pub fn parse_fte(text: &str) -> Result<u64, LicensingError> {
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole)
        || (!frac.is_empty() && (frac.len() > 2 || !digits(frac)))
        || text.ends_with('.')
    {
        return Err(LicensingError::BadFte);
    }
    let whole: u64 = whole.parse().map_err(|_| LicensingError::BadFte)?;
    let frac: u64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().map_err(|_| LicensingError::BadFte)? * 10,
        _ => frac.parse().map_err(|_| LicensingError::BadFte)?,
    };
    let centi = whole * FTE_SCALE + frac;
    if centi > MAX_STAFF_FTE_CENTI {
        return Err(LicensingError::BadFte);
    }
    Ok(centi)
}

/// Shows hundredths of FTE as a decimal ("1234.5").
pub fn format_fte(centi: u64) -> String {
    match centi % FTE_SCALE {
        0 => format!("{}", centi / FTE_SCALE),
        f if f % 10 == 0 => format!("{}.{}", centi / FTE_SCALE, f / 10),
        f => format!("{}.{:02}", centi / FTE_SCALE, f),
    }
}

/// A contact point is an e-mail address or an https URL (a webhook for
/// alerts); plain http only to a loopback host, for tests and `fjord dev`.
pub fn check_contact(what: &'static str, contact: &str) -> Result<(), LicensingError> {
    let bad = || LicensingError::BadContact {
        what: what.to_string(),
        contact: contact.chars().take(64).collect(),
    };
    if contact.is_empty()
        || contact.len() > MAX_CONTACT_LEN
        || contact.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad());
    }
    if let Some(rest) = contact.strip_prefix("https://") {
        return if rest.is_empty() || rest.starts_with('/') {
            Err(bad())
        } else {
            Ok(())
        };
    }
    if let Some(rest) = contact.strip_prefix("http://") {
        let host = rest.split(['/', '?']).next().unwrap_or("");
        let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
        let loopback = host == "localhost" || host == "[::1]" || host.starts_with("127.");
        return if loopback { Ok(()) } else { Err(bad()) };
    }
    match contact.split_once('@') {
        Some((local, domain))
            if !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@') =>
        {
            Ok(())
        }
        _ => Err(bad()),
    }
}

/// Whether a meeting of `kind` and size `participants` fits `limits`.
pub fn check_schedule(
    limits: &Limits,
    tier: Tier,
    affiliation: Affiliation,
    kind: MeetingKind,
    participants: u32,
) -> Result<(), LicensingError> {
    match kind {
        MeetingKind::Meeting if participants > limits.meeting_participants => {
            Err(LicensingError::MeetingTooLarge {
                requested: participants,
                limit: limits.meeting_participants,
                tier,
                affiliation,
            })
        }
        MeetingKind::Webinar if limits.webinar_attendees == 0 => {
            Err(LicensingError::WebinarNotIncluded { tier, affiliation })
        }
        MeetingKind::Webinar if participants > limits.webinar_attendees => {
            Err(LicensingError::WebinarTooLarge {
                requested: participants,
                limit: limits.webinar_attendees,
                tier,
                affiliation,
            })
        }
        _ => Ok(()),
    }
}

/// Why licensing refused something. Variants carry ids and numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LicensingError {
    #[error("{text:?} is not a date (YYYY-MM-DD)")]
    BadDate { text: String },
    #[error("staff FTE must be a number with at most two decimals, at most 10,000,000")]
    BadFte,
    #[error("at most {max} add-ons")]
    TooManyAddOns { max: usize },
    #[error("add-on {name:?} is not in price table {price_table:?}")]
    UnknownAddOn { name: String, price_table: String },
    #[error("{what} {contact:?} is neither an e-mail address nor an https URL")]
    BadContact { what: String, contact: String },
    #[error("notice was already given on {given}")]
    NoticeAlreadyGiven { given: String },
    #[error("notice dated {notice} is before the agreement starts on {start}")]
    NoticeBeforeStart { notice: String, start: String },
    #[error("price table: bad {what} {name:?}")]
    BadPriceTable { what: String, name: String },
    #[error("price table is not valid TOML for a price table: {detail}")]
    PriceTableSyntax { detail: String },
    #[error("price table is {bytes} bytes; at most {max}")]
    PriceTableTooLarge { bytes: usize, max: usize },
    #[error("{requested} participants exceeds the {tier:?} tier's limit of {limit} for {affiliation:?} hosts")]
    MeetingTooLarge {
        requested: u32,
        limit: u32,
        tier: Tier,
        affiliation: Affiliation,
    },
    #[error("the {tier:?} tier includes no webinars for {affiliation:?} hosts")]
    WebinarNotIncluded {
        tier: Tier,
        affiliation: Affiliation,
    },
    #[error("{requested} attendees exceeds the {tier:?} tier's webinar limit of {limit} for {affiliation:?} hosts")]
    WebinarTooLarge {
        requested: u32,
        limit: u32,
        tier: Tier,
        affiliation: Affiliation,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fte_parses_with_two_decimals_at_most() {
        assert_eq!(parse_fte("1234").unwrap(), 123_400);
        assert_eq!(parse_fte("1234.5").unwrap(), 123_450);
        assert_eq!(parse_fte("0.25").unwrap(), 25);
        for bad in ["", "1.", ".5", "1.234", "-3", "1e3", "12345678901", "1,5"] {
            assert!(parse_fte(bad).is_err(), "{bad}");
        }
        assert_eq!(format_fte(123_450), "1234.5");
        assert_eq!(format_fte(25), "0.25");
        assert_eq!(format_fte(100), "1");
        let terms = |fte| LicenceTerms {
            tier: Tier::Education,
            staff_fte_centi: fte,
            student_licences: 0,
            add_ons: BTreeSet::new(),
            agreement_start: parse_date("2026-10-01").unwrap(),
            agreement_contact: "a@uio.no".into(),
            technical_contact: "t@uio.no".into(),
            allow_overage: false,
        };
        // One licence per started FTE.
        assert_eq!(terms(123_401).staff_licences(), 1235);
        assert_eq!(terms(123_400).staff_licences(), 1234);
    }

    #[test]
    fn contacts_are_addresses_or_secure_urls() {
        for good in [
            "it@uio.no",
            "https://alerts.uio.no/fjord",
            "http://127.0.0.1:9000/hook",
        ] {
            assert!(check_contact("c", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "uio.no",
            "a@b",
            "a b@uio.no",
            "http://alerts.uio.no/",
            "https://",
            "@uio.no",
        ] {
            assert!(check_contact("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_schedule_check_names_what_is_beyond_the_licence() {
        let t = PriceTable::builtin();
        let none: [String; 0] = [];
        let staff = t.limits(Tier::Education, Affiliation::Staff, &none);
        let student = t.limits(Tier::Education, Affiliation::Student, &none);
        let check = |l: &Limits, a, k, n| check_schedule(l, Tier::Education, a, k, n);
        assert!(check(&staff, Affiliation::Staff, MeetingKind::Meeting, 300).is_ok());
        assert!(matches!(
            check(&staff, Affiliation::Staff, MeetingKind::Meeting, 301),
            Err(LicensingError::MeetingTooLarge { limit: 300, .. })
        ));
        assert!(check(&staff, Affiliation::Staff, MeetingKind::Webinar, 500).is_ok());
        assert!(matches!(
            check(&staff, Affiliation::Staff, MeetingKind::Webinar, 501),
            Err(LicensingError::WebinarTooLarge { limit: 500, .. })
        ));
        assert!(matches!(
            check(&student, Affiliation::Student, MeetingKind::Webinar, 10),
            Err(LicensingError::WebinarNotIncluded { .. })
        ));
    }
}

//! The price table: what a licence costs and what each tier and add-on
//! allows. Operators keep it in a TOML file; `fjord ctl price-table load`
//! commits it to the replicated state, so every replica prices and limits
//! the same way, and every version stays (invoices for past periods use
//! the table that was in force then).
//!
//! ```toml
//! version = "2026-1"
//! effective = "2026-01-01"
//! currency = "NOK"
//! minor_unit_digits = 2            # øre
//! student_licence_minor = 1500     # per student licence and year
//!
//! [[licence_band]]                 # graduated: each band prices its own licences
//! up_to = 1000
//! per_licence_minor = 9000
//! [[licence_band]]                 # the last band has no upper bound
//! per_licence_minor = 7000
//!
//! [tier.education.staff]
//! meeting_participants = 300
//! webinar_attendees = 500
//! [tier.education.student]
//! meeting_participants = 300       # no webinars
//! [tier.basic.staff]
//! meeting_participants = 100
//! max_duration_s = 2400
//! [tier.basic.student]
//! meeting_participants = 100
//! max_duration_s = 2400
//!
//! [add_on.large-meeting-1000]
//! annual_minor = 2500000
//! meeting_participants = 1000
//!
//! [consumption]                    # per unit, billed from the usage ledger
//! webinar_attendee_hour_minor = 40
//! ```

use std::collections::BTreeMap;

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::{Affiliation, LicensingError, Tier};

/// Largest meeting or webinar any tier or add-on may allow.
pub const MAX_LIMIT_PARTICIPANTS: u32 = 100_000;
/// Longest name of a version, add-on or consumption item.
pub const MAX_ITEM_NAME_LEN: usize = 64;
/// Largest file `price-table load` accepts.
pub const MAX_PRICE_TABLE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    pub version: String,
    /// First day the table prices (in the service's time zone).
    pub effective: Date,
    /// ISO 4217 code, e.g. NOK.
    pub currency: String,
    /// Digits of the minor unit (2: øre, cents).
    pub minor_unit_digits: u8,
    #[serde(rename = "licence_band")]
    pub licence_bands: Vec<LicenceBand>,
    #[serde(default)]
    pub student_licence_minor: u64,
    #[serde(rename = "tier")]
    pub tiers: BTreeMap<Tier, TierLimits>,
    #[serde(rename = "add_on", default)]
    pub add_ons: BTreeMap<String, AddOn>,
    #[serde(default)]
    pub consumption: BTreeMap<String, u64>,
    /// Units of a consumption item each contract year includes before it
    /// is billed (`webinar_attendee_hour = 1000`: the first 1,000
    /// attendee-hours of the year are in the licence).
    #[serde(default)]
    pub consumption_included: BTreeMap<String, u64>,
}

/// Licences up to `up_to` (counted from where the previous band ended)
/// cost `per_licence_minor` each; the last band has no bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenceBand {
    #[serde(default)]
    pub up_to: Option<u64>,
    pub per_licence_minor: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierLimits {
    pub staff: Limits,
    pub student: Limits,
}

/// What a host may schedule. Zero webinar attendees: no webinars; zero
/// duration: unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub meeting_participants: u32,
    #[serde(default)]
    pub webinar_attendees: u32,
    #[serde(default)]
    pub max_duration_s: u32,
    /// How long before a duration limit participants are warned (default 5 min).
    #[serde(default = "default_warning_s")]
    pub warn_before_end_s: u32,
}

fn default_warning_s() -> u32 {
    300
}

/// An add-on raises limits (never lowers them) and costs a yearly fee.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddOn {
    pub annual_minor: u64,
    #[serde(default)]
    pub meeting_participants: Option<u32>,
    /// Raises the webinar limit of hosts whose tier includes webinars.
    #[serde(default)]
    pub webinar_attendees: Option<u32>,
}

fn check_name(what: &'static str, name: &str) -> Result<(), LicensingError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ITEM_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(LicensingError::BadPriceTable {
            what: what.to_string(),
            name: name.chars().take(MAX_ITEM_NAME_LEN).collect(),
        })
    }
}

impl PriceTable {
    /// Parses and validates a TOML price table.
    pub fn from_toml(text: &str) -> Result<PriceTable, LicensingError> {
        if text.len() > MAX_PRICE_TABLE_BYTES {
            return Err(LicensingError::PriceTableTooLarge {
                bytes: text.len(),
                max: MAX_PRICE_TABLE_BYTES,
            });
        }
        let table: PriceTable =
            toml::from_str(text).map_err(|e| LicensingError::PriceTableSyntax {
                // toml's message names the line and the key; it carries no secrets.
                detail: e.message().chars().take(200).collect(),
            })?;
        table.validate()?;
        Ok(table)
    }

    /// The table `fjord dev` and new clusters start with.
    pub fn builtin() -> PriceTable {
        PriceTable::from_toml(BUILTIN_PRICE_TABLE).expect("the built-in price table is valid")
    }

    pub fn validate(&self) -> Result<(), LicensingError> {
        check_name("version", &self.version)?;
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(LicensingError::BadPriceTable {
                what: "currency (ISO 4217, e.g. NOK)".to_string(),
                name: self.currency.chars().take(8).collect(),
            });
        }
        if self.minor_unit_digits > 4 {
            return Err(LicensingError::BadPriceTable {
                what: "minor_unit_digits (0-4)".to_string(),
                name: self.minor_unit_digits.to_string(),
            });
        }
        // Bands: strictly growing bounds, only the last one open.
        let mut previous = 0u64;
        for (i, band) in self.licence_bands.iter().enumerate() {
            let last = i + 1 == self.licence_bands.len();
            match band.up_to {
                Some(up_to) if up_to > previous && !last => previous = up_to,
                None if last => {}
                _ => {
                    return Err(LicensingError::BadPriceTable {
                        what: "licence_band (bounds must grow; only the last band is open)"
                            .to_string(),
                        name: i.to_string(),
                    })
                }
            }
        }
        if self.licence_bands.is_empty() {
            return Err(LicensingError::BadPriceTable {
                what: "licence_band (at least one)".to_string(),
                name: String::new(),
            });
        }
        for tier in [Tier::Education, Tier::Basic] {
            let Some(limits) = self.tiers.get(&tier) else {
                return Err(LicensingError::BadPriceTable {
                    what: "tier (education and basic are both required)".to_string(),
                    name: tier.as_str().to_string(),
                });
            };
            for l in [limits.staff, limits.student] {
                let sane = (1..=MAX_LIMIT_PARTICIPANTS).contains(&l.meeting_participants)
                    && l.webinar_attendees <= MAX_LIMIT_PARTICIPANTS
                    && (l.max_duration_s == 0 || l.warn_before_end_s < l.max_duration_s);
                if !sane {
                    return Err(LicensingError::BadPriceTable {
                        what:
                            "tier limits (participants 1-100000; warning before the duration limit)"
                                .to_string(),
                        name: tier.as_str().to_string(),
                    });
                }
            }
        }
        for (name, add_on) in &self.add_ons {
            check_name("add_on", name)?;
            let raises = [add_on.meeting_participants, add_on.webinar_attendees];
            if raises.iter().flatten().any(|n| *n > MAX_LIMIT_PARTICIPANTS) {
                return Err(LicensingError::BadPriceTable {
                    what: "add_on limits (at most 100000)".to_string(),
                    name: name.clone(),
                });
            }
        }
        for name in self.consumption.keys() {
            check_name("consumption", name)?;
        }
        for name in self.consumption_included.keys() {
            check_name("consumption_included", name)?;
        }
        Ok(())
    }

    /// The yearly fee for `licences` staff licences, band by band, in minor units.
    pub fn staff_licences_minor(&self, licences: u64) -> u64 {
        let mut total = 0u64;
        let mut priced = 0u64;
        for band in &self.licence_bands {
            let upper = band.up_to.unwrap_or(u64::MAX).min(licences);
            if upper > priced {
                total =
                    total.saturating_add((upper - priced).saturating_mul(band.per_licence_minor));
                priced = upper;
            }
        }
        total
    }

    /// What a host of `affiliation` may schedule under `tier` with `add_ons`.
    /// Add-ons raise meeting size for everyone, and webinar size only for
    /// hosts whose tier includes webinars at all.
    pub fn limits<'a>(
        &self,
        tier: Tier,
        affiliation: Affiliation,
        add_ons: impl IntoIterator<Item = &'a String>,
    ) -> Limits {
        let Some(tier_limits) = self.tiers.get(&tier) else {
            return Limits::default();
        };
        let mut limits = match affiliation {
            Affiliation::Staff => tier_limits.staff,
            Affiliation::Student => tier_limits.student,
        };
        for add_on in add_ons.into_iter().filter_map(|n| self.add_ons.get(n)) {
            if let Some(n) = add_on.meeting_participants {
                limits.meeting_participants = limits.meeting_participants.max(n);
            }
            if let Some(n) = add_on.webinar_attendees {
                if limits.webinar_attendees > 0 {
                    limits.webinar_attendees = limits.webinar_attendees.max(n);
                }
            }
        }
        limits
    }
}

/// The table new clusters start with (prices are examples, in NOK øre).
pub const BUILTIN_PRICE_TABLE: &str = include_str!("builtin_price_table.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_table_has_the_education_and_basic_tiers_of_the_terms() {
        let t = PriceTable::builtin();
        let none: [String; 0] = [];
        let staff = t.limits(Tier::Education, Affiliation::Staff, &none);
        assert_eq!(
            (staff.meeting_participants, staff.webinar_attendees),
            (300, 500)
        );
        assert_eq!(staff.max_duration_s, 0);
        let student = t.limits(Tier::Education, Affiliation::Student, &none);
        assert_eq!(
            (student.meeting_participants, student.webinar_attendees),
            (300, 0)
        );
        let basic = t.limits(Tier::Basic, Affiliation::Staff, &none);
        assert_eq!(basic.max_duration_s, 40 * 60);
        assert_eq!(basic.warn_before_end_s, 5 * 60);
    }

    #[test]
    fn add_ons_raise_limits_but_never_give_students_webinars() {
        let t = PriceTable::builtin();
        let add_ons = ["large-meeting-1000".to_string(), "webinar-5000".to_string()];
        let staff = t.limits(Tier::Education, Affiliation::Staff, &add_ons);
        assert_eq!(
            (staff.meeting_participants, staff.webinar_attendees),
            (1000, 5000)
        );
        let student = t.limits(Tier::Education, Affiliation::Student, &add_ons);
        assert_eq!(
            (student.meeting_participants, student.webinar_attendees),
            (1000, 0)
        );
    }

    #[test]
    fn bands_are_graduated() {
        let t = PriceTable::from_toml(
            r#"
version = "t1"
effective = "2026-01-01"
currency = "NOK"
minor_unit_digits = 2
[[licence_band]]
up_to = 10
per_licence_minor = 100
[[licence_band]]
per_licence_minor = 10
[tier.education.staff]
meeting_participants = 300
[tier.education.student]
meeting_participants = 300
[tier.basic.staff]
meeting_participants = 100
[tier.basic.student]
meeting_participants = 100
"#,
        )
        .unwrap();
        assert_eq!(t.staff_licences_minor(0), 0);
        assert_eq!(t.staff_licences_minor(7), 700);
        assert_eq!(t.staff_licences_minor(10), 1000);
        assert_eq!(t.staff_licences_minor(15), 1050);
    }

    #[test]
    fn bad_tables_are_refused_with_what_is_wrong() {
        let good = BUILTIN_PRICE_TABLE;
        for (bad, what) in [
            (
                good.replace("currency = \"NOK\"", "currency = \"nok\""),
                "currency",
            ),
            (
                good.replace("minor_unit_digits = 2", "minor_unit_digits = 9"),
                "minor_unit",
            ),
            (
                good.replace("[tier.basic.staff]", "[tier.other.staff]"),
                "syntax",
            ),
            (format!("surprise = 1\n{good}"), "syntax"),
            (
                good.replace("version = \"builtin-1\"", "version = \"a b\""),
                "version",
            ),
        ] {
            let err = PriceTable::from_toml(&bad).unwrap_err();
            let text = format!("{err:?}").to_lowercase();
            assert!(
                text.contains(what)
                    || (what == "syntax" && matches!(err, LicensingError::PriceTableSyntax { .. })),
                "{what}: {err:?}"
            );
        }
        let huge = "#".repeat(MAX_PRICE_TABLE_BYTES + 1);
        assert!(matches!(
            PriceTable::from_toml(&huge),
            Err(LicensingError::PriceTableTooLarge { .. })
        ));
    }
}

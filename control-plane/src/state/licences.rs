//! Licences and price tables: the data behind licensing, kept as history.
//!
//! Every change to a licence is a new dated version (its effective date),
//! never an overwrite; the version in force on a day is the latest one
//! recorded whose effective date is not after it. Price tables are kept in
//! load order for the same reason: invoices for past periods price with
//! the table in force then. What the data allows is decided in
//! [`crate::licensing`].

use jiff::civil::Date;

use super::*;
use crate::licensing::{
    self, check_schedule, service_date, Affiliation, Agreement, AgreementStatus, LicenceTerms,
    Limits, MeetingKind, PriceTable,
};

/// Most versions one licence keeps (years of monthly FTE reports).
pub const MAX_LICENCE_VERSIONS: usize = 1000;
/// Most price tables kept.
pub const MAX_PRICE_TABLES: usize = 1000;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licences {
    /// Every table loaded, oldest first; the last one limits new meetings.
    pub price_tables: Vec<LoadedPriceTable>,
    pub by_institution: BTreeMap<String, Licence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedPriceTable {
    pub table: PriceTable,
    pub loaded_at_ms: u64,
    /// The ledger revision it was loaded at (billing reads as of one).
    #[serde(default)]
    pub revision: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Licence {
    pub institution: String,
    /// Versions in the order they were recorded.
    pub history: Vec<LicenceVersion>,
    /// Written notice of termination, once received.
    pub notice: Option<Notice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceVersion {
    /// 1, 2, ... in recording order.
    pub version: u32,
    pub effective: Date,
    pub recorded_at_ms: u64,
    pub terms: LicenceTerms,
    /// The ledger revision it was recorded at (billing reads as of one).
    #[serde(default)]
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub date: Date,
    pub recorded_at_ms: u64,
}

/// A licence as `licence get` shows it: the version in force and what the
/// agreement looks like on the day asked about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LicenceView {
    pub institution: String,
    pub in_force: LicenceVersion,
    pub versions: u32,
    pub status: AgreementStatus,
    pub price_table: String,
    pub staff_limits: Limits,
    pub student_limits: Limits,
    /// The day written notice was received, if it was.
    pub notice: Option<Date>,
}

impl Licence {
    /// The version in force on `day`: the latest recorded among those
    /// effective on or before it.
    pub fn in_force(&self, day: Date) -> Option<&LicenceVersion> {
        self.history
            .iter()
            .filter(|v| v.effective <= day)
            .max_by_key(|v| (v.effective, v.version))
    }

    /// What `licence get` shows on `day`: the version in force, or before
    /// the first effective date the earliest one (a licence recorded today
    /// for a start next month shows its terms).
    pub fn shown(&self, day: Date) -> Option<&LicenceVersion> {
        self.in_force(day)
            .or_else(|| self.history.iter().min_by_key(|v| (v.effective, v.version)))
    }

    /// The agreement of `version`, with the notice if it concerns it.
    pub fn agreement_of(&self, version: &LicenceVersion) -> Agreement {
        Agreement {
            start: version.terms.agreement_start,
            notice: self
                .notice
                .filter(|n| n.date >= version.terms.agreement_start)
                .map(|n| n.date),
        }
    }
}

impl Licences {
    pub fn price_table(&self) -> Option<&PriceTable> {
        self.price_tables.last().map(|t| &t.table)
    }

    pub fn get(&self, institution: &str) -> Option<&Licence> {
        self.by_institution.get(institution)
    }

    pub fn view(&self, institution: &str, day: Date) -> Result<LicenceView, StateError> {
        let licence =
            self.by_institution
                .get(institution)
                .ok_or_else(|| StateError::NoLicence {
                    institution: institution.to_string(),
                })?;
        let table = self.price_table().ok_or(StateError::NoPriceTable)?;
        let in_force = licence.shown(day).ok_or_else(|| StateError::NoLicence {
            institution: institution.to_string(),
        })?;
        let agreement = licence.agreement_of(in_force);
        let limits = |a| table.limits(in_force.terms.tier, a, &in_force.terms.add_ons);
        Ok(LicenceView {
            institution: institution.to_string(),
            in_force: in_force.clone(),
            versions: licence.history.len() as u32,
            status: agreement.status(day),
            price_table: table.version.clone(),
            staff_limits: limits(Affiliation::Staff),
            student_limits: limits(Affiliation::Student),
            notice: agreement.notice,
        })
    }

    /// Whether `institution` may schedule a meeting of `kind` and size
    /// `participants`, hosted by someone of `affiliation`, at `now_ms`,
    /// starting at `start_ms`. Returns the limits the meeting runs under.
    pub fn check_schedule(
        &self,
        institution: &str,
        affiliation: Affiliation,
        kind: MeetingKind,
        participants: u32,
        start_ms: u64,
        now_ms: u64,
    ) -> Result<Limits, StateError> {
        let table = self.price_table().ok_or(StateError::NoPriceTable)?;
        let today = service_date(now_ms);
        let no_licence = || StateError::NoLicence {
            institution: institution.to_string(),
        };
        let licence = self
            .by_institution
            .get(institution)
            .ok_or_else(no_licence)?;
        let version = licence.in_force(today).ok_or_else(no_licence)?;
        let agreement = licence.agreement_of(version);
        let phase = agreement.phase(today);
        if !phase.in_force() {
            return Err(StateError::LicenceNotInForce {
                institution: institution.to_string(),
                phase,
            });
        }
        if let Some(end) = agreement.ends_on() {
            if service_date(start_ms) >= end {
                return Err(StateError::AfterAgreementEnd {
                    institution: institution.to_string(),
                    ends_on: end.to_string(),
                });
            }
        }
        let terms = &version.terms;
        let limits = table.limits(terms.tier, affiliation, &terms.add_ons);
        check_schedule(&limits, terms.tier, affiliation, kind, participants)?;
        Ok(limits)
    }
}

impl ClusterState {
    pub(super) fn load_price_table(&mut self, c: &LoadPriceTable, now_ms: u64) -> Response {
        let current = self.licences.price_table();
        if c.only_if_none {
            if let Some(t) = current {
                return Ok(Output::PriceTableLoaded {
                    version: t.version.clone(),
                    loaded: false,
                });
            }
        }
        c.table.validate()?;
        if current.is_some_and(|t| t == &c.table) {
            return Ok(Output::PriceTableLoaded {
                version: c.table.version.clone(),
                loaded: false,
            });
        }
        if self
            .licences
            .price_tables
            .iter()
            .any(|t| t.table.version == c.table.version)
        {
            return Err(StateError::PriceTableVersionUsed {
                version: c.table.version.clone(),
            });
        }
        // Every licence must stay priceable: no add-on in use may vanish.
        for licence in self.licences.by_institution.values() {
            for v in &licence.history {
                if let Some(missing) = v
                    .terms
                    .add_ons
                    .iter()
                    .find(|a| !c.table.add_ons.contains_key(*a))
                {
                    return Err(licensing::LicensingError::UnknownAddOn {
                        name: missing.clone(),
                        price_table: c.table.version.clone(),
                    }
                    .into());
                }
            }
        }
        if self.licences.price_tables.len() >= MAX_PRICE_TABLES {
            return Err(StateError::TooManyVersions {
                max: MAX_PRICE_TABLES as u32,
            });
        }
        self.licences.price_tables.push(LoadedPriceTable {
            table: c.table.clone(),
            loaded_at_ms: now_ms,
            revision: self.ledger.revision + 1,
        });
        Ok(Output::PriceTableLoaded {
            version: c.table.version.clone(),
            loaded: true,
        })
    }

    pub(super) fn set_licence(&mut self, c: &SetLicence, now_ms: u64) -> Response {
        if !self.institutions.contains_key(&c.institution) {
            return Err(StateError::UnknownInstitution {
                name: c.institution.clone(),
            });
        }
        let table = self
            .licences
            .price_table()
            .ok_or(StateError::NoPriceTable)?;
        c.terms.validate(table)?;
        let today = service_date(now_ms);
        let effective = c.effective.unwrap_or(today);
        if c.reporter == Reporter::InstitutionAdmin {
            let current = self
                .licences
                .get(&c.institution)
                .and_then(|l| l.shown(effective))
                .ok_or_else(|| StateError::NoLicence {
                    institution: c.institution.clone(),
                })?;
            let (was, now) = (&current.terms, &c.terms);
            let changed = if was.tier != now.tier {
                Some("tier")
            } else if was.add_ons != now.add_ons {
                Some("add_ons")
            } else if was.agreement_start != now.agreement_start {
                Some("agreement_start")
            } else {
                None
            };
            if let Some(field) = changed {
                return Err(StateError::OperatorOnly {
                    field: field.to_string(),
                });
            }
        }
        let licence = self
            .licences
            .by_institution
            .entry(c.institution.clone())
            .or_insert_with(|| Licence {
                institution: c.institution.clone(),
                history: Vec::new(),
                notice: None,
            });
        if licence.history.len() >= MAX_LICENCE_VERSIONS {
            return Err(StateError::TooManyVersions {
                max: MAX_LICENCE_VERSIONS as u32,
            });
        }
        // A new agreement after one that ended starts without the old notice.
        if let Some(notice) = licence.notice {
            if c.terms.agreement_start >= Agreement::end_for_notice(notice.date) {
                licence.notice = None;
            }
        }
        let version = licence.history.len() as u32 + 1;
        licence.history.push(LicenceVersion {
            version,
            effective,
            recorded_at_ms: now_ms,
            terms: c.terms.clone(),
            revision: self.ledger.revision + 1,
        });
        self.metadata.mark(MetaKey::Licence {
            institution: c.institution.clone(),
            version,
        });
        Ok(Output::Licence(Box::new(
            self.licences.view(&c.institution, today)?,
        )))
    }

    pub(super) fn give_notice(&mut self, c: &GiveNotice, now_ms: u64) -> Response {
        let today = service_date(now_ms);
        let licence = self
            .licences
            .by_institution
            .get_mut(&c.institution)
            .ok_or_else(|| StateError::NoLicence {
                institution: c.institution.clone(),
            })?;
        let shown = licence.shown(today).ok_or_else(|| StateError::NoLicence {
            institution: c.institution.clone(),
        })?;
        let agreement = licence.agreement_of(shown);
        let given = agreement.give_notice(c.date)?;
        licence.notice = given.notice.map(|date| Notice {
            date,
            recorded_at_ms: now_ms,
        });
        Ok(Output::Licence(Box::new(
            self.licences.view(&c.institution, today)?,
        )))
    }
}

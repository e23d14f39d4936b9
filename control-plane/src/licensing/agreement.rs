//! The service agreement as a function of dates.
//!
//! Terms (Sikt/NORDUnet): the agreement runs one contract year at a time,
//! from 1 October to 30 September, and renews by itself. Notice given in
//! writing **before 15 June** ends it on 1 October of the same year; notice
//! given on or after 15 June ends it on 1 October of the next year. An
//! agreement starting mid-year has a short first contract year, up to the
//! next 1 October, which the first invoice prorates by days.
//!
//! Nothing here is stored: the phase, the contract year and the deadlines
//! are computed from the start date, the notice date (if any) and the day
//! asked about, so they can never drift from the dates they derive from.

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use super::calendar::days_between;
use super::LicensingError;

/// Contract years start on this month and day.
pub const RENEWAL_MONTH_DAY: (i8, i8) = (10, 1);
/// Notice given before this month and day ends the agreement on the coming 1 October.
pub const NOTICE_BEFORE_MONTH_DAY: (i8, i8) = (6, 15);

fn on(year: i16, (month, day): (i8, i8)) -> Date {
    // Both month-days exist in every year.
    Date::new(year, month, day).unwrap_or(Date::MIN)
}

/// The agreement dates one licence carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Agreement {
    pub start: Date,
    /// The day written notice was received, if it was.
    pub notice: Option<Date>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Signed, but its start date is still ahead.
    NotStarted,
    /// In its first contract year.
    Active,
    /// In a contract year after the first, renewed on 1 October.
    Renewed,
    /// Running, but notice was given: it ends on `ends_on`.
    NoticeGiven,
    /// Ended by notice.
    Ended,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::NotStarted => "not_started",
            Phase::Active => "active",
            Phase::Renewed => "renewed",
            Phase::NoticeGiven => "notice_given",
            Phase::Ended => "ended",
        }
    }

    /// Whether meetings may be scheduled under the licence.
    pub fn in_force(self) -> bool {
        matches!(self, Phase::Active | Phase::Renewed | Phase::NoticeGiven)
    }
}

/// One contract year, or the short first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContractYear {
    /// First day covered (the agreement start in the first year, else 1 October).
    pub first_day: Date,
    /// Last day covered (always 30 September).
    pub last_day: Date,
    /// Days covered: fewer than `days_in_year` only in a short first year.
    pub days_covered: u32,
    /// Days from 1 October to 1 October: 366 when the year holds 29 February.
    pub days_in_year: u32,
}

/// What happens on the coming 1 October.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnRenewalDate {
    Renews,
    Ends,
    /// Already ended: nothing happens.
    Nothing,
}

/// The agreement as of one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementStatus {
    pub on: Date,
    pub phase: Phase,
    /// The contract year `on` falls in (the first one before the start,
    /// the last one after the end).
    pub contract_year: ContractYear,
    /// The coming 1 October, after the current contract year.
    pub renewal_date: Date,
    pub on_renewal_date: OnRenewalDate,
    /// The last day notice ends the agreement on `renewal_date` (14 June),
    /// or, once that day has passed, the one for the year after.
    pub last_day_to_give_notice: Date,
    /// The day the agreement ends, once notice was given.
    pub ends_on: Option<Date>,
}

/// The contract year (1 October to 30 September) that holds `day`.
fn contract_year_start(day: Date) -> Date {
    let this_year = on(day.year(), RENEWAL_MONTH_DAY);
    if day >= this_year {
        this_year
    } else {
        on(day.year() - 1, RENEWAL_MONTH_DAY)
    }
}

impl Agreement {
    /// The day notice given on `notice` ends the agreement: 1 October of
    /// the same year if given before 15 June, else 1 October of the next.
    pub fn end_for_notice(notice: Date) -> Date {
        if notice < on(notice.year(), NOTICE_BEFORE_MONTH_DAY) {
            on(notice.year(), RENEWAL_MONTH_DAY)
        } else {
            on(notice.year() + 1, RENEWAL_MONTH_DAY)
        }
    }

    /// Records notice received on `date`.
    pub fn give_notice(&self, date: Date) -> Result<Agreement, LicensingError> {
        if let Some(given) = self.notice {
            return Err(LicensingError::NoticeAlreadyGiven {
                given: given.to_string(),
            });
        }
        if date < self.start {
            return Err(LicensingError::NoticeBeforeStart {
                notice: date.to_string(),
                start: self.start.to_string(),
            });
        }
        Ok(Agreement {
            start: self.start,
            notice: Some(date),
        })
    }

    pub fn ends_on(&self) -> Option<Date> {
        self.notice.map(Agreement::end_for_notice)
    }

    /// The phase on `day`, without the rest of [`status`](Self::status)
    /// (what every schedule checks).
    pub fn phase(&self, day: Date) -> Phase {
        if day < self.start {
            Phase::NotStarted
        } else if self.ends_on().is_some_and(|end| day >= end) {
            Phase::Ended
        } else if self.notice.is_some_and(|n| n <= day) {
            Phase::NoticeGiven
        } else if contract_year_start(day) <= self.start {
            Phase::Active
        } else {
            Phase::Renewed
        }
    }

    /// The agreement as of `day`.
    pub fn status(&self, day: Date) -> AgreementStatus {
        let ends_on = self.ends_on();
        // The day whose contract year is shown: clamped into the agreement's life.
        let shown = match ends_on {
            Some(end) if day >= end => end.yesterday().unwrap_or(end),
            _ => day.max(self.start),
        };
        let year_start = contract_year_start(shown);
        let next_renewal = on(year_start.year() + 1, RENEWAL_MONTH_DAY);
        let first_day = year_start.max(self.start);
        let contract_year = ContractYear {
            first_day,
            last_day: next_renewal.yesterday().unwrap_or(next_renewal),
            days_covered: days_between(first_day, next_renewal).max(0) as u32,
            days_in_year: days_between(year_start, next_renewal) as u32,
        };
        let phase = self.phase(day);
        let on_renewal_date = match (phase, ends_on) {
            (Phase::Ended, _) => OnRenewalDate::Nothing,
            (_, Some(end)) if end == next_renewal => OnRenewalDate::Ends,
            _ => OnRenewalDate::Renews,
        };
        let deadline_this_year = on(next_renewal.year(), NOTICE_BEFORE_MONTH_DAY)
            .yesterday()
            .unwrap_or(Date::MIN);
        let last_day_to_give_notice = if day <= deadline_this_year {
            deadline_this_year
        } else {
            on(next_renewal.year() + 1, NOTICE_BEFORE_MONTH_DAY)
                .yesterday()
                .unwrap_or(Date::MIN)
        };
        AgreementStatus {
            on: day,
            phase,
            contract_year,
            renewal_date: next_renewal,
            on_renewal_date,
            last_day_to_give_notice,
            ends_on,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::licensing::calendar::parse_date;

    fn d(s: &str) -> Date {
        parse_date(s).unwrap()
    }

    fn agreement(start: &str) -> Agreement {
        Agreement {
            start: d(start),
            notice: None,
        }
    }

    #[test]
    fn notice_on_14_june_ends_on_1_october_of_the_same_year() {
        let a = agreement("2025-10-01")
            .give_notice(d("2027-06-14"))
            .unwrap();
        assert_eq!(a.ends_on(), Some(d("2027-10-01")));
        let s = a.status(d("2027-06-14"));
        assert_eq!(s.phase, Phase::NoticeGiven);
        assert_eq!(s.on_renewal_date, OnRenewalDate::Ends);
        assert_eq!(s.renewal_date, d("2027-10-01"));
        assert_eq!(a.status(d("2027-09-30")).phase, Phase::NoticeGiven);
        assert_eq!(a.status(d("2027-10-01")).phase, Phase::Ended);
        assert_eq!(
            a.status(d("2027-10-01")).on_renewal_date,
            OnRenewalDate::Nothing
        );
    }

    #[test]
    fn notice_on_16_june_runs_one_more_contract_year() {
        let a = agreement("2025-10-01")
            .give_notice(d("2027-06-16"))
            .unwrap();
        assert_eq!(a.ends_on(), Some(d("2028-10-01")));
        let s = a.status(d("2027-06-16"));
        assert_eq!(s.phase, Phase::NoticeGiven);
        // It renews on 1 October 2027 once more, then ends a year later.
        assert_eq!(s.on_renewal_date, OnRenewalDate::Renews);
        let s = a.status(d("2027-10-01"));
        assert_eq!(s.phase, Phase::NoticeGiven);
        assert_eq!(s.on_renewal_date, OnRenewalDate::Ends);
        assert_eq!(s.contract_year.first_day, d("2027-10-01"));
        assert_eq!(s.contract_year.last_day, d("2028-09-30"));
        assert_eq!(a.status(d("2028-10-01")).phase, Phase::Ended);
        // 15 June itself is not "before 15 June".
        assert_eq!(Agreement::end_for_notice(d("2027-06-15")), d("2028-10-01"));
    }

    #[test]
    fn a_start_on_1_october_has_a_full_first_year_then_renews() {
        let a = agreement("2026-10-01");
        let s = a.status(d("2026-10-01"));
        assert_eq!(s.phase, Phase::Active);
        assert_eq!(s.contract_year.first_day, d("2026-10-01"));
        assert_eq!(s.contract_year.last_day, d("2027-09-30"));
        assert_eq!(
            (s.contract_year.days_covered, s.contract_year.days_in_year),
            (365, 365)
        );
        assert_eq!(s.last_day_to_give_notice, d("2027-06-14"));
        assert_eq!(s.on_renewal_date, OnRenewalDate::Renews);
        assert_eq!(a.status(d("2026-09-30")).phase, Phase::NotStarted);
        // Renewal: the next contract year, and the next deadline once
        // 14 June has passed.
        let s = a.status(d("2027-10-01"));
        assert_eq!(s.phase, Phase::Renewed);
        assert_eq!(s.contract_year.first_day, d("2027-10-01"));
        assert_eq!(s.contract_year.days_in_year, 366); // holds 29 February 2028
        assert_eq!(
            a.status(d("2027-06-15")).last_day_to_give_notice,
            d("2028-06-14")
        );
        assert_eq!(a.status(d("2027-06-15")).phase, Phase::Active);
    }

    #[test]
    fn a_start_on_30_september_has_a_one_day_first_year() {
        let a = agreement("2026-09-30");
        let s = a.status(d("2026-09-30"));
        assert_eq!(s.phase, Phase::Active);
        assert_eq!(s.contract_year.first_day, d("2026-09-30"));
        assert_eq!(s.contract_year.last_day, d("2026-09-30"));
        assert_eq!(
            (s.contract_year.days_covered, s.contract_year.days_in_year),
            (1, 365)
        );
        assert_eq!(s.renewal_date, d("2026-10-01"));
        // The 2026 deadline is long gone: notice now ends it in 2027.
        assert_eq!(s.last_day_to_give_notice, d("2027-06-14"));
        let given = a.give_notice(d("2026-09-30")).unwrap();
        assert_eq!(given.ends_on(), Some(d("2027-10-01")));
        assert_eq!(a.status(d("2026-10-01")).phase, Phase::Renewed);
    }

    #[test]
    fn a_start_on_29_february_prorates_over_a_366_day_year() {
        let a = agreement("2028-02-29");
        let s = a.status(d("2028-02-29"));
        assert_eq!(s.phase, Phase::Active);
        assert_eq!(s.contract_year.first_day, d("2028-02-29"));
        assert_eq!(s.contract_year.last_day, d("2028-09-30"));
        assert_eq!(
            (s.contract_year.days_covered, s.contract_year.days_in_year),
            (215, 366)
        );
        assert_eq!(s.last_day_to_give_notice, d("2028-06-14"));
        let given = a.give_notice(d("2028-03-01")).unwrap();
        assert_eq!(given.ends_on(), Some(d("2028-10-01")));
        assert_eq!(
            given.status(d("2028-03-01")).on_renewal_date,
            OnRenewalDate::Ends
        );
    }

    #[test]
    fn notice_is_given_once_and_not_before_the_start() {
        let a = agreement("2026-10-01");
        assert!(matches!(
            a.give_notice(d("2026-06-01")),
            Err(LicensingError::NoticeBeforeStart { .. })
        ));
        let given = a.give_notice(d("2027-01-10")).unwrap();
        assert!(matches!(
            given.give_notice(d("2027-01-11")),
            Err(LicensingError::NoticeAlreadyGiven { .. })
        ));
        // Before the notice day the agreement is simply active.
        assert_eq!(given.status(d("2027-01-09")).phase, Phase::Active);
        assert_eq!(given.status(d("2027-01-09")).ends_on, Some(d("2027-10-01")));
    }
}

//! Billing: invoice lines as pure functions of the licence history and the
//! price tables (and, with the usage ledger, of consumption). Nothing here
//! reads a clock, a file or the state: the caller passes the history, the
//! tables and the contract year.
//!
//! Money is integer minor units (øre) of a named currency. Each line is
//! computed exactly (128-bit integers) and rounded once, half up; the total
//! is the sum of the lines.
//!
//! What a contract year (1 October to 30 September) is billed:
//! - **Annual fee** for the staff licences in force on the year's first day
//!   (one licence per started FTE), priced band by band; prorated by days
//!   in a short first year (days covered / days in the year, 365 or 366).
//! - **Student licences**, per licence and year, prorated the same way.
//! - **Extra licences**: when a reported change raises the count during the
//!   year, the added licences are billed from that change's effective date
//!   to the year's end, at the marginal band price. Decreases take effect
//!   at the next contract year (nothing is credited mid-year).
//! - **Add-ons** at their yearly price, prorated from the day they were
//!   added (or the year's first day).

use jiff::civil::Date;
use serde::{Deserialize, Serialize};

use crate::licensing::calendar::days_between;
use crate::licensing::{Agreement, LicenceTerms, PriceTable};
use crate::state::{Licence, LicenceVersion, LoadedPriceTable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    AnnualFee,
    StudentLicences,
    ExtraLicences,
    AddOn,
    /// Extended functionality used, from the usage ledger.
    Consumption,
    /// A correction of a closed period (late usage, a licence change
    /// recorded after the close): may be negative.
    Adjustment,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LineKind::AnnualFee => "annual_fee",
            LineKind::StudentLicences => "student_licences",
            LineKind::ExtraLicences => "extra_licences",
            LineKind::AddOn => "add_on",
            LineKind::Consumption => "consumption",
            LineKind::Adjustment => "adjustment",
        }
    }
}

/// What a line's quantity counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    Licence,
    AddOn,
    /// Seconds of use (consumption; billed per hour or minute).
    Second,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Licence => "licence",
            Unit::AddOn => "add_on",
            Unit::Second => "second",
        }
    }
}

/// One invoice line. A yearly line: `amount_minor =
/// round_half_up(yearly_minor × days / days_in_year)`; a consumption line:
/// `round_half_up(rate_minor × milliseconds used / milliseconds per unit)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub kind: LineKind,
    /// What the line is for (the add-on's name, "staff", "students", a
    /// consumption item; for an adjustment, `kind:item` of what it corrects).
    pub item: String,
    /// Licences, 1 for an add-on, or seconds of use.
    pub quantity: i64,
    pub unit: Unit,
    /// The whole-year price for `quantity`, before proration (yearly lines).
    pub yearly_minor: i64,
    /// The price per unit of the consumption item (per hour or minute).
    pub rate_minor: i64,
    /// First and last day billed.
    pub from: Date,
    pub to: Date,
    pub days: u32,
    pub days_in_year: u32,
    pub amount_minor: i64,
    /// An adjustment: the closed period it corrects (`FIRST..LAST`), and why.
    pub corrects: Option<String>,
    pub reason: Option<String>,
}

impl InvoiceLine {
    /// A line priced by the year and prorated by days.
    #[allow(clippy::too_many_arguments)]
    fn yearly(
        kind: LineKind,
        item: &str,
        quantity: u64,
        yearly_minor: i64,
        from: Date,
        to: Date,
        days: u32,
        days_in_year: u32,
    ) -> Result<InvoiceLine, BillingError> {
        Ok(InvoiceLine {
            kind,
            item: item.to_string(),
            quantity: i64::try_from(quantity).map_err(|_| BillingError::Overflow)?,
            unit: if kind == LineKind::AddOn {
                Unit::AddOn
            } else {
                Unit::Licence
            },
            yearly_minor,
            rate_minor: 0,
            from,
            to,
            days,
            days_in_year,
            amount_minor: prorate(yearly_minor, days, days_in_year)?,
            corrects: None,
            reason: None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invoice {
    pub institution: String,
    /// The contract year billed (its first and last day covered).
    pub first_day: Date,
    pub last_day: Date,
    pub currency: String,
    pub minor_unit_digits: u8,
    /// The price table the year is priced with.
    pub price_table: String,
    pub lines: Vec<InvoiceLine>,
    pub total_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BillingError {
    #[error(
        "institution {institution:?} has no licence in force during the year from {first_day}"
    )]
    NoLicence {
        institution: String,
        first_day: String,
    },
    #[error("no price table is loaded")]
    NoPriceTable,
    #[error("an amount does not fit 64 bits")]
    Overflow,
}

/// `minor` minor units as a decimal string in major units: 9000050 with
/// two digits is "90000.50".
pub fn decimal(minor: i64, digits: u8) -> String {
    if digits == 0 {
        return minor.to_string();
    }
    let scale = 10u64.pow(u32::from(digits));
    let sign = if minor < 0 { "-" } else { "" };
    let abs = minor.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = usize::from(digits)
    )
}

/// Parses a period `FIRST..LAST` of dates, first not after last.
pub fn parse_period(text: &str) -> Option<(Date, Date)> {
    let (a, b) = text.split_once("..")?;
    let (a, b) = (
        crate::licensing::parse_date(a).ok()?,
        crate::licensing::parse_date(b).ok()?,
    );
    (a <= b).then_some((a, b))
}

/// `value × numerator / denominator`, rounded half up, exactly.
pub fn prorate(value: i64, numerator: u32, denominator: u32) -> Result<i64, BillingError> {
    scale(value, u64::from(numerator), u64::from(denominator))
}

/// The table in force on `day`: the last loaded whose effective date is
/// not after it, else the earliest.
pub fn table_on(tables: &[LoadedPriceTable], day: Date) -> Option<&PriceTable> {
    tables
        .iter()
        .rev()
        .find(|t| t.table.effective <= day)
        .or_else(|| tables.first())
        .map(|t| &t.table)
}

/// The version in force on `day` (latest recorded among those effective by then).
fn version_on(history: &[LicenceVersion], day: Date) -> Option<&LicenceVersion> {
    history
        .iter()
        .filter(|v| v.effective <= day)
        .max_by_key(|v| (v.effective, v.version))
}

fn yearly_staff(table: &PriceTable, licences: u64) -> Result<i64, BillingError> {
    i64::try_from(table.staff_licences_minor(licences)).map_err(|_| BillingError::Overflow)
}

fn money(v: u64) -> Result<i64, BillingError> {
    i64::try_from(v).map_err(|_| BillingError::Overflow)
}

/// The invoice for the contract year that holds `day_in_year`.
pub fn contract_year_invoice(
    licence: &Licence,
    tables: &[LoadedPriceTable],
    day_in_year: Date,
) -> Result<Invoice, BillingError> {
    let no_licence = || BillingError::NoLicence {
        institution: licence.institution.clone(),
        first_day: day_in_year.to_string(),
    };
    // The agreement and the year as the version in force then sees them.
    let anchor = version_on(&licence.history, day_in_year)
        .or_else(|| licence.shown(day_in_year))
        .ok_or_else(no_licence)?;
    let agreement = Agreement {
        start: anchor.terms.agreement_start,
        notice: licence
            .notice
            .filter(|n| n.date >= anchor.terms.agreement_start)
            .map(|n| n.date),
    };
    let status = agreement.status(day_in_year);
    let year = status.contract_year;
    let (first, last) = (year.first_day, year.last_day);
    let days_in_year = year.days_in_year;
    let start_terms: &LicenceTerms = &version_on(&licence.history, first)
        .or_else(|| {
            // Recorded later but effective from the start of the agreement.
            licence
                .history
                .iter()
                .filter(|v| v.effective <= last)
                .min_by_key(|v| (v.effective, v.version))
        })
        .ok_or_else(no_licence)?
        .terms;
    let table = table_on(tables, first).ok_or(BillingError::NoPriceTable)?;
    let days_left = |from: Date| days_between(from, last).max(-1) as u32 + 1;
    let full = days_left(first);
    let mut lines = Vec::new();

    let staff = start_terms.staff_licences();
    let yearly = yearly_staff(table, staff)?;
    lines.push(InvoiceLine::yearly(
        LineKind::AnnualFee,
        "staff",
        staff,
        yearly,
        first,
        last,
        full,
        days_in_year,
    )?);
    if start_terms.student_licences > 0 {
        let n = u64::from(start_terms.student_licences);
        let yearly = money(n.saturating_mul(table.student_licence_minor))?;
        lines.push(InvoiceLine::yearly(
            LineKind::StudentLicences,
            "students",
            n,
            yearly,
            first,
            last,
            full,
            days_in_year,
        )?);
    }
    for name in &start_terms.add_ons {
        let yearly = money(table.add_ons.get(name).map_or(0, |a| a.annual_minor))?;
        lines.push(InvoiceLine::yearly(
            LineKind::AddOn,
            name,
            1,
            yearly,
            first,
            last,
            full,
            days_in_year,
        )?);
    }

    // Changes during the year, in effective order: only increases are billed.
    let mut changes: Vec<&LicenceVersion> = licence
        .history
        .iter()
        .filter(|v| v.effective > first && v.effective <= last)
        .collect();
    changes.sort_by_key(|v| (v.effective, v.version));
    let (mut staff_high, mut students_high) = (staff, u64::from(start_terms.student_licences));
    let mut add_ons_seen = start_terms.add_ons.clone();
    for v in changes {
        // The version in force that day (a later-recorded one may replace it).
        if version_on(&licence.history, v.effective) != Some(v) {
            continue;
        }
        let days = days_left(v.effective);
        let now_staff = v.terms.staff_licences();
        if now_staff > staff_high {
            let yearly = yearly_staff(table, now_staff)? - yearly_staff(table, staff_high)?;
            lines.push(InvoiceLine::yearly(
                LineKind::ExtraLicences,
                "staff",
                now_staff - staff_high,
                yearly,
                v.effective,
                last,
                days,
                days_in_year,
            )?);
            staff_high = now_staff;
        }
        let now_students = u64::from(v.terms.student_licences);
        if now_students > students_high {
            let n = now_students - students_high;
            let yearly = money(n.saturating_mul(table.student_licence_minor))?;
            lines.push(InvoiceLine::yearly(
                LineKind::ExtraLicences,
                "students",
                n,
                yearly,
                v.effective,
                last,
                days,
                days_in_year,
            )?);
            students_high = now_students;
        }
        for name in v.terms.add_ons.difference(&add_ons_seen.clone()) {
            let yearly = money(table.add_ons.get(name).map_or(0, |a| a.annual_minor))?;
            lines.push(InvoiceLine::yearly(
                LineKind::AddOn,
                name,
                1,
                yearly,
                v.effective,
                last,
                days,
                days_in_year,
            )?);
            add_ons_seen.insert(name.clone());
        }
    }
    let total_minor = lines
        .iter()
        .try_fold(0i64, |sum, l| sum.checked_add(l.amount_minor))
        .ok_or(BillingError::Overflow)?;
    Ok(Invoice {
        institution: licence.institution.clone(),
        first_day: first,
        last_day: last,
        currency: table.currency.clone(),
        minor_unit_digits: table.minor_unit_digits,
        price_table: table.version.clone(),
        lines,
        total_minor,
    })
}

pub mod export;
mod period;
pub use period::{own_lines, period_invoice, scale, DailyUsage, PeriodInputs};

#[cfg(test)]
mod tests;

//! Invoices per billing period: the licence lines that start in it, the
//! consumption it used, and adjustments for periods closed before it.
//!
//! A billing period is any range of days (`FIRST..LAST`, service time
//! zone). Yearly items are billed in advance: a line belongs to the period
//! holding its first day (the contract year's first day, or the effective
//! date of an increase). Consumption belongs to the days it was used;
//! what a contract year includes is used up in day order, so a period is
//! billed only what goes beyond the inclusion by its end and had not by its
//! start.
//!
//! Once a period is closed its lines are stored and never recomputed. A
//! later period (after the last closed one) carries adjustment lines: for
//! each closed period, what it would be billed now minus what it was
//! billed (its own lines and the adjustments already made), line by line.

use std::collections::BTreeMap;

use jiff::civil::Date;

use super::*;
use crate::licensing::calendar::days_between;
use crate::state::{ClosedPeriod, DayTotals};

/// An institution's usage per service-time-zone day.
pub type DailyUsage = BTreeMap<Date, DayTotals>;

/// Everything one institution's period invoice is a function of.
pub struct PeriodInputs<'a> {
    pub licence: &'a Licence,
    pub tables: &'a [LoadedPriceTable],
    pub usage: &'a DailyUsage,
    /// Periods closed so far (any order).
    pub closed: &'a [ClosedPeriod],
}

/// What each consumption item measures and per how many milliseconds its
/// rate is priced.
type Measure = fn(&DayTotals) -> u64;

fn consumption_measure(item: &str) -> Option<(Measure, u64)> {
    match item {
        "webinar_attendee_hour" => Some((|d| d.webinar_attendee_ms, 3_600_000)),
        "large_meeting_participant_hour" => Some((|d| d.large_meeting_ms, 3_600_000)),
        // Room systems are not carried yet: nothing to count.
        _ => None,
    }
}

/// `value × numerator / denominator` for 64-bit factors, half up, exactly.
pub fn scale(value: i64, numerator: u64, denominator: u64) -> Result<i64, BillingError> {
    if denominator == 0 {
        return Ok(0);
    }
    let n = i128::from(value) * i128::from(numerator);
    let d = i128::from(denominator);
    // Half up (away from zero for negative adjustments).
    let q = if n >= 0 {
        (2 * n + d) / (2 * d)
    } else {
        -((2 * -n + d) / (2 * d))
    };
    i64::try_from(q).map_err(|_| BillingError::Overflow)
}

fn next_day(d: Date) -> Option<Date> {
    d.tomorrow().ok()
}

/// Sums `measure` over the days in `[from, to]`.
fn used(usage: &DailyUsage, from: Date, to: Date, measure: Measure) -> u64 {
    if from > to {
        return 0;
    }
    usage.range(from..=to).map(|(_, d)| measure(d)).sum()
}

/// Yearly lines (annual fee, students, extra licences, add-ons) whose first
/// day lies in the period.
fn licence_lines(
    inp: &PeriodInputs,
    first: Date,
    last: Date,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let mut lines = Vec::new();
    let mut day = first;
    while day <= last {
        if inp.licence.shown(day).is_none() {
            break;
        }
        let invoice = match contract_year_invoice(inp.licence, inp.tables, day) {
            Ok(i) => i,
            Err(BillingError::NoLicence { .. }) => break,
            Err(e) => return Err(e),
        };
        lines.extend(
            invoice
                .lines
                .into_iter()
                .filter(|l| first <= l.from && l.from <= last),
        );
        // After the agreement's end the year shown stops moving.
        if invoice.last_day < day || invoice.last_day >= last {
            break;
        }
        match next_day(invoice.last_day) {
            Some(d) => day = d,
            None => break,
        }
    }
    Ok(lines)
}

/// Consumption lines for the period, one per item and contract year it
/// touches.
fn consumption_lines(
    inp: &PeriodInputs,
    first: Date,
    last: Date,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let mut lines = Vec::new();
    let mut day = first;
    while day <= last {
        let Some(version) = inp.licence.shown(day) else {
            break;
        };
        let agreement = inp.licence.agreement_of(version);
        let status = agreement.status(day);
        if day < agreement.start {
            day = agreement.start;
            continue;
        }
        if !status.phase.in_force() {
            break;
        }
        let year = status.contract_year;
        let seg_last = last.min(year.last_day);
        let table = table_on(inp.tables, day).ok_or(BillingError::NoPriceTable)?;
        for (key, rate) in &table.consumption {
            let item = key.strip_suffix("_minor").unwrap_or(key);
            let Some((measure, unit_ms)) = consumption_measure(item) else {
                continue;
            };
            let included = table
                .consumption_included
                .get(item)
                .map_or(0, |units| units.saturating_mul(unit_ms));
            let before = match day.yesterday() {
                Ok(y) => used(inp.usage, year.first_day, y, measure),
                Err(_) => 0,
            };
            let during = used(inp.usage, day, seg_last, measure);
            let billable =
                (before + during).saturating_sub(included) - before.saturating_sub(included);
            if billable == 0 {
                continue;
            }
            let rate = money(*rate)?;
            let ms = i64::try_from(billable).map_err(|_| BillingError::Overflow)?;
            lines.push(InvoiceLine {
                kind: LineKind::Consumption,
                item: item.to_string(),
                quantity: scale(ms, 1, 1000)?,
                unit: Unit::Second,
                yearly_minor: 0,
                rate_minor: rate,
                from: day,
                to: seg_last,
                days: days_between(day, seg_last) as u32 + 1,
                days_in_year: year.days_in_year,
                amount_minor: scale(rate, billable, unit_ms)?,
                corrects: None,
                reason: None,
            });
        }
        match next_day(seg_last) {
            Some(d) => day = d,
            None => break,
        }
    }
    Ok(lines)
}

/// The period's own lines: licence lines starting in it and its consumption.
pub fn own_lines(
    inp: &PeriodInputs,
    first: Date,
    last: Date,
) -> Result<Vec<InvoiceLine>, BillingError> {
    let mut lines = licence_lines(inp, first, last)?;
    lines.extend(consumption_lines(inp, first, last)?);
    Ok(lines)
}

/// What identifies a line across recomputations.
type LineKey = (LineKind, String, Date);

fn key_of(l: &InvoiceLine) -> LineKey {
    if l.kind == LineKind::Adjustment {
        let (kind, item) = l.item.split_once(':').unwrap_or(("", &l.item));
        let kind = match kind {
            "annual_fee" => LineKind::AnnualFee,
            "student_licences" => LineKind::StudentLicences,
            "extra_licences" => LineKind::ExtraLicences,
            "add_on" => LineKind::AddOn,
            _ => LineKind::Consumption,
        };
        return (kind, item.to_string(), l.from);
    }
    (l.kind, l.item.clone(), l.from)
}

/// Adjustments for every closed period, as carried by a period starting
/// on `first` (only a period after the last closed one carries them).
fn adjustment_lines(
    inp: &PeriodInputs,
    institution: &str,
    first: Date,
) -> Result<Vec<InvoiceLine>, BillingError> {
    if inp.closed.iter().any(|c| c.last >= first) {
        return Ok(Vec::new());
    }
    let mut closed: Vec<&ClosedPeriod> = inp.closed.iter().collect();
    closed.sort_by_key(|c| c.first);
    let mut out = Vec::new();
    for c in closed {
        let label = c.label();
        // Billed: the period's own lines, then every adjustment made since.
        let mut billed: BTreeMap<LineKey, (i64, i64, InvoiceLine)> = BTreeMap::new();
        let mut bill = |l: &InvoiceLine| {
            let e = billed.entry(key_of(l)).or_insert_with(|| (0, 0, l.clone()));
            e.0 += l.quantity;
            e.1 += l.amount_minor;
        };
        for p in inp.closed {
            for inv in p.invoices.iter().filter(|i| i.institution == institution) {
                for l in &inv.lines {
                    let own = p.first == c.first && l.kind != LineKind::Adjustment;
                    let adjusts =
                        l.kind == LineKind::Adjustment && l.corrects.as_deref() == Some(&label);
                    if own || adjusts {
                        bill(l);
                    }
                }
            }
        }
        let mut now: BTreeMap<LineKey, (i64, i64, InvoiceLine)> = BTreeMap::new();
        for l in own_lines(inp, c.first, c.last).unwrap_or_default() {
            let e = now.entry(key_of(&l)).or_insert_with(|| (0, 0, l.clone()));
            e.0 += l.quantity;
            e.1 += l.amount_minor;
        }
        let keys: std::collections::BTreeSet<&LineKey> = billed.keys().chain(now.keys()).collect();
        for k in keys {
            let (q_now, a_now, sample) = now
                .get(k)
                .or(billed.get(k))
                .map(|(q, a, l)| (*q, *a, l))
                .expect("listed");
            let (q_now, a_now) = if now.contains_key(k) {
                (q_now, a_now)
            } else {
                (0, 0)
            };
            let (q_was, a_was) = billed.get(k).map_or((0, 0), |(q, a, _)| (*q, *a));
            if q_now == q_was && a_now == a_was {
                continue;
            }
            let reason = if k.0 == LineKind::Consumption {
                "usage recorded after the period was closed"
            } else {
                "licence change recorded after the period was closed"
            };
            out.push(InvoiceLine {
                kind: LineKind::Adjustment,
                item: format!("{}:{}", k.0.as_str(), k.1),
                quantity: q_now - q_was,
                unit: sample.unit,
                yearly_minor: sample.yearly_minor,
                rate_minor: sample.rate_minor,
                from: sample.from,
                to: sample.to,
                days: sample.days,
                days_in_year: sample.days_in_year,
                amount_minor: a_now - a_was,
                corrects: Some(label.clone()),
                reason: Some(reason.into()),
            });
        }
    }
    Ok(out)
}

/// The invoice for one institution and period.
pub fn period_invoice(
    inp: &PeriodInputs,
    first: Date,
    last: Date,
) -> Result<Invoice, BillingError> {
    let institution = inp.licence.institution.as_str();
    let table = table_on(inp.tables, first).ok_or(BillingError::NoPriceTable)?;
    let mut lines = own_lines(inp, first, last)?;
    lines.extend(adjustment_lines(inp, institution, first)?);
    let total_minor = lines
        .iter()
        .try_fold(0i64, |sum, l| sum.checked_add(l.amount_minor))
        .ok_or(BillingError::Overflow)?;
    Ok(Invoice {
        institution: institution.to_string(),
        first_day: first,
        last_day: last,
        currency: table.currency.clone(),
        minor_unit_digits: table.minor_unit_digits,
        price_table: table.version.clone(),
        lines,
        total_minor,
    })
}

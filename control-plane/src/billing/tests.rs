//! Fixed answers for proration and extra licences, worked out by hand from
//! the built-in price table: staff licences 90 kr each up to 1,000, then
//! 75 kr up to 5,000; student licences 15 kr; webinar-1000 12,000 kr a year.

use super::*;
use crate::licensing::{parse_date, Tier};
use crate::state::Notice;

fn d(s: &str) -> Date {
    parse_date(s).unwrap()
}

fn terms(start: &str, fte_centi: u64, students: u32, add_ons: &[&str]) -> LicenceTerms {
    LicenceTerms {
        tier: Tier::Education,
        staff_fte_centi: fte_centi,
        student_licences: students,
        add_ons: add_ons.iter().map(|a| a.to_string()).collect(),
        agreement_start: d(start),
        agreement_contact: "avtale@uio.example".into(),
        technical_contact: "noc@uio.example".into(),
        allow_overage: false,
    }
}

fn licence(versions: &[(&str, LicenceTerms)]) -> Licence {
    Licence {
        institution: "uio".into(),
        history: versions
            .iter()
            .enumerate()
            .map(|(i, (effective, t))| LicenceVersion {
                version: i as u32 + 1,
                effective: d(effective),
                recorded_at_ms: i as u64,
                terms: t.clone(),
                revision: i as u64 + 1,
            })
            .collect(),
        notice: None,
    }
}

fn tables() -> Vec<LoadedPriceTable> {
    vec![LoadedPriceTable {
        table: PriceTable::builtin(),
        loaded_at_ms: 0,
        revision: 0,
    }]
}

fn amounts(i: &Invoice) -> Vec<(LineKind, &str, i64)> {
    i.lines
        .iter()
        .map(|l| (l.kind, l.item.as_str(), l.amount_minor))
        .collect()
}

#[test]
fn a_start_on_1_october_pays_the_whole_year() {
    let l = licence(&[("2026-10-01", terms("2026-10-01", 100_000, 0, &[]))]);
    let i = contract_year_invoice(&l, &tables(), d("2027-01-15")).unwrap();
    assert_eq!(
        (i.first_day, i.last_day),
        (d("2026-10-01"), d("2027-09-30"))
    );
    assert_eq!(amounts(&i), [(LineKind::AnnualFee, "staff", 9_000_000)]);
    assert_eq!(i.lines[0].days, 365);
    assert_eq!(i.total_minor, 9_000_000);
    assert_eq!((i.currency.as_str(), i.minor_unit_digits), ("NOK", 2));
}

#[test]
fn a_start_on_15_march_pays_the_days_left_of_the_year() {
    let l = licence(&[("2027-03-15", terms("2027-03-15", 100_000, 0, &[]))]);
    let i = contract_year_invoice(&l, &tables(), d("2027-03-15")).unwrap();
    // 15 March to 30 September 2027: 200 of 365 days.
    // 9,000,000 × 200 / 365 = 4,931,506.85 -> 4,931,507 øre.
    assert_eq!((i.lines[0].days, i.lines[0].days_in_year), (200, 365));
    assert_eq!(i.total_minor, 4_931_507);
    assert_eq!(i.first_day, d("2027-03-15"));
}

#[test]
fn a_leap_year_has_366_days() {
    let l = licence(&[("2028-02-29", terms("2028-02-29", 100_000, 0, &[]))]);
    let i = contract_year_invoice(&l, &tables(), d("2028-06-01")).unwrap();
    // 29 February to 30 September 2028: 215 of 366 days.
    // 9,000,000 × 215 / 366 = 5,286,885.25 -> 5,286,885 øre.
    assert_eq!((i.lines[0].days, i.lines[0].days_in_year), (215, 366));
    assert_eq!(i.total_minor, 5_286_885);
}

#[test]
fn a_mid_year_fte_increase_bills_the_extra_licences_from_its_effective_date() {
    let l = licence(&[
        ("2026-10-01", terms("2026-10-01", 100_000, 300, &[])),
        // 1200.5 FTE from 1 April: 1,201 licences, 201 more.
        ("2027-04-01", terms("2026-10-01", 120_050, 300, &[])),
    ]);
    let i = contract_year_invoice(&l, &tables(), d("2026-10-01")).unwrap();
    // 201 extra licences in the second band: 201 × 7,500 = 1,507,500 a year;
    // 1 April to 30 September is 183 days: 1,507,500 × 183 / 365 = 755,815.07.
    assert_eq!(
        amounts(&i),
        [
            (LineKind::AnnualFee, "staff", 9_000_000),
            (LineKind::StudentLicences, "students", 450_000),
            (LineKind::ExtraLicences, "staff", 755_815),
        ]
    );
    assert_eq!(i.lines[2].quantity, 201);
    assert_eq!(i.lines[2].from, d("2027-04-01"));
    assert_eq!(i.total_minor, 9_000_000 + 450_000 + 755_815);
    // The next year starts from the new count, in full.
    let next = contract_year_invoice(&l, &tables(), d("2027-10-01")).unwrap();
    assert_eq!(next.lines[0].quantity, 1201);
    assert_eq!(next.lines[0].amount_minor, 9_000_000 + 1_507_500);
}

#[test]
fn an_extra_licence_and_an_added_add_on_are_prorated_and_a_decrease_is_not_credited() {
    let l = licence(&[
        ("2026-10-01", terms("2026-10-01", 100_000, 0, &[])),
        // One more licence from 1 July, with webinar-1000 added the same day.
        (
            "2027-07-01",
            terms("2026-10-01", 100_001, 0, &["webinar-1000"]),
        ),
        // Down again in August: takes effect next year, no credit now.
        (
            "2027-08-01",
            terms("2026-10-01", 90_000, 0, &["webinar-1000"]),
        ),
    ]);
    let i = contract_year_invoice(&l, &tables(), d("2027-09-30")).unwrap();
    // 1 July to 30 September: 92 days. One licence at 7,500 a year:
    // 7,500 × 92 / 365 = 1,890.41 -> 1,890. The add-on: 1,200,000 × 92 / 365
    // = 302,465.75 -> 302,466.
    assert_eq!(
        amounts(&i),
        [
            (LineKind::AnnualFee, "staff", 9_000_000),
            (LineKind::ExtraLicences, "staff", 1_890),
            (LineKind::AddOn, "webinar-1000", 302_466),
        ]
    );
    assert!(i.lines.iter().all(|l| l.amount_minor >= 0));
    assert_eq!(
        i.total_minor,
        i.lines.iter().map(|l| l.amount_minor).sum::<i64>()
    );
}

#[test]
fn notice_does_not_change_the_year_it_ends_in() {
    let mut l = licence(&[("2026-10-01", terms("2026-10-01", 100_000, 0, &[]))]);
    l.notice = Some(Notice {
        date: d("2027-06-14"),
        recorded_at_ms: 0,
    });
    let i = contract_year_invoice(&l, &tables(), d("2027-06-20")).unwrap();
    assert_eq!(i.total_minor, 9_000_000);
}

#[test]
fn rounding_is_half_up_once_per_line() {
    assert_eq!(prorate(1, 1, 2).unwrap(), 1);
    assert_eq!(prorate(5, 1, 2).unwrap(), 3);
    assert_eq!(prorate(4, 1, 3).unwrap(), 1);
    assert_eq!(prorate(-5, 1, 2).unwrap(), -3);
    assert_eq!(prorate(i64::MAX, 365, 365).unwrap(), i64::MAX);
    assert!(prorate(i64::MAX, 366, 365).is_err());
}

#[test]
fn amounts_print_in_major_units_and_periods_parse() {
    assert_eq!(decimal(9_000_050, 2), "90000.50");
    assert_eq!(decimal(5, 2), "0.05");
    assert_eq!(decimal(-1_890, 2), "-18.90");
    assert_eq!(decimal(42, 0), "42");
    assert_eq!(
        parse_period("2026-10-01..2027-09-30"),
        Some((d("2026-10-01"), d("2027-09-30")))
    );
    for bad in [
        "2027-09-30..2026-10-01",
        "2026-10-01",
        "2026-10-01..",
        "x..y",
    ] {
        assert_eq!(parse_period(bad), None, "{bad}");
    }
}

//! Arguments an operator or an institution types: billing periods,
//! months, dates, FTE counts, tiers, SLO objectives and SLI names, and
//! contact points. Parsers never panic, and what they accept writes back
//! to the same value.
#![no_main]

use fjord_control_plane::api::sla::parse_month;
use fjord_control_plane::billing::parse_period;
use fjord_control_plane::licensing::{check_contact, format_fte, parse_date, parse_fte, Tier};
use fjord_control_plane::sla::{parse_percent_ppm, Sli};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((which, bytes)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match which % 8 {
        0 => {
            if let Some((first, last)) = parse_period(text) {
                assert!(first <= last);
                assert_eq!(
                    parse_period(&format!("{first}..{last}")),
                    Some((first, last))
                );
            }
        }
        1 => {
            if let Ok(first) = parse_month(text) {
                assert_eq!(first.day(), 1);
            }
        }
        2 => {
            if let Ok(d) = parse_date(text) {
                assert_eq!(parse_date(&d.to_string()).ok(), Some(d));
            }
        }
        3 => {
            if let Ok(centi) = parse_fte(text) {
                assert_eq!(parse_fte(&format_fte(centi)).ok(), Some(centi));
            }
        }
        4 => {
            if let Some(t) = Tier::parse(text) {
                assert_eq!(Tier::parse(t.as_str()), Some(t));
            }
        }
        5 => {
            if let Some(ppm) = parse_percent_ppm(text) {
                assert!(ppm <= 1_000_000);
            }
        }
        6 => {
            if let Some(sli) = Sli::parse(text) {
                assert_eq!(Sli::parse(sli.as_str()), Some(sli));
            }
        }
        _ => {
            let _ = check_contact("technical_contact", text);
        }
    }
});

//! Civil dates in the service's time zone.
//!
//! Agreements, effective dates and billing periods are calendar dates, and
//! a calendar date only exists in a time zone: 1 October starts at 22:00 UTC
//! on 30 September in Oslo in summer. The log carries UTC milliseconds; this
//! turns them into the service's dates. The zone database is compiled into
//! the binary, so every replica running one version reads the same date
//! from the same instant.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::Timestamp;

use super::LicensingError;

/// The zone the service's dates are in (Sikt and NORDUnet run on Norwegian time).
pub const SERVICE_TIME_ZONE: &str = "Europe/Oslo";

/// The service's time zone, loaded once from the bundled database.
fn service_zone() -> &'static TimeZone {
    static ZONE: std::sync::OnceLock<TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(|| {
        jiff::tz::db()
            .get(SERVICE_TIME_ZONE)
            // The bundled database always has it; UTC keeps a broken build
            // deterministic rather than panicking inside `apply`.
            .unwrap_or(TimeZone::UTC)
    })
}

/// The service's calendar date at `now_ms` (milliseconds since the Unix epoch, UTC).
pub fn service_date(now_ms: u64) -> Date {
    let ms = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let ts = Timestamp::from_millisecond(ms).unwrap_or(Timestamp::MAX);
    ts.to_zoned_datetime(service_zone().clone()).date()
}

/// The first instant (UTC milliseconds) of `date` in the service's time zone.
pub fn start_of_service_date(date: Date) -> u64 {
    date.to_zoned_datetime(service_zone().clone())
        .map(|z| z.timestamp().as_millisecond().max(0) as u64)
        .unwrap_or(0)
}

/// Parses `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Result<Date, LicensingError> {
    let bad = || LicensingError::BadDate {
        text: text.chars().take(40).collect(),
    };
    if text.len() != 10 {
        return Err(bad());
    }
    text.parse::<Date>().map_err(|_| bad())
}

/// Days from `a` to `b` (negative when `b` is earlier).
pub fn days_between(a: Date, b: Date) -> i64 {
    i64::from((b - a).get_days())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_date_turns_at_local_midnight_not_utc_midnight() {
        // 2026-09-30T22:30Z is 00:30 on 1 October in Oslo (CEST, UTC+2).
        let ms = "2026-09-30T22:30:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_millisecond() as u64;
        assert_eq!(service_date(ms), parse_date("2026-10-01").unwrap());
        // 2026-12-31T22:30Z is 23:30 in Oslo (CET, UTC+1): still the 31st.
        let ms = "2026-12-31T22:30:00Z"
            .parse::<Timestamp>()
            .unwrap()
            .as_millisecond() as u64;
        assert_eq!(service_date(ms), parse_date("2026-12-31").unwrap());
        let start = start_of_service_date(parse_date("2026-10-01").unwrap());
        assert_eq!(
            start,
            "2026-09-30T22:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_millisecond() as u64
        );
    }

    #[test]
    fn dates_parse_strictly() {
        assert!(parse_date("2026-02-29").is_err());
        assert!(parse_date("2028-02-29").is_ok());
        assert!(parse_date("2026-1-01").is_err());
        assert!(parse_date("2026-10-01T00:00").is_err());
        assert_eq!(
            days_between(
                parse_date("2027-10-01").unwrap(),
                parse_date("2028-10-01").unwrap()
            ),
            366
        );
    }
}

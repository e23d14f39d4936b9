//! Argument checks shared by the handlers. Limits are generous for real use
//! and refuse what can only be a mistake or an attack.

use super::ApiError;

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_PARTICIPANTS: u32 = 100_000;
pub const MAX_CAPACITY: u32 = 1_000_000;
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 400 * 24 * 3600 * 1000;
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Names and ids: 1–64 of ASCII letters, digits, `-`, `_`, `.`.
pub fn name(field: &'static str, v: &str) -> Result<(), ApiError> {
    if v.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if v.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid(
            field,
            format!("longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(ApiError::invalid(
            field,
            format!("character {c:?} not allowed (letters, digits, '-', '_', '.')"),
        ));
    }
    Ok(())
}

pub fn range_u32(field: &'static str, v: u32, min: u32, max: u32) -> Result<(), ApiError> {
    if v < min || v > max {
        return Err(ApiError::invalid(
            field,
            format!("{v} is outside {min}..={max}"),
        ));
    }
    Ok(())
}

/// `host:port` with a non-zero port and a plausible host.
pub fn address(field: &'static str, v: &str) -> Result<(), ApiError> {
    if v.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err(ApiError::invalid(field, "expected host:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(ApiError::invalid(field, format!("bad port {port:?}"))),
    }
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        return Err(ApiError::invalid(field, format!("bad host {host:?}")));
    }
    Ok(())
}

pub fn id(field: &'static str, v: u64) -> Result<(), ApiError> {
    if v == 0 {
        return Err(ApiError::invalid(field, "must be set (ids start at 1)"));
    }
    Ok(())
}

/// A participant's display name: 1 to 64 characters, no control characters.
pub fn display_name(field: &'static str, v: &str) -> Result<(), ApiError> {
    if v.trim().is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > 64 {
        return Err(ApiError::invalid(field, "longer than 64 characters"));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid(field, "contains control characters"));
    }
    Ok(())
}

/// An idempotency key: at most 128 printable characters.
pub fn request_id(v: &str) -> Result<(), ApiError> {
    if v.len() > MAX_REQUEST_ID_LEN || v.chars().any(|c| c.is_control()) {
        return Err(ApiError::invalid(
            "request_id",
            format!("at most {MAX_REQUEST_ID_LEN} printable characters"),
        ));
    }
    Ok(())
}

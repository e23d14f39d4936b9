//! Argument checks shared by the handlers. Limits are generous for real use
//! and refuse what can only be a mistake or an attack.

use super::ApiError;

pub const MAX_PARTICIPANTS: u32 = 100_000;
pub use fjord_common::validate::MAX_CAPACITY;
pub const MAX_DURATION_MS: u64 = 7 * 24 * 3600 * 1000;
pub const MAX_SCHEDULE_AHEAD_MS: u64 = 400 * 24 * 3600 * 1000;
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Names and ids: 1–64 of ASCII letters, digits, `-`, `_`, `.`.
pub fn name(field: &'static str, v: &str) -> Result<(), ApiError> {
    fjord_common::validate::name(v).map_err(|reason| ApiError::invalid(field, reason))
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
    fjord_common::validate::address(v).map_err(|reason| ApiError::invalid(field, reason))
}

pub fn id(field: &'static str, v: u64) -> Result<(), ApiError> {
    if v == 0 {
        return Err(ApiError::invalid(field, "must be set (ids start at 1)"));
    }
    Ok(())
}

/// A participant's display name: 1 to 64 characters, no control characters.
pub fn display_name(field: &'static str, v: &str) -> Result<(), ApiError> {
    fjord_common::validate::display_name(v).map_err(|reason| ApiError::invalid(field, reason))
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

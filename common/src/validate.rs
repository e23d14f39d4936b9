//! Checks on names and addresses that both the control plane's API and
//! media nodes' configuration apply: one alphabet for ids everywhere.

/// Longest name or id.
pub const MAX_NAME_LEN: usize = 64;
/// Largest node capacity (participants).
pub const MAX_CAPACITY: u32 = 1_000_000;

/// Names and ids: 1–64 of ASCII letters, digits, `-`, `_`, `.`.
pub fn name(v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err("must not be empty".into());
    }
    if v.len() > MAX_NAME_LEN {
        return Err(format!("longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "character {c:?} not allowed (letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

/// `host:port` with a non-zero port and a plausible host.
pub fn address(v: &str) -> Result<(), String> {
    if v.parse::<std::net::SocketAddr>().is_ok() {
        return Ok(());
    }
    let Some((host, port)) = v.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(format!("bad port {port:?}")),
    }
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'))
    {
        return Err(format!("bad host {host:?}"));
    }
    Ok(())
}

/// A participant's display name: 1 to 64 characters, no control characters.
pub fn display_name(v: &str) -> Result<(), String> {
    if v.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if v.chars().count() > 64 {
        return Err("longer than 64 characters".into());
    }
    if v.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

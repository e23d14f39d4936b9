//! Dashboard links: a short-lived signed token naming what it opens (one
//! institution's page, or the operator overview) and until when. The key
//! is derived from the KEK on every replica, so any replica checks a link
//! any other made, and nothing about it is in the log.
//!
//! Form: `<hex scope>.<expires ms>.<hex HMAC-SHA256(key, "<hex scope>.<expires>")>`,
//! scope `*` for the overview.

/// The overview's scope.
pub const ALL: &str = "*";

/// Longest a link may be valid.
pub const MAX_LINK_VALIDITY_MS: u64 = 31 * 24 * 3600 * 1000;

use crate::access::{hex, secrets_equal, unhex};

fn mac(key: &[u8], signed: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    hex(ring::hmac::sign(&k, signed.as_bytes()).as_ref())
}

/// A token for `scope` (an institution, or [`ALL`]) valid until `expires_ms`.
pub fn sign(key: &[u8], scope: &str, expires_ms: u64) -> String {
    let signed = format!("{}.{expires_ms}", hex(scope.as_bytes()));
    let m = mac(key, &signed);
    format!("{signed}.{m}")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature is not valid")]
    BadSignature,
    #[error("the link expired")]
    Expired,
}

/// The scope a token opens, if it is genuine and not expired at `now_ms`.
pub fn verify(key: &[u8], token: &str, now_ms: u64) -> Result<String, LinkError> {
    let mut parts = token.rsplitn(2, '.');
    let (m, signed) = match (parts.next(), parts.next()) {
        (Some(m), Some(s)) => (m, s),
        _ => return Err(LinkError::Malformed),
    };
    let (scope_hex, expires) = signed.split_once('.').ok_or(LinkError::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| LinkError::Malformed)?;
    let scope = unhex(scope_hex)
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or(LinkError::Malformed)?;
    let expected = mac(key, signed);
    if !secrets_equal(&expected, m) {
        return Err(LinkError::BadSignature);
    }
    if now_ms >= expires {
        return Err(LinkError::Expired);
    }
    Ok(scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_open_their_scope_until_they_expire_and_not_after_tampering() {
        let key = [7u8; 32];
        let t = sign(&key, "uio", 1_000);
        assert_eq!(verify(&key, &t, 999), Ok("uio".into()));
        assert_eq!(verify(&key, &t, 1_000), Err(LinkError::Expired));
        assert_eq!(verify(&[8u8; 32], &t, 0), Err(LinkError::BadSignature));
        // Another institution's name with this signature.
        let forged = t.replacen(&hex(b"uio"), &hex(b"ntnu"), 1);
        assert_eq!(verify(&key, &forged, 0), Err(LinkError::BadSignature));
        // A later expiry with this signature.
        let stretched = t.replacen(".1000.", ".9999999.", 1);
        assert_eq!(verify(&key, &stretched, 0), Err(LinkError::BadSignature));
        assert_eq!(verify(&key, "nonsense", 0), Err(LinkError::Malformed));
        assert_eq!(verify(&key, &sign(&key, ALL, 5), 1), Ok("*".into()));
    }
}

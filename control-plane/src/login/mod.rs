//! Host sign-in: OpenID Connect ID tokens from the institution's own
//! identity provider, validated offline against the keys configured for
//! it (no call to the provider), with a JWT library, not by hand.
//!
//! What comes out is what the state machine needs and nothing more: the
//! issuer and subject (turned into a pseudonymous account id by the
//! caller) and the affiliation values. Names and e-mail addresses in the
//! token are never read.

pub mod dev_idp;

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::state::LoginConfig;

/// Largest ID token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
/// Clock skew tolerated on `exp` (seconds).
pub const LEEWAY_S: u64 = 60;
/// Most affiliation values read from one token.
pub const MAX_AFFILIATIONS: usize = 32;

/// Signature algorithms a provider may use: public-key ones only, so a
/// token can never be "signed" with a published key as an HMAC secret.
const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("the ID token is not a well-formed JWT")]
    Malformed,
    #[error("the ID token is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("the ID token is signed with {alg}, which is not accepted")]
    Algorithm { alg: String },
    #[error("the ID token names a signing key the provider does not publish")]
    UnknownKey,
    #[error("the ID token's signature does not verify")]
    BadSignature,
    #[error("the ID token has expired")]
    Expired,
    #[error("the ID token is from another issuer")]
    WrongIssuer,
    #[error("the ID token is for another client (audience)")]
    WrongAudience,
    #[error("the ID token lacks a claim Fjord needs: {claim}")]
    MissingClaim { claim: String },
    #[error("the provider's keys (JWKS) are not usable: {reason}")]
    BadJwks { reason: String },
}

/// What a valid token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    pub issuer: String,
    pub subject: String,
    pub affiliations: Vec<String>,
}

/// Checks a provider's JWKS: JSON, bounded, with at least one key of an
/// accepted algorithm.
pub fn check_jwks(jwks: &str) -> Result<JwkSet, LoginError> {
    if jwks.len() > MAX_JWKS_BYTES {
        return Err(LoginError::BadJwks {
            reason: format!("longer than {MAX_JWKS_BYTES} bytes"),
        });
    }
    let set: JwkSet = serde_json::from_str(jwks).map_err(|e| LoginError::BadJwks {
        reason: e.to_string().chars().take(120).collect(),
    })?;
    let usable = set
        .keys
        .iter()
        .any(|k| DecodingKey::from_jwk(k).is_ok() && k.is_supported());
    if !usable {
        return Err(LoginError::BadJwks {
            reason: "no usable public signing key".into(),
        });
    }
    Ok(set)
}

/// Validates `token` against the institution's login configuration:
/// signature by one of its keys, issuer, audience, expiry (with
/// [`LEEWAY_S`] of skew), and a subject.
pub fn verify(config: &LoginConfig, token: &str) -> Result<VerifiedLogin, LoginError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(LoginError::TooLong {
            max: MAX_TOKEN_BYTES,
        });
    }
    let header = decode_header(token).map_err(|_| LoginError::Malformed)?;
    if !ALLOWED.contains(&header.alg) {
        return Err(LoginError::Algorithm {
            alg: format!("{:?}", header.alg),
        });
    }
    let set = check_jwks(&config.jwks)?;
    let jwk = match &header.kid {
        Some(kid) => set.find(kid),
        None if set.keys.len() == 1 => set.keys.first(),
        None => None,
    }
    .ok_or(LoginError::UnknownKey)?;
    // A key published for one algorithm is never used with another.
    if let Some(alg) = jwk.common.key_algorithm {
        if format!("{alg:?}") != format!("{:?}", header.alg) {
            return Err(LoginError::Algorithm {
                alg: format!("{:?}", header.alg),
            });
        }
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| LoginError::UnknownKey)?;
    let mut validation = Validation::new(header.alg);
    validation.leeway = LEEWAY_S;
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let claims = decode::<serde_json::Map<String, Value>>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => LoginError::Expired,
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => LoginError::WrongIssuer,
            jsonwebtoken::errors::ErrorKind::InvalidAudience => LoginError::WrongAudience,
            jsonwebtoken::errors::ErrorKind::InvalidSignature => LoginError::BadSignature,
            jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(c) => {
                LoginError::MissingClaim { claim: c.clone() }
            }
            _ => LoginError::Malformed,
        })?
        .claims;
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| LoginError::MissingClaim {
            claim: "sub".into(),
        })?
        .to_string();
    let raw: Vec<&str> = match claims.get(&config.affiliation_claim) {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(values)) => values.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let affiliations = raw
        .into_iter()
        .take(MAX_AFFILIATIONS)
        .filter_map(|v| match &config.affiliation_scope {
            None => Some(v.to_string()),
            Some(scope) => v
                .rsplit_once('@')
                .filter(|(_, s)| s.eq_ignore_ascii_case(scope))
                .map(|(value, _)| value.to_string()),
        })
        .filter(|v| v.len() <= 64)
        .collect();
    Ok(VerifiedLogin {
        issuer: config.issuer.clone(),
        subject,
        affiliations,
    })
}

#[cfg(test)]
mod tests {
    use super::dev_idp::DevIdp;
    use super::*;
    use crate::licensing::Affiliation;

    fn config(idp: &DevIdp, institution: &str) -> LoginConfig {
        LoginConfig {
            issuer: idp.issuer(institution),
            audience: dev_idp::AUDIENCE.into(),
            jwks: idp.jwks(),
            affiliation_claim: dev_idp::AFFILIATION_CLAIM.into(),
            eligible: [("staff".to_string(), Affiliation::Staff)].into(),
            affiliation_scope: None,
        }
    }

    fn now_s() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_affiliations() {
        let idp = DevIdp::generate();
        let token = idp
            .token("uio", "staff-1", &["staff", "member"], now_s(), 600)
            .unwrap();
        let v = verify(&config(&idp, "uio"), &token).unwrap();
        assert_eq!(v.subject, "staff-1");
        assert_eq!(v.affiliations, ["staff", "member"]);
    }

    #[test]
    fn expired_foreign_forged_and_confused_tokens_are_refused() {
        let idp = DevIdp::generate();
        let cfg = config(&idp, "uio");
        let expired = idp
            .token("uio", "staff-1", &["staff"], now_s() - 7200, 600)
            .unwrap();
        assert_eq!(verify(&cfg, &expired), Err(LoginError::Expired));
        let other_issuer = idp
            .token("ntnu", "staff-1", &["staff"], now_s(), 600)
            .unwrap();
        assert_eq!(verify(&cfg, &other_issuer), Err(LoginError::WrongIssuer));
        // Signed by a key the institution does not trust (same kid).
        let forger = DevIdp::generate_with_kid(&idp.kid);
        let forged = forger
            .token("uio", "staff-1", &["staff"], now_s(), 600)
            .unwrap();
        assert_eq!(verify(&cfg, &forged), Err(LoginError::BadSignature));
        // A tampered payload breaks the signature.
        let good = idp
            .token("uio", "staff-1", &["staff"], now_s(), 600)
            .unwrap();
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[1] = idp_payload_with_sub(&parts[1], "staff-2");
        assert_eq!(
            verify(&cfg, &parts.join(".")),
            Err(LoginError::BadSignature)
        );
        // alg=none and HMAC tokens never pass.
        let none = format!("{}.{}.", b64(r#"{"alg":"none","typ":"JWT"}"#), parts[1]);
        assert!(verify(&cfg, &none).is_err());
        let hs = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &serde_json::json!({"iss": cfg.issuer, "aud": "fjord", "sub": "x", "exp": now_s() + 600}),
            &jsonwebtoken::EncodingKey::from_secret(cfg.jwks.as_bytes()),
        )
        .unwrap();
        assert!(matches!(
            verify(&cfg, &hs),
            Err(LoginError::Algorithm { .. })
        ));
        assert_eq!(verify(&cfg, "garbage"), Err(LoginError::Malformed));
        assert!(matches!(
            verify(&cfg, &"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(LoginError::TooLong { .. })
        ));
    }

    #[test]
    fn scoped_affiliations_count_only_for_their_own_domain() {
        let idp = DevIdp::generate();
        let mut cfg = config(&idp, "uio");
        cfg.affiliation_scope = Some("uio.no".into());
        let token = idp
            .token(
                "uio",
                "s",
                &["employee@uio.no", "student@ntnu.no"],
                now_s(),
                600,
            )
            .unwrap();
        assert_eq!(verify(&cfg, &token).unwrap().affiliations, ["employee"]);
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    fn idp_payload_with_sub(payload: &str, sub: &str) -> String {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        v["sub"] = sub.into();
        b64(&v.to_string())
    }
}

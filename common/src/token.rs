//! Join tokens: an encoded [`JoinClaims`](pb::JoinClaims) plus an Ed25519
//! signature over those bytes, made by the control plane with the cluster's
//! key. Media nodes get the public key when they register and check
//! signature, expiry, meeting and node themselves, offline.

use prost::Message;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};

use fjord_proto::v1 as pb;

/// Meeting ids from here up are the control plane's synthetic probe joins
/// (the availability SLI): nodes carry them like any meeting but record no
/// usage and keep no connection log for them. Real meetings are numbered
/// from 1 and never get near.
pub const PROBE_MEETING_ID_BASE: u64 = 1 << 63;

pub fn is_probe_meeting(meeting_id: u64) -> bool {
    meeting_id >= PROBE_MEETING_ID_BASE
}

/// How long a join token stays valid: long enough to connect, short enough
/// that a leaked token is soon useless.
pub const JOIN_TOKEN_TTL_MS: u64 = 2 * 60 * 1000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("join token is malformed")]
    Malformed,
    #[error("join token signature is not valid")]
    BadSignature,
    #[error("join token expired")]
    Expired,
    #[error("join token is for meeting {token}, not {wanted}")]
    WrongMeeting { token: u64, wanted: u64 },
    #[error("join token is for node {token:?}, not this node")]
    WrongNode { token: String },
}

/// A new Ed25519 key, PKCS#8-encoded.
pub fn generate_signing_key() -> Vec<u8> {
    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .expect("the operating system RNG failed")
        .as_ref()
        .to_vec()
}

/// Signs join tokens.
pub struct TokenSigner {
    key: Ed25519KeyPair,
}

impl TokenSigner {
    /// The key whose 32-byte Ed25519 seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, TokenError> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .map(|key| TokenSigner { key })
            .map_err(|_| TokenError::Malformed)
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Self, TokenError> {
        Ed25519KeyPair::from_pkcs8(pkcs8)
            .map(|key| TokenSigner { key })
            .map_err(|_| TokenError::Malformed)
    }

    pub fn public_key(&self) -> Vec<u8> {
        self.key.public_key().as_ref().to_vec()
    }

    pub fn sign(&self, claims: &pb::JoinClaims) -> Vec<u8> {
        let claims = claims.encode_to_vec();
        let signature = self.key.sign(&claims).as_ref().to_vec();
        pb::JoinToken { claims, signature }.encode_to_vec()
    }
}

/// Checks a token as a media node does: signature by `public_key`, not
/// expired at `now_ms`, for `meeting_id` on `node_id`.
pub fn verify_token(
    public_key: &[u8],
    token: &[u8],
    now_ms: u64,
    meeting_id: Option<u64>,
    node_id: &str,
) -> Result<pb::JoinClaims, TokenError> {
    let t = pb::JoinToken::decode(token).map_err(|_| TokenError::Malformed)?;
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&t.claims, &t.signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims = pb::JoinClaims::decode(t.claims.as_slice()).map_err(|_| TokenError::Malformed)?;
    if now_ms >= claims.expires_at_ms {
        return Err(TokenError::Expired);
    }
    if let Some(wanted) = meeting_id {
        if claims.meeting_id != wanted {
            return Err(TokenError::WrongMeeting {
                token: claims.meeting_id,
                wanted,
            });
        }
    }
    if claims.node_id != node_id {
        return Err(TokenError::WrongNode {
            token: claims.node_id,
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: u64) -> pb::JoinClaims {
        pb::JoinClaims {
            meeting_id: 7,
            participant_id: 1,
            role: pb::Role::Participant as i32,
            node_id: "n1".into(),
            display_name: "a".into(),
            issued_at_ms: now,
            expires_at_ms: now + JOIN_TOKEN_TTL_MS,
            settings: None,
            ..Default::default()
        }
    }

    #[test]
    fn tokens_verify_only_with_the_right_key_meeting_node_and_time() {
        let signer = TokenSigner::from_pkcs8(&generate_signing_key()).unwrap();
        let other = TokenSigner::from_pkcs8(&generate_signing_key()).unwrap();
        let pk = signer.public_key();
        let t = signer.sign(&claims(1000));
        assert_eq!(
            verify_token(&pk, &t, 1001, Some(7), "n1")
                .unwrap()
                .meeting_id,
            7
        );
        assert_eq!(
            verify_token(&other.public_key(), &t, 1001, Some(7), "n1"),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_token(&pk, &t, 1000 + JOIN_TOKEN_TTL_MS, Some(7), "n1"),
            Err(TokenError::Expired)
        );
        assert!(matches!(
            verify_token(&pk, &t, 1001, Some(8), "n1"),
            Err(TokenError::WrongMeeting { .. })
        ));
        assert!(matches!(
            verify_token(&pk, &t, 1001, Some(7), "n2"),
            Err(TokenError::WrongNode { .. })
        ));
        // A claim edited after signing (role raised to host) fails.
        let mut forged = pb::JoinToken::decode(t.as_slice()).unwrap();
        let mut c = pb::JoinClaims::decode(forged.claims.as_slice()).unwrap();
        c.role = pb::Role::Host as i32;
        forged.claims = c.encode_to_vec();
        assert_eq!(
            verify_token(&pk, &forged.encode_to_vec(), 1001, Some(7), "n1"),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_token(&pk, b"\xff\x00garbage", 1001, Some(7), "n1"),
            Err(TokenError::Malformed)
        );
    }
}

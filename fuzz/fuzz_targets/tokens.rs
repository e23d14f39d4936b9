//! Every credential Fjord checks, fed the fuzzer's bytes: join and link
//! tokens (protobuf, Ed25519), hosts' ID tokens (JWT against an
//! institution's JWKS; the fuzzer also gets to replace the header or flip
//! a byte of a genuine token), signed dashboard links and webhook
//! signatures. None may panic, and none may accept what was not signed.
#![no_main]

use std::sync::OnceLock;

use base64::Engine;
use fjord_common::token::verify_token;
use fjord_control_plane::drivers::webhook;
use fjord_control_plane::licensing::Affiliation;
use fjord_control_plane::login::{self, dev_idp, dev_idp::DevIdp};
use fjord_control_plane::sla::link;
use fjord_control_plane::state::LoginConfig;
use fjord_fuzz::{signer, Script, MEETING, NODE, NOW};
use libfuzzer_sys::fuzz_target;

struct Login {
    config: LoginConfig,
    genuine: String,
}

fn login_fixture() -> &'static Login {
    static LOGIN: OnceLock<Login> = OnceLock::new();
    LOGIN.get_or_init(|| {
        let idp = DevIdp::generate();
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        Login {
            config: LoginConfig {
                issuer: idp.issuer("uio"),
                audience: dev_idp::AUDIENCE.into(),
                jwks: idp.jwks(),
                affiliation_claim: dev_idp::AFFILIATION_CLAIM.into(),
                eligible: [("staff".to_string(), Affiliation::Staff)].into(),
                affiliation_scope: None,
            },
            genuine: idp
                .token("uio", "host-1", &["staff"], now_s, 86_400 * 365)
                .expect("signs"),
        }
    })
}

const LINK_KEY: &[u8] = b"dashboard link key for fuzzing only";
const WEBHOOK_SECRET: &str = "webhook secret for fuzzing only";

fuzz_target!(|data: &[u8]| {
    let mut s = Script::new(data);
    match s.byte() % 6 {
        0 => {
            let meeting = if s.byte() & 1 == 0 {
                Some(MEETING)
            } else {
                None
            };
            if let Ok(claims) = verify_token(&signer().public_key(), s.rest(), NOW, meeting, NODE) {
                panic!("a token nobody signed was accepted: {claims:?}");
            }
        }
        1 => {
            let token = String::from_utf8_lossy(s.rest());
            let _ = login::verify(&login_fixture().config, &token);
        }
        2 => {
            // A genuine ID token with the fuzzer's header.
            let genuine = &login_fixture().genuine;
            let (_, rest) = genuine.split_once('.').expect("three parts");
            let header = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.rest());
            let _ = login::verify(&login_fixture().config, &format!("{header}.{rest}"));
        }
        3 => {
            // A genuine ID token with one byte changed: refused, unless
            // the change is lost in base64's padding bits.
            let genuine = login_fixture().genuine.as_bytes();
            let mut token = genuine.to_vec();
            let at = usize::from(s.u16()) % token.len();
            token[at] ^= s.byte().max(1);
            let token = String::from_utf8_lossy(&token);
            let _ = login::verify(&login_fixture().config, &token);
        }
        4 => {
            let token = String::from_utf8_lossy(s.rest());
            // Only the key's signature opens anything: what one key
            // accepts, another refuses.
            if link::verify(LINK_KEY, &token, NOW).is_ok() {
                assert!(link::verify(b"another key", &token, NOW).is_err());
            }
        }
        _ => {
            let header = String::from_utf8_lossy(s.chunk()).into_owned();
            let body = s.rest();
            let now_s = NOW / 1000;
            if webhook::verify(WEBHOOK_SECRET, &header, body, now_s, 300) {
                assert!(
                    !webhook::verify("another secret", &header, body, now_s, 300),
                    "a webhook signature that any secret verifies: {header}"
                );
            }
        }
    }
});

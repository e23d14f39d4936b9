//! Hosts sign in with their institution's identity provider, over real
//! gRPC with TLS and without a certificate: a valid ID token creates a
//! pseudonymous account and schedules under its role's limits; expired,
//! foreign, forged and ineligible tokens are refused; an institution admin
//! disables and enables accounts. (The twelve-month sweep advances log
//! time in the state machine: `state::account_tests`.)

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use fjord_control_plane::login::dev_idp::{self, DevIdp};
use fjord_proto::v1 as pb;
use pb::account_service_client::AccountServiceClient;
use tonic::Code;

type Client = fjord_control_plane::client::Client;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn schedule_with(
    client: &Client,
    token: &str,
    participants: u32,
    webinar: bool,
) -> Result<pb::ScheduleMeetingResponse, tonic::Status> {
    schedule_request(
        client,
        pb::ScheduleMeetingRequest {
            institution: "uio".into(),
            participants,
            duration_ms: 3_600_000,
            webinar,
            id_token: token.into(),
            ..Default::default()
        },
    )
    .await
}

async fn accounts(client: &Client) -> Vec<pb::HostAccount> {
    client
        .call(|ch| async move {
            AccountServiceClient::new(ch)
                .list_accounts(pb::ListAccountsRequest {
                    institution: "uio".into(),
                })
                .await
        })
        .await
        .unwrap()
        .into_inner()
        .accounts
}

async fn set_enabled(
    client: &Client,
    id: &str,
    enabled: bool,
) -> Result<pb::HostAccount, tonic::Status> {
    client
        .call(|ch| {
            let req = pb::SetAccountRequest { id: id.into() };
            async move {
                let mut c = AccountServiceClient::new(ch);
                if enabled {
                    c.enable_account(req).await
                } else {
                    c.disable_account(req).await
                }
            }
        })
        .await
        .map(|r| r.into_inner().account.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_sign_in_with_their_institutions_provider() {
    let cluster = Cluster::start(3, fast_config()).await;
    cluster.wait_leader(Duration::from_secs(10)).await;
    let ops = cluster.client();
    ops.create_institution(pb::CreateInstitutionRequest {
        name: "uio".into(),
        residency: "nordic".into(),
        max_participants: 5000,
        home_region: String::new(),
    })
    .await
    .unwrap();
    // The education tier without add-ons: 300 / webinars of 500 for staff.
    ops.sample_licence("uio", &[]).await.unwrap();
    register_node(&cluster, "no-1", "nordic", 10_000).await;
    let idp = DevIdp::generate();
    let host = cluster.anonymous_client();
    let token = |subject: &str, affiliation: &[&str]| {
        idp.token("uio", subject, affiliation, now_s(), 600)
            .unwrap()
    };

    // No login configured yet: sign-in is refused with the reason.
    let s = schedule_with(&host, &token("staff-1", &["staff"]), 10, false)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");

    // The institution admin sets its own login.
    let admin = cluster.client_with(&cluster.ca.institution_admin("uio", "desk").unwrap());
    let login = pb::ConfigureLoginRequest {
        institution: "uio".into(),
        config: Some(pb::LoginConfig {
            issuer: idp.issuer("uio"),
            audience: dev_idp::AUDIENCE.into(),
            jwks: idp.jwks(),
            affiliation_claim: dev_idp::AFFILIATION_CLAIM.into(),
            eligible: [("staff", "staff"), ("student", "student")]
                .into_iter()
                .map(|(v, a)| (v.to_string(), a.to_string()))
                .collect(),
            affiliation_scope: String::new(),
        }),
    };
    admin
        .call(|ch| {
            let req = login.clone();
            async move { AccountServiceClient::new(ch).configure_login(req).await }
        })
        .await
        .unwrap();
    // Bad provider keys are refused, naming the field.
    let mut bad = login.clone();
    bad.config.as_mut().unwrap().jwks = "{\"keys\": []}".into();
    let s = admin
        .call(|ch| {
            let req = bad.clone();
            async move { AccountServiceClient::new(ch).configure_login(req).await }
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("jwks"), "{s:?}");

    // A host without a certificate: a valid staff token creates an account.
    let staff = token("staff-1", &["staff", "member"]);
    assert!(schedule_with(&host, &staff, 300, false).await.is_ok());
    let s = schedule_with(&host, &staff, 301, false).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
    assert!(schedule_with(&host, &staff, 500, true).await.is_ok());
    let list = accounts(&admin).await;
    assert_eq!(list.len(), 1);
    let account = list[0].clone();
    assert!(account.id.starts_with("acct-") && !account.id.contains("staff-1"));
    assert_eq!(
        (account.affiliation.as_str(), account.active),
        ("staff", true)
    );
    assert!(account.last_meeting_ms > 0);

    // Without a token, a host may not schedule at all.
    let s = schedule_with(&host, "", 3, false).await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

    // Expired, from another issuer, forged, tampered: refused, no account made.
    let expired = idp
        .token("uio", "staff-2", &["staff"], now_s() - 7200, 600)
        .unwrap();
    let foreign = idp
        .token("ntnu", "staff-2", &["staff"], now_s(), 600)
        .unwrap();
    let forged = DevIdp::generate_with_kid(&idp.kid)
        .token("uio", "staff-2", &["staff"], now_s(), 600)
        .unwrap();
    for (what, t) in [
        ("expired", expired),
        ("other issuer", foreign),
        ("bad signature", forged),
        ("garbage", "x.y.z".to_string()),
    ] {
        let s = schedule_with(&host, &t, 3, false).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{what}: {s:?}");
    }
    // A role that is not eligible gets no account.
    let s = schedule_with(&host, &token("alum-1", &["alum"]), 3, false)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(accounts(&admin).await.len(), 1);

    // A student host: meetings yes, webinars no.
    let student = token("student-1", &["student"]);
    assert!(schedule_with(&host, &student, 50, false).await.is_ok());
    let s = schedule_with(&host, &student, 50, true).await.unwrap_err();
    assert_eq!(s.code(), Code::FailedPrecondition);
    assert!(s.message().contains("no webinars"), "{s:?}");

    // The admin disables the staff account: it cannot schedule; enabled, it can.
    let a = set_enabled(&admin, &account.id, false).await.unwrap();
    assert_eq!((a.active, a.disabled_reason.as_str()), (false, "disabled"));
    let s = schedule_with(&host, &staff, 3, false).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(set_enabled(&admin, &account.id, true).await.unwrap().active);
    assert!(schedule_with(&host, &staff, 3, false).await.is_ok());
    // The holder's role ends: the next sign-in disables the account.
    let s = schedule_with(&host, &token("staff-1", &["alum"]), 3, false)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied);
    let a = accounts(&admin)
        .await
        .into_iter()
        .find(|a| a.id == account.id)
        .unwrap();
    assert_eq!(a.disabled_reason, "role_ended");

    // A flood of sign-ins from one address is cut off before any
    // signature is checked (30 at once, then 10 a second).
    let mut limited = 0;
    for _ in 0..60 {
        let r = host
            .call(|ch| async move {
                AccountServiceClient::new(ch)
                    .login(pb::LoginRequest {
                        institution: "uio".into(),
                        id_token: "x.y.z".into(),
                    })
                    .await
            })
            .await;
        match r {
            Err(s) if s.code() == Code::ResourceExhausted => limited += 1,
            Err(s) => assert_eq!(s.code(), Code::Unauthenticated, "{s:?}"),
            Ok(_) => panic!("a garbage token signed in"),
        }
    }
    assert!(limited > 0, "no sign-in was rate-limited");

    // The replicated state holds no subject (only keyed hashes).
    let leader = cluster.wait_leader(Duration::from_secs(5)).await;
    let json = cluster.replicas[&leader]
        .replica
        .local_state(|s| serde_json::to_string(s).unwrap());
    for subject in ["staff-1", "student-1", "alum-1"] {
        assert!(!json.contains(subject), "{subject} in the state");
    }
}

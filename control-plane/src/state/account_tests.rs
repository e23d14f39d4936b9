//! Host accounts in the state machine: login by role, the licence count,
//! admin disable/enable, and the twelve-month sweep.

use super::licence_tests::{at, cluster, req, set, terms, DAY_MS};
use super::*;
use crate::licensing::{Affiliation, MeetingKind, Tier};

fn configure(eligible: &[(&str, Affiliation)]) -> AccountCommand {
    AccountCommand::ConfigureLogin(ConfigureLogin {
        institution: "uio".into(),
        config: LoginConfig {
            issuer: "https://idp.uio.example".into(),
            audience: "fjord".into(),
            jwks: "{\"keys\":[]}".into(),
            affiliation_claim: "eduperson_affiliation".into(),
            eligible: eligible.iter().map(|(v, a)| (v.to_string(), *a)).collect(),
            affiliation_scope: None,
        },
    })
}

fn login(account: &str, affiliations: &[&str]) -> AccountCommand {
    AccountCommand::Login(Login {
        institution: "uio".into(),
        account: account.into(),
        affiliations: affiliations.iter().map(|a| a.to_string()).collect(),
    })
}

fn schedule_as(account: &str, participants: u32, kind: MeetingKind) -> MeetingCommand {
    MeetingCommand::Schedule(ScheduleMeeting {
        request_id: None,
        institution: "uio".into(),
        participants,
        start_ms: None,
        duration_ms: 3_600_000,
        access: MeetingAccess::default(),
        kind,
        host: Host::Account { id: account.into() },
    })
}

/// uio with an education licence (1200 staff licences, 300 student ones)
/// and a login mapping employee and faculty to staff, student to students.
fn with_login(now: u64) -> ClusterState {
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set("uio", terms(Tier::Education, &[], "2026-10-01"), None),
    ))
    .unwrap();
    s.apply(&req(
        now,
        configure(&[
            ("employee", Affiliation::Staff),
            ("faculty", Affiliation::Staff),
            ("student", Affiliation::Student),
        ]),
    ))
    .unwrap();
    s
}

#[test]
fn a_staff_host_schedules_300_not_301_and_a_student_no_webinar() {
    let now = at("2026-11-24");
    let mut s = with_login(now);
    let Ok(Output::Account(a)) = s.apply(&req(now, login("acct-staff", &["member", "employee"])))
    else {
        panic!()
    };
    assert_eq!(a.affiliation, Affiliation::Staff);
    assert!(s
        .apply(&req(
            now,
            schedule_as("acct-staff", 300, MeetingKind::Meeting)
        ))
        .is_ok());
    assert!(matches!(
        s.apply(&req(
            now,
            schedule_as("acct-staff", 301, MeetingKind::Meeting)
        )),
        Err(StateError::Licensing {
            error: crate::licensing::LicensingError::MeetingTooLarge { limit: 300, .. }
        })
    ));
    assert!(s
        .apply(&req(
            now,
            schedule_as("acct-staff", 500, MeetingKind::Webinar)
        ))
        .is_ok());

    s.apply(&req(now, login("acct-student", &["student", "member"])))
        .unwrap();
    assert!(s
        .apply(&req(
            now,
            schedule_as("acct-student", 300, MeetingKind::Meeting)
        ))
        .is_ok());
    assert!(matches!(
        s.apply(&req(
            now,
            schedule_as("acct-student", 10, MeetingKind::Webinar)
        )),
        Err(StateError::Licensing {
            error: crate::licensing::LicensingError::WebinarNotIncluded {
                affiliation: Affiliation::Student,
                ..
            }
        })
    ));
    // Someone else's account id is not a host of this institution.
    assert!(matches!(
        s.apply(&req(
            now,
            schedule_as("acct-nobody", 3, MeetingKind::Meeting)
        )),
        Err(StateError::UnknownAccount { .. })
    ));
}

#[test]
fn an_ineligible_role_gets_no_account_and_a_lost_role_disables_it() {
    let now = at("2026-11-24");
    let mut s = with_login(now);
    let before = s.clone();
    assert_eq!(
        s.apply(&req(now, login("acct-alum", &["alum", "member"]))),
        Err(StateError::NotEligible {
            institution: "uio".into()
        })
    );
    assert_eq!(s, before, "no account for an ineligible role");
    s.apply(&req(now, login("acct-1", &["employee"]))).unwrap();
    // The next token no longer carries an eligible role.
    let Ok(Output::Account(a)) = s.apply(&req(now + 1, login("acct-1", &["alum"]))) else {
        panic!()
    };
    assert_eq!(a.disabled.map(|d| d.0), Some(DisableReason::RoleEnded));
    assert!(matches!(
        s.apply(&req(
            now + 2,
            schedule_as("acct-1", 3, MeetingKind::Meeting)
        )),
        Err(StateError::AccountDisabled {
            reason: DisableReason::RoleEnded,
            ..
        })
    ));
    // Re-qualifying re-enables it.
    s.apply(&req(now + 3, login("acct-1", &["faculty"])))
        .unwrap();
    assert!(s
        .apply(&req(
            now + 4,
            schedule_as("acct-1", 3, MeetingKind::Meeting)
        ))
        .is_ok());
    // The admin removes the student role from the mapping: student accounts lose it.
    s.apply(&req(now, login("acct-s", &["student"]))).unwrap();
    s.apply(&req(
        now + 5,
        configure(&[
            ("employee", Affiliation::Staff),
            ("faculty", Affiliation::Staff),
        ]),
    ))
    .unwrap();
    assert_eq!(
        s.accounts.by_id["acct-s"].disabled.map(|d| d.0),
        Some(DisableReason::RoleEnded)
    );
    assert!(s.accounts.by_id["acct-1"].is_active());
}

#[test]
fn twelve_months_without_a_meeting_disable_the_account() {
    let now = at("2026-11-24");
    let mut s = with_login(now);
    s.apply(&req(now, login("acct-1", &["employee"]))).unwrap();
    s.apply(&req(now, login("acct-2", &["employee"]))).unwrap();
    // acct-2 organises a meeting in March; acct-1 never does.
    let march = at("2027-03-01");
    s.apply(&req(march, schedule_as("acct-2", 3, MeetingKind::Meeting)))
        .unwrap();
    let sweep = || AccountCommand::Sweep(SweepAccounts {});
    // Just short of twelve months: nothing happens.
    let Ok(Output::AccountsSwept { disabled }) = s.apply(&req(at("2027-11-23"), sweep())) else {
        panic!()
    };
    assert!(disabled.is_empty());
    let Ok(Output::AccountsSwept { disabled }) = s.apply(&req(at("2027-11-24"), sweep())) else {
        panic!()
    };
    assert_eq!(disabled, ["acct-1"]);
    assert!(matches!(
        s.apply(&req(
            at("2027-11-24") + 1,
            schedule_as("acct-1", 3, MeetingKind::Meeting)
        )),
        Err(StateError::AccountDisabled {
            reason: DisableReason::Inactive,
            ..
        })
    ));
    assert!(s
        .apply(&req(
            at("2027-11-24") + 2,
            schedule_as("acct-2", 3, MeetingKind::Meeting)
        ))
        .is_ok());
    // A year after its last meeting, acct-2 goes too.
    let Ok(Output::AccountsSwept { disabled }) = s.apply(&req(at("2028-11-25"), sweep())) else {
        panic!()
    };
    assert_eq!(disabled, ["acct-2"]);
    // Signing in again with an eligible role re-enables it, for another year.
    s.apply(&req(at("2028-11-26"), login("acct-1", &["employee"])))
        .unwrap();
    assert!(s.accounts.by_id["acct-1"].is_active());
    let _ = DAY_MS;
}

#[test]
fn active_accounts_count_against_the_licence_unless_it_allows_overage() {
    let now = at("2026-11-24");
    let mut s = with_login(now);
    let mut small = terms(Tier::Education, &[], "2026-10-01");
    small.staff_fte_centi = 150; // 1.5 FTE: two staff licences
    s.apply(&req(now, set("uio", small.clone(), None))).unwrap();
    s.apply(&req(now, login("a", &["employee"]))).unwrap();
    s.apply(&req(now, login("b", &["employee"]))).unwrap();
    assert_eq!(
        s.apply(&req(now, login("c", &["employee"]))),
        Err(StateError::NoFreeLicence {
            institution: "uio".into(),
            affiliation: Affiliation::Staff,
            held: 2
        })
    );
    // The admin disables one: its licence is free again.
    let off = |id: &str, enabled| {
        AccountCommand::SetEnabled(SetAccountEnabled {
            id: id.into(),
            enabled,
            institution: Some("uio".into()),
        })
    };
    s.apply(&req(now, off("a", false))).unwrap();
    s.apply(&req(now, login("c", &["employee"]))).unwrap();
    // A disabled-by-admin account stays disabled when it signs in again.
    let Ok(Output::Account(a)) = s.apply(&req(now, login("a", &["employee"]))) else {
        panic!()
    };
    assert_eq!(a.disabled.map(|d| d.0), Some(DisableReason::Disabled));
    assert!(matches!(
        s.apply(&req(now, off("a", true))),
        Err(StateError::NoFreeLicence { .. })
    ));
    // With overage allowed, the third is activated as an extra licence.
    small.allow_overage = true;
    s.apply(&req(now, set("uio", small, None))).unwrap();
    let Ok(Output::Account(a)) = s.apply(&req(now, off("a", true))) else {
        panic!()
    };
    assert!(a.is_active() && a.extra_licence);
    // An admin of another institution cannot touch it.
    assert!(matches!(
        s.apply(&req(
            now,
            AccountCommand::SetEnabled(SetAccountEnabled {
                id: "a".into(),
                enabled: false,
                institution: Some("ntnu".into()),
            })
        )),
        Err(StateError::UnknownAccount { .. })
    ));
}

//! Licences in the state machine: history, notice, price tables, and the
//! schedule check, with a property test over random sequences.

use proptest::prelude::*;
use proptest::strategy::Strategy as Gen;

use super::*;
use crate::licensing::{
    parse_date, Affiliation, LicenceTerms, LicensingError, MeetingKind, Phase, PriceTable, Tier,
};
use crate::placement::Strategy;

pub(super) const DAY_MS: u64 = 24 * 3600 * 1000;

/// Noon UTC on `date` (the same calendar day in Oslo).
pub(super) fn at(date: &str) -> u64 {
    crate::licensing::calendar::start_of_service_date(parse_date(date).unwrap()) + DAY_MS / 2
}

pub(super) fn req(now_ms: u64, command: impl Into<Command>) -> Request {
    Request {
        now_ms,
        seed: now_ms,
        strategy: Strategy::LeastLoaded,
        op_id: 0,
        command: command.into(),
    }
}

pub(super) fn terms(tier: Tier, add_ons: &[&str], start: &str) -> LicenceTerms {
    LicenceTerms {
        tier,
        staff_fte_centi: 120_000,
        student_licences: 300,
        add_ons: add_ons.iter().map(|a| a.to_string()).collect(),
        agreement_start: parse_date(start).unwrap(),
        agreement_contact: "avtale@uio.no".into(),
        technical_contact: "https://alerts.uio.no/fjord".into(),
        allow_overage: false,
    }
}

pub(super) fn set(inst: &str, terms: LicenceTerms, effective: Option<&str>) -> LicenceCommand {
    LicenceCommand::Set(SetLicence {
        institution: inst.into(),
        effective: effective.map(|d| parse_date(d).unwrap()),
        terms,
        reporter: Reporter::Operator,
    })
}

pub(super) fn schedule(inst: &str, participants: u32, kind: MeetingKind) -> MeetingCommand {
    MeetingCommand::Schedule(ScheduleMeeting {
        request_id: None,
        institution: inst.into(),
        participants,
        start_ms: None,
        duration_ms: 3_600_000,
        access: MeetingAccess::default(),
        kind,
        host: Host::OnBehalf,
    })
}

pub(super) fn load_builtin() -> LicenceCommand {
    LicenceCommand::LoadPriceTable(LoadPriceTable {
        table: PriceTable::builtin(),
        only_if_none: true,
    })
}

/// uio with a node big enough for anything, the built-in table and no licence yet.
pub(super) fn cluster(now: u64) -> ClusterState {
    let mut s = ClusterState::default();
    for c in [
        Command::Institution(InstitutionCommand::Create(CreateInstitution {
            name: "uio".into(),
            residency: "nordic".into(),
            home_region: None,
            max_participants: 100_000,
        })),
        Command::Node(NodeCommand::Register(RegisterNode {
            id: "no-1".into(),
            region: "nordic".into(),
            address: "127.0.0.1:9".into(),
            capacity: 100_000,
            certificate: Vec::new(),
            boot: 0,
        })),
        load_builtin().into(),
    ] {
        s.apply(&req(now, c)).unwrap();
    }
    s
}

#[test]
fn without_a_licence_nothing_is_scheduled_and_legacy_entries_replay_unchecked() {
    let now = at("2026-11-24");
    let mut s = cluster(now);
    assert_eq!(
        s.apply(&req(now, schedule("uio", 10, MeetingKind::Meeting))),
        Err(StateError::NoLicence {
            institution: "uio".into()
        })
    );
    // An entry from before licensing (no host) applies as it did then.
    let mut legacy = schedule("uio", 10, MeetingKind::Meeting);
    let MeetingCommand::Schedule(c) = &mut legacy else {
        unreachable!()
    };
    c.host = Host::Unchecked;
    assert!(s.apply(&req(now, legacy)).is_ok());
}

#[test]
fn the_education_tier_allows_300_and_staff_webinars_of_500_but_no_more() {
    let now = at("2026-11-24");
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set("uio", terms(Tier::Education, &[], "2026-10-01"), None),
    ))
    .unwrap();
    assert!(s
        .apply(&req(now, schedule("uio", 300, MeetingKind::Meeting)))
        .is_ok());
    let before = s.clone();
    assert!(matches!(
        s.apply(&req(now, schedule("uio", 301, MeetingKind::Meeting))),
        Err(StateError::Licensing {
            error: LicensingError::MeetingTooLarge {
                requested: 301,
                limit: 300,
                affiliation: Affiliation::Staff,
                ..
            }
        })
    ));
    assert_eq!(s, before, "a refusal changes nothing");
    let Ok(Output::Scheduled { meeting, .. }) =
        s.apply(&req(now, schedule("uio", 500, MeetingKind::Webinar)))
    else {
        panic!("a 500-attendee webinar fits the education tier")
    };
    assert_eq!(meeting.kind, MeetingKind::Webinar);
    assert_eq!(meeting.time_limit, None);
    assert!(matches!(
        s.apply(&req(now, schedule("uio", 501, MeetingKind::Webinar))),
        Err(StateError::Licensing {
            error: LicensingError::WebinarTooLarge { limit: 500, .. }
        })
    ));
    // An add-on, recorded as a new version effective today, raises the limit.
    s.apply(&req(
        now,
        set(
            "uio",
            terms(Tier::Education, &["large-meeting-1000"], "2026-10-01"),
            None,
        ),
    ))
    .unwrap();
    assert!(s
        .apply(&req(now, schedule("uio", 1000, MeetingKind::Meeting)))
        .is_ok());
    assert_eq!(s.licences.get("uio").unwrap().history.len(), 2);
}

#[test]
fn a_basic_tier_meeting_carries_its_time_limit() {
    let now = at("2026-11-24");
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set("uio", terms(Tier::Basic, &[], "2026-10-01"), None),
    ))
    .unwrap();
    let Ok(Output::Scheduled { meeting, .. }) =
        s.apply(&req(now, schedule("uio", 20, MeetingKind::Meeting)))
    else {
        panic!("basic allows 20")
    };
    assert_eq!(
        meeting.time_limit,
        Some(TimeLimit {
            max_duration_s: 2400,
            warn_before_end_s: 300
        })
    );
    assert!(matches!(
        s.apply(&req(now, schedule("uio", 5, MeetingKind::Webinar))),
        Err(StateError::Licensing {
            error: LicensingError::WebinarNotIncluded { .. }
        })
    ));
}

#[test]
fn history_is_kept_and_the_version_in_force_follows_effective_dates() {
    let now = at("2026-11-24");
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set(
            "uio",
            terms(Tier::Education, &[], "2026-10-01"),
            Some("2026-10-01"),
        ),
    ))
    .unwrap();
    // Reported today, effective next year: today's limits stay.
    s.apply(&req(
        now,
        set(
            "uio",
            terms(Tier::Basic, &[], "2026-10-01"),
            Some("2027-01-01"),
        ),
    ))
    .unwrap();
    assert!(s
        .apply(&req(now, schedule("uio", 300, MeetingKind::Meeting)))
        .is_ok());
    let later = at("2027-01-02");
    assert!(matches!(
        s.apply(&req(later, schedule("uio", 300, MeetingKind::Meeting))),
        Err(StateError::Licensing {
            error: LicensingError::MeetingTooLarge { limit: 100, .. }
        })
    ));
    let Ok(QueryOutput::LicenceHistory(l)) = s.query(
        &Query::LicenceHistory {
            institution: "uio".into(),
        },
        later,
    ) else {
        panic!()
    };
    assert_eq!(
        l.history.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2]
    );
    let Ok(QueryOutput::Licence(v)) = s.query(
        &Query::Licence {
            institution: "uio".into(),
        },
        later,
    ) else {
        panic!()
    };
    assert_eq!(v.in_force.version, 2);
    assert_eq!(v.in_force.terms.tier, Tier::Basic);
}

#[test]
fn notice_ends_the_licence_on_1_october_and_scheduling_with_it() {
    let now = at("2027-06-14");
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set("uio", terms(Tier::Education, &[], "2026-10-01"), None),
    ))
    .unwrap();
    let Ok(Output::Licence(v)) = s.apply(&req(
        now,
        LicenceCommand::GiveNotice(GiveNotice {
            institution: "uio".into(),
            date: parse_date("2027-06-14").unwrap(),
        }),
    )) else {
        panic!()
    };
    assert_eq!(v.status.phase, Phase::NoticeGiven);
    assert_eq!(v.status.ends_on, Some(parse_date("2027-10-01").unwrap()));
    // Still in force until 30 September; a meeting may not start after the end.
    assert!(s
        .apply(&req(
            at("2027-09-30"),
            schedule("uio", 10, MeetingKind::Meeting)
        ))
        .is_ok());
    let mut late = schedule("uio", 10, MeetingKind::Meeting);
    let MeetingCommand::Schedule(c) = &mut late else {
        unreachable!()
    };
    c.start_ms = Some(at("2027-10-02"));
    assert!(matches!(
        s.apply(&req(at("2027-09-30"), late)),
        Err(StateError::AfterAgreementEnd { .. })
    ));
    assert_eq!(
        s.apply(&req(
            at("2027-10-01"),
            schedule("uio", 10, MeetingKind::Meeting)
        )),
        Err(StateError::LicenceNotInForce {
            institution: "uio".into(),
            phase: Phase::Ended
        })
    );
}

#[test]
fn an_institution_admin_reports_fte_and_contacts_but_not_the_tier() {
    let now = at("2026-11-24");
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set("uio", terms(Tier::Basic, &[], "2026-10-01"), None),
    ))
    .unwrap();
    let admin = |t: LicenceTerms| {
        LicenceCommand::Set(SetLicence {
            institution: "uio".into(),
            effective: None,
            terms: t,
            reporter: Reporter::InstitutionAdmin,
        })
    };
    let mut more_fte = terms(Tier::Basic, &[], "2026-10-01");
    more_fte.staff_fte_centi = 130_050;
    more_fte.technical_contact = "noc@uio.no".into();
    assert!(s.apply(&req(now, admin(more_fte))).is_ok());
    assert_eq!(
        s.apply(&req(now, admin(terms(Tier::Education, &[], "2026-10-01")))),
        Err(StateError::OperatorOnly {
            field: "tier".into()
        })
    );
    assert_eq!(
        s.apply(&req(
            now,
            admin(terms(Tier::Basic, &["webinar-1000"], "2026-10-01"))
        )),
        Err(StateError::OperatorOnly {
            field: "add_ons".into()
        })
    );
}

#[test]
fn price_tables_are_versioned_and_keep_every_add_on_in_use() {
    let now = at("2026-11-24");
    let mut s = cluster(now);
    s.apply(&req(
        now,
        set(
            "uio",
            terms(Tier::Education, &["webinar-1000"], "2026-10-01"),
            None,
        ),
    ))
    .unwrap();
    let mut next = PriceTable::builtin();
    next.version = "2027-1".into();
    next.add_ons.remove("webinar-1000");
    let load = |t: PriceTable| {
        LicenceCommand::LoadPriceTable(LoadPriceTable {
            table: t,
            only_if_none: false,
        })
    };
    assert!(matches!(
        s.apply(&req(now, load(next.clone()))),
        Err(StateError::Licensing {
            error: LicensingError::UnknownAddOn { .. }
        })
    ));
    let mut next = PriceTable::builtin();
    next.version = "2027-1".into();
    next.tiers
        .get_mut(&Tier::Education)
        .unwrap()
        .staff
        .meeting_participants = 350;
    assert_eq!(
        s.apply(&req(now, load(next.clone()))),
        Ok(Output::PriceTableLoaded {
            version: "2027-1".into(),
            loaded: true
        })
    );
    assert!(s
        .apply(&req(now, schedule("uio", 350, MeetingKind::Meeting)))
        .is_ok());
    // The same version with other contents is refused; the old ones stay.
    let mut clash = next.clone();
    clash.currency = "EUR".into();
    assert!(matches!(
        s.apply(&req(now, load(clash))),
        Err(StateError::PriceTableVersionUsed { .. })
    ));
    assert_eq!(s.licences.price_tables.len(), 2);
    // An install-if-none after that changes nothing.
    assert_eq!(
        s.apply(&req(now, load_builtin())),
        Ok(Output::PriceTableLoaded {
            version: "2027-1".into(),
            loaded: false
        })
    );
}

/// What the licence allowed when a schedule was applied, computed from the
/// state before it, independently of `Licences::check_schedule`.
fn allowed_by_licence(s: &ClusterState, c: &ScheduleMeeting, now_ms: u64) -> bool {
    let Some(table) = s.licences.price_tables.last().map(|t| &t.table) else {
        return false;
    };
    // The host: an operator acting for the institution gets staff limits;
    // an account must exist here, be active, and gets its role's limits.
    let affiliation = match &c.host {
        Host::Unchecked => return true,
        Host::OnBehalf => Affiliation::Staff,
        Host::Account { id } => match s.accounts.by_id.get(id) {
            Some(a) if a.institution == c.institution && a.disabled.is_none() => a.affiliation,
            _ => return false,
        },
    };
    let today = crate::licensing::service_date(now_ms);
    let Some(licence) = s.licences.by_institution.get(&c.institution) else {
        return false;
    };
    let mut best: Option<&LicenceVersion> = None;
    for v in &licence.history {
        if v.effective <= today
            && best.is_none_or(|b| (v.effective, v.version) > (b.effective, b.version))
        {
            best = Some(v);
        }
    }
    let Some(v) = best else { return false };
    if today < v.terms.agreement_start {
        return false;
    }
    let end = licence
        .notice
        .filter(|n| n.date >= v.terms.agreement_start)
        .map(|n| crate::licensing::Agreement::end_for_notice(n.date));
    if end.is_some_and(|e| {
        today >= e || crate::licensing::service_date(c.start_ms.unwrap_or(now_ms)) >= e
    }) {
        return false;
    }
    let tier = match affiliation {
        Affiliation::Staff => &table.tiers[&v.terms.tier].staff,
        Affiliation::Student => &table.tiers[&v.terms.tier].student,
    };
    let mut meeting = tier.meeting_participants;
    let mut webinar = tier.webinar_attendees;
    for a in &v.terms.add_ons {
        let add = &table.add_ons[a];
        meeting = meeting.max(add.meeting_participants.unwrap_or(0));
        if webinar > 0 {
            webinar = webinar.max(add.webinar_attendees.unwrap_or(0));
        }
    }
    match c.kind {
        MeetingKind::Meeting => c.participants <= meeting,
        MeetingKind::Webinar => c.participants <= webinar,
    }
}

fn arb_step() -> impl Gen<Value = (u64, Command)> {
    // Mostly a day or two between steps, sometimes months (for the sweep).
    let day = prop_oneof![8 => 0u64..3, 1 => 100u64..200];
    let tier = prop_oneof![Just(Tier::Education), Just(Tier::Basic)];
    let add_ons = prop::sample::subsequence(
        vec![
            "large-meeting-500",
            "large-meeting-1000",
            "webinar-1000",
            "webinar-5000",
        ],
        0..3,
    );
    let start = prop_oneof![Just("2026-10-01"), Just("2026-11-15"), Just("2026-12-20")];
    let effective = prop::option::of(prop_oneof![
        Just("2026-10-01"),
        Just("2026-11-20"),
        Just("2026-12-01")
    ]);
    prop_oneof![
        1 => (day.clone(), tier, add_ons, start, effective).prop_map(|(d, t, a, s, e)| (
            d,
            set("uio", terms(t, &a[..], s), e).into()
        )),
        1 => (day.clone(), 0u64..60).prop_map(|(d, n)| (
            d,
            LicenceCommand::GiveNotice(GiveNotice {
                institution: "uio".into(),
                date: parse_date("2026-11-01").unwrap().checked_add(jiff::Span::new().days(n as i64)).unwrap(),
            })
            .into()
        )),
        1 => (day.clone(), 250u32..400).prop_map(|(d, cap)| {
            let mut t = PriceTable::builtin();
            t.version = format!("p{cap}");
            t.tiers.get_mut(&Tier::Education).unwrap().staff.meeting_participants = cap;
            (
                d,
                LicenceCommand::LoadPriceTable(LoadPriceTable {
                    table: t,
                    only_if_none: false,
                })
                .into(),
            )
        }),
        4 => (day.clone(), 1u32..1200, any::<bool>()).prop_map(|(d, n, w)| (
            d,
            schedule("uio", n, if w { MeetingKind::Webinar } else { MeetingKind::Meeting }).into()
        )),
        1 => (day.clone(), 1u64..40).prop_map(|(d, id)| (
            d,
            MeetingCommand::End(EndMeeting { id }).into()
        )),
        3 => (day.clone(), 0usize..5, 0usize..3).prop_map(|(d, a, r)| (
            d,
            AccountCommand::Login(Login {
                institution: "uio".into(),
                account: format!("acct-{a}"),
                affiliations: vec![["employee", "student", "alum"][r].to_string()],
            })
            .into()
        )),
        4 => (day.clone(), 0usize..5, 1u32..600, any::<bool>()).prop_map(|(d, a, n, w)| {
            let MeetingCommand::Schedule(mut c) =
                schedule("uio", n, if w { MeetingKind::Webinar } else { MeetingKind::Meeting })
            else {
                unreachable!()
            };
            c.host = Host::Account { id: format!("acct-{a}") };
            (d, MeetingCommand::Schedule(c).into())
        }),
        1 => (day.clone(), 0usize..5, any::<bool>()).prop_map(|(d, a, enabled)| (
            d,
            AccountCommand::SetEnabled(SetAccountEnabled {
                id: format!("acct-{a}"),
                enabled,
                institution: Some("uio".into()),
            })
            .into()
        )),
        1 => day.prop_map(|d| (d, AccountCommand::Sweep(SweepAccounts {}).into())),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Over random licence changes, notices, price tables, host sign-ins,
    /// account sweeps and admin switches, schedules (for the institution
    /// and by host accounts) and the passing of days and months, no meeting
    /// is scheduled beyond its licence at the time of scheduling, and
    /// replicas (one restarted from a snapshot midway) stay identical.
    #[test]
    fn no_meeting_is_scheduled_beyond_its_licence(steps in prop::collection::vec(arb_step(), 1..80), cut in 0usize..80) {
        let base = at("2026-11-01");
        let mut now = base;
        let log: Vec<Request> = steps
            .into_iter()
            .map(|(d, c)| {
                now += d * DAY_MS + 1;
                req(now, c)
            })
            .collect();
        let mut a = cluster(base);
        a.apply(&req(
            base,
            AccountCommand::ConfigureLogin(ConfigureLogin {
                institution: "uio".into(),
                config: LoginConfig {
                    issuer: "https://idp.uio.example".into(),
                    audience: "fjord".into(),
                    jwks: "{\"keys\":[]}".into(),
                    affiliation_claim: "eduperson_affiliation".into(),
                    eligible: [
                        ("employee".to_string(), Affiliation::Staff),
                        ("student".to_string(), Affiliation::Student),
                    ]
                    .into(),
                    affiliation_scope: None,
                },
            }),
        ))
        .unwrap();
        let mut b = a.clone();
        let cut = cut.min(log.len());
        for r in &log {
            let before = a.clone();
            let answer = a.apply(r);
            if let Command::Meeting(MeetingCommand::Schedule(c)) = &r.command {
                let allowed = allowed_by_licence(&before, c, r.now_ms);
                match &answer {
                    Ok(_) => prop_assert!(allowed, "scheduled beyond the licence: {c:?}"),
                    Err(StateError::NoCapacity { .. }) => {}
                    Err(e) => prop_assert!(!allowed, "refused within the licence: {e:?} for {c:?}"),
                }
            }
        }
        for r in &log[..cut] {
            let _ = b.apply(r);
        }
        let packed = rmp_serde::to_vec_named(&b).unwrap();
        let mut b: ClusterState = rmp_serde::from_slice(&packed).unwrap();
        for r in &log[cut..] {
            let _ = b.apply(r);
        }
        prop_assert_eq!(a, b);
    }
}
